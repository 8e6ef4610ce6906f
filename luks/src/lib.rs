//! Unlocks LUKS1 and LUKS2 volumes without cryptsetup, libc crypto or C code: PID 1
//! uses it to open an encrypted root in the initrd, the host tool to inspect one.
//!
//! [`Header::read`] finds and checks the header (for LUKS2 both copies, their
//! checksums, and the JSON metadata), [`Header::unlock`] turns a passphrase into the
//! volume key by trying keyslots in priority order (KDF, keyslot area decryption,
//! anti-forensic merge, digest check), and [`Unlocked`] holds what a dm-crypt table
//! needs, [`Unlocked::dm_table`] formatting it. [`probe`] tells a device scan whether
//! a device is LUKS. Every read of the header is bounded, every size it gives is
//! checked before anything is allocated, and KDF costs are capped by [`KdfLimits`];
//! keys live in buffers zeroed on drop whose `Debug` shows no secret.
//!
//! Supported: keyslot and data ciphers AES-XTS (`plain64`, `plain`) and AES-CBC
//! (`essiv:sha256`, `plain64`, `plain`); PBKDF2 with SHA-1/256/384/512; Argon2i and
//! Argon2id. Not supported (a clear [`LuksError::Unsupported`] or
//! [`LuksError::Requirement`]): other ciphers, tokens (TPM, FIDO2), dm-integrity,
//! volumes in the middle of re-encryption, detached headers beyond what a caller
//! can do by passing the header file as the device.

#![forbid(unsafe_code)]

mod af;
mod cipher;
mod error;
mod header;
mod json;
mod kdf;
mod key;
mod unlock;

use std::io::{Cursor, Read, Seek};

pub use cipher::{decrypt_sectors, CipherError};
pub use error::LuksError;
pub use header::probe;
pub use kdf::KdfLimits;
pub use key::VolumeKey;
pub use unlock::{UnlockOptions, Unlocked};
/// The wrapper [`Unlocked::dm_table`]'s line comes in: zeroed on drop.
pub use zeroize::Zeroizing;

use cipher::CipherSpec;
use header::{Luks1Phdr, LUKS1_KEYSLOT_ACTIVE, LUKS1_KEYSLOT_DISABLED, LUKS1_PHDR_SIZE};
use json::Metadata;

/// A checked LUKS header: identity, notes about damage, and what unlocking needs.
#[derive(Clone, Debug)]
pub struct Header {
    /// The device or file name errors and notes are about.
    pub device: String,
    /// 1 or 2.
    pub version: u8,
    pub uuid: String,
    /// LUKS2's label (empty when none, and always for LUKS1).
    pub label: String,
    /// LUKS2's subsystem (empty when none).
    pub subsystem: String,
    /// LUKS2: the sequence id of the header copy in use; LUKS1: 0.
    pub seqid: u64,
    /// Bytes of header before the keyslots: LUKS2's `hdr_size`, LUKS1's 592.
    pub header_size: u64,
    /// What was found wrong but worked around: a damaged or older LUKS2 header copy,
    /// a LUKS1 keyslot in an unknown state.
    pub notes: Vec<String>,
    format: Format,
}

#[derive(Clone, Debug)]
enum Format {
    Luks1(Box<Luks1Phdr>),
    Luks2(Box<Metadata>),
}

/// One keyslot as the header describes it, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyslotInfo {
    pub index: u32,
    /// LUKS2's priority: 0 ignored unless named, 1 normal, 2 high (LUKS1: 1).
    pub priority: u32,
    /// The volume key size the keyslot holds.
    pub key_bytes: usize,
    /// The KDF and its costs, e.g. "argon2id, time 4, memory 1048576 KiB, 4 lanes".
    pub kdf: Option<String>,
    /// The keyslot area's cipher.
    pub cipher: Option<String>,
    /// Why the keyslot cannot be opened, if it cannot.
    pub problem: Option<String>,
}

/// The encrypted data area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSegment {
    /// dm-crypt's cipher specification, e.g. "aes-xts-plain64".
    pub cipher: String,
    pub offset_bytes: u64,
    /// `None`: to the end of the device.
    pub size_bytes: Option<u64>,
    pub sector_size: u32,
    /// The IV of the segment's first sector (512-byte units).
    pub iv_tweak: u64,
    /// LUKS2's persistent `allow-discards` flag.
    pub allow_discards: bool,
    /// LUKS2's persistent performance flags, as dm-crypt option names
    /// (`same_cpu_crypt`, `submit_from_crypt_cpus`, `no_read_workqueue`, `no_write_workqueue`).
    pub performance_flags: Vec<String>,
}

impl Header {
    /// Reads and checks the header of `dev`, named `device` in errors and notes.
    pub fn read<D: Read + Seek>(device: &str, dev: &mut D) -> Result<Header, LuksError> {
        let first =
            header::read_up_to(dev, 0, LUKS1_PHDR_SIZE).map_err(|e| LuksError::io(device, "the LUKS header", e))?;
        if probe(&first) == Some(1) {
            return Header::luks1(device, &first);
        }
        // Anything else may be a LUKS2 volume with a damaged primary header.
        let (copy, notes) = header::read_luks2(device, dev)?;
        Ok(Header {
            device: device.to_string(),
            version: 2,
            uuid: copy.binary.uuid,
            label: copy.binary.label,
            subsystem: copy.binary.subsystem,
            seqid: copy.binary.seqid,
            header_size: copy.binary.hdr_size,
            notes,
            format: Format::Luks2(Box::new(copy.metadata)),
        })
    }

    /// [`Header::read`] from bytes in memory (the start of a device, or a header file).
    pub fn from_bytes(device: &str, bytes: &[u8]) -> Result<Header, LuksError> {
        Header::read(device, &mut Cursor::new(bytes))
    }

    fn luks1(device: &str, bytes: &[u8]) -> Result<Header, LuksError> {
        let phdr = Luks1Phdr::parse(device, bytes)?;
        let mut notes = Vec::new();
        for (i, k) in phdr.keyslots.iter().enumerate() {
            if k.state != LUKS1_KEYSLOT_ACTIVE && k.state != LUKS1_KEYSLOT_DISABLED {
                notes.push(format!("keyslot {i}: state {:#010x} is neither active nor disabled; skipped", k.state));
            }
        }
        Ok(Header {
            device: device.to_string(),
            version: 1,
            uuid: phdr.uuid.clone(),
            label: String::new(),
            subsystem: String::new(),
            seqid: 0,
            header_size: LUKS1_PHDR_SIZE as u64,
            notes,
            format: Format::Luks1(Box::new(phdr)),
        })
    }

    /// The keyslots in use (LUKS1: the active ones), by index.
    pub fn keyslots(&self) -> Vec<KeyslotInfo> {
        match &self.format {
            Format::Luks1(p) => (0u32..)
                .zip(&p.keyslots)
                .filter(|(_, k)| k.state == LUKS1_KEYSLOT_ACTIVE)
                .map(|(index, k)| KeyslotInfo {
                    index,
                    priority: 1,
                    key_bytes: p.key_bytes as usize,
                    kdf: Some(format!("pbkdf2-{}, {} iterations", p.hash_spec, k.iterations)),
                    cipher: Some(format!("{}-{}", p.cipher_name, p.cipher_mode)),
                    problem: None,
                })
                .collect(),
            Format::Luks2(m) => m
                .keyslots
                .iter()
                .map(|k| KeyslotInfo {
                    index: k.index,
                    priority: k.priority,
                    key_bytes: k.key_bytes,
                    kdf: k.body.as_ref().ok().map(|b| b.kdf.to_string()),
                    cipher: k.body.as_ref().ok().map(|b| b.area_cipher.clone()),
                    problem: k.body.as_ref().err().map(|p| p.clone().into_error(&self.device).detail()),
                })
                .collect(),
        }
    }

    /// LUKS2's mandatory requirements (none may be present for lifeboat to unlock).
    pub fn requirements(&self) -> &[String] {
        match &self.format {
            Format::Luks1(_) => &[],
            Format::Luks2(m) => &m.requirements,
        }
    }

    /// LUKS2's persistent flags (`allow-discards`, …).
    pub fn flags(&self) -> &[String] {
        match &self.format {
            Format::Luks1(_) => &[],
            Format::Luks2(m) => &m.flags,
        }
    }

    /// LUKS2's keyslots area size in bytes (LUKS1: 0).
    pub fn keyslots_size(&self) -> u64 {
        match &self.format {
            Format::Luks1(_) => 0,
            Format::Luks2(m) => m.keyslots_size,
        }
    }

    /// The data segment an unlock maps, checked: a refusal here (a requirement, a
    /// re-encryption in progress, an unsupported cipher) refuses the unlock too.
    pub fn data_segment(&self) -> Result<DataSegment, LuksError> {
        let device = self.device.as_str();
        match &self.format {
            Format::Luks1(p) => {
                let cipher = format!("{}-{}", p.cipher_name, p.cipher_mode);
                let spec = CipherSpec::parse(&cipher)
                    .ok_or_else(|| LuksError::unsupported(device, format!("cipher {cipher:?}")))?;
                if !spec.key_len_ok(p.key_bytes as usize) {
                    return Err(LuksError::invalid(
                        device,
                        "key-bytes",
                        format!("a {}-bit key does not fit {cipher}", p.key_bytes * 8),
                    ));
                }
                Ok(DataSegment {
                    cipher,
                    offset_bytes: u64::from(p.payload_offset) * 512,
                    size_bytes: None,
                    sector_size: 512,
                    iv_tweak: 0,
                    allow_discards: false,
                    performance_flags: Vec::new(),
                })
            }
            Format::Luks2(m) => luks2_data_segment(device, m).map(|(_, s)| s),
        }
    }
}

/// The one active LUKS2 segment (backup segments, which only re-encryption keeps,
/// aside) and its index.
fn luks2_data_segment(device: &str, m: &Metadata) -> Result<(u32, DataSegment), LuksError> {
    if let Some(r) = m.requirements.first() {
        return Err(LuksError::Requirement { device: device.to_string(), requirement: r.clone() });
    }
    let active: Vec<_> = m.segments.iter().filter(|s| !s.flags.iter().any(|f| f.starts_with("backup-"))).collect();
    let [s] = active.as_slice() else {
        return Err(LuksError::unsupported(
            device,
            format!("{} active data segments (only one is supported; re-encryption leaves several)", active.len()),
        ));
    };
    let field = |f: &str| format!("segments.{}.{f}", s.index);
    if s.kind != "crypt" {
        return Err(LuksError::unsupported(device, format!("data segment type {:?}", s.kind)));
    }
    if let Some(f) = s.flags.first() {
        return Err(LuksError::unsupported(device, format!("data segment flag {f:?}")));
    }
    if s.integrity {
        return Err(LuksError::unsupported(device, "data integrity protection (dm-integrity)"));
    }
    let cipher = s.encryption.clone().ok_or_else(|| LuksError::invalid(device, field("encryption"), "missing"))?;
    if CipherSpec::parse(&cipher).is_none() {
        return Err(LuksError::unsupported(device, format!("data cipher {cipher:?}")));
    }
    let sector_size = s.sector_size.ok_or_else(|| LuksError::invalid(device, field("sector_size"), "missing"))?;
    if !cipher::sector_size_ok(u64::from(sector_size)) {
        return Err(LuksError::invalid(
            device,
            field("sector_size"),
            format!("{sector_size} (512 to 4096, a power of 2)"),
        ));
    }
    if s.offset % 512 != 0 {
        return Err(LuksError::invalid(device, field("offset"), format!("{} is not a multiple of 512", s.offset)));
    }
    if let Some(size) = s.size {
        if size % u64::from(sector_size) != 0 {
            return Err(LuksError::invalid(
                device,
                field("size"),
                format!("{size} is not a multiple of the sector size {sector_size}"),
            ));
        }
    }
    let performance_flags = m
        .flags
        .iter()
        .filter_map(|f| match f.as_str() {
            "same-cpu-crypt" => Some("same_cpu_crypt"),
            "submit-from-crypt-cpus" => Some("submit_from_crypt_cpus"),
            "no-read-workqueue" => Some("no_read_workqueue"),
            "no-write-workqueue" => Some("no_write_workqueue"),
            _ => None,
        })
        .map(str::to_string)
        .collect();
    Ok((
        s.index,
        DataSegment {
            cipher,
            offset_bytes: s.offset,
            size_bytes: s.size,
            sector_size,
            iv_tweak: s.iv_tweak,
            allow_discards: m.flags.iter().any(|f| f == "allow-discards"),
            performance_flags,
        },
    ))
}
