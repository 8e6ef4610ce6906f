//! Reading moss's databases into lifeboat's index, on the host.
//!
//! For every state moss retains (the active `/usr` and each `.moss/root/<id>`), its
//! row of `state` (id, created, summary) and its packages (`state_selections`); for
//! those packages, their rows of `layout` (uid, gid, full `st_mode`, entry type,
//! the decimal u128 xxh3 or the symlink target, and the path relative to `/usr`).
//! A state's `/usr` is the union of its packages' rows, plus the directories moss
//! implies (0755, root), with the write bits of regular files stripped as moss's
//! blit strips them; sizes come from the store. The result is written as
//! lifeboat's own index, so PID 1 can check, repair and roll back with no SQLite.
//!
//! The databases are opened read-only, under moss's lock; a row that breaks a rule
//! (a path with `..`, absolute or with NUL, a hash that is not a number, a mode
//! that contradicts its type) ends the import with an error naming the database
//! and the row, and the previous index is kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::stamp::{Stamp, STAMP_REL};
use super::{LAYOUT_DB, STATE_DB, USER_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use crate::index::{wire::PayloadWire, StateIndex, TxMeta};
use crate::layout::{self, EntryData, Layout, LayoutEntry, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::root::SystemRoot;
use crate::store::Store;
use lifeboat_fs as fsutil;

/// xxh3-128 of no bytes: moss never links a file with this hash, it creates it.
pub const EMPTY: Hash128 = Hash128(0x99aa06d3014798d86001c324468d497f);
/// A size the store could not tell: the blob is missing from it and no tree holds
/// the file either. Verify then reports the file, and the blit refuses to link it.
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// What an import read.
#[derive(Debug, Default)]
pub struct Imported {
    pub wire: PayloadWire,
    pub states: Vec<u64>,
    /// Layout rows read (all states' packages).
    pub rows: usize,
    pub notes: Vec<String>,
    pub stamp: Stamp,
}

fn db_err(db: &Path, row: Option<i64>, why: impl Into<String>) -> Error {
    Error::MossDb { db: db.to_path_buf(), row, why: why.into() }
}

/// Opens a moss database read-only and checks its schema version.
fn open(root: &Path, rel: &str) -> Result<(Connection, PathBuf)> {
    let path = root.join(rel);
    if !path.is_file() {
        return Err(db_err(&path, None, "missing (is this a moss root?)"));
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| db_err(&path, None, format!("cannot open: {e}")))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| db_err(&path, None, e.to_string()))?;
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| db_err(&path, None, format!("not a readable SQLite database: {e}")))?;
    if v != USER_VERSION {
        return Err(db_err(
            &path,
            None,
            format!("user_version {v}: this lifeboat reads moss databases of version {USER_VERSION}"),
        ));
    }
    Ok((conn, path))
}

/// One state's row and packages.
struct MossState {
    id: u64,
    created: i64,
    summary: String,
    packages: Vec<u32>,
}

/// A layout row of a package some retained state selects.
struct Row {
    id: i64,
    entry: LayoutEntry,
}

/// Converts one `layout` row to an entry; `None` for entry types lifeboat's
/// layouts do not hold (devices, FIFOs), which are noted.
fn row_entry(
    db: &Path,
    id: i64,
    (uid, gid, mode): (i64, i64, i64),
    kind: &str,
    v1: Option<String>,
    v2: Option<String>,
) -> Result<Option<LayoutEntry>> {
    let bad = |why: String| db_err(db, Some(id), why);
    let uid = u32::try_from(uid).map_err(|_| bad(format!("uid {uid} out of range")))?;
    let gid = u32::try_from(gid).map_err(|_| bad(format!("gid {gid} out of range")))?;
    let mode = u32::try_from(mode).map_err(|_| bad(format!("mode {mode} out of range")))?;
    let (want_type, path, data) = match kind {
        "regular" => {
            let h = v1.ok_or_else(|| bad("regular file without a hash".into()))?;
            let hash = h.parse::<u128>().map_err(|_| bad(format!("hash {h:?} is not a decimal u128")))?;
            let path = v2.ok_or_else(|| bad("regular file without a path".into()))?;
            (S_IFREG, path, EntryData::File { hash: Hash128(hash), size: 0 })
        }
        "symlink" => {
            let target = v1.ok_or_else(|| bad("symlink without a target".into()))?;
            if target.is_empty() || target.contains('\0') {
                return Err(bad("symlink target empty or with NUL".into()));
            }
            let path = v2.ok_or_else(|| bad("symlink without a path".into()))?;
            (S_IFLNK, path, EntryData::Symlink { target: target.into_bytes().into_boxed_slice() })
        }
        "directory" => {
            let path = v1.ok_or_else(|| bad("directory without a path".into()))?;
            (S_IFDIR, path, EntryData::Dir)
        }
        _ => return Ok(None),
    };
    if mode & S_IFMT != want_type {
        return Err(bad(format!("mode {mode:o} is not a {kind}")));
    }
    layout::check_path(path.as_bytes()).map_err(|e| bad(format!("path {path:?}: {e}")))?;
    // moss's blit strips the write bits of every regular file it places.
    let mut perm = mode & 0o7777;
    if want_type == S_IFREG {
        perm &= !0o222;
    }
    Ok(Some(LayoutEntry { path: path.into_bytes().into_boxed_slice(), perm, uid, gid, data }))
}

/// Reads every retained state of the root, under moss's lock held by the caller,
/// into an index payload (not written).
pub fn read(root: &SystemRoot) -> Result<Imported> {
    let stamp = Stamp::of(root.fd());
    let (active, archived) = super::retained(root.fd());
    let mut retained: Vec<u64> = archived.clone();
    retained.extend(active);
    retained.sort_unstable();
    let mut notes = Vec::new();

    let (sdb, spath) = open(&root.path, STATE_DB)?;
    let mut states: BTreeMap<u64, MossState> = BTreeMap::new();
    {
        let mut q = sdb
            .prepare("SELECT id, created, summary FROM state")
            .map_err(|e| db_err(&spath, None, format!("table state: {e}")))?;
        let mut rows = q.query([]).map_err(|e| db_err(&spath, None, e.to_string()))?;
        while let Some(r) = rows.next().map_err(|e| db_err(&spath, None, e.to_string()))? {
            let id: i64 = r.get(0).map_err(|e| db_err(&spath, None, format!("state id: {e}")))?;
            let bad = |why: String| db_err(&spath, Some(id), why);
            let uid = u64::try_from(id).map_err(|_| bad(format!("state id {id} is negative")))?;
            if !retained.contains(&uid) {
                continue;
            }
            let created: i64 = r.get(1).map_err(|e| bad(format!("created: {e}")))?;
            let summary: Option<String> = r.get(2).map_err(|e| bad(format!("summary: {e}")))?;
            states.insert(
                uid,
                MossState { id: uid, created, summary: summary.unwrap_or_default(), packages: Vec::new() },
            );
        }
    }
    for id in &retained {
        if !states.contains_key(id) {
            notes.push(format!("state {id} has a tree but no row in {}: not imported", spath.display()));
        }
    }
    let mut package_ids: HashMap<String, u32> = HashMap::new();
    {
        let mut q = sdb
            .prepare("SELECT state_id, package_id FROM state_selections")
            .map_err(|e| db_err(&spath, None, format!("table state_selections: {e}")))?;
        let mut rows = q.query([]).map_err(|e| db_err(&spath, None, e.to_string()))?;
        while let Some(r) = rows.next().map_err(|e| db_err(&spath, None, e.to_string()))? {
            let sid: i64 = r.get(0).map_err(|e| db_err(&spath, None, format!("state_selections.state_id: {e}")))?;
            let Some(st) = u64::try_from(sid).ok().and_then(|s| states.get_mut(&s)) else {
                continue;
            };
            let pkg: String =
                r.get(1).map_err(|e| db_err(&spath, Some(sid), format!("state_selections.package_id: {e}")))?;
            let n = package_ids.len() as u32;
            let p = *package_ids.entry(pkg).or_insert(n);
            st.packages.push(p);
        }
    }
    drop(sdb);

    let (ldb, lpath) = open(&root.path, LAYOUT_DB)?;
    let mut by_package: Vec<Vec<Row>> = (0..package_ids.len()).map(|_| Vec::new()).collect();
    let mut rows_read = 0usize;
    let mut skipped_types: BTreeMap<String, usize> = BTreeMap::new();
    {
        let mut q = ldb
            .prepare("SELECT id, package_id, uid, gid, mode, entry_type, entry_value1, entry_value2 FROM layout")
            .map_err(|e| db_err(&lpath, None, format!("table layout: {e}")))?;
        let mut rows = q.query([]).map_err(|e| db_err(&lpath, None, e.to_string()))?;
        while let Some(r) = rows.next().map_err(|e| db_err(&lpath, None, e.to_string()))? {
            let id: i64 = r.get(0).map_err(|e| db_err(&lpath, None, format!("layout.id: {e}")))?;
            let col = |e: rusqlite::Error| db_err(&lpath, Some(id), e.to_string());
            // The package first: rows of packages no retained state selects are
            // not converted at all.
            let pkg = r.get_ref(1).map_err(col)?;
            let pkg = pkg.as_str().map_err(|e| db_err(&lpath, Some(id), format!("package_id: {e}")))?;
            let Some(&package) = package_ids.get(pkg) else {
                continue;
            };
            rows_read += 1;
            let kind: String = r.get(5).map_err(col)?;
            let entry = row_entry(
                &lpath,
                id,
                (r.get(2).map_err(col)?, r.get(3).map_err(col)?, r.get(4).map_err(col)?),
                &kind,
                r.get(6).map_err(col)?,
                r.get(7).map_err(col)?,
            )?;
            match entry {
                Some(entry) => by_package[package as usize].push(Row { id, entry }),
                None => *skipped_types.entry(kind).or_default() += 1,
            }
        }
    }
    drop(ldb);
    for (kind, n) in skipped_types {
        notes.push(format!("{n} layout rows of type {kind:?} are not tracked by lifeboat"));
    }

    let store = root.store(false)?;
    let mut layouts: Vec<(TxMeta, Layout)> = Vec::new();
    for st in states.values() {
        let (layout, mut n) = compose(st, &by_package, &lpath)?;
        notes.append(&mut n);
        let meta = TxMeta {
            id: st.id,
            created: st.created,
            summary: st.summary.clone(),
            parent: None,
            kernels: layout.kernels(),
        };
        layouts.push((meta, layout));
    }
    fill_sizes(root, &store, &mut layouts, &mut notes);
    let next = layouts.iter().map(|(m, _)| m.id + 1).max().unwrap_or(1);
    let refs: Vec<(TxMeta, &Layout)> = layouts.iter().map(|(m, l)| (m.clone(), l)).collect();
    let wire = StateIndex::build(next, &refs);
    Ok(Imported { wire, states: states.keys().copied().collect(), rows: rows_read, notes, stamp })
}

/// One state's `/usr`: its packages' rows (a path two packages give differently:
/// the later row wins, and it is noted), and the directories they imply.
fn compose(st: &MossState, by_package: &[Vec<Row>], db: &Path) -> Result<(Layout, Vec<String>)> {
    let mut notes = Vec::new();
    let mut chosen: HashMap<&[u8], &Row> = HashMap::new();
    for &p in &st.packages {
        for row in &by_package[p as usize] {
            match chosen.get(&*row.entry.path) {
                Some(prev) if prev.entry == row.entry => {}
                Some(prev) if matches!((&prev.entry.data, &row.entry.data), (EntryData::Dir, EntryData::Dir)) => {
                    // Two packages own one directory: the later row's mode wins.
                    if row.id > prev.id {
                        chosen.insert(&row.entry.path, row);
                    }
                }
                Some(prev) => {
                    if notes.len() < 20 {
                        notes.push(format!(
                            "state {}: {} is given by two packages (rows {} and {}); row {} is used",
                            st.id,
                            row.entry.path_lossy(),
                            prev.id,
                            row.id,
                            prev.id.max(row.id)
                        ));
                    }
                    if row.id > prev.id {
                        chosen.insert(&row.entry.path, row);
                    }
                }
                None => {
                    chosen.insert(&row.entry.path, row);
                }
            }
        }
    }
    let mut entries: Vec<LayoutEntry> = chosen.values().map(|r| r.entry.clone()).collect();
    // Directories moss implies: every parent of a path, 0755 root.
    let mut have: HashSet<Box<[u8]>> = entries.iter().map(|e| e.path.clone()).collect();
    let mut implied = Vec::new();
    for e in &entries {
        let mut p: &[u8] = e.parent();
        while !p.is_empty() && !have.contains(p) {
            have.insert(p.into());
            implied.push(LayoutEntry { path: p.into(), perm: 0o755, uid: 0, gid: 0, data: EntryData::Dir });
            p = match p.iter().rposition(|&b| b == b'/') {
                Some(i) => &p[..i],
                None => &[],
            };
        }
    }
    entries.extend(implied);
    let layout = Layout::new(entries).map_err(|(why, path)| {
        let row = chosen.get(&*path).map(|r| r.id);
        db_err(db, row, format!("state {}: {}: {why}", st.id, String::from_utf8_lossy(&path)))
    })?;
    Ok((layout, notes))
}

/// Sizes of the files of every layout, from the store (each blob once, on every
/// core); a blob missing from the store is measured in a tree that holds the file.
fn fill_sizes(root: &SystemRoot, store: &Store, layouts: &mut [(TxMeta, Layout)], notes: &mut Vec<String>) {
    let mut hashes: Vec<Hash128> = layouts
        .iter()
        .flat_map(|(_, l)| l.entries().iter())
        .filter_map(|e| match e.data {
            EntryData::File { hash, .. } if hash != EMPTY => Some(hash),
            _ => None,
        })
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let workers = crate::workers::count().max(1);
    let chunk = hashes.len().div_ceil(workers).max(1);
    let sizes: Vec<Option<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = hashes
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let st = store.for_worker().ok();
                    let st = st.as_ref().unwrap_or(store);
                    part.iter()
                        .map(|h| match st.stat(*h) {
                            Ok(Some(m)) if m.st_mode & S_IFMT == S_IFREG => Some(m.st_size as u64),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut size: HashMap<Hash128, u64> = HashMap::with_capacity(hashes.len());
    for (h, s) in hashes.iter().zip(sizes) {
        if let Some(s) = s {
            size.insert(*h, s);
        }
    }
    let mut missing = 0usize;
    let active = root.active_id();
    for (meta, layout) in layouts.iter_mut() {
        let tree: PathBuf = if Some(meta.id) == active {
            root.path.join("usr")
        } else {
            root.path.join(format!(".moss/root/{}/usr", meta.id))
        };
        let tree_fd = fsutil::open_dir(&tree).ok();
        let mut entries = std::mem::take(layout).into_entries();
        for e in entries.iter_mut() {
            let EntryData::File { hash, size: sz } = &mut e.data else {
                continue;
            };
            if *hash == EMPTY {
                *sz = 0;
                continue;
            }
            *sz = match size.get(hash) {
                Some(s) => *s,
                None => {
                    let from_tree = tree_fd
                        .as_ref()
                        .and_then(|d| fsutil::open_beneath(d.as_fd(), &e.path, nix::fcntl::OFlag::O_PATH).ok())
                        .and_then(|f| nix::sys::stat::fstat(f.as_fd()).ok())
                        .filter(|m| m.st_mode & S_IFMT == S_IFREG)
                        .map(|m| m.st_size as u64);
                    if from_tree.is_none() {
                        missing += 1;
                    }
                    from_tree.unwrap_or(UNKNOWN_SIZE)
                }
            };
        }
        *layout = Layout::from_sorted(entries).unwrap_or_default();
    }
    if missing > 0 {
        notes.push(format!(
            "{missing} files have no blob in {} and no copy in their tree: `verify --store` names them",
            store.path().display()
        ));
    }
}

/// Imports when moss's state changed since the last import (or there was none):
/// reads the databases under moss's lock and writes lifeboat's index and the
/// stamp. Returns `None` when the index was current.
pub fn refresh(root: &SystemRoot) -> Result<Option<Imported>> {
    let now = Stamp::of(root.fd());
    let index_exists =
        fsutil::lstat_at(root.fd(), crate::root::INDEX_REL.as_bytes()).ctx("stat", root.index_path())?.is_some();
    if index_exists && Stamp::saved(root.fd()).as_ref() == Some(&now) {
        return Ok(None);
    }
    let imported = root.with_moss_lock(|| read(root))?;
    root.ensure_own_dir()?;
    // The previous import becomes `.prev`, a generation to fall back to.
    root.store_index(&imported.wire, true)?;
    let own = fsutil::open_dir_beneath(root.fd(), b".moss/lifeboat").ctx("open", root.path.join(".moss/lifeboat"))?;
    fsutil::atomic_write_at(own.as_fd(), b"moss.stamp", imported.stamp.render().as_bytes(), 0o644)
        .ctx("write", root.path.join(STAMP_REL))?;
    Ok(Some(imported))
}
