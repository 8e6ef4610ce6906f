//! The binary's error type: every failure says what was being done, to which file,
//! and why, so a user on a serial console can act on it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::index::file::LoadError;
use crate::layout::LayoutError;

#[derive(Debug)]
pub enum Error {
    /// A syscall failed on a named path.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Neither generation of the state index could be read.
    Index(Box<LoadError>),
    /// The source tree of a commit has something a transaction cannot hold.
    BadTree {
        path: PathBuf,
        why: String,
    },
    /// A layout violates a path rule.
    Layout {
        path: String,
        why: LayoutError,
    },
    NoSuchTransaction(u64),
    /// The directory is not a system root lifeboat can work on.
    NotARoot {
        path: PathBuf,
        why: String,
    },
    /// A store blob is missing or does not match its name.
    Store {
        path: PathBuf,
        why: String,
    },
    /// Another lifeboat holds the lock.
    Busy(PathBuf),
    /// Boot partitions, entries or variables.
    Esp(lifeboat_esp::Error),
    Boot(lifeboat_boot::Error),
    Initrd(lifeboat_initrd::Error),
    /// The request itself cannot be carried out (explained).
    Refused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Index(e) => write!(f, "state index unreadable: {e}"),
            Error::BadTree { path, why } => write!(f, "{}: {why}", path.display()),
            Error::Layout { path, why } => write!(f, "{path}: {why}"),
            Error::NoSuchTransaction(id) => write!(f, "no transaction {id} in the state index"),
            Error::NotARoot { path, why } => write!(f, "{}: {why}", path.display()),
            Error::Store { path, why } => write!(f, "store blob {}: {why}", path.display()),
            Error::Busy(p) => write!(f, "{} is locked by another lifeboat process", p.display()),
            Error::Esp(e) => write!(f, "{e}"),
            Error::Boot(e) => write!(f, "{e}"),
            Error::Initrd(e) => write!(f, "{e}"),
            Error::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Error {}

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
