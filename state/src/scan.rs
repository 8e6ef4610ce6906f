//! Reading a source tree for `state commit` (and for `state recover`, a tree
//! already on the root): walk it without following symlinks, refuse what a
//! transaction cannot hold, read each entry's kept extended attributes
//! ([`crate::attrs`]), and hash every regular file, each inode once (a hard-link
//! group is one file's content under several names), in parallel.
//!
//! `usr/.stateID` at the top of the tree is lifeboat's (or moss's) record of
//! which transaction a tree is, never content: it is not recorded, so a copied
//! or moss-made `/usr` commits as what it holds.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::fcntl::OFlag;

use crate::attrs::{self, AttrSet};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use crate::layout::{check_name, EntryData, Layout, LayoutEntry, MAX_DEPTH};
use crate::store::Store;
use lifeboat_fs::{self as fsutil, libc_mode::*};

/// A scanned tree: its layout, and the tree's descriptor to copy content from.
pub struct ScannedTree {
    pub root: PathBuf,
    pub root_fd: OwnedFd,
    pub layout: Layout,
    /// Blobs the scan added to the store it was given.
    pub new_blobs: u64,
}

struct PendingFile {
    index: usize,
    dev: u64,
    ino: u64,
    /// Fewer blocks allocated than its size needs: it has holes, which the
    /// store's copy keeps.
    sparse: bool,
}

/// Store blobs' inodes and what they hold, `(dev, ino) -> (hash, size)`: a
/// tree file that is one of them (a link the blit made) takes its hash from
/// here without being read.
pub type KnownInodes = HashMap<(u64, u64), (Hash128, u64)>;

/// What a scan does besides walking and hashing.
#[derive(Clone, Copy, Default)]
pub struct ScanOptions<'a> {
    /// Every file's content goes into this store as it is hashed; the caller
    /// makes the store durable.
    pub store: Option<&'a Store>,
    /// Inodes whose content is known ([`KnownInodes`]).
    pub known: Option<&'a KnownInodes>,
    /// Where the hashing reports how far it got (the files are counted by the
    /// walk first, so the total is known).
    pub progress: Option<&'a dyn crate::verify::ProgressSink>,
}

fn kind_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        0o140000 => "a socket",
        0o020000 => "a character device",
        0o060000 => "a block device",
        0o010000 => "a FIFO",
        _ => "of an unknown file type",
    }
}

/// Walks `root` (the contents of a `/usr`). Given a `store`, every file's
/// content goes into it as it is hashed (see [`hash_files`]); the caller makes
/// the store durable.
pub fn scan(root: &Path, store: Option<&Store>) -> Result<ScannedTree> {
    scan_with(root, ScanOptions { store, known: None, progress: None })
}

/// The kept attributes of `target`, with the path in the error.
fn attrs_of(target: lifeboat_fs::xattr::Target, shown: impl Fn() -> PathBuf) -> Result<Option<Arc<AttrSet>>> {
    attrs::read(target).ctx("read extended attributes of", shown())
}

/// [`scan`] with every option.
pub fn scan_with(root: &Path, opts: ScanOptions) -> Result<ScannedTree> {
    use lifeboat_fs::xattr::Target;
    let store = opts.store;
    let root_fd = fsutil::open_dir(root).ctx("open source tree", root)?;
    // The top directory itself: what becomes `/usr`'s own mode, owner and attributes.
    let top_st = nix::sys::stat::fstat(root_fd.as_fd()).map_err(fsutil::io_err).ctx("stat", root)?;
    let top = crate::layout::TopMeta {
        perm: top_st.st_mode & 0o7777,
        uid: top_st.st_uid,
        gid: top_st.st_gid,
        attrs: attrs_of(Target::Fd(root_fd.as_fd()), || root.to_owned())?,
    };
    let mut entries: Vec<LayoutEntry> = Vec::new();
    let mut files: Vec<PendingFile> = Vec::new();
    let mut link_buf = Vec::new();
    // (directory fd, its relative path, depth)
    let mut stack: Vec<(OwnedFd, Vec<u8>, usize)> =
        vec![(fsutil::dup(root_fd.as_fd()).ctx("open", root)?, Vec::new(), 0)];
    while let Some((dfd, rel, depth)) = stack.pop() {
        let full = |name: &[u8]| {
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        let abs = |p: &[u8]| root.join(fsutil::os(p));
        let mut names = fsutil::list_dir(dfd.as_fd()).ctx("read directory", abs(&rel))?;
        names.sort();
        for name in names {
            if depth == 0 && name == crate::root::STATE_ID {
                continue;
            }
            let path = full(&name);
            check_name(&name).map_err(|e| Error::BadTree { path: abs(&path), why: e.to_string() })?;
            if depth > MAX_DEPTH {
                return Err(Error::BadTree { path: abs(&path), why: "nested too deeply".into() });
            }
            let st = fsutil::lstat_at(dfd.as_fd(), &name)
                .ctx("stat", abs(&path))?
                .ok_or_else(|| Error::BadTree { path: abs(&path), why: "vanished while scanning".into() })?;
            let mode = st.st_mode;
            let perm = mode & 0o7777;
            let (uid, gid) = (st.st_uid, st.st_gid);
            match mode & S_IFMT {
                S_IFDIR => {
                    let sub = fsutil::open_dir_at(dfd.as_fd(), &name).ctx("open directory", abs(&path))?;
                    let attrs = attrs_of(Target::Fd(sub.as_fd()), || abs(&path))?;
                    entries.push(LayoutEntry {
                        path: path.clone().into(),
                        perm,
                        uid,
                        gid,
                        data: EntryData::Dir,
                        attrs,
                    });
                    stack.push((sub, path, depth + 1));
                }
                S_IFREG => {
                    let sparse = (st.st_blocks as u64).saturating_mul(512) < st.st_size as u64;
                    files.push(PendingFile { index: entries.len(), dev: st.st_dev, ino: st.st_ino, sparse });
                    entries.push(LayoutEntry {
                        path: path.into(),
                        perm,
                        uid,
                        gid,
                        data: EntryData::File { hash: Hash128(0), size: st.st_size as u64 },
                        // Read with the content, from the descriptor the hashing opens.
                        attrs: None,
                    });
                }
                S_IFLNK => {
                    let t = fsutil::read_link_into(dfd.as_fd(), &name, &mut link_buf).ctx("read link", abs(&path))?;
                    if t.is_empty() || t.len() > 4095 {
                        return Err(Error::BadTree {
                            path: abs(&path),
                            why: "symlink target empty or too long".into(),
                        });
                    }
                    let target: Box<[u8]> = t.into();
                    let attrs = attrs_of(Target::At(dfd.as_fd(), &name), || abs(&path))?;
                    entries.push(LayoutEntry {
                        path: path.into(),
                        perm: 0o777,
                        uid,
                        gid,
                        data: EntryData::Symlink { target },
                        attrs,
                    });
                }
                _ => {
                    return Err(Error::BadTree {
                        path: abs(&path),
                        why: format!(
                            "is {}; a transaction holds only directories, regular files and symlinks",
                            kind_name(mode)
                        ),
                    })
                }
            }
        }
    }

    let added = hash_files(root, root_fd.as_fd(), &mut entries, &files, opts)?;
    let new_blobs = added.len() as u64;
    let layout = Layout::new(entries).map_err(|(why, p)| {
        // Refused: the blobs this scan added go again, as in `hash_files`.
        if let Some(st) = store {
            for h in &added {
                let _ = st.remove(*h);
            }
        }
        Error::Layout { path: root.join(fsutil::os(&p)).display().to_string(), why }
    })?;
    let layout = layout.with_top(Some(top));
    Ok(ScannedTree { root: root.to_owned(), root_fd, layout, new_blobs })
}

/// Files a hashing worker takes at a time.
const HASH_RUN: usize = 64;

/// One worker of [`hash_files`]: takes runs of files until none are left.
#[allow(clippy::too_many_arguments)]
fn hash_runs(
    root: &Path,
    root_fd: BorrowedFd,
    ents: &[LayoutEntry],
    unique: &[&PendingFile],
    next: &AtomicUsize,
    opts: ScanOptions,
    progress: &crate::verify::progress::Progress,
    out: &mut Vec<Hashed>,
    added: &mut Vec<Hash128>,
) -> Result<()> {
    let store = opts.store;
    const BUF: usize = 1 << 20;
    let mut writer = match store {
        Some(st) => Some(st.writer().ctx("open", st.path())?),
        None => None,
    };
    let mut buf = vec![0u8; BUF];
    // The directory of the file last opened: files come in the walk's order, so
    // the next one is mostly in the same directory, and is opened below it
    // instead of by its whole path from the top.
    let mut held: Option<(&[u8], OwnedFd)> = None;
    loop {
        let at = next.fetch_add(HASH_RUN, Ordering::Relaxed);
        let Some(run) = unique.get(at..(at + HASH_RUN).min(unique.len())) else { return Ok(()) };
        if run.is_empty() {
            return Ok(());
        }
        let run_bytes: u64 = run
            .iter()
            .map(|f| match ents[f.index].data {
                EntryData::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        for f in run {
            let e = &ents[f.index];
            let abs = || root.join(fsutil::os(&e.path));
            let fd = open_source(root_fd, &mut held, e).map_err(|err| {
                if err.kind() == std::io::ErrorKind::PermissionDenied {
                    Error::BadTree { path: abs(), why: "is not readable".into() }
                } else {
                    Error::io("open", abs(), err)
                }
            })?;
            let file = File::from(fd);
            let expect = match e.data {
                EntryData::File { size, .. } => size,
                _ => 0,
            };
            let attrs = attrs_of(lifeboat_fs::xattr::Target::Fd(file.as_fd()), abs)?;
            // A link the blit made to a store blob: its content is the blob's.
            let known = opts.known.and_then(|k| k.get(&(f.dev, f.ino))).filter(|(_, size)| *size == expect);
            if let Some(&(h, n)) = known {
                out.push(Hashed { index: f.index, hash: h, size: n, attrs });
                continue;
            }
            let (h, n, whole) = Hash128::of_file_buffered(&file, expect, &mut buf).ctx("read", abs())?;
            if let (Some(w), true) = (writer.as_mut(), n > 0) {
                // A file with holes is copied extent by extent, so its blob has them too.
                let new = if whole && !f.sparse {
                    w.put_bytes(h, &buf[..n as usize], e.perm, e.uid, e.gid)?
                } else {
                    w.put_file(h, n, &file, e.perm, e.uid, e.gid)?
                };
                if new {
                    added.push(h);
                }
            }
            out.push(Hashed { index: f.index, hash: h, size: n, attrs });
        }
        progress.tick(run.len() as u64, run_bytes);
    }
}

/// Opens the source file `e` for reading without following a symlink anywhere
/// on its path or leaving the tree: its directory is opened beneath the tree's
/// top (and kept in `held` for the next file), the file in it with
/// `O_NOFOLLOW`, and `O_NONBLOCK` — a FIFO put in a file's place since the
/// walk must not hang the commit (its read fails instead).
fn open_source<'e>(
    root_fd: BorrowedFd,
    held: &mut Option<(&'e [u8], OwnedFd)>,
    e: &'e LayoutEntry,
) -> std::io::Result<OwnedFd> {
    let parent = e.parent();
    let dir = match held.take() {
        Some((p, fd)) if p == parent => fd,
        _ => fsutil::open_dir_beneath(root_fd, parent)?,
    };
    let name = fsutil::cstr(e.name())?;
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(fsutil::io_err);
    *held = Some((parent, dir));
    fd
}

/// What hashing found of one inode (`index`: its first entry).
struct Hashed {
    index: usize,
    hash: Hash128,
    size: u64,
    attrs: Option<Arc<AttrSet>>,
}

/// Hashes the pending files on every core, each inode once; given a store, adds
/// each non-empty file's content to it in the same pass. A file that fits the
/// read buffer is read once and the bytes that were hashed are the bytes written,
/// so no file can be stored under a name that is not its content's; a larger
/// one is copied by [`crate::store::BlobWriter::put_file`], which hashes what it copies. Files
/// are handed out in runs, in tree order, so blobs added one after another
/// get neighbouring inodes (the blit that follows links them in the same order).
/// Returns the blobs that were new.
fn hash_files(
    root: &Path,
    root_fd: BorrowedFd,
    entries: &mut [LayoutEntry],
    files: &[PendingFile],
    opts: ScanOptions,
) -> Result<Vec<Hash128>> {
    let store = opts.store;
    // The first entry of each inode: a hard-link group is hashed once, through it.
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    let mut unique: Vec<&PendingFile> = Vec::new();
    for f in files {
        if let std::collections::hash_map::Entry::Vacant(v) = first.entry((f.dev, f.ino)) {
            v.insert(f.index);
            unique.push(f);
        }
    }
    // Adding blobs, a worker spends much of its time waiting for the journal:
    // two per core keep the cores busy (a commit of the 250,000-entry bench tree
    // on journalled ext4: 18.0-18.3 s against 19.2-19.5 s with one per core).
    let per_core = if store.is_some() { 2 } else { 1 };
    let workers = (crate::workers::count() * per_core).min(unique.len().div_ceil(HASH_RUN)).max(1);
    let next = AtomicUsize::new(0);
    let ents: &[LayoutEntry] = entries;
    let progress = crate::verify::progress::Progress::new("files hashed", unique.len() as u64, opts.progress);
    let progress = &progress;
    // Each worker: what it hashed, the blobs it added, and how it ended.
    type Worked = (Vec<Hashed>, Vec<Hash128>, Result<()>);
    let results: Vec<Worked> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (unique, next) = (&unique, &next);
                s.spawn(move || -> Worked {
                    let (mut out, mut added) = (Vec::new(), Vec::new());
                    let r = hash_runs(root, root_fd, ents, unique, next, opts, progress, &mut out, &mut added);
                    if r.is_err() {
                        // The others stop at their next run.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                    (out, added, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (Vec::new(), Vec::new(), Err(Error::WorkerLost { job: "hash" }))))
            .collect()
    });
    progress.finish();
    let mut failed = None;
    let mut added_all = Vec::new();
    let mut hashed_all = Vec::new();
    for (hashed, added, r) in results {
        added_all.extend(added);
        hashed_all.push(hashed);
        if let (Err(e), None) = (r, &failed) {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        // A refused tree changes nothing: the blobs this scan added go again
        // (no index names a blob that was not in the store before).
        if let Some(st) = store {
            for h in added_all {
                let _ = st.remove(h);
            }
        }
        return Err(e);
    }
    let mut by_first: HashMap<usize, Hashed> = HashMap::new();
    for hashed in hashed_all {
        for h in hashed {
            by_first.insert(h.index, h);
        }
    }
    // How many names each inode has in the tree: an empty file with more than
    // one is a hard-link group, named by its first path (see `empty_group`).
    let mut names_of: HashMap<(u64, u64), u32> = HashMap::new();
    for f in files {
        *names_of.entry((f.dev, f.ino)).or_default() += 1;
    }
    for f in files {
        // Every pending file's inode has a first entry, and every first entry
        // was hashed (a worker that failed ended the scan above).
        let got = first.get(&(f.dev, f.ino)).and_then(|i| by_first.get(i));
        let Some(h) = got else {
            return Err(Error::BadTree {
                path: root.join(fsutil::os(&entries[f.index].path)),
                why: "was not hashed (an internal error; nothing was committed)".into(),
            });
        };
        let hash = if h.size == 0 && names_of.get(&(f.dev, f.ino)).is_some_and(|&n| n > 1) {
            crate::layout::empty_group(&entries[h.index].path)
        } else {
            h.hash
        };
        entries[f.index].data = EntryData::File { hash, size: h.size };
        entries[f.index].attrs = h.attrs.clone();
    }
    Ok(added_all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be read fails the hashing pass after other files were
    /// already added: the store is left as it was.
    #[test]
    fn a_scan_that_fails_takes_back_the_blobs_it_added() {
        let base = std::env::temp_dir().join(format!("lb-scan-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let tree = base.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let names = ["a", "b", "gone", "c"];
        for n in names {
            std::fs::write(tree.join(n), format!("content of {n}")).unwrap();
        }
        let root = fsutil::open_dir(&base).unwrap();
        let store = Store::open(root.as_fd(), &base, true).unwrap();
        let earlier = Hash128::of(b"an earlier blob");
        store.writer().unwrap().put_bytes(earlier, b"an earlier blob", 0o644, 0, 0).unwrap();
        let tree_fd = fsutil::open_dir(&tree).unwrap();
        let mut entries: Vec<LayoutEntry> = Vec::new();
        let mut files = Vec::new();
        for n in names {
            let st = fsutil::lstat_at(tree_fd.as_fd(), n.as_bytes()).unwrap().unwrap();
            files.push(PendingFile { index: entries.len(), dev: st.st_dev, ino: st.st_ino, sparse: false });
            entries.push(LayoutEntry {
                path: n.as_bytes().into(),
                perm: 0o644,
                uid: 0,
                gid: 0,
                data: EntryData::File { hash: Hash128(0), size: st.st_size as u64 },
                attrs: None,
            });
        }
        // Removed between the walk and the hashing.
        std::fs::remove_file(tree.join("gone")).unwrap();
        let opts = ScanOptions { store: Some(&store), known: None, progress: None };
        let err = hash_files(&tree, tree_fd.as_fd(), &mut entries, &files, opts).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
        assert_eq!(store.list().unwrap(), vec![earlier], "only the blob that was there before");
        let _ = std::fs::remove_dir_all(&base);
    }
}
