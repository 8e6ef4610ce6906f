//! Transactions on real files: commit, list, show, activate, prune; the store's
//! hardlinks; bad trees and hostile indexes; and crash safety at every mutation
//! point of commit, activate and prune.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use lifeboat_state::hash::Hash128;
use lifeboat_state::layout::EntryData;

fn commit(root: &Path, tree: &Path, summary: &str) -> String {
    fs::create_dir_all(root).unwrap();
    ok(&["--root", root.to_str().unwrap(), "state", "commit", "--from", tree.to_str().unwrap(), "--summary", summary])
}

fn r(root: &Path) -> &str {
    root.to_str().unwrap()
}

#[test]
fn commit_list_activate_prune() {
    let s = Scratch::new("state");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    let list = ok(&["--root", r(&root), "--json", "state", "list"]);
    assert!(list.starts_with("[{\"id\":3"), "{list}");
    assert!(list.contains("\"state\":\"active\"") && list.contains("\"kernels\":[\"6.1.0-test\"]"), "{list}");
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "3");
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t3")));

    // The tree is hardlinked from the store; empty files are not.
    let libc = fs::metadata(root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    let h = Hash128::of(&vec![b'c'; 70_000]);
    let blob = fs::metadata(root.join(".moss/assets/v2").join(h.store_path())).unwrap();
    assert_eq!((libc.dev(), libc.ino()), (blob.dev(), blob.ino()));
    assert_eq!(fs::metadata(root.join("usr/share/empty")).unwrap().nlink(), 1);
    assert_eq!(fs::read_link(root.join("usr/bin/bash")).unwrap().to_str(), Some("sh"));

    let show = ok(&["--root", r(&root), "--json", "state", "show", "2"]);
    assert!(show.contains("\"state\":\"archived\"") && show.contains("\"symlinks\":1"), "{show}");

    ok(&["--root", r(&root), "state", "activate", "1"]);
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "1");
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t1")));
    assert_eq!(fs::read_to_string(root.join(".moss/root/3/usr/.stateID")).unwrap().trim(), "3");
    assert!(!root.join(".moss/root/1").exists());

    // Prune keeps the newest N and always the active one; blobs only tx 2 had go.
    let only2 = Hash128::of(b"only in 2");
    assert!(root.join(".moss/assets/v2").join(only2.store_path()).exists());
    let out = ok(&["--root", r(&root), "--json", "state", "prune", "--keep", "1"]);
    assert!(out.contains("\"removed\":[2]") && out.contains("\"kept\":[1,3]"), "{out}");
    assert!(!root.join(".moss/root/2").exists());
    assert!(!root.join(".moss/assets/v2").join(only2.store_path()).exists());
    assert!(root.join(".moss/assets/v2").join(Hash128::of(b"only in 3").store_path()).exists());
    let list = ok(&["--root", r(&root), "state", "list"]);
    assert!(!list.contains("tx 2") && list.contains("tx 1") && list.contains("tx 3"));
    // An id is never reused after a prune.
    tree(&s.join("t4"), 4);
    let out = commit(&root, &s.join("t4"), "tx 4");
    assert!(out.contains("committed transaction 4"), "{out}");
}

#[test]
fn bad_trees_are_refused_and_change_nothing() {
    let s = Scratch::new("badtree");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "good");
    let before = fs::read(root.join(".moss/lifeboat/state.idx")).unwrap();
    let blobs_before = fs::read_dir(root.join(".moss/assets/v2")).unwrap().count();

    tree(&s.join("t2"), 2);
    let sock = s.join("t2/share/socket");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = fails(&["--root", r(&root), "state", "commit", "--from", s.join("t2").to_str().unwrap()]);
    assert!(err.contains("share/socket") && err.contains("socket"), "{err}");

    tree(&s.join("t3"), 3);
    nix::unistd::mkfifo(&s.join("t3/bin/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let err = fails(&["--root", r(&root), "state", "commit", "--from", s.join("t3").to_str().unwrap()]);
    assert!(err.contains("bin/fifo") && err.contains("FIFO"), "{err}");

    if !is_root() {
        tree(&s.join("t5"), 5);
        write(&s.join("t5/share/secret"), b"x", 0o000);
        let err = fails(&["--root", r(&root), "state", "commit", "--from", s.join("t5").to_str().unwrap()]);
        assert!(err.contains("share/secret") && err.contains("not readable"), "{err}");
    }
    assert_eq!(fs::read(root.join(".moss/lifeboat/state.idx")).unwrap(), before);
    assert_eq!(fs::read_dir(root.join(".moss/assets/v2")).unwrap().count(), blobs_before);
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "1");

    let err = fails(&["--root", r(&root), "state", "activate", "42"]);
    assert!(err.contains("no transaction 42"), "{err}");
    let err = fails(&["--root", s.join("t1").to_str().unwrap(), "state", "list"]);
    assert!(err.contains("no state index"), "{err}");
    let err = fails(&["--root", s.join("t1").to_str().unwrap(), "state", "activate", "1"]);
    assert!(err.contains("not a lifeboat root"), "{err}");
}

#[test]
fn damaged_and_hostile_indexes() {
    let s = Scratch::new("hostile");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    tree(&s.join("t2"), 2);
    commit(&root, &s.join("t1"), "one");
    commit(&root, &s.join("t2"), "two");
    let idx = root.join(".moss/lifeboat/state.idx");
    let good = fs::read(&idx).unwrap();

    // A flipped payload byte: checksum error named, then the previous generation.
    let mut bad = good.clone();
    let n = bad.len() - 3;
    bad[n] ^= 0x40;
    fs::write(&idx, &bad).unwrap();
    let o = run(&["--root", r(&root), "state", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success());
    assert!(err.contains("state.idx: checksum mismatch") && err.contains("state.idx.prev"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("two"));

    // Truncated, bad magic, future version: each named.
    for (bytes, want) in [
        (good[..30].to_vec(), "truncated"),
        ([b"NOTMAGIC".as_slice(), &good[8..]].concat(), "bad magic"),
        ([&good[..8], &[9u8, 0][..], &good[10..]].concat(), "format version 9"),
    ] {
        fs::write(&idx, &bytes).unwrap();
        fs::remove_file(root.join(".moss/lifeboat/state.idx.prev")).ok();
        let err = fails(&["--root", r(&root), "state", "list"]);
        assert!(err.contains(want) && err.contains("state.idx"), "{want}: {err}");
    }

    // A hostile payload: a path `..` and an absolute-looking name, with a valid
    // header and checksum. It is refused; nothing is written outside the root.
    let layout = lifeboat_state::layout::Layout::new(vec![lifeboat_state::layout::LayoutEntry {
        path: b"evil".to_vec().into(),
        perm: 0o644,
        uid: 0,
        gid: 0,
        data: EntryData::File { hash: Hash128::of(b"x"), size: 1 },
        attrs: None,
    }])
    .unwrap();
    let meta =
        lifeboat_state::index::TxMeta { id: 1, created: 0, summary: "evil".into(), parent: None, kernels: vec![] };
    let mut w = lifeboat_state::index::StateIndex::build(5, &[(meta, &layout)]);
    w.paths.names.0 = b"..".to_vec();
    w.paths.name_len[0] = 2;
    fs::write(&idx, lifeboat_state::index::file::encode(&w)).unwrap();
    fs::remove_file(root.join(".moss/lifeboat/state.idx.prev")).ok();
    // Reading refuses it, naming what is wrong and the way out.
    let err = fails(&["--root", r(&root), "state", "list"]);
    assert!(err.contains("invalid content") && err.contains("path #0") && err.contains("state recover"), "{err}");
    // A change first sets it aside and rebuilds the index from the trees.
    let o = run(&["--root", r(&root), "state", "activate", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("invalid content")
            && err.contains("path #0")
            && err.contains("set the unreadable state.idx aside"),
        "{err}"
    );
    assert!(fs::read_dir(root.join(".moss/lifeboat")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("state.idx.damaged-")));
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "1");
    // Huge counts: a run past every table.
    let mut w = lifeboat_state::index::StateIndex::build(
        5,
        &[(
            lifeboat_state::index::TxMeta { id: 1, created: 0, summary: String::new(), parent: None, kernels: vec![] },
            &layout,
        )],
    );
    w.transactions[0].runs = vec![0, u32::MAX];
    fs::write(&idx, lifeboat_state::index::file::encode(&w)).unwrap();
    let err = fails(&["--root", r(&root), "state", "list"]);
    assert!(err.contains("run out of range"), "{err}");
    assert!(!s.0.parent().unwrap().join("evil").exists());
}

/// The invariants after any crash: /usr is one complete transaction the index
/// knows, the index loads, and every blob a retained transaction needs exists.
fn check_invariants(root: &Path, trees: &[(u64, &Path)], what: &str) {
    let o = run(&["--root", r(root), "--json", "state", "list"]);
    assert!(o.status.success(), "{what}: index does not load: {}", String::from_utf8_lossy(&o.stderr));
    let sr = lifeboat_state::root::SystemRoot::open(root).unwrap();
    let idx = lifeboat_state::recover::load_existing_index(&sr).unwrap().index;
    let active = sr.active_id().unwrap_or_else(|| panic!("{what}: /usr has no .stateID"));
    assert!(idx.contains(active), "{what}: active {active} not in the index");
    // A commit rerun after a crash that recorded (but did not activate) transaction
    // 3 commits the same tree again as 4: the newest tree stands for both.
    let src = trees.iter().find(|(id, _)| *id == active).or(trees.last()).unwrap().1;
    assert_eq!(snapshot(&root.join("usr")), snapshot(src), "{what}: /usr is not transaction {active}");
    let store = root.join(".moss/assets/v2");
    for t in idx.transactions() {
        for e in idx.layout(t.id).unwrap().entries() {
            if let EntryData::File { hash, size } = e.data {
                if size > 0 {
                    assert!(
                        store.join(hash.store_path()).exists(),
                        "{what}: blob of {} (tx {}) missing",
                        e.path_lossy(),
                        t.id
                    );
                }
            }
        }
    }
}

/// Runs `args` with a crash at the 1st, 2nd, ... failpoint until it completes;
/// `setup` rebuilds the starting state each time.
fn crash_everywhere(
    name: &str,
    setup: &dyn Fn() -> std::path::PathBuf,
    args: &dyn Fn(&Path) -> Vec<String>,
    trees: &[(u64, &Path)],
) -> usize {
    let mut points = HashSet::new();
    for n in 1.. {
        let root = setup();
        let a = args(&root);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = run_env(&refs, &[("LIFEBOAT_FAILPOINT", &format!("@{n}"))]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.code() != Some(lifeboat_state::failpoint::CRASH_STATUS) {
            assert!(o.status.success(), "{name}: run {n} failed without a crash: {err}");
            return n - 1;
        }
        let at = err.lines().find_map(|l| l.strip_prefix("failpoint: simulated crash at ")).unwrap_or("?").to_owned();
        points.insert(at.clone());
        check_invariants(&root, trees, &format!("{name} crashed at #{n} ({at})"));
        // The next run recovers and completes.
        let o = run(&refs);
        assert!(
            o.status.success(),
            "{name}: after a crash at {at}, a rerun failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        check_invariants(&root, trees, &format!("{name} rerun after #{n} ({at})"));
        // A blob half-added when the crash came is gone once a commit ran again.
        if let Ok(rd) = fs::read_dir(root.join(".moss/assets/lifeboat-stage")) {
            let left: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty() || name != "commit", "{name} rerun after {at}: staging holds {left:?}");
        }
        assert!(n < 500, "{name}: too many failpoints");
    }
    unreachable!()
}

#[test]
fn crash_at_every_mutation_point() {
    let s = Scratch::new("crash");
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
    }
    let t: Vec<std::path::PathBuf> = (1..=3).map(|v| s.join(&format!("t{v}"))).collect();
    // The commit's tree has a file that cannot be its blob's inode (the same
    // content as bin/true, another mode): its variant is made mid-commit.
    write(&t[2].join("share/doc/true-as-a-document"), b"true binary", 0o644);
    let trees: Vec<(u64, &Path)> = vec![(1, &t[0]), (2, &t[1]), (3, &t[2])];
    let base = s.join("base");
    commit(&base, &t[0], "one");
    commit(&base, &t[1], "two");
    let fresh = || {
        let root = s.join("work");
        let _ = fs::remove_dir_all(&root);
        let st = std::process::Command::new("cp").arg("-a").arg(&base).arg(&root).status().unwrap();
        assert!(st.success());
        root
    };
    let n = crash_everywhere(
        "commit",
        &fresh,
        &|root| {
            vec![
                "--root".into(),
                r(root).into(),
                "state".into(),
                "commit".into(),
                "--from".into(),
                t[2].display().to_string(),
            ]
        },
        &trees,
    );
    assert!(n >= 8, "commit passed only {n} failpoints");
    let n = crash_everywhere(
        "activate",
        &fresh,
        &|root| vec!["--root".into(), r(root).into(), "state".into(), "activate".into(), "1".into()],
        &trees,
    );
    assert!(n >= 3, "activate passed only {n} failpoints");
    let n = crash_everywhere(
        "prune",
        &fresh,
        &|root| vec!["--root".into(), r(root).into(), "state".into(), "prune".into(), "--keep".into(), "1".into()],
        &trees,
    );
    assert!(n >= 3, "prune passed only {n} failpoints");
}

#[test]
fn same_content_under_two_modes_gets_both_modes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Scratch::new("twomodes");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/tool"), b"#!/bin/sh\necho same\n", 0o755);
    write(&t.join("share/doc/tool.example"), b"#!/bin/sh\necho same\n", 0o644);
    ok(&["--root", root.to_str().unwrap(), "state", "commit", "--from", t.to_str().unwrap()]);
    let usr = root.join("usr");
    let a = std::fs::metadata(usr.join("bin/tool")).unwrap();
    let b = std::fs::metadata(usr.join("share/doc/tool.example")).unwrap();
    assert_eq!(a.permissions().mode() & 0o7777, 0o755);
    assert_eq!(b.permissions().mode() & 0o7777, 0o644);
    // One of them is the store's inode; the other had to be a copy.
    assert_ne!(a.ino(), b.ino());
    ok(&["--root", root.to_str().unwrap(), "verify", "--full", "--store"]);
}

/// Path, type and mode, owner and content of every entry below `dir`.
fn owned_snapshot(dir: &Path) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel == ".stateID" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string().into_bytes()
            } else if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else {
                fs::read(&p).unwrap()
            };
            out.push((rel, m.permissions().mode(), m.uid(), m.gid(), content));
        }
    }
    out.sort();
    out
}

/// The blit cuts the entries into runs anywhere, and a run's worker makes the
/// ancestors it finds missing itself; whoever comes second to a directory opens
/// what the other made. A deep tree with set-group-ID directories and other
/// owners must come out exact — types, modes, owners, contents — however the
/// runs fell.
#[test]
fn a_deep_tree_is_blitted_exactly_however_the_runs_fall() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("deepblit");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    for c in 0..40 {
        let mut d = t.join(format!("lib/c{c:02}"));
        for level in 0..7 {
            d = d.join(format!("d{level}"));
            let mode = if level % 2 == 0 { 0o644 } else { 0o755 };
            write(&d.join(format!("f{level}")), format!("{c}/{level}").as_bytes(), mode);
            if level == 3 {
                std::os::unix::fs::symlink("../f2", d.join("up")).unwrap();
            }
        }
    }
    let sg = t.join("share/sg");
    write(&sg.join("sub/deeper/x"), b"x in a set-group-ID directory", 0o640);
    write(&sg.join("y"), b"y", 0o644);
    for (p, mode) in [(sg.clone(), 0o2775), (sg.join("sub"), 0o2750), (sg.join("sub/deeper"), 0o755)] {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(t.join("lib/c07/d0"), fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        let own = |p: &Path, u: u32, g: u32| std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
        own(&sg, 0, 4242);
        own(&sg.join("sub"), 1000, 4242);
        own(&sg.join("sub/deeper"), 0, 0);
        own(&sg.join("sub/deeper/x"), 1000, 4243);
        own(&sg.join("y"), 0, 4242);
        own(&t.join("lib/c11/d0/d1/d2/d3/up"), 1000, 1000);
    }
    commit(&root, &t, "deep");
    assert_eq!(owned_snapshot(&root.join("usr")), owned_snapshot(&t), "the first blit");
    // A second transaction, then transaction 1 again from the store alone.
    write(&t.join("lib/c00/new"), b"new", 0o644);
    commit(&root, &t, "deep 2");
    fs::remove_file(t.join("lib/c00/new")).unwrap();
    fs::remove_dir_all(root.join(".moss/root/1")).unwrap();
    ok(&["--root", r(&root), "state", "activate", "1"]);
    assert_eq!(owned_snapshot(&root.join("usr")), owned_snapshot(&t), "the blit of a removed tree");
    ok(&["--root", r(&root), "verify", "--full"]);
}

/// Every entry below `dir` with what changes when anything is written, moved
/// or removed: path, type, inode, size, modification and change time.
fn disk_state(dir: &Path) -> Vec<(String, u64, u64, i64, i64, i64, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        out.push((d.display().to_string(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()));
        if m.is_dir() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A lost index (a bad block, a user cleaning up) costs no rollback: the next
/// change rebuilds it from the trees, keeps every tree, and hands out an id no
/// tree and no boot entry has named.
#[test]
fn a_lost_index_is_rebuilt_from_the_trees_and_no_id_is_reused() {
    let s = Scratch::new("lostidx");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    // Entries for 1, 2 and 3 on an ESP image; then 2 and 3 go (1 active).
    write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
    let img = s.join("esp.img");
    ok(&["disk", "create", r(&img), "--size", "64M", "--esp-size", "60M"]);
    ok(&["--root", r(&root), "--esp", r(&img), "boot", "sync"]);
    ok(&["--root", r(&root), "state", "activate", "1"]);
    tree(&s.join("t4"), 4);
    commit(&root, &s.join("t4"), "tx 4");
    ok(&["--root", r(&root), "state", "activate", "1"]);
    ok(&["--root", r(&root), "state", "prune", "--keep", "0"]);
    assert!(!root.join(".moss/root/4").exists());
    // Transaction 4 is gone from the trees and the index; the entries name 1-3.
    fs::remove_file(root.join(".moss/lifeboat/state.idx")).unwrap();
    fs::remove_file(root.join(".moss/lifeboat/state.idx.prev")).unwrap();

    // Reading says what happened and how to mend it, and changes nothing.
    let before = disk_state(&root);
    let err = fails(&["--root", r(&root), "state", "list"]);
    assert!(err.contains("no state index") && err.contains("state recover") && err.contains("transaction 1"), "{err}");
    let o = run(&["--root", r(&root), "state", "recover", "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(disk_state(&root), before, "a dry run wrote something");

    // The next commit rebuilds the index first: nothing is removed, and its id
    // is above every one the trees (1) and the boot entries (3) name.
    tree(&s.join("t5"), 5);
    let o = run(&["--root", r(&root), "--esp", r(&img), "state", "commit", "--from", r(&s.join("t5"))]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("removed"), "{err}");
    assert!(err.contains("adopted") && err.contains("transaction 1"), "{err}");
    assert!(out.contains("committed transaction 4"), "ids 1-3 are named by boot entries: {out}{err}");
    let list = ok(&["--root", r(&root), "state", "list"]);
    assert!(list.contains("recovered from") && list.contains("archived"), "{list}");
    assert_eq!(snapshot(&root.join(".moss/root/1/usr")), snapshot(&s.join("t1")));
    ok(&["--root", r(&root), "verify", "--state", "1", "--full"]);
    // And back: the recovered transaction activates.
    ok(&["--root", r(&root), "state", "activate", "1"]);
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t1")));

    // Without the ESP, the trees alone: never below what they name.
    fs::remove_file(root.join(".moss/lifeboat/state.idx")).unwrap();
    fs::remove_file(root.join(".moss/lifeboat/state.idx.prev")).unwrap();
    let out = commit(&root, &s.join("t5"), "again");
    assert!(out.contains("committed transaction 5"), "{out}");
    assert!(root.join(".moss/root/1/usr").is_dir() && root.join(".moss/root/4/usr").is_dir());
}

/// An unreadable index and its previous generation are set aside, not
/// overwritten, and the index is rebuilt from the trees.
#[test]
fn a_damaged_index_is_set_aside_and_rebuilt() {
    let s = Scratch::new("damagedidx");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=2 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    let lb = root.join(".moss/lifeboat");
    fs::write(lb.join("state.idx"), b"not an index at all").unwrap();
    fs::write(lb.join("state.idx.prev"), b"LBSTATE\0 cut short").unwrap();
    let o = run(&["--root", r(&root), "state", "recover"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("adopted transactions") && out.contains("next id 3"), "{out}");
    let aside: Vec<String> = fs::read_dir(&lb)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".damaged-"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    let list = ok(&["--root", r(&root), "state", "list"]);
    assert!(list.contains("active") && list.contains("archived"), "{list}");
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t2")));
}

/// A copy of a /usr (its `.stateID` included) commits cleanly: the copied id
/// is not content, the record of what is active stays right, and nothing of the
/// old transaction or the user's new files is lost afterwards.
#[test]
fn a_copied_usr_commits_cleanly_and_nothing_is_lost_after() {
    let s = Scratch::new("copiedusr");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    let new = s.join("new");
    assert!(std::process::Command::new("cp").arg("-a").arg(root.join("usr")).arg(&new).status().unwrap().success());
    write(&new.join("share/doc/NEW"), b"x\n", 0o644);
    let out = commit(&root, &new, "copied and changed");
    assert!(out.contains("committed transaction 2"), "{out}");
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "2");
    let o = run(&["--root", r(&root), "verify"]);
    assert!(o.status.success(), "verify right after the commit: {}", String::from_utf8_lossy(&o.stdout));
    let show = ok(&["--root", r(&root), "state", "show", "2", "--files"]);
    assert!(!show.contains(".stateID"), "{show}");
    ok(&["--root", r(&root), "repair"]);
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "2");
    let before = disk_state(&root);
    let out = ok(&["--root", r(&root), "state", "prune", "--keep", "5", "--dry-run"]);
    assert!(out.contains("would remove: nothing"), "{out}");
    assert_eq!(disk_state(&root), before, "a dry run changed the root");
    assert!(root.join(".moss/root/1/usr").is_dir());
    ok(&["--root", r(&root), "repair", "--prune-extra"]);
    assert_eq!(fs::read(root.join("usr/share/doc/NEW")).unwrap(), b"x\n");
}

/// Read-only commands and dry runs change nothing under the root, however
/// much there is to reconcile; the next change tidies what is lifeboat's own
/// and keeps what is not.
#[test]
fn read_only_commands_and_dry_runs_write_nothing_and_unknown_trees_are_kept() {
    let s = Scratch::new("dryrun");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    let trees = root.join(".moss/root");
    // A stale staging tree, a tree under the wrong name, an unknown tree with
    // an id of its own, one without any, and a second copy of the active
    // transaction that differs from it.
    let cp = |a: &Path, b: &Path| {
        assert!(std::process::Command::new("cp").arg("-a").arg(a).arg(b).status().unwrap().success())
    };
    fs::create_dir_all(trees.join("staging")).unwrap();
    cp(&trees.join("1/usr"), &trees.join("staging/usr"));
    fs::rename(trees.join("2"), trees.join("9")).unwrap();
    fs::create_dir_all(trees.join("7")).unwrap();
    cp(&s.join("t1"), &trees.join("7/usr"));
    fs::write(trees.join("7/usr/.stateID"), "7\n").unwrap();
    fs::create_dir_all(trees.join("8/usr")).unwrap();
    fs::write(trees.join("8/usr/mine"), b"a user's").unwrap();
    fs::create_dir_all(trees.join("3")).unwrap();
    cp(&root.join("usr"), &trees.join("3/usr"));
    fs::write(trees.join("3/usr/share/doc/readme"), b"changed").unwrap();

    let before = disk_state(&root);
    for args in [
        vec!["state", "list"],
        vec!["state", "show", "1", "--files"],
        vec!["verify"],
        vec!["verify", "--full"],
        vec!["state", "prune", "--keep", "1", "--dry-run"],
        vec!["state", "recover", "--dry-run"],
    ] {
        let mut a = vec!["--root", r(&root)];
        a.extend(args.iter());
        let o = run(&a);
        assert!(o.status.code().is_some_and(|c| c <= 1), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(disk_state(&root), before, "{args:?} changed the root");
    }
    let o = run(&["--root", r(&root), "state", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("would adopt") && err.contains(".moss/root/7"), "{err}");

    // The next change: staging removed, the misplaced tree moved home, 7
    // adopted, 8 and the differing copy of 3 kept.
    tree(&s.join("t4"), 4);
    let o = run(&["--root", r(&root), "state", "commit", "--from", r(&s.join("t4"))]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("committed transaction 10"), "{out}{err}");
    assert!(!trees.join("staging").exists());
    assert_eq!(snapshot(&trees.join("2/usr")), snapshot(&s.join("t2")));
    assert_eq!(fs::read(trees.join("8/usr/mine")).unwrap(), b"a user's");
    let kept3: Vec<_> = fs::read_dir(&trees)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.join("usr/share/doc/readme").is_file() && fs::read(p.join("usr/share/doc/readme")).unwrap() == b"changed"
        })
        .collect();
    assert_eq!(kept3.len(), 1, "the differing copy of transaction 3 is kept");
    let list = ok(&["--root", r(&root), "state", "list"]);
    assert!(list.lines().any(|l| l.trim_start().starts_with("7 ")), "{list}");
    ok(&["--root", r(&root), "state", "activate", "7"]);
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t1")));
}

/// `.moss/root` and `.moss/assets` hold every old setuid binary: closed to
/// other users on a new root, and tightened on an old one.
#[test]
fn archived_setuid_binaries_are_out_of_other_users_reach() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("perms");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    write(&s.join("t1/bin/sudo"), b"an old sudo", 0o4755);
    commit(&root, &s.join("t1"), "one");
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(".moss/root"), mode(".moss/assets")), (0o700, 0o700));
    fs::set_permissions(root.join(".moss/root"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join(".moss/assets"), fs::Permissions::from_mode(0o755)).unwrap();
    tree(&s.join("t2"), 2);
    let o = run(&["--root", r(&root), "state", "commit", "--from", r(&s.join("t2"))]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("now 700"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!((mode(".moss/root"), mode(".moss/assets")), (0o700, 0o700));
    assert_eq!(fs::metadata(root.join(".moss/root/1/usr/bin/sudo")).unwrap().permissions().mode() & 0o7777, 0o4755);
}

/// A tree with hard links (mesa's drivers, git's programs) commits: each group
/// is one blob, and the tree keeps the group.
#[test]
fn hard_link_groups_commit_as_one_blob() {
    let s = Scratch::new("hardlinks");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/a"), b"hi\n", 0o755);
    fs::hard_link(t.join("bin/a"), t.join("bin/b")).unwrap();
    fs::create_dir_all(t.join("libexec")).unwrap();
    fs::hard_link(t.join("bin/a"), t.join("libexec/c")).unwrap();
    let out = commit(&root, &t, "links");
    assert!(out.contains("1 new blobs"), "{out}");
    let ino = |p: &str| fs::metadata(root.join("usr").join(p)).unwrap().ino();
    assert!(ino("bin/a") == ino("bin/b") && ino("bin/a") == ino("libexec/c"));
    ok(&["--root", r(&root), "verify", "--full"]);
}

/// A FIFO where a repair expected a copy of a lost blob (in another retained
/// tree) is skipped, never opened for reading: the repair ends, naming what it
/// could not restore.
#[test]
fn a_fifo_where_a_copy_was_expected_does_not_hang_repair() {
    let s = Scratch::new("fifo");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=2 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    let libc = "lib/x86_64-linux-gnu/libc.so.6";
    let blob = root.join(".moss/assets/v2").join(Hash128::of(&vec![b'c'; 70_000]).store_path());
    fs::remove_file(&blob).unwrap();
    fs::remove_file(root.join("usr").join(libc)).unwrap();
    let other = root.join(".moss/root/1/usr").join(libc);
    fs::remove_file(&other).unwrap();
    nix::unistd::mkfifo(&other, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let o = std::process::Command::new("timeout").args(["30", bin(), "--root", r(&root), "repair"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_ne!(o.status.code(), Some(124), "repair hung on the FIFO");
    assert_eq!(o.status.code(), Some(1), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("libc.so.6") && out.contains("missing"), "{out}");
}
