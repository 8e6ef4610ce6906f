//! Opening what the user named with `--esp`/`--boot` or `disk ... IMG[:PART]`: a
//! mounted directory, a partition (block device or bare FAT image), or a whole disk
//! (image or block device, the partition then found by its GPT type).

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

/// Opens `spec` as a boot volume; `want` picks the partition on a whole disk.
pub fn open_target(spec: &str, want: PartitionKind, writable: bool) -> Result<Target> {
    let (path, part) = split_spec(spec);
    let p = Path::new(path);
    let meta = fs::metadata(p).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if part.is_some() {
            return Err(Error::Invalid(format!("{spec}: a directory has no partitions")));
        }
        return Ok(Target {
            volume: Box::new(DirVolume::open(p)?),
            location: path.to_owned(),
            disk: None,
            part_uuid: None,
            notes: vec![],
        });
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
            let name = format!("{path}:{}", info.number);
            let fat = FatVolume::open(disk.window(&info), &name)?;
            let location = format!("{name} ({}, {}, PARTUUID {})", info.kind.as_str(), fat.fat_type(), info.part_guid);
            Ok(Target {
                volume: Box::new(fat),
                location,
                disk: Some(p.to_owned()),
                part_uuid: Some(info.part_guid.clone()),
                notes: disk.notes.clone(),
            })
        }
        Err(gpt_err) => {
            if part.is_some() {
                return Err(gpt_err);
            }
            // No GPT: a partition device or a bare FAT image.
            let f = fs::OpenOptions::new().read(true).write(writable).open(p).map_err(|e| Error::io(path, e))?;
            let len = device_size(&f).map_err(|e| Error::io(path, e))?;
            let backing: Arc<dyn Backing> = Arc::new(f);
            let w = Window::new(backing, 0, len, writable);
            let fat = FatVolume::open(w, path).map_err(|fat_err| match fat_err {
                Error::Fat { why, .. } => {
                    Error::Invalid(format!("{path}: neither a GPT disk ({gpt_err}) nor a FAT volume ({why})"))
                }
                e => e,
            })?;
            let location = format!("{path} ({})", fat.fat_type());
            Ok(Target { volume: Box::new(fat), location, disk: None, part_uuid: None, notes: vec![] })
        }
    }
}
