//! The binary's error: a library's typed error, or one of the things the binary
//! itself refuses (a bad argument, a missing ESP, an entry that does not exist).
//! Every variant names what it is about, so a user on a serial console can act on
//! it; the library's error is kept as the [`source`](std::error::Error::source).

use std::fmt;
use std::io;
use std::path::PathBuf;

use lifeboat_fs::shown::shown_path;
use lifeboat_state::index::file::LoadError;

#[derive(Debug)]
pub enum Error {
    /// Transactions, the store, the index.
    State(lifeboat_state::Error),
    /// Boot partitions, entries or variables.
    Esp(lifeboat_esp::Error),
    Boot(lifeboat_boot::Error),
    Initrd(lifeboat_initrd::Error),
    /// A syscall of the binary's own failed on a named path.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A command-line argument that cannot mean anything: `what` was given as
    /// `value`; `expected` says what would do.
    BadArgument {
        what: &'static str,
        value: String,
        expected: String,
    },
    /// A command line that cannot mean anything (exit 64, as README says):
    /// options that cannot go together, a missing argument, a value of the
    /// wrong form. `what` names the option or argument; `why` says what would do.
    Usage {
        what: String,
        why: String,
    },
    /// No ESP was named and none can be found for `root`.
    NoEsp {
        root: PathBuf,
        hint: String,
    },
    /// The disk has no partition of the kind asked for.
    NoPartition {
        kind: &'static str,
        disk: PathBuf,
    },
    /// The root has no entry token (`/etc/kernel/entry-token`, machine-id, os-release).
    NoEntryToken(PathBuf),
    /// No block device backs `path`.
    NoDisk(PathBuf),
    /// `boot sync` found no transaction with a kernel.
    NoKernel,
    /// No boot entry matches `pattern` on `$BOOT`.
    NoEntry {
        pattern: String,
    },
    /// A file named is not of the kind the command needs.
    WrongFile {
        path: PathBuf,
        expected: &'static str,
    },
    /// The rescue initrd the entries carry is on `$BOOT` no more and its source
    /// no longer holds it: a sync without it would drop the rescue path.
    RescueInitrdGone {
        name: String,
        from: Option<String>,
    },
    /// `initrd build` without `--binary` found no rescue build of lifeboat at
    /// the places it looks (`tried`), and this binary is the host build.
    NoRescueBinary {
        tried: Vec<PathBuf>,
    },
    /// A repair left entries broken: what it could not recover.
    Unrecoverable {
        summary: String,
    },
    /// Secure Boot cannot sign: a key or certificate file, the stub or a
    /// signing tool, and what is wrong with it.
    SecureBoot {
        path: PathBuf,
        problem: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    pub fn usage(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Usage { what: what.into(), why: why.into() }
    }

    pub fn bad_arg(what: &'static str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Error::BadArgument { what, value: value.into(), expected: expected.into() }
    }

    /// The index load failure, when that is what this is.
    pub fn index(&self) -> Option<&LoadError> {
        match self {
            Error::State(lifeboat_state::Error::Index(e)) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::State(e) => write!(f, "{e}"),
            Error::Esp(e) => write!(f, "{e}"),
            Error::Boot(e) => write!(f, "{e}"),
            Error::Initrd(e) => write!(f, "{e}"),
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", shown_path(path)),
            Error::BadArgument { what, value, expected } => write!(f, "{what} {value:?}: {expected}"),
            Error::Usage { what, why } => write!(f, "{what}: {why}"),
            Error::NoEsp { root, hint } => write!(f, "no ESP for {}: {hint}", root.display()),
            Error::NoPartition { kind, disk } => write!(f, "no {kind} partition on {}", disk.display()),
            Error::NoEntryToken(root) => write!(
                f,
                "no entry token for {}: write one to etc/kernel/entry-token, or set etc/machine-id or os-release ID",
                root.display()
            ),
            Error::NoDisk(p) => write!(f, "no disk holds {}", p.display()),
            Error::NoKernel => {
                write!(f, "no transaction carries a kernel lifeboat can boot (the notes above say why): nothing to put on $BOOT")
            }
            Error::NoEntry { pattern } => {
                write!(f, "no entry on $BOOT matches {pattern:?}; run `lifeboat boot sync` first?")
            }
            Error::WrongFile { path, expected } => write!(f, "{} is not {expected}", shown_path(path)),
            Error::RescueInitrdGone { name, from } => write!(
                f,
                "the rescue initrd the boot entries carry, {name}, is not on $BOOT intact{}; nothing was changed: \
                 give `boot sync --initrd FILE` to put one back, `--kernel-initrds` to build one for each kernel, \
                 or `--no-initrd` to go without",
                match from {
                    Some(f) => format!(" and {f}, where it came from, no longer holds it"),
                    None => String::new(),
                }
            ),
            Error::NoRescueBinary { tried } => write!(
                f,
                "no rescue build of lifeboat at {}, and this binary is the host build (with SQLite), \
                 not the one to embed: install the rescue build at {} (scripts/install.sh or the lifeboat \
                 package put it there), or name the binary to embed with --binary FILE",
                tried.iter().map(|p| shown_path(p)).collect::<Vec<_>>().join(" or "),
                crate::cli::initrd::INSTALLED_RESCUE
            ),
            Error::Unrecoverable { summary } => write!(f, "{summary}"),
            Error::SecureBoot { path, problem } => write!(f, "secure boot: {}: {problem}", shown_path(path)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::State(e) => e.source(),
            Error::Esp(e) => Some(e),
            Error::Boot(e) => Some(e),
            Error::Initrd(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<lifeboat_state::Error> for Error {
    fn from(e: lifeboat_state::Error) -> Self {
        Error::State(e)
    }
}
impl From<lifeboat_esp::Error> for Error {
    fn from(e: lifeboat_esp::Error) -> Self {
        Error::Esp(e)
    }
}
impl From<lifeboat_boot::Error> for Error {
    fn from(e: lifeboat_boot::Error) -> Self {
        Error::Boot(e)
    }
}
impl From<lifeboat_initrd::Error> for Error {
    fn from(e: lifeboat_initrd::Error) -> Self {
        Error::Initrd(e)
    }
}

/// Adds a path and operation to an io::Result.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
