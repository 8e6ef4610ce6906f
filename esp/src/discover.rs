//! Finding the boot disk on a live system: the block device under a mount point
//! (from `/proc/self/mountinfo` and `/sys/dev/block`), the whole disk it belongs to,
//! and whether a partition is mounted somewhere already. lifeboat never mounts the
//! ESP: an existing mount is used, otherwise the partition is opened directly.
//!
//! The `/proc` and `/sys` roots are parameters so tests run on fake trees.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One line of mountinfo, the fields lifeboat needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        if f.len() < sep + 3 || sep < 5 {
            continue;
        }
        let Some((ma, mi)) = f[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        out.push(Mount {
            major,
            minor,
            mount_point: PathBuf::from(unescape(f[4])),
            fstype: f[sep + 1].to_owned(),
            source: unescape(f[sep + 2]),
        });
    }
    out
}

/// The mount holding `path` (longest mount-point prefix; later mounts win).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best
}

/// Block devices seen through a sysfs root.
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

impl SysBlock {
    fn read(&self, p: &Path) -> Option<String> {
        fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
    }

    /// The whole disk behind device `major:minor`, following one level of
    /// device-mapper slaves (LUKS, LVM) to the partition they sit on.
    pub fn disk_of(&self, major: u32, minor: u32) -> Result<DiskOf> {
        let link = self.sys.join(format!("dev/block/{major}:{minor}"));
        let real = fs::canonicalize(&link).map_err(|e| Error::io(link.display().to_string(), e))?;
        let slaves = real.join("slaves");
        if let Ok(rd) = fs::read_dir(&slaves) {
            if let Some(s) = rd.flatten().next() {
                if let Some(dev) = self.read(&s.path().join("dev")) {
                    if let Some((a, b)) = dev.split_once(':') {
                        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                            return self.disk_of(a, b);
                        }
                    }
                }
            }
        }
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(n) = self.read(&real.join("partition")).and_then(|s| s.parse::<u32>().ok()) {
            let parent = real.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            let parent =
                parent.ok_or_else(|| Error::Invalid(format!("{}: partition without a disk", real.display())))?;
            return Ok(DiskOf { disk: self.dev.join(parent), partition: Some(n) });
        }
        Ok(DiskOf { disk: self.dev.join(name), partition: None })
    }

    /// `major:minor` of partition `n` of `disk` (by sysfs), if it exists.
    pub fn partition_devnum(&self, disk: &Path, n: u32) -> Option<(u32, u32, PathBuf)> {
        let dname = disk.file_name()?.to_string_lossy().into_owned();
        let dir = self.sys.join("class/block").join(&dname);
        for e in fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if self.read(&p.join("partition")).and_then(|s| s.parse::<u32>().ok()) == Some(n) {
                let dev = self.read(&p.join("dev"))?;
                let (a, b) = dev.split_once(':')?;
                let pname = e.file_name().to_string_lossy().into_owned();
                return Some((a.parse().ok()?, b.parse().ok()?, self.dev.join(pname)));
            }
        }
        None
    }

    /// Whole disks (not partitions, not loop/ram/zram), for the rescue shell.
    pub fn disks(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.sys.join("block")) else {
            return out;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("loop") || n.starts_with("ram") || n.starts_with("zram") {
                continue;
            }
            let sectors = self.read(&e.path().join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            out.push((n, sectors * 512));
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
        30 22 259:1 / /boot/efi rw shared:5 - vfat /dev/nvme0n1p1 rw,fmask=0077\n\
        31 22 0:5 / /my\\040dir rw - tmpfs tmpfs rw\n\
        garbage line\n";

    #[test]
    fn mountinfo_parsed() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/boot/efi"));
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[2].mount_point, PathBuf::from("/my dir"));
        assert_eq!(mount_of(&m, Path::new("/boot/efi/EFI")).unwrap().minor, 1);
        assert_eq!(mount_of(&m, Path::new("/usr")).unwrap().minor, 2);
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
}

/// Where the boot partitions of a live system are, as specs `open_target` accepts:
/// the mount point when mounted, else `DISK:N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPartitions {
    pub disk: PathBuf,
    pub esp: Option<String>,
    pub xbootldr: Option<String>,
    /// PARTUUID of the partition holding `root`.
    pub root_partuuid: Option<String>,
}

/// Finds the disk holding the filesystem mounted at (or containing) `root`, and its
/// ESP and XBOOTLDR, using existing mounts where there are any.
pub fn boot_partitions(root: &Path, proc_mountinfo: &Path, sys: &SysBlock) -> Result<BootPartitions> {
    let text = fs::read_to_string(proc_mountinfo).map_err(|e| Error::io(proc_mountinfo.display().to_string(), e))?;
    let mounts = parse_mountinfo(&text);
    let m = mount_of(&mounts, root).ok_or_else(|| Error::Invalid(format!("no mount holds {}", root.display())))?;
    let d = sys.disk_of(m.major, m.minor)?;
    let disk = crate::disk::Disk::open(&d.disk, false)?;
    let root_partuuid =
        d.partition.and_then(|n| disk.partitions.iter().find(|p| p.number == n)).map(|p| p.part_guid.clone());
    let spec_for = |kind: crate::disk::PartitionKind| -> Option<String> {
        let p = disk.find(kind)?;
        if let Some((ma, mi, _)) = sys.partition_devnum(&d.disk, p.number) {
            // Prefer an existing mount, but only a real FAT one of that device.
            if let Some(mp) = mounts.iter().find(|x| x.major == ma && x.minor == mi && x.fstype == "vfat") {
                return Some(mp.mount_point.display().to_string());
            }
        }
        Some(format!("{}:{}", d.disk.display(), p.number))
    };
    Ok(BootPartitions {
        esp: spec_for(crate::disk::PartitionKind::Esp),
        xbootldr: spec_for(crate::disk::PartitionKind::Xbootldr),
        disk: d.disk.clone(),
        root_partuuid,
    })
}
