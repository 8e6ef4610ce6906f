//! The blit: materialise a [`Layout`] as a real directory tree, hardlinked from the
//! store, using only `*at` syscalls relative to directory fds.
//!
//! Entries come in depth-first order, so a stack of open directory fds (one per
//! level) is all the state a worker needs, and no path is ever resolved through
//! a symlink; the entries are split into runs for every core (`RunPlan`).
//! Empty files are created, not linked (moss does the same: every empty file would
//! otherwise share one inode with a huge link count). A blob whose permissions or
//! owner differ from the entry's, and a file with extended attributes (set on a
//! link, they would be set on the blob), is linked to the blob's *variant* with
//! its metadata instead ([`crate::variants`]: one inode per distinct content,
//! mode, owner and attributes, shared by every tree); where there are no
//! variants (a moss root) or a link cannot be made (`EMLINK`), it is copied, and
//! entries that are the same copy — as the names of a hard-link group are —
//! share one copy ([`SharedCopies`]). Owner, then mode, then attributes: `chown`
//! clears a file capability. Copies keep the blob's holes.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::Mode;

use crate::attrs::{self, AttrSet};
use crate::error::{IoContext, Result};
use crate::hash::Hash128;
use crate::layout::{EntryData, Layout, LayoutEntry};
use crate::store::{self, Store};
use lifeboat_fs::xattr::Target;
use lifeboat_fs::{self as fsutil, cstr, io_err};

/// How entries are being created: decides which chown/chmod calls can be left out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    /// Running as root (owners are applied).
    pub root: bool,
    /// The process umask is 0, so creation modes are exact.
    pub umask_zero: bool,
    /// The parent directory is set-group-ID, so new entries inherit its group.
    pub parent_setgid: bool,
    /// Refuse a blob whose size is not the entry's (repair trusts the store's
    /// inode only as far as a quick check does).
    pub check_size: bool,
    /// The parent directory has a default ACL, so a new entry inherits an ACL
    /// (and a mode narrowed by it): both are set exactly after creation.
    pub parent_default_acl: bool,
}

impl Ctx {
    /// A context that always applies owner, permissions and attributes exactly (repair).
    pub fn careful(root: bool) -> Self {
        Ctx { root, umask_zero: false, parent_setgid: true, check_size: true, parent_default_acl: true }
    }

    /// Whether a newly created entry already has owner `uid:gid`: root creates as
    /// 0:0 unless the parent passes its group on.
    fn owner_is(&self, uid: u32, gid: u32) -> bool {
        !self.root || (uid == 0 && gid == 0 && !self.parent_setgid)
    }

    fn settle(&self, fd: BorrowedFd, perm: u32, uid: u32, gid: u32) -> std::io::Result<()> {
        if !self.owner_is(uid, gid) || !self.umask_zero || perm & 0o7000 != 0 || self.parent_default_acl {
            return store::set_owner_perm(fd, perm, uid, gid);
        }
        Ok(())
    }

    /// Sets the attributes of a just-made entry (after owner and mode): those
    /// recorded, and with a default ACL above, exactly those.
    fn set_attrs(&self, t: Target, want: Option<&AttrSet>) -> std::io::Result<()> {
        if want.is_some() || self.parent_default_acl {
            attrs::apply(t, want, self.parent_default_acl)?;
        }
        Ok(())
    }
}

/// What makes two file entries one copy: content, mode, owner and attributes.
type CopyKey = (Hash128, u32, u32, u32, Option<Arc<AttrSet>>);

/// The copies one blit made, by what they are, so that every entry that is the
/// same copy links the first one — a hard-link group of the source whose files
/// cannot be the blob's inode (attributes, another mode) stays one inode.
pub struct SharedCopies<'t> {
    /// The tree being made: a copy's path is below it.
    top: BorrowedFd<'t>,
    made: Mutex<HashMap<CopyKey, Box<[u8]>>>,
}

impl<'t> SharedCopies<'t> {
    pub fn new(top: BorrowedFd<'t>) -> Self {
        SharedCopies { top, made: Mutex::new(HashMap::new()) }
    }

    /// Links `e` (to be made as `name` in `dir`) to the copy made for an equal
    /// entry, if there is one; else claims the key for `e` and returns false.
    fn link_or_claim(&self, e: &LayoutEntry, key: CopyKey, dir: BorrowedFd, name: &[u8]) -> std::io::Result<bool> {
        let first = {
            let Ok(mut m) = self.made.lock() else { return Ok(false) };
            match m.get(&key) {
                Some(p) => p.clone(),
                None => {
                    m.insert(key, e.path.clone());
                    return Ok(false);
                }
            }
        };
        // The first copy may still be being made by another worker: its name
        // appears when it is created (its content, owner and attributes are
        // the inode's, and follow). A copy that never appears (its maker
        // failed) is not waited for long.
        // Its directory is opened beneath the top without following a
        // symlink: whatever stands in the tree, the link never reaches outside.
        let (parent, first_name) = match first.iter().rposition(|&b| b == b'/') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (&first[..0], &first[..]),
        };
        let Ok(src_dir) = fsutil::open_dir_beneath(self.top, parent) else { return Ok(false) };
        for _ in 0..200 {
            let linked = fsutil::with_cstr(first_name, |src| {
                fsutil::with_cstr(name, |dst| nix::unistd::linkat(src_dir.as_fd(), src, dir, dst, AtFlags::empty()))
            })??;
            match linked {
                Ok(()) => return Ok(true),
                Err(Errno::ENOENT) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(Errno::EMLINK) => return Ok(false),
                Err(err) => return Err(io_err(err)),
            }
        }
        Ok(false)
    }
}

/// Counts of what a blit did.
#[derive(Default, Debug, Clone, Copy)]
pub struct BlitStats {
    /// Wall time of the blit itself (no fsync).
    pub duration: std::time::Duration,
    pub dirs: u64,
    pub linked: u64,
    pub copied: u64,
    pub empty: u64,
    pub symlinks: u64,
}

impl BlitStats {
    fn add(&mut self, o: &BlitStats) {
        self.dirs += o.dirs;
        self.linked += o.linked;
        self.copied += o.copied;
        self.empty += o.empty;
        self.symlinks += o.symlinks;
    }
}

/// Creates directory `name` below `parent` and fills it with `layout`.
/// `name` must not exist. `shown` is the path used in messages.
///
/// Top-level entries are made first; then the rest, in runs of equal length
/// taken by one worker per core as each becomes free (`RunPlan`).
pub fn blit(layout: &Layout, store: &Store, parent: BorrowedFd, name: &[u8], shown: &Path) -> Result<BlitStats> {
    let cname = cstr(name).ctx("create", shown)?;
    nix::sys::stat::mkdirat(parent, cname.as_c_str(), Mode::from_bits_truncate(0o700))
        .map_err(io_err)
        .ctx("create", shown)?;
    let started = std::time::Instant::now();
    let top = fsutil::open_dir_at(parent, name).ctx("open", shown)?;
    // With umask 0, creation modes are exact and most chmod calls can go.
    let old_umask = nix::sys::stat::umask(Mode::empty());
    let r = blit_all(layout, store, top.as_fd(), shown);
    nix::sys::stat::umask(old_umask);
    let mut stats = r?;
    // The top last: a default ACL set on it earlier would have been inherited.
    set_top(layout, top.as_fd()).ctx("set the owner, mode and attributes of", shown)?;
    stats.duration = started.elapsed();
    Ok(stats)
}

/// Gives the tree's top directory the recorded mode, owner and attributes
/// (0755, as made, where none were recorded).
pub(crate) fn set_top(layout: &Layout, top: BorrowedFd) -> std::io::Result<()> {
    match layout.top() {
        None => nix::sys::stat::fchmod(top, Mode::from_bits_truncate(0o755)).map_err(io_err),
        Some(t) => {
            store::set_owner_perm(top, t.perm, t.uid, t.gid)?;
            attrs::apply(Target::Fd(top), t.attrs.as_deref(), true)
        }
    }
}

fn blit_all(layout: &Layout, store: &Store, top: BorrowedFd, shown: &Path) -> Result<BlitStats> {
    let root = is_root();
    let (es, shapes) = (layout.entries(), layout.shapes());
    let mut stats = BlitStats::default();
    let parent_default_acl = has_default_acl(top);
    let ctx = Ctx { root, umask_zero: true, parent_setgid: false, check_size: true, parent_default_acl };
    let copies = SharedCopies::new(top);
    for (e, _) in es.iter().zip(shapes).filter(|(_, s)| s.depth == 0) {
        place(e, top, store, ctx, &mut stats, Some(&copies)).ctx("create", shown.join(fsutil::os(&e.path)))?;
    }
    let plan = RunPlan::new(layout, |i| shapes.get(i).is_some_and(|s| s.depth > 0));
    // A blob cut short or replaced by something else is refused, never linked
    // into a tree that is about to boot (one `fstatat` the link costs anyway).
    let policy = Policy { root, check_size: true, stop_at_failure: true, track: false };
    let made = plan.make(es, store, top, policy, &copies);
    if let Some((i, err)) = made.failed.into_iter().min_by_key(|(i, _)| *i) {
        let path = es.get(i).map_or_else(|| shown.to_path_buf(), |e| shown.join(fsutil::os(&e.path)));
        return Err(err).ctx("create", path);
    }
    stats.add(&made.stats);
    Ok(stats)
}

/// Runs per worker: small enough that the workers finish together (a worker
/// left alone with a long last run idles the other cores), large enough that
/// making each run's ancestors costs nothing.
const RUNS_PER_WORKER: usize = 16;

/// How [`RunPlan::make`] makes entries and meets failure.
#[derive(Clone, Copy)]
struct Policy {
    root: bool,
    /// Refuse a blob whose size is not the entry's (see [`Ctx::check_size`]).
    check_size: bool,
    /// The first failure ends the whole job (a blit); else it is noted and
    /// only the failed directory's contents are skipped (a repair).
    stop_at_failure: bool,
    /// Note the index of every entry made.
    track: bool,
}

/// What [`RunPlan::make`] did.
#[derive(Default)]
struct Made {
    stats: BlitStats,
    done: Vec<usize>,
    failed: Vec<(usize, std::io::Error)>,
}

/// Work for every core: runs of about equal length of the wanted entries in
/// depth-first order, cut anywhere (and wherever an entry is not wanted), taken
/// in order by whichever worker is free. A run's first entry may lie deep in a
/// directory that an earlier run, still going, has not made yet, so a worker
/// makes the wanted ancestors it needs itself, and whoever comes second to a
/// directory — its own run's worker or another's — finds it made and opens it.
/// Nobody waits for anybody, and the workers finish together.
struct RunPlan {
    /// `(first, end)` entry indices.
    runs: Vec<(usize, usize)>,
    /// Per run: its first entry's wanted ancestors, outermost first.
    ancestors: Vec<Vec<usize>>,
    /// Every directory in some `ancestors`, sorted: the only ones that may exist
    /// already when their own run comes to them.
    shared: Vec<usize>,
}

impl RunPlan {
    fn new(layout: &Layout, wanted: impl Fn(usize) -> bool) -> Self {
        let es = layout.entries();
        let total = (0..es.len()).filter(|&i| wanted(i)).count();
        let target = total.div_ceil(crate::workers::count() * RUNS_PER_WORKER).max(64);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut ancestors = Vec::new();
        // The wanted directories enclosing the current entry, by depth (`None`
        // for one that exists already).
        let mut dirs: Vec<Option<usize>> = Vec::new();
        let mut start: Option<usize> = None;
        for (i, (e, shape)) in es.iter().zip(layout.shapes()).enumerate() {
            dirs.truncate(shape.depth());
            let want = wanted(i);
            match start {
                Some(s) if want && i - s < target => {}
                _ => {
                    if let Some(s) = start.take() {
                        runs.push((s, i));
                    }
                    if want {
                        start = Some(i);
                        ancestors.push(dirs.iter().flatten().copied().collect());
                    }
                }
            }
            if matches!(e.data, EntryData::Dir) {
                dirs.push(want.then_some(i));
            }
        }
        if let Some(s) = start {
            runs.push((s, es.len()));
        }
        let mut shared: Vec<usize> = ancestors.iter().flatten().copied().collect();
        shared.sort_unstable();
        shared.dedup();
        RunPlan { runs, ancestors, shared }
    }

    /// Makes every run's entries below `top`, one worker per core.
    fn make(&self, es: &[LayoutEntry], store: &Store, top: BorrowedFd, policy: Policy, copies: &SharedCopies) -> Made {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let results: Vec<Made> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..crate::workers::count().min(self.runs.len()).max(1))
                .map(|_| {
                    let (next, stop) = (&next, &stop);
                    s.spawn(move || {
                        let mut mine = Made::default();
                        let own = store.for_worker().ok();
                        let store = own.as_ref().unwrap_or(store);
                        while !stop.load(Ordering::Relaxed) {
                            let r = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(a, b)) = self.runs.get(r) else { break };
                            let ancestors = self.ancestors.get(r).map_or(&[][..], |v| &v[..]);
                            self.make_run(es, ancestors, a, b, store, top, policy, copies, &mut mine);
                            if policy.stop_at_failure && !mine.failed.is_empty() {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Made {
                        failed: vec![(0, std::io::Error::other("a blit worker thread ended without a result"))],
                        ..Made::default()
                    })
                })
                .collect()
        });
        let mut out = Made::default();
        for r in results {
            out.stats.add(&r.stats);
            out.done.extend(r.done);
            out.failed.extend(r.failed);
        }
        out
    }

    /// Makes the run's first entry's `ancestors` (unless made already), then
    /// `es[a..b]`, keeping the open directories on a stack.
    #[allow(clippy::too_many_arguments)]
    fn make_run(
        &self,
        es: &[LayoutEntry],
        ancestors: &[usize],
        a: usize,
        b: usize,
        store: &Store,
        top: BorrowedFd,
        policy: Policy,
        copies: &SharedCopies,
        out: &mut Made,
    ) {
        let mut dirs = DirStack::new(top);
        // A directory that could not be made: its contents are skipped.
        let mut failed_dir: Option<&[u8]> = None;
        for (i, is_ancestor) in ancestors.iter().map(|&i| (i, true)).chain((a..b).map(|i| (i, false))) {
            let Some(e) = es.get(i) else { continue };
            if let Some(f) = failed_dir {
                if e.path.starts_with(f) && e.path.get(f.len()) == Some(&b'/') {
                    if !is_ancestor {
                        out.failed.push((i, std::io::Error::other("its directory could not be made")));
                        if policy.stop_at_failure {
                            return;
                        }
                    }
                    continue;
                }
                failed_dir = None;
            }
            let placed = dirs.parent_of(e).and_then(|(dir, parent_setgid, parent_default_acl)| {
                let ctx = Ctx {
                    root: policy.root,
                    umask_zero: true,
                    parent_setgid,
                    check_size: policy.check_size,
                    parent_default_acl,
                };
                match place(e, dir, store, ctx, &mut out.stats, Some(copies)) {
                    // Made by another run first (its ancestor, or ours): open it.
                    Err(err) if err.raw_os_error() == Some(Errno::EEXIST as i32) && self.is_shared(i) => {
                        fsutil::open_dir_at(dir, e.name()).map(Some)
                    }
                    r => r,
                }
            });
            match placed {
                Ok(fd) => {
                    if policy.track && !is_ancestor {
                        out.done.push(i);
                    }
                    if let Some(fd) = fd {
                        dirs.push(e, fd);
                    }
                }
                Err(err) => {
                    // A job that stops at the first failure reports it wherever
                    // it happened; else an ancestor's failure is its own run's
                    // to report.
                    if policy.stop_at_failure {
                        out.failed.push((i, err));
                        return;
                    }
                    if !is_ancestor {
                        out.failed.push((i, err));
                    }
                    if matches!(e.data, EntryData::Dir) {
                        failed_dir = Some(&e.path);
                    }
                }
            }
        }
    }

    fn is_shared(&self, i: usize) -> bool {
        self.shared.binary_search(&i).is_ok()
    }
}

/// An open directory being filled: its path, descriptor, whether it is
/// set-group-ID and whether it has a default ACL (what its new entries inherit).
struct OpenDir<'a> {
    path: &'a [u8],
    fd: OwnedFd,
    setgid: bool,
    default_acl: bool,
}

/// The open directories on the path being made, outermost first. A parent not
/// on the stack (where a run starts, or climbs back above where it started) is
/// opened beneath the top without following a symlink.
struct DirStack<'a, 't> {
    top: BorrowedFd<'t>,
    open: Vec<OpenDir<'a>>,
}

/// Whether directory `fd` has a default ACL.
fn has_default_acl(fd: BorrowedFd) -> bool {
    lifeboat_fs::xattr::get(Target::Fd(fd), attrs::ACL_DEFAULT).is_ok_and(|v| v.is_some())
}

impl<'a, 't> DirStack<'a, 't> {
    fn new(top: BorrowedFd<'t>) -> Self {
        DirStack { top, open: Vec::with_capacity(32) }
    }

    /// The directory `e` goes in, whether it is set-group-ID, and whether it
    /// has a default ACL.
    fn parent_of(&mut self, e: &'a LayoutEntry) -> std::io::Result<(BorrowedFd<'_>, bool, bool)> {
        let parent = e.parent();
        while self.open.last().is_some_and(|d| d.path != parent) {
            self.open.pop();
        }
        if self.open.is_empty() {
            let fd =
                if parent.is_empty() { fsutil::dup(self.top) } else { fsutil::open_dir_beneath(self.top, parent) }?;
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io_err)?;
            let default_acl = has_default_acl(fd.as_fd());
            self.open.push(OpenDir { path: parent, fd, setgid: st.st_mode & 0o2000 != 0, default_acl });
        }
        match self.open.last() {
            Some(d) => Ok((d.fd.as_fd(), d.setgid, d.default_acl)),
            None => Err(std::io::Error::other("no open parent directory")),
        }
    }

    /// `fd` is directory `e`, just made: its children go in it.
    fn push(&mut self, e: &'a LayoutEntry, fd: OwnedFd) {
        let default_acl = e.attrs.as_ref().is_some_and(|a| a.has_default_acl());
        self.open.push(OpenDir { path: &e.path, fd, setgid: e.perm & 0o2000 != 0, default_acl });
    }
}

fn is_root() -> bool {
    store::is_root()
}

/// Creates one entry in `dir`; returns the new directory's fd for directories.
pub(crate) fn place(
    e: &LayoutEntry,
    dir: BorrowedFd,
    store: &Store,
    ctx: Ctx,
    stats: &mut BlitStats,
    copies: Option<&SharedCopies>,
) -> std::io::Result<Option<OwnedFd>> {
    place_as(e, e.name(), dir, store, ctx, stats, copies)
}

/// Like [`place`], under another name (repair builds under a temporary name and
/// renames over the damaged file).
#[allow(clippy::too_many_arguments)]
pub(crate) fn place_as(
    e: &LayoutEntry,
    as_name: &[u8],
    dir: BorrowedFd,
    store: &Store,
    ctx: Ctx,
    stats: &mut BlitStats,
    copies: Option<&SharedCopies>,
) -> std::io::Result<Option<OwnedFd>> {
    let root = ctx.root;
    let name = cstr(as_name)?;
    let want = e.attrs.as_deref();
    match &e.data {
        EntryData::Dir => {
            let m = if ctx.umask_zero { e.perm & 0o1777 } else { 0o700 };
            nix::sys::stat::mkdirat(dir, name.as_c_str(), Mode::from_bits_truncate(m)).map_err(io_err)?;
            let fd = fsutil::open_dir_at(dir, as_name)?;
            ctx.settle(fd.as_fd(), e.perm, e.uid, e.gid)?;
            ctx.set_attrs(Target::Fd(fd.as_fd()), want)?;
            stats.dirs += 1;
            Ok(Some(fd))
        }
        EntryData::File { size: 0, hash } => {
            // One name of a hard-link group of empty files: linked to the
            // group's file, where this blit already made it.
            if *hash != Hash128::of(b"") {
                if let Some(c) = copies.filter(|_| as_name == e.name()) {
                    let key = (*hash, e.perm, e.uid, e.gid, e.attrs.clone());
                    if c.link_or_claim(e, key, dir, as_name)? {
                        stats.linked += 1;
                        return Ok(None);
                    }
                }
            }
            let f = store::create_excl(dir, as_name, e.perm)?;
            ctx.settle(f.as_fd(), e.perm, e.uid, e.gid)?;
            ctx.set_attrs(Target::Fd(f.as_fd()), want)?;
            stats.empty += 1;
            Ok(None)
        }
        EntryData::File { hash, size } if want.is_some() => {
            // Never the blob's inode: its attributes would be the blob's.
            place_copy(e, as_name, dir, store, ctx, stats, copies, *hash)
        }
        EntryData::File { hash, size } => {
            // Link first, then look at the link: one lookup in the directory being
            // built is cheaper than a walk down the store before every link. The
            // blob's mode and owner are the link's; a blob that does not carry the
            // entry's (the same content under another mode) is copied instead.
            let loc = store.locate(*hash);
            let linked = fsutil::with_cstr(loc.rel(), |src| {
                nix::unistd::linkat(loc.dir, src, dir, name.as_c_str(), AtFlags::empty())
            })?;
            match linked {
                Ok(()) => {
                    let st =
                        nix::sys::stat::fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)?;
                    let regular = st.st_mode & lifeboat_fs::libc_mode::S_IFMT == lifeboat_fs::libc_mode::S_IFREG;
                    if ctx.check_size && (st.st_size as u64 != *size || !regular) {
                        nix::unistd::unlinkat(dir, name.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
                            .map_err(io_err)?;
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("store blob {} holds {} bytes, not {size}: damaged", hash.moss_hex(), st.st_size),
                        ));
                    }
                    if st.st_mode & 0o7777 == e.perm && (!root || (st.st_uid == e.uid && st.st_gid == e.gid)) {
                        stats.linked += 1;
                        return Ok(None);
                    }
                    nix::unistd::unlinkat(dir, name.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
                        .map_err(io_err)?;
                }
                Err(Errno::ENOENT) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("store blob {} is missing", hash.moss_hex()),
                    ))
                }
                Err(Errno::EMLINK | Errno::EXDEV | Errno::EPERM) => {}
                Err(e) => return Err(io_err(e)),
            }
            place_copy(e, as_name, dir, store, ctx, stats, copies, *hash)
        }
        EntryData::Symlink { target } => {
            let t = cstr(target)?;
            nix::unistd::symlinkat(t.as_c_str(), dir, name.as_c_str()).map_err(io_err)?;
            if !ctx.owner_is(e.uid, e.gid) {
                nix::unistd::fchownat(
                    dir,
                    name.as_c_str(),
                    Some(e.uid.into()),
                    Some(e.gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(io_err)?;
            }
            // Symlinks inherit no ACL: only what is recorded is set.
            if want.is_some() {
                attrs::apply(Target::At(dir, as_name), want, false)?;
            }
            stats.symlinks += 1;
            Ok(None)
        }
    }
}

/// Makes file `e` a copy of its blob (or a link to the copy made for an equal
/// entry): content with its holes, then owner, mode and attributes.
#[allow(clippy::too_many_arguments)]
fn place_copy(
    e: &LayoutEntry,
    as_name: &[u8],
    dir: BorrowedFd,
    store: &Store,
    ctx: Ctx,
    stats: &mut BlitStats,
    copies: Option<&SharedCopies>,
    hash: Hash128,
) -> std::io::Result<Option<OwnedFd>> {
    // The variant every tree and transaction with this metadata shares.
    if let Some(v) = store.variants() {
        if v.place(e, store, dir, as_name)? {
            stats.linked += 1;
            return Ok(None);
        }
    }
    // Without variants (a moss root, a filesystem without unnamed files):
    // one copy per tree, linked by the entries that are the same copy — which
    // is right only where the copy is under its final name (a blit, a repair
    // of missing entries).
    if let Some(c) = copies.filter(|_| as_name == e.name()) {
        let key = (hash, e.perm, e.uid, e.gid, e.attrs.clone());
        if c.link_or_claim(e, key, dir, as_name)? {
            stats.linked += 1;
            return Ok(None);
        }
    }
    let size = match e.data {
        EntryData::File { size, .. } => size,
        _ => 0,
    };
    let src = store.open_blob_checked(hash, size)?;
    let out = store::create_excl(dir, as_name, e.perm)?;
    store::copy_all(&src, &out)?;
    store::set_owner_perm(out.as_fd(), e.perm, e.uid, e.gid)?;
    ctx.set_attrs(Target::Fd(out.as_fd()), e.attrs.as_deref())?;
    stats.copied += 1;
    Ok(None)
}

/// What [`place_missing`] did: counts, and the entries it could not place (for
/// the careful per-entry path: a blob missing from the store, say).
#[derive(Debug, Default)]
pub struct Placed {
    pub stats: BlitStats,
    /// Entries placed, by index.
    pub done: Vec<usize>,
    /// Entries not placed, with why; their descendants are not placed either.
    pub failed: Vec<(usize, String)>,
}

/// Creates every entry of `layout` marked in `missing` below the tree `top`,
/// under its final name — a link to the final name is atomic already, so a
/// missing file needs no temporary one — at blit speed: missing subtrees are
/// split into runs made by one worker per core, each keeping its open
/// directories on a stack, as the blit does. Entries that exist are never
/// touched. The caller makes the result durable (`syncfs`).
pub fn place_missing(layout: &Layout, store: &Store, top: BorrowedFd, missing: &[bool]) -> Placed {
    let es = layout.entries();
    let plan = RunPlan::new(layout, |i| missing.get(i).copied().unwrap_or(false));
    let old_umask = nix::sys::stat::umask(Mode::empty());
    let copies = SharedCopies::new(top);
    let policy = Policy { root: is_root(), check_size: true, stop_at_failure: false, track: true };
    let made = plan.make(es, store, top, policy, &copies);
    nix::sys::stat::umask(old_umask);
    Placed {
        stats: made.stats,
        done: made.done,
        failed: made.failed.into_iter().map(|(i, e)| (i, e.to_string())).collect(),
    }
}
