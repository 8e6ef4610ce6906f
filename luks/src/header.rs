//! The binary headers and which copy to trust. LUKS1 has one 592-byte `phdr` at the
//! start of the device: magic `LUKS\xba\xbe`, version 1, cipher name and mode, hash
//! spec, payload offset (sectors), key bytes, the volume-key digest with its salt
//! and iterations, the UUID and eight keyslots (state, iterations, salt, key
//! material offset in sectors, stripes), all integers big-endian. LUKS2 keeps two
//! copies of a 4096-byte binary header, each followed by its JSON area: the primary
//! at 0 (`LUKS\xba\xbe`), the secondary at `hdr_size` (`SKUL\xba\xbe`), where
//! `hdr_size` is one of 16 KiB, 32 KiB … 4 MiB. Each copy carries a SHA-256 over
//! itself (binary header and JSON area, the checksum field zeroed) and a sequence
//! id; the valid copy with the higher seqid wins, and a damaged or older copy is
//! reported in the header's notes. When the primary is damaged its `hdr_size`
//! cannot be trusted, so the secondary is looked for at every allowed offset.

use std::io::{self, Read, Seek, SeekFrom};

use lifeboat_codec::Reader;
use sha2::{Digest, Sha256};

use crate::error::LuksError;
use crate::json::{self, Metadata, BINARY_HEADER_SIZE};

pub(crate) const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
pub(crate) const SECONDARY_MAGIC: &[u8; 6] = b"SKUL\xba\xbe";

/// The header sizes LUKS2 allows; the secondary header sits at one of them.
pub(crate) const LUKS2_HEADER_SIZES: [u64; 9] =
    [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

/// LUKS1's header size, up to the end of the eighth keyslot.
pub(crate) const LUKS1_PHDR_SIZE: usize = 592;

pub(crate) const LUKS1_KEYSLOT_ACTIVE: u32 = 0x00AC_71F3;
pub(crate) const LUKS1_KEYSLOT_DISABLED: u32 = 0x0000_DEAD;

/// Is this the start of a LUKS volume, and of which version? `first_bytes` is the
/// start of a device (8 bytes are enough for an intact one). A LUKS2 volume whose
/// primary header is wiped is still found when `first_bytes` reaches a secondary
/// header (16 KiB and more), as the secondary's offsets are fixed.
pub fn probe(first_bytes: &[u8]) -> Option<u8> {
    let at = |off: usize| first_bytes.get(off..off.checked_add(8)?);
    if let Some(h) = at(0) {
        if &h[..6] == MAGIC {
            return match u16::from_be_bytes([h[6], h[7]]) {
                1 => Some(1),
                2 => Some(2),
                _ => None,
            };
        }
    }
    LUKS2_HEADER_SIZES.iter().find_map(|&off| {
        let h = at(usize::try_from(off).ok()?)?;
        (&h[..6] == SECONDARY_MAGIC && h[6..8] == [0, 2]).then_some(2)
    })
}

/// A NUL-terminated text field (labels, names, UUIDs).
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Luks1Keyslot {
    pub state: u32,
    pub iterations: u32,
    pub salt: [u8; 32],
    pub key_material_offset: u32,
    pub stripes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Luks1Phdr {
    pub cipher_name: String,
    pub cipher_mode: String,
    pub hash_spec: String,
    pub payload_offset: u32,
    pub key_bytes: u32,
    pub mk_digest: [u8; 20],
    pub mk_digest_salt: [u8; 32],
    pub mk_digest_iterations: u32,
    pub uuid: String,
    pub keyslots: Vec<Luks1Keyslot>,
}

impl Luks1Phdr {
    pub(crate) fn parse(device: &str, bytes: &[u8]) -> Result<Luks1Phdr, LuksError> {
        let short = |e| LuksError::short(device, e);
        let mut r = Reader::new(bytes);
        if r.array::<6>("magic").map_err(short)? != *MAGIC {
            return Err(LuksError::NotLuks { device: device.to_string() });
        }
        let version = r.u16_be("version").map_err(short)?;
        if version != 1 {
            return Err(LuksError::invalid(device, "version", format!("{version}, not 1")));
        }
        let text = |r: &mut Reader, what: &'static str| -> Result<String, LuksError> {
            let raw = r.take(32, what).map_err(short)?;
            let s = c_string(raw);
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(LuksError::invalid(device, what, format!("{s:?} is not a name")));
            }
            Ok(s)
        };
        let cipher_name = text(&mut r, "cipher-name")?;
        let cipher_mode = text(&mut r, "cipher-mode")?;
        let hash_spec = text(&mut r, "hash-spec")?;
        let payload_offset = r.u32_be("payload-offset").map_err(short)?;
        let key_bytes = r.u32_be("key-bytes").map_err(short)?;
        if key_bytes == 0 || key_bytes as usize > json::MAX_KEY_BYTES {
            return Err(LuksError::invalid(device, "key-bytes", format!("{key_bytes} (1 to {})", json::MAX_KEY_BYTES)));
        }
        let mk_digest = r.array("mk-digest").map_err(short)?;
        let mk_digest_salt = r.array("mk-digest-salt").map_err(short)?;
        let mk_digest_iterations = r.u32_be("mk-digest-iter").map_err(short)?;
        let uuid = c_string(r.take(40, "uuid").map_err(short)?);
        let mut keyslots = Vec::with_capacity(8);
        for _ in 0..8 {
            keyslots.push(Luks1Keyslot {
                state: r.u32_be("key-slot active").map_err(short)?,
                iterations: r.u32_be("key-slot iterations").map_err(short)?,
                salt: r.array("key-slot salt").map_err(short)?,
                key_material_offset: r.u32_be("key-slot key-material-offset").map_err(short)?,
                stripes: r.u32_be("key-slot stripes").map_err(short)?,
            });
        }
        Ok(Luks1Phdr {
            cipher_name,
            cipher_mode,
            hash_spec,
            payload_offset,
            key_bytes,
            mk_digest,
            mk_digest_salt,
            mk_digest_iterations,
            uuid,
            keyslots,
        })
    }
}

/// One LUKS2 binary header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Luks2Binary {
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: String,
    pub uuid: String,
    pub subsystem: String,
}

/// A usable LUKS2 header copy.
#[derive(Clone, Debug)]
pub(crate) struct Luks2Copy {
    pub binary: Luks2Binary,
    pub metadata: Metadata,
}

/// Why a header copy is unusable: `absent` when there is no header there at all
/// (no magic), else damaged, `why` saying how.
#[derive(Debug)]
struct CopyFault {
    absent: bool,
    why: String,
}

/// Checks the copy in `bytes` (binary header and whatever follows) that sits at
/// `offset`: magic, version, size, offset, checksum, JSON.
fn luks2_copy(device: &str, bytes: &[u8], offset: u64) -> Result<Luks2Copy, CopyFault> {
    let which = if offset == 0 { "primary" } else { "secondary" };
    let fail = |what: String| CopyFault { absent: false, why: format!("{which} header at {offset}: {what}") };
    let want = if offset == 0 { MAGIC } else { SECONDARY_MAGIC };
    if bytes.get(..6) != Some(want.as_slice()) {
        return Err(CopyFault { absent: true, why: format!("{which} header at {offset}: no LUKS2 magic") });
    }
    let mut r = Reader::new(bytes);
    let short = |e: lifeboat_codec::Short| fail(e.to_string());
    r.skip(6, "magic").map_err(short)?;
    let version = r.u16_be("version").map_err(short)?;
    if version != 2 {
        return Err(fail(format!("version {version}, not 2")));
    }
    let hdr_size = r.u64_be("hdr_size").map_err(short)?;
    if !LUKS2_HEADER_SIZES.contains(&hdr_size) {
        return Err(fail(format!("hdr_size {hdr_size} is not one LUKS2 allows")));
    }
    if offset != 0 && offset != hdr_size {
        return Err(fail(format!("hdr_size {hdr_size} does not place the secondary header here")));
    }
    let seqid = r.u64_be("seqid").map_err(short)?;
    let label = c_string(r.take(48, "label").map_err(short)?);
    let csum_alg = c_string(r.take(32, "csum_alg").map_err(short)?);
    r.skip(64, "salt").map_err(short)?;
    let uuid = c_string(r.take(40, "uuid").map_err(short)?);
    let subsystem = c_string(r.take(48, "subsystem").map_err(short)?);
    let hdr_offset = r.u64_be("hdr_offset").map_err(short)?;
    if hdr_offset != offset {
        return Err(fail(format!("hdr_offset {hdr_offset} is not where the header is")));
    }
    r.skip(184, "padding").map_err(short)?;
    let csum = r.array::<32>("csum").map_err(short)?;
    if csum_alg != "sha256" {
        return Err(fail(format!("checksum algorithm {csum_alg:?} is not supported (only sha256)")));
    }
    // The whole header (binary part and JSON area) must be here.
    let whole = usize::try_from(hdr_size).ok().and_then(|n| bytes.get(..n));
    let whole = whole.ok_or_else(|| fail(format!("only {} of its {hdr_size} bytes could be read", bytes.len())))?;
    let (before, rest) = whole.split_at(448);
    let after = rest.get(64..).unwrap_or_default();
    let actual = Sha256::new().chain_update(before).chain_update([0u8; 64]).chain_update(after).finalize();
    if actual.as_slice() != csum {
        return Err(fail("checksum mismatch".into()));
    }
    let area = whole.get(BINARY_HEADER_SIZE as usize..).unwrap_or_default();
    let metadata = json::parse(device, area, hdr_size).map_err(|e| fail(e.detail()))?;
    Ok(Luks2Copy { binary: Luks2Binary { hdr_size, seqid, label, uuid, subsystem }, metadata })
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the device).
pub(crate) fn read_up_to<D: Read + Seek>(dev: &mut D, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    dev.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    dev.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The copy at `offset`, read from the device: its binary header first, then as much
/// as its `hdr_size` says (at most 4 MiB).
fn read_copy<D: Read + Seek>(device: &str, dev: &mut D, offset: u64) -> Result<Luks2Copy, CopyFault> {
    let which = if offset == 0 { "primary" } else { "secondary" };
    let io = |e: io::Error| CopyFault { absent: false, why: format!("{which} header at {offset}: {e}") };
    let head = read_up_to(dev, offset, BINARY_HEADER_SIZE as usize).map_err(io)?;
    let size = head.get(8..16).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    let bytes = match size {
        Some(n) if LUKS2_HEADER_SIZES.contains(&n) && n > BINARY_HEADER_SIZE => {
            read_up_to(dev, offset, n as usize).map_err(io)?
        }
        _ => head,
    };
    luks2_copy(device, &bytes, offset)
}

/// Finds the LUKS2 header copy to use, with notes about the other one.
pub(crate) fn read_luks2<D: Read + Seek>(device: &str, dev: &mut D) -> Result<(Luks2Copy, Vec<String>), LuksError> {
    let primary = read_copy(device, dev, 0);
    let secondary = match &primary {
        Ok(p) => read_copy(device, dev, p.binary.hdr_size),
        // The primary's hdr_size is not to be trusted: probe every allowed offset,
        // and if none has a usable copy, report the first that had one at all.
        Err(_) => {
            let mut found =
                Err(CopyFault { absent: true, why: "secondary header: none at any offset LUKS2 allows".to_string() });
            for off in LUKS2_HEADER_SIZES {
                match read_copy(device, dev, off) {
                    Ok(c) => {
                        found = Ok(c);
                        break;
                    }
                    Err(f) if !f.absent && found.as_ref().is_err_and(|e| e.absent) => found = Err(f),
                    Err(_) => {}
                }
            }
            found
        }
    };
    let mut notes = Vec::new();
    let chosen = match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            let (ps, ss) = (p.binary.seqid, s.binary.seqid);
            if ps != ss {
                let (newer, older) = if ss > ps { ("secondary", "primary") } else { ("primary", "secondary") };
                notes.push(format!(
                    "the {older} header is older (seqid {} against {}); the {newer} one is used",
                    ps.min(ss),
                    ps.max(ss)
                ));
            }
            if ss > ps {
                s
            } else {
                p
            }
        }
        (Ok(p), Err(f)) => {
            notes.push(format!("{}; the primary header is used", f.why));
            p
        }
        (Err(f), Ok(s)) => {
            notes.push(format!("{}; the secondary header is used", f.why));
            s
        }
        (Err(p), Err(s)) => {
            if p.absent && s.absent {
                return Err(LuksError::NotLuks { device: device.to_string() });
            }
            return Err(LuksError::NoValidHeader { device: device.to_string(), problems: vec![p.why, s.why] });
        }
    };
    Ok((chosen, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_magic_and_version() {
        assert_eq!(probe(b"LUKS\xba\xbe\x00\x01rest"), Some(1));
        assert_eq!(probe(b"LUKS\xba\xbe\x00\x02"), Some(2));
        assert_eq!(probe(b"LUKS\xba\xbe\x00\x03"), None);
        assert_eq!(probe(b"LUKS\xba\xbe\x00"), None);
        assert_eq!(probe(b""), None);
        let mut wiped = vec![0u8; 0x4008];
        wiped[0x4000..].copy_from_slice(b"SKUL\xba\xbe\x00\x02");
        assert_eq!(probe(&wiped), Some(2));
        assert_eq!(probe(&wiped[..0x4007]), None);
    }

    #[test]
    fn luks1_phdr_truncated_anywhere_is_an_error_naming_the_field() {
        let mut b = vec![0u8; LUKS1_PHDR_SIZE];
        b[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01");
        b[8..11].copy_from_slice(b"aes");
        b[40..51].copy_from_slice(b"xts-plain64");
        b[72..78].copy_from_slice(b"sha256");
        b[108..112].copy_from_slice(&64u32.to_be_bytes());
        let p = Luks1Phdr::parse("x", &b).unwrap();
        assert_eq!((p.cipher_name.as_str(), p.cipher_mode.as_str(), p.key_bytes), ("aes", "xts-plain64", 64));
        for n in 0..LUKS1_PHDR_SIZE {
            assert!(Luks1Phdr::parse("x", &b[..n]).is_err());
        }
        let e = Luks1Phdr::parse("disk", &b[..300]).unwrap_err();
        assert!(e.to_string().starts_with("disk: LUKS header field key-slot"), "{e}");
        b[108..112].copy_from_slice(&65u32.to_be_bytes());
        assert_eq!(
            Luks1Phdr::parse("disk", &b).unwrap_err().to_string(),
            "disk: LUKS header field key-bytes: 65 (1 to 64)"
        );
    }
}
