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

use std::collections::{BTreeMap, HashMap};
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
    v1: Option<&str>,
    v2: Option<&str>,
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
            (S_IFLNK, path, EntryData::Symlink { target: target.as_bytes().into() })
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
    Ok(Some(LayoutEntry { path: path.as_bytes().into(), perm, uid, gid, data, attrs: None }))
}

/// A state's composed layout (or why not), by its position in the list.
type Composed = (usize, Result<(Layout, Vec<String>)>);

/// What one range of the layout table held.
struct LayoutScan {
    by_package: Vec<Vec<Row>>,
    rows: usize,
    skipped: BTreeMap<String, usize>,
}

/// Reads the layout rows with ids `a..=b` of the packages in `package_ids`.
fn scan_layout(root: &Path, lpath: &Path, package_ids: &HashMap<String, u32>, a: i64, b: i64) -> Result<LayoutScan> {
    let (db, _) = open(root, LAYOUT_DB)?;
    let mut out = LayoutScan {
        by_package: (0..package_ids.len()).map(|_| Vec::new()).collect(),
        rows: 0,
        skipped: BTreeMap::new(),
    };
    let mut q = db
        .prepare(
            "SELECT id, package_id, uid, gid, mode, entry_type, entry_value1, entry_value2 FROM layout \
             WHERE id BETWEEN ?1 AND ?2",
        )
        .map_err(|e| db_err(lpath, None, format!("table layout: {e}")))?;
    let mut rows = q.query([a, b]).map_err(|e| db_err(lpath, None, e.to_string()))?;
    while let Some(r) = rows.next().map_err(|e| db_err(lpath, None, e.to_string()))? {
        let id: i64 = r.get(0).map_err(|e| db_err(lpath, None, format!("layout.id: {e}")))?;
        let col = |e: rusqlite::Error| db_err(lpath, Some(id), e.to_string());
        let text = |i: usize, what: &str| -> Result<Option<&str>> {
            match r.get_ref(i).map_err(col)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                v => v.as_str().map(Some).map_err(|e| db_err(lpath, Some(id), format!("{what}: {e}"))),
            }
        };
        // The package first: rows of packages no retained state selects are not
        // converted at all.
        let Some(pkg) = text(1, "package_id")? else {
            return Err(db_err(lpath, Some(id), "package_id is NULL"));
        };
        let Some(&package) = package_ids.get(pkg) else {
            continue;
        };
        out.rows += 1;
        let kind = text(5, "entry_type")?.unwrap_or("");
        let entry = row_entry(
            lpath,
            id,
            (r.get(2).map_err(col)?, r.get(3).map_err(col)?, r.get(4).map_err(col)?),
            kind,
            text(6, "entry_value1")?,
            text(7, "entry_value2")?,
        )?;
        match entry {
            Some(entry) => out.by_package[package as usize].push(Row { id, entry }),
            None => *out.skipped.entry(kind.to_owned()).or_default() += 1,
        }
    }
    Ok(out)
}

/// Reads every retained state of the root, under moss's lock held by the caller,
/// into an index payload (not written).
pub fn read(root: &SystemRoot) -> Result<Imported> {
    let t0 = std::time::Instant::now();
    let tr = |what: &str| {
        if std::env::var_os("LIFEBOAT_TRACE_IMPORT").is_some() {
            eprintln!("import: {what} at {} ms", t0.elapsed().as_millis());
        }
    };
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
    // The table is read in as many rowid ranges as there are cores, each on its
    // own read-only connection: SQLite's scan is the longest part of an import.
    let (lo, hi): (i64, i64) = ldb
        .query_row("SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM layout", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| db_err(&lpath, None, format!("table layout: {e}")))?;
    drop(ldb);
    let workers = crate::workers::count().clamp(1, 8) as i64;
    let span = ((hi - lo + 1).max(0) / workers).max(1);
    let ranges: Vec<(i64, i64)> = (0..workers)
        .map(|w| (lo + w * span, if w == workers - 1 { hi } else { lo + (w + 1) * span - 1 }))
        .filter(|(a, b)| a <= b)
        .collect();
    let scanned: Vec<Result<LayoutScan>> = std::thread::scope(|s| {
        let (rp, lp, ids) = (&root.path, &lpath, &package_ids);
        let hs: Vec<_> = ranges.iter().map(|&(a, b)| s.spawn(move || scan_layout(rp, lp, ids, a, b))).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(Err(Error::WorkerLost { job: "layout scan" }))).collect()
    });
    let mut by_package: Vec<Vec<Row>> = (0..package_ids.len()).map(|_| Vec::new()).collect();
    let mut rows_read = 0usize;
    let mut skipped_types: BTreeMap<String, usize> = BTreeMap::new();
    for part in scanned {
        let part = part?;
        rows_read += part.rows;
        for (p, mut rows) in part.by_package.into_iter().enumerate() {
            by_package[p].append(&mut rows);
        }
        for (k, n) in part.skipped {
            *skipped_types.entry(k).or_default() += n;
        }
    }
    tr("layout rows read");
    for (kind, n) in skipped_types {
        notes.push(format!("{n} layout rows of type {kind:?} are not tracked by lifeboat"));
    }

    let store = root.store(false)?;
    // Each package's rows once: in depth-first order, with sizes from the store.
    let per = by_package.len().div_ceil(crate::workers::count().max(1)).max(1);
    std::thread::scope(|s| {
        for chunk in by_package.chunks_mut(per) {
            s.spawn(move || {
                for rows in chunk {
                    rows.sort_unstable_by(|a, b| {
                        layout::path_order(&a.entry.path, &b.entry.path).then(a.id.cmp(&b.id))
                    });
                }
            });
        }
    });
    fill_sizes(&store, &mut by_package);
    tr("package rows sorted, sizes read");
    // States are independent: composed on every core.
    let list: Vec<&MossState> = states.values().collect();
    let next_state = std::sync::atomic::AtomicUsize::new(0);
    let composed: Vec<Vec<Composed>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..crate::workers::count().clamp(1, list.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next_state.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(st) = list.get(i) else { break };
                        mine.push((i, compose(root, st, &by_package, &lpath)));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut composed: Vec<Composed> = composed.into_iter().flatten().collect();
    if composed.len() != list.len() {
        return Err(Error::WorkerLost { job: "state composition" });
    }
    composed.sort_by_key(|(i, _)| *i);
    let mut layouts: Vec<(TxMeta, Layout)> = Vec::new();
    for ((_, r), st) in composed.into_iter().zip(&list) {
        let (layout, mut n) = r?;
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
    tr("states composed");
    let missing: usize = layouts
        .iter()
        .map(|(_, l)| {
            l.entries().iter().filter(|e| matches!(e.data, EntryData::File { size: UNKNOWN_SIZE, .. })).count()
        })
        .sum();
    if missing > 0 {
        notes.push(format!(
            "{missing} files have no blob in {} and no copy in their tree: `verify --store` names them",
            store.path().display()
        ));
    }
    let next = layouts.iter().map(|(m, _)| m.id + 1).max().unwrap_or(1);
    let refs: Vec<(TxMeta, &Layout)> = layouts.iter().map(|(m, l)| (m.clone(), l)).collect();
    let wire = StateIndex::build(next, &refs);
    tr("index built");
    Ok(Imported { wire, states: states.keys().copied().collect(), rows: rows_read, notes, stamp })
}

/// One state's `/usr`: its packages' rows merged in depth-first order (a path
/// two packages give differently: the later row wins, and it is noted), with the
/// directories they imply inserted before their contents; a file whose blob the
/// store lacks is measured in the state's own tree.
fn compose(root: &SystemRoot, st: &MossState, by_package: &[Vec<Row>], db: &Path) -> Result<(Layout, Vec<String>)> {
    let mut notes = Vec::new();
    let mut rows: Vec<&Row> = st.packages.iter().flat_map(|&p| by_package[p as usize].iter()).collect();
    rows.sort_unstable_by(|a, b| layout::path_order(&a.entry.path, &b.entry.path).then(a.id.cmp(&b.id)));
    let mut entries: Vec<LayoutEntry> = Vec::with_capacity(rows.len() + rows.len() / 16);
    // Directories enclosing the last entry, outermost first.
    let mut dirs: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        // The run of rows for one path: the last (highest id) wins.
        let mut j = i + 1;
        while j < rows.len() && rows[j].entry.path == rows[i].entry.path {
            j += 1;
        }
        let row = rows[j - 1];
        if j - i > 1 {
            let differ = rows[i..j].iter().any(|r| r.entry != row.entry);
            let all_dirs = rows[i..j].iter().all(|r| matches!(r.entry.data, EntryData::Dir));
            if differ && !all_dirs && notes.len() < 20 {
                notes.push(format!(
                    "state {}: {} is given by several packages (rows {}); row {} is used",
                    st.id,
                    row.entry.path_lossy(),
                    rows[i..j].iter().map(|r| r.id.to_string()).collect::<Vec<_>>().join(", "),
                    row.id
                ));
            }
        }
        i = j;
        let path = &row.entry.path;
        // Close directories that do not enclose this path, then open the ones
        // moss implies (0755, root) down to its parent.
        let encloses = |d: &[u8]| path.len() > d.len() && path.starts_with(d) && path[d.len()] == b'/';
        while let Some(&d) = dirs.last() {
            if encloses(&entries[d].path) {
                break;
            }
            dirs.pop();
        }
        let parent_len = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        loop {
            let have = dirs.last().map_or(0, |&d| entries[d].path.len());
            if have >= parent_len {
                break;
            }
            let start = if have == 0 { 0 } else { have + 1 };
            let end = path[start..parent_len].iter().position(|&b| b == b'/').map_or(parent_len, |k| start + k);
            entries.push(LayoutEntry {
                path: path[..end].into(),
                perm: 0o755,
                uid: 0,
                gid: 0,
                data: EntryData::Dir,
                attrs: None,
            });
            dirs.push(entries.len() - 1);
        }
        let mut e = row.entry.clone();
        if let EntryData::File { size: sz @ UNKNOWN_SIZE, .. } = &mut e.data {
            *sz = size_in_tree(root, st.id, &e.path).unwrap_or(UNKNOWN_SIZE);
        }
        entries.push(e);
        if matches!(entries.last().map(|e| &e.data), Some(EntryData::Dir)) {
            dirs.push(entries.len() - 1);
        }
    }
    let layout = Layout::from_sorted(entries).map_err(|(why, path)| {
        let row = rows.iter().find(|r| r.entry.path == path).map(|r| r.id);
        db_err(db, row, format!("state {}: {}: {why}", st.id, String::from_utf8_lossy(&path)))
    })?;
    // moss's layout has no extended attributes: none are compared on its trees.
    Ok((layout.with_attrs_recorded(false), notes))
}

/// The size of the file `rel` in state `id`'s tree, when the store lacks its blob.
fn size_in_tree(root: &SystemRoot, id: u64, rel: &[u8]) -> Option<u64> {
    let tree = if root.active_id() == Some(id) { "usr".to_owned() } else { format!(".moss/root/{id}/usr") };
    let dir = fsutil::open_dir_beneath(root.fd(), tree.as_bytes()).ok()?;
    let f = fsutil::open_beneath(dir.as_fd(), rel, nix::fcntl::OFlag::O_PATH).ok()?;
    let m = nix::sys::stat::fstat(f.as_fd()).ok()?;
    (m.st_mode & S_IFMT == S_IFREG).then_some(m.st_size as u64)
}

/// Sizes of every file row from the store: each blob once, on every core.
/// A blob the store lacks gets [`UNKNOWN_SIZE`] (its state's tree may tell).
fn fill_sizes(store: &Store, by_package: &mut [Vec<Row>]) {
    let mut hashes: Vec<Hash128> = by_package
        .iter()
        .flatten()
        .filter_map(|r| match r.entry.data {
            EntryData::File { hash, .. } if hash != EMPTY => Some(hash),
            _ => None,
        })
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let workers = crate::workers::count().max(1);
    let chunk = hashes.len().div_ceil(workers).max(1);
    let sizes: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = hashes
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let st = store.for_worker().ok();
                    let st = st.as_ref().unwrap_or(store);
                    part.iter()
                        .map(|h| match st.stat(*h) {
                            Ok(Some(m)) if m.st_mode & S_IFMT == S_IFREG => m.st_size as u64,
                            _ => UNKNOWN_SIZE,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    for r in by_package.iter_mut().flatten() {
        if let EntryData::File { hash, size } = &mut r.entry.data {
            *size = if *hash == EMPTY {
                0
            } else {
                hashes.binary_search(hash).ok().and_then(|i| sizes.get(i).copied()).unwrap_or(UNKNOWN_SIZE)
            };
        }
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
