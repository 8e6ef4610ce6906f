//! cpio "newc" (SVR4 without CRC), the format the kernel unpacks as initramfs.
//!
//! The writer is deterministic: entries keep insertion order (directories are
//! added before their contents and duplicates are dropped), inode numbers count up
//! from 1, and every timestamp and owner is 0. The reader checks every header field
//! and length against the input before using it.

use std::collections::BTreeSet;

use lifeboat_codec::{Reader, Short};

use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub mode: u32,
    pub kind: Kind,
}

/// An archive being built (or read).
#[derive(Clone, Debug, Default)]
pub struct Archive {
    pub entries: Vec<CpioEntry>,
    seen: BTreeSet<String>,
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

impl Archive {
    pub fn new() -> Self {
        Archive::default()
    }

    fn add(&mut self, name: &str, mode: u32, kind: Kind) {
        let name = name.trim_start_matches('/').to_owned();
        if self.seen.insert(name.clone()) {
            self.entries.push(CpioEntry { name, mode, kind });
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.add(name, 0o040000 | perm, Kind::Dir);
    }
    pub fn file(&mut self, name: &str, perm: u32, data: Vec<u8>) {
        self.add(name, 0o100000 | perm, Kind::File(data));
    }
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.add(name, 0o120777, Kind::Symlink(target.to_owned()));
    }
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.add(name, 0o020000 | perm, Kind::CharDev { major, minor });
    }

    /// Serialises the archive, trailer included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let (data, rmaj, rmin, nlink): (&[u8], u32, u32, u32) = match &e.kind {
                Kind::Dir => (&[], 0, 0, 2),
                Kind::File(d) => (d, 0, 0, 1),
                Kind::Symlink(t) => (t.as_bytes(), 0, 0, 1),
                Kind::CharDev { major, minor } => (&[], *major, *minor, 1),
            };
            header(&mut out, i as u32 + 1, e.mode, nlink, data.len() as u32, rmaj, rmin, &e.name);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, 0, 0, TRAILER);
        out
    }

    /// Parses an uncompressed archive up to its trailer.
    pub fn parse(b: &[u8]) -> Result<Archive> {
        let mut a = Archive::new();
        let mut r = Reader::new(b);
        let cut = |e: Short| Error::Cpio(e.to_string());
        loop {
            let pos = r.position();
            if r.take(6, "magic").map_err(cut)? != MAGIC {
                return Err(Error::Cpio(format!("bad magic at byte {pos} (only newc is supported)")));
            }
            let mut fields = [0u32; 13];
            for f in fields.iter_mut() {
                *f = r
                    .hex_u32(8, "header field")
                    .map_err(cut)?
                    .ok_or_else(|| Error::Cpio(format!("bad hex field in the header at byte {pos}")))?;
            }
            let (mode, size, rmaj, rmin, namesize) =
                (fields[1], fields[6] as usize, fields[9], fields[10], fields[11] as usize);
            if namesize == 0 || namesize > 4096 {
                return Err(Error::Cpio(format!("name size {namesize} at byte {pos}")));
            }
            let nb = r.take(namesize, "name").map_err(cut)?;
            if nb[namesize - 1] != 0 {
                return Err(Error::Cpio("name not NUL-terminated".into()));
            }
            let name = String::from_utf8_lossy(&nb[..namesize - 1]).into_owned();
            let pad = |r: &mut Reader| {
                let p = (4 - r.position() % 4) % 4;
                r.skip(p.min(r.left()), "padding")
            };
            pad(&mut r).map_err(cut)?;
            if name == TRAILER {
                return Ok(a);
            }
            let data = r.take(size, "data").map_err(|_| Error::Cpio(format!("{name}: data runs past the end")))?;
            let kind = match mode & 0o170000 {
                0o040000 => Kind::Dir,
                0o100000 => Kind::File(data.to_vec()),
                0o120000 => Kind::Symlink(String::from_utf8_lossy(data).into_owned()),
                0o020000 => Kind::CharDev { major: rmaj, minor: rmin },
                t => return Err(Error::Cpio(format!("{name}: unsupported type {t:o}"))),
            };
            a.entries.push(CpioEntry { name, mode, kind });
            pad(&mut r).map_err(cut)?;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: u32, rmaj: u32, rmin: u32, name: &str) {
    out.extend_from_slice(MAGIC);
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, name.len() as u32 + 1, 0];
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let mut a = Archive::new();
        a.dir("dev", 0o755);
        a.char_dev("dev/console", 0o600, 5, 1);
        a.file("init", 0o755, b"abc".to_vec());
        a.symlink("bin", "usr/bin");
        a.dir("dev", 0o700); // duplicate: dropped
        let b = a.to_bytes();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(&b[..6], b"070701");
        // Header of the first entry: ino 1, mode 040755.
        assert_eq!(&b[6..22], b"00000001000041ED");
        let back = Archive::parse(&b).unwrap();
        assert_eq!(back.entries.len(), 4);
        assert_eq!(back.entries[1].kind, Kind::CharDev { major: 5, minor: 1 });
        assert_eq!(back.entries[2].kind, Kind::File(b"abc".to_vec()));
        assert_eq!(back.entries[3].kind, Kind::Symlink("usr/bin".into()));
        assert!(b.ends_with(&[0u8; 0]) && b.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut a = Archive::new();
        a.file("x", 0o644, vec![1; 100]);
        let b = a.to_bytes();
        for cut in [0, 5, 109, 115, 150] {
            assert!(Archive::parse(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = b.clone();
        bad[6] = b'Z';
        assert!(Archive::parse(&bad).is_err());
        let mut huge = b.clone();
        huge[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
        assert!(Archive::parse(&huge).is_err());
    }
}
