//! verify and repair on real files: the damage of the issue, each found by verify,
//! fixed by repair, and proved by a second verify and a byte comparison.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use lifeboat_state::hash::Hash128;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn setup(s: &Scratch) -> std::path::PathBuf {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    tree(&s.join("t2"), 2);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&s.join("t1"))]);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&s.join("t2"))]);
    root
}

fn verify(root: &Path, extra: &[&str]) -> (i32, String) {
    let mut a = vec!["--root", r(root), "verify"];
    a.extend_from_slice(extra);
    let o = run(&a);
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn damage_found_repaired_and_proved() {
    let s = Scratch::new("verify");
    let root = setup(&s);
    assert_eq!(verify(&root, &[]).0, 0);
    let usr = root.join("usr");
    fs::remove_file(usr.join("lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    fs::remove_file(usr.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")).unwrap();
    // Truncating the store's inode would damage the store too: do what an editor
    // does (write a new file in its place).
    fs::remove_file(usr.join("lib/x86_64-linux-gnu/libm.so.6")).unwrap();
    fs::write(usr.join("lib/x86_64-linux-gnu/libm.so.6"), b"truncated").unwrap();
    fs::set_permissions(usr.join("lib/x86_64-linux-gnu/libm.so.6"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(usr.join("bin/true"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(usr.join("share/doc/readme")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", usr.join("share/doc/readme")).unwrap();
    fs::remove_dir_all(usr.join("lib/kernel")).unwrap();
    fs::write(usr.join("share/stray"), b"not in the transaction").unwrap();
    fs::remove_file(usr.join("bin/bash")).unwrap();
    std::os::unix::fs::symlink("true", usr.join("bin/bash")).unwrap();

    let (code, out) = verify(&root, &[]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "missing        lib/x86_64-linux-gnu/libc.so.6",
        "missing        lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "wrong-content  lib/x86_64-linux-gnu/libm.so.6 (9 bytes instead of 30000)",
        "wrong-mode     bin/true (600 instead of 755)",
        "wrong-type     share/doc/readme (symlink instead of file)",
        "missing        lib/kernel",
        "missing        lib/kernel/6.1.0-test/vmlinuz",
        "extra          share/stray",
        "wrong-target   bin/bash (-> true instead of -> sh)",
    ] {
        assert!(out.contains(want), "verify should report {want:?}:\n{out}");
    }
    let out = ok(&["--root", r(&root), "repair"]);
    assert!(out.contains("repair: 9 fixed, 0 not recoverable"), "{out}");
    let (code, out) = verify(&root, &[]);
    // Extras stay unless asked to prune them.
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().filter(|l| !l.starts_with("transaction")).collect::<Vec<_>>(),
        ["extra          share/stray"]
    );
    ok(&["--root", r(&root), "repair", "--prune-extra"]);
    let (code, out) = verify(&root, &["--full"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshot(&usr), snapshot(&s.join("t2")));
    // The repaired files are the store's inodes again.
    let (code, _) = verify(&root, &["--store"]);
    assert_eq!(code, 0);
}

#[test]
fn store_damage_recovered_from_another_tree_or_reported() {
    let s = Scratch::new("store");
    let root = setup(&s);
    let store = root.join(".moss/assets/v2");
    // libc is shared by both transactions: replace its blob with garbage (a new
    // inode, as a filesystem repair or a bad copy would leave it), and lose the
    // file in /usr.
    let libc = Hash128::of(&vec![b'c'; 70_000]);
    let blob = store.join(libc.store_path());
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"garbage").unwrap();
    fs::remove_file(root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    let (code, out) = verify(&root, &["--store"]);
    assert_eq!(code, 1);
    assert!(out.contains("bad-blob") && out.contains(&libc.moss_hex()), "{out}");
    let o = run(&["--root", r(&root), "repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("recovered blob {libc} from")) && out.contains(".moss/root/1/usr"), "{out}");
    assert_eq!(fs::read(&blob).unwrap(), vec![b'c'; 70_000]);
    assert_eq!(verify(&root, &["--full", "--store"]).0, 0);

    // A blob only the active tree had, damaged in place (every link sees it): nothing
    // to recover from, and repair says exactly what.
    let only = Hash128::of(b"only in 2");
    let blob = store.join(only.store_path());
    fs::write(&blob, b"corrupted").unwrap();
    let (code, out) = verify(&root, &["--full"]);
    assert_eq!(code, 1);
    assert!(out.contains("wrong-content  share/only-v2"), "{out}");
    // The blob is read once, through the store, and both sides are reported.
    let (code, out) = verify(&root, &["--full", "--store"]);
    assert_eq!(code, 1);
    assert!(out.contains("wrong-content  share/only-v2 (xxh3-128 "), "{out}");
    assert!(out.contains(&format!("{} (content hashes to {})", only.moss_hex(), Hash128::of(b"corrupted"))), "{out}");
    // Quick mode (which repair runs) trusts the store's inode; a size change shows.
    fs::write(&blob, b"corrupted!").unwrap();
    let o = run(&["--root", r(&root), "repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("NOT RECOVERED")
            && out.contains("share/only-v2")
            && out.contains("no retained tree holds an intact copy"),
        "{out}"
    );
}

#[test]
fn verify_exit_codes_and_archived_states() {
    let s = Scratch::new("codes");
    let root = setup(&s);
    assert_eq!(verify(&root, &["--state", "1"]).0, 0);
    fs::remove_file(root.join(".moss/root/1/usr/bin/sh")).unwrap();
    let (code, out) = verify(&root, &["--state", "1"]);
    assert_eq!(code, 1);
    assert!(out.contains("missing        bin/sh"));
    ok(&["--root", r(&root), "repair", "--state", "1"]);
    assert_eq!(verify(&root, &["--state", "1"]).0, 0);
    assert_eq!(verify(&root, &["--state", "9"]).0, 2, "an unknown state cannot be checked");
    assert_eq!(verify(&s.join("nowhere"), &[]).0, 2);
    // A symlink planted in the tree is reported, never followed.
    fs::remove_dir_all(root.join("usr/share/doc")).unwrap();
    std::os::unix::fs::symlink(s.join("t1"), root.join("usr/share/doc")).unwrap();
    let (code, out) = verify(&root, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("wrong-type     share/doc (symlink instead of directory)"), "{out}");
    ok(&["--root", r(&root), "repair"]);
    assert_eq!(verify(&root, &["--full"]).0, 0);
    assert!(s.join("t1/share/doc/readme").exists(), "repair wrote through a symlink");
}

#[test]
fn store_check_finds_a_missing_blob_and_ignores_garbage() {
    let s = Scratch::new("storemissing");
    let root = setup(&s);
    let store = root.join(".moss/assets/v2");
    let libc = Hash128::of(&vec![b'c'; 70_000]);
    fs::remove_file(store.join(libc.store_path())).unwrap();
    // The tree still holds the content, so the tree itself is clean...
    assert_eq!(verify(&root, &["--full"]).0, 0);
    // ...but the store can no longer rebuild it, and says which blob is gone.
    let (code, out) = verify(&root, &["--store"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad-blob") && out.contains(&libc.moss_hex()) && out.contains("missing from the store"),
        "{out}"
    );
    // A stray file no transaction references is not the store's business to report.
    let stray = Hash128::of(b"nobody references me");
    let p = store.join(stray.store_path());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"not even the right content").unwrap();
    let (_, out) = verify(&root, &["--store"]);
    assert!(!out.contains(&stray.moss_hex()), "{out}");

    // A blob truncated in place: the tree's link shows the size, the store says so.
    let only = Hash128::of(b"only in 2");
    fs::write(store.join(only.store_path()), b"only").unwrap();
    let (code, out) = verify(&root, &["--full", "--store"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("wrong-content  share/only-v2 (4 bytes instead of 9)"), "{out}");
    assert!(out.contains(&format!("{} (4 bytes instead of 9)", only.moss_hex())), "{out}");
    // A symlink where a blob should be is never followed.
    let sh = Hash128::of(b"shell v1");
    let blob = store.join(sh.store_path());
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
    let (code, out) = verify(&root, &["--store"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{} (not a regular file)", sh.moss_hex())), "{out}");
}

#[test]
fn repair_full_finds_content_damaged_in_place() {
    let s = Scratch::new("inplace");
    let root = setup(&s);
    // Transaction 1's tree holds its own copy of bin/true (as after a copy fallback);
    // the active tree and the store share one inode.
    let t1 = root.join(".moss/root/1/usr/bin/true");
    fs::copy(&t1, s.join("copy")).unwrap();
    fs::rename(s.join("copy"), &t1).unwrap();
    fs::set_permissions(&t1, fs::Permissions::from_mode(0o755)).unwrap();
    // Written in place through the hard link: same size, same inode.
    let active = root.join("usr/bin/true");
    fs::write(&active, b"TRUE BINARY").unwrap();
    // A quick check trusts the store's inode; repair alone has nothing to do.
    assert_eq!(verify(&root, &[]).0, 0);
    let o = run(&["--root", r(&root), "repair"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("repair: 0 fixed"), "{o:?}");
    let (code, out) = verify(&root, &["--full"]);
    assert_eq!(code, 1);
    assert!(out.contains("wrong-content  bin/true (xxh3-128 "), "{out}");
    let o = run(&["--root", r(&root), "repair", "--full"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("fixed   wrong-content  bin/true") && out.contains(".moss/root/1/usr/bin/true"), "{out}");
    assert_eq!(fs::read(&active).unwrap(), b"true binary");
    assert_eq!(verify(&root, &["--full", "--store"]).0, 0);
}

#[test]
fn a_store_directory_replaced_by_a_file_means_missing_blobs_not_a_failed_check() {
    let s = Scratch::new("storedir");
    let root = setup(&s);
    let store = root.join(".moss/assets/v2");
    let libc = Hash128::of(&vec![b'c'; 70_000]);
    let top = store.join(&libc.store_path()[..2]);
    fs::rename(&top, s.join("moved")).unwrap();
    fs::write(&top, b"not a directory").unwrap();
    // The tree still holds every file: quick and full checks hash what they cannot
    // match to the store, and find nothing wrong.
    assert_eq!(verify(&root, &[]).0, 0);
    assert_eq!(verify(&root, &["--full"]).0, 0);
    let (code, out) = verify(&root, &["--store"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{} (missing from the store)", libc.moss_hex())), "{out}");
}

#[test]
fn a_wiped_or_half_wiped_usr_is_rebuilt_from_the_store() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new("wiped");
    let root = setup(&s);
    let usr = root.join("usr");
    // Half: one top-level directory gone with everything in it.
    let first = fs::read_dir(&usr).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    fs::remove_dir_all(&first).unwrap();
    assert_eq!(verify(&root, &[]).0, 1);
    ok(&["--root", r(&root), "repair"]);
    assert_eq!(verify(&root, &["--full", "--store"]).0, 0);
    // Whole: everything under /usr (its .stateID too stays: the transaction is known).
    for e in fs::read_dir(&usr).unwrap().flatten() {
        if e.file_name() != ".stateID" {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
    }
    let o = run(&["--root", r(&root), "repair"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let (code, out) = verify(&root, &["--full", "--store"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshot(&usr), snapshot(&s.join("t2")));
    // Rebuilt as the blit builds: files are the store's inodes.
    let sh = fs::metadata(usr.join("bin/sh")).unwrap();
    assert!(sh.nlink() >= 2, "bin/sh should be linked from the store");
}

/// A number in `verify --json` output.
fn json_count(out: &str, key: &str) -> u64 {
    out.split(&format!("\"{key}\":"))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// `verify --json`: (exit code, whether the saved stamps were trusted, blobs
/// looked up through the store).
fn verify_json(root: &Path) -> (i32, bool, u64, String) {
    let o = run(&["--json", "--root", r(root), "verify"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let trusted = out.contains("\"stamps_trusted\":true");
    let lookups = json_count(&out, "store_lookups");
    (o.status.code().unwrap_or(-1), trusted, lookups, out)
}

/// Saves the stamps of a check: `verify` writes nothing under the root, a
/// `repair` (which found nothing to fix) saves what its check learnt.
fn remember(root: &Path) {
    ok(&["--root", r(root), "repair"]);
}

/// Blobs' last changes must be older than the check by a few seconds to be
/// stamped (a change within the same clock tick would not show).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(2_200));
}

/// `s/root` with one transaction: the small tree and, for each (directory,
/// count, word), that many files `DIR/i` holding "WORD i".
fn committed_with_many(s: &Scratch, extra: &[(&str, usize, &str)]) -> PathBuf {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t"), 1);
    for (dir, n, word) in extra {
        for i in 0..*n {
            write(&s.join(&format!("t/{dir}/{i}")), format!("{word} {i}").as_bytes(), 0o644);
        }
    }
    ok(&["--root", r(&root), "state", "commit", "--from", r(&s.join("t"))]);
    root
}

#[test]
fn saved_stamps_spare_the_store_lookups_but_never_hide_a_change() {
    let s = Scratch::new("stamps");
    // Enough files that three changed ones leave the stamps describing the store
    // (a check samples the layout's blobs before it trusts them).
    let root = committed_with_many(&s, &[("share/many", 60, "file")]);
    let usr = root.join("usr");
    let known = root.join(".moss/lifeboat/known-blobs");
    // bin/true damaged in place through its hard link (same size, same inode):
    // a quick check trusts the store's inode, as it always has.
    fs::write(usr.join("bin/true"), b"TRUE BINARY").unwrap();
    settle();
    // The first check goes through the store and stamps every blob; verify
    // saves nothing (it writes nothing under the root), a repair does.
    let (code, trusted, first, out) = verify_json(&root);
    assert_eq!((code, trusted), (0, false), "{out}");
    assert!(first >= 67, "every non-empty file's blob looked up: {out}");
    assert!(!known.exists(), "verify wrote under the root");
    remember(&root);
    assert!(known.is_file());
    // The next one trusts them: no blob looked up, no directory listed (each
    // holds exactly its layout's entries), the same verdict.
    let (code, trusted, lookups, out) = verify_json(&root);
    assert_eq!((code, trusted, lookups, json_count(&out, "dirs_listed")), (0, true, 0, 0), "{out}");
    // An entry added to, or removed from, a directory changes it: it is listed.
    fs::write(usr.join("share/many/stray"), b"x").unwrap();
    fs::remove_file(usr.join("share/many/7")).unwrap();
    fs::rename(usr.join("share/many/8"), usr.join("share/many/8.moved")).unwrap();
    fs::remove_dir(usr.join("share/emptydir")).unwrap();
    let (code, trusted, _, out) = verify_json(&root);
    assert_eq!((code, trusted), (1, true), "{out}");
    for (class, path) in [
        ("extra", "share/many/stray"),
        ("missing", "share/many/7"),
        ("missing", "share/many/8"),
        ("extra", "share/many/8.moved"),
        ("missing", "share/emptydir"),
    ] {
        assert!(out.contains(&format!("{{\"class\":\"{class}\",\"path\":\"{path}\"")), "{class} {path}: {out}");
    }
    assert_eq!(json_count(&out, "dirs_listed"), 2, "share (its emptydir gone) and share/many: {out}");
    ok(&["--root", r(&root), "repair", "--prune-extra"]);

    // The store's blob of bin/true replaced by a good copy (as a recovery from
    // another tree does): the tree's file is no longer the store's inode, and
    // its damage must show although its inode number still matches the stamp.
    let blob = root.join(".moss/assets/v2").join(Hash128::of(b"true binary").store_path());
    fs::remove_file(&blob).unwrap();
    write(&blob, b"true binary", 0o755);
    // A file changed in place (its mode) and one replaced by a copy.
    fs::set_permissions(usr.join("bin/sh"), fs::Permissions::from_mode(0o700)).unwrap();
    let libm = usr.join("lib/x86_64-linux-gnu/libm.so.6");
    fs::copy(&libm, s.join("libm")).unwrap();
    fs::rename(s.join("libm"), &libm).unwrap();
    let (code, trusted, lookups, out) = verify_json(&root);
    assert_eq!((code, trusted), (1, true), "{out}");
    // Only the changed files' blobs are looked up, and those of the two files
    // the repair above linked again (their inodes changed since the stamps).
    assert!(lookups <= 5, "{out}");
    assert!(out.contains("\"path\":\"bin/true\"") && out.contains("wrong-content"), "{out}");
    assert!(out.contains("\"path\":\"bin/sh\"") && out.contains("wrong-mode"), "{out}");
    assert!(!out.contains("libm"), "a copy with the right content and metadata is fine: {out}");
    ok(&["--root", r(&root), "repair"]);
    assert_eq!(fs::read(usr.join("bin/true")).unwrap(), b"true binary");
    assert_eq!(verify(&root, &["--full", "--store"]).0, 0);
}

#[test]
fn a_damaged_or_planted_stamps_file_is_ignored_and_replaced() {
    let s = Scratch::new("stampsbad");
    let root = setup(&s);
    let known = root.join(".moss/lifeboat/known-blobs");
    settle();
    remember(&root);
    let good = fs::read(&known).unwrap();
    assert_eq!(&good[..8], b"LBKNOWN1");

    // Garbage, a flipped bit, a file cut short: ignored, the check goes through
    // the store and writes a good file again.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    for bad in [b"garbage".to_vec(), flipped, good[..good.len() - 3].to_vec()] {
        fs::write(&known, &bad).unwrap();
        let (code, trusted, lookups, out) = verify_json(&root);
        assert_eq!((code, trusted), (0, false), "{out}");
        assert!(lookups > 0, "{out}");
        assert_eq!(fs::read(&known).unwrap(), bad, "verify changed nothing");
        remember(&root);
        assert_eq!(fs::read(&known).unwrap(), good);
    }

    // A symlink planted under its name is neither followed nor written through.
    let outside = s.join("outside");
    fs::write(&outside, b"keep").unwrap();
    fs::remove_file(&known).unwrap();
    std::os::unix::fs::symlink(&outside, &known).unwrap();
    assert_eq!(verify_json(&root).0, 0);
    remember(&root);
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
    assert!(!fs::symlink_metadata(&known).unwrap().file_type().is_symlink());
    // A FIFO does not stall the check.
    fs::remove_file(&known).unwrap();
    nix::unistd::mkfifo(&known, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    assert_eq!(verify_json(&root).0, 0);
    remember(&root);
    assert_eq!(fs::read(&known).unwrap(), good);

    // Stamps of another layout (transaction 1's tree checked): not used for it.
    ok(&["--root", r(&root), "repair", "--state", "1"]);
    let (code, trusted, _, out) = verify_json(&root);
    assert_eq!((code, trusted), (0, false), "stamps written for transaction 1 are not transaction 2's: {out}");
}

/// Whether a quick check trusts the saved stamps is decided by what it would
/// spare: a directory wiped (its files' blobs were unlinked, so none matches its
/// stamp) needs no lookup at all — the files are missing — and the stamps are
/// still trusted; a store whose every blob was linked again (as the blit of
/// another tree sharing them does) would need a lookup per file, and the check
/// goes through the store in hash order instead.
#[test]
fn a_wiped_directory_keeps_the_stamps_and_a_store_linked_again_does_not() {
    let s = Scratch::new("stampswipe");
    let root = committed_with_many(&s, &[("share/many", 120, "many"), ("lib/some", 40, "some")]);
    settle();
    remember(&root);
    let (code, trusted, lookups, out) = verify_json(&root);
    assert_eq!((code, trusted, lookups), (0, true, 0), "{out}");

    // Three in four of the files gone with their directory: trusted, no lookup.
    fs::remove_dir_all(root.join("usr/share/many")).unwrap();
    let (code, trusted, lookups, out) = verify_json(&root);
    assert_eq!((code, trusted, lookups), (1, true, 0), "{out}");
    assert!(out.contains("{\"class\":\"missing\",\"path\":\"share/many\""), "{out}");
    ok(&["--root", r(&root), "repair"]);
    settle();
    remember(&root);

    // Every blob linked again: every file present would need its blob looked
    // up, so the check makes the pass through the store.
    let mut blobs = vec![root.join(".moss/assets/v2")];
    while let Some(d) = blobs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                blobs.push(p);
            } else {
                let again = p.with_extension("again");
                fs::hard_link(&p, &again).unwrap();
                fs::remove_file(&again).unwrap();
            }
        }
    }
    let (code, trusted, lookups, out) = verify_json(&root);
    assert_eq!((code, trusted), (0, false), "{out}");
    assert!(lookups >= 160, "every non-empty file's blob: {out}");
}
