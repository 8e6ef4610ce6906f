//! The rescue initrd: a deterministic cpio "newc" archive holding lifeboat as
//! `/init`, kernel modules (the generic or host-only set, with dependencies, soft
//! dependencies and firmware, and the index PID 1 loads them by), compressed with
//! zstd, optionally as a segment appended to another
//! initrd (the kernel unpacks concatenated archives in order, so a later `/init`
//! replaces an earlier one).
//!
//! [`cpio`] writes and reads the format with every length checked; [`modules`]
//! chooses and describes the modules; [`files`] is where their bytes come from
//! (a directory, or a transaction's store); [`build`] assembles the archive.

pub mod cpio;
pub mod files;
pub mod modules;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// No file that goes into an initrd (the binary, a module, a firmware file)
/// is near this; a larger one is refused before it is read.
pub const MAX_FILE: u64 = 512 << 20;

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
    /// zstd at this level; `None`: 19 for an archive up to 8 MiB (lifeboat alone,
    /// a host-only set), 9 above, where 19 takes seconds for a tenth less.
    Zstd(Option<i32>),
}

/// What goes into the rescue initrd.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// The lifeboat binary (static), read by the caller from wherever it is.
    pub binary: Arc<[u8]>,
    /// Kernel modules, when wanted.
    pub modules: Option<ModuleSpec>,
    pub compression: Compression,
}

/// Which kernel's modules, and which of them.
#[derive(Clone, Debug)]
pub struct ModuleSpec {
    /// The kernel release: the initrd's `lib/modules/<kver>`.
    pub kver: String,
    /// `/lib/modules/<kver>` of the kernel.
    pub dir: Arc<dyn files::Files + Send + Sync>,
    /// `None`: the generic set; else the host-only set of these devices.
    pub host: Option<modules::HostDevices>,
    /// Modules named on the command line (added to either set).
    pub named: Vec<String>,
    /// Where firmware files are (`/lib/firmware`); `None`: nowhere.
    pub firmware: Option<Arc<dyn files::Files + Send + Sync>>,
    /// The kernel's configuration, when found: whether it decompresses modules
    /// itself. Without it, compressed modules are decompressed into the initrd.
    pub kernel_config: Option<String>,
}

/// What a build made.
#[derive(Debug, Default)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub modules: usize,
    /// Uncompressed bytes of the modules in it.
    pub module_bytes: u64,
    pub firmware: usize,
    /// For the user: built-in modules asked for, firmware not found, ...
    pub notes: Vec<String>,
}

/// Whether the kernel configuration says it decompresses modules of `format`.
fn kernel_decompresses(config: Option<&str>, format: modules::compress::Format) -> bool {
    let Some(c) = config else { return false };
    let on = |k: &str| c.lines().any(|l| l.trim() == format!("{k}=y"));
    on("CONFIG_MODULE_DECOMPRESS") && format.kconfig().is_some_and(on)
}

fn add_parents(a: &mut Archive, dest: &str) {
    let mut acc = String::new();
    let parts: Vec<&str> = dest.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(p);
        a.dir(&acc, 0o755);
    }
}

/// Builds the archive (compressed as asked).
pub fn build(spec: &BuildSpec) -> Result<Built> {
    let mut built = Built::default();
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "run", "sysroot", "tmp", "usr", "usr/bin", "etc", "lib", "lib/modules"] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    a.file("init", 0o755, spec.binary.to_vec());
    a.symlink("usr/bin/lifeboat", "../../init");
    // Tells PID 1 that it runs from lifeboat's own initrd.
    a.file("etc/initrd-release", 0o644, b"NAME=\"lifeboat rescue initrd\"\nID=lifeboat\n".to_vec());
    if let Some(ms) = &spec.modules {
        let ix = modules::ModuleIndex::load(ms.dir.as_ref())?;
        // Module and firmware files are a tree's: read inside it (symlinks
        // resolved there, never out of it), regular files only.
        let mut sel = modules::select(&ix, ms.host.as_ref(), &ms.named)?;
        let kver = &ms.kver;
        let mut boot = modules::BootIndex::default();
        let mut raw_modules: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for name in &sel.order {
            let rel = &ix.path[name];
            let src = ms.dir.shown(rel);
            let data = ms.dir.read(rel, MAX_FILE).map_err(io_at(&src))?;
            let format = modules::compress::Format::of_path(rel);
            // Checked whole either way: a corrupt module fails the build, not the boot.
            let plain = modules::compress::decompress(format, &src.display().to_string(), &data)?;
            built.module_bytes += plain.len() as u64;
            let (dest, bytes, compressed) = if kernel_decompresses(ms.kernel_config.as_deref(), format) {
                (format!("lib/modules/{kver}/{rel}"), data, format != modules::compress::Format::None)
            } else {
                (format!("lib/modules/{kver}/{}", format.strip(rel)), plain.clone(), false)
            };
            add_parents(&mut a, &dest);
            a.file(&dest, 0o644, bytes);
            raw_modules.insert(name.clone(), plain);
            let (pre, post) = sel.soft.get(name).cloned().unwrap_or_default();
            boot.modules.insert(
                name.clone(),
                modules::BootModule { path: dest, compressed, deps: ix.deps[name].clone(), pre, post },
            );
        }
        built.modules = sel.order.len();
        boot.aliases = ix.aliases.iter().filter(|(_, m)| boot.modules.contains_key(m)).cloned().collect();
        boot.always = sel.always.clone();
        let fw = ms.firmware.as_deref().map(|f| f as &dyn files::Files);
        modules::select::firmware(&mut sel, &raw_modules, fw);
        for name in &sel.firmware {
            let Some(fw) = fw else { break };
            let src = fw.shown(name);
            let data = fw.read(name, MAX_FILE).map_err(io_at(&src))?;
            let dest = format!("lib/firmware/{name}");
            add_parents(&mut a, &dest);
            a.file(&dest, 0o644, data);
        }
        built.firmware = sel.firmware.len();
        if !sel.builtin.is_empty() {
            built.notes.push(format!("built into the kernel, nothing to add: {}", sel.builtin.join(", ")));
        }
        if sel.firmware_missing > 0 {
            built.notes.push(format!(
                "{} firmware files the modules declare are not in {} (most are for hardware not here)",
                sel.firmware_missing,
                fw.map_or_else(|| "any firmware directory".to_owned(), |f| f.shown("").display().to_string())
            ));
        }
        a.file(modules::BOOT_INDEX, 0o644, boot.render().into_bytes());
    }
    let raw = a.to_bytes();
    built.bytes = match spec.compression {
        Compression::None => raw,
        Compression::Zstd(level) => {
            let level = level.unwrap_or(if raw.len() <= 8 << 20 { 19 } else { 9 });
            zstd::bulk::compress(&raw, level).map_err(|e| Error::Io { at: PathBuf::from("<zstd>"), source: e })?
        }
    };
    Ok(built)
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
