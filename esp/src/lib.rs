//! Disks and boot partitions without mounting.
//!
//! lifeboat must change the ESP and XBOOTLDR when they are not mounted and the
//! kernel has no `vfat` module (an initrd, a CI runner without loop devices). This
//! crate reads the GPT of a whole disk (image file or block device) with the `gpt`
//! crate, checking both headers and both partition arrays itself; opens a FAT
//! volume on a partition window with `fatfs`; and offers one [`Volume`] trait over
//! that FAT backend, a mounted directory, and an in-memory volume for tests, with
//! crash-safe file replacement (temporary name, flush, rename over). [`blockdev`]
//! is the one scan of the system's block devices, [`stack`] the device-mapper
//! layers under one of them; [`discover`] finds the boot
//! disk and its partitions on a live system. The crate never mounts
//! anything, prints nothing and exits nothing: it returns typed [`Error`]s.

pub mod blockdev;
pub mod clock;
pub mod discover;
pub mod disk;
pub mod fat;
pub mod fatcheck;
pub(crate) mod fatraw;
pub mod fatwrite;
pub mod hibernation;
pub mod imagelock;
pub mod mem;
pub mod mounted;
pub mod record;
pub mod stack;
pub mod target;
pub mod volume;
pub mod window;

pub use disk::{Disk, PartitionInfo, PartitionKind};
pub use target::{open_target, Target};
pub use volume::{DirEntry, Space, Volume};

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong below lifeboat's boot management.
#[derive(Debug)]
pub enum Error {
    /// An I/O error on a named file, device or volume path.
    Io { at: String, source: io::Error },
    /// The disk's partition table is unusable.
    Gpt { disk: PathBuf, why: String },
    /// A partition entry is inconsistent (past the end, overlapping, ...).
    Partition { disk: PathBuf, number: u32, why: String },
    /// A wanted partition is not on the disk.
    NoPartition { disk: PathBuf, what: String },
    /// A FAT volume is damaged or not FAT.
    Fat { volume: String, why: String },
    /// A path does not exist on a volume.
    NotFound { volume: String, path: String },
    /// Not enough free space.
    NoSpace { volume: String, need: u64, free: u64 },
    /// A request that cannot work (bad size, bad name, ...).
    Invalid(String),
    /// A write to a FAT volume whose check at open found damage it does not
    /// repair: the volume is read, never written, until it is mended.
    Damaged { volume: String, damage: Vec<fatcheck::Damage> },
    /// The stack of devices under `device` (device-mapper, md) cannot be walked:
    /// a cycle, an absurd depth, a layer with nothing below.
    Stack { device: String, why: String },
    /// Another process holds the image's or device's lock ([`imagelock`]):
    /// it is writing it; `waited` is how many seconds this one waited.
    Busy { image: PathBuf, waited: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(at: impl Into<String>, source: io::Error) -> Self {
        Error::Io { at: at.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { at, source } => write!(f, "{at}: {source}"),
            Error::Gpt { disk, why } => write!(f, "{}: GPT: {why}", disk.display()),
            Error::Partition { disk, number, why } => {
                write!(f, "{}: partition {number}: {why}", disk.display())
            }
            Error::NoPartition { disk, what } if what.bytes().all(|b| b.is_ascii_digit()) => write!(
                f,
                "{}: no partition number {what} on this disk (`lifeboat disk ls {}` lists them)",
                disk.display(),
                disk.display()
            ),
            Error::NoPartition { disk, what } => write!(
                f,
                "{}: no {what} partition on this disk (`lifeboat disk ls {}` lists them)",
                disk.display(),
                disk.display()
            ),
            Error::Fat { volume, why } => write!(f, "{volume}: FAT: {why}"),
            Error::NotFound { volume, path } => write!(f, "{volume}: {path}: not found"),
            Error::NoSpace { volume, need, free } => {
                write!(f, "{volume}: not enough space: {need} bytes needed, {free} bytes free")
            }
            Error::Invalid(why) => write!(f, "{why}"),
            Error::Stack { device, why } => write!(f, "the devices under {device}: {why}"),
            Error::Busy { image, waited: 0 } => write!(
                f,
                "{}: busy: another process is writing it (it holds its lock); try again, or give --wait SECONDS",
                image.display()
            ),
            Error::Busy { image, waited } => {
                write!(f, "{}: busy: another process still held its lock after {waited} seconds", image.display())
            }
            Error::Damaged { volume, damage } => {
                let what: Vec<String> = damage.iter().map(|d| d.to_string()).collect();
                if damage.iter().all(|d| matches!(d, fatcheck::Damage::NotChecked { .. })) {
                    return write!(
                        f,
                        "{volume}: the FAT volume could not be checked, so nothing was written to it: {}",
                        what.join("; ")
                    );
                }
                write!(
                    f,
                    "{volume}: the FAT volume is damaged, so nothing was written to it: {}; mend it with \
                     `lifeboat disk check {volume} --repair` (or `fsck.fat -a` on the unmounted partition)",
                    what.join("; ")
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// Parses sizes like `512M`, `1G`, `300MiB`, `4096`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512M"), Some(512 << 20));
        assert_eq!(super::parse_size("1GiB"), Some(1 << 30));
        assert_eq!(super::parse_size("4096"), Some(4096));
        assert_eq!(super::parse_size("12Q"), None);
        assert_eq!(super::parse_size("99999999999999999999T"), None);
    }
}
