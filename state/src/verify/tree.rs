//! The tree pass of a check: each directory of the tree is listed once with
//! `getdents64` and every child looked up in that listing against the layout's
//! entries; a file whose listed inode is its blob's takes the blob's `stat` and
//! verdict from the [`BlobTable`], so no file is `stat`ed or read unless it is a
//! copy. Work is split into subtree ranges handed to workers on demand.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::hash::Hash128;
use crate::layout::{EntryData, Layout};
use crate::root::STATE_ID;
use crate::store::Store;
use lifeboat_fs::{self as fsutil, io_err, libc_mode::*};

use super::known::{KnownBlobs, Stamper};
use super::progress::{Progress, Tally};
use super::table::*;
use super::*;

/// The children of each directory (by entry index; the tree root is the last
/// slot), in sibling order, found with one depth-first pass over the layout's
/// shapes and no hashing; kept in two flat arrays, so building it allocates
/// three times, not once per directory.
pub(crate) struct Children {
    /// `kids[start[d]..start[d + 1]]` are the children of `d`.
    pub(crate) start: Vec<u32>,
    pub(crate) kids: Vec<u32>,
}

impl Children {
    pub(crate) fn new(layout: &Layout) -> Self {
        let (es, shapes) = (layout.entries(), layout.shapes());
        let root = es.len();
        let mut parent: Vec<u32> = Vec::with_capacity(es.len());
        let mut stack: Vec<usize> = Vec::with_capacity(32);
        let mut start = vec![0u32; es.len() + 2];
        for (i, (e, sh)) in es.iter().zip(shapes).enumerate() {
            stack.truncate(sh.depth());
            let p = stack.last().copied().unwrap_or(root);
            parent.push(p as u32);
            start[p + 1] += 1;
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
        Children { start, kids }
    }

    pub(crate) fn of(&self, dir: usize) -> &[u32] {
        match (self.start.get(dir), self.start.get(dir + 1)) {
            (Some(&a), Some(&b)) => &self.kids[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether directory `dir` (an entry index, or the root) has a child `name`.
    /// Siblings are in byte order (the depth-first order of names without `/`).
    pub(crate) fn has(&self, layout: &Layout, dir: usize, name: &[u8]) -> bool {
        self.of(dir).binary_search_by(|&k| layout.name(k as usize).cmp(name)).is_ok()
    }

    /// The names in `listing` (sorted in byte order) that directory `dir` does not
    /// have: one merge pass.
    pub(crate) fn extras<'l>(&self, layout: &Layout, dir: usize, listing: &'l fsutil::Listing) -> Vec<&'l [u8]> {
        let kids = self.of(dir);
        let mut k = 0;
        let mut out = Vec::new();
        for ent in listing.iter() {
            while k < kids.len() && layout.name(kids[k] as usize) < ent.name {
                k += 1;
            }
            if k >= kids.len() || layout.name(kids[k] as usize) != ent.name {
                out.push(ent.name);
            }
        }
        out
    }
}

const DT_UNKNOWN: u8 = 0;
const DT_DIR: u8 = 4;
const DT_REG: u8 = 8;

/// The `DT_*` type of a `st_mode` (`DT_FIFO` for any type a layout never holds:
/// the type check reports it).
fn dt_of(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFREG => DT_REG,
        S_IFDIR => DT_DIR,
        S_IFLNK => 10,
        _ => 1,
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Which entries' extended attributes a tree pass compares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AttrCheck {
    /// The layout recorded none (moss's, or an index from before they were kept).
    Nothing,
    /// Those of entries that record some (quick).
    Recorded,
    /// Every entry's: one added where none was recorded is found (`--full`).
    Every,
}

/// What a tree pass works with, shared by its workers.
pub(crate) struct Walk<'a> {
    pub(crate) store: &'a Store,
    /// Blobs' `stat`s and verdicts from the store pass.
    pub(crate) blobs: &'a BlobTable,
    pub(crate) kids: &'a Children,
    /// Stamps a tree file is matched against before its blob is looked up.
    pub(crate) known: Option<&'a KnownBlobs>,
    /// Change times older than this are stamped.
    pub(crate) cutoff: (i64, u32),
    /// Hash every file (`--full` alone).
    pub(crate) hash_in_tree: bool,
    pub(crate) attrs: AttrCheck,
    pub(crate) progress: &'a Progress<'a>,
}

/// The difference between `e`'s recorded attributes and those `t` has, if
/// `check` asks for this entry to be compared.
fn attr_difference(
    check: AttrCheck,
    e: &crate::layout::LayoutEntry,
    t: lifeboat_fs::xattr::Target,
) -> std::io::Result<Option<String>> {
    let compare = match check {
        AttrCheck::Nothing => false,
        AttrCheck::Recorded => e.attrs.is_some(),
        AttrCheck::Every => true,
    };
    if !compare {
        return Ok(None);
    }
    let have = match crate::attrs::read(t) {
        Ok(h) => h,
        Err(err) => return Ok(Some(format!("cannot be read: {err}"))),
    };
    let d = crate::attrs::differences(e.attrs.as_deref(), have.as_deref());
    Ok((!d.is_empty()).then(|| d.join(", ")))
}

/// Compares the tree below `tree` with `layout`; also gives the stamps of the
/// blobs it looked up in the store, and how many it looked up.
pub(crate) fn verify_tree(tree: BorrowedFd, layout: &Layout, walk: &Walk) -> Result<(Vec<Difference>, Stamper)> {
    let kids = walk.kids;
    let es = layout.entries();
    // Ranges handed out on demand: directories cost more than files, so equal
    // entry counts are not equal work.
    // Runs may start two levels down (a worker opens the start's ancestors),
    // so one large top-level subtree does not leave a worker alone at the end.
    let mut parts = crate::layout::subtree_runs(layout.shapes(), workers() * 16, usize::MAX);
    // Largest first, so no worker is left with a big one at the end.
    parts.sort_unstable_by_key(|&(a, b)| std::cmp::Reverse(b - a));
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Found = (Vec<Difference>, Stamper);
    let results: Vec<std::io::Result<Found>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers().min(parts.len()))
            .map(|_| {
                let (parts, next) = (&parts, &next);
                s.spawn(move || -> std::io::Result<Found> {
                    fsutil::private_fd_table();
                    // The store through descriptors of this worker's own, its
                    // first-level directories held: a blob looked up walks three
                    // components, not four.
                    let own = walk.store.for_worker().ok();
                    let walk = &Walk { store: own.as_ref().unwrap_or(walk.store), ..*walk };
                    let mut out = Vec::new();
                    let mut stamper = Stamper::new(walk.cutoff);
                    while let Some(&(a, b)) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
                        out.extend(check_range(tree, layout, a, b, walk, &mut stamper)?);
                    }
                    Ok((out, stamper))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("verify worker panicked"))))
            .collect()
    });
    let (mut diffs, mut stamps) = (Vec::new(), Stamper::new(walk.cutoff));
    for r in results {
        let (d, st) = r.map_err(|e| Error::io("verify", "tree", e))?;
        diffs.extend(d);
        stamps.taken.extend(st.taken);
        stamps.looked_up += st.looked_up;
        stamps.listed += st.listed;
    }
    // Extras at the top of the tree.
    for name in fsutil::list_dir(tree).map_err(|e| Error::io("list", "tree", e))? {
        if name == STATE_ID || kids.has(layout, es.len(), &name) {
            continue;
        }
        diffs.push(Difference { class: Class::Extra, path: lossy(&name), detail: String::new(), entry: None });
    }
    diffs.extend(check_top(tree, layout, walk.attrs).map_err(|e| Error::io("stat", "tree", e))?);
    diffs.sort_by(|a, b| a.entry.cmp(&b.entry).then_with(|| a.path.cmp(&b.path)));
    Ok((diffs, stamps))
}

/// The path the tree's own top directory is reported under.
pub const TOP: &str = ".";

/// The tree's top directory against the layout's record of it, where there
/// is one: mode, owner, attributes.
fn check_top(tree: BorrowedFd, layout: &Layout, attrs: AttrCheck) -> std::io::Result<Vec<Difference>> {
    let Some(t) = layout.top() else { return Ok(Vec::new()) };
    let st = nix::sys::stat::fstat(tree).map_err(io_err)?;
    let mut out = Vec::new();
    let diff = |class, detail: String| Difference { class, path: TOP.into(), detail, entry: None };
    if st.st_mode & 0o7777 != t.perm {
        out.push(diff(Class::WrongMode, format!("{:o} instead of {:o}", st.st_mode & 0o7777, t.perm)));
    }
    if (st.st_uid, st.st_gid) != (t.uid, t.gid) {
        out.push(diff(Class::WrongOwner, format!("{}:{} instead of {}:{}", st.st_uid, st.st_gid, t.uid, t.gid)));
    }
    if attrs != AttrCheck::Nothing && (attrs == AttrCheck::Every || t.attrs.is_some()) {
        let have = crate::attrs::read(lifeboat_fs::xattr::Target::Fd(tree))?;
        let d = crate::attrs::differences(t.attrs.as_deref(), have.as_deref());
        if !d.is_empty() {
            out.push(diff(Class::WrongAttrs, d.join(", ")));
        }
    }
    Ok(out)
}

/// A directory being checked: its descriptor and its entries as `getdents64` gave
/// them (name, inode, type), sorted in layout sibling order. Looking a child up
/// here instead of calling `fstatat` finds a missing entry with no syscall, and a
/// file whose inode number is the store blob's needs no `stat` of its own: the
/// blob's `stat` is the file's.
#[derive(Default)]
pub(crate) struct OpenDir {
    /// `None`: the directory is missing or not a directory.
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) listing: fsutil::Listing,
    /// Where in `listing` the next child is looked for (children come in order).
    pub(crate) cursor: std::cell::Cell<usize>,
    /// Not listed: its stamp shows it holds exactly the layout's entries (see
    /// [`super::known`]), so each child is there, of a type `statx` tells.
    pub(crate) whole: bool,
}

impl OpenDir {
    /// Lists `fd` (freshly opened) into this slot, reusing its buffers.
    pub(crate) fn fill(&mut self, fd: OwnedFd) -> std::io::Result<()> {
        self.fd = None;
        self.whole = false;
        self.cursor.set(0);
        self.listing.read(fd.as_fd())?;
        // Sibling names hold no `/`: byte order is the layout's order.
        self.listing.sort();
        self.fd = Some(fd);
        Ok(())
    }

    pub(crate) fn open(&self) -> Option<(BorrowedFd<'_>, &fsutil::Listing)> {
        self.fd.as_ref().map(|fd| (fd.as_fd(), &self.listing))
    }

    /// The open directory and its entry `name` (names asked for in sibling
    /// order); in a directory trusted whole, an entry of unknown type and inode.
    pub(crate) fn child<'a>(&'a self, name: &'a [u8]) -> Option<(BorrowedFd<'a>, fsutil::Listed<'a>)> {
        let fd = self.fd.as_ref()?;
        if self.whole {
            return Some((fd.as_fd(), fsutil::Listed { name, ino: 0, kind: DT_UNKNOWN }));
        }
        let mut at = self.cursor.get();
        let found = self.listing.seek(name, &mut at);
        self.cursor.set(at);
        Some((fd.as_fd(), found?))
    }
}

/// The directories above the entry being checked, by depth. Slots are reused, so
/// a walk allocates for its deepest path only.
#[derive(Default)]
pub(crate) struct DirStack {
    pub(crate) levels: Vec<OpenDir>,
    pub(crate) len: usize,
}

impl DirStack {
    pub(crate) fn truncate(&mut self, len: usize) {
        for l in self.levels.iter_mut().take(self.len).skip(len) {
            l.fd = None;
        }
        self.len = self.len.min(len);
    }

    pub(crate) fn slot(&mut self) -> &mut OpenDir {
        if self.levels.len() <= self.len {
            self.levels.push(OpenDir::default());
        }
        &mut self.levels[self.len]
    }

    /// Pushes a directory that is missing or wrong.
    pub(crate) fn push_none(&mut self) {
        self.slot().fd = None;
        self.len += 1;
    }

    /// Pushes a directory trusted whole, without listing it.
    pub(crate) fn push_whole(&mut self, fd: OwnedFd) {
        let slot = self.slot();
        slot.fd = Some(fd);
        slot.whole = true;
        self.len += 1;
    }

    pub(crate) fn push(&mut self, fd: OwnedFd) -> std::io::Result<&fsutil::Listing> {
        self.slot().fill(fd)?;
        self.len += 1;
        Ok(&self.levels[self.len - 1].listing)
    }

    pub(crate) fn get(&self, depth: usize) -> Option<&OpenDir> {
        self.levels[..self.len].get(depth).filter(|l| l.fd.is_some())
    }
}

pub(crate) fn check_range(
    tree: BorrowedFd,
    layout: &Layout,
    a: usize,
    b: usize,
    walk: &Walk,
    stamper: &mut Stamper,
) -> std::io::Result<Vec<Difference>> {
    let Walk { store, blobs, kids, known, hash_in_tree, progress, attrs, .. } = *walk;
    use lifeboat_fs::xattr::Target;
    use nix::sys::stat::fstat;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut link_buf = Vec::new();
    let mut tally = Tally::new(progress);
    let tree_dev = fstat(tree).map_err(io_err)?.st_dev;
    // A descriptor of our own: the workers share `tree`.
    let mut root = OpenDir::default();
    root.fill(fsutil::open_dir_at(tree, b".")?)?;
    let mut stack = DirStack::default();
    let es = layout.entries();
    for (i, (e, shape)) in es.iter().zip(layout.shapes()).enumerate().take(b).skip(a) {
        let depth = shape.depth();
        stack.truncate(depth);
        // A range that starts inside directories other ranges check opens
        // them first (in depth-first order, every later entry's parent is one
        // of them or a directory of this range). One that is missing or not a
        // directory leaves its level empty: what is below is missing here, and
        // its own range reports it.
        while stack.len < depth {
            let k = stack.len;
            let name = e.path.split(|&c| c == b'/').nth(k).unwrap_or_default();
            let parent = if k == 0 { root.open() } else { stack.get(k - 1).and_then(|l| l.open()) };
            match parent.and_then(|(fd, _)| fsutil::open_dir_at(fd, name).ok()) {
                Some(fd) => {
                    if stack.push(fd).is_err() {
                        stack.truncate(k);
                        stack.push_none();
                    }
                }
                None => stack.push_none(),
            }
        }
        let parent = if depth == 0 { Some(&root) } else { stack.get(depth - 1) };
        let diff = |class, detail: String| Difference { class, path: e.path_lossy(), detail, entry: Some(i) };
        let is_dir = matches!(e.data, EntryData::Dir);
        let name = layout.name(i);
        let Some((dir, dent)) = parent.and_then(|p| p.child(name)) else {
            out.push(diff(Class::Missing, String::new()));
            if is_dir {
                stack.push_none();
            }
            tally.add(0);
            continue;
        };
        // A child of a directory trusted whole (or of a filesystem whose
        // listings give no types) is `statx`ed first: its type and inode come
        // from that.
        let mut pre: Option<fsutil::Statx> = None;
        let kind = match dent.kind {
            // Opened as a directory below; what is not one is found by the
            // `lstat` after.
            DT_UNKNOWN if is_dir => DT_DIR,
            DT_UNKNOWN => match fsutil::statx_at(dir, name)? {
                Some(sx) => {
                    pre = Some(sx);
                    dt_of(sx.mode)
                }
                None => {
                    out.push(diff(Class::Missing, String::new()));
                    if is_dir {
                        stack.push_none();
                    }
                    tally.add(0);
                    continue;
                }
            },
            k => k,
        };
        let ino = pre.map_or(dent.ino, |p| p.ino);
        // The entry's stat, from the cheapest source that is certain: the store blob
        // when the listing shows the same inode, the descriptor opened anyway for a
        // directory, else `fstatat`.
        let mut blob: Option<(Option<Meta>, BlobCheck)> = None;
        let mut opened_dir: Option<OwnedFd> = None;
        let mut opened_file: Option<std::fs::File> = None;
        let mut dir_sx: Option<fsutil::Statx> = None;
        let mut from_blob = false;
        let mut st: Option<Meta> = None;
        match (&e.data, kind) {
            (EntryData::File { size, .. }, DT_REG) if *size > 0 && hash_in_tree => {
                // Opened once: its `fstat` is the entry's, its bytes are hashed below.
                if let Some(f) = open_for_hash(dir, name)? {
                    st = Some(Meta::of(&fstat(f.as_fd()).map_err(io_err)?));
                    opened_file = Some(f);
                }
            }
            (EntryData::File { hash, size }, DT_REG) if *size > 0 => {
                // A file whose blob was stamped: one `statx` here says whether it
                // is still that inode, unchanged, so still the store's.
                if let Some(k) = known.filter(|k| k.has(i)) {
                    let sx = match pre {
                        Some(sx) => Some(sx),
                        None => fsutil::statx_at(dir, name)?,
                    };
                    if let Some(sx) = sx {
                        st = Some(Meta::of_statx(&sx));
                        if k.matches(i, &sx) && sx.dev == tree_dev {
                            from_blob = true;
                            blob = Some((st, BlobCheck::Unread));
                        }
                    }
                }
                if !from_blob {
                    let b = blobs.get(store, *hash, i, stamper)?;
                    if let Some(bs) = b.0.filter(|bs| bs.ino == ino && bs.dev == tree_dev) {
                        st = Some(bs);
                        from_blob = true;
                    }
                    blob = Some(b);
                }
            }
            (EntryData::Dir, DT_DIR) => {
                if let Ok(fd) = fsutil::open_dir_at(dir, name) {
                    // Taken before it is listed (see `saw_whole_dir`).
                    dir_sx = fsutil::statx_at(fd.as_fd(), b"")?;
                    st = dir_sx.as_ref().map(Meta::of_statx);
                    opened_dir = Some(fd);
                }
            }
            _ => {}
        }
        let st = match st.or(pre.as_ref().map(Meta::of_statx)) {
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
        // Attributes: through the descriptor the check holds, else by name.
        let attr_diff = match (&e.data, &opened_file, &opened_dir) {
            (EntryData::Dir, _, _) => None, // below, through the directory's descriptor
            (_, Some(f), _) => attr_difference(attrs, e, Target::Fd(f.as_fd()))?,
            _ => attr_difference(attrs, e, Target::At(dir, name))?,
        };
        if let Some(why) = attr_diff {
            out.push(diff(Class::WrongAttrs, why));
        }
        match &e.data {
            EntryData::Dir => {
                let fd = match opened_dir {
                    Some(fd) => fd,
                    None => fsutil::open_dir_at(dir, name)?,
                };
                if let Some(why) = attr_difference(attrs, e, Target::Fd(fd.as_fd()))? {
                    out.push(diff(Class::WrongAttrs, why));
                }
                // A directory whose stamp matches holds what it held when it was
                // stamped: exactly the layout's entries. It is not listed.
                let trusted = match (known, &dir_sx) {
                    (Some(k), Some(sx)) => k.matches(i, sx) && sx.dev == tree_dev,
                    _ => false,
                };
                if trusted {
                    stack.push_whole(fd);
                } else {
                    stamper.listed += 1;
                    let listing = stack.push(fd)?;
                    let extras = kids.extras(layout, i, listing);
                    // Every name listed is a layout entry's and none is missing.
                    if extras.is_empty() && listing.len() == kids.of(i).len() {
                        if let Some(sx) = &dir_sx {
                            stamper.saw_whole_dir(i, sx);
                        }
                    }
                    for extra in extras {
                        let mut p = e.path.to_vec();
                        p.push(b'/');
                        p.extend_from_slice(extra);
                        out.push(Difference {
                            class: Class::Extra,
                            path: lossy(&p),
                            detail: String::new(),
                            entry: None,
                        });
                    }
                }
            }
            EntryData::File { hash, size } => {
                if st.size != *size {
                    out.push(diff(Class::WrongContent, format!("{} bytes instead of {size}", st.size)));
                } else if let Some(f) = opened_file {
                    let r = Hash128::of_file_expecting(f, *size, hash_buf(&mut buf));
                    if let Some(why) = content_verdict(r, hash, &mut hashed) {
                        out.push(diff(Class::WrongContent, why));
                    }
                } else if *size > 0 {
                    // The blob's verdict holds for a file that is the blob's inode.
                    let (bmeta, bcheck) = match (from_blob, blob) {
                        (true, Some(b)) => b,
                        (_, b) => b.map(Ok).unwrap_or_else(|| blobs.get(store, *hash, i, stamper))?,
                    };
                    // A file that is its variant's inode (the blob with the
                    // entry's metadata) is trusted as one that is the blob's is.
                    let linked = from_blob || bmeta.is_some_and(|b| b.dev == st.dev && b.ino == st.ino);
                    let variant = !linked
                        && store
                            .variants()
                            .and_then(|v| v.stat(*hash, crate::variants::key_of(e)))
                            .is_some_and(|v| v.st_dev == st.dev && v.st_ino == st.ino && v.st_size as u64 == *size);
                    // The blob's verdict is for the blob's inode; a variant's
                    // content is trusted as a blob's is in a quick check.
                    let bcheck = if variant { BlobCheck::Unread } else { bcheck };
                    // What is wrong with the content, if anything. A file that cannot
                    // be read is a difference, not the end of the check: the rest of
                    // the tree is still worth knowing about.
                    let wrong = match (linked || variant, bcheck) {
                        (true, BlobCheck::Bad(BlobFault::WrongContent(got))) => {
                            Some(format!("xxh3-128 {got} instead of {hash}"))
                        }
                        (true, BlobCheck::Bad(f)) => Some(format!("its inode is store blob {hash}, which {f}")),
                        (true, BlobCheck::Good | BlobCheck::Unread) => None,
                        (false, _) => content_verdict(hash_at(dir, name, *size, hash_buf(&mut buf)), hash, &mut hashed),
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

/// What is wrong with a file's content, given the result of hashing it (a file
/// that cannot be read is a difference, not the end of the check); counts the
/// bytes read into `hashed`.
fn content_verdict(r: std::io::Result<(Hash128, u64)>, want: &Hash128, hashed: &mut u64) -> Option<String> {
    match r {
        Ok((h, n)) => {
            *hashed = n;
            (h != *want).then(|| format!("xxh3-128 {h} instead of {want}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("removed while being checked".to_owned()),
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}
