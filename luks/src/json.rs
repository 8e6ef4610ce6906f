//! LUKS2 metadata: the JSON area that follows each 4096-byte binary header, up to
//! the header's `hdr_size`. It is read with serde into raw structures mirroring the
//! specification (the 64-bit quantities — offsets, sizes, `iv_tweak`, `json_size`,
//! `keyslots_size` — are decimal strings there, the small ones JSON numbers) and
//! then checked into the typed model the unlock uses. Malformed structure (a key
//! that is not a number, a number string that does not parse, base64 that does not
//! decode, a `json_size` that does not match the header) makes the whole copy
//! unusable, so the other copy is tried; what only stops one keyslot or digest (a
//! KDF lifeboat lacks, an area outside the keyslots area) is kept with it, so the
//! other keyslots still open.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::LuksError;
use crate::kdf::{Argon2Kind, Kdf};

/// Key sizes beyond 512 bits are no cipher LUKS uses; refusing them bounds every
/// buffer a key sizes.
pub(crate) const MAX_KEY_BYTES: usize = 64;

/// cryptsetup always writes 4000 stripes. Anything up to this keeps a keyslot's
/// material (stripes × key bytes) at most 4 MiB.
pub(crate) const MAX_STRIPES: u32 = 65536;

/// LUKS2 has keyslots 0 to 31. Refusing more bounds the KDF runs one unlock can
/// make, whatever the JSON area (up to 4 MiB) lists.
pub(crate) const MAX_KEYSLOTS: u32 = 32;

/// The size of LUKS2's binary header, before the JSON area.
pub(crate) const BINARY_HEADER_SIZE: u64 = 4096;

#[derive(Deserialize)]
struct RawMetadata {
    keyslots: BTreeMap<String, RawKeyslot>,
    segments: BTreeMap<String, RawSegment>,
    digests: BTreeMap<String, RawDigest>,
    config: RawConfig,
}

#[derive(Deserialize)]
struct RawKeyslot {
    #[serde(rename = "type")]
    kind: String,
    key_size: u32,
    area: RawArea,
    kdf: Option<RawKdf>,
    af: Option<RawAf>,
    priority: Option<u32>,
}

#[derive(Deserialize)]
struct RawArea {
    #[serde(rename = "type")]
    kind: String,
    offset: String,
    size: String,
    encryption: Option<String>,
    key_size: Option<u32>,
}

#[derive(Deserialize)]
struct RawKdf {
    #[serde(rename = "type")]
    kind: String,
    hash: Option<String>,
    iterations: Option<u32>,
    time: Option<u32>,
    memory: Option<u32>,
    cpus: Option<u32>,
    salt: Option<String>,
}

#[derive(Deserialize)]
struct RawAf {
    #[serde(rename = "type")]
    kind: String,
    stripes: Option<u32>,
    hash: Option<String>,
}

#[derive(Deserialize)]
struct RawSegment {
    #[serde(rename = "type")]
    kind: String,
    offset: String,
    size: String,
    iv_tweak: Option<String>,
    encryption: Option<String>,
    sector_size: Option<u32>,
    flags: Option<Vec<String>>,
    integrity: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDigest {
    #[serde(rename = "type")]
    kind: String,
    keyslots: Vec<String>,
    segments: Vec<String>,
    hash: Option<String>,
    iterations: Option<u32>,
    salt: Option<String>,
    digest: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    json_size: String,
    keyslots_size: String,
    flags: Option<Vec<String>>,
    requirements: Option<RawRequirements>,
}

#[derive(Deserialize)]
struct RawRequirements {
    mandatory: Option<Vec<String>>,
}

/// Why one keyslot or digest cannot be used; the caller adds the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    Unsupported(String),
    Invalid { field: String, problem: String },
}

impl Problem {
    pub(crate) fn into_error(self, device: &str) -> LuksError {
        match self {
            Problem::Unsupported(what) => LuksError::unsupported(device, what),
            Problem::Invalid { field, problem } => LuksError::invalid(device, field, problem),
        }
    }

    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Problem::Invalid { field: field.into(), problem: problem.into() }
    }
}

/// The LUKS2 metadata of one header copy, checked.
#[derive(Clone, Debug)]
pub(crate) struct Metadata {
    pub keyslots: Vec<Keyslot>,
    pub segments: Vec<Segment>,
    pub digests: Vec<Digest>,
    pub keyslots_size: u64,
    pub flags: Vec<String>,
    pub requirements: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Keyslot {
    pub index: u32,
    pub kind: String,
    /// The volume key's size.
    pub key_bytes: usize,
    /// 0 ignore (only opened when named), 1 normal, 2 high.
    pub priority: u32,
    pub body: Result<KeyslotBody, Problem>,
}

/// What a `luks2` keyslot needs to open.
#[derive(Clone, Debug)]
pub(crate) struct KeyslotBody {
    pub area_offset: u64,
    pub area_size: u64,
    pub area_cipher: String,
    pub area_key_bytes: usize,
    pub kdf: Kdf,
    pub af_stripes: u32,
    pub af_hash: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub index: u32,
    pub kind: String,
    pub offset: u64,
    /// `None`: "dynamic", to the end of the device.
    pub size: Option<u64>,
    pub iv_tweak: u64,
    pub encryption: Option<String>,
    pub sector_size: Option<u32>,
    pub flags: Vec<String>,
    pub integrity: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Digest {
    pub index: u32,
    pub keyslots: Vec<u32>,
    pub segments: Vec<u32>,
    pub body: Result<Pbkdf2Digest, Problem>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pbkdf2Digest {
    pub hash: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

/// Parses and checks the JSON area of a header whose `hdr_size` is `hdr_size`
/// (`area` is everything after the binary header; the JSON ends at the first NUL).
pub(crate) fn parse(device: &str, area: &[u8], hdr_size: u64) -> Result<Metadata, LuksError> {
    let text = area.split(|&b| b == 0).next().unwrap_or_default();
    let raw: RawMetadata =
        serde_json::from_slice(text).map_err(|e| LuksError::invalid(device, "JSON metadata", e.to_string()))?;

    let json_size = number(device, "config.json_size", &raw.config.json_size)?;
    if json_size != hdr_size.saturating_sub(BINARY_HEADER_SIZE) {
        return Err(LuksError::invalid(
            device,
            "config.json_size",
            format!("{json_size} does not match the header size {hdr_size} less the 4096-byte binary header"),
        ));
    }
    let keyslots_size = number(device, "config.keyslots_size", &raw.config.keyslots_size)?;
    // The keyslots area follows both header copies.
    let area_start = hdr_size.saturating_mul(2);
    let area_end = area_start.saturating_add(keyslots_size);

    let mut keyslots = Vec::new();
    for (key, k) in &raw.keyslots {
        let index = object_index(device, "keyslots", key)?;
        if index >= MAX_KEYSLOTS {
            return Err(LuksError::invalid(device, "keyslots", format!("keyslot {index} (LUKS2 has 0 to 31)")));
        }
        let body = keyslot_body(index, k, area_start, area_end);
        let key_bytes = k.key_size as usize;
        keyslots.push(Keyslot { index, kind: k.kind.clone(), key_bytes, priority: k.priority.unwrap_or(1), body });
    }
    keyslots.sort_by_key(|k| k.index);

    let mut segments = Vec::new();
    for (key, s) in &raw.segments {
        let index = object_index(device, "segments", key)?;
        let field = |f: &str| format!("segments.{index}.{f}");
        let size = match s.size.as_str() {
            "dynamic" => None,
            n => Some(number(device, &field("size"), n)?),
        };
        segments.push(Segment {
            index,
            kind: s.kind.clone(),
            offset: number(device, &field("offset"), &s.offset)?,
            size,
            iv_tweak: match &s.iv_tweak {
                Some(t) => number(device, &field("iv_tweak"), t)?,
                None => 0,
            },
            encryption: s.encryption.clone(),
            sector_size: s.sector_size,
            flags: s.flags.clone().unwrap_or_default(),
            integrity: s.integrity.is_some(),
        });
    }
    segments.sort_by_key(|s| s.index);

    let mut digests = Vec::new();
    for (key, d) in &raw.digests {
        let index = object_index(device, "digests", key)?;
        let mut slots = Vec::new();
        for k in &d.keyslots {
            slots.push(object_index(device, &format!("digests.{index}.keyslots"), k)?);
        }
        let mut segs = Vec::new();
        for s in &d.segments {
            segs.push(object_index(device, &format!("digests.{index}.segments"), s)?);
        }
        digests.push(Digest { index, keyslots: slots, segments: segs, body: digest_body(index, d) });
    }
    digests.sort_by_key(|d| d.index);

    Ok(Metadata {
        keyslots,
        segments,
        digests,
        keyslots_size,
        flags: raw.config.flags.unwrap_or_default(),
        requirements: raw.config.requirements.and_then(|r| r.mandatory).unwrap_or_default(),
    })
}

fn keyslot_body(index: u32, k: &RawKeyslot, area_start: u64, area_end: u64) -> Result<KeyslotBody, Problem> {
    let field = |f: &str| format!("keyslots.{index}.{f}");
    if k.kind != "luks2" {
        return Err(Problem::Unsupported(format!("keyslot {index} has type {:?}, not a passphrase keyslot", k.kind)));
    }
    let key_bytes = k.key_size as usize;
    if key_bytes == 0 || key_bytes > MAX_KEY_BYTES {
        return Err(Problem::invalid(field("key_size"), format!("{key_bytes} bytes (at most {MAX_KEY_BYTES})")));
    }
    let area = &k.area;
    if area.kind != "raw" {
        return Err(Problem::Unsupported(format!("keyslot {index} area type {:?}", area.kind)));
    }
    let area_offset = string_number(&field("area.offset"), &area.offset)?;
    let area_size = string_number(&field("area.size"), &area.size)?;
    let area_stop = area_offset.checked_add(area_size);
    if area_offset < area_start || area_stop.is_none_or(|e| e > area_end) {
        return Err(Problem::invalid(
            field("area"),
            format!("{area_size} bytes at {area_offset} are outside the keyslots area {area_start}..{area_end}"),
        ));
    }
    let area_cipher = area.encryption.clone().ok_or_else(|| Problem::invalid(field("area.encryption"), "missing"))?;
    let area_key_bytes = area.key_size.ok_or_else(|| Problem::invalid(field("area.key_size"), "missing"))? as usize;
    if area_key_bytes == 0 || area_key_bytes > MAX_KEY_BYTES {
        return Err(Problem::invalid(
            field("area.key_size"),
            format!("{area_key_bytes} bytes (at most {MAX_KEY_BYTES})"),
        ));
    }

    let raw_kdf = k.kdf.as_ref().ok_or_else(|| Problem::invalid(field("kdf"), "missing"))?;
    let missing = |f: &str| Problem::invalid(field(&format!("kdf.{f}")), "missing");
    let salt_text = raw_kdf.salt.as_deref().ok_or_else(|| missing("salt"))?;
    let salt = base64(salt_text).ok_or_else(|| Problem::invalid(field("kdf.salt"), "not base64"))?;
    let kdf = match raw_kdf.kind.as_str() {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: raw_kdf.hash.clone().ok_or_else(|| missing("hash"))?,
            iterations: raw_kdf.iterations.ok_or_else(|| missing("iterations"))?,
            salt,
        },
        "argon2i" | "argon2id" => Kdf::Argon2 {
            kind: if raw_kdf.kind == "argon2i" { Argon2Kind::Argon2i } else { Argon2Kind::Argon2id },
            time: raw_kdf.time.ok_or_else(|| missing("time"))?,
            memory_kib: raw_kdf.memory.ok_or_else(|| missing("memory"))?,
            lanes: raw_kdf.cpus.ok_or_else(|| missing("cpus"))?,
            salt,
        },
        other => return Err(Problem::Unsupported(format!("keyslot {index} KDF {other:?}"))),
    };

    let af = k.af.as_ref().ok_or_else(|| Problem::invalid(field("af"), "missing"))?;
    if af.kind != "luks1" {
        return Err(Problem::Unsupported(format!("keyslot {index} anti-forensic splitter {:?}", af.kind)));
    }
    let af_stripes = af.stripes.ok_or_else(|| Problem::invalid(field("af.stripes"), "missing"))?;
    if af_stripes == 0 || af_stripes > MAX_STRIPES {
        return Err(Problem::invalid(field("af.stripes"), format!("{af_stripes} (1 to {MAX_STRIPES})")));
    }
    let af_hash = af.hash.clone().ok_or_else(|| Problem::invalid(field("af.hash"), "missing"))?;
    Ok(KeyslotBody { area_offset, area_size, area_cipher, area_key_bytes, kdf, af_stripes, af_hash })
}

fn digest_body(index: u32, d: &RawDigest) -> Result<Pbkdf2Digest, Problem> {
    let field = |f: &str| format!("digests.{index}.{f}");
    if d.kind != "pbkdf2" {
        return Err(Problem::Unsupported(format!("digest {index} type {:?}", d.kind)));
    }
    let missing = |f: &str| Problem::invalid(field(f), "missing");
    let salt = d.salt.as_deref().ok_or_else(|| missing("salt"))?;
    let digest = d.digest.as_deref().ok_or_else(|| missing("digest"))?;
    let digest = base64(digest).ok_or_else(|| Problem::invalid(field("digest"), "not base64"))?;
    if digest.is_empty() || digest.len() > 64 {
        return Err(Problem::invalid(field("digest"), format!("{} bytes (1 to 64)", digest.len())));
    }
    Ok(Pbkdf2Digest {
        hash: d.hash.clone().ok_or_else(|| missing("hash"))?,
        iterations: d.iterations.ok_or_else(|| missing("iterations"))?,
        salt: base64(salt).ok_or_else(|| Problem::invalid(field("salt"), "not base64"))?,
        digest,
    })
}

/// A decimal number stored as a string (the specification's 64-bit quantities).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn string_number(field: &str, s: &str) -> Result<u64, Problem> {
    parse_decimal(s).ok_or_else(|| Problem::invalid(field, format!("{s:?} is not a decimal number")))
}

fn number(device: &str, field: &str, s: &str) -> Result<u64, LuksError> {
    string_number(field, s).map_err(|p| p.into_error(device))
}

/// An object key or a reference to one: a small decimal number.
fn object_index(device: &str, field: &str, s: &str) -> Result<u32, LuksError> {
    parse_decimal(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| LuksError::invalid(device, field, format!("{s:?} is not an index")))
}

/// Standard base64 with optional padding (json-c writes it padded).
pub(crate) fn base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing character carries fewer than 8 bits: not base64.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_and_refuses_junk() {
        assert_eq!(base64("").unwrap(), b"");
        assert_eq!(base64("Zg==").unwrap(), b"f");
        assert_eq!(base64("Zm8=").unwrap(), b"fo");
        assert_eq!(base64("Zm9v").unwrap(), b"foo");
        assert_eq!(base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64("/+8=").unwrap(), [0xff, 0xef]);
        assert!(base64("Zm9v!").is_none());
        assert!(base64("Z").is_none());
    }

    #[test]
    fn decimal_strings_are_strict() {
        assert_eq!(parse_decimal("16777216"), Some(16777216));
        assert_eq!(parse_decimal("+5"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("18446744073709551616"), None);
        assert_eq!(parse_decimal("-1"), None);
    }

    const SAMPLE: &str = r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"argon2id","time":4,"memory":1024,"cpus":2,"salt":"MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="}},
      "2":{"type":"luks2","key_size":64,"priority":2,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"99999999","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"AAAA"}}},
      "tokens":{},
      "segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},
      "digests":{"0":{"type":"pbkdf2","keyslots":["0","2"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"AAAA","digest":"AAAA"}},
      "config":{"json_size":"12288","keyslots_size":"16744448","flags":["allow-discards"],"requirements":{"mandatory":["online-reencrypt-v2"]}}}"#;

    #[test]
    fn sample_metadata_parses_and_a_bad_keyslot_stays_alone() {
        let m = parse("t", SAMPLE.as_bytes(), 16384).unwrap();
        assert_eq!(m.keyslots.len(), 2);
        let k0 = m.keyslots[0].body.as_ref().unwrap();
        assert_eq!((k0.area_offset, k0.area_size, k0.af_stripes), (32768, 258048, 4000));
        assert!(matches!(k0.kdf, Kdf::Argon2 { kind: Argon2Kind::Argon2id, time: 4, memory_kib: 1024, lanes: 2, .. }));
        assert_eq!(m.keyslots[1].priority, 2);
        assert!(matches!(&m.keyslots[1].body, Err(Problem::Invalid { field, .. }) if field == "keyslots.2.area"));
        assert_eq!(m.segments[0].offset, 16777216);
        assert_eq!(m.segments[0].size, None);
        assert_eq!(m.digests[0].keyslots, [0, 2]);
        assert_eq!(m.flags, ["allow-discards"]);
        assert_eq!(m.requirements, ["online-reencrypt-v2"]);
        assert_eq!(m.keyslots_size, 16744448);
    }

    #[test]
    fn structural_damage_names_the_field() {
        let e = parse("disk.img", SAMPLE.as_bytes(), 32768).unwrap_err();
        assert!(e.to_string().starts_with("disk.img: LUKS header field config.json_size: 12288 does not match"), "{e}");
        let bad = SAMPLE.replace(r#""offset":"16777216""#, r#""offset":"16M""#);
        let e = parse("disk.img", bad.as_bytes(), 16384).unwrap_err();
        assert_eq!(e.to_string(), "disk.img: LUKS header field segments.0.offset: \"16M\" is not a decimal number");
        let e = parse("disk.img", b"{\"keyslots\":", 16384).unwrap_err();
        assert!(e.to_string().starts_with("disk.img: LUKS header field JSON metadata: EOF"), "{e}");
        let bad = SAMPLE.replace(r#""keyslots":["0","2"]"#, r#""keyslots":["x"]"#);
        assert!(parse("d", bad.as_bytes(), 16384).is_err());
        let bad = SAMPLE.replace(r#""2":{"type":"luks2""#, r#""32":{"type":"luks2""#);
        let e = parse("d", bad.as_bytes(), 16384).unwrap_err();
        assert_eq!(e.to_string(), "d: LUKS header field keyslots: keyslot 32 (LUKS2 has 0 to 31)");
    }
}
