//! What a hostile review of the transactions found, each kept as the test that
//! failed then: user data where a repair or prune reaches, trees lifeboat
//! cannot tell are its own, metadata shared through the store's inodes, a
//! damaged store under a rollback, hostile names and ids. Run as root (hard
//! links to other owners, capabilities, mounts in a private namespace).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn r(root: &Path) -> &str {
    root.to_str().unwrap()
}

fn commit(root: &Path, tree: &Path, summary: &str) -> String {
    std::fs::create_dir_all(root).unwrap();
    ok(&["--root", r(root), "state", "commit", "--from", tree.to_str().unwrap(), "--summary", summary])
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Repairing an archived transaction must not change the active one. Here the
/// admin drops the setuid bit of /usr/bin/su in place and commits the result;
/// the new transaction records `su` as 0755 but is linked to the very inode
/// transaction 1 records as 04755. `repair --state 1` then puts the setuid bit
/// back on the *active* /usr/bin/su.
#[test]
fn repairing_an_archived_transaction_leaves_the_active_one_alone() {
    let s = Scratch::new("rv1-suid");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t1");
    write(&t.join("bin/su"), b"vulnerable setuid binary\n", 0o4755);
    fs::set_permissions(t.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    commit(&root, &t, "one");
    // The admin disables the setuid bit on the running system, then records it.
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o755)).unwrap();
    let t2 = s.join("t2");
    sh(&format!("cp -a {} {} && rm {}/.stateID", root.join("usr").display(), t2.display(), t2.display()));
    write(&t2.join("bin/other"), b"x\n", 0o755);
    commit(&root, &t2, "su no longer setuid");
    assert_eq!(mode(&root.join("usr/bin/su")), 0o755);
    ok(&["--root", r(&root), "verify"]);
    let _ = run(&["--root", r(&root), "repair", "--state", "1"]);
    assert_eq!(
        mode(&root.join("usr/bin/su")),
        0o755,
        "repair of archived transaction 1 turned the setuid bit back on in the active /usr"
    );
    ok(&["--root", r(&root), "verify"]);
}

/// A tree rebuilt from the store on activation must not be made active with a
/// file whose size differs from its layout (a truncated blob): the layout
/// says 7 bytes, the blob holds 3. Today the activation succeeds and the new
/// /usr has the short file (and an intact copy was in another tree).
#[test]
fn activation_from_the_store_refuses_a_truncated_blob() {
    let s = Scratch::new("rv1-trunc");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/ping"), b"capbin\n", 0o755);
    sh(&format!("setcap cap_net_raw+ep {}", t.join("bin/ping").display()));
    write(&t.join("bin/sh"), b"shell\n", 0o755);
    commit(&root, &t, "one");
    write(&t.join("bin/new"), b"new\n", 0o755);
    commit(&root, &t, "two");
    let blob = root.join(".moss/assets/v2").join(lifeboat_state::hash::Hash128::of(b"capbin\n").store_path());
    sh(&format!("truncate -s 3 {}", blob.display()));
    fs::remove_dir_all(root.join(".moss/root/1")).unwrap();
    let o = run(&["--root", r(&root), "state", "activate", "1"]);
    let active = fs::read_to_string(root.join("usr/.stateID")).unwrap();
    if o.status.success() && active.trim() == "1" {
        let v = run(&["--root", r(&root), "verify"]);
        assert!(
            v.status.success(),
            "activation made a tree with a truncated file active and said it succeeded:\n{}",
            String::from_utf8_lossy(&v.stdout)
        );
    }
}

/// Repair keeps hard-link groups: one member of a group (files with a
/// capability, so the group is a copy, not the blob) is deleted; after
/// `repair` the three names must be one inode again, as committed.
#[test]
fn repair_restores_a_member_of_a_hard_link_group_as_a_link() {
    let s = Scratch::new("rv1-hl");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/ping"), b"capbin\n", 0o755);
    sh(&format!("setcap cap_net_raw+ep {}", t.join("bin/ping").display()));
    fs::create_dir_all(t.join("sbin")).unwrap();
    fs::hard_link(t.join("bin/ping"), t.join("sbin/ping")).unwrap();
    commit(&root, &t, "one");
    let u = root.join("usr");
    assert_eq!(ino(&u.join("bin/ping")), ino(&u.join("sbin/ping")), "commit kept the group");
    fs::remove_file(u.join("bin/ping")).unwrap();
    ok(&["--root", r(&root), "repair"]);
    assert_eq!(ino(&u.join("bin/ping")), ino(&u.join("sbin/ping")), "repair split the hard-link group");
}

/// Hard-linked empty files keep their group through a commit (rsync -H sees
/// `hf..T...... lib/b/e2 => lib/a/e1` today).
#[test]
fn hard_linked_empty_files_stay_one_inode() {
    let s = Scratch::new("rv1-emptyhl");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("lib/a/e1"), b"", 0o644);
    fs::create_dir_all(t.join("lib/b")).unwrap();
    fs::hard_link(t.join("lib/a/e1"), t.join("lib/b/e2")).unwrap();
    commit(&root, &t, "one");
    let u = root.join("usr");
    assert_eq!(ino(&u.join("lib/a/e1")), ino(&u.join("lib/b/e2")), "empty hard-link group split by commit");
}

/// `repair` without `--prune-extra` must not delete the user's files: here the
/// transaction has `local` as a symlink and the user made it a directory with
/// a file in it. `verify` names only `local`; `repair` deletes the directory
/// and the file with it.
#[test]
fn repair_without_prune_extra_keeps_files_in_the_way() {
    let s = Scratch::new("rv1-inway");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/a"), b"a\n", 0o755);
    std::os::unix::fs::symlink("../var/usrlocal", t.join("local")).unwrap();
    commit(&root, &t, "one");
    let u = root.join("usr");
    fs::remove_file(u.join("local")).unwrap();
    write(&u.join("local/bin/mytool"), b"my precious script\n", 0o755);
    let _ = run(&["--root", r(&root), "repair"]);
    let mut found = false;
    sh(&format!("find {} -name mytool > {}/found", root.display(), s.0.display()));
    if !fs::read_to_string(s.join("found")).unwrap().trim().is_empty() {
        found = true;
    }
    assert!(found, "repair (no --prune-extra) deleted usr/local/bin/mytool without keeping it anywhere");
}

/// A `pruning-N` directory lifeboat cannot have made (N above every id it ever
/// handed out) is not lifeboat's leftover and must be kept.
#[test]
fn a_pruning_dir_lifeboat_never_made_is_kept() {
    let s = Scratch::new("rv1-pruning");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    write(&root.join(".moss/root/pruning-99/usr/precious"), b"mine\n", 0o644);
    tree(&s.join("t2"), 2);
    commit(&root, &s.join("t2"), "two");
    assert!(
        root.join(".moss/root/pruning-99/usr/precious").exists(),
        "a commit deleted .moss/root/pruning-99 (\"transaction 99 was pruned\"), though the next id was 2"
    );
}

/// A "second copy of a transaction" is only removed when it is one: a copy of
/// transaction 1's tree to which the user added a capability is not.
#[test]
fn a_copy_with_an_added_capability_is_not_removed_as_a_second_copy() {
    let s = Scratch::new("rv1-copy");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    tree(&s.join("t2"), 2);
    commit(&root, &s.join("t2"), "two");
    let copy = root.join(".moss/root/20");
    fs::create_dir_all(&copy).unwrap();
    sh(&format!("cp -a {}/.moss/root/1/usr {}/usr", root.display(), copy.display()));
    sh(&format!("setcap cap_chown+ep {}/usr/bin/sh", copy.display()));
    ok(&["--root", r(&root), "state", "recover"]);
    assert!(
        copy.join("usr/bin/sh").exists(),
        "recover deleted a tree whose bin/sh carries a capability transaction 1 lacks"
    );
}

/// A damaged `state.idx` after a prune: the fallback to `state.idx.prev` must
/// not bring back the pruned transactions (their trees and blobs are gone).
#[test]
fn the_previous_index_does_not_resurrect_pruned_transactions() {
    let s = Scratch::new("rv1-prev");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    ok(&["--root", r(&root), "state", "prune", "--keep", "1"]);
    fs::write(root.join(".moss/lifeboat/state.idx"), b"garbage").unwrap();
    ok(&["--root", r(&root), "state", "recover"]);
    let list = ok(&["--root", r(&root), "state", "list"]);
    assert!(!list.contains("no-tree"), "pruned transactions are back, their blobs freed:\n{list}");
    let v = run(&["--root", r(&root), "verify", "--store"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// A FIFO where the index is expected is named, not waited on.
#[test]
fn a_fifo_as_the_index_does_not_hang() {
    let s = Scratch::new("rv1-fifo");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    let idx = root.join(".moss/lifeboat/state.idx");
    fs::remove_file(&idx).unwrap();
    nix::unistd::mkfifo(&idx, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let o = Command::new("timeout").args(["10", bin(), "--root", r(&root), "state", "list"]).output().unwrap();
    assert_ne!(o.status.code(), Some(124), "state list hung on a FIFO at state.idx");
}

/// One stray symlink (or file) in `.moss/root` must not stop every command.
#[test]
fn a_stray_symlink_in_moss_root_does_not_block_commits() {
    let s = Scratch::new("rv1-stray");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    fs::create_dir_all(s.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(s.join("elsewhere"), root.join(".moss/root/10")).unwrap();
    tree(&s.join("t2"), 2);
    let o = run(&["--root", r(&root), "state", "commit", "--from", s.join("t2").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// An id near u64::MAX on a tree does not crash the next command.
#[test]
fn a_tree_named_with_the_largest_id_does_not_panic() {
    let s = Scratch::new("rv1-maxid");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    let n = u64::MAX.to_string();
    let d = root.join(".moss/root").join(&n);
    fs::create_dir_all(&d).unwrap();
    sh(&format!(
        "cp -a {}/. {}/usr/ 2>/dev/null || (mkdir -p {}/usr && cp -a {}/. {}/usr/)",
        s.join("t1").display(),
        d.display(),
        d.display(),
        s.join("t1").display(),
        d.display()
    ));
    fs::write(d.join("usr/.stateID"), format!("{n}\n")).unwrap();
    let o = run(&["--root", r(&root), "state", "recover"]);
    assert_ne!(o.status.code(), Some(101), "panicked: {}", String::from_utf8_lossy(&o.stderr));
}

/// The top of the committed tree keeps its own mode, owner and attributes
/// (rsync prints `.d...pog.ax ./` today).
#[test]
fn the_top_directory_of_the_tree_round_trips() {
    let s = Scratch::new("rv1-top");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/a"), b"a\n", 0o755);
    sh(&format!("chmod 750 {0} && chown 3:4 {0} && setfattr -n user.top -v t {0}", t.display()));
    commit(&root, &t, "one");
    let m = fs::metadata(root.join("usr")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 3, 4), "the top directory's mode/owner were not kept");
}

/// A prune must not delete a tree it cannot tell is the transaction's: slot 2
/// holds a tree with no `.stateID` (the user's). The prune says it "kept" it,
/// then removes it with the transaction.
#[test]
fn prune_keeps_a_slot_tree_it_says_it_keeps() {
    let s = Scratch::new("rv1-prunekept");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        tree(&s.join(&format!("t{v}")), v);
        commit(&root, &s.join(&format!("t{v}")), &format!("tx {v}"));
    }
    let slot = root.join(".moss/root/2/usr");
    fs::remove_dir_all(&slot).unwrap();
    write(&slot.join("precious"), b"my backup\n", 0o644);
    let o = run(&["--root", r(&root), "state", "prune", "--keep", "1"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let mut found = String::new();
    sh(&format!("find {} -name precious > {}/found", root.display(), s.0.display()));
    found.push_str(&fs::read_to_string(s.join("found")).unwrap());
    assert!(!found.trim().is_empty(), "prune deleted a tree with no .stateID after saying: {err}");
}

/// `repair` must not delete the contents of another filesystem mounted in
/// /usr: the transaction has `local` as a symlink, the user mounted a
/// filesystem on a `local` directory; `repair` (no `--prune-extra`) empties the
/// mounted filesystem. (Run in a private mount namespace: `unshare -m`.)
#[test]
fn repair_does_not_empty_a_filesystem_mounted_in_usr() {
    let s = Scratch::new("rv1-mount");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/a"), b"a\n", 0o755);
    std::os::unix::fs::symlink("../var/usrlocal", t.join("local")).unwrap();
    commit(&root, &t, "one");
    let other = s.join("otherfs");
    write(&other.join("precious"), b"on another filesystem\n", 0o644);
    let u = root.join("usr");
    fs::remove_file(u.join("local")).unwrap();
    fs::create_dir(u.join("local")).unwrap();
    let script = format!(
        "mount --bind {} {}/local && {} --root {} repair; umount {}/local 2>/dev/null; true",
        other.display(),
        u.display(),
        bin(),
        root.display(),
        u.display()
    );
    let st = Command::new("unshare").args(["-m", "sh", "-c", &script]).status().unwrap();
    assert!(st.success());
    assert!(other.join("precious").exists(), "repair deleted a file on the filesystem mounted at usr/local");
}

/// A filesystem mounted inside /usr goes with the tree an activation archives;
/// pruning that tree later never deletes what is on it.
#[test]
fn prune_never_deletes_through_a_mount_an_activation_moved() {
    let s = Scratch::new("rv1-mountprune");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t");
    write(&t.join("bin/a"), b"a\n", 0o755);
    commit(&root, &t, "one");
    write(&t.join("bin/b"), b"b\n", 0o755);
    commit(&root, &t, "two");
    let other = s.join("otherfs");
    write(&other.join("precious"), b"on another filesystem\n", 0o644);
    let script = format!(
        "mkdir {u}/local && mount --bind {o} {u}/local && {b} --root {r} state activate 1 && {b} --root {r} state prune --keep 0; true",
        u = root.join("usr").display(),
        o = other.display(),
        b = bin(),
        r = root.display()
    );
    let st = Command::new("unshare").args(["-m", "sh", "-c", &script]).status().unwrap();
    assert!(st.success());
    assert!(other.join("precious").exists(), "prune deleted a file on a filesystem mounted in an archived tree");
}

/// An archived tree damaged since it was archived is mended from the store
/// before it becomes the running /usr.
#[test]
fn activation_mends_a_damaged_archived_tree_first() {
    let s = Scratch::new("rv1-damagedarchive");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    tree(&s.join("t2"), 2);
    commit(&root, &s.join("t2"), "two");
    fs::remove_dir_all(root.join(".moss/root/1/usr/bin")).unwrap();
    let o = run(&["--root", r(&root), "state", "activate", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mended from the store"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(snapshot(&root.join("usr")), snapshot(&s.join("t1")));
    ok(&["--root", r(&root), "verify", "--full"]);
}

/// A command that changes the root finishes, its boot entries included, when
/// whoever reads its output goes away (`lifeboat state commit ... | head -1`).
#[test]
fn a_closed_pipe_does_not_stop_a_commit_halfway() {
    let s = Scratch::new("rv1-sigpipe");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
    write(
        &root.join("etc/lifeboat/lifeboat.conf"),
        format!("esp = {}\n", s.join("esp.img").display()).as_bytes(),
        0o644,
    );
    ok(&["disk", "create", s.join("esp.img").to_str().unwrap(), "--size", "64M", "--esp-size", "60M"]);
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    tree(&s.join("t2"), 2);
    let o = Command::new("bash")
        .args([
            "-c",
            "\"$0\" --root \"$1\" --json state commit --from \"$2\" | true; echo \"status=${PIPESTATUS[0]}\"",
            bin(),
            r(&root),
            s.join("t2").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("status=0"), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let list = ok(&["--root", r(&root), "boot", "list"]);
    assert!(list.contains("transaction 2"), "the boot sync after the commit did not run: {list}");
}

/// Two damaged indexes set aside in the same second keep both.
#[test]
fn damaged_indexes_set_aside_twice_in_a_second_are_both_kept() {
    let s = Scratch::new("rv1-aside2");
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    tree(&s.join("t1"), 1);
    commit(&root, &s.join("t1"), "one");
    let lb = root.join(".moss/lifeboat");
    for _ in 0..2 {
        fs::write(lb.join("state.idx"), b"garbage").unwrap();
        fs::write(lb.join("state.idx.prev"), b"garbage").unwrap();
        ok(&["--root", r(&root), "state", "recover"]);
    }
    let aside = fs::read_dir(&lb)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".damaged-"))
        .count();
    assert_eq!(aside, 4);
}
