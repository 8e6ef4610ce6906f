//! Finding the boot disk on a live system: the block device under a mount point
//! (from `/proc/self/mountinfo`), the whole disk it belongs to (by
//! [`crate::blockdev`], through device-mapper layers by [`crate::stack`]), and whether a partition is mounted somewhere already. lifeboat never mounts the
//! ESP: an existing mount is used, otherwise the partition is opened directly.
//!
//! The `/proc` and `/sys` roots are parameters so tests run on fake trees.

use std::fs;
use std::path::{Path, PathBuf};

pub use crate::blockdev::{DiskOf, SysBlock};
use crate::disk::{Disk, PartitionKind};
pub use crate::stack::Stack;
use crate::{Error, Result};
use lifeboat_fs::shown::shown_path;

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
}

/// The filesystem mounted at (or containing) a path, as the block layer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootDevice {
    /// The device node it is mounted from, by kernel name (`/dev/nvme0n1p2`,
    /// `/dev/dm-1`), for its superblock.
    pub dev: PathBuf,
    /// PARTUUID of its partition, when the filesystem is on the partition
    /// itself (not on device-mapper layers above it).
    pub partuuid: Option<String>,
    /// The devices under it: the layers of a stacked root, and what they sit on.
    pub stack: Stack,
    /// What the user should hear about the layers (a LUKS header that
    /// disagrees with its mapping, one that could not be read).
    pub notes: Vec<String>,
}

/// Where the boot partitions of a live system are, as specs `open_target` accepts:
/// the mount point when mounted, else `DISK:N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPartitions {
    pub disk: PathBuf,
    pub esp: Option<String>,
    pub xbootldr: Option<String>,
    /// The filesystem at the path asked about.
    pub root: RootDevice,
    /// Which disk was taken, when the root sits on several.
    pub notes: Vec<String>,
}

/// The mounts, and the one holding `root`.
fn mount_holding(root: &Path, proc_mountinfo: &Path) -> Result<(Vec<Mount>, Mount)> {
    let text = fs::read_to_string(proc_mountinfo).map_err(|e| Error::io(proc_mountinfo.display().to_string(), e))?;
    let mounts = parse_mountinfo(&text);
    let m =
        mount_of(&mounts, root).ok_or_else(|| Error::Invalid(format!("no mount holds {}", root.display())))?.clone();
    Ok((mounts, m))
}

/// The partition's PARTUUID when `stack` is a plain partition, from `disk`
/// (its disk's GPT, read here when not given).
fn plain_partuuid(stack: &Stack, disk: Option<&Disk>) -> Option<String> {
    let b = stack.bottoms.first().filter(|_| stack.is_plain())?;
    let n = b.disk.partition?;
    let opened;
    let disk = match disk {
        Some(d) => d,
        None => {
            opened = Disk::open(&b.disk.disk, false).ok()?;
            &opened
        }
    };
    disk.partitions.iter().find(|p| p.number == n).map(|p| p.part_guid.clone())
}

fn root_device_of(stack: Stack, sys: &SysBlock, disk: Option<&Disk>) -> RootDevice {
    RootDevice {
        dev: sys.dev.join(&stack.top),
        partuuid: plain_partuuid(&stack, disk),
        notes: stack.layers.iter().flat_map(|l| l.notes.iter().cloned()).collect(),
        stack,
    }
}

/// The device holding the filesystem mounted at (or containing) `root`, and
/// the devices under it; whichever disk it is on, GPT or not.
pub fn root_device(root: &Path, proc_mountinfo: &Path, sys: &SysBlock) -> Result<RootDevice> {
    let (_, m) = mount_holding(root, proc_mountinfo)?;
    Ok(root_device_of(sys.stack_of(m.major, m.minor)?, sys, None))
}

/// Finds the disk holding the filesystem mounted at (or containing) `root`, and its
/// ESP and XBOOTLDR, using existing mounts where there are any. A root on
/// device-mapper layers is followed down to the disks underneath; when there are
/// several (an LVM volume group over two disks), the first that has an ESP is
/// the boot disk.
pub fn boot_partitions(root: &Path, proc_mountinfo: &Path, sys: &SysBlock) -> Result<BootPartitions> {
    let (mounts, m) = mount_holding(root, proc_mountinfo)?;
    let stack = sys.stack_of(m.major, m.minor)?;
    let mut notes = Vec::new();
    let (disk_path, disk) = boot_disk(&stack, &mut notes)?;
    let spec_for = |kind: PartitionKind| -> Option<String> {
        let p = disk.find(kind)?;
        if let Some((ma, mi, _)) = sys.partition_devnum(&disk_path, p.number) {
            // Prefer an existing mount, but only a real FAT one of that device.
            if let Some(mp) = mounts.iter().find(|x| x.major == ma && x.minor == mi && x.fstype == "vfat") {
                return Some(mp.mount_point.display().to_string());
            }
        }
        Some(format!("{}:{}", disk_path.display(), p.number))
    };
    Ok(BootPartitions {
        esp: spec_for(PartitionKind::Esp),
        xbootldr: spec_for(PartitionKind::Xbootldr),
        root: root_device_of(stack, sys, Some(&disk)),
        disk: disk_path,
        notes,
    })
}

/// The disk under a root's stack whose ESP boots it: the only one, or of
/// several the first that has an ESP (else the first whose GPT reads). Which
/// one was taken, and why, goes into `notes` when there was a choice.
fn boot_disk(stack: &Stack, notes: &mut Vec<String>) -> Result<(PathBuf, Disk)> {
    let disks = stack.disks();
    let mut opened: Vec<(PathBuf, Disk)> = Vec::new();
    let mut first_err = None;
    for d in &disks {
        match Disk::open(d, false) {
            Ok(g) => opened.push((d.clone(), g)),
            Err(e) if disks.len() > 1 => {
                notes.push(format!(
                    "{}: its partition table cannot be read ({e}); not a boot disk candidate",
                    shown_path(d)
                ));
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    let with_esp = opened.iter().position(|(_, g)| g.find(PartitionKind::Esp).is_some());
    let Some(at) = with_esp.or((!opened.is_empty()).then_some(0)) else {
        return Err(first_err.unwrap_or_else(|| Error::Stack {
            device: stack.top.clone(),
            why: "no partition or disk underneath".to_owned(),
        }));
    };
    let chosen = opened.swap_remove(at);
    if disks.len() > 1 {
        let all: Vec<String> = disks.iter().map(|d| shown_path(d)).collect();
        notes.push(match with_esp {
            Some(_) => format!(
                "the root ({}) sits on {} disks ({}); the boot disk is {}, which has an ESP",
                stack.describe(),
                disks.len(),
                all.join(", "),
                shown_path(&chosen.0)
            ),
            None => format!(
                "the root ({}) sits on {} disks ({}), none with an ESP; {} is taken as the boot disk",
                stack.describe(),
                disks.len(),
                all.join(", "),
                shown_path(&chosen.0)
            ),
        });
    }
    Ok(chosen)
}
