//! Opening what the user named with `--esp`/`--boot` or `disk ... IMG[:PART]`: a
//! mounted directory (which must be a FAT filesystem: the firmware reads nothing
//! else), a partition (block device or bare FAT image), or a whole disk (image or
//! block device, the partition then found by its GPT type).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{device_size, Disk, PartitionKind};
use crate::fat::FatVolume;
use crate::mounted::DirVolume;
use crate::volume::Volume;
use crate::window::{Backing, Window};
use crate::{Error, Result};

/// An opened boot volume and where it is.
pub struct Target {
    pub volume: Box<dyn Volume>,
    /// Human description: `/boot/efi`, `disk.img:1 (esp, FAT32)`, ...
    pub location: String,
    /// The disk it is on, when known (for PARTUUIDs and sibling partitions).
    pub disk: Option<PathBuf>,
    pub part_uuid: Option<String>,
    pub notes: Vec<String>,
}

/// Set to `1` to accept any directory as `--esp`/`--boot`, FAT or not (for
/// tests that sync into a plain directory).
pub const ANY_DIR_ENV: &str = "LIFEBOAT_ESP_ANY_DIR";

/// Refuses a directory that is not a FAT filesystem (`statfs`: `MSDOS_SUPER_MAGIC`,
/// which the kernel's vfat and msdos report): entries written anywhere else are
/// entries the firmware never sees, as `bootctl` refuses them too.
fn require_fat_dir(p: &Path, any_dir: bool) -> Result<()> {
    if any_dir {
        return Ok(());
    }
    let st = nix::sys::statfs::statfs(p)
        .map_err(|e| Error::io(p.display().to_string(), std::io::Error::from_raw_os_error(e as i32)))?;
    let fs_type = st.filesystem_type();
    if fs_type == nix::sys::statfs::MSDOS_SUPER_MAGIC {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{}: not a FAT filesystem (statfs type {:#x}): the firmware reads only FAT, so nothing written there \
         would boot; give the mounted ESP, its partition or its disk ({ANY_DIR_ENV}=1 accepts any directory, for tests)",
        p.display(),
        fs_type.0
    )))
}

fn any_dir_allowed() -> bool {
    std::env::var_os(ANY_DIR_ENV).is_some_and(|v| v == "1")
}

/// Splits `IMG:PART` (PART a number, `esp`, `xbootldr`, `root`) when IMG exists.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    match spec.rfind(':') {
        Some(i) if i > 0 => (&spec[..i], Some(&spec[i + 1..])),
        _ => (spec, None),
    }
}

/// Where the kernel has the block device `major:minor` mounted, if anywhere:
/// (mount point, filesystem type).
fn mounted_at(major: u32, minor: u32, mountinfo: &Path) -> Option<(PathBuf, String)> {
    let text = fs::read_to_string(mountinfo).ok()?;
    crate::discover::parse_mountinfo(&text)
        .into_iter()
        .find(|m| m.major == major && m.minor == minor)
        .map(|m| (m.mount_point, m.fstype))
}

/// A partition the kernel has mounted is never written behind its back: the
/// kernel's cached FAT would overwrite lifeboat's changes, or the reverse. A FAT
/// mount is used instead of the raw device; any other mount is refused.
fn through_mount(spec: &str, devnum: Option<(u32, u32)>, mountinfo: &Path) -> Result<Option<Target>> {
    let Some((major, minor)) = devnum else { return Ok(None) };
    let Some((at, fstype)) = mounted_at(major, minor, mountinfo) else { return Ok(None) };
    if fstype != "vfat" {
        return Err(Error::Invalid(format!(
            "{spec} is mounted at {} as {fstype}: lifeboat does not write to a mounted partition",
            at.display()
        )));
    }
    let mut volume = DirVolume::open(&at)?;
    let mut notes =
        vec![format!("{spec} is mounted at {}: writing through the mount, not the raw partition", at.display())];
    notes.extend(settle_mounted(&mut volume, true)?);
    Ok(Some(Target {
        volume: Box::new(volume),
        location: at.display().to_string(),
        disk: None,
        part_uuid: None,
        notes,
    }))
}

/// What a FAT volume's open does with interrupted replacements, for a mounted
/// one: completed when opened for writing (before anything plans from it),
/// named when opened to read.
fn settle_mounted(v: &mut DirVolume, writable: bool) -> Result<Vec<String>> {
    let name = v.describe();
    if writable {
        return Ok(v.complete_interrupted()?.into_iter().map(|d| format!("{name}: {d}")).collect());
    }
    Ok(v.interrupted()?
        .into_iter()
        .map(|p| format!("{name}: the next write completes the interrupted replacement left as {p}"))
        .collect())
}

/// Opens `spec` as a boot volume; `want` picks the partition on a whole disk.
pub fn open_target(spec: &str, want: PartitionKind, writable: bool) -> Result<Target> {
    open_target_with(spec, want, writable, &crate::blockdev::SysBlock::default(), Path::new("/proc/self/mountinfo"))
}

/// [`open_target`] with the sysfs and mount table to check mounts against.
pub fn open_target_with(
    spec: &str,
    want: PartitionKind,
    writable: bool,
    sys: &crate::blockdev::SysBlock,
    mountinfo: &Path,
) -> Result<Target> {
    let (path, part) = split_spec(spec);
    let p = Path::new(path);
    let meta = fs::metadata(p).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if part.is_some() {
            return Err(Error::Invalid(format!("{spec}: a directory has no partitions")));
        }
        require_fat_dir(p, any_dir_allowed())?;
        let mut volume = DirVolume::open(p)?;
        let notes = settle_mounted(&mut volume, writable)?;
        return Ok(Target { volume: Box::new(volume), location: path.to_owned(), disk: None, part_uuid: None, notes });
    }
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return Err(Error::Invalid(format!("{path}: not a directory, image file or block device")));
    }
    match Disk::open(p, writable) {
        Ok(disk) => {
            let info = match part {
                Some(s) => disk.select(s)?.clone(),
                None => disk
                    .find(want)
                    .ok_or_else(|| Error::NoPartition { disk: p.to_owned(), what: want.as_str().into() })?
                    .clone(),
            };
            if writable && meta.file_type().is_block_device() {
                let devnum = sys.partition_devnum(p, info.number).map(|(a, b, _)| (a, b));
                if let Some(mut t) = through_mount(spec, devnum, mountinfo)? {
                    t.disk = Some(p.to_owned());
                    t.part_uuid = Some(info.part_guid.clone());
                    return Ok(t);
                }
            }
            let name = format!("{path}:{}", info.number);
            let fat = FatVolume::open(disk.window(&info), &name)?;
            let location = format!("{name} ({}, {}, PARTUUID {})", info.kind.as_str(), fat.fat_type(), info.part_guid);
            let mut notes = disk.notes.clone();
            notes.extend(fat.reconcile_notes());
            Ok(Target {
                volume: Box::new(fat),
                location,
                disk: Some(p.to_owned()),
                part_uuid: Some(info.part_guid.clone()),
                notes,
            })
        }
        Err(gpt_err) => {
            if part.is_some() {
                return Err(gpt_err);
            }
            // No GPT: a partition device or a bare FAT image.
            if writable && meta.file_type().is_block_device() {
                use std::os::unix::fs::MetadataExt;
                let rdev = meta.rdev();
                let devnum = Some((nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32));
                if let Some(t) = through_mount(spec, devnum, mountinfo)? {
                    return Ok(t);
                }
            }
            let f = crate::imagelock::open_image(p, writable)?;
            let len = device_size(&f).map_err(|e| Error::io(path, e))?;
            let backing: Arc<dyn Backing> = f;
            let w = Window::new(backing, 0, len, writable);
            let fat = FatVolume::open(w, path).map_err(|fat_err| match fat_err {
                Error::Fat { why, .. } => {
                    Error::Invalid(format!("{path}: neither a GPT disk ({gpt_err}) nor a FAT volume ({why})"))
                }
                e => e,
            })?;
            let location = format!("{path} ({})", fat.fat_type());
            let notes = fat.reconcile_notes();
            Ok(Target { volume: Box::new(fat), location, disk: None, part_uuid: None, notes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mounted_partition_is_written_through_its_mount_or_refused() {
        let t = std::env::temp_dir().join(format!("lb-target-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        fs::create_dir_all(t.join("efi")).unwrap();
        let mi = t.join("mountinfo");
        fs::write(
            &mi,
            format!(
                "30 22 259:1 / {} rw - vfat /dev/nvme0n1p1 rw\n31 22 259:3 / /data rw - ext4 /dev/nvme0n1p3 rw\n",
                t.join("efi").display()
            ),
        )
        .unwrap();
        let got = through_mount("/dev/nvme0n1p1", Some((259, 1)), &mi).unwrap().expect("uses the mount");
        assert_eq!(got.location, t.join("efi").display().to_string());
        assert!(got.notes[0].contains("writing through the mount"));
        let e = through_mount("/dev/nvme0n1p3", Some((259, 3)), &mi).err().unwrap().to_string();
        assert!(e.contains("mounted at /data as ext4"), "{e}");
        assert!(through_mount("/dev/nvme0n1p2", Some((259, 2)), &mi).unwrap().is_none());
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_directory_must_be_fat() {
        // The temporary directory is not FAT on any machine these tests run on
        // (tmpfs, ext4, overlay); the override accepts it.
        let t = std::env::temp_dir();
        let e = require_fat_dir(&t, false).unwrap_err().to_string();
        assert!(e.contains("not a FAT filesystem") && e.contains(ANY_DIR_ENV), "{e}");
        require_fat_dir(&t, true).unwrap();
    }
}
