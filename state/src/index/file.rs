//! The state index file: a fixed header, then the zstd-compressed postcard payload.
//!
//! ```text
//! offset size
//!  0      8   magic "LBSTATE\0"
//!  8      2   format major (LE); a reader refuses any other
//! 10      2   format minor (LE); newer minors only add trailing optional data
//! 12      4   reserved, zero
//! 16      8   payload length in bytes (compressed)
//! 24      8   uncompressed length
//! 32      8   xxh3-64 of the payload
//! 40          payload
//! ```
//!
//! Writes are atomic: a temporary file is written and fsynced, the current file is
//! hard-linked to `.prev` (so some generation always exists under the main name), the
//! temporary file is renamed over the main name and the directory fsynced.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use lifeboat_codec::{Reader, Short};

use super::wire::PayloadWire;
use super::{IndexError, StateIndex};

pub const MAGIC: [u8; 8] = *b"LBSTATE\0";
pub const MAJOR: u16 = 1;
/// 1.1 adds [`super::wire::ExtensionWire`] (extended attributes, per-transaction
/// flags) after the 1.0 payload; 1.0 files are still read (no attributes known).
pub const MINOR: u16 = 1;
pub const HEADER_LEN: usize = 40;
/// Refuse payloads that would decompress beyond this (a hostile length).
const MAX_RAW: u64 = 1 << 30;
const ZSTD_LEVEL: i32 = 12;

/// Why an index file could not be read.
#[derive(Debug)]
pub enum IndexFileError {
    Io(io::Error),
    Truncated { have: u64, need: u64 },
    BadMagic,
    UnknownVersion { major: u16, minor: u16 },
    Checksum { stored: u64, actual: u64 },
    TooLarge(u64),
    Decompress(String),
    Decode(String),
    Invalid(IndexError),
}

impl fmt::Display for IndexFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexFileError::Io(e) => write!(f, "{e}"),
            IndexFileError::Truncated { have, need } => {
                write!(f, "truncated: {have} bytes, the header says {need}")
            }
            IndexFileError::BadMagic => write!(f, "not a lifeboat state index (bad magic)"),
            IndexFileError::UnknownVersion { major, minor } => {
                write!(f, "format version {major}.{minor} is not supported (this lifeboat reads {MAJOR}.x)")
            }
            IndexFileError::Checksum { stored, actual } => {
                write!(f, "checksum mismatch (stored {stored:016x}, computed {actual:016x})")
            }
            IndexFileError::TooLarge(n) => write!(f, "uncompressed size {n} is implausible"),
            IndexFileError::Decompress(e) => write!(f, "payload does not decompress: {e}"),
            IndexFileError::Decode(e) => write!(f, "payload does not decode: {e}"),
            IndexFileError::Invalid(e) => write!(f, "invalid content: {e}"),
        }
    }
}

impl std::error::Error for IndexFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IndexFileError::Io(e) => Some(e),
            IndexFileError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// Serialises a payload with its header.
pub fn encode(w: &PayloadWire) -> Vec<u8> {
    // postcard into a Vec cannot fail for these types (no maps, no non-string keys).
    let mut raw = postcard::to_allocvec(w).unwrap_or_default();
    raw.extend(postcard::to_allocvec(&w.ext).unwrap_or_default());
    let payload = zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&MAJOR.to_le_bytes());
    out.extend_from_slice(&MINOR.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Parses and validates a whole file's bytes.
pub fn decode(bytes: &[u8]) -> Result<StateIndex, IndexFileError> {
    let truncated = || IndexFileError::Truncated { have: bytes.len() as u64, need: HEADER_LEN as u64 };
    let mut r = Reader::new(bytes);
    let magic = r.take(8.min(bytes.len()), "magic").map_err(|_| truncated())?;
    if magic.len() == 8 && magic != MAGIC {
        return Err(IndexFileError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(truncated());
    }
    // The header is all there (checked above): a short read here cannot happen,
    // and would still be an error, never a panic.
    let header = |e: Short| IndexFileError::Decode(format!("header: {e}"));
    let major = r.u16_le("format major").map_err(header)?;
    let minor = r.u16_le("format minor").map_err(header)?;
    if major != MAJOR {
        return Err(IndexFileError::UnknownVersion { major, minor });
    }
    r.skip(4, "reserved").map_err(header)?;
    let len = r.u64_le("payload length").map_err(header)?;
    let raw_len = r.u64_le("uncompressed length").map_err(header)?;
    let stored = r.u64_le("payload checksum").map_err(header)?;
    // Bytes after the payload belong to newer minor versions; the checksum covers ours.
    let payload = usize::try_from(len)
        .ok()
        .and_then(|n| r.take(n, "payload").ok())
        .ok_or(IndexFileError::Truncated { have: bytes.len() as u64, need: (HEADER_LEN as u64).saturating_add(len) })?;
    if raw_len > MAX_RAW {
        return Err(IndexFileError::TooLarge(raw_len));
    }
    let actual = xxhash_rust::xxh3::xxh3_64(payload);
    if actual != stored {
        return Err(IndexFileError::Checksum { stored, actual });
    }
    // A plausible length (zstd rarely does better than 32:1 on an index) is
    // decompressed in one call into a buffer of exactly that size; an
    // implausible one is streamed, so memory follows what the payload really
    // holds and never what a hostile header claims.
    let raw = if raw_len <= (payload.len() as u64).saturating_mul(32) {
        zstd::bulk::decompress(payload, raw_len as usize).map_err(|e| IndexFileError::Decompress(e.to_string()))?
    } else {
        use std::io::Read;
        let mut raw = Vec::new();
        let dec =
            zstd::stream::read::Decoder::with_buffer(payload).map_err(|e| IndexFileError::Decompress(e.to_string()))?;
        dec.take(raw_len + 1).read_to_end(&mut raw).map_err(|e| IndexFileError::Decompress(e.to_string()))?;
        raw
    };
    if raw.len() as u64 != raw_len {
        return Err(IndexFileError::Decompress(format!("{} bytes, the header says {raw_len}", raw.len())));
    }
    let (mut wire, mut rest): (PayloadWire, &[u8]) =
        postcard::take_from_bytes(&raw).map_err(|e| IndexFileError::Decode(e.to_string()))?;
    if minor >= 1 {
        let (ext, after) = postcard::take_from_bytes::<super::wire::ExtensionWire>(rest)
            .map_err(|e| IndexFileError::Decode(format!("format 1.1 additions: {e}")))?;
        wire.ext = ext;
        rest = after;
    }
    // Bytes after what this version knows belong to a newer minor version.
    if !rest.is_empty() && minor <= MINOR {
        return Err(IndexFileError::Decode(format!("{} trailing bytes", rest.len())));
    }
    StateIndex::from_wire(wire).map_err(IndexFileError::Invalid)
}

/// The outcome of loading: the index and what the user should be told.
#[derive(Debug)]
pub struct Loaded {
    pub index: StateIndex,
    /// Set when the main file was bad and `.prev` was used instead.
    pub fallback: Option<String>,
    /// False when neither file exists (a fresh root).
    pub existed: bool,
    /// Other things the user should know (an import from moss, a stale index).
    pub notes: Vec<String>,
}

/// A failure to load either generation.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub error: IndexFileError,
    pub prev: Option<Box<(PathBuf, IndexFileError)>>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)?;
        if let Some(pe) = &self.prev {
            let (p, e) = &**pe;
            write!(f, "; {}: {}", p.display(), e)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

pub fn prev_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

fn read_one(path: &Path) -> Result<Option<StateIndex>, IndexFileError> {
    // A FIFO or a device put under the index's name is refused, never waited on.
    match lifeboat_fs::foreign::read_file(path, MAX_RAW) {
        Ok(b) => decode(&b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IndexFileError::Io(e)),
    }
}

/// Loads `path`, falling back to `path.prev` when the main file is missing or bad.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let prev = prev_path(path);
    let main_err = match read_one(path) {
        Ok(Some(index)) => return Ok(Loaded { index, fallback: None, existed: true, notes: Vec::new() }),
        Ok(None) => None,
        Err(e) => Some(e),
    };
    match read_one(&prev) {
        Ok(Some(index)) => {
            let why = match &main_err {
                Some(e) => format!("{}: {e}; using the previous generation {}", path.display(), prev.display()),
                None => format!("{} is missing; using the previous generation {}", path.display(), prev.display()),
            };
            Ok(Loaded { index, fallback: Some(why), existed: true, notes: Vec::new() })
        }
        Ok(None) => match main_err {
            None => Ok(Loaded { index: StateIndex::empty(), fallback: None, existed: false, notes: Vec::new() }),
            Some(error) => Err(LoadError { path: path.to_owned(), error, prev: None }),
        },
        Err(pe) => Err(LoadError {
            path: path.to_owned(),
            error: main_err.unwrap_or(IndexFileError::Io(io::Error::from(io::ErrorKind::NotFound))),
            prev: Some(Box::new((prev, pe))),
        }),
    }
}

/// Atomically replaces `path` with `w`. With `keep_prev`, the current file first
/// becomes `.prev` (hard-linked, so some generation is always under the main
/// name); without it — the current file is the damaged one a fallback load
/// skipped — the good `.prev` is left as it is.
pub fn store(path: &Path, w: &PayloadWire, keep_prev: bool) -> io::Result<()> {
    let bytes = encode(w);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = lifeboat_fs::open_dir(parent)?;
    if keep_prev && path.exists() {
        let mut ptmp = path.as_os_str().to_owned();
        ptmp.push(".prev.tmp");
        let ptmp = PathBuf::from(ptmp);
        let _ = fs::remove_file(&ptmp);
        fs::hard_link(path, &ptmp)?;
        fs::rename(&ptmp, prev_path(path))?;
        crate::failpoint::hit("index-prev-linked");
    }
    crate::failpoint::hit("index-write");
    lifeboat_fs::atomic_write_at(dir.as_fd(), name.as_bytes(), &bytes, 0o644)?;
    crate::failpoint::hit("index-renamed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TxMeta;
    use crate::layout::tests::{dir, file};
    use crate::layout::Layout;

    fn sample() -> Vec<u8> {
        let l = Layout::new(vec![dir("bin"), file("bin/x", b"x")]).unwrap();
        let m = TxMeta { id: 1, created: 5, summary: "s".into(), parent: None, kernels: vec![] };
        encode(&StateIndex::build(2, &[(m, &l)]))
    }

    #[test]
    fn header_is_pinned() {
        let b = sample();
        assert_eq!(&b[..8], b"LBSTATE\0");
        assert_eq!(&b[8..16], &[1, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(lifeboat_codec::le_u64_at(&b, 16), Some((b.len() - HEADER_LEN) as u64));
        assert!(decode(&b).is_ok());
    }

    /// What lifeboat wrote before format 1.1: the same header with minor 0, and
    /// the payload without the additions after it.
    fn encode_1_0(w: &PayloadWire) -> Vec<u8> {
        let raw = postcard::to_allocvec(w).unwrap();
        let payload = zstd::bulk::compress(&raw, 3).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn format_1_0_still_reads_and_1_1_keeps_attributes() {
        use crate::attrs::{AttrSet, Xattr};
        let cap = AttrSet::new(vec![Xattr {
            name: b"security.capability".as_slice().into(),
            value: vec![1, 0, 0, 2].into(),
        }])
        .unwrap();
        let mut capped = file("bin/ping", b"ping");
        capped.attrs = cap;
        let l = Layout::new(vec![dir("bin"), file("bin/x", b"x"), capped]).unwrap();
        let m = TxMeta { id: 1, created: 5, summary: "s".into(), parent: None, kernels: vec![] };
        let w = StateIndex::build(2, &[(m, &l)]);
        // 1.1: attributes and the flag that they were recorded come back.
        let idx = decode(&encode(&w)).unwrap();
        assert_eq!(idx.layout(1).unwrap(), l);
        assert!(idx.layout(1).unwrap().attrs_recorded());
        // 1.0 (no additions): the same layout without attributes, which are
        // then not known (never compared), not "none".
        let old = decode(&encode_1_0(&w)).unwrap();
        let got = old.layout(1).unwrap();
        assert!(!got.attrs_recorded());
        assert!(got.entries().iter().all(|e| e.attrs.is_none()));
        assert_eq!(got.entries().len(), l.entries().len());
        // A 1.0 reader stops after the 1.0 payload: what 1.1 adds is after it.
        let raw = postcard::to_allocvec(&w).unwrap();
        let (back, rest): (PayloadWire, &[u8]) = postcard::take_from_bytes(&raw).unwrap();
        assert!(rest.is_empty() && back.transactions == w.transactions);
    }

    #[test]
    fn every_corruption_is_named() {
        let b = sample();
        assert!(matches!(decode(&b[..20]), Err(IndexFileError::Truncated { .. })));
        assert!(matches!(decode(&b[..b.len() - 1]), Err(IndexFileError::Truncated { .. })));
        let mut m = b.clone();
        m[0] = b'X';
        assert!(matches!(decode(&m), Err(IndexFileError::BadMagic)));
        let mut m = b.clone();
        m[8] = 2;
        assert!(matches!(decode(&m), Err(IndexFileError::UnknownVersion { major: 2, .. })));
        let mut m = b.clone();
        let last = m.len() - 1;
        m[last] ^= 1;
        assert!(matches!(decode(&m), Err(IndexFileError::Checksum { .. })));
        let mut m = b.clone();
        m[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&m), Err(IndexFileError::TooLarge(_))));
        assert!(matches!(decode(b""), Err(IndexFileError::Truncated { .. })));
        // A hostile payload length neither overflows nor allocates.
        let mut m = b.clone();
        m[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&m), Err(IndexFileError::Truncated { .. })));
        m[16..24].copy_from_slice(&(u64::MAX - 30).to_le_bytes());
        assert!(matches!(decode(&m), Err(IndexFileError::Truncated { .. })));
    }

    #[test]
    fn falls_back_to_prev() {
        let d = std::env::temp_dir().join(format!("lb-idx-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("state.idx");
        let l = Layout::new(vec![dir("bin")]).unwrap();
        let m = |id| TxMeta { id, created: 5, summary: "s".into(), parent: None, kernels: vec![] };
        store(&p, &StateIndex::build(2, &[(m(1), &l)]), true).unwrap();
        store(&p, &StateIndex::build(3, &[(m(1), &l), (m(2), &l)]), true).unwrap();
        assert_eq!(load(&p).unwrap().index.transactions().count(), 2);
        fs::write(&p, b"garbage! garbage! garbage! garbage! garbage!").unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.index.transactions().count(), 1);
        let why = got.fallback.unwrap();
        assert!(why.contains("state.idx") && why.contains("bad magic"), "{why}");
        // A write after a fallback load never puts the damaged file over `.prev`.
        store(&p, &StateIndex::build(4, &[(m(1), &l), (m(3), &l)]), false).unwrap();
        assert_eq!(read_one(&prev_path(&p)).unwrap().unwrap().transactions().count(), 1);
        assert_eq!(load(&p).unwrap().index.transactions().count(), 2);
        fs::write(&p, b"garbage! garbage! garbage! garbage! garbage!").unwrap();
        fs::write(prev_path(&p), b"LBSTATE\0").unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("state.idx.prev") && err.contains("truncated"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }
}
