//! The rescue initrd against `cpio -t` and `zstd -d`: layout, determinism, the
//! module closure, and the appended-segment form.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::*;

fn cpio_list(bytes: &[u8]) -> Vec<String> {
    let mut c =
        Command::new("cpio").args(["-t", "--quiet"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "cpio -t failed");
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn layout_determinism_and_size() {
    let s = Scratch::new("initrd");
    let (a, b, z) = (s.join("a.cpio"), s.join("b.cpio"), s.join("z.initrd"));
    ok(&["initrd", "build", "--out", a.to_str().unwrap(), "--compress", "none"]);
    ok(&["initrd", "build", "--out", b.to_str().unwrap(), "--compress", "none"]);
    let bytes = fs::read(&a).unwrap();
    assert_eq!(bytes, fs::read(&b).unwrap(), "same input, different bytes");
    assert_eq!(bytes.len() % 4, 0);
    let names = cpio_list(&bytes);
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} missing: {names:?}"));
    assert!(pos("dev") < pos("dev/console"));
    assert!(pos("usr") < pos("usr/bin") && pos("usr/bin") < pos("usr/bin/lifeboat"));
    pos("init");
    // The embedded /init is this binary.
    let parsed = lifeboat_initrd::Archive::parse(&bytes).unwrap();
    let init = parsed.entries.iter().find(|e| e.name == "init").unwrap();
    assert!(matches!(&init.kind, lifeboat_initrd::Kind::File(d) if *d == fs::read(bin()).unwrap()));

    ok(&["initrd", "build", "--out", z.to_str().unwrap()]);
    let o = Command::new("zstd").args(["-d", "-c", z.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, bytes, "the zstd initrd decompresses to the same archive");
}

#[test]
fn modules_with_dependencies_and_append() {
    let s = Scratch::new("initrd-mod");
    let kdir = s.join("lib/modules/6.1.0-test");
    write(&kdir.join("kernel/fs/fat/vfat.ko"), b"vfat module", 0o644);
    write(&kdir.join("kernel/fs/fat/fat.ko"), b"fat module", 0o644);
    write(&kdir.join("kernel/fs/efivarfs/efivarfs.ko"), b"efivarfs module", 0o644);
    write(
        &kdir.join("modules.dep"),
        b"kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\nkernel/fs/fat/fat.ko:\nkernel/fs/efivarfs/efivarfs.ko:\n",
        0o644,
    );
    let out = s.join("m.cpio");
    ok(&[
        "initrd",
        "build",
        "--out",
        out.to_str().unwrap(),
        "--compress",
        "none",
        "--modules",
        kdir.to_str().unwrap(),
        "--module",
        "vfat",
        "--module",
        "efivarfs",
    ]);
    let bytes = fs::read(&out).unwrap();
    let names = cpio_list(&bytes);
    assert!(names.contains(&"lib/modules/6.1.0-test/kernel/fs/fat/fat.ko".to_string()), "{names:?}");
    let a = lifeboat_initrd::Archive::parse(&bytes).unwrap();
    let list = a.entries.iter().find(|e| e.name == lifeboat_initrd::LOAD_LIST).unwrap();
    let lifeboat_initrd::Kind::File(d) = &list.kind else { panic!() };
    assert_eq!(
        String::from_utf8_lossy(d),
        "lib/modules/6.1.0-test/kernel/fs/fat/fat.ko\nlib/modules/6.1.0-test/kernel/fs/fat/vfat.ko\nlib/modules/6.1.0-test/kernel/fs/efivarfs/efivarfs.ko\n"
    );
    let err = fails(&[
        "initrd",
        "build",
        "--out",
        out.to_str().unwrap(),
        "--modules",
        kdir.to_str().unwrap(),
        "--module",
        "nope",
    ]);
    assert!(err.contains("module nope is not in"), "{err}");

    // --append-to: the base initrd's bytes, padding, then our segment.
    write(&s.join("base.img"), b"BASE-INITRD-BYTES", 0o644);
    let app = s.join("app.img");
    ok(&[
        "initrd",
        "build",
        "--out",
        app.to_str().unwrap(),
        "--compress",
        "none",
        "--append-to",
        s.join("base.img").to_str().unwrap(),
    ]);
    let all = fs::read(&app).unwrap();
    assert!(all.starts_with(b"BASE-INITRD-BYTES\0\0\0"));
    assert_eq!(&all[20..26], b"070701");
}
