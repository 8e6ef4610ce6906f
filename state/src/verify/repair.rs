//! Repair: bring a tree back to its layout from the store, in layout order
//! (parents first). Each damaged file is rebuilt under a temporary name in its
//! directory and renamed over, so every path is always the old or the restored
//! file; a blob missing from the store or corrupt is recovered from another
//! retained transaction's tree (hashed first), then linked back into the store.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::blit::{self, BlitStats};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use crate::index::StateIndex;
use crate::layout::{EntryData, Layout};
use crate::root::SystemRoot;
use crate::store::Store;
use lifeboat_fs::{self as fsutil, cstr, libc_mode::*};

use super::*;

/// What a repair did.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub fixed: Vec<Difference>,
    pub removed_extra: Vec<String>,
    pub recovered_blobs: Vec<(Hash128, PathBuf)>,
    pub unrecoverable: Vec<(String, String)>,
    /// What stood where the layout has an entry of another type, moved aside:
    /// (the entry's path, where it is now), relative to the tree.
    pub set_aside: Vec<(String, String)>,
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

/// Other trees: computed on first use (materialising every layout is not free).
type Trees = Option<Vec<(u64, PathBuf, Layout)>>;

/// Where a damaged file's content comes from.
enum Source {
    /// The store's blob is intact.
    Store,
    /// The store's blob was missing or corrupt and was restored from this file.
    Recovered(PathBuf),
    /// The store may not be written (moss's): copy from this intact file instead.
    Copy(File, PathBuf),
}

/// Makes sure blob `h` is in the store with the right content, recovering it from
/// another tree when needed — or, where the store is moss's and lifeboat must not
/// write it, finds an intact copy to restore from directly.
#[allow(clippy::too_many_arguments)]
fn ensure_blob(
    root: &SystemRoot,
    idx: &StateIndex,
    skip: u64,
    store: &Store,
    h: Hash128,
    trees: &mut Trees,
    buf: &mut [u8],
    may_write_store: bool,
) -> std::result::Result<Source, String> {
    // The blob's inode when it is there but wrong (a symlink, unreadable, damaged).
    let bad_ino = match store.open_blob(h) {
        Ok(f) => {
            let st = nix::sys::stat::fstat(f.as_fd()).map_err(|e| e.to_string())?;
            if st.st_mode & S_IFMT == S_IFREG && Hash128::of_reader(&f, buf).is_ok_and(|(got, _)| got == h) {
                return Ok(Source::Store);
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
            // A FIFO or device put where a copy was expected is skipped, never read.
            let Ok(f) = lifeboat_fs::foreign::open_file_beneath(tree_fd.as_fd(), &e.path) else {
                continue;
            };
            let Ok(st) = nix::sys::stat::fstat(f.as_fd()) else {
                continue;
            };
            if bad_ino == Some((st.st_dev, st.st_ino)) {
                continue; // the same damaged inode
            }
            let Ok((got, _)) = Hash128::of_reader(&f, buf) else {
                continue;
            };
            if got != h {
                continue;
            }
            let from = tree_path.join(fsutil::os(&e.path));
            if !may_write_store {
                return Ok(Source::Copy(f, from));
            }
            // Replace the store's copy: remove the bad one, then add the good one.
            if bad_ino.is_some() {
                store.remove(h).map_err(|e| e.to_string())?;
            }
            store.add(h, &f, e.perm, e.uid, e.gid).map_err(|e| e.to_string())?;
            return Ok(Source::Recovered(from));
        }
    }
    let what = if bad_ino.is_some() { "corrupt" } else { "missing" };
    Err(if may_write_store {
        format!("its store blob {} is {what} and no retained tree holds an intact copy", h.moss_hex())
    } else {
        format!(
            "moss's store blob {} is {what} and no retained tree holds an intact copy \
             (lifeboat does not write moss's store: reinstall the package with moss)",
            h.moss_hex()
        )
    })
}

/// Moves what stands at `name` in `parent` (of the wrong type) out of the way
/// of the entry the layout has there: a directory or a file is renamed beside
/// it as `NAME.lifeboat-kept-<seconds>` and reported, never deleted — unless
/// the user asked for what the transaction does not have to go
/// (`--prune-extra`), and even then nothing on another mount is removed; a
/// symlink (only a name) is removed.
fn out_of_the_way(
    parent: std::os::fd::BorrowedFd,
    name: &[u8],
    prune_extra: bool,
    path: &[u8],
    report: &mut RepairReport,
) -> std::result::Result<(), String> {
    // A symlink holds nothing but its target's name: it goes. So does
    // anything with --prune-extra.
    let is_link = fsutil::lstat_at(parent, name).ok().flatten().is_some_and(|st| st.st_mode & S_IFMT == S_IFLNK);
    if prune_extra || is_link {
        return fsutil::remove_tree_at(parent, name).map_err(|x| x.to_string());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut aside = name.to_vec();
    aside.extend_from_slice(format!(".lifeboat-kept-{now}").as_bytes());
    let base = aside.clone();
    let mut n = 1;
    loop {
        match fsutil::rename_noreplace(parent, name, parent, &aside) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
                aside = base.clone();
                aside.extend_from_slice(format!(".{n}").as_bytes());
            }
            Err(e) => return Err(format!("cannot move what is in the way aside: {e}")),
        }
    }
    let mut kept = path.to_vec();
    kept.truncate(kept.len().saturating_sub(name.len()));
    kept.extend_from_slice(&aside);
    report.set_aside.push((String::from_utf8_lossy(path).into_owned(), String::from_utf8_lossy(&kept).into_owned()));
    Ok(())
}

/// Makes sure every blob of `blobs` is in the store whole — a regular file
/// of its size; one missing or cut short is recovered from another retained
/// tree's intact copy (hashed first) — before a blit links them. Returns the
/// blobs recovered and where from, or why one cannot be.
pub(crate) fn restore_blobs(
    root: &SystemRoot,
    idx: &StateIndex,
    skip: u64,
    store: &Store,
    blobs: &[(Hash128, u64)],
) -> std::result::Result<Vec<(Hash128, PathBuf)>, String> {
    let mut trees: Trees = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::new();
    for (h, size) in blobs {
        let whole = store
            .stat(*h)
            .ok()
            .flatten()
            .is_some_and(|st| st.st_mode & S_IFMT == S_IFREG && st.st_size as u64 == *size);
        if whole {
            continue;
        }
        match ensure_blob(root, idx, skip, store, *h, &mut trees, &mut buf, !root.is_moss())? {
            Source::Store => {}
            Source::Recovered(from) | Source::Copy(_, from) => out.push((*h, from)),
        }
    }
    Ok(out)
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
    let store = root.store_for_writing(false)?;
    let mut checked = check_root(root, tree.as_fd(), &layout, &store, opts, None)?;
    let diffs = std::mem::take(&mut checked.diffs);
    let mut report = RepairReport::default();
    if diffs.is_empty() {
        checked.remember(root);
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
    // Entries missing outright — a deleted file, a wiped directory, a wiped
    // /usr — are made at blit speed under their final names (a link to the final
    // name is atomic already); whatever that cannot place (a blob missing from
    // the store) takes the careful path below. A full repair verifies every blob
    // before it is linked, so it takes the careful path for all.
    if !opts.full {
        let mut mask = vec![false; es.len()];
        let mut missing_dirs: Vec<&[u8]> = Vec::new();
        for (i, e) in es.iter().enumerate() {
            while let Some(d) = missing_dirs.last() {
                if e.path.starts_with(d) && e.path.get(d.len()) == Some(&b'/') {
                    break;
                }
                missing_dirs.pop();
            }
            let own = by_entry.get(&i).is_some_and(|ds| ds.iter().all(|d| d.class == Class::Missing));
            if own || !missing_dirs.is_empty() {
                mask[i] = true;
                if matches!(e.data, EntryData::Dir) {
                    missing_dirs.push(&e.path);
                }
            }
        }
        if mask.iter().any(|&m| m) {
            crate::failpoint::hit("repair-place-missing");
            let placed = blit::place_missing(&layout, &store, tree.as_fd(), &mask);
            for i in placed.done {
                match by_entry.remove(&i) {
                    Some(ds) => report.fixed.extend(ds.into_iter().cloned()),
                    None => report.fixed.push(Difference {
                        class: Class::Missing,
                        path: es[i].path_lossy(),
                        detail: String::new(),
                        entry: Some(i),
                    }),
                }
            }
        }
    }
    for (i, ds) in by_entry {
        let e = &es[i];
        // Mode, owner and attributes are mended in place on an inode this path
        // alone has. A file that shares its inode — the store's blob, a
        // variant, the other names of a hard-link group, other transactions'
        // trees — is rebuilt instead (linked to the blob or the variant that
        // carries its own metadata), so that mending one transaction never
        // changes another: with one exception, attributes found where none
        // are recorded, which no blob or variant of this entry may carry.
        let shared = match &e.data {
            EntryData::File { size: 1.., .. } => fsutil::open_dir_beneath(tree.as_fd(), e.parent())
                .and_then(|p| fsutil::lstat_at(p.as_fd(), e.name()))
                .ok()
                .flatten()
                .is_some_and(|st| st.st_nlink > 1),
            _ => false,
        };
        let in_place = |d: &&Difference| match d.class {
            Class::WrongMode | Class::WrongOwner => !shared,
            Class::WrongAttrs => !shared || e.attrs.is_none(),
            _ => false,
        };
        let rebuild = ds.iter().find(|d| !in_place(d));
        let d = *rebuild.unwrap_or(&ds[0]);
        let shown = tree_path.join(fsutil::os(&e.path));
        let parent = match fsutil::open_dir_beneath(tree.as_fd(), e.parent()) {
            Ok(p) => p,
            Err(err) => {
                report.unrecoverable.push((e.path_lossy(), format!("cannot open its directory: {err}")));
                continue;
            }
        };
        let mend_in_place = rebuild.is_none();
        let r: std::result::Result<(), String> = (|| match d.class {
            _ if mend_in_place => {
                let c = cstr(e.name()).map_err(|x| x.to_string())?;
                let owner_wrong = ds.iter().any(|d| d.class == Class::WrongOwner);
                let attrs_wrong = ds.iter().any(|d| d.class == Class::WrongAttrs);
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
                    // Through a descriptor opened without following a symlink:
                    // fchmodat(AT_SYMLINK_NOFOLLOW) is refused by older kernels,
                    // and following one could change a file outside the tree.
                    let fd = nix::fcntl::openat(
                        parent.as_fd(),
                        c.as_c_str(),
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|x| x.to_string())?;
                    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|x| x.to_string())?;
                    if st.st_mode & S_IFMT == S_IFLNK {
                        return Err("is a symlink where the layout has none; not changing what it points to".into());
                    }
                    // An O_PATH descriptor takes no fchmod; its /proc link does,
                    // and names this inode, not a path that could be swapped.
                    let proc = format!("/proc/thread-self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
                    nix::sys::stat::fchmodat(
                        nix::fcntl::AT_FDCWD,
                        proc.as_str(),
                        Mode::from_bits_truncate(e.perm),
                        nix::sys::stat::FchmodatFlags::FollowSymlink,
                    )
                    .map_err(|x| x.to_string())?;
                }
                // After the owner and mode: a `chown` cleared any capability.
                if attrs_wrong || (is_root && e.attrs.is_some()) {
                    crate::attrs::apply(
                        lifeboat_fs::xattr::Target::At(parent.as_fd(), e.name()),
                        e.attrs.as_deref(),
                        true,
                    )
                    .map_err(|x| x.to_string())?;
                }
                Ok(())
            }
            Class::Extra => Ok(()),
            _ => {
                let mut copy_from = None;
                if let EntryData::File { hash, size } = &e.data {
                    if *size > 0 {
                        match ensure_blob(root, idx, id, &store, *hash, &mut trees, &mut buf, !root.is_moss())? {
                            Source::Store => {}
                            Source::Recovered(from) => report.recovered_blobs.push((*hash, from)),
                            Source::Copy(f, from) => {
                                report.recovered_blobs.push((*hash, from));
                                copy_from = Some(f);
                            }
                        }
                    }
                }
                if matches!(e.data, EntryData::Dir) {
                    if d.class == Class::WrongType {
                        out_of_the_way(parent.as_fd(), e.name(), prune_extra, &e.path, &mut report)?;
                    }
                    blit::place(e, parent.as_fd(), &store, blit::Ctx::careful(is_root), &mut stats, None)
                        .map_err(|x| x.to_string())?;
                    return Ok(());
                }
                // A damaged file that is its variant's inode: the variant is
                // damaged with it, and is made again from the (checked) blob.
                if let (EntryData::File { hash, .. }, Some(v)) = (&e.data, store.variants()) {
                    let k = crate::variants::key_of(e);
                    let here = fsutil::lstat_at(parent.as_fd(), e.name()).ok().flatten();
                    if let (Some(h), Some(vs)) = (here, v.stat(*hash, k)) {
                        if (h.st_dev, h.st_ino) == (vs.st_dev, vs.st_ino) {
                            v.remove(*hash, k).map_err(|x| x.to_string())?;
                        }
                    }
                }
                let tmp = tmp_name(e.name());
                let _ = fsutil::remove_tree_at(parent.as_fd(), &tmp);
                match copy_from {
                    Some(src) => {
                        let out = crate::store::create_excl(parent.as_fd(), &tmp, e.perm).map_err(|x| x.to_string())?;
                        crate::store::copy_all(&src, &out).map_err(|x| x.to_string())?;
                        crate::store::set_owner_perm(out.as_fd(), e.perm, e.uid, e.gid).map_err(|x| x.to_string())?;
                    }
                    None => {
                        blit::place_as(e, &tmp, parent.as_fd(), &store, blit::Ctx::careful(is_root), &mut stats, None)
                            .map_err(|x| x.to_string())?;
                    }
                }
                crate::failpoint::hit("repair-rename");
                if d.class == Class::WrongType {
                    if let Ok(Some(st)) = fsutil::lstat_at(parent.as_fd(), e.name()) {
                        // A directory (maybe the user's, maybe another
                        // filesystem's mount point) or a regular file where the
                        // layout has something else: kept, not overwritten.
                        if matches!(st.st_mode & S_IFMT, S_IFDIR | S_IFREG) {
                            out_of_the_way(parent.as_fd(), e.name(), prune_extra, &e.path, &mut report)?;
                        }
                    }
                }
                fsutil::rename(parent.as_fd(), &tmp, parent.as_fd(), e.name()).map_err(|x| x.to_string())
            }
        })();
        match r {
            Ok(()) => report.fixed.extend(ds.iter().map(|d| (*d).clone())),
            Err(why) => report.unrecoverable.push((shown.display().to_string(), why)),
        }
    }
    // The tree's own top directory, mended in place (it is this tree's alone).
    let top: Vec<&Difference> = diffs.iter().filter(|d| d.entry.is_none() && d.path == tree::TOP).collect();
    if !top.is_empty() {
        match blit::set_top(&layout, tree.as_fd()) {
            Ok(()) => report.fixed.extend(top.into_iter().cloned()),
            Err(e) => report.unrecoverable.push((tree_path.display().to_string(), e.to_string())),
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
    checked.remember(root);
    Ok(report)
}
