//! Boot entries end to end on FAT images, judged by independent tools: the order
//! and parsing of `bootctl list` over the extracted ESP, `systemd-analyze
//! compare-versions` over thousands of random pairs, fsck.fat after every sync, and
//! a dual-boot ESP that stays byte-identical through sync, prune and set-default.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A root with three transactions that carry a kernel, and a disk image.
fn setup(s: &Scratch) -> (std::path::PathBuf, String) {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
        write(&t.join("lib/kernel/cmdline.d/10-base.cmdline"), b"# base\nquiet\n  splash=no\n", 0o644);
        write(&t.join("lib/kernel/6.1.0-test/50-k.cmdline"), format!("kopt={v}\n").as_bytes(), 0o644);
        write(&t.join("lib/kernel/6.1.0-test/00-early.initrd"), b"early initrd", 0o644);
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
    write(&root.join("etc/kernel/cmdline.d/90-local.cmdline"), b"root=PARTUUID=abcd console=ttyS0\n", 0o644);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "96M", "--esp-size", "64M", "--root-size", "0"]);
    (root, img)
}

fn esp_extract(img: &str, dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let st = Command::new("mcopy").args(["-s", "-n", "-i", &format!("{img}@@1M"), "::/", r(dir)]).status().unwrap();
    assert!(st.success());
}

fn fsck(img: &str, s: &Scratch) {
    let data = fs::read(img).unwrap();
    let p = s.join("esp.part");
    fs::write(&p, &data[1 << 20..65 << 20]).unwrap();
    let o = Command::new("fsck.fat").args(["-n", r(&p)]).output().unwrap();
    assert!(o.status.success(), "fsck.fat:\n{}", String::from_utf8_lossy(&o.stdout));
}

fn ids_in_json_lines(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split("\"id\":\"").nth(1).map(|x| x.split('"').next().unwrap().to_owned())).collect()
}

#[test]
fn entries_agree_with_bootctl() {
    // The oracle is never skipped: without it this test fails (setup installs it).
    assert!(is_root(), "this test mounts a tmpfs for bootctl: run it as root");
    assert!(have("bootctl"), "bootctl is missing: scripts/setup.sh installs systemd-boot");
    let s = Scratch::new("bootctl");
    let (root, img) = setup(&s);
    // Foreign entries exercising the parser: repeated keys, comments, unknown keys.
    write(&s.join("f1"), b"# comment\ntitle Other\nversion 2.0\nsort-key other\nlinux /o/vmlinuz\ninitrd /o/a\ninitrd /o/b\noptions a=1\noptions b=2\nx-unknown yes\n", 0o644);
    write(&s.join("k"), b"kernel", 0o644);
    ok(&["disk", "put", r(&s.join("f1")), &format!("{img}:esp:loader/entries/other-2.0.conf")]);
    ok(&["disk", "put", r(&s.join("k")), &format!("{img}:esp:o/vmlinuz")]);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    fsck(&img, &s);
    let mnt = s.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount(self.0);
        }
    }
    let _u = Umount(&mnt);
    esp_extract(&img, &mnt);
    let o = Command::new("bootctl")
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .args(["--esp-path", r(&mnt), "--no-pager", "--json=short", "list"])
        .output()
        .unwrap();
    let theirs = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "bootctl: {}", String::from_utf8_lossy(&o.stderr));
    let ours_json = ok(&["--root", r(&root), "--esp", &img, "--json", "boot", "list"]);
    let ours: Vec<String> =
        ours_json.split("\"id\":\"").skip(1).map(|x| x.split('"').next().unwrap().to_owned()).collect();
    assert_eq!(ids_in_json_lines(&theirs), ours, "order differs:\nbootctl: {theirs}\nlifeboat: {ours_json}");
    // Sort keys order installs ("other" < "testos"); within ours, newest first.
    assert_eq!(
        ours,
        [
            "other-2.0.conf",
            "00112233445566778899aabbccddeeff-3-6.1.0-test.conf",
            "00112233445566778899aabbccddeeff-2-6.1.0-test.conf",
            "00112233445566778899aabbccddeeff-1-6.1.0-test.conf"
        ]
    );
    // The options bootctl reads are the ones lifeboat meant, tree and local fragments
    // in order and the transaction last.
    assert!(
        theirs.contains("\"options\":\"quiet splash=no kopt=3 root=PARTUUID=abcd console=ttyS0 lifeboat.tx=3\""),
        "{theirs}"
    );
    assert!(theirs.contains("\"options\":\"a=1 b=2\""), "{theirs}");
    assert!(theirs.contains("early-"), "the tree's initrd is on the entry: {theirs}");
}

/// A deterministic pseudo-random generator for the version pairs.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn version(&mut self) -> String {
        const A: &[u8] = b"0123456789.-~^abzAZ_+";
        let n = self.next() % 9;
        (0..n).map(|_| A[(self.next() % A.len() as u64) as usize] as char).collect()
    }
}

#[test]
fn version_order_agrees_with_systemd_analyze() {
    assert!(have("systemd-analyze"), "systemd-analyze is missing: scripts/setup.sh installs systemd");
    let mut g = Lcg(0x5eed);
    let pairs: Vec<(String, String)> = (0..2000)
        .map(|i| {
            let a = g.version();
            // Every fourth pair shares a prefix, where the interesting cases are.
            let b = if i % 4 == 0 { format!("{a}{}", g.version()) } else { g.version() };
            (a, b)
        })
        .collect();
    let results: Vec<Vec<String>> = std::thread::scope(|sc| {
        pairs
            .chunks(500)
            .map(|part| {
                sc.spawn(move || {
                    let mut bad = Vec::new();
                    for (a, b) in part {
                        let o =
                            Command::new("systemd-analyze").args(["compare-versions", "--", a, b]).output().unwrap();
                        let text = String::from_utf8_lossy(&o.stdout);
                        let theirs = if text.contains(" < ") {
                            std::cmp::Ordering::Less
                        } else if text.contains(" > ") {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Equal
                        };
                        let ours = lifeboat_boot::version::compare(a, b);
                        if ours != theirs {
                            bad.push(format!("{a:?} vs {b:?}: systemd {theirs:?}, lifeboat {ours:?}"));
                        }
                    }
                    bad
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let bad: Vec<String> = results.into_iter().flatten().collect();
    assert!(
        bad.is_empty(),
        "{} disagreements, e.g.:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn dual_boot_esp_stays_byte_identical() {
    let s = Scratch::new("dual");
    let (root, img) = setup(&s);
    let foreign: Vec<(&str, Vec<u8>)> = vec![
        ("loader/entries/arch-6.6.conf", b"title Arch\nlinux /arch/vmlinuz-linux\noptions root=/dev/sda2\n".to_vec()),
        ("arch/vmlinuz-linux", vec![7u8; 200_000]),
        (
            "loader/entries/ffeeddccbbaa99887766554433221100-4-6.1.0-test.conf",
            b"title Test OS (second install)\noptions lifeboat.tx=4\n".to_vec(),
        ),
        ("ffeeddccbbaa99887766554433221100/6.1.0-test/vmlinuz-x", vec![9u8; 1000]),
        ("loader/entries/broken.conf", b"\xff\xfe garbage without keys\n\n".to_vec()),
        ("EFI/Microsoft/Boot/bootmgfw.efi", b"MZ\x90\x00 windows".to_vec()),
    ];
    for (p, d) in &foreign {
        write(&s.join("f"), d, 0o644);
        ok(&["disk", "put", r(&s.join("f")), &format!("{img}:esp:{p}")]);
    }
    write(&s.join("lc"), b"# user settings\nconsole-mode max\neditor no\n", 0o644);
    ok(&["disk", "put", r(&s.join("lc")), &format!("{img}:esp:loader/loader.conf")]);
    let check = |when: &str| {
        for (p, d) in &foreign {
            let o = run(&["disk", "cat", &format!("{img}:esp:{p}")]);
            assert_eq!(&o.stdout, d, "{p} changed after {when}");
        }
        let lc = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
        assert!(
            lc.starts_with("# user settings\nconsole-mode max\neditor no\n"),
            "loader.conf lost lines after {when}: {lc}"
        );
        fsck(&img, &s);
    };
    let esp = ["--root", r(&root), "--esp", img.as_str()];
    let with = |extra: &[&str]| -> Vec<String> { esp.iter().chain(extra).map(|x| x.to_string()).collect() };
    let okv = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    okv(with(&["boot", "sync", "--keep", "3"]));
    check("sync");
    okv(with(&["state", "prune", "--keep", "1"]));
    check("prune (with its automatic sync)");
    let list = okv(with(&["boot", "list"]));
    assert_eq!(list.lines().filter(|l| l.contains("Test OS, transaction")).count(), 1, "{list}");
    okv(with(&["boot", "set-default", "3"]));
    check("set-default");
    okv(with(&["boot", "sync", "--timeout", "7"]));
    check("sync with timeout");
    let lc = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    assert!(lc.ends_with("default 00112233445566778899aabbccddeeff-3-*\ntimeout 7\n"), "{lc}");
    let status = okv(with(&["boot", "status"]));
    assert!(
        status.contains("Windows Boot Manager") && status.contains("arch-6.6.conf") && status.contains("foreign"),
        "{status}"
    );
    // A sync with nothing to do writes nothing at all.
    let before = fs::read(&img).unwrap();
    let out = okv(with(&["boot", "sync", "--timeout", "7"]));
    assert!(out.contains("up to date"), "{out}");
    assert!(fs::read(&img).unwrap() == before, "a no-op sync changed the image");
}

#[test]
fn oneshot_and_bless_through_a_stand_in_efivarfs() {
    let s = Scratch::new("efi");
    let (root, img) = setup(&s);
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    let esp = |extra: &[&str]| -> String {
        let mut a = vec!["--root", r(&root), "--esp", img.as_str(), "--efivars", r(&vars)];
        a.extend_from_slice(extra);
        ok(&a)
    };
    esp(&["boot", "sync", "--tries", "3"]);
    esp(&["boot", "set-oneshot", "2"]);
    let raw = fs::read(vars.join("LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")).unwrap();
    let want = "00112233445566778899aabbccddeeff-2-6.1.0-test+3-0.conf";
    let mut expect = vec![7u8, 0, 0, 0];
    for u in want.encode_utf16().chain([0]) {
        expect.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(raw, expect, "LoaderEntryOneShot bytes");
    // The loader counted one boot of transaction 3 and said so; bless drops the counter.
    let from = "00112233445566778899aabbccddeeff-3-6.1.0-test+3-0.conf";
    let to = "00112233445566778899aabbccddeeff-3-6.1.0-test+2-1.conf";
    let e = |p: &str| format!("{img}:esp:loader/entries/{p}");
    let data = run(&["disk", "cat", &e(from)]).stdout;
    write(&s.join("x"), &data, 0o644);
    ok(&["disk", "put", r(&s.join("x")), &e(to)]);
    ok(&["disk", "rm", &e(from)]);
    let mut v = vec![6u8, 0, 0, 0];
    for u in format!("\\loader\\entries\\{to}").encode_utf16().chain([0]) {
        v.extend_from_slice(&u.to_le_bytes());
    }
    fs::write(vars.join("LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"), v).unwrap();
    let out = esp(&["boot", "bless"]);
    assert!(out.contains("blessed"), "{out}");
    let list = esp(&["boot", "list"]);
    assert!(list.contains("00112233445566778899aabbccddeeff-3-6.1.0-test.conf"), "{list}");
    let lc = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    assert!(lc.contains("default 00112233445566778899aabbccddeeff-3-*"), "{lc}");
    fsck(&img, &s);
}

#[test]
fn transactions_without_kernels_and_missing_kernels() {
    let s = Scratch::new("nokernel");
    let (root, img) = setup(&s);
    // Transaction 4 has a kernel of its own; 5 has none.
    let t = s.join("t4");
    tree(&t, 4);
    write(&t.join("lib/kernel/6.1.0-test/vmlinuz"), b"a kernel only 4 has", 0o644);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let t = s.join("t5");
    tree(&t, 5);
    fs::remove_dir_all(t.join("lib/kernel")).unwrap();
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    // 4's kernel disappears from the store: its entry and kernel file stay.
    let k = lifeboat_state::hash::Hash128::of(b"a kernel only 4 has");
    fs::remove_file(root.join(".moss/assets/v2").join(k.store_path())).unwrap();
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("transaction 5: carries no kernel"), "{err}");
    assert!(err.contains("transaction 4: kernel 6.1.0-test") && err.contains("missing from the store"), "{err}");
    let list = ok(&["--root", r(&root), "--esp", &img, "boot", "list"]);
    assert!(list.contains("transaction 4") && list.contains("transaction 3"), "{list}");
    fsck(&img, &s);
}

#[test]
fn xbootldr_holds_entries_and_kernels_esp_holds_loader_conf() {
    let s = Scratch::new("xbootldr");
    let (root, _) = setup(&s);
    let img = s.join("x.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "128M", "--esp-size", "40M", "--xbootldr-size", "64M", "--root-size", "0"]);
    // A whole disk as --esp: its XBOOTLDR becomes $BOOT.
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--timeout", "2"]);
    let boot_ls = ok(&["disk", "ls", "-r", &format!("{img}:xbootldr")]);
    assert!(boot_ls.contains("loader/entries/00112233445566778899aabbccddeeff-3-6.1.0-test.conf"), "{boot_ls}");
    assert!(boot_ls.contains("00112233445566778899aabbccddeeff/6.1.0-test/vmlinuz-"), "{boot_ls}");
    assert!(!boot_ls.contains("loader.conf"), "{boot_ls}");
    let esp_ls = ok(&["disk", "ls", "-r", &format!("{img}:esp")]);
    assert!(esp_ls.contains("loader/loader.conf") && !esp_ls.contains("vmlinuz"), "{esp_ls}");
    let status = ok(&["--root", r(&root), "--esp", &img, "boot", "status"]);
    assert!(status.contains("$BOOT:") && status.contains("xbootldr"), "{status}");
    // The same with each partition named explicitly.
    ok(&[
        "--root",
        r(&root),
        "--esp",
        &format!("{img}:esp"),
        "--boot",
        &format!("{img}:xbootldr"),
        "state",
        "prune",
        "--keep",
        "1",
    ]);
    let boot_ls = ok(&["disk", "ls", "-r", &format!("{img}:xbootldr")]);
    assert!(!boot_ls.contains("-1-6.1.0-test.conf") && boot_ls.contains("-3-6.1.0-test.conf"), "{boot_ls}");
}
