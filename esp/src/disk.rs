//! Whole disks: the GPT, read with the `gpt` crate after lifeboat has checked both
//! headers and both partition arrays itself (the crate does not check array CRCs),
//! and disk-image creation.
//!
//! When the primary header or its array is damaged and the backup is intact, the
//! primary sectors are masked from the `gpt` crate so it reads the backup, and the
//! disk carries a note saying so. Every partition is checked against the usable
//! range, the disk's size and its neighbours before anyone may open it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_codec::Reader;

use crate::window::{Backing, Window};
use crate::{Error, Result};
use lifeboat_codec::crc32::crc32;

pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const XBOOTLDR_TYPE: &str = "bc13c2ff-59e6-4262-a352-b275fd6f7172";
pub const ROOT_X86_64_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

/// What a partition is for, by its type GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    Esp,
    Xbootldr,
    RootX86_64,
    Other,
}

impl PartitionKind {
    pub fn from_type(guid: &str) -> Self {
        match guid.to_ascii_lowercase().as_str() {
            ESP_TYPE => PartitionKind::Esp,
            XBOOTLDR_TYPE => PartitionKind::Xbootldr,
            ROOT_X86_64_TYPE => PartitionKind::RootX86_64,
            _ => PartitionKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PartitionKind::Esp => "esp",
            PartitionKind::Xbootldr => "xbootldr",
            PartitionKind::RootX86_64 => "root-x86-64",
            PartitionKind::Other => "other",
        }
    }
}

/// One partition of a GPT disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based entry number, as Linux numbers partition devices.
    pub number: u32,
    pub type_guid: String,
    /// PARTUUID, lowercase.
    pub part_guid: String,
    pub name: String,
    pub attributes: u64,
    pub first_lba: u64,
    pub last_lba: u64,
    /// Byte offset and length.
    pub start: u64,
    pub size: u64,
    pub kind: PartitionKind,
}

/// An opened disk (image file or block device).
pub struct Disk {
    pub path: PathBuf,
    file: Arc<File>,
    pub size: u64,
    pub sector: u64,
    pub disk_guid: String,
    pub partitions: Vec<PartitionInfo>,
    /// Things the user should know (e.g. the backup GPT was used).
    pub notes: Vec<String>,
    writable: bool,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).field("size", &self.size).finish()
    }
}

/// The fields of a GPT header lifeboat checks before trusting it.
#[derive(Debug, Clone)]
struct RawHeader {
    part_start: u64,
    num_parts: u32,
    part_size: u32,
    first_usable: u64,
    last_usable: u64,
}

/// Reads and checks the header at `lba` and its partition array.
fn check_header(f: &File, sector: u64, lba: u64, total_sectors: u64) -> std::result::Result<RawHeader, String> {
    let mut hdr = vec![0u8; sector as usize];
    let at = lba.checked_mul(sector).ok_or("header LBA out of range")?;
    f.read_exact_at(&mut hdr, at).map_err(|e| format!("cannot read LBA {lba}: {e}"))?;
    let short = |e: lifeboat_codec::Short| e.to_string();
    let mut r = Reader::new(&hdr);
    if r.take(8, "signature").map_err(short)? != b"EFI PART" {
        return Err("no GPT signature".into());
    }
    r.skip(4, "revision").map_err(short)?;
    let hsize = r.u32_le("header size").map_err(short)? as usize;
    if !(92..=sector as usize).contains(&hsize) {
        return Err(format!("header size {hsize} invalid"));
    }
    let stored = r.u32_le("header CRC").map_err(short)?;
    let mut h = hdr[..hsize].to_vec();
    h[16..20].fill(0);
    if crc32(&h) != stored {
        return Err("header CRC mismatch".into());
    }
    r.skip(4, "reserved").map_err(short)?;
    let my_lba = r.u64_le("header LBA").map_err(short)?;
    if my_lba != lba {
        return Err(format!("header claims to be at LBA {my_lba}, found at {lba}"));
    }
    r.skip(8, "alternate LBA").map_err(short)?;
    let first_usable = r.u64_le("first usable LBA").map_err(short)?;
    let last_usable = r.u64_le("last usable LBA").map_err(short)?;
    r.skip(16, "disk GUID").map_err(short)?;
    let part_start = r.u64_le("partition array LBA").map_err(short)?;
    let num_parts = r.u32_le("partition entries").map_err(short)?;
    let part_size = r.u32_le("partition entry size").map_err(short)?;
    let parts_crc = r.u32_le("partition array CRC").map_err(short)?;
    if !(128..=4096).contains(&part_size) || part_size % 8 != 0 {
        return Err(format!("partition entry size {part_size} invalid"));
    }
    if num_parts == 0 || num_parts > 4096 {
        return Err(format!("{num_parts} partition entries is implausible"));
    }
    if first_usable > last_usable || last_usable >= total_sectors {
        return Err(format!(
            "usable range {first_usable}..{last_usable} does not fit a disk of {total_sectors} sectors (truncated?)"
        ));
    }
    let array_len = num_parts as u64 * part_size as u64;
    let array_end = part_start.checked_mul(sector).and_then(|a| a.checked_add(array_len));
    if part_start < 2 || array_end.is_none_or(|e| e > total_sectors.saturating_mul(sector)) {
        return Err("partition array outside the disk".into());
    }
    let mut arr = vec![0u8; array_len as usize];
    f.read_exact_at(&mut arr, part_start * sector).map_err(|e| format!("cannot read partition array: {e}"))?;
    if crc32(&arr) != parts_crc {
        return Err("partition array CRC mismatch".into());
    }
    Ok(RawHeader { part_start, num_parts, part_size, first_usable, last_usable })
}

/// A read/seek view of the disk that shows zeros in place of a damaged primary
/// header, so the `gpt` crate falls back to the backup.
#[derive(Debug)]
struct Masked<'a> {
    file: &'a File,
    pos: u64,
    mask: Option<(u64, u64)>,
}

impl Read for Masked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = FileExt::read_at(self.file, buf, self.pos)?;
        if let Some((a, b)) = self.mask {
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                let p = self.pos + i as u64;
                if p >= a && p < b {
                    *byte = 0;
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}
impl Write for Masked<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Seek for Masked<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let len = if len == 0 { device_size(self.file).unwrap_or(0) } else { len };
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::End(d) => len.checked_add_signed(d).ok_or_else(|| io::Error::other("seek"))?,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(|| io::Error::other("seek"))?,
        };
        Ok(self.pos)
    }
}

/// Size of a file or block device in bytes.
pub fn device_size(f: &File) -> io::Result<u64> {
    let mut g = f;
    let end = g.seek(SeekFrom::End(0))?;
    g.seek(SeekFrom::Start(0))?;
    Ok(end)
}

fn guid_lower(u: &uuid::Uuid) -> String {
    u.as_hyphenated().to_string().to_ascii_lowercase()
}

impl Disk {
    /// Opens a disk and reads its GPT.
    pub fn open(path: &Path, writable: bool) -> Result<Disk> {
        let file = crate::imagelock::open_image(path, writable)?;
        let size = device_size(&file).map_err(|e| Error::io(path.display().to_string(), e))?;
        let gerr = |why: String| Error::Gpt { disk: path.to_owned(), why };
        if size == 0 {
            return Err(gerr("the disk is empty (0 bytes)".into()));
        }
        let mut sector = 512u64;
        let mut sig = [0u8; 8];
        for s in [512u64, 4096] {
            if file.read_exact_at(&mut sig, s).is_ok() && &sig == b"EFI PART" {
                sector = s;
                break;
            }
        }
        let total = size / sector;
        if total < 34 {
            return Err(gerr(format!("{size} bytes is too small to hold a GPT")));
        }
        let primary = check_header(&file, sector, 1, total);
        let backup = check_header(&file, sector, total - 1, total);
        let mut notes = Vec::new();
        let (hdr, mask) = match (&primary, &backup) {
            (Ok(h), Ok(_)) => (h.clone(), None),
            (Ok(h), Err(b)) => {
                notes.push(format!("backup GPT header is damaged ({b}); the primary is intact"));
                (h.clone(), None)
            }
            (Err(p), Ok(h)) => {
                notes.push(format!("primary GPT header is damaged ({p}); using the backup"));
                (h.clone(), Some((sector, 2 * sector)))
            }
            (Err(p), Err(b)) => {
                return Err(gerr(format!("no usable GPT: primary: {p}; backup: {b}")));
            }
        };
        let lb = if sector == 4096 { gpt::disk::LogicalBlockSize::Lb4096 } else { gpt::disk::LogicalBlockSize::Lb512 };
        let g = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open_from_device(Masked { file: &file, pos: 0, mask })
            .map_err(|e| gerr(e.to_string()))?;
        let parts = g.partitions().clone();
        let disk_guid = guid_lower(g.guid());
        drop(g);
        if parts.len() > hdr.num_parts as usize {
            return Err(gerr("more partitions than entries".into()));
        }
        let mut partitions = Vec::new();
        for (&number, p) in &parts {
            if !p.is_used() {
                continue;
            }
            let perr = |why: String| Error::Partition { disk: path.to_owned(), number, why };
            if p.first_lba > p.last_lba {
                return Err(perr(format!("ends (LBA {}) before it starts (LBA {})", p.last_lba, p.first_lba)));
            }
            if p.last_lba >= total {
                return Err(perr(format!("ends at LBA {}, past the end of the disk ({} sectors)", p.last_lba, total)));
            }
            if p.first_lba < hdr.first_usable || p.last_lba > hdr.last_usable {
                return Err(perr(format!(
                    "LBA {}..{} is outside the usable range {}..{}",
                    p.first_lba, p.last_lba, hdr.first_usable, hdr.last_usable
                )));
            }
            let type_guid = guid_lower(&p.part_type_guid.guid);
            partitions.push(PartitionInfo {
                number,
                kind: PartitionKind::from_type(&type_guid),
                type_guid,
                part_guid: guid_lower(&p.part_guid),
                name: p.name.clone(),
                attributes: p.flags,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                start: p.first_lba * sector,
                size: (p.last_lba - p.first_lba + 1) * sector,
            });
        }
        partitions.sort_by_key(|p| p.first_lba);
        for w in partitions.windows(2) {
            if w[1].first_lba <= w[0].last_lba {
                return Err(Error::Partition {
                    disk: path.to_owned(),
                    number: w[1].number,
                    why: format!("overlaps partition {}", w[0].number),
                });
            }
        }
        partitions.sort_by_key(|p| p.number);
        let _ = (hdr.part_start, hdr.part_size);
        Ok(Disk { path: path.to_owned(), file, size, sector, disk_guid, partitions, notes, writable })
    }

    /// The first partition of a kind.
    pub fn find(&self, kind: PartitionKind) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.kind == kind)
    }

    /// A partition by number, `esp`, `xbootldr` or `root`.
    pub fn select(&self, spec: &str) -> Result<&PartitionInfo> {
        let found = match spec.to_ascii_lowercase().as_str() {
            "esp" => self.find(PartitionKind::Esp),
            "xbootldr" | "boot" => self.find(PartitionKind::Xbootldr),
            "root" => self.find(PartitionKind::RootX86_64),
            n => match n.parse::<u32>() {
                Ok(n) => self.partitions.iter().find(|p| p.number == n),
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "{spec:?} names no partition: use a number, esp, xbootldr or root"
                    )))
                }
            },
        };
        found.ok_or_else(|| Error::NoPartition { disk: self.path.clone(), what: spec.to_owned() })
    }

    /// A bounded read/write window over a partition.
    pub fn window(&self, p: &PartitionInfo) -> Window {
        let backing: Arc<dyn Backing> = self.file.clone();
        Window::new(backing, p.start, p.size, self.writable)
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(self.path.display().to_string(), e))
    }
}

/// Sizes for [`create`].
#[derive(Clone, Debug, Default)]
pub struct CreateSpec {
    pub size: u64,
    pub esp: u64,
    pub xbootldr: Option<u64>,
    /// `None`: the rest of the disk; `Some(0)`: no root partition.
    pub root: Option<u64>,
}

const MIB: u64 = 1 << 20;

/// Makes a new GPT disk image at `path` (a regular file; refuses to overwrite a
/// non-empty file) with a protective MBR, 1 MiB-aligned partitions with DPS types
/// and names, and the ESP (and XBOOTLDR) formatted FAT.
pub fn create(path: &Path, spec: &CreateSpec) -> Result<Disk> {
    let inv = |s: String| Error::Invalid(s);
    if spec.size < 8 * MIB {
        return Err(inv(format!("disk size {} is too small (at least 8 MiB)", spec.size)));
    }
    if spec.esp < 2 * MIB {
        return Err(inv("the ESP must be at least 2 MiB".into()));
    }
    let round = |n: u64| n.div_ceil(MIB) * MIB;
    let size = spec.size / MIB * MIB;
    // 1 MiB at the start, and the backup GPT (33 sectors) in the last MiB.
    let mut need = MIB + round(spec.esp) + spec.xbootldr.map(round).unwrap_or(0) + MIB;
    if let Some(r) = spec.root.filter(|&r| r > 0) {
        need += round(r);
    }
    if need > size {
        return Err(inv(format!("partitions need {need} bytes but the disk has {size}")));
    }
    let at = path.display().to_string();
    if let Ok(m) = std::fs::metadata(path) {
        if !m.file_type().is_file() || m.len() > 0 {
            return Err(inv(format!("{at} exists; refusing to overwrite it")));
        }
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(&at, e))?;
    file.set_len(size).map_err(|e| Error::io(&at, e))?;
    let sectors = size / 512;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file).map_err(|e| Error::Gpt { disk: path.to_owned(), why: e.to_string() })?;
    let gerr = |e: gpt::GptError| Error::Gpt { disk: path.to_owned(), why: e.to_string() };
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .map_err(gerr)?;
    g.update_partitions(BTreeMap::new()).map_err(gerr)?;
    let ty = |s: &str| gpt::partition_types::Type {
        guid: uuid::Uuid::parse_str(s).unwrap_or_default(),
        os: gpt::partition_types::OperatingSystem::None,
    };
    let align = Some(MIB / 512);
    g.add_partition("esp", round(spec.esp), ty(ESP_TYPE), 0, align).map_err(gerr)?;
    if let Some(x) = spec.xbootldr {
        g.add_partition("xbootldr", round(x), ty(XBOOTLDR_TYPE), 0, align).map_err(gerr)?;
    }
    let root = match spec.root {
        Some(0) => None,
        Some(r) => Some(round(r)),
        None => {
            let free = g.find_free_sectors().into_iter().map(|(_, len)| len).max().unwrap_or(0) * 512;
            let usable = free.saturating_sub(MIB) / MIB * MIB;
            (usable >= MIB).then_some(usable)
        }
    };
    if let Some(r) = root {
        g.add_partition("root-x86-64", r, ty(ROOT_X86_64_TYPE), 0, align).map_err(gerr)?;
    }
    let file = g.write().map_err(gerr)?;
    file.sync_all().map_err(|e| Error::io(&at, e))?;
    drop(file);
    let disk = Disk::open(path, true)?;
    for p in disk.partitions.clone() {
        let label = match p.kind {
            PartitionKind::Esp => Some(*b"ESP        "),
            PartitionKind::Xbootldr => Some(*b"XBOOTLDR   "),
            _ => None,
        };
        if let Some(label) = label {
            let vid = u32::from_str_radix(&p.part_guid[..8], 16).unwrap_or(0x4c42_4f41);
            crate::fat::format(disk.window(&p), label, vid)
                .map_err(|e| Error::Fat { volume: format!("{at}:{}", p.number), why: e.to_string() })?;
        }
    }
    disk.sync()?;
    Ok(disk)
}
