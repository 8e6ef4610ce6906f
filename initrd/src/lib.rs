//! The rescue initrd: a deterministic cpio "newc" archive holding lifeboat as
//! `/init`, the kernel modules asked for with the closure of their `modules.dep`
//! dependencies, compressed with zstd, optionally as a segment appended to another
//! initrd (the kernel unpacks concatenated archives in order, so a later `/init`
//! replaces an earlier one).
//!
//! [`cpio`] writes and reads the format with every length checked; [`modules`]
//! resolves module names and dependencies; [`build`] assembles the archive.

pub mod cpio;
pub mod modules;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use cpio::{Archive, CpioEntry, Kind};

#[derive(Debug)]
pub enum Error {
    Io {
        at: PathBuf,
        source: io::Error,
    },
    /// A cpio archive is malformed.
    Cpio(String),
    /// A module was not found or `modules.dep` is malformed.
    Module(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { at, source } => write!(f, "{}: {source}", at.display()),
            Error::Cpio(w) => write!(f, "cpio: {w}"),
            Error::Module(w) => write!(f, "modules: {w}"),
        }
    }
}

impl std::error::Error for Error {}

fn io_at(at: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { at: at.to_owned(), source }
}

/// Compression of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

/// What goes into the rescue initrd.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// The lifeboat binary (static).
    pub binary: PathBuf,
    /// `/lib/modules/<kver>` of the kernel, when modules are wanted.
    pub modules_dir: Option<PathBuf>,
    pub modules: Vec<String>,
    pub compression: Compression,
}

/// Where module load order is recorded inside the initrd.
pub const LOAD_LIST: &str = "lib/modules/lifeboat.load";

/// Builds the archive bytes (compressed as asked).
pub fn build(spec: &BuildSpec) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "run", "sysroot", "tmp", "usr", "usr/bin", "etc", "lib", "lib/modules"] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    let bin = std::fs::read(&spec.binary).map_err(io_at(&spec.binary))?;
    a.file("init", 0o755, bin);
    a.symlink("usr/bin/lifeboat", "../../init");
    // Tells PID 1 that it runs from lifeboat's own initrd.
    a.file("etc/initrd-release", 0o644, b"NAME=\"lifeboat rescue initrd\"\nID=lifeboat\n".to_vec());
    if let Some(dir) = &spec.modules_dir {
        let resolved = modules::closure(dir, &spec.modules)?;
        let kver = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut list = String::new();
        for rel in &resolved {
            let src = dir.join(rel);
            let data = std::fs::read(&src).map_err(io_at(&src))?;
            let dest = format!("lib/modules/{kver}/{rel}");
            let mut acc = String::new();
            let parts: Vec<&str> = dest.split('/').collect();
            for p in &parts[..parts.len() - 1] {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(p);
                a.dir(&acc, 0o755);
            }
            a.file(&dest, 0o644, data);
            list.push_str(&dest);
            list.push('\n');
        }
        a.file(LOAD_LIST, 0o644, list.into_bytes());
    } else if !spec.modules.is_empty() {
        return Err(Error::Module("--module needs --modules DIR (the kernel's /lib/modules/<version>)".into()));
    }
    let raw = a.to_bytes();
    match spec.compression {
        Compression::None => Ok(raw),
        Compression::Zstd => {
            zstd::bulk::compress(&raw, 19).map_err(|e| Error::Io { at: PathBuf::from("<zstd>"), source: e })
        }
    }
}

/// `base` followed by `segment`, padded so the segment starts 4-byte aligned.
pub fn append(base: &[u8], segment: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(segment);
    out
}
