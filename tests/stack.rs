//! The root parameters `boot sync` writes for a running system whose root is a
//! partition, or sits on device-mapper layers (LUKS, LVM, LVM on LUKS, layers
//! lifeboat cannot describe), judged on fake sysfs and `/dev` trees laid out as
//! the kernel lays them out, with real on-disk formats underneath: GPTs written
//! by sgdisk, ext4 superblocks by mke2fs, LUKS1 and LUKS2 headers by cryptsetup.
//! The options are pinned word for word, through the entries `boot sync` wants.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use lifeboat::bootsync::{self, Live};
use lifeboat_esp::discover::{boot_partitions, SysBlock};

/// A virtio disk's place in sysfs, and a SCSI disk's.
const VIRTIO: &str = "devices/pci0000:00/0000:00:04.0/virtio2/block";
const SCSI: &str = "devices/pci0000:00/0000:00:05.0/host0/target0:0:0/0:0:0:0/block";

const ROOT_PARTUUID: &str = "3b8f1c0e-6a55-4d7e-9a21-0c5e2f7d9a13";
const FS_UUID: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const LUKS_UUID: &str = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0";
/// An LVM VG and LV uuid as dm uuids carry them (32 characters each, no dashes).
const VG_ID: &str = "Xd3ZkRvQ0OmmH5Lq8uE0mA9y3s7Xe2Kc";
const LV_ROOT: &str = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6";
const LV_SWAP: &str = "q1r2s3t4u5v6w7x8y9z0A1B2C3D4E5F6";

fn run_tool(cmd: &str, args: &[&str]) {
    assert!(have(cmd), "{cmd} is missing: scripts/setup.sh installs it");
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn sized(p: &Path, len: u64) {
    fs::File::create(p).unwrap().set_len(len).unwrap();
}

/// An ext4 filesystem with UUID `uuid` in the file `p` (a device node in the fake `/dev`).
fn ext4(p: &Path, uuid: &str) {
    sized(p, 8 << 20);
    run_tool("mke2fs", &["-q", "-F", "-t", "ext4", "-U", uuid, p.to_str().unwrap()]);
}

/// A LUKS container (header only matters) with UUID `uuid` in the file `p`.
fn luks(p: &Path, version: u8, uuid: &str) {
    sized(p, 17 << 20);
    let key = p.with_extension("key");
    fs::write(&key, b"not a secret").unwrap();
    let ty = format!("luks{version}");
    run_tool(
        "cryptsetup",
        &[
            "luksFormat",
            "--batch-mode",
            "--type",
            &ty,
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--uuid",
            uuid,
            "--key-file",
            key.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    );
}

/// A running system as lifeboat sees it: a fake sysfs and `/dev`, a mountinfo
/// naming the root's device, and a root directory with a machine-id.
struct Fake {
    s: Scratch,
    sys: PathBuf,
    dev: PathBuf,
    root: PathBuf,
    /// Kernel name → its directory below the sysfs root.
    at: Vec<(String, String)>,
}

impl Fake {
    fn new(tag: &str) -> Self {
        let s = Scratch::new(tag);
        let (sys, dev, root) = (s.join("sys"), s.join("dev"), s.join("root"));
        for d in [sys.join("class/block"), sys.join("dev/block"), dev.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        write(&root.join("etc/machine-id"), b"00112233445566778899aabbccddeeff\n", 0o444);
        Fake { s, sys, dev, root, at: Vec::new() }
    }

    fn rel(&self, name: &str) -> &str {
        &self.at.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// A block device in sysfs: its directory, `dev`, `partition`, and the
    /// `class/block` and `dev/block` links, relative as the kernel makes them.
    fn node(&mut self, name: &str, rel: String, devnum: (u32, u32), partition: Option<u32>) {
        let dir = self.sys.join(&rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dev"), format!("{}:{}\n", devnum.0, devnum.1)).unwrap();
        if let Some(n) = partition {
            fs::write(dir.join("partition"), format!("{n}\n")).unwrap();
        }
        std::os::unix::fs::symlink(format!("../../{rel}"), self.sys.join("class/block").join(name)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../{rel}"),
            self.sys.join(format!("dev/block/{}:{}", devnum.0, devnum.1)),
        )
        .unwrap();
        if !self.dev.join(name).exists() {
            fs::write(self.dev.join(name), b"").unwrap();
        }
        self.at.push((name.to_owned(), rel));
    }

    /// A GPT disk made by sgdisk as `/dev/<name>`, with its partitions
    /// (number, sgdisk type code, PARTUUID) in sysfs.
    fn disk(&mut self, name: &str, under: &str, major: u32, parts: &[(u32, &str, &str)]) {
        let img = self.dev.join(name);
        sized(&img, 64 << 20);
        let mut args: Vec<String> = vec!["-o".into()];
        for (n, ty, guid) in parts {
            args.extend([format!("-n={n}:0:+8M"), format!("-t={n}:{ty}"), format!("-u={n}:{guid}")]);
        }
        args.push(img.display().to_string());
        run_tool("sgdisk", &args.iter().map(String::as_str).collect::<Vec<_>>());
        let rel = format!("{under}/{name}");
        self.node(name, rel.clone(), (major, 0), None);
        for (n, _, _) in parts {
            let pname = format!("{name}{n}");
            self.node(&pname, format!("{rel}/{pname}"), (major, *n), Some(*n));
        }
    }

    /// `dm-<n>` with its dm name and uuid, on `slaves` (kernel names).
    fn dm(&mut self, n: u32, name: &str, uuid: Option<&str>, slaves: &[&str]) {
        let kname = format!("dm-{n}");
        let rel = format!("devices/virtual/block/{kname}");
        self.node(&kname, rel.clone(), (253, n), None);
        let dir = self.sys.join(&rel);
        fs::create_dir_all(dir.join("dm")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        fs::write(dir.join("dm/name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("dm/uuid"), format!("{}\n", uuid.unwrap_or(""))).unwrap();
        for s in slaves {
            self.slave(&kname, s);
        }
    }

    /// `slaves/<lower>` of `upper`, as the kernel links it (from
    /// `devices/virtual/block/dm-N/slaves/`, four levels up is `devices/`).
    fn slave(&self, upper: &str, lower: &str) {
        let target = format!("../../../../{}", self.rel(lower).strip_prefix("devices/").unwrap());
        std::os::unix::fs::symlink(target, self.sys.join(self.rel(upper)).join("slaves").join(lower)).unwrap();
    }

    fn mount_root(&self, devnum: (u32, u32), source: &str) {
        let text = format!(
            "22 1 {}:{} / / rw,relatime shared:1 - ext4 {source} rw,errors=remount-ro\n\
             25 22 0:23 / /proc rw,nosuid - proc proc rw\n",
            devnum.0, devnum.1
        );
        fs::write(self.s.join("mountinfo"), text).unwrap();
    }

    fn live(&self) -> Live {
        Live { mountinfo: self.s.join("mountinfo"), sys: SysBlock { sys: self.sys.clone(), dev: self.dev.clone() } }
    }

    fn common(&self) -> bootsync::Common {
        bootsync::common_on(&self.root, Some(&self.live())).unwrap()
    }

    /// The options of the entry `boot sync` wants for a transaction with a
    /// kernel, committed into the fake root by the real binary.
    fn entry_options(&self) -> String {
        let t = self.s.join("tree");
        tree(&t, 1);
        std::fs::create_dir_all(&self.root).unwrap();
        ok(&["--root", self.root.to_str().unwrap(), "state", "commit", "--from", t.to_str().unwrap()]);
        let root = lifeboat_state::root::SystemRoot::open(&self.root).unwrap();
        let idx = lifeboat_state::recover::load_existing_index(&root).unwrap().index;
        let (entries, found) = bootsync::wanted(&root, &idx, &self.common());
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
        entries[0].options.clone()
    }

    fn dev(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }
}

/// A virtio disk with an ESP, an XBOOTLDR and a third partition of type `ty`.
fn boot_disk(f: &mut Fake, ty: &str) {
    f.disk(
        "vda",
        VIRTIO,
        252,
        &[
            (1, "ef00", "11111111-1111-4111-8111-111111111111"),
            (2, "ea00", "22222222-2222-4222-8222-222222222222"),
            (3, ty, ROOT_PARTUUID),
        ],
    );
}

#[test]
fn a_partition_root_keeps_root_partuuid() {
    let mut f = Fake::new("stack-plain");
    boot_disk(&mut f, "8304");
    ext4(&f.dev("vda3"), FS_UUID);
    f.mount_root((252, 3), "/dev/vda3");
    let found = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap();
    assert_eq!(found.disk, f.dev("vda"));
    assert_eq!(found.esp.as_deref(), Some(format!("{}:1", f.dev("vda").display()).as_str()));
    assert_eq!(found.xbootldr.as_deref(), Some(format!("{}:2", f.dev("vda").display()).as_str()));
    assert_eq!(found.root.partuuid.as_deref(), Some(ROOT_PARTUUID));
    assert!(found.notes.is_empty(), "{:?}", found.notes);
    let c = f.common();
    assert_eq!(c.root_params, [format!("root=PARTUUID={ROOT_PARTUUID}")]);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(f.entry_options(), format!("root=PARTUUID={ROOT_PARTUUID} lifeboat.tx=1"));
}

#[test]
fn a_root_on_luks2_names_its_filesystem_and_container() {
    let mut f = Fake::new("stack-luks");
    boot_disk(&mut f, "8309");
    luks(&f.dev("vda3"), 2, LUKS_UUID);
    let hex = LUKS_UUID.replace('-', "");
    f.dm(0, &format!("luks-{LUKS_UUID}"), Some(&format!("CRYPT-LUKS2-{hex}-luks-{LUKS_UUID}")), &["vda3"]);
    ext4(&f.dev("dm-0"), FS_UUID);
    f.mount_root((253, 0), &format!("/dev/mapper/luks-{LUKS_UUID}"));
    let found = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap();
    assert_eq!(found.disk, f.dev("vda"));
    assert_eq!(found.esp.as_deref(), Some(format!("{}:1", f.dev("vda").display()).as_str()));
    // The partition under the mapping is the LUKS container, not the root.
    assert_eq!(found.root.partuuid, None);
    assert_eq!(found.root.stack.describe(), format!("dm-0 (LUKS2 {LUKS_UUID}) on vda3"));
    let c = f.common();
    assert_eq!(c.root_params, [format!("root=UUID={FS_UUID}"), format!("rd.luks.uuid={LUKS_UUID}")]);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(f.entry_options(), format!("root=UUID={FS_UUID} rd.luks.uuid={LUKS_UUID} lifeboat.tx=1"));
}

/// Debian's and Ubuntu's "encrypted LVM": a LUKS container on a partition, a
/// volume group in it with the root and swap volumes.
fn lvm_on_luks(tag: &str, version: u8) -> Fake {
    let mut f = Fake::new(tag);
    boot_disk(&mut f, "8309");
    luks(&f.dev("vda3"), version, LUKS_UUID);
    let hex = LUKS_UUID.replace('-', "");
    f.dm(0, "vda3_crypt", Some(&format!("CRYPT-LUKS{version}-{hex}-vda3_crypt")), &["vda3"]);
    f.dm(1, "vg0-root", Some(&format!("LVM-{VG_ID}{LV_ROOT}")), &["dm-0"]);
    f.dm(2, "vg0-swap", Some(&format!("LVM-{VG_ID}{LV_SWAP}")), &["dm-0"]);
    ext4(&f.dev("dm-1"), FS_UUID);
    f.mount_root((253, 1), "/dev/mapper/vg0-root");
    f
}

#[test]
fn a_root_on_lvm_on_luks_names_its_filesystem_container_and_volume() {
    let f = lvm_on_luks("stack-lvm-luks", 1);
    let found = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap();
    assert_eq!(found.disk, f.dev("vda"));
    assert_eq!(found.xbootldr.as_deref(), Some(format!("{}:2", f.dev("vda").display()).as_str()));
    assert_eq!(found.root.dev, f.dev("dm-1"));
    assert_eq!(found.root.stack.describe(), format!("dm-1 (LVM vg0/root) on dm-0 (LUKS1 {LUKS_UUID}) on vda3"));
    // PID 1 and `boot set-default` find the boot disk from the root's node the same way.
    let sys = f.live().sys;
    fs::create_dir_all(f.dev("mapper")).unwrap();
    std::os::unix::fs::symlink("../dm-1", f.dev("mapper/vg0-root")).unwrap();
    assert_eq!(sys.disk_of_dev(&f.dev("dm-1")), Some(f.dev("vda")));
    assert_eq!(sys.disk_of_dev(&f.dev("mapper/vg0-root")), Some(f.dev("vda")));
    assert_eq!(sys.disk_of_dev(&f.dev("vda3")), Some(f.dev("vda")));
    let c = f.common();
    assert_eq!(
        c.root_params,
        [
            format!("root=UUID={FS_UUID}"),
            format!("rd.luks.name={LUKS_UUID}=vda3_crypt"),
            "rd.lvm.lv=vg0/root".to_owned()
        ]
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(
        f.entry_options(),
        format!("root=UUID={FS_UUID} rd.luks.name={LUKS_UUID}=vda3_crypt rd.lvm.lv=vg0/root lifeboat.tx=1")
    );
}

#[test]
fn cmdline_files_win_and_are_not_repeated() {
    let f = lvm_on_luks("stack-local", 2);
    // The machine's own line names the root and the container already.
    write(
        &f.root.join("etc/kernel/cmdline.d/10-root.cmdline"),
        format!("root=/dev/mapper/vg0-root rd.luks.name={}=vda3_crypt quiet\n", LUKS_UUID.to_uppercase()).as_bytes(),
        0o644,
    );
    assert_eq!(
        f.entry_options(),
        format!(
            "rd.lvm.lv=vg0/root root=/dev/mapper/vg0-root rd.luks.name={}=vda3_crypt quiet lifeboat.tx=1",
            LUKS_UUID.to_uppercase()
        )
    );
}

#[test]
fn a_luks_header_wins_over_the_mapping_uuid() {
    let mut f = Fake::new("stack-luks-header");
    boot_disk(&mut f, "8309");
    luks(&f.dev("vda3"), 2, LUKS_UUID);
    // A mapping opened before the container's UUID was changed (luksUUID).
    f.dm(0, "cryptroot", Some("CRYPT-LUKS2-99999999999949998999999999999999-cryptroot"), &["vda3"]);
    ext4(&f.dev("dm-0"), FS_UUID);
    f.mount_root((253, 0), "/dev/mapper/cryptroot");
    let c = f.common();
    // The mapping keeps its name: crypttab and fstab know it as cryptroot.
    assert_eq!(c.root_params, [format!("root=UUID={FS_UUID}"), format!("rd.luks.name={LUKS_UUID}=cryptroot")]);
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    assert!(c.notes[0].contains("the header's is used"), "{}", c.notes[0]);
    // No header where the mapping says there is one (detached): the dm uuid, said so.
    fs::write(f.dev("vda3"), b"").unwrap();
    let c = f.common();
    assert_eq!(
        c.root_params,
        [format!("root=UUID={FS_UUID}"), "rd.luks.name=99999999-9999-4999-8999-999999999999=cryptroot".to_owned()]
    );
    assert!(c.notes[0].contains("no LUKS header on vda3"), "{:?}", c.notes);
}

#[test]
fn a_root_on_lvm_over_two_disks_boots_from_the_one_with_an_esp() {
    let mut f = Fake::new("stack-lvm");
    // sda, first in the walk, has only a PV; vda has the ESP and the other PV.
    f.disk("sda", SCSI, 8, &[(1, "8e00", "33333333-3333-4333-8333-333333333333")]);
    f.disk(
        "vda",
        VIRTIO,
        252,
        &[(1, "ef00", "11111111-1111-4111-8111-111111111111"), (2, "8e00", "44444444-4444-4444-8444-444444444444")],
    );
    // A `-` inside a VG name is doubled in the dm name.
    f.dm(0, "sys--vg-root", Some(&format!("LVM-{VG_ID}{LV_ROOT}")), &["sda1", "vda2"]);
    ext4(&f.dev("dm-0"), FS_UUID);
    f.mount_root((253, 0), "/dev/mapper/sys--vg-root");
    let found = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap();
    assert_eq!(found.disk, f.dev("vda"));
    assert_eq!(found.esp.as_deref(), Some(format!("{}:1", f.dev("vda").display()).as_str()));
    assert_eq!(found.xbootldr, None);
    assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    assert_eq!(
        found.notes[0],
        format!(
            "the root (dm-0 (LVM sys-vg/root) on sda1 on vda2) sits on 2 disks ({}, {}); the boot disk is {}, which \
             has an ESP",
            f.dev("sda").display(),
            f.dev("vda").display(),
            f.dev("vda").display()
        )
    );
    let c = f.common();
    assert_eq!(c.root_params, [format!("root=UUID={FS_UUID}"), "rd.lvm.lv=sys-vg/root".to_owned()]);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // `boot sync` opens that ESP, and says why that disk.
    let esp = f.dev("vda");
    run_tool("mkfs.fat", &["--offset", "2048", esp.to_str().unwrap(), "8192"]);
    let t =
        bootsync::open_targets_on(&f.root, &Default::default(), &Default::default(), false, Some(&f.live())).unwrap();
    assert!(t.boot.location.starts_with(&format!("{}:1 (esp, FAT", esp.display())), "{}", t.boot.location);
    assert_eq!(t.boot.notes, found.notes);
    assert_eq!(f.entry_options(), format!("root=UUID={FS_UUID} rd.lvm.lv=sys-vg/root lifeboat.tx=1"));
}

#[test]
fn a_layer_lifeboat_cannot_describe_gets_a_note_and_no_root() {
    let mut f = Fake::new("stack-unknown");
    // A multipath map over the whole disk, a kpartx mapping of its third partition.
    f.disk("vda", VIRTIO, 252, &[(1, "ef00", "11111111-1111-4111-8111-111111111111"), (3, "8304", ROOT_PARTUUID)]);
    f.dm(0, "mpatha", Some("mpath-36001405aabbccddeeff00112233445566"), &["vda"]);
    f.dm(1, "mpatha3", Some("part3-mpath-36001405aabbccddeeff00112233445566"), &["dm-0"]);
    ext4(&f.dev("dm-1"), FS_UUID);
    f.mount_root((253, 1), "/dev/mapper/mpatha3");
    let found = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap();
    // The ESP is still found, on the disk under the map.
    assert_eq!(found.disk, f.dev("vda"));
    assert_eq!(found.esp.as_deref(), Some(format!("{}:1", f.dev("vda").display()).as_str()));
    let c = f.common();
    assert!(c.root_params.is_empty(), "{:?}", c.root_params);
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    let n = &c.notes[0];
    assert!(n.contains("cannot describe on a kernel command line"), "{n}");
    assert!(n.contains("dm-1 (a partition mapping (kpartx)"), "{n}");
    assert!(n.contains("dm-0 (multipath"), "{n}");
    assert!(n.contains("no root= is written"), "{n}");
    assert_eq!(f.entry_options(), "lifeboat.tx=1");

    // A mapping with no dm uuid at all (dmsetup create by hand) on a partition.
    let mut g = Fake::new("stack-nouuid");
    boot_disk(&mut g, "8304");
    g.dm(0, "handmade", None, &["vda3"]);
    ext4(&g.dev("dm-0"), FS_UUID);
    g.mount_root((253, 0), "/dev/mapper/handmade");
    let c = g.common();
    assert!(c.root_params.is_empty(), "{:?}", c.root_params);
    assert!(c.notes[0].contains("no dm uuid"), "{:?}", c.notes);
}

#[test]
fn a_cycle_in_slaves_is_refused_not_followed() {
    let mut f = Fake::new("stack-cycle");
    boot_disk(&mut f, "8304");
    f.dm(0, "a", Some(&format!("LVM-{VG_ID}{LV_ROOT}")), &[]);
    f.dm(1, "b", Some(&format!("LVM-{VG_ID}{LV_SWAP}")), &["dm-0"]);
    f.slave("dm-0", "dm-1");
    ext4(&f.dev("dm-0"), FS_UUID);
    f.mount_root((253, 0), "/dev/mapper/a");
    let e = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap_err().to_string();
    assert_eq!(e, "the devices under dm-0: the devices' slaves form a cycle: dm-0 → dm-1 → dm-0");
    let c = f.common();
    assert!(c.root_params.is_empty());
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].contains("cycle"), "{:?}", c.notes);
    assert_eq!(f.entry_options(), "lifeboat.tx=1");
}

#[test]
fn a_luks_root_on_a_whole_disk_without_gpt_is_still_named() {
    let mut f = Fake::new("stack-whole");
    boot_disk(&mut f, "8304");
    // A second disk that is one LUKS container, no partition table.
    f.node("vdb", format!("{VIRTIO}/vdb"), (252, 16), None);
    luks(&f.dev("vdb"), 2, LUKS_UUID);
    let hex = LUKS_UUID.replace('-', "");
    f.dm(0, "data", Some(&format!("CRYPT-LUKS2-{hex}-data")), &["vdb"]);
    ext4(&f.dev("dm-0"), FS_UUID);
    f.mount_root((253, 0), "/dev/mapper/data");
    let c = f.common();
    assert_eq!(c.root_params, [format!("root=UUID={FS_UUID}"), format!("rd.luks.name={LUKS_UUID}=data")]);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // Its ESP is on another disk, which the root does not lead to: named, not guessed.
    let e = boot_partitions(&f.root, &f.s.join("mountinfo"), &f.live().sys).unwrap_err().to_string();
    assert!(e.contains("vdb"), "{e}");
}
