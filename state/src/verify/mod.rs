//! verify and repair: prove a transaction's tree matches its layout, and bring it
//! back from the store.
//!
//! Quick mode checks metadata only — existence, type, size, permissions, owner,
//! symlink targets, extra files — and whether each file is still the store's inode;
//! a file that is not (a copy, or replaced) is hashed, so quick mode misses only
//! damage to the store's own inode, which `--full` (hash every file) and `--store`
//! (hash every blob) find. The walk uses `*at` calls with `O_NOFOLLOW` on directory
//! fds, so a symlink planted in the tree never leads it outside.
//!
//! A check runs in two passes. The store pass visits the blobs in hash order (the
//! store's own directory order) and takes each one's `lstat` — or, for `--store`,
//! opens, `fstat`s and hashes it — into a [`BlobTable`]; `--full` alone skips it
//! and hashes every file where the tree pass finds it. The tree
//! pass lists each directory once with `getdents64` and looks every child up in
//! that listing: a file whose listed inode is its blob's takes the blob's `stat`
//! and verdict, so no file of the tree is `stat`ed or read unless it is a copy,
//! and each inode is hashed once however many trees link it.
//!
//! Repair goes in layout order (parents first). Each file is rebuilt under a
//! temporary name in its directory and renamed over the damaged one, so every path
//! is always either the old or the restored file. A blob missing from the store or
//! corrupt is recovered from another retained transaction's tree (hashed first),
//! then linked back into the store.
//!
//! The modules split the work by job: [`table`] checks the store into a
//! [`BlobTable`]; [`tree`] walks a tree against its layout with that table;
//! [`repair`] brings a tree back; [`progress`] counts both passes for whoever
//! shows them.

pub mod progress;
pub mod repair;
pub mod table;
pub mod tree;

pub use progress::ProgressSink;
pub use repair::{repair, RepairReport};
pub use table::{layout_blobs, BlobFault, BlobTable};

use progress::Progress;
use tree::{verify_tree, Children};

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use crate::index::StateIndex;
use crate::layout::Layout;
use crate::root::SystemRoot;
use crate::store::Store;
use lifeboat_fs::{self as fsutil};

/// Kinds of difference, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Missing,
    Extra,
    WrongType,
    WrongMode,
    WrongOwner,
    WrongTarget,
    WrongContent,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Missing => "missing",
            Class::Extra => "extra",
            Class::WrongType => "wrong-type",
            Class::WrongMode => "wrong-mode",
            Class::WrongOwner => "wrong-owner",
            Class::WrongTarget => "wrong-target",
            Class::WrongContent => "wrong-content",
        }
    }
}

/// One difference between a tree and its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub class: Class,
    /// Relative to the tree (`/usr`).
    pub path: String,
    pub detail: String,
    /// Index into the layout (`None` for extra files).
    pub entry: Option<usize>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<14} {}", self.class.as_str(), self.path)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Which tree to check.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    Active,
    State(u64),
}

/// Options of a verify run.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// Hash every file, not only those that are not their blob's inode.
    pub full: bool,
    /// Where progress goes (the binary draws it; `None`: nowhere).
    pub progress: Option<&'a dyn ProgressSink>,
    /// Paths no layout lists that belong in the tree all the same
    /// ([`SystemRoot::unlisted`]): never reported as extra.
    pub unlisted: &'a [&'a str],
}

fn workers() -> usize {
    crate::workers::count()
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Differences between the tree and its layout.
    pub diffs: Vec<Difference>,
    /// Blobs that failed the store check (only asked for with `store_blobs`).
    pub bad_blobs: Vec<(Hash128, BlobFault)>,
}

/// Checks the tree below `tree` against `layout` and, given `store_blobs` (as
/// [`StateIndex::referenced_blobs`] gives them), every one of those blobs against
/// its name: present, a regular file of the recorded size, content hashing to the
/// name. Driven by the index rather than a walk of the store, so a *missing* blob is
/// found too and the store's directories (one per blob in the v2 layout) are never
/// listed; a stray file in the store is not reported (prune removes it).
///
/// The store goes first (see [`BlobTable`]); a full or store check hashes each
/// blob there, and the tree walk then hashes only files that are not their blob's
/// inode.
pub fn check(
    tree: BorrowedFd,
    layout: &Layout,
    store: &Store,
    opts: Options,
    store_blobs: Option<&[(Hash128, u64)]>,
) -> Result<Report> {
    // The walk's map of the layout is built while the store is checked.
    let hash_in_tree = opts.full && store_blobs.is_none();
    let (table, kids) = std::thread::scope(|s| {
        let kids = s.spawn(|| Children::new(layout.entries()));
        let own;
        let blobs = match store_blobs {
            Some(b) => b,
            None => {
                own = layout_blobs(layout);
                &own
            }
        };
        // `--full` alone hashes every file through the tree (one `openat` below a
        // directory already open, `fstat`, read): the store pass would reach the
        // same inodes through three directory levels and then the tree pass would
        // look at each again.
        let blobs = if hash_in_tree { &[][..] } else { blobs };
        let progress = Progress::new("store blobs", blobs.len() as u64, opts.progress);
        let table = BlobTable::build(store, blobs, opts.full || store_blobs.is_some(), &progress);
        progress.finish();
        (table, kids.join())
    });
    let (table, kids) =
        (table?, kids.map_err(|_| Error::io("verify", "layout", std::io::Error::other("worker panicked")))?);
    let progress = Progress::new("tree entries", layout.len() as u64, opts.progress);
    let diffs = verify_tree(tree, layout, &kids, store, &table, hash_in_tree, &progress)?;
    progress.finish();
    let mut diffs = diffs;
    diffs.retain(|d| d.class != Class::Extra || !opts.unlisted.contains(&d.path.as_str()));
    let bad_blobs = if store_blobs.is_some() { table.faults() } else { Vec::new() };
    Ok(Report { diffs, bad_blobs })
}

/// The tree of a transaction: `usr` (active) or `.moss/root/<id>/usr`.
pub fn open_tree(root: &SystemRoot, idx: &StateIndex, which: Which) -> Result<(u64, OwnedFd, PathBuf)> {
    let active = root.active_id();
    let id = match which {
        Which::Active => active.ok_or_else(|| Error::NotARoot {
            path: root.path.join("usr"),
            why: "has no .stateID: no active transaction to verify".into(),
        })?,
        Which::State(id) => id,
    };
    if !idx.contains(id) {
        return Err(Error::NoSuchTransaction(id));
    }
    if active == Some(id) {
        let p = root.path.join("usr");
        let fd = fsutil::open_dir_at(root.fd(), b"usr").ctx("open", &p)?;
        return Ok((id, fd, p));
    }
    let rel = format!(".moss/root/{id}/usr");
    let p = root.path.join(&rel);
    let fd = fsutil::open_dir_beneath(root.fd(), rel.as_bytes())
        .ctx("open (the transaction's tree is not materialised; `state activate` rebuilds it)", &p)?;
    Ok((id, fd, p))
}
