//! Transactions: commit a tree, activate one, prune old ones.
//!
//! Ordering is what makes these crash-safe. Blobs are durable before an index names
//! them; a new tree is complete (and carries its id) before it is exchanged with
//! `/usr`; the index drops a transaction before its tree and blobs are deleted. A
//! crash at any point leaves `/usr` one complete transaction, an index that loads
//! (old or new), and every blob the index needs; [`SystemRoot::reconcile`] tidies
//! the rest on the next run.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::blit::{self, BlitStats};
use crate::error::{Error, IoContext, Result};
use crate::index::{StateIndex, TxMeta};
use crate::layout::Layout;
use crate::recover::{self, Prep};
use crate::root::{SystemRoot, STATE_ID};
use crate::scan;
use crate::store::Store;
use lifeboat_fs as fsutil;

/// What a commit did.
#[derive(Debug)]
pub struct CommitReport {
    pub id: u64,
    pub entries: usize,
    pub new_blobs: u64,
    pub blit: BlitStats,
    pub notes: Vec<String>,
    /// Phase durations: scan_store (walk, hash, add new blobs), store_sync, blit,
    /// tree_sync, index, swap.
    pub timings: Vec<(&'static str, Duration)>,
}

/// What an activation did.
#[derive(Debug)]
pub struct ActivateReport {
    pub id: u64,
    pub previous: Option<u64>,
    /// The tree was rebuilt from the store first.
    pub rebuilt: bool,
    pub notes: Vec<String>,
    /// The exchange and archive rename, with their syncs (not the rebuild).
    pub swap: Duration,
    /// The blit of a rebuilt tree (without its fsync).
    pub blit: Option<Duration>,
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<u64>,
    pub kept: Vec<u64>,
    pub blobs_removed: u64,
    pub notes: Vec<String>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Builds a tree for transaction `id` from the store, complete and durable,
/// under `.moss/root/staging/usr` (never trusted before [`place_staging`]).
fn build_staging(root: &SystemRoot, store: &Store, layout: &Layout, id: u64) -> Result<BlitStats> {
    let trees = root.trees_dir()?;
    let rootp = root.path.join(".moss/root");
    // Never reuse a stale staging tree: it may be half-built.
    fsutil::remove_tree_at(trees.as_fd(), b"staging").ctx("remove stale", rootp.join("staging"))?;
    crate::failpoint::hit("staging-create");
    let c = fsutil::cstr(b"staging").ctx("create", &rootp)?;
    nix::sys::stat::mkdirat(trees.as_fd(), c.as_c_str(), nix::sys::stat::Mode::from_bits_truncate(0o755))
        .map_err(fsutil::io_err)
        .ctx("create", rootp.join("staging"))?;
    let staging = fsutil::open_dir_at(trees.as_fd(), b"staging").ctx("open", rootp.join("staging"))?;
    let stats = blit::blit(layout, store, staging.as_fd(), b"usr", &rootp.join("staging/usr"))?;
    crate::failpoint::hit("blit-done");
    let usr = fsutil::open_dir_at(staging.as_fd(), b"usr").ctx("open", rootp.join("staging/usr"))?;
    // Unsynced: the `syncfs` below makes it durable with the tree, and nothing
    // trusts a staging tree before the rename after it (one journal commit, not three).
    fsutil::replace_unsynced(usr.as_fd(), STATE_ID, format!("{id}\n").as_bytes(), 0o644)
        .ctx("write", rootp.join("staging/usr/.stateID"))?;
    fsutil::syncfs(usr.as_fd()).ctx("sync", &rootp)?;
    crate::failpoint::hit("staging-complete");
    Ok(stats)
}

/// Files the complete staging tree as transaction `id`'s.
fn place_staging(root: &SystemRoot, id: u64) -> Result<()> {
    let trees = root.trees_dir()?;
    let rootp = root.path.join(".moss/root");
    fsutil::rename_noreplace(trees.as_fd(), b"staging", trees.as_fd(), id.to_string().as_bytes())
        .ctx("archive", rootp.join(id.to_string()))?;
    fsutil::fsync(trees.as_fd()).ctx("sync", &rootp)
}

/// Builds transaction `id`'s tree under `.moss/root/<id>/usr` from the store.
fn materialise(root: &SystemRoot, store: &Store, layout: &Layout, id: u64) -> Result<BlitStats> {
    let stats = build_staging(root, store, layout, id)?;
    place_staging(root, id)?;
    Ok(stats)
}

/// Moves slot `name` of `.moss/root` out of the way, unless it is an empty
/// directory (removed) or a copy of transaction `id` proven by its content
/// (removed): a tree lifeboat cannot prove redundant is never deleted.
fn clear_slot(root: &SystemRoot, idx: &StateIndex, name: &str, id: Option<u64>, notes: &mut Vec<String>) -> Result<()> {
    let trees = root.trees_dir()?;
    let rootp = root.path.join(".moss/root");
    let slot = rootp.join(name);
    let Some(_) = fsutil::lstat_at(trees.as_fd(), name.as_bytes()).ctx("stat", &slot)? else { return Ok(()) };
    let empty = fsutil::open_dir_at(trees.as_fd(), name.as_bytes())
        .and_then(|d| fsutil::list_dir(d.as_fd()))
        .is_ok_and(|v| v.is_empty());
    if empty || id.is_some_and(|id| crate::reconcile::same_content(root, idx, name, id)) {
        fsutil::remove_tree_at(trees.as_fd(), name.as_bytes()).ctx("remove", &slot)?;
        return Ok(());
    }
    let aside = crate::reconcile::aside_name(trees.as_fd(), name);
    fsutil::rename_noreplace(trees.as_fd(), name.as_bytes(), trees.as_fd(), aside.as_bytes()).ctx("move", &slot)?;
    notes.push(format!(
        "{} was in the way and is not a proven copy of {}: kept as {}",
        slot.display(),
        id.map_or_else(|| "anything lifeboat knows".to_string(), |id| format!("transaction {id}")),
        rootp.join(aside).display()
    ));
    Ok(())
}

/// Makes the archived (or rebuildable) transaction `id` the active `/usr`.
/// A tree rebuilt from the store is built only from whole blobs (one missing
/// or cut short is recovered from another tree first); with `check`, an
/// archived tree is checked against its layout first and mended from the store
/// (it is about to be what the machine runs), and one that cannot be made
/// whole is not made active.
fn swap_in(root: &SystemRoot, idx: &StateIndex, id: u64, check: bool) -> Result<ActivateReport> {
    let rootp = root.path.join(".moss/root");
    let trees = root.trees_dir()?;
    let slot = id.to_string();
    let mut rebuilt = false;
    let mut blit_time = None;
    let mut notes = Vec::new();
    if SystemRoot::tree_id_at(trees.as_fd(), format!("{slot}/usr").as_bytes()) != Some(id) {
        let layout = idx.layout(id).ok_or(Error::NoSuchTransaction(id))?;
        let store = root.store_for_writing(false)?;
        clear_slot(root, idx, &slot, None, &mut notes)?;
        // The blit refuses a blob that is missing or not whole. Then every
        // blob is looked at, those that are not whole are recovered from
        // another tree's intact copy, and the blit runs once more.
        let made = match materialise(root, &store, &layout, id) {
            Ok(m) => m,
            Err(first) => {
                let blobs = crate::verify::layout_blobs(&layout);
                let recovered = crate::verify::repair::restore_blobs(root, idx, id, &store, &blobs).map_err(|why| {
                    Error::Store { path: store.path().to_owned(), why: format!("transaction {id}: {why} ({first})") }
                })?;
                if recovered.is_empty() {
                    return Err(first);
                }
                for (h, from) in recovered {
                    notes.push(format!(
                        "store blob {} was missing or damaged: recovered from {}",
                        h.moss_hex(),
                        from.display()
                    ));
                }
                materialise(root, &store, &layout, id)?
            }
        };
        blit_time = Some(made.duration);
        rebuilt = true;
    }
    if check && !rebuilt {
        let opts = crate::verify::Options { unlisted: root.unlisted(), ..Default::default() };
        let r = crate::verify::repair(root, idx, crate::verify::Which::State(id), false, opts)?;
        if !r.unrecoverable.is_empty() {
            let what: Vec<String> = r.unrecoverable.iter().take(5).map(|(p, why)| format!("{p}: {why}")).collect();
            return Err(Error::Store {
                path: rootp.join(&slot),
                why: format!(
                    "transaction {id}'s tree cannot be made whole ({} paths; {}); not made active",
                    r.unrecoverable.len(),
                    what.join("; ")
                ),
            });
        }
        if !r.fixed.is_empty() {
            notes.push(format!(
                "transaction {id}'s tree differed from its layout in {} paths: mended from the store before it was made active",
                r.fixed.len()
            ));
        }
    }
    let previous = root.active_id();
    let swap_start = Instant::now();
    let slot_fd = fsutil::open_dir_at(trees.as_fd(), slot.as_bytes()).ctx("open", rootp.join(&slot))?;
    crate::failpoint::hit("activate-exchange");
    if root.has_usr()? {
        fsutil::exchange(slot_fd.as_fd(), b"usr", root.fd(), b"usr").ctx("exchange with", root.path.join("usr"))?;
        crate::failpoint::hit("activate-exchanged");
        // The slot now holds the previous tree; file it under its own id.
        match previous {
            Some(prev) => {
                let p = prev.to_string();
                clear_slot(root, idx, &p, Some(prev), &mut notes)?;
                fsutil::rename_noreplace(trees.as_fd(), slot.as_bytes(), trees.as_fd(), p.as_bytes())
                    .ctx("archive", rootp.join(&p))?;
            }
            None => {
                // An unmanaged /usr: keep it, named so that nobody mistakes it.
                let name = format!("unmanaged-{}", now());
                fsutil::rename_noreplace(trees.as_fd(), slot.as_bytes(), trees.as_fd(), name.as_bytes())
                    .ctx("archive", rootp.join(&name))?;
                notes.push(format!(
                    "the /usr that was there had no transaction id (.stateID): kept as {}",
                    rootp.join(&name).display()
                ));
            }
        }
    } else {
        fsutil::rename_noreplace(slot_fd.as_fd(), b"usr", root.fd(), b"usr").ctx("move into", root.path.join("usr"))?;
        crate::failpoint::hit("activate-moved");
        fsutil::remove_tree_at(trees.as_fd(), slot.as_bytes()).ctx("remove", rootp.join(&slot))?;
    }
    fsutil::fsync(trees.as_fd()).ctx("sync", &rootp)?;
    fsutil::fsync(root.fd()).ctx("sync", &root.path)?;
    crate::failpoint::hit("activate-done");
    Ok(ActivateReport { id, previous, rebuilt, notes, swap: swap_start.elapsed(), blit: blit_time })
}

/// `state commit --from TREE`.
/// `progress` is told how the hashing of the tree's files goes.
pub fn commit(
    rootp: &Path,
    tree: &Path,
    summary: &str,
    prep: Prep,
    progress: Option<&dyn crate::verify::ProgressSink>,
) -> Result<CommitReport> {
    SystemRoot::open(rootp).map(|r| r.refuse_on_moss("commit", "moss install / moss sync")).unwrap_or(Ok(()))?;
    // A source that cannot be read is refused before anything is made (a
    // mistyped --root is not created for nothing).
    let src = fsutil::open_dir(tree).ctx("open source tree", tree)?;
    // An empty tree would become an empty /usr: nothing would run after it.
    if fsutil::list_dir(src.as_fd()).ctx("list source tree", tree)?.is_empty() {
        return Err(Error::BadTree {
            path: tree.to_owned(),
            why: "is empty: committing it would leave /usr empty; give --from the directory that holds a \
                  /usr's contents (bin, lib, ...)"
                .into(),
        });
    }
    // A root that is not there is a mistyped --root far more often than a new
    // system: made only by hand.
    if std::fs::symlink_metadata(rootp).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(Error::NotARoot {
            path: rootp.to_owned(),
            why: "does not exist: check --root, or create the directory (mkdir -p) to make a new lifeboat root there"
                .into(),
        });
    }
    let root = SystemRoot::open_locked(rootp, true)?;
    let mut notes = root.tighten()?;
    let p = recover::prepare(&root, false, Prep { dry_run: false, ..prep })?;
    notes.extend(p.notes);
    let (idx, clean) = (p.index, p.clean || p.wrote);
    if root.has_usr()? && root.active_id().is_none() {
        let usr = root.path.join("usr");
        let empty =
            fsutil::open_dir(&usr).and_then(|d| fsutil::list_dir(d.as_fd())).map(|v| v.is_empty()).unwrap_or(false);
        if !empty {
            return Err(Error::NotARoot {
                path: usr,
                why: "exists but is not a lifeboat/moss transaction (no .stateID); refusing to replace it".into(),
            });
        }
        fsutil::remove_tree_at(root.fd(), b"usr").ctx("remove empty", root.path.join("usr"))?;
    }
    let mut timings = Vec::new();
    let t = Instant::now();
    // The scan hashes every file and adds the new ones to the store as it goes.
    let store = root.store_for_writing(true)?;
    let scanned = scan::scan_with(tree, scan::ScanOptions { store: Some(&store), known: None, progress })?;
    let new_blobs = scanned.new_blobs;
    timings.push(("scan_store", t.elapsed()));
    let id = idx.next_id();
    let parent = root.active_id();
    // The store's new blobs are written back while the tree is blitted: the
    // staging tree is trusted only after the `syncfs` that ends the blit
    // (which covers whatever of the store this one has not written yet), and
    // the index names the transaction only after both.
    let t = Instant::now();
    let (blit, synced) = std::thread::scope(|s| {
        let sync = s.spawn(|| (fsutil::syncfs(store.fd()), t.elapsed()));
        let blit = build_staging(&root, &store, &scanned.layout, id);
        let synced = sync.join().unwrap_or_else(|_| (fsutil::syncfs(store.fd()), t.elapsed()));
        (blit, synced)
    });
    let blit = blit?;
    let (synced, sync_time) = synced;
    synced.ctx("sync", store.path())?;
    timings.push(("store_sync", sync_time));
    timings.push(("blit", blit.duration));
    timings.push(("tree_sync", t.elapsed().saturating_sub(blit.duration)));
    let t = Instant::now();
    let meta = TxMeta { id, created: now(), summary: summary.to_owned(), parent, kernels: scanned.layout.kernels() };
    let wire = idx.rebuilt(Some((meta, &scanned.layout)), &[]).map_err(Error::IndexBuild)?;
    // The index names the transaction before its tree gets its name: a crash
    // between leaves a staging tree (removed) and a transaction whose tree is
    // rebuilt from the store, never a tree no index knows.
    crate::failpoint::hit("commit-index");
    root.store_index(&wire, clean)?;
    let idx = StateIndex::from_wire(wire).map_err(Error::IndexBuild)?;
    crate::failpoint::hit("commit-indexed");
    place_staging(&root, id)?;
    timings.push(("index", t.elapsed()));
    let r = swap_in(&root, &idx, id, false)?;
    timings.push(("swap", r.swap));
    notes.extend(r.notes);
    Ok(CommitReport { id, entries: scanned.layout.len(), new_blobs, blit, notes, timings })
}

/// `state activate ID`: also what PID 1 runs for `lifeboat.tx=`.
///
/// On a moss root: moss's own swap ([`crate::moss::activate`]), which needs no
/// index; the state must have its tree under `.moss/root/<id>`.
pub fn activate(rootp: &Path, id: u64, prep: Prep) -> Result<ActivateReport> {
    let root = SystemRoot::open_locked(rootp, false)?;
    if root.is_moss() {
        let t = Instant::now();
        let r = crate::moss::activate::activate(&root, id)?;
        return Ok(ActivateReport {
            id,
            previous: r.previous,
            rebuilt: false,
            notes: r.notes,
            swap: t.elapsed(),
            blit: None,
        });
    }
    let mut notes = root.tighten()?;
    let p = recover::prepare(&root, true, Prep { dry_run: false, ..prep })?;
    let idx = p.index;
    notes.extend(p.notes);
    if !idx.contains(id) {
        return Err(Error::NoSuchTransaction(id));
    }
    if root.active_id() == Some(id) {
        return Ok(ActivateReport { id, previous: Some(id), rebuilt: false, notes, swap: Duration::ZERO, blit: None });
    }
    let mut r = swap_in(&root, &idx, id, true)?;
    r.notes.splice(0..0, notes);
    Ok(r)
}

/// `state prune --keep N`: keeps the active transaction and the N newest.
///
/// A tree goes in three steps, so that a crash at any point loses nothing the
/// index still names and leaves nothing it does not: renamed to
/// `pruning-<id>`, then the index drops the transaction, then the tree is
/// removed ([`crate::reconcile`] finishes or undoes a prune a crash cut short).
/// A dry run changes nothing at all, reconciliation included.
pub fn prune(rootp: &Path, keep: usize, dry_run: bool, prep: Prep) -> Result<PruneReport> {
    SystemRoot::open(rootp).map(|r| r.refuse_on_moss("prune", "moss state prune")).unwrap_or(Ok(()))?;
    let root = if dry_run { SystemRoot::open(rootp)? } else { SystemRoot::open_locked(rootp, false)? };
    let mut notes = if dry_run { Vec::new() } else { root.tighten()? };
    let p = recover::prepare(&root, true, Prep { dry_run, ..prep })?;
    let (idx, clean) = (p.index, p.clean);
    notes.extend(p.notes);
    if !clean && !dry_run {
        // The newer generation may retain transactions and blobs this one does
        // not know: deleting by this one could destroy them.
        return Err(Error::NotARoot {
            path: root.index_path(),
            why: "is damaged and the previous generation was loaded; prune deletes nothing until \
                  a commit or activation has written a new index"
                .into(),
        });
    }
    let active = root.active_id().filter(|a| idx.contains(*a));
    let mut ids: Vec<u64> = idx.transactions().map(|t| t.id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut kept: Vec<u64> = ids.iter().copied().take(keep).collect();
    if let Some(a) = active.filter(|a| !kept.contains(a)) {
        kept.push(a);
    }
    let removed: Vec<u64> = ids.iter().copied().filter(|i| !kept.contains(i)).collect();
    kept.sort_unstable();
    let mut report = PruneReport { removed: removed.clone(), kept, blobs_removed: 0, notes };
    if dry_run {
        return Ok(report);
    }
    let trees = root.trees_dir()?;
    let rootp = root.path.join(".moss/root");
    for id in &removed {
        let s = id.to_string();
        if fsutil::lstat_at(trees.as_fd(), s.as_bytes()).ctx("stat", &rootp)?.is_none() {
            continue;
        }
        // Only the transaction's own tree goes: a slot that holds anything
        // else is left where it is, and said.
        if SystemRoot::tree_id_at(trees.as_fd(), format!("{s}/usr").as_bytes()) != Some(*id) {
            report.notes.push(format!(
                "kept {}: it does not hold transaction {id}'s tree (no .stateID naming it); remove it by hand",
                rootp.join(&s).display()
            ));
            continue;
        }
        crate::failpoint::hit("prune-rename");
        let to = format!("{}{s}", crate::reconcile::PRUNING);
        fsutil::rename_noreplace(trees.as_fd(), s.as_bytes(), trees.as_fd(), to.as_bytes())
            .ctx("move", rootp.join(&s))?;
    }
    fsutil::fsync(trees.as_fd()).ctx("sync", &rootp)?;
    let idx = if removed.is_empty() {
        idx
    } else {
        let wire = idx.rebuilt(None, &removed).map_err(Error::IndexBuild)?;
        crate::failpoint::hit("prune-index");
        root.store_index(&wire, clean)?;
        StateIndex::from_wire(wire).map_err(Error::IndexBuild)?
    };
    for id in &removed {
        let s = format!("{}{id}", crate::reconcile::PRUNING);
        crate::failpoint::hit("prune-tree");
        // What is mounted inside it (moved in by an activation) is never
        // crossed: the tree then stays, with what could not go, and is said.
        if let Err(e) = fsutil::remove_tree_at(trees.as_fd(), s.as_bytes()) {
            report.notes.push(format!("could not remove all of {}: {e}", rootp.join(&s).display()));
        }
    }
    // Blobs go last, and only those no retained transaction references; then
    // the variants none needs ([`crate::variants`]).
    let wanted = idx.referenced_hashes();
    let store = root.store(false)?;
    for h in store.list()? {
        if !wanted.contains(&h) {
            crate::failpoint::hit("prune-blob");
            store.remove(h).ctx("remove", store.blob_path(h))?;
            report.blobs_removed += 1;
        }
    }
    if let Some(v) = store.variants() {
        let have = v.list().ctx("list", v.path())?;
        if !have.is_empty() {
            let mut needed = std::collections::HashSet::new();
            for t in idx.transactions() {
                for e in idx.layout(t.id).map(Layout::into_entries).unwrap_or_default() {
                    if let crate::layout::EntryData::File { hash, size: 1.. } = e.data {
                        needed.insert((hash, crate::variants::key_of(&e)));
                    }
                }
            }
            for (h, k) in have {
                if !needed.contains(&(h, k)) {
                    crate::failpoint::hit("prune-variant");
                    v.remove(h, k).ctx("remove a variant from", v.path())?;
                    report.blobs_removed += 1;
                }
            }
        }
    }
    Ok(report)
}
