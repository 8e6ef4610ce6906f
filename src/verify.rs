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
//! store's own directory order) and takes each one's `lstat` — or, for `--full`
//! and `--store`, opens, `fstat`s and hashes it — into a [`BlobTable`]. The tree
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

use std::fmt;
use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::blit::{self, BlitStats};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, cstr, io_err, libc_mode::*};
use crate::hash::Hash128;
use crate::index::StateIndex;
use crate::layout::{EntryData, Layout, LayoutEntry};
use crate::root::{SystemRoot, STATE_ID};
use crate::store::Store;

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

/// Progress of one phase on a terminal: items done of the total, bytes hashed.
pub struct Progress {
    /// What is counted ("store blobs", "tree entries").
    what: &'static str,
    pub total: u64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    enabled: bool,
    start: Instant,
    last: AtomicU64,
}

impl Progress {
    pub fn new(what: &'static str, total: u64, enabled: bool) -> Self {
        Progress {
            what,
            total,
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            enabled: enabled && std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn tick(&self, n: u64, bytes: u64) {
        let d = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if !self.enabled {
            return;
        }
        let ms = self.start.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Relaxed);
        if ms >= last + 200 && self.last.compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let mb = self.bytes.load(Ordering::Relaxed) as f64 / 1e6;
            let secs = (ms as f64 / 1000.0).max(0.001);
            let rate = if mb > 0.0 { format!(", {:.0} MB/s", mb / secs) } else { String::new() };
            eprint!("\r{d}/{} {}{rate}   ", self.total, self.what);
        }
    }

    pub fn finish(&self) {
        if self.enabled && self.last.load(Ordering::Relaxed) > 0 {
            eprint!("\r{:70}\r", "");
        }
    }
}

/// Options of a verify run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub full: bool,
    pub progress: bool,
}

fn workers() -> usize {
    crate::workers::count()
}

/// The children of each directory (by entry index; the tree root is the last
/// slot), in sibling order, found with one depth-first pass and no hashing; kept
/// in two flat arrays, so building it allocates three times, not once per
/// directory.
struct Children {
    /// `kids[start[d]..start[d + 1]]` are the children of `d`.
    start: Vec<u32>,
    kids: Vec<u32>,
    /// Where each entry's name starts in its path.
    name_at: Vec<u32>,
    depth: Vec<u16>,
}

impl Children {
    fn new(es: &[LayoutEntry]) -> Self {
        let root = es.len();
        let mut parent: Vec<u32> = Vec::with_capacity(es.len());
        let mut depth: Vec<u16> = Vec::with_capacity(es.len());
        let mut name_at: Vec<u32> = Vec::with_capacity(es.len());
        let mut stack: Vec<usize> = Vec::with_capacity(32);
        let mut start = vec![0u32; es.len() + 2];
        for (i, e) in es.iter().enumerate() {
            let d = e.path.iter().filter(|&&b| b == b'/').count();
            let at = e.path.iter().rposition(|&b| b == b'/').map_or(0, |j| j + 1);
            stack.truncate(d);
            let p = stack.last().copied().unwrap_or(root);
            parent.push(p as u32);
            start[p + 1] += 1;
            depth.push(d.min(u16::MAX as usize) as u16);
            name_at.push(at as u32);
            if matches!(e.data, EntryData::Dir) {
                stack.push(i);
            }
        }
        for d in 1..start.len() {
            start[d] += start[d - 1];
        }
        // Entries are in depth-first order, so filling in entry order keeps each
        // directory's children in sibling order.
        let mut fill = start.clone();
        let mut kids = vec![0u32; es.len()];
        for (i, &p) in parent.iter().enumerate() {
            kids[fill[p as usize] as usize] = i as u32;
            fill[p as usize] += 1;
        }
        Children { start, kids, name_at, depth }
    }

    fn of(&self, dir: usize) -> &[u32] {
        match (self.start.get(dir), self.start.get(dir + 1)) {
            (Some(&a), Some(&b)) => &self.kids[a as usize..b as usize],
            _ => &[],
        }
    }

    fn depth(&self, k: usize) -> usize {
        self.depth[k] as usize
    }

    fn name<'a>(&self, es: &'a [LayoutEntry], k: u32) -> &'a [u8] {
        let k = k as usize;
        &es[k].path[self.name_at[k] as usize..]
    }

    /// Whether directory `dir` (an entry index, or the root) has a child `name`.
    /// Siblings are in byte order (the depth-first order of names without `/`).
    fn has(&self, es: &[LayoutEntry], dir: usize, name: &[u8]) -> bool {
        self.of(dir).binary_search_by(|&k| self.name(es, k).cmp(name)).is_ok()
    }

    /// The names in `listing` (sorted in byte order) that directory `dir` does not
    /// have: one merge pass.
    fn extras<'l>(&self, es: &[LayoutEntry], dir: usize, listing: &'l fsutil::Listing) -> Vec<&'l [u8]> {
        let kids = self.of(dir);
        let mut k = 0;
        let mut out = Vec::new();
        for ent in listing.iter() {
            while k < kids.len() && self.name(es, kids[k]) < ent.name {
                k += 1;
            }
            if k >= kids.len() || self.name(es, kids[k]) != ent.name {
                out.push(ent.name);
            }
        }
        out
    }
}

/// Hashes the file `name` below `dir`, expected to hold `size` bytes (see
/// [`Hash128::of_file_expecting`]); opened as [`open_for_hash`] does.
fn hash_at(dir: BorrowedFd, name: &[u8], size: u64, buf: &mut [u8]) -> std::io::Result<(Hash128, u64)> {
    let f = open_for_hash(dir, name)?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    Hash128::of_file_expecting(f, size, buf)
}

/// The hashing scratch buffer, allocated on first use: most walks never hash.
fn hash_buf(b: &mut Vec<u8>) -> &mut [u8] {
    if b.is_empty() {
        b.resize(256 * 1024, 0);
    }
    b
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
        let progress = Progress::new("store blobs", blobs.len() as u64, opts.progress);
        let table = BlobTable::build(store, blobs, opts.full || store_blobs.is_some(), &progress);
        progress.finish();
        (table, kids.join())
    });
    let (table, kids) =
        (table?, kids.map_err(|_| Error::io("verify", "layout", std::io::Error::other("worker panicked")))?);
    let progress = Progress::new("tree entries", layout.len() as u64, opts.progress);
    let diffs = verify_tree(tree, layout, &kids, store, &table, &progress)?;
    progress.finish();
    let bad_blobs = if store_blobs.is_some() { table.faults() } else { Vec::new() };
    Ok(Report { diffs, bad_blobs })
}

/// Compares the tree below `tree` with `layout`; blobs' `stat`s and verdicts come
/// from `blobs`.
fn verify_tree(
    tree: BorrowedFd,
    layout: &Layout,
    kids: &Children,
    store: &Store,
    blobs: &BlobTable,
    progress: &Progress,
) -> Result<Vec<Difference>> {
    let es = layout.entries();
    // Ranges handed out on demand: directories cost more than files, so equal
    // entry counts are not equal work.
    let mut parts = crate::layout::subtree_runs(es, workers() * 8);
    // Largest first, so no worker is left with a big one at the end.
    parts.sort_unstable_by_key(|&(a, b)| std::cmp::Reverse(b - a));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::io::Result<Vec<Difference>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers().min(parts.len()))
            .map(|_| {
                let (parts, next) = (&parts, &next);
                s.spawn(move || -> std::io::Result<Vec<Difference>> {
                    fsutil::private_fd_table();
                    let mut out = Vec::new();
                    while let Some(&(a, b)) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
                        out.extend(check_range(tree, es, a, b, store, blobs, kids, progress)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("verify worker panicked"))))
            .collect()
    });
    let mut diffs = Vec::new();
    for r in results {
        diffs.extend(r.map_err(|e| Error::io("verify", "tree", e))?);
    }
    // Extras at the top of the tree.
    for name in fsutil::list_dir(tree).map_err(|e| Error::io("list", "tree", e))? {
        if name == STATE_ID || kids.has(es, es.len(), &name) {
            continue;
        }
        diffs.push(Difference { class: Class::Extra, path: lossy(&name), detail: String::new(), entry: None });
    }
    diffs.sort_by(|a, b| a.entry.cmp(&b.entry).then_with(|| a.path.cmp(&b.path)));
    Ok(diffs)
}

/// A directory being checked: its descriptor and its entries as `getdents64` gave
/// them (name, inode, type), sorted in layout sibling order. Looking a child up
/// here instead of calling `fstatat` finds a missing entry with no syscall, and a
/// file whose inode number is the store blob's needs no `stat` of its own: the
/// blob's `stat` is the file's.
#[derive(Default)]
struct OpenDir {
    /// `None`: the directory is missing or not a directory.
    fd: Option<OwnedFd>,
    listing: fsutil::Listing,
    /// Where in `listing` the next child is looked for (children come in order).
    cursor: std::cell::Cell<usize>,
}

impl OpenDir {
    /// Lists `fd` (freshly opened) into this slot, reusing its buffers.
    fn fill(&mut self, fd: OwnedFd) -> std::io::Result<()> {
        self.fd = None;
        self.cursor.set(0);
        self.listing.read(fd.as_fd())?;
        // Sibling names hold no `/`: byte order is the layout's order.
        self.listing.sort();
        self.fd = Some(fd);
        Ok(())
    }

    fn open(&self) -> Option<(BorrowedFd<'_>, &fsutil::Listing)> {
        self.fd.as_ref().map(|fd| (fd.as_fd(), &self.listing))
    }

    /// The open directory and its entry `name` (names asked for in sibling
    /// order).
    fn child(&self, name: &[u8]) -> Option<(BorrowedFd<'_>, fsutil::Listed<'_>)> {
        let fd = self.fd.as_ref()?;
        let mut at = self.cursor.get();
        let found = self.listing.seek(name, &mut at);
        self.cursor.set(at);
        Some((fd.as_fd(), found?))
    }
}

/// The directories above the entry being checked, by depth. Slots are reused, so
/// a walk allocates for its deepest path only.
#[derive(Default)]
struct DirStack {
    levels: Vec<OpenDir>,
    len: usize,
}

impl DirStack {
    fn truncate(&mut self, len: usize) {
        for l in self.levels.iter_mut().take(self.len).skip(len) {
            l.fd = None;
        }
        self.len = self.len.min(len);
    }

    fn slot(&mut self) -> &mut OpenDir {
        if self.levels.len() <= self.len {
            self.levels.push(OpenDir::default());
        }
        &mut self.levels[self.len]
    }

    /// Pushes a directory that is missing or wrong.
    fn push_none(&mut self) {
        self.slot().fd = None;
        self.len += 1;
    }

    fn push(&mut self, fd: OwnedFd) -> std::io::Result<&fsutil::Listing> {
        self.slot().fill(fd)?;
        self.len += 1;
        Ok(&self.levels[self.len - 1].listing)
    }

    fn get(&self, depth: usize) -> Option<&OpenDir> {
        self.levels[..self.len].get(depth).filter(|l| l.fd.is_some())
    }
}

/// Batches progress updates: two shared atomics per entry cost more than the
/// `stat` when the workers run on different cores.
struct Tally<'a> {
    progress: &'a Progress,
    entries: u64,
    bytes: u64,
}

impl Tally<'_> {
    fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
        if self.entries >= 512 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.progress.tick(std::mem::take(&mut self.entries), std::mem::take(&mut self.bytes));
    }
}

/// The store's first-level directory of the blob last looked up, held open while
/// blobs are visited in hash order, so a lookup walks three components, not four.
#[derive(Default)]
struct HeldTop {
    key: [u8; 2],
    fd: Option<OwnedFd>,
}

impl HeldTop {
    /// The directory and path to use for blob path `rel` (`aa/bb/cc/<hash>`)
    /// below the store descriptor `store`.
    fn resolve<'a, 'r>(&'a mut self, store: BorrowedFd<'a>, rel: &'r [u8]) -> (BorrowedFd<'a>, &'r [u8]) {
        if rel.len() < 4 {
            return (store, rel);
        }
        let key = [rel[0], rel[1]];
        if self.fd.is_none() || self.key != key {
            self.key = key;
            self.fd = fsutil::open_dir_at(store, &key).ok();
        }
        match &self.fd {
            Some(fd) => (fd.as_fd(), &rel[3..]),
            None => (store, rel),
        }
    }
}

/// The parts of a `stat` the checks compare.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    dev: u64,
    ino: u64,
}

impl Meta {
    fn of(st: &nix::sys::stat::FileStat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// Why a blob failed its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobFault {
    Missing,
    NotRegular,
    /// Its size, and the size the index records.
    WrongSize(u64, u64),
    /// What its content hashes to.
    WrongContent(Hash128),
    /// The errno of the call that failed.
    Unreadable(i32),
}

impl fmt::Display for BlobFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobFault::Missing => f.write_str("missing from the store"),
            BlobFault::NotRegular => f.write_str("not a regular file"),
            BlobFault::WrongSize(n, want) => write!(f, "{n} bytes instead of {want}"),
            BlobFault::WrongContent(h) => write!(f, "content hashes to {h}"),
            BlobFault::Unreadable(e) => write!(f, "cannot be read: {}", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

/// What the store check of one blob found.
#[derive(Clone, Copy, Debug)]
enum BlobCheck {
    /// Only its `lstat` was taken (quick mode).
    Unread,
    Good,
    Bad(BlobFault),
}

/// The store's side of a check, taken before the tree walk, in hash order: every
/// blob's `stat` and, when hashing, its verdict. Hash order visits the store's
/// directories in order, so their dentries stay in the CPU cache (about 30% less
/// kernel time per lookup than the tree's order, which is random for the store),
/// and the walk itself makes no store lookup: a tree file whose listed inode is its
/// blob's takes the blob's `stat` and verdict, so a full check reads each inode
/// once, through the store, and opens only the tree files that are copies.
pub struct BlobTable {
    /// In hash order.
    rows: Vec<BlobRow>,
    /// Open addressing over `rows` (index + 1; 0 is empty), keyed by the low
    /// bits of the digest, which are uniform: a lookup from the walk costs one or
    /// two cache misses where a binary search over 240,000 digests costs eight.
    slots: Vec<u32>,
    /// Why each blob that failed did, in hash order.
    faults: Vec<(Hash128, BlobFault)>,
}

/// One blob of a [`BlobTable`]: 64 bytes, so a lookup's row is about one cache
/// line.
#[derive(Clone, Copy)]
struct BlobRow {
    hash: Hash128,
    // A `Meta`, flattened so the flags share its padding.
    size: u64,
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    /// In the store.
    present: bool,
    verdict: Verdict,
}

impl BlobRow {
    fn new(hash: Hash128, meta: Option<Meta>, verdict: Verdict) -> Self {
        let m = meta.unwrap_or(Meta { mode: 0, uid: 0, gid: 0, size: 0, dev: 0, ino: 0 });
        BlobRow {
            hash,
            size: m.size,
            dev: m.dev,
            ino: m.ino,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            present: meta.is_some(),
            verdict,
        }
    }

    fn meta(&self) -> Option<Meta> {
        self.present.then_some(Meta {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            dev: self.dev,
            ino: self.ino,
        })
    }
}

const _: () = assert!(std::mem::size_of::<BlobRow>() <= 64);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unread,
    Good,
    /// The fault is in [`BlobTable::faults`].
    Bad,
}

/// The blobs (content hash, size) a layout's non-empty files use, sorted, unique.
pub fn layout_blobs(layout: &Layout) -> Vec<(Hash128, u64)> {
    let mut out: Vec<(Hash128, u64)> = layout
        .entries()
        .iter()
        .filter_map(|e| match &e.data {
            EntryData::File { hash, size } if *size > 0 => Some((*hash, *size)),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup_by_key(|b| b.0);
    out
}

impl BlobTable {
    /// Takes the `lstat` of every blob in `blobs` (sorted by hash, unique) and,
    /// with `hash`, checks each one's type, size and content.
    pub fn build(store: &Store, blobs: &[(Hash128, u64)], hash: bool, progress: &Progress) -> Result<Self> {
        let workers = workers();
        // Chunks handed out on demand (hashing work is uneven), small enough to
        // balance, large enough that neighbours share store directories.
        let chunk = blobs.len().div_ceil(workers * 16).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        type Part = (usize, Vec<BlobRow>, Vec<(Hash128, BlobFault)>);
        let parts: Vec<std::io::Result<Vec<Part>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..workers)
                .map(|_| {
                    let next = &next;
                    s.spawn(move || -> std::io::Result<Vec<Part>> {
                        // Descriptors of its own: threads sharing one pay for its
                        // reference count bouncing between cores on every lookup.
                        fsutil::private_fd_table();
                        let own = store.for_worker()?;
                        let mut top = HeldTop::default();
                        let mut buf = if hash { vec![0u8; 256 * 1024] } else { Vec::new() };
                        let mut tally = Tally { progress, entries: 0, bytes: 0 };
                        let mut done = Vec::new();
                        loop {
                            let at = next.fetch_add(chunk, Ordering::Relaxed);
                            let Some(part) = blobs.get(at..(at + chunk).min(blobs.len())).filter(|p| !p.is_empty())
                            else {
                                break;
                            };
                            let mut rows = Vec::with_capacity(part.len());
                            let mut faults = Vec::new();
                            for &(h, size) in part {
                                let loc = store.locate(h);
                                let (dir, rel) = top.resolve(own.fd(), loc.rel());
                                tally.add(0);
                                let (meta, check) = if hash {
                                    check_blob(dir, rel, h, size, &mut buf, &mut tally)
                                } else {
                                    // A store directory that is not one: the blob is
                                    // not there.
                                    let st = match fsutil::lstat_at(dir, rel) {
                                        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => None,
                                        r => r?,
                                    };
                                    (st.map(|st| Meta::of(&st)), BlobCheck::Unread)
                                };
                                let verdict = match check {
                                    BlobCheck::Unread => Verdict::Unread,
                                    BlobCheck::Good => Verdict::Good,
                                    BlobCheck::Bad(f) => {
                                        faults.push((h, f));
                                        Verdict::Bad
                                    }
                                };
                                rows.push(BlobRow::new(h, meta, verdict));
                            }
                            done.push((at, rows, faults));
                        }
                        tally.flush();
                        Ok(done)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("store worker panicked"))))
                .collect()
        });
        let mut all: Vec<Part> = Vec::new();
        for p in parts {
            all.extend(p.map_err(|e| Error::io("check", store.path(), e))?);
        }
        all.sort_unstable_by_key(|p| p.0);
        let mut rows = Vec::with_capacity(blobs.len());
        let mut faults = Vec::new();
        for (_, r, f) in all {
            rows.extend(r);
            faults.extend(f);
        }
        let mut slots = vec![0u32; (rows.len() * 2).next_power_of_two().max(2)];
        let mask = slots.len() - 1;
        for (i, r) in rows.iter().enumerate() {
            let mut at = r.hash.0 as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = i as u32 + 1;
        }
        Ok(BlobTable { rows, slots, faults })
    }

    fn find(&self, h: Hash128) -> Option<&BlobRow> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = h.0 as usize & mask;
        loop {
            let i = (*self.slots.get(at)? as usize).checked_sub(1)?;
            let row = self.rows.get(i)?;
            if row.hash == h {
                return Some(row);
            }
            at = (at + 1) & mask;
        }
    }

    /// The blob's `lstat` (`None`: not in the store) and verdict, from the table
    /// when it is there, else from the store.
    fn get(&self, store: &Store, h: Hash128) -> std::io::Result<(Option<Meta>, BlobCheck)> {
        let Some(row) = self.find(h) else {
            return Ok((store.stat(h)?.map(|st| Meta::of(&st)), BlobCheck::Unread));
        };
        let check = match row.verdict {
            Verdict::Unread => BlobCheck::Unread,
            Verdict::Good => BlobCheck::Good,
            Verdict::Bad => match self.faults.binary_search_by_key(&h, |f| f.0) {
                Ok(i) => BlobCheck::Bad(self.faults[i].1),
                Err(_) => BlobCheck::Unread,
            },
        };
        Ok((row.meta(), check))
    }

    /// The blobs that failed their check, in hash order.
    pub fn faults(&self) -> Vec<(Hash128, BlobFault)> {
        self.faults.clone()
    }
}

/// Checks one blob: opened without following a symlink (a FIFO or device node
/// planted under its name is opened non-blocking and never read), its `fstat`
/// taken from the descriptor, its content hashed when type and size are right.
fn check_blob(
    dir: BorrowedFd,
    rel: &[u8],
    h: Hash128,
    size: u64,
    buf: &mut [u8],
    tally: &mut Tally,
) -> (Option<Meta>, BlobCheck) {
    let errno = |e: std::io::Error| BlobCheck::Bad(BlobFault::Unreadable(e.raw_os_error().unwrap_or(nix::libc::EIO)));
    let f = match open_for_hash(dir, rel) {
        Ok(Some(f)) => f,
        Ok(None) => return (None, BlobCheck::Bad(BlobFault::Missing)),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => return (None, BlobCheck::Bad(BlobFault::Missing)),
        // O_NOFOLLOW on a symlink.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            let meta = fsutil::lstat_at(dir, rel).ok().flatten().map(|st| Meta::of(&st));
            return (meta, BlobCheck::Bad(BlobFault::NotRegular));
        }
        Err(e) => return (None, errno(e)),
    };
    let meta = match nix::sys::stat::fstat(f.as_fd()) {
        Ok(st) => Meta::of(&st),
        Err(e) => return (None, errno(io_err(e))),
    };
    let check = if meta.mode & S_IFMT != S_IFREG {
        BlobCheck::Bad(BlobFault::NotRegular)
    } else if meta.size != size {
        BlobCheck::Bad(BlobFault::WrongSize(meta.size, size))
    } else {
        match Hash128::of_file_expecting(f, size, buf) {
            Ok((got, n)) => {
                tally.bytes += n;
                if got == h {
                    BlobCheck::Good
                } else {
                    BlobCheck::Bad(BlobFault::WrongContent(got))
                }
            }
            Err(e) => errno(e),
        }
    };
    (Some(meta), check)
}

/// Whether `O_NOATIME` may be asked for: only the files' owner or root may, so
/// the first refusal turns it off for the rest of the run.
static NOATIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Opens a regular file for hashing without following a symlink or blocking on
/// a FIFO planted under its name; `Ok(None)` when it is gone. Reads leave access
/// times alone where allowed, so a full check does not dirty every inode it reads
/// (with `relatime`, the first read of a day would).
fn open_for_hash(dir: BorrowedFd, name: &[u8]) -> std::io::Result<Option<File>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    fsutil::with_cstr(name, |c| {
        let mut r = Err(nix::errno::Errno::EPERM);
        if NOATIME.load(Ordering::Relaxed) {
            r = nix::fcntl::openat(dir, c, flags | OFlag::O_NOATIME, Mode::empty());
            if matches!(r, Err(nix::errno::Errno::EPERM)) {
                NOATIME.store(false, Ordering::Relaxed);
            }
        }
        if matches!(r, Err(nix::errno::Errno::EPERM)) {
            r = nix::fcntl::openat(dir, c, flags, Mode::empty());
        }
        match r {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    })?
}

#[allow(clippy::too_many_arguments)]
fn check_range(
    tree: BorrowedFd,
    es: &[LayoutEntry],
    a: usize,
    b: usize,
    store: &Store,
    blobs: &BlobTable,
    kids: &Children,
    progress: &Progress,
) -> std::io::Result<Vec<Difference>> {
    use nix::sys::stat::fstat;
    const DT_DIR: u8 = 4;
    const DT_REG: u8 = 8;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut link_buf = Vec::new();
    let mut tally = Tally { progress, entries: 0, bytes: 0 };
    let tree_dev = fstat(tree).map_err(io_err)?.st_dev;
    // A descriptor of our own: the workers share `tree`.
    let mut root = OpenDir::default();
    root.fill(fsutil::open_dir_at(tree, b".")?)?;
    let mut stack = DirStack::default();
    for (i, e) in es.iter().enumerate().take(b).skip(a) {
        let depth = kids.depth(i);
        stack.truncate(depth);
        if depth == 1 && stack.len == 0 {
            // This range starts inside a top-level directory another range checks.
            match root.open().and_then(|(fd, _)| fsutil::open_dir_at(fd, e.parent()).ok()) {
                Some(fd) => {
                    if stack.push(fd).is_err() {
                        stack.truncate(0);
                        stack.push_none();
                    }
                }
                None => stack.push_none(),
            }
        }
        let parent = if depth == 0 { Some(&root) } else { stack.get(depth - 1) };
        let diff = |class, detail: String| Difference { class, path: e.path_lossy(), detail, entry: Some(i) };
        let is_dir = matches!(e.data, EntryData::Dir);
        let name = kids.name(es, i as u32);
        let Some((dir, dent)) = parent.and_then(|p| p.child(name)) else {
            out.push(diff(Class::Missing, String::new()));
            if is_dir {
                stack.push_none();
            }
            tally.add(0);
            continue;
        };
        // The entry's stat, from the cheapest source that is certain: the store blob
        // when the listing shows the same inode, the descriptor opened anyway for a
        // directory, else `fstatat`.
        let mut blob: Option<(Option<Meta>, BlobCheck)> = None;
        let mut opened_dir: Option<OwnedFd> = None;
        let mut from_blob = false;
        let mut st: Option<Meta> = None;
        match (&e.data, dent.kind) {
            (EntryData::File { hash, size }, DT_REG) if *size > 0 => {
                let b = blobs.get(store, *hash)?;
                if let Some(bs) = b.0.filter(|bs| bs.ino == dent.ino && bs.dev == tree_dev) {
                    st = Some(bs);
                    from_blob = true;
                }
                blob = Some(b);
            }
            (EntryData::Dir, DT_DIR) => {
                if let Ok(fd) = fsutil::open_dir_at(dir, name) {
                    st = Some(Meta::of(&fstat(fd.as_fd()).map_err(io_err)?));
                    opened_dir = Some(fd);
                }
            }
            _ => {}
        }
        let st = match st {
            Some(st) => st,
            None => match fsutil::lstat_at(dir, name)? {
                Some(st) => Meta::of(&st),
                None => {
                    out.push(diff(Class::Missing, String::new()));
                    if is_dir {
                        stack.push_none();
                    }
                    tally.add(0);
                    continue;
                }
            },
        };
        let is = st.mode & S_IFMT;
        if is != e.data.type_bits() {
            let found = match is {
                S_IFDIR => "directory",
                S_IFREG => "file",
                S_IFLNK => "symlink",
                _ => "special file",
            };
            out.push(diff(Class::WrongType, format!("{found} instead of {}", e.data.kind_name())));
            if is_dir {
                stack.push_none();
            }
            tally.add(0);
            continue;
        }
        if is != S_IFLNK && st.mode & 0o7777 != e.perm {
            out.push(diff(Class::WrongMode, format!("{:o} instead of {:o}", st.mode & 0o7777, e.perm)));
        }
        if st.uid != e.uid || st.gid != e.gid {
            out.push(diff(Class::WrongOwner, format!("{}:{} instead of {}:{}", st.uid, st.gid, e.uid, e.gid)));
        }
        let mut hashed = 0;
        match &e.data {
            EntryData::Dir => {
                let fd = match opened_dir {
                    Some(fd) => fd,
                    None => fsutil::open_dir_at(dir, name)?,
                };
                let listing = stack.push(fd)?;
                for extra in kids.extras(es, i, listing) {
                    let mut p = e.path.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(extra);
                    out.push(Difference { class: Class::Extra, path: lossy(&p), detail: String::new(), entry: None });
                }
            }
            EntryData::File { hash, size } => {
                if st.size != *size {
                    out.push(diff(Class::WrongContent, format!("{} bytes instead of {size}", st.size)));
                } else if *size > 0 {
                    // The blob's verdict holds for a file that is the blob's inode.
                    let (bmeta, bcheck) = match (from_blob, blob) {
                        (true, Some(b)) => b,
                        (_, b) => b.map(Ok).unwrap_or_else(|| blobs.get(store, *hash))?,
                    };
                    let linked = from_blob || bmeta.is_some_and(|b| b.dev == st.dev && b.ino == st.ino);
                    // What is wrong with the content, if anything. A file that cannot
                    // be read is a difference, not the end of the check: the rest of
                    // the tree is still worth knowing about.
                    let wrong = match (linked, bcheck) {
                        (true, BlobCheck::Bad(BlobFault::WrongContent(got))) => {
                            Some(format!("xxh3-128 {got} instead of {hash}"))
                        }
                        (true, BlobCheck::Bad(f)) => Some(format!("its inode is store blob {hash}, which {f}")),
                        (true, BlobCheck::Good | BlobCheck::Unread) => None,
                        (false, _) => match hash_at(dir, name, *size, hash_buf(&mut buf)) {
                            Ok((h, n)) => {
                                hashed = n;
                                (h != *hash).then(|| format!("xxh3-128 {h} instead of {hash}"))
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                Some("removed while being checked".to_owned())
                            }
                            Err(e) => Some(format!("cannot be read: {e}")),
                        },
                    };
                    if let Some(why) = wrong {
                        out.push(diff(Class::WrongContent, why));
                    }
                }
            }
            EntryData::Symlink { target } => {
                let t = fsutil::read_link_into(dir, name, &mut link_buf)?;
                if t != target.as_ref() {
                    out.push(diff(Class::WrongTarget, format!("-> {} instead of -> {}", lossy(t), lossy(target))));
                }
            }
        }
        tally.add(hashed);
    }
    tally.flush();
    Ok(out)
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

/// What a repair did.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub fixed: Vec<Difference>,
    pub removed_extra: Vec<String>,
    pub recovered_blobs: Vec<(Hash128, PathBuf)>,
    pub unrecoverable: Vec<(String, String)>,
}

/// Trees of other retained transactions that may hold a blob's content.
fn other_trees(root: &SystemRoot, idx: &StateIndex, skip: u64) -> Vec<(u64, PathBuf, Layout)> {
    let active = root.active_id();
    let mut out = Vec::new();
    for t in idx.transactions() {
        let p = if Some(t.id) == active {
            root.path.join("usr")
        } else {
            root.path.join(format!(".moss/root/{}/usr", t.id))
        };
        if t.id == skip && Some(t.id) != active {
            continue;
        }
        if let Some(l) = idx.layout(t.id) {
            if p.is_dir() {
                out.push((t.id, p, l));
            }
        }
    }
    out
}

/// Makes sure blob `h` is in the store with the right content, recovering it from
/// another tree when needed. Returns where it was recovered from, if it was.
/// Other trees: computed on first use (materialising every layout is not free).
type Trees = Option<Vec<(u64, PathBuf, Layout)>>;

fn ensure_blob(
    root: &SystemRoot,
    idx: &StateIndex,
    skip: u64,
    store: &Store,
    h: Hash128,
    trees: &mut Trees,
    buf: &mut [u8],
) -> std::result::Result<Option<PathBuf>, String> {
    // The blob's inode when it is there but wrong (a symlink, unreadable, damaged).
    let bad_ino = match store.open_blob(h) {
        Ok(f) => {
            let st = nix::sys::stat::fstat(f.as_fd()).map_err(|e| e.to_string())?;
            if st.st_mode & S_IFMT == S_IFREG && Hash128::of_reader(&f, buf).is_ok_and(|(got, _)| got == h) {
                return Ok(None);
            }
            Some((st.st_dev, st.st_ino))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => match store.stat(h) {
            Ok(Some(st)) => Some((st.st_dev, st.st_ino)),
            Ok(None) => None,
            Err(e) => return Err(e.to_string()),
        },
    };
    let trees = trees.get_or_insert_with(|| other_trees(root, idx, skip));
    for (_, tree_path, layout) in trees.iter() {
        for e in layout.entries() {
            if !matches!(&e.data, EntryData::File { hash, .. } if *hash == h) {
                continue;
            }
            let tree_fd = match fsutil::open_dir(tree_path) {
                Ok(f) => f,
                Err(_) => continue,
            };
            let Ok(fd) = fsutil::open_beneath(tree_fd.as_fd(), &e.path, OFlag::O_RDONLY) else {
                continue;
            };
            let Ok(st) = nix::sys::stat::fstat(fd.as_fd()) else {
                continue;
            };
            if bad_ino == Some((st.st_dev, st.st_ino)) {
                continue; // the same damaged inode
            }
            let f = File::from(fd);
            let Ok((got, _)) = Hash128::of_reader(&f, buf) else {
                continue;
            };
            if got != h {
                continue;
            }
            // Replace the store's copy: remove the bad one, then add the good one.
            if bad_ino.is_some() {
                store.remove(h).map_err(|e| e.to_string())?;
            }
            store.add(h, &f, e.perm, e.uid, e.gid).map_err(|e| e.to_string())?;
            let _ = root;
            return Ok(Some(tree_path.join(fsutil::os(&e.path))));
        }
    }
    Err(match bad_ino {
        Some(_) => "its store blob is corrupt and no retained tree holds an intact copy".into(),
        None => "its store blob is missing and no retained tree holds a copy".into(),
    })
}

fn tmp_name(name: &[u8]) -> Vec<u8> {
    let mut t = b".lbrepair-".to_vec();
    t.extend_from_slice(name);
    t
}

/// Repairs the tree of `which` from the store: the differences a check with
/// `opts` finds (a full one also finds content damaged in place, which a quick
/// check trusts while the file is still the store's inode).
pub fn repair(
    root: &SystemRoot,
    idx: &StateIndex,
    which: Which,
    prune_extra: bool,
    opts: Options,
) -> Result<RepairReport> {
    let (id, tree, tree_path) = open_tree(root, idx, which)?;
    let layout = idx.layout(id).ok_or(Error::NoSuchTransaction(id))?;
    let store = root.store(false)?;
    let diffs = check(tree.as_fd(), &layout, &store, opts, None)?.diffs;
    let mut report = RepairReport::default();
    if diffs.is_empty() {
        return Ok(report);
    }
    // Other trees are only needed when a blob is missing or damaged.
    let mut trees: Trees = None;
    let es = layout.entries();
    let mut buf = vec![0u8; 256 * 1024];
    let is_root = crate::store::is_root();
    let mut stats = BlitStats::default();
    // Per entry, the most severe difference decides the fix: a rebuild also
    // restores permissions and owner.
    let mut by_entry: std::collections::BTreeMap<usize, Vec<&Difference>> = std::collections::BTreeMap::new();
    for d in &diffs {
        if let Some(i) = d.entry {
            by_entry.entry(i).or_default().push(d);
        }
    }
    for (i, ds) in by_entry {
        let rebuild = ds.iter().find(|d| !matches!(d.class, Class::WrongMode | Class::WrongOwner));
        let d = *rebuild.unwrap_or(&ds[0]);
        let e = &es[i];
        let shown = tree_path.join(fsutil::os(&e.path));
        let parent = match fsutil::open_dir_beneath(tree.as_fd(), e.parent()) {
            Ok(p) => p,
            Err(err) => {
                report.unrecoverable.push((e.path_lossy(), format!("cannot open its directory: {err}")));
                continue;
            }
        };
        let r: std::result::Result<(), String> = (|| match d.class {
            Class::WrongMode | Class::WrongOwner => {
                let c = cstr(e.name()).map_err(|x| x.to_string())?;
                let owner_wrong = ds.iter().any(|d| d.class == Class::WrongOwner);
                if is_root {
                    nix::unistd::fchownat(
                        parent.as_fd(),
                        c.as_c_str(),
                        Some(e.uid.into()),
                        Some(e.gid.into()),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|x| x.to_string())?;
                } else if owner_wrong {
                    return Err("fixing an owner needs root".into());
                }
                if !matches!(e.data, EntryData::Symlink { .. }) {
                    nix::sys::stat::fchmodat(
                        parent.as_fd(),
                        c.as_c_str(),
                        Mode::from_bits_truncate(e.perm),
                        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                    )
                    .or_else(|_| {
                        nix::sys::stat::fchmodat(
                            parent.as_fd(),
                            c.as_c_str(),
                            Mode::from_bits_truncate(e.perm),
                            nix::sys::stat::FchmodatFlags::FollowSymlink,
                        )
                    })
                    .map_err(|x| x.to_string())?;
                }
                Ok(())
            }
            Class::Missing | Class::WrongType | Class::WrongContent | Class::WrongTarget => {
                if let EntryData::File { hash, size } = &e.data {
                    if *size > 0 {
                        if let Some(from) = ensure_blob(root, idx, id, &store, *hash, &mut trees, &mut buf)? {
                            report.recovered_blobs.push((*hash, from));
                        }
                    }
                }
                if matches!(e.data, EntryData::Dir) {
                    if d.class == Class::WrongType {
                        fsutil::remove_tree_at(parent.as_fd(), e.name()).map_err(|x| x.to_string())?;
                    }
                    blit::place(e, parent.as_fd(), &store, blit::Ctx::careful(is_root), &mut stats)
                        .map_err(|x| x.to_string())?;
                    return Ok(());
                }
                let tmp = tmp_name(e.name());
                let _ = fsutil::remove_tree_at(parent.as_fd(), &tmp);
                blit::place_as(e, &tmp, parent.as_fd(), &store, blit::Ctx::careful(is_root), &mut stats)
                    .map_err(|x| x.to_string())?;
                crate::failpoint::hit("repair-rename");
                if d.class == Class::WrongType {
                    if let Ok(Some(st)) = fsutil::lstat_at(parent.as_fd(), e.name()) {
                        if st.st_mode & S_IFMT == S_IFDIR {
                            fsutil::remove_tree_at(parent.as_fd(), e.name()).map_err(|x| x.to_string())?;
                        }
                    }
                }
                fsutil::rename(parent.as_fd(), &tmp, parent.as_fd(), e.name()).map_err(|x| x.to_string())
            }
            Class::Extra => Ok(()),
        })();
        match r {
            Ok(()) => report.fixed.extend(ds.iter().map(|d| (*d).clone())),
            Err(why) => report.unrecoverable.push((shown.display().to_string(), why)),
        }
    }
    if prune_extra {
        for d in diffs.iter().filter(|d| d.class == Class::Extra) {
            let p = d.path.as_bytes();
            let (parent, name) = match p.iter().rposition(|&b| b == b'/') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (&p[..0], p),
            };
            match fsutil::open_dir_beneath(tree.as_fd(), parent).and_then(|f| fsutil::remove_tree_at(f.as_fd(), name)) {
                Ok(()) => report.removed_extra.push(d.path.clone()),
                Err(e) => report.unrecoverable.push((d.path.clone(), format!("cannot remove: {e}"))),
            }
        }
    }
    fsutil::syncfs(tree.as_fd()).ctx("sync", &tree_path)?;
    Ok(report)
}

/// PID 1's quick verify of the active tree: (clean, one-line summary).
pub fn verify_for_boot(root: &Path) -> Result<(bool, String)> {
    let sr = SystemRoot::open(root)?;
    let idx = sr.load_existing_index()?.index;
    let (id, tree, _) = open_tree(&sr, &idx, Which::Active)?;
    let layout = idx.layout(id).ok_or(Error::NoSuchTransaction(id))?;
    let store = sr.store(false)?;
    let t = Instant::now();
    let diffs = check(tree.as_fd(), &layout, &store, Options::default(), None)?.diffs;
    let mut s = format!("transaction {id}: {} entries checked in {} ms", layout.len(), t.elapsed().as_millis());
    if diffs.is_empty() {
        s.push_str(", no differences");
    } else {
        s.push_str(&format!(", {} differences:", diffs.len()));
        for d in diffs.iter().take(20) {
            s.push_str(&format!("\n  {d}"));
        }
    }
    Ok((diffs.is_empty(), s))
}

/// PID 1's repair of the active tree; an error when something stays broken.
pub fn repair_for_boot(root: &Path) -> Result<String> {
    let sr = SystemRoot::open_locked(root, false)?;
    let idx = sr.load_existing_index()?.index;
    let t = Instant::now();
    let r = repair(&sr, &idx, Which::Active, false, Options::default())?;
    let mut s = format!("repair: {} fixed in {} ms", r.fixed.len(), t.elapsed().as_millis());
    for f in r.fixed.iter().take(20) {
        s.push_str(&format!("\n  fixed {f}"));
    }
    for (h, from) in &r.recovered_blobs {
        s.push_str(&format!("\n  recovered blob {h} from {}", from.display()));
    }
    if !r.unrecoverable.is_empty() {
        for (p, why) in &r.unrecoverable {
            s.push_str(&format!("\n  NOT recovered: {p}: {why}"));
        }
        return Err(Error::Refused(s));
    }
    Ok(s)
}
