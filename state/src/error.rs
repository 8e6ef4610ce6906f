//! The state crate's error: every failure says what was being done, to which file,
//! and why, so a user on a serial console can act on it; the cause is kept as the
//! error's [`source`](std::error::Error::source).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::index::file::LoadError;
use crate::index::IndexError;
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
    /// A new generation of the index could not be built from the old one and a
    /// change (a layout that breaks the index's own rules).
    IndexBuild(IndexError),
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
    /// Another lifeboat holds the lock (still, after `waited` seconds).
    Busy {
        path: PathBuf,
        waited: u64,
    },
    /// A worker thread of `job` ended without a result (it panicked).
    WorkerLost {
        job: &'static str,
    },
    /// A moss database is missing, unreadable, of another version, or has a row
    /// that breaks a rule.
    MossDb {
        db: PathBuf,
        row: Option<i64>,
        why: String,
    },
    /// moss holds its lock (a moss transaction is running).
    MossBusy(PathBuf),
    /// On a moss root, this is moss's to do.
    MossOwned {
        what: &'static str,
        instead: &'static str,
    },
    /// The state's tree is not where moss keeps it.
    NoTree {
        id: u64,
        path: PathBuf,
    },
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
            Error::IndexBuild(e) => write!(f, "cannot write the state index: {e}"),
            Error::BadTree { path, why } => write!(f, "{}: {why}", path.display()),
            Error::Layout { path, why } => write!(f, "{path}: {why}"),
            Error::NoSuchTransaction(id) => write!(f, "no transaction {id} in the state index"),
            Error::NotARoot { path, why } => write!(f, "{}: {why}", path.display()),
            Error::Store { path, why } => write!(f, "store blob {}: {why}", path.display()),
            Error::Busy { path, waited: 0 } => write!(
                f,
                "{} is locked by another lifeboat process: run again when it has finished, or with --wait SECONDS",
                path.display()
            ),
            Error::Busy { path, waited } => write!(
                f,
                "{} is still locked by another lifeboat process after {waited} s: run again when it has finished",
                path.display()
            ),
            Error::WorkerLost { job } => write!(f, "a {job} worker thread ended without a result"),
            Error::MossDb { db, row: Some(r), why } => write!(f, "{} row {r}: {why}", db.display()),
            Error::MossDb { db, row: None, why } => write!(f, "{}: {why}", db.display()),
            Error::MossBusy(p) => {
                write!(f, "{} is locked: moss is running a transaction; try again when it is done", p.display())
            }
            Error::MossOwned { what, instead } => {
                write!(f, "this root is managed by moss: lifeboat does not {what} here; use `{instead}`")
            }
            Error::NoTree { id, path } => {
                write!(f, "state {id} has no tree at {}: neither lifeboat nor moss can activate it", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Index(e) => Some(&**e),
            Error::IndexBuild(e) => Some(e),
            Error::Layout { why, .. } => Some(why),
            _ => None,
        }
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
