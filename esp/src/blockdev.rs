//! Block devices as sysfs shows them — the one scan of `/sys/class/block` that
//! every part of lifeboat uses: disks and partitions with their device numbers and
//! sizes, the disk a partition belongs to (through the device-mapper stack,
//! [`crate::stack`]), each
//! partition's PARTUUID, name and type from its disk's GPT, and each filesystem's
//! type, UUID and label from its superblock.
//!
//! The sysfs and `/dev` roots are parameters, so tests run on fake trees.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use lifeboat_codec::{le_u16_at, le_u32_at};

use crate::disk::{Disk, PartitionKind};
use crate::{Error, Result};

/// One block device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`nvme0n1p2`).
    pub name: String,
    /// `/dev/<name>` below the `/dev` root.
    pub dev: PathBuf,
    /// `major:minor`.
    pub devnum: Option<(u32, u32)>,
    pub size: u64,
    /// For partitions: the disk's name and the partition number.
    pub parent: Option<(String, u32)>,
    pub partuuid: Option<String>,
    /// The GPT partition name (`PARTLABEL`).
    pub partlabel: Option<String>,
    pub part_kind: Option<PartitionKind>,
    pub fstype: Option<&'static str>,
    pub uuid: Option<String>,
    /// The filesystem label (`LABEL`).
    pub label: Option<String>,
}

/// Block devices seen through a sysfs root and a `/dev` root.
#[derive(Clone, Debug)]
pub struct SysBlock {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for SysBlock {
    fn default() -> Self {
        SysBlock { sys: PathBuf::from("/sys"), dev: PathBuf::from("/dev") }
    }
}

/// A whole disk and the partition a device number names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOf {
    /// `/dev/<disk>`.
    pub disk: PathBuf,
    /// Partition number, when the device was a partition.
    pub partition: Option<u32>,
}

pub(crate) fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

pub(crate) fn parse_devnum(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Devices that never hold a system: loop, ram and zram.
fn ignored(name: &str) -> bool {
    name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram")
}

impl SysBlock {
    /// Every disk and partition, superblocks read.
    pub fn scan(&self) -> Vec<BlockDev> {
        self.scan_with(true)
    }

    /// Every disk and partition (loop, ram and zram devices skipped), in name
    /// order. Without `filesystems`, superblocks are not read (a poll for a root
    /// named by PARTUUID needs only the GPTs).
    pub fn scan_with(&self, filesystems: bool) -> Vec<BlockDev> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.sys.join("class/block")) else {
            return out;
        };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut gpts: BTreeMap<String, Option<Disk>> = BTreeMap::new();
        for name in names {
            if ignored(&name) {
                continue;
            }
            let base = self.sys.join("class/block").join(&name);
            let size = read_trim(&base.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512;
            let devnum = read_trim(&base.join("dev")).and_then(|s| parse_devnum(&s));
            let partno = read_trim(&base.join("partition")).and_then(|s| s.parse::<u32>().ok());
            let parent = partno.and_then(|n| {
                let real = fs::canonicalize(&base).ok()?;
                let p = real.parent()?.file_name()?.to_string_lossy().into_owned();
                Some((p, n))
            });
            let dev = self.dev.join(&name);
            let mut d = BlockDev { name, dev, devnum, size, parent, ..BlockDev::default() };
            if let Some((disk, n)) = &d.parent {
                let g = gpts.entry(disk.clone()).or_insert_with(|| Disk::open(&self.dev.join(disk), false).ok());
                if let Some(p) = g.as_ref().and_then(|g| g.partitions.iter().find(|p| p.number == *n)) {
                    d.partuuid = Some(p.part_guid.clone());
                    d.partlabel = Some(p.name.clone()).filter(|n| !n.is_empty());
                    d.part_kind = Some(p.kind);
                }
            }
            if filesystems {
                if let Some(fs) = probe_fs(&d.dev) {
                    d.fstype = Some(fs.fstype);
                    d.uuid = fs.uuid;
                    d.label = fs.label;
                }
            }
            out.push(d);
        }
        out
    }

    /// Whole disks (not partitions; not loop, ram or zram) and their sizes.
    pub fn disks(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> =
            self.scan_with(false).into_iter().filter(|d| d.parent.is_none()).map(|d| (d.name, d.size)).collect();
        out.sort();
        out
    }

    /// The whole disk behind device `major:minor`: for a partition its disk, for
    /// a device-mapper (or md) device the disk under its lowest layer (the first
    /// one met, when the layers span several; [`crate::stack::Stack::disks`]
    /// lists them all).
    pub fn disk_of(&self, major: u32, minor: u32) -> Result<DiskOf> {
        let stack = self.stack_of(major, minor)?;
        let Some(b) = stack.bottoms.first() else {
            return Err(Error::Stack { device: stack.top, why: "no partition or disk underneath".to_owned() });
        };
        if stack.is_plain() {
            return Ok(b.disk.clone());
        }
        Ok(DiskOf { disk: b.disk.disk.clone(), partition: None })
    }

    /// The whole disk a device node belongs to (itself if it is a disk), by its
    /// kernel name; a `/dev/mapper` link is followed to its `dm-N`, and a
    /// stacked device gives the disk under its lowest layer.
    pub fn disk_of_dev(&self, dev: &Path) -> Option<PathBuf> {
        let mut name = dev.file_name()?.to_string_lossy().into_owned();
        let mut base = self.sys.join("class/block").join(&name);
        if !base.exists() {
            if let Some(real) = fs::canonicalize(dev).ok().and_then(|r| r.file_name().map(|n| n.to_owned())) {
                name = real.to_string_lossy().into_owned();
                base = self.sys.join("class/block").join(&name);
            }
        }
        if base.join("partition").exists() {
            let real = fs::canonicalize(&base).ok()?;
            return Some(self.dev.join(real.parent()?.file_name()?));
        }
        let stacked = fs::read_dir(base.join("slaves")).is_ok_and(|mut rd| rd.next().is_some());
        if stacked {
            let (a, b) = parse_devnum(&read_trim(&base.join("dev"))?)?;
            return self.disk_of(a, b).ok().map(|d| d.disk);
        }
        Some(self.dev.join(name))
    }

    /// `major:minor` and device node of partition `n` of `disk`, if it exists.
    pub fn partition_devnum(&self, disk: &Path, n: u32) -> Option<(u32, u32, PathBuf)> {
        let dname = disk.file_name()?.to_string_lossy().into_owned();
        let dir = self.sys.join("class/block").join(&dname);
        for e in fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if read_trim(&p.join("partition")).and_then(|s| s.parse::<u32>().ok()) == Some(n) {
                let (a, b) = parse_devnum(&read_trim(&p.join("dev"))?)?;
                let pname = e.file_name().to_string_lossy().into_owned();
                return Some((a, b, self.dev.join(pname)));
            }
        }
        None
    }
}

/// What a superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub fstype: &'static str,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn uuid_str(b: &[u8]) -> String {
    let h = hex(b);
    if h.len() != 32 {
        return h;
    }
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A NUL-padded label field; `None` when empty.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Filesystem type, UUID and label from the superblock of `dev` (ext2/3/4, XFS,
/// btrfs, f2fs, FAT).
pub fn probe_fs(dev: &Path) -> Option<FsInfo> {
    let mut f = fs::File::open(dev).ok()?;
    let mut b = vec![0u8; 69 * 1024];
    let mut n = 0;
    // A block device may return short reads; a file shorter than 69 KiB is fine.
    while n < b.len() {
        match f.read(&mut b[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    probe_fs_bytes(&b[..n])
}

/// [`probe_fs`] on the first bytes of a device (at least 69 KiB for btrfs).
pub fn probe_fs_bytes(b: &[u8]) -> Option<FsInfo> {
    let at = |a: usize, n: usize| b.get(a..a + n);
    // Containers first: a LUKS header or an LVM label sits where no filesystem
    // of the list below keeps its magic, and their payload must not be probed.
    if at(0, 6) == Some(b"LUKS\xba\xbe") {
        let uuid = at(168, 40).and_then(label).map(|u| u.to_ascii_lowercase());
        return Some(FsInfo { fstype: "crypto_LUKS", uuid, label: None });
    }
    for sector in 0..4 {
        if at(sector * 512, 8) == Some(b"LABELONE") && at(sector * 512 + 24, 8) == Some(b"LVM2 001") {
            // The PV UUID, 32 characters at the pv_header the label points to,
            // shown as lvm2 shows it (6-4-4-4-4-4-6).
            let off = le_u32_at(b, sector * 512 + 20).and_then(|o| usize::try_from(o).ok());
            let raw = off.and_then(|o| at(sector * 512 + o, 32)).and_then(|u| std::str::from_utf8(u).ok());
            let uuid = raw.filter(|u| u.bytes().all(|c| c.is_ascii_alphanumeric())).map(|u| {
                let mut s = String::new();
                let mut i = 0;
                for n in [6, 4, 4, 4, 4, 4, 6] {
                    if !s.is_empty() {
                        s.push('-');
                    }
                    s.push_str(&u[i..i + n]);
                    i += n;
                }
                s
            });
            return Some(FsInfo { fstype: "LVM2_member", uuid, label: None });
        }
    }
    // Swap (4 KiB pages): the signature ends the first page; a hibernation image
    // replaces it (crate::hibernation) and keeps the swap's UUID and label.
    if let Some(sig) = at(4086, 10) {
        if sig == b"SWAPSPACE2" || crate::hibernation::image_signature(sig).is_some() {
            let fstype = if sig == b"SWAPSPACE2" { "swap" } else { "swsuspend" };
            return Some(FsInfo { fstype, uuid: at(1036, 16).map(uuid_str), label: at(1052, 16).and_then(label) });
        }
    }
    if le_u16_at(b, 1080) == Some(0xEF53) {
        let compat = le_u32_at(b, 1116)?;
        let incompat = le_u32_at(b, 1120)?;
        let fstype = if incompat & 0x40 != 0 || incompat & 0x200 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some(FsInfo { fstype, uuid: at(1128, 16).map(uuid_str), label: at(1144, 16).and_then(label) });
    }
    if at(0, 4) == Some(b"XFSB") {
        return Some(FsInfo { fstype: "xfs", uuid: at(32, 16).map(uuid_str), label: at(108, 12).and_then(label) });
    }
    if at(65536 + 64, 8) == Some(b"_BHRfS_M") {
        return Some(FsInfo {
            fstype: "btrfs",
            uuid: at(65536 + 32, 16).map(uuid_str),
            label: at(65536 + 0x12b, 256).and_then(label),
        });
    }
    if le_u32_at(b, 1024) == Some(0xF2F5_2010) {
        // f2fs: uuid at 0x6c of the superblock, the volume name in UTF-16LE after it.
        let name: Vec<u16> =
            at(1024 + 0x7c, 512).map(|s| s.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())?;
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let l = String::from_utf16_lossy(&name[..end]);
        return Some(FsInfo {
            fstype: "f2fs",
            uuid: at(1024 + 0x6c, 16).map(uuid_str),
            label: (!l.is_empty()).then_some(l),
        });
    }
    if at(510, 2) == Some(&[0x55, 0xAA]) && (at(82, 5) == Some(b"FAT32") || at(54, 3) == Some(b"FAT")) {
        let fat32 = at(82, 5) == Some(b"FAT32");
        let (serial, lab) = if fat32 { (at(67, 4)?, at(71, 11)?) } else { (at(39, 4)?, at(43, 11)?) };
        let s = format!("{:02X}{:02X}-{:02X}{:02X}", serial[3], serial[2], serial[1], serial[0]);
        let lab = label(lab).filter(|l| l != "NO NAME");
        return Some(FsInfo { fstype: "vfat", uuid: Some(s), label: lab });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_superblock() {
        let mut b = vec![0u8; 4096];
        b[1080] = 0x53;
        b[1081] = 0xEF;
        b[1120] = 0x40; // extents
        for (i, x) in b[1128..1144].iter_mut().enumerate() {
            *x = i as u8;
        }
        b[1144..1148].copy_from_slice(b"root");
        let fs = probe_fs_bytes(&b).unwrap();
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.uuid.unwrap(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(fs.label.as_deref(), Some("root"));
        // Cut anywhere: never a panic.
        for cut in [0, 1081, 1121, 1130, 1150] {
            let _ = probe_fs_bytes(&b[..cut]);
        }
    }

    #[test]
    fn fake_sysfs() {
        let t = std::env::temp_dir().join(format!("lb-sys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let dev = t.join("devices/pci/nvme/nvme0n1");
        fs::create_dir_all(dev.join("nvme0n1p2")).unwrap();
        fs::create_dir_all(dev.join("nvme0n1p1")).unwrap();
        fs::write(dev.join("nvme0n1p2/partition"), "2\n").unwrap();
        fs::write(dev.join("nvme0n1p2/dev"), "259:2\n").unwrap();
        fs::write(dev.join("nvme0n1p1/partition"), "1\n").unwrap();
        fs::write(dev.join("nvme0n1p1/dev"), "259:1\n").unwrap();
        fs::create_dir_all(t.join("dev/block")).unwrap();
        fs::create_dir_all(t.join("class/block")).unwrap();
        std::os::unix::fs::symlink(dev.join("nvme0n1p2"), t.join("dev/block/259:2")).unwrap();
        std::os::unix::fs::symlink(&dev, t.join("class/block/nvme0n1")).unwrap();
        let sb = SysBlock { sys: t.clone(), dev: PathBuf::from("/dev") };
        let d = sb.disk_of(259, 2).unwrap();
        assert_eq!(d, DiskOf { disk: PathBuf::from("/dev/nvme0n1"), partition: Some(2) });
        let (a, b, p) = sb.partition_devnum(&d.disk, 1).unwrap();
        assert_eq!((a, b), (259, 1));
        assert_eq!(p, PathBuf::from("/dev/nvme0n1p1"));
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn scan_over_fake_sysfs_and_dev_reads_gpt_and_superblocks() {
        let t = std::env::temp_dir().join(format!("lb-probe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let (sys, dev) = (t.join("sys"), t.join("dev"));
        fs::create_dir_all(sys.join("class/block")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        // A real GPT image as /dev/vda, with sysfs entries for it and its partitions.
        let img = dev.join("vda");
        crate::disk::create(
            &img,
            &crate::disk::CreateSpec { size: 64 << 20, esp: 8 << 20, xbootldr: None, root: None },
        )
        .unwrap();
        let d = Disk::open(&img, false).unwrap();
        let devices = sys.join("devices/virtual/vda");
        fs::create_dir_all(&devices).unwrap();
        std::os::unix::fs::symlink(&devices, sys.join("class/block/vda")).unwrap();
        for p in &d.partitions {
            let pname = format!("vda{}", p.number);
            fs::create_dir_all(devices.join(&pname)).unwrap();
            fs::write(devices.join(&pname).join("partition"), format!("{}\n", p.number)).unwrap();
            std::os::unix::fs::symlink(devices.join(&pname), sys.join("class/block").join(&pname)).unwrap();
            fs::write(dev.join(&pname), b"").unwrap();
        }
        let sb = SysBlock { sys, dev: dev.clone() };
        let devs = sb.scan();
        let root = d.find(PartitionKind::RootX86_64).unwrap();
        let r = devs.iter().find(|x| x.part_kind == Some(PartitionKind::RootX86_64)).unwrap();
        assert_eq!(r.dev, dev.join(format!("vda{}", root.number)));
        assert_eq!(r.partuuid.as_deref(), Some(root.part_guid.as_str()));
        assert_eq!(r.parent, Some(("vda".into(), root.number)));
        assert_eq!(sb.disk_of_dev(&r.dev), Some(dev.join("vda")));
        assert_eq!(sb.disks(), vec![("vda".to_owned(), 0)]);
        fs::remove_dir_all(&t).unwrap();
    }
}
