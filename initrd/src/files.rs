//! Where the builder reads a kernel's module directory and its firmware from.
//! `initrd build` names a directory on disk ([`Dir`]); `boot sync` builds from a
//! transaction's layout instead, its bytes read from the content store by hash,
//! so that an initrd holds exactly the files the layout records (the ones its
//! cache key was computed over) whatever has happened to the tree since. Both
//! hand over regular files only, by a relative path resolved inside the tree:
//! a symlink never leads out of it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use lifeboat_fs::foreign;

/// A tree of files the builder reads by relative path.
pub trait Files {
    /// The bytes of the regular file at `rel` (resolved inside the tree);
    /// an error when it is larger than `max`.
    fn read(&self, rel: &str, max: u64) -> io::Result<Vec<u8>>;
    /// Whether `rel` is a regular file here.
    fn is_file(&self, rel: &str) -> bool;
    /// `rel` as a person should see it in a message.
    fn shown(&self, rel: &str) -> PathBuf;
}

/// A directory on disk, opened once.
pub struct Dir {
    path: PathBuf,
    fd: OwnedFd,
}

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        Ok(Dir { path: path.to_owned(), fd: lifeboat_fs::open_dir(path)? })
    }
}

impl Files for Dir {
    fn read(&self, rel: &str, max: u64) -> io::Result<Vec<u8>> {
        foreign::open_file_in_root(self.fd.as_fd(), rel.as_bytes()).and_then(|f| foreign::read_capped(f, max))
    }

    fn is_file(&self, rel: &str) -> bool {
        foreign::open_file_in_root(self.fd.as_fd(), rel.as_bytes()).is_ok()
    }

    fn shown(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }
}

impl std::fmt::Debug for dyn Files + Send + Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.shown("").display())
    }
}
