//! A damaged FAT volume is never written, and read-only commands never write,
//! judged from outside: the image's bytes before and after each command,
//! `fsck.fat -n`, and files read back with mtools (`mcopy`). Each test makes
//! the damage a user reported on an ESP made by `lifeboat disk create` — 4 KiB
//! of the first FAT overwritten with the second intact, two directory entries
//! on one cluster chain, the dirty flag of such a volume — and runs the real
//! binary on it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fatraw::Fat;
use common::*;

/// Where `disk create` puts the ESP, and its size here.
const ESP: usize = 1 << 20;
const ESP_LEN: usize = 48 << 20;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed).wrapping_add((i >> 9) as u8)).collect()
}

fn disk(s: &Scratch) -> String {
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp-size", "48M", "--root-size", "0"]);
    img
}

/// Puts `data` at `path` on the image's ESP with lifeboat.
fn put(s: &Scratch, img: &str, data: &[u8], path: &str) {
    let local = s.join("put.local");
    fs::write(&local, data).unwrap();
    ok(&["disk", "put", r(&local), &format!("{img}:esp:{path}")]);
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A file read back by mtools (the oracle must be there: setup installs it).
fn mcopy(s: &Scratch, img: &str, path: &str) -> Vec<u8> {
    let to = s.join("mcopy.out");
    let _ = fs::remove_file(&to);
    let o = Command::new("mcopy")
        .args(["-n", "-o", "-i", &format!("{img}@@{ESP}"), &format!("::/{path}"), r(&to)])
        .output()
        .expect("mcopy is missing (mtools)");
    assert!(o.status.success(), "mcopy ::/{path}: {}", stderr(&o));
    fs::read(&to).unwrap()
}

/// `fsck.fat -n` on the ESP has nothing to say (exit 0, no line but its
/// version and summary, the dirty flag included).
fn fsck_strict(s: &Scratch, img: &str) -> Result<(), String> {
    let data = fs::read(img).unwrap();
    let p = s.join("esp.part");
    fs::write(&p, &data[ESP..ESP + ESP_LEN]).unwrap();
    let o = Command::new("fsck.fat").arg("-n").arg(&p).output().expect("fsck.fat is missing (dosfstools)");
    let out = stdout(&o);
    let quiet =
        out.lines().filter(|l| !l.trim().is_empty()).all(|l| l.starts_with("fsck.fat ") || l.contains(" files, "));
    if o.status.success() && quiet {
        Ok(())
    } else {
        Err(out)
    }
}

fn digest(p: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(&fs::read(p).unwrap())
}

/// Makes `second` name `first`'s clusters and size: two entries on one chain
/// (what a rename that writes the new entry, then removes the old one, leaves
/// when the power is cut between). `second`'s own clusters are left leaked.
fn cross_link(img: &str, first: &str, second: &str) {
    let mut b = fs::read(img).unwrap();
    let f = Fat::read(&b, ESP);
    let a = f.find(&b, first).unwrap().short();
    let x = f.find(&b, second).unwrap().short();
    let (start, size) = (f.start(&b, a), f.size(&b, a));
    f.set_start(&mut b, x, start);
    f.set_size(&mut b, x, size);
    fs::write(img, &b).unwrap();
}

fn assert_refused(o: &Output, what: &str, damage: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "{what} succeeded on a damaged volume:\n{}", stdout(o));
    for want in [damage, "damaged", "disk check", "--repair", "fsck.fat -a"] {
        assert!(err.contains(want), "{what}: want {want:?} in:\n{err}");
    }
}

#[test]
fn a_damaged_first_fat_is_never_written_and_the_intact_copy_mends_it() {
    let s = Scratch::new("fat1");
    let img = disk(&s);
    let big = pattern(300_000, 1);
    put(&s, &img, &big, "EFI/Linux/big.efi");
    put(&s, &img, b"title x\nlinux /EFI/Linux/big.efi\n", "loader/entries/x.conf");
    let mut b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    let fat2 = f.copy(&b, 1).to_vec();
    // 4 KiB of the first FAT, from its second sector (entries 128 to 1151),
    // overwritten: big.efi's chain runs through them.
    let chain = f.chain(&b, f.start(&b, f.find(&b, "EFI/Linux/big.efi").unwrap().short()));
    assert!(chain.iter().any(|&c| (128..1152).contains(&c)), "the damage hits the file's chain");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for byte in &mut b[f.fat_start + 512..f.fat_start + 512 + 4096] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    fs::write(&img, &b).unwrap();
    let before = digest(&img);

    // Every write refuses, naming the damage and the mend, and writes nothing:
    // the intact second FAT is not overwritten with the first's garbage.
    let local = s.join("new.bin");
    fs::write(&local, b"new").unwrap();
    let o = run(&["disk", "put", r(&local), &format!("{img}:esp:EFI/new.bin")]);
    assert_refused(&o, "disk put", "FAT copies disagree");
    assert_eq!(digest(&img), before, "disk put wrote to the damaged volume");
    assert!(Fat::read(&fs::read(&img).unwrap(), ESP).copy(&fs::read(&img).unwrap(), 1) == fat2.as_slice());
    assert_refused(
        &run(&["disk", "rm", &format!("{img}:esp:loader/entries/x.conf")]),
        "disk rm",
        "FAT copies disagree",
    );
    assert_eq!(digest(&img), before, "disk rm wrote to the damaged volume");

    // Reading still works, through the copy consistent with the tree.
    let o = run(&["disk", "cat", &format!("{img}:esp:EFI/Linux/big.efi")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == big, "disk cat read other bytes");
    assert!(ok(&["disk", "ls", "-r", &format!("{img}:esp")]).contains("EFI/Linux/big.efi"));
    assert_eq!(digest(&img), before, "reading wrote");

    // `disk check` names it and writes nothing; --repair takes the second FAT.
    let o = run(&["disk", "check", &format!("{img}:esp")]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("FAT copy 2 is consistent with the tree"), "{}", stdout(&o));
    assert_eq!(digest(&img), before, "disk check wrote");
    let o = run(&["disk", "check", &format!("{img}:esp"), "--repair"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("took FAT copy 2"), "{}", stdout(&o));
    let b = fs::read(&img).unwrap();
    assert!(f.copy(&b, 0) == fat2.as_slice() && f.copy(&b, 1) == fat2.as_slice(), "both copies are the intact one");
    fsck_strict(&s, &img).unwrap_or_else(|e| panic!("after --repair:\n{e}"));
    assert!(mcopy(&s, &img, "EFI/Linux/big.efi") == big);
    assert_eq!(mcopy(&s, &img, "loader/entries/x.conf"), b"title x\nlinux /EFI/Linux/big.efi\n");
    ok(&["disk", "put", r(&local), &format!("{img}:esp:EFI/new.bin")]);
    fsck_strict(&s, &img).unwrap();
}

#[test]
fn a_cluster_two_entries_name_is_never_freed() {
    let s = Scratch::new("crosslink");
    let img = disk(&s);
    let first = pattern(20_000, 2);
    put(&s, &img, &first, "EFI/Linux/first.bin");
    put(&s, &img, &pattern(7_000, 3), "EFI/Linux/second.bin");
    cross_link(&img, "EFI/Linux/first.bin", "EFI/Linux/second.bin");
    let before = digest(&img);

    // Removing one of them would free the chain the other still names (and the
    // next open would take the survivor for an interrupted deletion): refused.
    let o = run(&["disk", "rm", &format!("{img}:esp:EFI/Linux/second.bin")]);
    assert_refused(&o, "disk rm", "cross-linked");
    assert!(stderr(&o).contains("/EFI/Linux/second.bin") && stderr(&o).contains("/EFI/Linux/first.bin"));
    assert_eq!(digest(&img), before, "disk rm wrote to the damaged volume");
    let local = s.join("other");
    fs::write(&local, b"other").unwrap();
    assert_refused(&run(&["disk", "put", r(&local), &format!("{img}:esp:other")]), "disk put", "cross-linked");
    assert_eq!(digest(&img), before, "disk put wrote to the damaged volume");
    assert!(mcopy(&s, &img, "EFI/Linux/first.bin") == first);
    assert!(mcopy(&s, &img, "EFI/Linux/second.bin") == first);

    // --repair gives the second its own copy: both keep their content.
    let o = run(&["disk", "check", &format!("{img}:esp"), "--repair"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("/EFI/Linux/second.bin: shared its clusters"), "{}", stdout(&o));
    fsck_strict(&s, &img).unwrap_or_else(|e| panic!("after --repair:\n{e}"));
    assert!(mcopy(&s, &img, "EFI/Linux/first.bin") == first);
    assert!(mcopy(&s, &img, "EFI/Linux/second.bin") == first);
    let b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    let start = |p: &str| f.start(&b, f.find(&b, p).unwrap().short());
    assert_ne!(start("EFI/Linux/first.bin"), start("EFI/Linux/second.bin"));

    // Now a removal frees only what is the removed file's own, and the next
    // open keeps the survivor.
    ok(&["disk", "rm", &format!("{img}:esp:EFI/Linux/second.bin")]);
    ok(&["disk", "put", r(&local), &format!("{img}:esp:other")]);
    assert!(mcopy(&s, &img, "EFI/Linux/first.bin") == first);
    fsck_strict(&s, &img).unwrap();
}

#[test]
fn the_dirty_flag_stays_set_while_damage_remains() {
    let s = Scratch::new("dirty");
    let img = disk(&s);
    put(&s, &img, &pattern(9_000, 4), "a.bin");
    put(&s, &img, &pattern(9_000, 5), "b.bin");
    cross_link(&img, "a.bin", "b.bin");
    let mut b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    f.set_dirty(&mut b, true);
    fs::write(&img, &b).unwrap();
    let local = s.join("x");
    fs::write(&local, b"x").unwrap();
    assert!(!run(&["disk", "put", r(&local), &format!("{img}:esp:x")]).status.success());
    assert!(f.dirty(&fs::read(&img).unwrap()), "a write on a damaged volume cleared its dirty flag");

    // Damage --repair cannot decide from the volume (a chain that leaves the
    // volume, the same in both FAT copies): nothing written, the flag kept.
    let img2 = s.join("e.img").display().to_string();
    ok(&["disk", "create", &img2, "--size", "64M", "--esp-size", "48M", "--root-size", "0"]);
    put(&s, &img2, &pattern(9_000, 6), "c.bin");
    let mut b = fs::read(&img2).unwrap();
    let c = f.start(&b, f.find(&b, "c.bin").unwrap().short());
    f.set_all(&mut b, c, 0x0ABC_DEF0);
    f.set_dirty(&mut b, true);
    fs::write(&img2, &b).unwrap();
    let before = digest(&img2);
    let o = run(&["disk", "check", &format!("{img2}:esp"), "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("is outside the volume") && stdout(&o).contains("fsck.fat -a"), "{}", stdout(&o));
    assert_eq!(digest(&img2), before, "--repair wrote what it could not decide");
}

/// A root with one transaction that carries a kernel.
fn system(s: &Scratch) -> PathBuf {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t = s.join("t1");
    tree(&t, 1);
    write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
    root
}

#[test]
fn boot_sync_on_a_damaged_esp_lists_what_it_would_do_and_writes_nothing() {
    let s = Scratch::new("sync-damaged");
    let root = system(&s);
    let img = disk(&s);
    put(&s, &img, &pattern(9_000, 7), "EFI/other/a.efi");
    put(&s, &img, &pattern(9_000, 8), "EFI/other/b.efi");
    cross_link(&img, "EFI/other/a.efi", "EFI/other/b.efi");
    let before = digest(&img);
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    assert_refused(&o, "boot sync", "cross-linked");
    assert!(stdout(&o).contains("would copy") && stdout(&o).contains("would entry"), "{}", stdout(&o));
    assert_eq!(digest(&img), before, "boot sync wrote to the damaged volume");
}

#[test]
fn read_only_commands_never_write_the_esp() {
    let s = Scratch::new("readonly");
    let root = system(&s);
    let img = disk(&s);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    put(&s, &img, &pattern(9_000, 9), "EFI/other/a.efi");
    put(&s, &img, &pattern(9_000, 10), "EFI/other/b.efi");
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    // A volume that needs reconciling: an interrupted writer's dirty flag and
    // a leaked cluster.
    let mut b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    let leak = f.free_cluster(&b) + 40;
    f.set_all(&mut b, leak, 0x0FFF_FFFF);
    f.set_dirty(&mut b, true);
    fs::write(&img, &b).unwrap();
    let conf = ok(&["disk", "ls", &format!("{img}:esp:loader")]);
    assert!(conf.contains("loader.conf"), "{conf}");
    let commands: Vec<Vec<String>> = [
        vec!["--root", r(&root), "--esp", &img, "--efivars", r(&vars), "boot", "list"],
        vec!["--root", r(&root), "--esp", &img, "--efivars", r(&vars), "boot", "status"],
        vec!["--root", r(&root), "--esp", &img, "boot", "sync", "--dry-run"],
        vec!["disk", "ls", &img],
        vec!["disk", "ls", "-r", &format!("{img}:esp")],
        vec!["disk", "cat", &format!("{img}:esp:loader/loader.conf")],
        vec!["disk", "df", &format!("{img}:esp")],
        vec!["disk", "check", &format!("{img}:esp")],
    ]
    .iter()
    .map(|v| v.iter().map(|a| a.to_string()).collect())
    .collect();
    for damaged in [false, true] {
        if damaged {
            // Then damage no write may touch: two entries on one chain.
            cross_link(&img, "EFI/other/a.efi", "EFI/other/b.efi");
        }
        let before = digest(&img);
        for args in &commands {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(&refs);
            let sync_on_damage = damaged && args.contains(&"sync".to_string());
            let check_on_damage = damaged && args.contains(&"check".to_string());
            assert!(o.status.success() || sync_on_damage || check_on_damage, "{args:?} failed:\n{}", stderr(&o));
            assert_eq!(digest(&img), before, "{args:?} wrote to the ESP (damaged: {damaged})");
            if args[0] == "disk" && args[1] == "ls" && args.len() == 4 {
                let want = if damaged { "not repaired" } else { "the next write would repair" };
                assert!(stderr(&o).contains(want), "{}", stderr(&o));
            }
        }
    }
}

#[test]
fn a_plain_directory_is_no_esp_unless_the_override_says_so() {
    let s = Scratch::new("anydir");
    let root = system(&s);
    let dir = s.join("esp");
    fs::create_dir_all(&dir).unwrap();
    let o = run(&["--root", r(&root), "--esp", r(&dir), "boot", "sync"]);
    assert!(!o.status.success(), "a sync into a plain directory succeeded");
    let err = stderr(&o);
    assert!(err.contains("not a FAT filesystem") && err.contains("LIFEBOAT_ESP_ANY_DIR=1"), "{err}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the refused sync wrote");
    let img = disk(&s);
    let o = run(&["--root", r(&root), "--esp", &img, "--boot", r(&dir), "boot", "list"]);
    assert!(!o.status.success() && stderr(&o).contains("not a FAT filesystem"), "{}", stderr(&o));
    // The override, for tests on plain directories.
    let o = run_env(&["--root", r(&root), "--esp", r(&dir), "boot", "sync"], &[("LIFEBOAT_ESP_ANY_DIR", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("loader/entries").read_dir().unwrap().count() > 0);
}
