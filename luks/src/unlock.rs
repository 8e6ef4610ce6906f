//! From a passphrase to the volume key, and from the volume key to a dm-crypt
//! table. Keyslots are tried in priority order (LUKS2: high, then normal, by index;
//! priority "ignore" only when named; LUKS1: the active ones by index) or just the
//! one named. For each: every cost and size is checked first, then the KDF turns the
//! passphrase into the keyslot key, the keyslot area is read and decrypted (512-byte
//! sectors, IVs from 0), the anti-forensic stripes are merged into a candidate
//! volume key, and the candidate is checked against the header's digest (LUKS2: a
//! PBKDF2 digest bound to the keyslot and the data segment; LUKS1: PBKDF2 over 20
//! bytes). A digest that differs means a wrong passphrase; anything else that stops
//! a keyslot is damage or a missing feature, and is reported as such.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

use zeroize::Zeroizing;

use crate::cipher::{self, CipherError, CipherSpec, SectorCipher};
use crate::error::LuksError;
use crate::header::{Luks1Phdr, LUKS1_KEYSLOT_ACTIVE};
use crate::json::{Keyslot, Metadata, MAX_STRIPES};
use crate::kdf::{Hash, Kdf, KdfFault, KdfLimits};
use crate::key::{constant_time_eq, secret_buffer, VolumeKey};
use crate::{af, luks2_data_segment, DataSegment, Format, Header};

/// What to try and what it may cost.
#[derive(Clone, Debug, Default)]
pub struct UnlockOptions {
    /// Only this keyslot; `None`: every usable one in priority order.
    pub keyslot: Option<u32>,
    pub limits: KdfLimits,
}

/// An opened volume: everything a dm-crypt table needs. `Debug` and `Display` never
/// show the key.
#[derive(Clone, Debug)]
pub struct Unlocked {
    pub volume_key: VolumeKey,
    /// The keyslot that opened.
    pub keyslot: u32,
    /// dm-crypt's cipher specification, e.g. "aes-xts-plain64".
    pub cipher: String,
    pub key_bytes: usize,
    pub data_offset_bytes: u64,
    /// `None`: the data runs to the end of the device.
    pub data_size_bytes: Option<u64>,
    pub sector_size: u32,
    pub allow_discards_in_header: bool,
    /// The IV of the first data sector (dm-crypt's `iv_offset`, 512-byte units).
    pub iv_tweak: u64,
    /// dm-crypt options the header asks for persistently (see [`DataSegment`]).
    pub performance_flags: Vec<String>,
}

impl fmt::Display for Unlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keyslot {}: {} with a {}-bit key, data from byte {} ",
            self.keyslot,
            self.cipher,
            self.key_bytes * 8,
            self.data_offset_bytes
        )?;
        match self.data_size_bytes {
            Some(n) => write!(f, "for {n} bytes")?,
            None => write!(f, "to the end of the device")?,
        }
        write!(f, ", {}-byte sectors", self.sector_size)
    }
}

impl Unlocked {
    fn new(key: VolumeKey, keyslot: u32, seg: DataSegment) -> Unlocked {
        Unlocked {
            key_bytes: key.len(),
            volume_key: key,
            keyslot,
            cipher: seg.cipher,
            data_offset_bytes: seg.offset_bytes,
            data_size_bytes: seg.size_bytes,
            sector_size: seg.sector_size,
            allow_discards_in_header: seg.allow_discards,
            iv_tweak: seg.iv_tweak,
            performance_flags: seg.performance_flags,
        }
    }

    /// The dm-crypt table line mapping the data of `device` (a path or
    /// `major:minor`) whose size is `device_size_bytes`:
    /// `0 <len> crypt <cipher> <hexkey> <iv_offset> <device> <offset> [<n> <options>]`,
    /// with `allow_discards` when asked for (PID 1 passes the header's flag or the
    /// command line's choice), the header's performance flags, and `sector_size:N`
    /// for sectors other than 512 bytes. It holds the key: zeroed on drop.
    pub fn dm_table(
        &self,
        device: &str,
        device_size_bytes: u64,
        allow_discards: bool,
    ) -> Result<Zeroizing<String>, LuksError> {
        if device.is_empty() || device.chars().any(char::is_whitespace) {
            return Err(LuksError::invalid(device, "device name", "empty or has white space"));
        }
        let room = device_size_bytes.checked_sub(self.data_offset_bytes).ok_or_else(|| {
            LuksError::invalid(
                device,
                "data offset",
                format!("{} is past the end of the {device_size_bytes}-byte device", self.data_offset_bytes),
            )
        })?;
        let len = match self.data_size_bytes {
            Some(n) if n > room => {
                return Err(LuksError::invalid(
                    device,
                    "data size",
                    format!("{n} bytes from {} do not fit in {device_size_bytes}", self.data_offset_bytes),
                ))
            }
            Some(n) => n,
            None => room - room % u64::from(self.sector_size),
        };
        if len == 0 {
            return Err(LuksError::invalid(device, "data size", "no data sectors"));
        }
        let mut options: Vec<String> = Vec::new();
        if allow_discards {
            options.push("allow_discards".into());
        }
        options.extend(self.performance_flags.iter().cloned());
        if self.sector_size != 512 {
            options.push(format!("sector_size:{}", self.sector_size));
        }
        let key = self.volume_key.to_hex();
        let mut line = Zeroizing::new(format!(
            "0 {} crypt {} {} {} {device} {}",
            len / 512,
            self.cipher,
            key.as_str(),
            self.iv_tweak,
            self.data_offset_bytes / 512
        ));
        if !options.is_empty() {
            line.push_str(&format!(" {} {}", options.len(), options.join(" ")));
        }
        Ok(line)
    }

    /// Decrypts `data` in place: whole sectors of this volume's sector size, the first
    /// being sector `first_sector` of the data segment (counted in the volume's
    /// sectors from the segment's start).
    pub fn decrypt_sectors(&self, first_sector: u64, data: &mut [u8]) -> Result<(), CipherError> {
        let per_sector = u64::from(self.sector_size / 512);
        let first_iv = self.iv_tweak.wrapping_add(first_sector.wrapping_mul(per_sector));
        cipher::decrypt_sectors(&self.cipher, self.volume_key.as_bytes(), self.sector_size, first_iv, data)
    }
}

/// Why one keyslot did not open.
enum SlotFailure {
    /// The candidate key's digest differs: the passphrase is not this keyslot's.
    Mismatch,
    Error(LuksError),
}

impl From<LuksError> for SlotFailure {
    fn from(e: LuksError) -> Self {
        SlotFailure::Error(e)
    }
}

fn kdf_error(device: &str, keyslot: u32, field: &str, fault: KdfFault) -> LuksError {
    match fault {
        KdfFault::Unsupported(what) => LuksError::unsupported(device, format!("keyslot {keyslot}: {what}")),
        KdfFault::Invalid(problem) => LuksError::invalid(device, field, problem),
        KdfFault::Limit(what) => LuksError::KdfLimit { device: device.to_string(), keyslot, what },
        KdfFault::OutOfMemory(bytes) => {
            LuksError::OutOfMemory { device: device.to_string(), what: format!("keyslot {keyslot}'s KDF"), bytes }
        }
    }
}

/// The keyslot area's stripes, read from the device and decrypted.
fn read_and_decrypt_area<D: Read + Seek>(
    device: &str,
    dev: &mut D,
    keyslot: u32,
    offset: u64,
    len: usize,
    spec: CipherSpec,
    area_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let mut material = secret_buffer(len).ok_or_else(|| LuksError::OutOfMemory {
        device: device.to_string(),
        what: format!("keyslot {keyslot}'s area"),
        bytes: len as u64,
    })?;
    let what = || format!("keyslot {keyslot}'s area ({len} bytes at {offset})");
    dev.seek(SeekFrom::Start(offset)).map_err(|e| LuksError::io(device, what(), e))?;
    dev.read_exact(&mut material).map_err(|e| {
        let e = match e.kind() {
            std::io::ErrorKind::UnexpectedEof => std::io::Error::new(e.kind(), "the device ends before it"),
            _ => e,
        };
        LuksError::io(device, what(), e)
    })?;
    let c = SectorCipher::new(spec, area_key).ok_or_else(|| {
        LuksError::invalid(device, format!("keyslot {keyslot} key size"), "does not fit the area cipher")
    })?;
    c.decrypt(512, 0, &mut material);
    Ok(material)
}

/// Bytes of stripes rounded up to whole 512-byte sectors (what is read and
/// decrypted), for a key of `key_bytes` (≤ 64) split into `stripes` (≤ MAX_STRIPES):
/// at most 4 MiB.
fn stripes_len(key_bytes: usize, stripes: u32) -> Option<usize> {
    if stripes == 0 || stripes > MAX_STRIPES {
        return None;
    }
    key_bytes.checked_mul(stripes as usize)?.div_ceil(512).checked_mul(512)
}

impl Header {
    /// Opens the volume with `passphrase`. `dev` is the device (or header file) this
    /// header was read from: keyslot areas are read from it.
    pub fn unlock<D: Read + Seek>(
        &self,
        dev: &mut D,
        passphrase: &[u8],
        options: &UnlockOptions,
    ) -> Result<Unlocked, LuksError> {
        match &self.format {
            Format::Luks1(p) => self.unlock_luks1(p, dev, passphrase, options),
            Format::Luks2(m) => self.unlock_luks2(m, dev, passphrase, options),
        }
    }

    fn unlock_luks2<D: Read + Seek>(
        &self,
        m: &Metadata,
        dev: &mut D,
        passphrase: &[u8],
        options: &UnlockOptions,
    ) -> Result<Unlocked, LuksError> {
        let device = self.device.as_str();
        let (segment, seg) = luks2_data_segment(device, m)?;
        let order: Vec<&Keyslot> = match options.keyslot {
            Some(n) => {
                let k = m.keyslots.iter().find(|k| k.index == n).ok_or_else(|| LuksError::NoKeyslot {
                    device: device.to_string(),
                    keyslot: Some(n),
                    why: "not in the header".into(),
                })?;
                vec![k]
            }
            None => {
                let mut v: Vec<&Keyslot> = m.keyslots.iter().filter(|k| k.kind == "luks2" && k.priority > 0).collect();
                v.sort_by_key(|k| (std::cmp::Reverse(k.priority), k.index));
                v
            }
        };
        let outcomes =
            order.iter().map(|k| (k.index, self.open_luks2_keyslot(m, segment, &seg, k, dev, passphrase, options)));
        let key = settle(device, options.keyslot, outcomes)?;
        Ok(Unlocked::new(key.1, key.0, seg))
    }

    #[allow(clippy::too_many_arguments)]
    fn open_luks2_keyslot<D: Read + Seek>(
        &self,
        m: &Metadata,
        segment: u32,
        seg: &DataSegment,
        k: &Keyslot,
        dev: &mut D,
        passphrase: &[u8],
        options: &UnlockOptions,
    ) -> Result<VolumeKey, SlotFailure> {
        let device = self.device.as_str();
        let n = k.index;
        let field = |f: &str| format!("keyslots.{n}.{f}");
        let body = k.body.as_ref().map_err(|p| p.clone().into_error(device))?;
        // The checks, cheapest first, before any KDF work.
        let digest =
            m.digests.iter().find(|d| d.keyslots.contains(&n) && d.segments.contains(&segment)).ok_or_else(|| {
                LuksError::invalid(device, format!("keyslots.{n}"), format!("bound to no digest of segment {segment}"))
            })?;
        let dbody = digest.body.as_ref().map_err(|p| p.clone().into_error(device))?;
        let dhash = Hash::from_name(&dbody.hash)
            .ok_or_else(|| LuksError::unsupported(device, format!("digest {} hash {:?}", digest.index, dbody.hash)))?;
        let dfield = format!("digests.{}.iterations", digest.index);
        options.limits.pbkdf2(dbody.iterations).map_err(|f| kdf_error(device, n, &dfield, f))?;
        let area_spec = CipherSpec::parse(&body.area_cipher)
            .ok_or_else(|| LuksError::unsupported(device, format!("keyslot {n} area cipher {:?}", body.area_cipher)))?;
        if !area_spec.key_len_ok(body.area_key_bytes) {
            return Err(LuksError::invalid(
                device,
                field("area.key_size"),
                format!("a {}-bit key does not fit {}", body.area_key_bytes * 8, body.area_cipher),
            )
            .into());
        }
        let seg_spec = CipherSpec::parse(&seg.cipher)
            .ok_or_else(|| LuksError::unsupported(device, format!("data cipher {:?}", seg.cipher)))?;
        if !seg_spec.key_len_ok(k.key_bytes) {
            return Err(LuksError::invalid(
                device,
                field("key_size"),
                format!("a {}-bit volume key does not fit {}", k.key_bytes * 8, seg.cipher),
            )
            .into());
        }
        let af_hash = Hash::from_name(&body.af_hash)
            .ok_or_else(|| LuksError::unsupported(device, format!("keyslot {n} AF hash {:?}", body.af_hash)))?;
        let read_len = stripes_len(k.key_bytes, body.af_stripes)
            .ok_or_else(|| LuksError::invalid(device, field("af.stripes"), "out of range"))?;
        if read_len as u64 > body.area_size {
            return Err(LuksError::invalid(
                device,
                field("area.size"),
                format!("{} bytes cannot hold {} stripes of {} bytes", body.area_size, body.af_stripes, k.key_bytes),
            )
            .into());
        }
        body.kdf.check(&options.limits).map_err(|f| kdf_error(device, n, &field("kdf"), f))?;

        // The work.
        let mut area_key = secret_buffer(body.area_key_bytes).ok_or_else(|| LuksError::OutOfMemory {
            device: device.to_string(),
            what: "a keyslot key".into(),
            bytes: body.area_key_bytes as u64,
        })?;
        body.kdf
            .derive(passphrase, &mut area_key, &options.limits)
            .map_err(|f| kdf_error(device, n, &field("kdf"), f))?;
        let material = read_and_decrypt_area(device, dev, n, body.area_offset, read_len, area_spec, &area_key)?;
        let candidate = af::merge(&material, k.key_bytes, body.af_stripes as usize, af_hash)
            .ok_or_else(|| LuksError::invalid(device, field("af"), "stripes do not fit the area"))?;
        let mut check = Zeroizing::new(vec![0u8; dbody.digest.len()]);
        dhash.pbkdf2(&candidate, &dbody.salt, dbody.iterations, &mut check);
        if constant_time_eq(&check, &dbody.digest) {
            Ok(VolumeKey::new(candidate))
        } else {
            Err(SlotFailure::Mismatch)
        }
    }

    fn unlock_luks1<D: Read + Seek>(
        &self,
        p: &Luks1Phdr,
        dev: &mut D,
        passphrase: &[u8],
        options: &UnlockOptions,
    ) -> Result<Unlocked, LuksError> {
        let device = self.device.as_str();
        let seg = self.data_segment()?;
        let spec = CipherSpec::parse(&seg.cipher)
            .ok_or_else(|| LuksError::unsupported(device, format!("cipher {:?}", seg.cipher)))?;
        let hash = Hash::from_name(&p.hash_spec)
            .ok_or_else(|| LuksError::unsupported(device, format!("hash spec {:?}", p.hash_spec)))?;
        let order: Vec<u32> = match options.keyslot {
            Some(n) => {
                let state = p.keyslots.get(n as usize).map(|k| k.state);
                if state != Some(LUKS1_KEYSLOT_ACTIVE) {
                    let why = if state.is_none() { "LUKS1 has keyslots 0 to 7" } else { "not active" };
                    return Err(LuksError::NoKeyslot { device: device.into(), keyslot: Some(n), why: why.into() });
                }
                vec![n]
            }
            None => {
                (0u32..).zip(&p.keyslots).filter(|(_, k)| k.state == LUKS1_KEYSLOT_ACTIVE).map(|(i, _)| i).collect()
            }
        };
        if let Err(f) = options.limits.pbkdf2(p.mk_digest_iterations) {
            // The digest is every keyslot's last step: no keyslot can open.
            return Err(kdf_error(device, order.first().copied().unwrap_or(0), "mk-digest-iter", f));
        }
        let outcomes = order.iter().map(|&n| (n, self.open_luks1_keyslot(p, n, spec, hash, dev, passphrase, options)));
        let (keyslot, key) = settle(device, options.keyslot, outcomes)?;
        Ok(Unlocked::new(key, keyslot, seg))
    }

    #[allow(clippy::too_many_arguments)]
    fn open_luks1_keyslot<D: Read + Seek>(
        &self,
        p: &Luks1Phdr,
        n: u32,
        spec: CipherSpec,
        hash: Hash,
        dev: &mut D,
        passphrase: &[u8],
        options: &UnlockOptions,
    ) -> Result<VolumeKey, SlotFailure> {
        let device = self.device.as_str();
        let field = |f: &str| format!("key-slot-{n} {f}");
        let k = p.keyslots.get(n as usize).ok_or_else(|| LuksError::invalid(device, field("index"), "past 7"))?;
        let key_bytes = p.key_bytes as usize;
        let read_len = stripes_len(key_bytes, k.stripes).ok_or_else(|| {
            LuksError::invalid(device, field("stripes"), format!("{} (1 to {MAX_STRIPES})", k.stripes))
        })?;
        let offset = u64::from(k.key_material_offset) * 512;
        // With the data behind the header (payload offset not 0: not a detached
        // header), the key material must end before it.
        let end = offset + read_len as u64;
        let payload = u64::from(p.payload_offset) * 512;
        if p.payload_offset != 0 && end > payload {
            return Err(LuksError::invalid(
                device,
                field("key-material-offset"),
                format!("key material {offset}..{end} runs into the data at {payload}"),
            )
            .into());
        }
        options.limits.pbkdf2(k.iterations).map_err(|f| kdf_error(device, n, &field("iterations"), f))?;

        let mut slot_key = secret_buffer(key_bytes).ok_or_else(|| LuksError::OutOfMemory {
            device: device.to_string(),
            what: "a keyslot key".into(),
            bytes: key_bytes as u64,
        })?;
        let kdf = Kdf::Pbkdf2 { hash: p.hash_spec.clone(), iterations: k.iterations, salt: k.salt.to_vec() };
        kdf.derive(passphrase, &mut slot_key, &options.limits)
            .map_err(|f| kdf_error(device, n, &field("iterations"), f))?;
        let material = read_and_decrypt_area(device, dev, n, offset, read_len, spec, &slot_key)?;
        let candidate = af::merge(&material, key_bytes, k.stripes as usize, hash)
            .ok_or_else(|| LuksError::invalid(device, field("stripes"), "do not fit the key material"))?;
        let mut check = [0u8; 20];
        hash.pbkdf2(&candidate, &p.mk_digest_salt, p.mk_digest_iterations, &mut check);
        if constant_time_eq(&check, &p.mk_digest) {
            Ok(VolumeKey::new(candidate))
        } else {
            Err(SlotFailure::Mismatch)
        }
    }
}

/// The first keyslot that opened, or the error that sums up why none did: a wrong
/// passphrase when every keyslot tried merely did not match, the keyslot's own error
/// when only one was tried, else the list.
fn settle(
    device: &str,
    named: Option<u32>,
    outcomes: impl Iterator<Item = (u32, Result<VolumeKey, SlotFailure>)>,
) -> Result<(u32, VolumeKey), LuksError> {
    let mut tried = Vec::new();
    let mut failures: Vec<(u32, LuksError)> = Vec::new();
    for (n, outcome) in outcomes {
        match outcome {
            Ok(key) => return Ok((n, key)),
            Err(SlotFailure::Mismatch) => tried.push(n),
            Err(SlotFailure::Error(e)) => failures.push((n, e)),
        }
    }
    if failures.is_empty() {
        if tried.is_empty() {
            return Err(LuksError::NoKeyslot {
                device: device.to_string(),
                keyslot: named,
                why: "no active keyslot (one whose priority is \"ignore\" is tried only when named)".into(),
            });
        }
        return Err(LuksError::WrongPassphrase { device: device.to_string(), tried });
    }
    if tried.is_empty() && failures.len() == 1 {
        if let Some((_, e)) = failures.pop() {
            return Err(e);
        }
    }
    let mut list: Vec<(u32, String)> =
        tried.into_iter().map(|n| (n, "passphrase does not match".to_string())).collect();
    list.extend(failures.into_iter().map(|(n, e)| (n, e.detail())));
    list.sort_by_key(|(n, _)| *n);
    Err(LuksError::KeyslotsFailed { device: device.to_string(), failures: list })
}
