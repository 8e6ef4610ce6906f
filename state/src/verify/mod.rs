//! verify and repair: prove a transaction's tree matches its layout, and bring it
//! back from the store.
//!
//! Quick mode checks metadata only — existence, type, size, permissions, owner,
//! symlink targets, extra files, the extended attributes an entry records (an
//! entry with none costs nothing more) — and whether each file is still the store's inode;
//! a file that is not (a copy, or replaced) is hashed, so quick mode misses only
//! damage to the store's own inode, which `--full` (hash every file) and `--store`
//! (hash every blob) find; `--full` also lists every entry's attributes, so one
//! added where none was recorded (a capability put on a binary) is found. The walk uses `*at` calls with `O_NOFOLLOW` on directory
//! fds, so a symlink planted in the tree never leads it outside.
//!
//! A check runs in two passes. The store pass visits the blobs in hash order (the
//! store's own directory order) and takes each one's `statx` — or, for `--store`,
//! opens, `fstat`s and hashes it — into a [`BlobTable`]; `--full` alone skips it
//! and hashes every file where the tree pass finds it. The tree
//! pass lists each directory once with `getdents64` and looks every child up in
//! that listing: a file whose listed inode is its blob's takes the blob's `stat`
//! and verdict, so no file of the tree is `stat`ed or read unless it is a copy,
//! and each inode is hashed once however many trees link it.
//!
//! A quick check on a root ([`check_root`]) learns from the last one: the store
//! pass stamps each blob's inode (number, birth, last change: [`known`]), and
//! unless a sample of the tree shows that nearly every file would need its blob
//! looked up anyway, the next quick check skips the store pass and takes one
//! `statx` of each tree file in its own directory instead — a file whose stamp
//! matches is its blob's inode, unchanged — so it looks a blob up through the
//! store's directory levels only for a file present whose stamp does not match.
//!
//! Repair goes in layout order (parents first). Each file is rebuilt under a
//! temporary name in its directory and renamed over the damaged one, so every path
//! is always either the old or the restored file. A blob missing from the store or
//! corrupt is recovered from another retained transaction's tree (hashed first),
//! then linked back into the store.
//!
//! The modules split the work by job: [`table`] checks the store into a
//! [`BlobTable`]; [`known`] keeps the blobs' stamps between checks; [`tree`]
//! walks a tree against its layout with that table and those stamps;
//! [`repair`] brings a tree back; [`progress`] counts both passes for whoever
//! shows them.

pub mod known;
pub mod progress;
pub mod repair;
pub mod table;
pub mod tree;

pub use known::{BlobStamp, KnownBlobs};
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
    /// Extended attributes other than recorded ([`crate::attrs`]).
    WrongAttrs,
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
            Class::WrongAttrs => "wrong-xattr",
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
    /// Stamps of the store's blobs that still describe it ([`check_root`]):
    /// a quick check then looks a blob up only when the tree file's stamp does
    /// not match, instead of looking every blob up first.
    pub known: Option<&'a KnownBlobs>,
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
    /// Stamps of the blobs the check looked up in the store, by layout entry,
    /// for the next check.
    pub stamped: Vec<(u32, BlobStamp)>,
    /// The root's stamps with those laid over them, when that changed them:
    /// [`Report::remember`] saves them.
    pub new_stamps: Option<KnownBlobs>,
    /// Whether the tree pass trusted the saved stamps instead of a pass
    /// through the store.
    pub stamps_trusted: bool,
    /// Blobs looked up through the store (by the store pass and for tree files
    /// whose stamp did not match).
    pub store_lookups: u64,
    /// Directories of the layout listed (the others were trusted whole by
    /// their stamps).
    pub dirs_listed: u64,
}

impl Report {
    /// Saves what the check learnt for the next one ([`check_root`]), best
    /// effort: a root that cannot be written (mounted read-only) is only checked
    /// more slowly next time. A repair calls this after its own sync, so that
    /// the sync does not wait for the stamps, which need none.
    pub fn remember(&mut self, root: &SystemRoot) {
        if let Some(k) = self.new_stamps.take() {
            let _ = k.save(root.fd());
        }
    }
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
    check_with(tree, layout, store, opts, store_blobs, None)
}

/// [`check`], loading the stamps saved below `stamps_of` (while the walk's map
/// of the layout is built) when `opts` brings none.
fn check_with(
    tree: BorrowedFd,
    layout: &Layout,
    store: &Store,
    opts: Options,
    store_blobs: Option<&[(Hash128, u64)]>,
    stamps_of: Option<&SystemRoot>,
) -> Result<Report> {
    let hash_in_tree = opts.full && store_blobs.is_none();
    // Stamps are for a quick check only; the others read every blob.
    let quick = !opts.full && store_blobs.is_none();
    let cutoff = known::cutoff_now();
    // The walk's map of the layout is built while the stamps are loaded or the
    // store is checked.
    let (table, kids, loaded) = std::thread::scope(|s| {
        let kids = s.spawn(|| Children::new(layout));
        let loaded = stamps_of.filter(|_| quick).map(|root| {
            let k = KnownBlobs::load(root.fd(), known::layout_digest(layout), layout.len());
            let usable = k.describe(layout, tree);
            (k, usable)
        });
        let trusted = opts.known.is_some() || loaded.as_ref().is_some_and(|l| l.1);
        let own;
        let blobs = match store_blobs {
            Some(b) => b,
            // `--full` alone hashes every file through the tree (one `openat`
            // below a directory already open, `fstat`, read): the store pass
            // would reach the same inodes through three directory levels and
            // then the tree pass would look at each again. With stamps, the tree
            // pass looks up only the blobs whose stamp does not match.
            None if hash_in_tree || (quick && trusted) => &[][..],
            None => {
                own = layout_blobs(layout);
                &own
            }
        };
        let progress = Progress::new("store blobs", blobs.len() as u64, opts.progress);
        let table = BlobTable::build(store, blobs, !quick, cutoff, &progress);
        progress.finish();
        (table, kids.join(), loaded)
    });
    let (table, kids) =
        (table?, kids.map_err(|_| Error::io("verify", "layout", std::io::Error::other("worker panicked")))?);
    let known = match (&loaded, opts.known) {
        (Some((k, true)), _) => Some(k),
        (_, given) => given.filter(|_| quick),
    };
    let progress = Progress::new("tree entries", layout.len() as u64, opts.progress);
    let attrs = match (layout.attrs_recorded(), opts.full) {
        (false, _) => tree::AttrCheck::Nothing,
        (true, false) => tree::AttrCheck::Recorded,
        (true, true) => tree::AttrCheck::Every,
    };
    let walk =
        tree::Walk { store, blobs: &table, kids: &kids, known, cutoff, hash_in_tree, attrs, progress: &progress };
    let (diffs, stamps) = verify_tree(tree, layout, &walk)?;
    progress.finish();
    let mut diffs = diffs;
    diffs.retain(|d| d.class != Class::Extra || !opts.unlisted.contains(&d.path.as_str()));
    let bad_blobs = if store_blobs.is_some() { table.faults() } else { Vec::new() };
    let mut report = Report {
        diffs,
        bad_blobs,
        stamped: stamps.taken,
        new_stamps: None,
        stamps_trusted: known.is_some(),
        store_lookups: table.rows.len() as u64 + stamps.looked_up,
        dirs_listed: stamps.listed,
    };
    if let Some((mut k, _)) = loaded {
        if k.set(&report.stamped) {
            report.new_stamps = Some(k);
        }
    }
    Ok(report)
}

/// [`check`] of a tree of `root` that learns from the last one: a quick check
/// uses the stamps saved below the root ([`known`]) unless nearly every file
/// would need its blob looked up, and gives back the stamps it took for
/// [`Report::remember`].
pub fn check_root(
    root: &SystemRoot,
    tree: BorrowedFd,
    layout: &Layout,
    store: &Store,
    opts: Options,
    store_blobs: Option<&[(Hash128, u64)]>,
) -> Result<Report> {
    check_with(tree, layout, store, opts, store_blobs, Some(root))
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
