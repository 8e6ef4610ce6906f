//! A physical volume's on-disk header, as lvm2 writes it. One of the first four
//! 512-byte sectors holds the label: `LABELONE`, its own sector number, a checksum
//! of the rest of the sector, the offset of the PV header and the type `LVM2 001`.
//! The PV header gives the PV's uuid (32 characters), the device size and two
//! zero-terminated lists of (offset, size) areas: data, then metadata. Each
//! metadata area starts with a 512-byte header (checksum, the magic
//! ` LVM2 x[5A%r0N*>`, version 1, its start and size, and `raw_locn` slots); the
//! first slot locates the committed metadata text in the circular buffer that
//! follows the header, where a text that reaches the end of the area continues
//! right after the header. Every checksum is lvm's `calc_crc` and is checked.

use std::fs::File;
use std::os::unix::fs::FileExt;

use lifeboat_codec::{le_u32_at, le_u64_at};

use super::text::MAX_TEXT;
use super::LvmError;

const SECTOR: usize = 512;
/// lvm looks for the label in the first four sectors.
const LABEL_SCAN_SECTORS: u64 = 4;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// The metadata area header magic, `FMTT_MAGIC`.
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// `RAW_LOCN_IGNORED`: this area's copy is deliberately not kept up to date.
const RAW_LOCN_IGNORED: u32 = 1;
/// The seed lvm's checksums start from.
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

/// Reads at absolute offsets: a block device, or bytes in a test.
pub trait ReadAt {
    /// Fills `buf` from `offset`; a read past the end is `UnexpectedEof`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let src = start.checked_add(buf.len()).and_then(|end| self.get(start..end)).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_at(buf, offset)
    }
}

/// lvm2's `calc_crc`: the reflected CRC-32 polynomial (0xEDB88320) run from
/// `initial` (lvm uses [`INITIAL_CRC`]) with no final inversion, so it is not the
/// zlib CRC-32 of the same bytes. Chaining works: `calc_crc(calc_crc(i, a), b)`
/// is the checksum of `a` then `b`, which a wrapped metadata text needs.
pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    lifeboat_codec::crc32::crc32_update(initial, data)
}

/// An (offset, size) area in bytes from the start of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// What one device says about itself as a physical volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvInfo {
    /// The PV uuid as stored: 32 characters, no dashes.
    pub pv_uuid: String,
    pub label_sector: u64,
    /// Bytes, as recorded when the PV was made.
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
    /// The newest committed metadata text among this PV's areas (without the
    /// trailing NUL); `None` when it has no area with metadata (a PV made with
    /// `--metadatacopies 0`, an orphan PV, or every area unreadable).
    pub metadata: Option<Vec<u8>>,
    /// Why no copy could be read, when some area had one that failed its checks.
    pub metadata_problem: Option<String>,
}

fn io(what: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> LvmError {
    move |err| LvmError::Io { what, offset, err }
}

/// Reads the PV label and metadata of a device. `Ok(None)`: no LVM label (not a
/// PV, or a device too small to be one). An error: a label that is there but
/// damaged, or a read that failed.
pub fn read_pv(dev: &(impl ReadAt + ?Sized)) -> Result<Option<PvInfo>, LvmError> {
    let mut first_problem = None;
    for sector in 0..LABEL_SCAN_SECTORS {
        let mut s = [0u8; SECTOR];
        match dev.read_at(&mut s, sector * SECTOR as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io("the label sector", sector * SECTOR as u64)(e)),
        }
        if &s[..8] != LABEL_ID {
            continue;
        }
        match parse_label(sector, &s) {
            Ok(mut pv) => {
                read_metadata(dev, &mut pv)?;
                return Ok(Some(pv));
            }
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    match first_problem {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The label and PV header in one sector.
fn parse_label(sector: u64, s: &[u8; SECTOR]) -> Result<PvInfo, LvmError> {
    let bad = |why: String| LvmError::BadLabel { sector, why };
    let sector_xl = le_u64_at(s, 8).unwrap_or(0);
    if sector_xl != sector {
        return Err(bad(format!("says it is in sector {sector_xl}")));
    }
    let stored = le_u32_at(s, 16).unwrap_or(0);
    // The checksum covers everything after itself: from offset_xl to the end.
    let computed = calc_crc(INITIAL_CRC, &s[20..]);
    if stored != computed {
        return Err(LvmError::Checksum { what: "label", offset: sector * SECTOR as u64, stored, computed });
    }
    if &s[24..32] != LABEL_TYPE {
        return Err(bad(format!("type {:?}, not LVM2 001", String::from_utf8_lossy(&s[24..32]))));
    }
    let off = le_u32_at(s, 20).unwrap_or(0) as usize;
    // The PV header (uuid 32, size 8) must fit after the 32-byte label header.
    if off < 32 || off + 40 > SECTOR {
        return Err(bad(format!("PV header offset {off}")));
    }
    let uuid = &s[off..off + 32];
    if !uuid.iter().all(|c| c.is_ascii_graphic()) {
        return Err(bad("PV uuid is not printable".into()));
    }
    let device_size = le_u64_at(s, off + 32).unwrap_or(0);
    let mut at = off + 40;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let (Some(offset), Some(size)) = (le_u64_at(s, at), le_u64_at(s, at + 8)) else {
                return Err(bad("area list runs past the sector".into()));
            };
            at += 16;
            if offset == 0 && size == 0 {
                break;
            }
            list.push(Area { offset, size });
        }
    }
    let [data_areas, metadata_areas] = lists;
    Ok(PvInfo {
        pv_uuid: String::from_utf8_lossy(uuid).into_owned(),
        label_sector: sector,
        device_size,
        data_areas,
        metadata_areas,
        metadata: None,
        metadata_problem: None,
    })
}

/// Fills in the newest readable metadata copy among the PV's areas.
fn read_metadata(dev: &(impl ReadAt + ?Sized), pv: &mut PvInfo) -> Result<(), LvmError> {
    let mut best: Option<(Option<u64>, Vec<u8>)> = None;
    let mut problem = None;
    for area in pv.metadata_areas.clone() {
        match read_area(dev, area) {
            Ok(Some(text)) => {
                // With two areas (pvcreate --pvmetadatacopies 2), the higher seqno
                // wins; a copy that parses beats one that does not.
                let seqno = super::metadata::parse_vg(&text).ok().map(|v| v.seqno);
                if best.as_ref().is_none_or(|(s, _)| seqno > *s) {
                    best = Some((seqno, text));
                }
            }
            Ok(None) => {}
            // A failing device is an error; an area past its end is damage.
            Err(LvmError::Io { what, offset, err }) if err.kind() != std::io::ErrorKind::UnexpectedEof => {
                return Err(LvmError::Io { what, offset, err })
            }
            Err(e) => {
                problem.get_or_insert(e.to_string());
            }
        }
    }
    match best {
        Some((_, text)) => pv.metadata = Some(text),
        None => pv.metadata_problem = problem,
    }
    Ok(())
}

/// Appends `len` bytes from `at` to `out`, a piece at a time: memory grows with
/// what the device really holds, not with what a damaged header claims.
fn read_span(
    dev: &(impl ReadAt + ?Sized),
    at: u64,
    len: u64,
    out: &mut Vec<u8>,
    what: &'static str,
) -> Result<(), LvmError> {
    const PIECE: u64 = 64 * 1024;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(PIECE) as usize;
        let old = out.len();
        out.resize(old + n, 0);
        let pos = at.checked_add(done).ok_or_else(|| io(what, at)(std::io::ErrorKind::InvalidInput.into()))?;
        dev.read_at(&mut out[old..], pos).map_err(io(what, pos))?;
        done += n as u64;
    }
    Ok(())
}

/// The committed text of one metadata area; `None` if the area holds none.
fn read_area(dev: &(impl ReadAt + ?Sized), area: Area) -> Result<Option<Vec<u8>>, LvmError> {
    let bad = |why: String| LvmError::BadArea { offset: area.offset, why };
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_at(&mut h, area.offset).map_err(io("a metadata area header", area.offset))?;
    let stored = le_u32_at(&h, 0).unwrap_or(0);
    let computed = calc_crc(INITIAL_CRC, &h[4..]);
    if stored != computed {
        return Err(LvmError::Checksum { what: "metadata area header", offset: area.offset, stored, computed });
    }
    if &h[4..20] != MDA_MAGIC {
        return Err(bad("no metadata area magic".into()));
    }
    let version = le_u32_at(&h, 20).unwrap_or(0);
    if version != 1 {
        return Err(bad(format!("version {version}, lifeboat reads 1")));
    }
    let (start, size) = (le_u64_at(&h, 24).unwrap_or(0), le_u64_at(&h, 32).unwrap_or(0));
    if start != area.offset || size != area.size || size <= MDA_HEADER_SIZE {
        return Err(bad(format!("header says {start}+{size}, the PV header {}+{}", area.offset, area.size)));
    }
    // raw_locn[0]: offset, size (u64 each), checksum, flags (u32 each).
    let (Some(off), Some(len), Some(crc), Some(fl)) =
        (le_u64_at(&h, 40), le_u64_at(&h, 48), le_u32_at(&h, 56), le_u32_at(&h, 60))
    else {
        return Err(bad("no raw_locn".into()));
    };
    if off == 0 && len == 0 || fl & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if len as usize as u64 != len || len as usize > MAX_TEXT {
        return Err(bad(format!("metadata of {len} bytes, more than the {MAX_TEXT} accepted")));
    }
    if off < MDA_HEADER_SIZE || off >= size || len > size - MDA_HEADER_SIZE {
        return Err(bad(format!("metadata at {off}+{len} outside the {size}-byte area")));
    }
    // The text runs to the end of the area and wraps to just after the header.
    let first = len.min(size - off);
    let at = area.offset.checked_add(off).ok_or_else(|| bad("offset overflow".into()))?;
    let mut text = Vec::new();
    read_span(dev, at, first, &mut text, "metadata text")?;
    if len > first {
        let wrap = area.offset.checked_add(MDA_HEADER_SIZE).ok_or_else(|| bad("offset overflow".into()))?;
        read_span(dev, wrap, len - first, &mut text, "wrapped metadata text")?;
    }
    let computed = calc_crc(INITIAL_CRC, &text);
    if computed != crc {
        return Err(LvmError::Checksum { what: "metadata text", offset: at, stored: crc, computed });
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(text))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The label sector pvcreate (lvm2 2.03.16) wrote on a 64 MiB loop device:
    /// every byte from its hexdump; lvm's stored checksum is 0x9ed6cfd6.
    fn real_label_sector() -> [u8; 512] {
        let mut s = [0u8; 512];
        s[..8].copy_from_slice(b"LABELONE");
        s[8] = 1;
        s[16..20].copy_from_slice(&0x9ed6_cfd6u32.to_le_bytes());
        s[20] = 0x20;
        s[24..32].copy_from_slice(b"LVM2 001");
        s[32..64].copy_from_slice(b"OyzZeXF5pnpuqajMpN4eggvcMCUlm770");
        s[64..72].copy_from_slice(&0x400_0000u64.to_le_bytes());
        s[72..80].copy_from_slice(&0x10_0000u64.to_le_bytes()); // data area at 1 MiB, size 0
        s[104..112].copy_from_slice(&0x1000u64.to_le_bytes()); // metadata area at 4 KiB
        s[112..120].copy_from_slice(&0xf_f000u64.to_le_bytes());
        s[136] = 2; // pv_header_extension: version 2, flags 1 (PV_EXT_USED)
        s[140] = 1;
        s
    }

    #[test]
    fn calc_crc_matches_lvm2() {
        let s = real_label_sector();
        assert_eq!(calc_crc(INITIAL_CRC, &s[20..]), 0x9ed6_cfd6);
        // Not zlib's CRC-32: "123456789" gives 0xcbf43926 there.
        assert_ne!(calc_crc(INITIAL_CRC, b"123456789"), 0xcbf4_3926);
        // The real metadata text's raw_locn checksum, 0x2d961a55, over its bytes
        // including the trailing NUL.
        let t = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
        assert_eq!(calc_crc(INITIAL_CRC, t), 0x2d96_1a55);
        let (a, b) = t.split_at(1000);
        assert_eq!(calc_crc(calc_crc(INITIAL_CRC, a), b), 0x2d96_1a55);
    }

    /// A device image: the real label in `label_sector`, one metadata area at 4 KiB
    /// of `mda_size` bytes holding `text` at `text_off` (wrapping if it must).
    pub(crate) fn image(label_sector: u64, mda_size: u64, text: &[u8], text_off: u64) -> Vec<u8> {
        let mut d = vec![0u8; 0x1000 + mda_size as usize];
        let mut s = real_label_sector();
        s[8..16].copy_from_slice(&label_sector.to_le_bytes());
        s[112..120].copy_from_slice(&mda_size.to_le_bytes());
        let c = calc_crc(INITIAL_CRC, &s[20..]);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        let ls = label_sector as usize * 512;
        d[ls..ls + 512].copy_from_slice(&s);
        let mut h = [0u8; 512];
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20] = 1;
        h[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        h[32..40].copy_from_slice(&mda_size.to_le_bytes());
        h[40..48].copy_from_slice(&text_off.to_le_bytes());
        h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&calc_crc(INITIAL_CRC, text).to_le_bytes());
        let c = calc_crc(INITIAL_CRC, &h[4..]);
        h[..4].copy_from_slice(&c.to_le_bytes());
        d[0x1000..0x1200].copy_from_slice(&h);
        let area = &mut d[0x1000..];
        for (i, &b) in text.iter().enumerate() {
            let mut p = text_off as usize + i;
            if p >= mda_size as usize {
                p = p - mda_size as usize + 512;
            }
            area[p] = b;
        }
        d
    }

    #[test]
    fn reads_label_area_and_text() {
        let t = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
        let d = image(1, 0xf_f000, t, 0x5400);
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert_eq!(pv.pv_uuid, "OyzZeXF5pnpuqajMpN4eggvcMCUlm770");
        assert_eq!(pv.device_size, 64 << 20);
        assert_eq!(pv.data_areas, vec![Area { offset: 1 << 20, size: 0 }]);
        assert_eq!(pv.metadata_areas, vec![Area { offset: 0x1000, size: 0xf_f000 }]);
        assert_eq!(pv.metadata.as_deref(), Some(&t[..t.len() - 1]));
        // The label may be in any of the first four sectors.
        let d = image(3, 0xf_f000, t, 0x5400);
        assert_eq!(read_pv(&d[..]).unwrap().unwrap().label_sector, 3);
    }

    #[test]
    fn follows_a_wrapped_text() {
        let t = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
        let size = 8192u64;
        let d = image(1, size, t, size - 700);
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert_eq!(pv.metadata.as_deref(), Some(&t[..t.len() - 1]));
        // The copy at the end of the area really is only the first 700 bytes.
        assert_eq!(&d[0x1000 + size as usize - 700..0x1000 + size as usize], &t[..700]);
    }

    #[test]
    fn damage_is_reported_not_guessed() {
        let t = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
        let good = image(1, 8192, t, 512);
        // Not a PV at all, or too short to be one.
        assert!(read_pv(&vec![0u8; 4096][..]).unwrap().is_none());
        assert!(read_pv(&[0u8; 100][..]).unwrap().is_none());
        // A flipped bit in the label.
        let mut d = good.clone();
        d[512 + 40] ^= 1;
        assert!(matches!(read_pv(&d[..]), Err(LvmError::Checksum { what: "label", .. })));
        // A flipped bit in the text: the PV is read, its metadata is not.
        let mut d = good.clone();
        d[0x1000 + 600] ^= 1;
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert!(pv.metadata.is_none());
        assert!(pv.metadata_problem.unwrap().contains("checksum"));
        // A metadata area past the end of the device.
        let mut d = good.clone();
        d.truncate(0x1100);
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert!(pv.metadata.is_none() && pv.metadata_problem.is_some());
        // A raw_locn pointing outside its area (header checksum fixed up).
        let mut d = good.clone();
        d[0x1000 + 40..0x1000 + 48].copy_from_slice(&9000u64.to_le_bytes());
        let c = calc_crc(INITIAL_CRC, &d[0x1004..0x1200]);
        d[0x1000..0x1004].copy_from_slice(&c.to_le_bytes());
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert!(pv.metadata_problem.unwrap().contains("outside"));
        // An ignored area (RAW_LOCN_IGNORED): no metadata, no problem.
        let mut d = good;
        d[0x1000 + 60] = 1;
        let c = calc_crc(INITIAL_CRC, &d[0x1004..0x1200]);
        d[0x1000..0x1004].copy_from_slice(&c.to_le_bytes());
        let pv = read_pv(&d[..]).unwrap().unwrap();
        assert_eq!((pv.metadata, pv.metadata_problem), (None, None));
    }
}
