//! What a hostile review of the ESP code found, each kept as the test that
//! failed then, run through the binary on images `lifeboat disk create` made
//! and judged from outside: the image's xxh3-128 before and after, `fsck.fat
//! -n`, files read back with mtools (`mcopy`, `mdir`), and a deadline for what
//! used to hang.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fatraw::Fat;
use common::*;

/// Where `disk create` puts the ESP, and its size here.
const ESP: usize = 1 << 20;
const ESP_LEN: usize = 48 << 20;
const TOKEN: &str = "00112233445566778899aabbccddeeff";

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed).wrapping_add((i >> 9) as u8)).collect()
}

fn disk(s: &Scratch, name: &str) -> String {
    let img = s.join(name).display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp-size", "48M", "--root-size", "0"]);
    img
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn digest(p: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(&fs::read(p).unwrap())
}

/// Runs an mtools command on the image's ESP (the oracle must be there:
/// setup installs it); `::/PATH` arguments as given.
fn mtool(cmd: &str, img: &str, args: &[&str]) -> Output {
    let o = Command::new(cmd)
        .arg("-i")
        .arg(format!("{img}@@{ESP}"))
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is missing (mtools): {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", stderr(&o));
    o
}

/// A file of the ESP read back by mtools.
fn mcopy(s: &Scratch, img: &str, path: &str) -> Vec<u8> {
    let to = s.join("mcopy.out");
    let _ = fs::remove_file(&to);
    mtool("mcopy", img, &["-n", "-o", &format!("::/{path}"), r(&to)]);
    fs::read(&to).unwrap()
}

/// Puts a local file on the ESP with mtools (another tool's write).
fn mput(s: &Scratch, img: &str, data: &[u8], path: &str) {
    let local = s.join("mput.local");
    fs::write(&local, data).unwrap();
    mtool("mcopy", img, &["-o", r(&local), &format!("::/{path}")]);
}

/// Every path on the ESP, listed by mtools.
fn mdir_all(img: &str) -> Vec<String> {
    let o = mtool("mdir", img, &["-/", "-b", "::/"]);
    stdout(&o).lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
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

/// A root with transactions 1..=n, each with its own kernel (6.1.0-test).
fn system(s: &Scratch, n: u32) -> PathBuf {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=n {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        write(&t.join("lib/kernel/6.1.0-test/vmlinuz"), &pattern(40_000 + v as usize, v as u8), 0o644);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    write(&root.join("etc/machine-id"), format!("{TOKEN}\n").as_bytes(), 0o444);
    root
}

/// Free bytes of the ESP, as `disk df --json` says.
fn free(img: &str) -> u64 {
    let j = ok(&["--json", "disk", "df", &format!("{img}:esp")]);
    j.split("\"free\":").nth(1).and_then(|x| x.split([',', '}']).next()).unwrap().trim().parse().unwrap()
}

#[test]
fn zeroed_fat_entries_remove_no_file() {
    // A FAT sector zeroed in both copies, or one file's first entry: the
    // check took its files for an interrupted deletion, and the next write
    // (boot sync) removed Windows' loader and another system's entry.
    let s = Scratch::new("zeroed");
    let root = system(&s, 1);
    let img = disk(&s, "d.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    // Past the FAT's first sector (the review zeroed entries 128 to 255).
    mput(&s, &img, &pattern(70_000, 10), "filler.bin");
    mtool("mmd", &img, &["::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot"]);
    let ms = pattern(50_000, 11);
    mput(&s, &img, &ms, "EFI/Microsoft/Boot/bootmgfw.efi");
    mput(&s, &img, b"title Other\nlinux /other/vmlinuz\n", "loader/entries/other-foo.conf");
    let clean = fs::read(&img).unwrap();
    fsck_strict(&s, &img).unwrap();
    let f = Fat::read(&clean, ESP);
    let ms_first = f.start(&clean, f.find(&clean, "EFI/Microsoft/Boot/bootmgfw.efi").unwrap().short());
    let local = s.join("x");
    fs::write(&local, b"x").unwrap();
    for case in ["the FAT sector of bootmgfw.efi's first cluster", "bootmgfw.efi's first entry"] {
        let mut b = clean.clone();
        if case.starts_with("the FAT sector") {
            let sector = ms_first as usize * 4 / 512 * 512;
            assert!(sector > 0, "the reserved entries stay");
            for k in 0..f.fats {
                let at = f.fat_start + k * f.fat_bytes + sector;
                b[at..at + 512].fill(0);
            }
        } else {
            f.set_all(&mut b, ms_first, 0);
        }
        fs::write(&img, &b).unwrap();
        let before = digest(&img);
        let o = run(&["disk", "check", &format!("{img}:esp")]);
        assert_eq!(o.status.code(), Some(1), "{case}: {}", stdout(&o));
        let want = if case.starts_with("the FAT sector") {
            "is free in the FAT"
        } else {
            "/EFI/Microsoft/Boot/bootmgfw.efi: its first cluster"
        };
        assert!(stdout(&o).contains(want) && !stdout(&o).contains("interrupted deletion"), "{case}: {}", stdout(&o));
        let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
        assert!(!o.status.success() && stderr(&o).contains("damaged"), "{case}: boot sync: {}", stderr(&o));
        let o = run(&["disk", "put", r(&local), &format!("{img}:esp:EFI/new.bin")]);
        assert!(!o.status.success() && stderr(&o).contains("damaged"), "{case}: disk put: {}", stderr(&o));
        let o = run(&["disk", "rm", &format!("{img}:esp:loader/entries/other-foo.conf")]);
        assert!(!o.status.success(), "{case}: disk rm succeeded");
        let o = run(&["disk", "check", &format!("{img}:esp"), "--repair"]);
        assert_eq!(o.status.code(), Some(1), "{case}: --repair: {}", stdout(&o));
        assert_eq!(digest(&img), before, "{case}: a write changed the damaged ESP");
        // Nothing was removed: with the zeroed FAT bytes given back (the
        // only difference from the clean image), every file reads back.
        fs::write(&img, &clean).unwrap();
        assert!(mcopy(&s, &img, "EFI/Microsoft/Boot/bootmgfw.efi") == ms, "{case}");
        assert_eq!(mcopy(&s, &img, "loader/entries/other-foo.conf"), b"title Other\nlinux /other/vmlinuz\n");
    }
}

#[test]
fn a_looping_chain_is_named_a_loop_and_never_repaired() {
    // a.bin's fifth cluster pointing at itself: --repair "gave it its own
    // copy" (clusters 5 to the end all copies of cluster 5) and freed the
    // real data; it was reported as cross-linked, and by its 8.3 name.
    let s = Scratch::new("loop");
    let img = disk(&s, "d.img");
    let a = pattern(20_000, 3);
    mput(&s, &img, &a, "a.bin");
    let mut b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    let chain = f.chain(&b, f.start(&b, f.find(&b, "a.bin").unwrap().short()));
    f.set_all(&mut b, chain[4], chain[4]);
    fs::write(&img, &b).unwrap();
    let before = digest(&img);
    let o = run(&["disk", "check", &format!("{img}:esp")]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains(&format!("/a.bin: its cluster chain loops (back to cluster {})", chain[4])), "{out}");
    assert!(!out.contains("cross-linked") && !out.contains("A.BIN"), "{out}");
    let o = run(&["disk", "check", &format!("{img}:esp"), "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("loops") && !stdout(&o).contains("own copy"), "{}", stdout(&o));
    let o = run_within(&["disk", "cat", &format!("{img}:esp:a.bin")], 20).expect("disk cat of a loop hung");
    assert!(!o.status.success() && stderr(&o).contains("loops"), "{}", stderr(&o));
    assert_eq!(digest(&img), before, "--repair wrote to a volume it cannot decide");
    // The loop undone by hand, the file is what it was.
    f.set_all(&mut b, chain[4], chain[5]);
    fs::write(&img, &b).unwrap();
    assert!(mcopy(&s, &img, "a.bin") == a);
}

#[test]
fn a_directory_cycle_ends_every_walk() {
    // An entry LOOP in <token>/6.1.0-test naming <token>'s cluster: boot sync,
    // its dry run and disk ls -r walked it forever, memory growing.
    let s = Scratch::new("cycle");
    let root = system(&s, 1);
    let img = disk(&s, "d.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let mut b = fs::read(&img).unwrap();
    let f = Fat::read(&b, ESP);
    let td = f.start(&b, f.find(&b, TOKEN).unwrap().short());
    let kd = f.start(&b, f.find(&b, &format!("{TOKEN}/6.1.0-test")).unwrap().short());
    let slot = f.slots(&b, kd).into_iter().find(|&o| b[o] == 0).expect("a free slot");
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(b"LOOP       ");
    e[11] = 0x10;
    b[slot..slot + 32].copy_from_slice(&e);
    f.set_start(&mut b, slot, td);
    fs::write(&img, &b).unwrap();
    let before = digest(&img);
    let o = run(&["disk", "check", &format!("{img}:esp")]);
    assert!(stdout(&o).contains("directory cycle"), "{}", stdout(&o));
    for args in [
        vec!["--root", r(&root), "--esp", &img, "boot", "sync", "--dry-run"],
        vec!["--root", r(&root), "--esp", &img, "boot", "sync"],
        vec!["disk", "ls", "-r", &format!("{img}:esp")],
    ] {
        let o = run_within(&args, 20).unwrap_or_else(|| panic!("{args:?} hung (killed after 20 s)"));
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains("6.1.0-test/LOOP") && stderr(&o).contains("cycle"), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(digest(&img), before);
}

/// A systemd-boot stand-in: what `boot install` recognises.
fn loader(version: &str) -> Vec<u8> {
    let mut b = pattern(30_000, 5);
    b.extend_from_slice(format!("#### LoaderInfo: systemd-boot {version} ####").as_bytes());
    b.extend_from_slice(&pattern(3_000, 6));
    b
}

#[test]
fn an_interrupted_replacement_is_completed_by_the_next_writer() {
    // A cut between removing the old file and renaming the complete `.lbnew`
    // over it left only `.lbnew`: boot sync called the ESP up to date, disk
    // check clean, boot status showed no loader, and only the same write
    // again completed it.
    let s = Scratch::new("interrupted");
    let root = system(&s, 1);
    let base = disk(&s, "base.img");
    let old = loader("250.1");
    let new = loader("252.2");
    fs::write(s.join("old.efi"), &old).unwrap();
    ok(&["--root", r(&root), "--esp", &base, "boot", "install", "--loader", r(&s.join("old.efi"))]);
    ok(&["--root", r(&root), "--esp", &base, "boot", "sync"]);
    let big = pattern(70_000, 8);
    mput(&s, &base, &pattern(60_000, 7), "EFI/big.bin");
    // What the cuts leave: the loader and a file of a `disk put` only as
    // their complete `.lbnew`; a `.lbnew` beside the old file; a `.lbtmp`.
    mtool("mdel", &base, &["::/EFI/systemd/systemd-bootx64.efi", "::/EFI/big.bin"]);
    mput(&s, &base, &new, "EFI/systemd/systemd-bootx64.efi.lbnew");
    mput(&s, &base, &big, "EFI/big.bin.lbnew");
    mput(&s, &base, &new, "EFI/BOOT/BOOTX64.EFI.lbnew");
    mput(&s, &base, b"half", "EFI/half.bin.lbtmp");
    let cut = fs::read(&base).unwrap();
    let esp = format!("{base}:esp");

    // Read-only commands say what is pending and write nothing.
    let before = digest(&base);
    let o = run(&["disk", "check", &esp]);
    assert!(o.status.success(), "{}", stdout(&o));
    for want in [
        "the next write completes the interrupted replacement of EFI/systemd/systemd-bootx64.efi",
        "the interrupted replacement of EFI/big.bin",
        "the interrupted replacement of EFI/BOOT/BOOTX64.EFI",
        "EFI/half.bin.lbtmp (discarded)",
    ] {
        assert!(stdout(&o).contains(want), "want {want:?} in:\n{}", stdout(&o));
    }
    assert!(!stdout(&o).contains("clean"), "{}", stdout(&o));
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    let o = run(&["--root", r(&root), "--esp", &base, "--efivars", r(&vars), "boot", "status"]);
    assert!(
        stdout(&o).contains(
            "EFI/systemd/systemd-bootx64.efi: systemd-boot 252.2 (only as EFI/systemd/systemd-bootx64.efi.lbnew"
        ),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("interrupted replacement of EFI/systemd/systemd-bootx64.efi"), "{}", stderr(&o));
    let o = run(&["--root", r(&root), "--esp", &base, "boot", "sync", "--dry-run"]);
    assert!(stderr(&o).contains("the next write completes the interrupted replacement"), "{}", stderr(&o));
    assert_eq!(digest(&base), before, "a read-only command wrote");

    // Every writer completes them first, whatever it writes itself.
    let local = s.join("x");
    fs::write(&local, b"x").unwrap();
    let writers: Vec<(&str, Vec<String>)> = vec![
        (
            "boot sync",
            vec!["--root".into(), r(&root).into(), "--esp".into(), "IMG".into(), "boot".into(), "sync".into()],
        ),
        ("disk put", vec!["disk".into(), "put".into(), r(&local).into(), "IMG:esp:other.bin".into()]),
        ("disk rm", vec!["disk".into(), "rm".into(), "IMG:esp:loader/entries.srel".into()]),
        ("disk check --repair", vec!["disk".into(), "check".into(), "IMG:esp".into(), "--repair".into()]),
        (
            "boot set-default",
            vec![
                "--root".into(),
                r(&root).into(),
                "--esp".into(),
                "IMG".into(),
                "boot".into(),
                "set-default".into(),
                "1".into(),
            ],
        ),
    ];
    for (what, args) in writers {
        let img = s.join("w.img").display().to_string();
        fs::write(&img, &cut).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.replace("IMG", &img)).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&refs);
        assert!(o.status.success(), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(mcopy(&s, &img, "EFI/systemd/systemd-bootx64.efi") == new, "{what}: the loader");
        assert!(mcopy(&s, &img, "EFI/BOOT/BOOTX64.EFI") == new, "{what}: the fallback loader");
        assert!(mcopy(&s, &img, "EFI/big.bin") == big, "{what}: the put file");
        let left: Vec<String> = mdir_all(&img).into_iter().filter(|p| p.contains(".lb")).collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
        let o = run(&["disk", "check", &format!("{img}:esp")]);
        assert!(stdout(&o).contains("clean"), "{what}: {}", stdout(&o));
        fsck_strict(&s, &img).unwrap_or_else(|e| panic!("{what}:\n{e}"));
    }
}

#[test]
fn a_leftover_that_cannot_take_its_name_blocks_no_later_write() {
    // A failed put of `foo.` or of another file's 8.3 alias left a `.lbnew`
    // that could never take its name, and every later sync, set-default and
    // commit failed on it until it was removed by hand.
    let s = Scratch::new("leftover");
    let root = system(&s, 2);
    let img = disk(&s, "d.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let other = b"title Other\nlinux /o/vmlinuz\n";
    mput(&s, &img, other, "loader/entries/otherdistro-6.1.conf");
    mput(&s, &img, b"x\n", "loader/entries/foo..lbnew");
    mput(&s, &img, b"y\n", "loader/entries/OTHERD~1.CON.lbnew");
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "set-default", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("discarded loader/entries/foo..lbnew"), "{}", stderr(&o));
    assert!(stderr(&o).contains("8.3 alias of otherdistro-6.1.conf"), "{}", stderr(&o));
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    assert_eq!(mcopy(&s, &img, "loader/entries/otherdistro-6.1.conf"), other, "the other system's entry");
    let left: Vec<String> = mdir_all(&img).into_iter().filter(|p| p.contains(".lb")).collect();
    assert!(left.is_empty(), "left {left:?}");
    fsck_strict(&s, &img).unwrap();
}

#[test]
fn a_full_esp_is_synced_whole_or_left_as_it_was() {
    // Exactly the room the kernel and the entry take: the sync passed its
    // space check, copied both, then failed on loader.conf's temporary copy
    // and left the ESP full; after that even `--keep 1`, which frees space,
    // failed forever.
    let s = Scratch::new("full");
    let root = system(&s, 1);
    let img = disk(&s, "d.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let t2 = s.join("t2");
    tree(&t2, 2);
    write(&t2.join("lib/kernel/6.1.0-test/vmlinuz"), &pattern(200_000, 9), 0o644);
    write(&t2.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t2)]);
    // The entry the sync will write, measured on a copy.
    let probe = s.join("probe.img").display().to_string();
    fs::copy(&img, &probe).unwrap();
    ok(&["--root", r(&root), "--esp", &probe, "boot", "sync"]);
    let entry = ok(&["disk", "cat", &format!("{probe}:esp:loader/entries/{TOKEN}-2-6.1.0-test.conf")]);
    let cb = 512u64;
    let room = 200_000u64.div_ceil(cb) * cb + (entry.len() as u64).div_ceil(cb) * cb;
    // Filled by another tool (mtools writes the file in place).
    let fill = s.join("fill");
    fs::File::create(&fill).unwrap().set_len(free(&img) - room).unwrap();
    mtool("mcopy", &img, &[r(&fill), "::/FILL.BIN"]);
    assert_eq!(free(&img), room, "the ESP holds exactly the new kernel and entry");
    let before = digest(&img);
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("nothing was changed"), "{}", stderr(&o));
    assert_eq!(digest(&img), before, "a sync that does not fit changed the ESP");

    // A full ESP whose new entry is complete but whose loader.conf still
    // names the old one (another writer filled it after a sync was cut):
    // `--keep 1` frees space first and makes progress.
    let img = disk(&s, "e.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    ok(&["--root", r(&root), "--esp", &img, "boot", "set-default", "1"]);
    fs::File::create(&fill).unwrap().set_len(free(&img)).unwrap();
    mtool("mcopy", &img, &[r(&fill), "::/FILL.BIN"]);
    assert_eq!(free(&img), 0);
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync", "--keep", "1"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let conf = String::from_utf8(mcopy(&s, &img, "loader/loader.conf")).unwrap();
    assert!(conf.contains(&format!("default {TOKEN}-2-*")), "{conf}");
    let names = mdir_all(&img);
    assert!(names.iter().any(|p| p.contains(&format!("{TOKEN}-2-6.1.0-test.conf"))), "{names:?}");
    assert!(!names.iter().any(|p| p.contains(&format!("{TOKEN}-1-"))), "{names:?}");
    fsck_strict(&s, &img).unwrap();
}

#[test]
fn disk_put_takes_regular_files_only() {
    // `disk put` of a FIFO hung; /dev/zero was not refused; a directory
    // failed with "x.lbtmp: Is a directory".
    let s = Scratch::new("sources");
    let img = disk(&s, "d.img");
    let fifo = s.join("ff");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let dir = s.join("srcdir");
    fs::create_dir_all(&dir).unwrap();
    let before = digest(&img);
    for (src, what) in [(r(&fifo), "FIFO"), ("/dev/zero", "character device"), (r(&dir), "directory")] {
        let o = run_within(&["disk", "put", src, &format!("{img}:esp:x")], 20)
            .unwrap_or_else(|| panic!("disk put {src} hung (killed after 20 s)"));
        assert!(!o.status.success(), "disk put {src} succeeded");
        assert!(stderr(&o).contains(src) && stderr(&o).contains(what), "{src}: {}", stderr(&o));
        assert!(!stderr(&o).contains("lbtmp"), "{}", stderr(&o));
    }
    assert_eq!(digest(&img), before, "a refused put wrote");
}

#[test]
fn a_pending_loader_conf_is_completed_before_the_sync_plans() {
    // A cut set-default left loader.conf.lbnew (default: transaction 1)
    // beside loader.conf; a prune removed entry 1 and then completed the old
    // replacement: loader.conf named the removed entry.
    let s = Scratch::new("plan");
    let root = system(&s, 2);
    let img = disk(&s, "d.img");
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let t = s.join("t.img").display().to_string();
    fs::copy(&img, &t).unwrap();
    ok(&["--root", r(&root), "--esp", &t, "boot", "set-default", "1"]);
    // Cut before set-default recorded the choice in the root (it writes
    // loader.conf first): only the pending loader.conf is left of it.
    fs::remove_file(root.join(".moss/lifeboat/default")).unwrap();
    let pending = mcopy(&s, &t, "loader/loader.conf");
    assert!(String::from_utf8_lossy(&pending).contains(&format!("default {TOKEN}-1-*")));
    mput(&s, &img, &pending, "loader/loader.conf.lbnew");
    let before = digest(&img);
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("the next write completes the interrupted replacement of loader/loader.conf"));
    assert!(stdout(&o).contains("would loader.conf"), "{}", stdout(&o));
    assert_eq!(digest(&img), before);
    ok(&["--root", r(&root), "--esp", &img, "state", "prune", "--keep", "1"]);
    let conf = String::from_utf8(mcopy(&s, &img, "loader/loader.conf")).unwrap();
    assert!(conf.contains(&format!("default {TOKEN}-2-*")), "{conf}");
    let names = mdir_all(&img);
    assert!(!names.iter().any(|p| p.contains(&format!("{TOKEN}-1-")) || p.contains(".lb")), "{names:?}");
    fsck_strict(&s, &img).unwrap();
}

#[test]
fn two_sources_of_one_name_are_refused_before_anything_is_written() {
    // `disk put d1/f d2/f IMG:esp:newdir/` failed with an internal error
    // ("newdir/f.lbtmp: not found") and left newdir/f.
    let s = Scratch::new("dup");
    let img = disk(&s, "d.img");
    write(&s.join("d1/f"), b"one", 0o644);
    write(&s.join("d2/f"), b"two-two", 0o644);
    let before = digest(&img);
    let o = run(&["disk", "put", r(&s.join("d1/f")), r(&s.join("d2/f")), &format!("{img}:esp:newdir/")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("two of the files to put have this name"), "{}", stderr(&o));
    assert_eq!(digest(&img), before);
}

#[test]
fn names_and_messages_say_what_is_wrong() {
    let s = Scratch::new("names");
    let img = disk(&s, "d.img");
    write(&s.join("f"), b"f", 0o644);
    let f = r(&s.join("f")).to_owned();
    // A name with no room for the temporary suffix: said, nothing written.
    let before = digest(&img);
    let long = "L".repeat(250);
    let o = run(&["disk", "put", &f, &format!("{img}:esp:{long}")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a name of 250 characters leaves no room"), "{}", stderr(&o));
    assert_eq!(digest(&img), before);
    ok(&["disk", "put", &f, &format!("{img}:esp:{}", "L".repeat(249))]);
    // `file/` is a directory's path: rm refuses, the file stays.
    ok(&["disk", "put", &f, &format!("{img}:esp:EFI/file")]);
    let o = run(&["disk", "rm", &format!("{img}:esp:EFI/file/")]);
    assert!(!o.status.success() && stderr(&o).contains("not a directory"), "{}", stderr(&o));
    assert_eq!(ok(&["disk", "cat", &format!("{img}:esp:EFI/file")]), "f");

    // A full FAT16 fixed root directory is said to be one, not a full volume.
    let small = s.join("f16.img").display().to_string();
    ok(&["disk", "create", &small, "--size", "32M", "--esp-size", "16M", "--root-size", "0"]);
    let many = s.join("many");
    for i in 0..512 {
        write(&many.join(format!("F{i}.TXT")), b"x", 0o644);
    }
    let mut args: Vec<String> = vec!["-i".into(), format!("{small}@@{ESP}")];
    let mut names: Vec<String> = fs::read_dir(&many).unwrap().map(|e| r(&e.unwrap().path()).to_owned()).collect();
    names.sort();
    args.extend(names);
    args.push("::/".into());
    // mcopy stops at the 512th entry, the root being full by then.
    let _ = Command::new("mcopy").args(&args).env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
    let o = run(&["disk", "put", &f, &format!("{small}:esp:NEW.TXT")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the root directory is full") && !stderr(&o).contains("volume is full"),
        "{}",
        stderr(&o)
    );
}
