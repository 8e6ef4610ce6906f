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
//! Repair goes in layout order (parents first). Each file is rebuilt under a
//! temporary name in its directory and renamed over the damaged one, so every path
//! is always either the old or the restored file. A blob missing from the store or
//! corrupt is recovered from another retained transaction's tree (hashed first),
//! then linked back into the store.

use std::collections::HashSet;
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

/// Progress on a terminal: entries done, bytes hashed.
pub struct Progress {
    pub total: u64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    enabled: bool,
    start: Instant,
    last: AtomicU64,
}

impl Progress {
    pub fn new(total: u64, enabled: bool) -> Self {
        Progress {
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
            eprint!("\r{d}/{} entries, {:.0} MB/s   ", self.total, mb / secs);
        }
    }

    pub fn finish(&self) {
        if self.enabled {
            eprint!("\r{:60}\r", "");
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
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// Splits the layout into ranges starting at entries at most one level down,
/// balanced by count (a range starting one level down opens its parent itself).
fn ranges(layout: &Layout, parts: usize) -> Vec<(usize, usize)> {
    let es = layout.entries();
    let target = es.len().div_ceil(parts.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, e) in es.iter().enumerate().skip(1) {
        if i - start >= target && e.depth() <= 1 {
            out.push((start, i));
            start = i;
        }
    }
    if start < es.len() {
        out.push((start, es.len()));
    }
    out
}

/// The children of each directory (by entry index; the tree root is the last
/// slot), in sibling order, found with one depth-first pass and no hashing.
struct Children {
    of: Vec<Vec<u32>>,
    /// Where each entry's name starts in its path.
    name_at: Vec<u32>,
}

impl Children {
    fn new(es: &[LayoutEntry]) -> Self {
        let root = es.len();
        let mut of: Vec<Vec<u32>> = vec![Vec::new(); es.len() + 1];
        let mut stack: Vec<usize> = Vec::with_capacity(32);
        for (i, e) in es.iter().enumerate() {
            stack.truncate(e.depth());
            of[stack.last().copied().unwrap_or(root)].push(i as u32);
            if matches!(e.data, EntryData::Dir) {
                stack.push(i);
            }
        }
        let name_at = es.iter().map(|e| (e.path.len() - e.name().len()) as u32).collect();
        Children { of, name_at }
    }

    fn name<'a>(&self, es: &'a [LayoutEntry], k: u32) -> &'a [u8] {
        let k = k as usize;
        &es[k].path[self.name_at[k] as usize..]
    }

    /// Whether directory `dir` (an entry index, or the root) has a child `name`.
    /// Siblings are in byte order (the depth-first order of names without `/`).
    fn has(&self, es: &[LayoutEntry], dir: usize, name: &[u8]) -> bool {
        self.of.get(dir).is_some_and(|kids| kids.binary_search_by(|&k| self.name(es, k).cmp(name)).is_ok())
    }

    /// The names in `listing` (sorted in byte order) that directory `dir` does not
    /// have: one merge pass.
    fn extras<'l>(&self, es: &[LayoutEntry], dir: usize, listing: &'l [fsutil::DirEntry]) -> Vec<&'l [u8]> {
        let kids = self.of.get(dir).map(Vec::as_slice).unwrap_or(&[]);
        let mut k = 0;
        let mut out = Vec::new();
        for ent in listing {
            while k < kids.len() && self.name(es, kids[k]) < ent.name.as_slice() {
                k += 1;
            }
            if k >= kids.len() || self.name(es, kids[k]) != ent.name.as_slice() {
                out.push(ent.name.as_slice());
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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The result of a tree check.
#[derive(Debug, Default)]
pub struct Verified {
    pub diffs: Vec<Difference>,
    /// Inodes (device, inode) whose content was hashed and found right; a store
    /// check can skip blobs that are these inodes.
    pub good: HashSet<(u64, u64)>,
}

/// Compares the tree below `tree` with `layout`.
pub fn verify_tree(tree: BorrowedFd, layout: &Layout, store: &Store, opts: Options) -> Result<Verified> {
    let kids = Children::new(layout.entries());
    let progress = Progress::new(layout.len() as u64, opts.progress);
    let es = layout.entries();
    let parts = ranges(layout, workers());
    // A full check hashes every file and never asks the store.
    let blobs = if opts.full {
        BlobTable::none()
    } else {
        BlobTable::build(store, es).map_err(|e| Error::io("stat", store.path(), e))?
    };
    let results: Vec<std::io::Result<RangeResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .map(|&(a, b)| {
                let kids = &kids;
                let progress = &progress;
                let blobs = &blobs;
                s.spawn(move || check_range(tree, es, a, b, store, blobs, kids, opts, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("verify worker panicked"))))
            .collect()
    });
    progress.finish();
    let mut diffs = Vec::new();
    let mut good = HashSet::new();
    for r in results {
        let (d, g) = r.map_err(|e| Error::io("verify", "tree", e))?;
        diffs.extend(d);
        good.extend(g);
    }
    // Extras at the top of the tree.
    for name in fsutil::list_dir(tree).map_err(|e| Error::io("list", "tree", e))? {
        if name == STATE_ID || kids.has(es, es.len(), &name) {
            continue;
        }
        diffs.push(Difference { class: Class::Extra, path: lossy(&name), detail: String::new(), entry: None });
    }
    diffs.sort_by(|a, b| a.entry.cmp(&b.entry).then_with(|| a.path.cmp(&b.path)));
    Ok(Verified { diffs, good })
}

/// Differences and verified inodes of one range.
type RangeResult = (Vec<Difference>, Vec<(u64, u64)>);

/// A directory being checked: its descriptor and its entries as `getdents64` gave
/// them (name, inode, type), sorted in layout sibling order. Looking a child up
/// here instead of calling `fstatat` finds a missing entry with no syscall, and a
/// file whose inode number is the store blob's needs no `stat` of its own: the
/// blob's `stat` is the file's.
struct OpenDir {
    fd: OwnedFd,
    entries: Vec<fsutil::DirEntry>,
}

impl OpenDir {
    fn new(fd: OwnedFd) -> std::io::Result<OpenDir> {
        let mut entries = fsutil::list_dir_entries(fd.as_fd())?;
        // Sibling names hold no `/`: byte order is the layout's order.
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(OpenDir { fd, entries })
    }

    fn find(&self, name: &[u8]) -> Option<&fsutil::DirEntry> {
        let i = self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok()?;
        self.entries.get(i)
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

/// The `lstat` of every blob a layout's files use, taken before the walk in hash
/// order: the store's directories are then visited in order and their dentries stay
/// in the CPU cache (about 30% less kernel time per lookup than the tree's order,
/// which is random for the store), and the walk itself makes no store lookup.
struct BlobTable {
    hashes: Vec<Hash128>,
    meta: Vec<Option<Meta>>,
}

impl BlobTable {
    /// An empty table: every lookup goes to the store.
    fn none() -> Self {
        BlobTable { hashes: Vec::new(), meta: Vec::new() }
    }

    fn build(store: &Store, es: &[LayoutEntry]) -> std::io::Result<Self> {
        let mut hashes: Vec<Hash128> = es
            .iter()
            .filter_map(|e| match &e.data {
                EntryData::File { hash, size } if *size > 0 => Some(*hash),
                _ => None,
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let chunk = hashes.len().div_ceil(workers()).max(1);
        let parts: Vec<std::io::Result<Vec<Option<Meta>>>> = std::thread::scope(|s| {
            let hs: Vec<_> = hashes
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        // A descriptor per worker: threads sharing one pay for its
                        // reference count bouncing between cores on every lookup.
                        let own = store.for_worker()?;
                        // The part is in hash order: hold the current first-level
                        // directory open and look up the rest below it (holding
                        // `aa/bb` too measured slower: two opens per three blobs).
                        let mut top = HeldTop::default();
                        part.iter()
                            .map(|h| {
                                let loc = store.locate(*h);
                                let (dir, rel) = top.resolve(own.fd(), loc.rel());
                                Ok(fsutil::lstat_at(dir, rel)?.map(|st| Meta::of(&st)))
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("store worker panicked"))))
                .collect()
        });
        let mut meta = Vec::with_capacity(hashes.len());
        for p in parts {
            meta.extend(p?);
        }
        Ok(BlobTable { hashes, meta })
    }

    /// The blob's `lstat` (`None`: not in the store), from the table when it is
    /// there, else from the store.
    fn stat(&self, store: &Store, h: Hash128) -> std::io::Result<Option<Meta>> {
        match self.hashes.binary_search(&h) {
            Ok(i) => Ok(self.meta[i]),
            Err(_) => Ok(store.stat(h)?.map(|st| Meta::of(&st))),
        }
    }
}

/// Opens a regular file for hashing without following a symlink or blocking on
/// a FIFO planted under its name; `Ok(None)` when it is gone.
fn open_for_hash(dir: BorrowedFd, name: &[u8]) -> std::io::Result<Option<File>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    match fsutil::with_cstr(name, |c| nix::fcntl::openat(dir, c, flags, Mode::empty()))? {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
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
    opts: Options,
    progress: &Progress,
) -> std::io::Result<RangeResult> {
    use nix::sys::stat::fstat;
    const DT_DIR: u8 = 4;
    const DT_REG: u8 = 8;
    let mut out = Vec::new();
    let mut good = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut tally = Tally { progress, entries: 0, bytes: 0 };
    let tree_dev = fstat(tree).map_err(io_err)?.st_dev;
    // A descriptor of our own: listing rewinds it, and the workers share `tree`.
    let root = OpenDir::new(fsutil::open_dir_at(tree, b".")?)?;
    // Open directories by depth; `None` where the directory is missing or wrong.
    let mut stack: Vec<Option<OpenDir>> = Vec::with_capacity(32);
    for (i, e) in es.iter().enumerate().take(b).skip(a) {
        let depth = e.depth();
        stack.truncate(depth);
        if depth == 1 && stack.is_empty() {
            // This range starts inside a top-level directory another range checks.
            let parent = fsutil::open_dir_at(root.fd.as_fd(), e.parent()).ok().and_then(|fd| OpenDir::new(fd).ok());
            stack.push(parent);
        }
        let parent = if depth == 0 { Some(&root) } else { stack.get(depth - 1).and_then(Option::as_ref) };
        let diff = |class, detail: String| Difference { class, path: e.path_lossy(), detail, entry: Some(i) };
        let is_dir = matches!(e.data, EntryData::Dir);
        let Some((parent, dent)) = parent.and_then(|p| p.find(e.name()).map(|d| (p, d))) else {
            out.push(diff(Class::Missing, String::new()));
            if is_dir {
                stack.push(None);
            }
            tally.add(0);
            continue;
        };
        let dir = parent.fd.as_fd();
        // The entry's stat, from the cheapest source that is certain: the store blob
        // when the listing shows the same inode, the descriptor opened anyway for a
        // directory or a full hash, else `fstatat`.
        let mut blob: Option<Option<Meta>> = None;
        let mut opened_dir: Option<OwnedFd> = None;
        let mut opened_file: Option<File> = None;
        let mut from_blob = false;
        let mut st: Option<Meta> = None;
        match (&e.data, dent.kind) {
            (EntryData::File { hash, size }, DT_REG) if *size > 0 && !opts.full => {
                let b = blobs.stat(store, *hash)?;
                if let Some(bs) = b.filter(|bs| bs.ino == dent.ino && bs.dev == tree_dev) {
                    st = Some(bs);
                    from_blob = true;
                }
                blob = Some(b);
            }
            (EntryData::File { size, .. }, DT_REG) if opts.full && *size > 0 => {
                if let Some(f) = open_for_hash(dir, e.name())? {
                    st = Some(Meta::of(&fstat(f.as_fd()).map_err(io_err)?));
                    opened_file = Some(f);
                }
            }
            (EntryData::Dir, DT_DIR) => {
                if let Ok(fd) = fsutil::open_dir_at(dir, e.name()) {
                    st = Some(Meta::of(&fstat(fd.as_fd()).map_err(io_err)?));
                    opened_dir = Some(fd);
                }
            }
            _ => {}
        }
        let st = match st {
            Some(st) => st,
            None => match fsutil::lstat_at(dir, e.name())? {
                Some(st) => Meta::of(&st),
                None => {
                    out.push(diff(Class::Missing, String::new()));
                    if is_dir {
                        stack.push(None);
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
                stack.push(None);
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
                    None => fsutil::open_dir_at(dir, e.name())?,
                };
                let d = OpenDir::new(fd)?;
                for extra in kids.extras(es, i, &d.entries) {
                    let mut p = e.path.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(extra);
                    out.push(Difference { class: Class::Extra, path: lossy(&p), detail: String::new(), entry: None });
                }
                stack.push(Some(d));
            }
            EntryData::File { hash, size } => {
                if st.size != *size {
                    out.push(diff(Class::WrongContent, format!("{} bytes instead of {size}", st.size)));
                } else if *size > 0 && !from_blob {
                    let linked = !opts.full
                        && match blob {
                            Some(b) => b,
                            None => blobs.stat(store, *hash)?,
                        }
                        .is_some_and(|b| b.dev == st.dev && b.ino == st.ino);
                    if !linked {
                        let (h, n) = match opened_file {
                            Some(f) => Hash128::of_file_expecting(f, *size, &mut buf)?,
                            None => hash_at(dir, e.name(), *size, &mut buf)?,
                        };
                        hashed = n;
                        if h != *hash {
                            out.push(diff(Class::WrongContent, format!("xxh3-128 {h} instead of {hash}")));
                        } else {
                            good.push((st.dev, st.ino));
                        }
                    }
                }
            }
            EntryData::Symlink { target } => {
                let c = cstr(e.name())?;
                let t = nix::fcntl::readlinkat(dir, c.as_c_str()).map_err(io_err)?;
                let t = std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec();
                if t != target.as_ref() {
                    out.push(diff(Class::WrongTarget, format!("-> {} instead of -> {}", lossy(&t), lossy(target))));
                }
            }
        }
        tally.add(hashed);
    }
    tally.flush();
    Ok((out, good))
}

/// Checks every blob the retained transactions need — `blobs` as
/// [`StateIndex::referenced_blobs`] gives them — against its name: present, a
/// regular file of the recorded size, content hashing to the name. Blobs whose
/// inode is in `skip` were hashed through a tree already and are not read again.
/// Driven by the index rather than a walk of the store, so a *missing* blob is
/// found too, and the store's directories (one per blob in the v2 layout) are
/// never listed. Returns the blobs that fail, with why.
pub fn verify_store(
    store: &Store,
    blobs: &[(Hash128, u64)],
    skip: &HashSet<(u64, u64)>,
    progress: bool,
) -> Result<Vec<(Hash128, String)>> {
    let p = Progress::new(blobs.len() as u64, progress);
    let chunk = blobs.len().div_ceil(workers() * 8).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::io::Result<Vec<(Hash128, String)>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers())
            .map(|_| {
                let (p, next) = (&p, &next);
                s.spawn(move || -> std::io::Result<Vec<(Hash128, String)>> {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut bad = Vec::new();
                    let own = store.for_worker()?;
                    let mut top = HeldTop::default();
                    let mut tally = Tally { progress: p, entries: 0, bytes: 0 };
                    // Chunks handed out on demand: hashing work is uneven.
                    loop {
                        let at = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                        let Some(part) = blobs.get(at..(at + chunk).min(blobs.len())) else { break };
                        if part.is_empty() {
                            break;
                        }
                        for &(h, size) in part {
                            let loc = store.locate(h);
                            let (dir, rel) = top.resolve(own.fd(), loc.rel());
                            let st = match fsutil::lstat_at(dir, rel) {
                                Ok(Some(st)) => st,
                                Ok(None) => {
                                    bad.push((h, "missing from the store".to_owned()));
                                    continue;
                                }
                                Err(e) => {
                                    bad.push((h, e.to_string()));
                                    continue;
                                }
                            };
                            if st.st_mode & S_IFMT != S_IFREG {
                                bad.push((h, "not a regular file".to_owned()));
                            } else if st.st_size as u64 != size {
                                bad.push((h, format!("{} bytes instead of {size}", st.st_size)));
                            } else if skip.contains(&(st.st_dev, st.st_ino)) {
                                tally.add(0);
                            } else {
                                match hash_at(dir, rel, size, &mut buf) {
                                    Ok((got, n)) => {
                                        tally.add(n);
                                        if got != h {
                                            bad.push((h, format!("content hashes to {got}")));
                                        }
                                    }
                                    Err(e) => bad.push((h, e.to_string())),
                                }
                            }
                        }
                    }
                    tally.flush();
                    Ok(bad)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("store worker panicked"))))
            .collect()
    });
    p.finish();
    let mut out = Vec::new();
    for r in results {
        out.extend(r.ctx("verify", store.path())?);
    }
    out.sort_by_key(|b| b.0);
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
    let bad_ino = match store.stat(h) {
        Ok(Some(st)) => {
            if store.check(h, buf).unwrap_or(false) {
                return Ok(None);
            }
            Some((st.st_dev, st.st_ino))
        }
        Ok(None) => None,
        Err(e) => return Err(e.to_string()),
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

/// Repairs the tree of `which` from the store.
pub fn repair(
    root: &SystemRoot,
    idx: &StateIndex,
    which: Which,
    prune_extra: bool,
    progress: bool,
) -> Result<RepairReport> {
    let (id, tree, tree_path) = open_tree(root, idx, which)?;
    let layout = idx.layout(id).ok_or(Error::NoSuchTransaction(id))?;
    let store = root.store(false)?;
    let diffs = verify_tree(tree.as_fd(), &layout, &store, Options { full: false, progress })?.diffs;
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
    let diffs = verify_tree(tree.as_fd(), &layout, &store, Options::default())?.diffs;
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
    let r = repair(&sr, &idx, Which::Active, false, false)?;
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
