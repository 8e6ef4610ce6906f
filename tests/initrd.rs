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
    ok(&["initrd", "build", "--binary", bin(), "--out", a.to_str().unwrap(), "--compress", "none", "--no-modules"]);
    ok(&["initrd", "build", "--binary", bin(), "--out", b.to_str().unwrap(), "--compress", "none", "--no-modules"]);
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

    ok(&["initrd", "build", "--binary", bin(), "--out", z.to_str().unwrap(), "--no-modules"]);
    let o = Command::new("zstd").args(["-d", "-c", z.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, bytes, "the zstd initrd decompresses to the same archive");
}

/// A stand-in kernel module: an ELF header and a name.
fn module(name: &str) -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01".to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

/// A module directory as depmod leaves it, with a soft dependency through an
/// alias, a builtin, a compressed module of each kind, and a device alias.
fn kernel_dir(s: &Scratch) -> std::path::PathBuf {
    let kdir = s.join("lib/modules/6.1.0-test");
    for m in ["fs/fat/vfat", "fs/fat/fat", "fs/ext4/ext4", "fs/jbd2/jbd2", "crypto/crc32c_generic", "drivers/ata/ahci"]
    {
        write(&kdir.join(format!("kernel/{m}.ko")), &module(m), 0o644);
    }
    let zst = zstd::bulk::compress(&module("nvme"), 3).unwrap();
    write(&kdir.join("kernel/drivers/nvme/host/nvme.ko.zst"), &zst, 0o644);
    write(&kdir.join("kernel/drivers/nvme/host/nvme-core.ko"), &module("nvme-core"), 0o644);
    write(&kdir.join("kernel/drivers/block/virtio_blk.ko"), &module("virtio_blk"), 0o644);
    let st = Command::new("xz")
        .args(["-k", "-f", "--check=crc32"])
        .arg(kdir.join("kernel/drivers/block/virtio_blk.ko"))
        .status()
        .unwrap();
    assert!(st.success(), "xz is needed (scripts/setup.sh installs it)");
    fs::remove_file(kdir.join("kernel/drivers/block/virtio_blk.ko")).unwrap();
    write(
        &kdir.join("modules.dep"),
        b"kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\nkernel/fs/fat/fat.ko:\n\
          kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\nkernel/crypto/crc32c_generic.ko:\n\
          kernel/drivers/ata/ahci.ko:\nkernel/drivers/nvme/host/nvme.ko.zst: kernel/drivers/nvme/host/nvme-core.ko\n\
          kernel/drivers/nvme/host/nvme-core.ko:\nkernel/drivers/block/virtio_blk.ko.xz:\n",
        0o644,
    );
    write(
        &kdir.join("modules.alias"),
        b"alias crypto-crc32c crc32c_generic\nalias fs-ext4 ext4\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
          alias virtio:d00000002v* virtio_blk\nalias pci:v*d*sv*sd*bc01sc06i01* ahci\n",
        0o644,
    );
    write(&kdir.join("modules.softdep"), b"# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c\n", 0o644);
    write(&kdir.join("modules.builtin"), b"kernel/fs/efivarfs/efivarfs.ko\n", 0o644);
    kdir
}

fn boot_index(bytes: &[u8]) -> lifeboat_initrd::modules::BootIndex {
    let a = lifeboat_initrd::Archive::parse(bytes).unwrap();
    let e = a.entries.iter().find(|e| e.name == lifeboat_initrd::modules::BOOT_INDEX).expect("module index");
    let lifeboat_initrd::Kind::File(d) = &e.kind else { panic!() };
    lifeboat_initrd::modules::BootIndex::parse(&String::from_utf8_lossy(d))
}

#[test]
fn generic_set_with_softdeps_compressed_modules_and_builtins() {
    let s = Scratch::new("initrd-mod");
    let kdir = kernel_dir(&s);
    let out = s.join("m.cpio");
    let o = run(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out.to_str().unwrap(),
        "--compress",
        "none",
        "--modules",
        kdir.to_str().unwrap(),
        "--module",
        "efivarfs",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("built into the kernel, nothing to add: efivarfs"));
    let bytes = fs::read(&out).unwrap();
    let names = cpio_list(&bytes);
    // The generic set: storage, filesystems; ext4's soft dependency through its alias.
    for m in [
        "fs/ext4/ext4.ko",
        "fs/jbd2/jbd2.ko",
        "crypto/crc32c_generic.ko",
        "fs/fat/vfat.ko",
        "drivers/ata/ahci.ko",
        "drivers/nvme/host/nvme-core.ko",
    ] {
        assert!(names.contains(&format!("lib/modules/6.1.0-test/kernel/{m}")), "{m}: {names:?}");
    }
    // This kernel has no config saying it decompresses: decompressed at build time.
    assert!(names.contains(&"lib/modules/6.1.0-test/kernel/drivers/nvme/host/nvme.ko".to_owned()), "{names:?}");
    assert!(names.contains(&"lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko".to_owned()), "{names:?}");
    let ix = boot_index(&bytes);
    assert_eq!(ix.load_order("ext4"), ["crc32c_generic", "jbd2", "ext4"]);
    assert_eq!(ix.for_modalias("virtio:d00000002v00001AF4"), ["virtio_blk"]);
    assert!(!ix.modules["nvme"].compressed);
    let a = lifeboat_initrd::Archive::parse(&bytes).unwrap();
    let nvme = a.entries.iter().find(|e| e.name.ends_with("nvme.ko")).unwrap();
    assert!(matches!(&nvme.kind, lifeboat_initrd::Kind::File(d) if *d == module("nvme")));

    // A kernel that decompresses zstd itself gets the compressed file, marked so.
    write(&s.join("config"), b"CONFIG_MODULE_DECOMPRESS=y\nCONFIG_MODULE_COMPRESS_ZSTD=y\n", 0o644);
    let out2 = s.join("m2.cpio");
    ok(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out2.to_str().unwrap(),
        "--compress",
        "none",
        "--modules",
        kdir.to_str().unwrap(),
        "--kernel-config",
        s.join("config").to_str().unwrap(),
    ]);
    let ix = boot_index(&fs::read(&out2).unwrap());
    assert!(ix.modules["nvme"].compressed && ix.modules["nvme"].path.ends_with(".ko.zst"));
    assert!(!ix.modules["virtio_blk"].compressed, "xz is not what this kernel decompresses");

    // Bad input: a name that does not exist, a corrupt compressed module, no modules.dep.
    let e = fails(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out.to_str().unwrap(),
        "--modules",
        kdir.to_str().unwrap(),
        "--module",
        "ext5",
    ]);
    assert!(e.contains("module ext5") && e.contains("did you mean ext4"), "{e}");
    // A FIFO where a module or depmod's index is: named, never waited on.
    for f in ["kernel/fs/ext4/ext4.ko", "modules.alias"] {
        let p = kdir.join(f);
        let kept = fs::read(&p).unwrap();
        fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let o = run_within(
            &[
                "initrd",
                "build",
                "--binary",
                bin(),
                "--out",
                out.to_str().unwrap(),
                "--modules",
                kdir.to_str().unwrap(),
            ],
            20,
        )
        .unwrap_or_else(|| panic!("initrd build hung on a FIFO at {f}"));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(f) && e.contains("FIFO"), "{f}: {e}");
        fs::remove_file(&p).unwrap();
        fs::write(&p, kept).unwrap();
    }
    fs::write(kdir.join("kernel/drivers/nvme/host/nvme.ko.zst"), b"\x28\xb5\x2f\xfd garbage").unwrap();
    let e = fails(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out.to_str().unwrap(),
        "--modules",
        kdir.to_str().unwrap(),
    ]);
    assert!(e.contains("nvme.ko.zst") && e.contains("corrupt"), "{e}");
    fs::remove_file(kdir.join("modules.dep")).unwrap();
    let e = fails(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out.to_str().unwrap(),
        "--modules",
        kdir.to_str().unwrap(),
    ]);
    assert!(e.contains("modules.dep is missing") && e.contains("depmod"), "{e}");
}

#[test]
fn host_only_holds_exactly_the_host_s_driver_chain() {
    let s = Scratch::new("initrd-host");
    let kdir = kernel_dir(&s);
    // A stand-in sysfs: the root on an NVMe namespace of a PCI controller.
    let sys = s.join("sys");
    let pci = sys.join("devices/pci0000:00/0000:00:03.0");
    let part = pci.join("nvme/nvme0/nvme0n1/nvme0n1p2");
    fs::create_dir_all(&part).unwrap();
    fs::create_dir_all(sys.join("bus/pci/drivers/nvme")).unwrap();
    fs::create_dir_all(sys.join("module/nvme")).unwrap();
    std::os::unix::fs::symlink(sys.join("bus/pci/drivers/nvme"), pci.join("driver")).unwrap();
    std::os::unix::fs::symlink(sys.join("module/nvme"), sys.join("bus/pci/drivers/nvme/module")).unwrap();
    fs::write(pci.join("modalias"), "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n").unwrap();
    fs::create_dir_all(sys.join("dev/block")).unwrap();
    std::os::unix::fs::symlink(&part, sys.join("dev/block/259:2")).unwrap();
    let mi = s.join("mountinfo");
    fs::write(&mi, "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n").unwrap();
    let out = s.join("h.cpio");
    ok(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        out.to_str().unwrap(),
        "--compress",
        "none",
        "--modules",
        kdir.to_str().unwrap(),
        "--host-only",
        "--sysfs",
        sys.to_str().unwrap(),
        "--mountinfo",
        mi.to_str().unwrap(),
    ]);
    let ix = boot_index(&fs::read(&out).unwrap());
    let got: Vec<&String> = ix.modules.keys().collect();
    assert_eq!(got, ["crc32c_generic", "ext4", "jbd2", "nvme", "nvme_core"]);
}

#[test]
fn append() {
    let s = Scratch::new("initrd-append");
    // --append-to: the base initrd's bytes, padding, then our segment.
    write(&s.join("base.img"), b"BASE-INITRD-BYTES", 0o644);
    let app = s.join("app.img");
    ok(&[
        "initrd",
        "build",
        "--binary",
        bin(),
        "--out",
        app.to_str().unwrap(),
        "--compress",
        "none",
        "--append-to",
        s.join("base.img").to_str().unwrap(),
        "--no-modules",
    ]);
    let all = fs::read(&app).unwrap();
    assert!(all.starts_with(b"BASE-INITRD-BYTES\0\0\0"));
    assert_eq!(&all[20..26], b"070701");
}

/// The `/init` of an uncompressed initrd.
fn init_of(path: &std::path::Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let parsed = lifeboat_initrd::Archive::parse(&bytes).unwrap();
    match &parsed.entries.iter().find(|e| e.name == "init").expect("no /init").kind {
        lifeboat_initrd::Kind::File(d) => d.to_vec(),
        k => panic!("/init is {k:?}"),
    }
}

/// Without `--binary`, the rescue build installed with the binary that runs
/// (`../lib/lifeboat/lifeboat-rescue` from its directory, here an install staged
/// in a scratch prefix), then `/usr/lib/lifeboat/lifeboat-rescue`; the host
/// build never embeds itself, the rescue build does.
#[test]
fn default_binary_is_the_installed_rescue_build() {
    assert!(
        !std::path::Path::new("/usr/lib/lifeboat/lifeboat-rescue").exists(),
        "this test needs a machine without an installed lifeboat (/usr/lib/lifeboat/lifeboat-rescue exists)"
    );
    let s = Scratch::new("initrd-default-bin");
    let tool = s.join("usr/bin/lifeboat");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    // Hard-linked (a symlink would resolve to target/), copied across filesystems.
    fs::hard_link(bin(), &tool).or_else(|_| fs::copy(bin(), &tool).map(drop)).unwrap();
    let rescue = s.join("usr/lib/lifeboat/lifeboat-rescue");
    write(&rescue, b"\x7fELF a stand-in for the rescue build", 0o755);
    let out = s.join("a.cpio");
    let build = || {
        Command::new(&tool)
            .args(["initrd", "build", "--out", out.to_str().unwrap(), "--compress", "none", "--no-modules"])
            .output()
            .unwrap()
    };
    let o = build();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(init_of(&out), fs::read(&rescue).unwrap(), "/init is not the installed rescue build");

    fs::remove_file(&rescue).unwrap();
    fs::remove_file(&out).unwrap();
    let o = build();
    if cfg!(feature = "moss-import") {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "the host build embedded itself");
        for needed in [rescue.to_str().unwrap(), "/usr/lib/lifeboat/lifeboat-rescue", "--binary"] {
            assert!(err.contains(needed), "the error does not name {needed}: {err}");
        }
        assert!(!out.exists());
    } else {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(init_of(&out), fs::read(bin()).unwrap(), "the rescue build did not embed itself");
    }
}
