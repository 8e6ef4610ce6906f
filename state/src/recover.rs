//! The trees are the truth, the index is their cache: bringing the index back in
//! line with the trees on disk before anything is written.
//!
//! [`prepare`] runs before every command that changes a root. It loads the index
//! (falling back to `.prev`), reconciles `.moss/root` ([`crate::reconcile`]) and
//! adopts every tree that carries an id the index does not know — the active
//! `/usr` and each `.moss/root/<id>` — by scanning it: a file that is still a
//! store blob's inode takes the blob's hash without being read, any other file
//! is hashed and its content added to the store when the store lacks it. When
//! neither index file can be read at all, both are set aside (never deleted)
//! and the index is rebuilt from the trees alone. What cannot be known again —
//! a transaction's summary, its parent, when it was made (the time its tree was
//! written stands in) — is said. Ids are never reused: the next id is above
//! every id in the index, on the trees and in the floor the caller gives (the
//! boot entries on the ESP).
//!
//! `lifeboat state recover` is the same, run by hand; a dry run plans and
//! reports without writing anything. [`load_index`] is how every command
//! reads the index: on a moss root it follows moss's databases first.

use std::os::fd::AsFd;

use crate::error::{Error, IoContext, Result};
use crate::index::file::Loaded;
use crate::index::{StateIndex, TxMeta};
use crate::layout::Layout;
use crate::reconcile;
use crate::root::SystemRoot;
use crate::scan::{self, KnownInodes, ScanOptions};
use lifeboat_fs as fsutil;

/// How a command that changes a root wants it prepared.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prep {
    /// Ids at or below this are taken elsewhere (boot entries): the next id
    /// handed out is above it.
    pub id_floor: u64,
    /// Plan and report only: nothing is written, moved or removed.
    pub dry_run: bool,
}

/// A root made ready for a change.
#[derive(Debug)]
pub struct Prepared {
    pub index: StateIndex,
    /// What the user should be told (fallbacks, reconciliation, adoptions).
    pub notes: Vec<String>,
    /// The main index file loaded as it was (not `.prev`, not rebuilt from
    /// scratch over a damaged one): only then does it become `.prev`.
    pub clean: bool,
    /// Transactions adopted from their trees.
    pub adopted: Vec<u64>,
    /// A new index was written here (the main file is now good, whatever
    /// `clean` says of the one loaded).
    pub wrote: bool,
}

/// Where a tree to adopt is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeAt {
    Active,
    Slot(String),
}

impl TreeAt {
    fn rel(&self) -> String {
        match self {
            TreeAt::Active => "usr".into(),
            TreeAt::Slot(n) => format!(".moss/root/{n}/usr"),
        }
    }
}

/// Loads the root's index as commands see it: on a moss root, moss's
/// databases are read into it first when they changed since the last import
/// (a host build, feature `moss-import`; the rescue build says the index is
/// older than moss's last transaction instead); then the file, falling back
/// to `.prev`.
pub fn load_index(root: &SystemRoot) -> Result<Loaded> {
    let notes = if root.is_moss() { follow_moss(root)? } else { Vec::new() };
    let mut l = root.load_index_file()?;
    l.notes.extend(notes);
    Ok(l)
}

#[cfg(feature = "moss-import")]
fn follow_moss(root: &SystemRoot) -> Result<Vec<String>> {
    Ok(match crate::moss::import::refresh(root)? {
        Some(imp) => {
            let mut n = vec![format!(
                "imported moss's states {} ({} layout rows) into {}",
                imp.states.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                imp.rows,
                root.index_path().display()
            )];
            n.extend(imp.notes);
            n
        }
        None => Vec::new(),
    })
}

#[cfg(not(feature = "moss-import"))]
fn follow_moss(root: &SystemRoot) -> Result<Vec<String>> {
    let saved = crate::moss::stamp::Stamp::saved(root.fd());
    if saved.as_ref() == Some(&crate::moss::stamp::Stamp::of(root.fd())) {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "{} is older than moss's last change (this lifeboat reads no SQLite; `lifeboat state list` on the \
         host refreshes it): states moss made since are not in it",
        root.index_path().display()
    )])
}

/// Like [`load_index`], but a root without an index is an error that says how
/// to mend it.
pub fn load_existing_index(root: &SystemRoot) -> Result<Loaded> {
    let l = load_index(root).map_err(|e| match e {
        Error::Index(le) if !root.is_moss() => Error::NotARoot {
            path: root.path.clone(),
            why: format!("{le}; `lifeboat state recover` rebuilds the index from the trees"),
        },
        e => e,
    })?;
    if !l.existed {
        let trees: Vec<String> = root
            .active_id()
            .map(|a| format!("usr (transaction {a})"))
            .into_iter()
            .chain(root.archived_ids().unwrap_or_default().iter().map(|i| format!(".moss/root/{i}")))
            .collect();
        if trees.is_empty() {
            return Err(crate::root::not_a_root(&root.path));
        }
        let why = {
            format!(
                "no state index at {}, but trees are here ({}): `lifeboat state recover` rebuilds it from them",
                root.index_path().display(),
                trees.join(", ")
            )
        };
        return Err(Error::NotARoot { path: root.path.clone(), why });
    }
    Ok(l)
}

/// Every store blob's inode and what it holds.
fn known_inodes(root: &SystemRoot) -> Result<KnownInodes> {
    let mut out = KnownInodes::new();
    let Ok(store) = root.store(false) else { return Ok(out) };
    for h in store.list()? {
        if let Ok(Some(st)) = store.stat(h) {
            if st.st_mode & lifeboat_fs::libc_mode::S_IFMT == lifeboat_fs::libc_mode::S_IFREG {
                out.insert((st.st_dev, st.st_ino), (h, st.st_size as u64));
            }
        }
    }
    // A variant holds its blob's content: a tree file that is one is known too.
    if let Some(v) = store.variants() {
        for (h, k) in v.list().ctx("list", v.path())? {
            if let Some(st) = v.stat(h, k) {
                if st.st_mode & lifeboat_fs::libc_mode::S_IFMT == lifeboat_fs::libc_mode::S_IFREG {
                    out.insert((st.st_dev, st.st_ino), (h, st.st_size as u64));
                }
            }
        }
    }
    Ok(out)
}

/// Scans each tree into a layout and metadata for transaction `id`; content
/// the store lacks is added to it (and synced) first.
fn scan_trees(root: &SystemRoot, trees: &[(TreeAt, u64)]) -> Result<Vec<(TxMeta, Layout)>> {
    let known = known_inodes(root)?;
    let store = root.store(true)?;
    let mut out = Vec::new();
    for (at, id) in trees {
        let rel = at.rel();
        let path = root.path.join(&rel);
        // The tree must be a real directory below the root, reached through no symlink.
        let fd = fsutil::open_dir_beneath(root.fd(), rel.as_bytes()).ctx("open", &path)?;
        let scanned = scan::scan_with(&path, ScanOptions { store: Some(&store), known: Some(&known), progress: None })?;
        let created =
            nix::sys::stat::fstatat(fd.as_fd(), crate::root::STATE_ID, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| st.st_mtime)
                .unwrap_or(0);
        let meta = TxMeta {
            id: *id,
            created,
            summary: format!("recovered from {} (summary and parent were lost with the index)", path.display()),
            parent: None,
            kernels: scanned.layout.kernels(),
        };
        out.push((meta, scanned.layout));
    }
    fsutil::syncfs(store.fd()).ctx("sync", store.path())?;
    Ok(out)
}

/// Sets the damaged index files aside (`state.idx.damaged-<time>`): they are
/// kept for whoever wants to look, and no longer in the way.
fn set_aside_damaged(root: &SystemRoot, names: &[&str]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let lb = root.path.join(".moss/lifeboat");
    let dir = fsutil::open_dir_beneath(root.fd(), b".moss/lifeboat").ctx("open", &lb)?;
    for name in names {
        if fsutil::lstat_at(dir.as_fd(), name.as_bytes()).ctx("stat", &lb)?.is_none() {
            continue;
        }
        // A name not taken yet: two set asides in one second keep both.
        let base = format!("{name}.damaged-{now}");
        let mut to = base.clone();
        let mut n = 1;
        loop {
            match fsutil::rename_noreplace(dir.as_fd(), name.as_bytes(), dir.as_fd(), to.as_bytes()) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                    n += 1;
                    to = format!("{base}.{n}");
                }
                Err(e) => return Err(Error::io("set aside", lb.join(name), e)),
            }
        }
        notes.push(format!("set the unreadable {name} aside as {to}"));
    }
    fsutil::fsync(dir.as_fd()).ctx("sync", &lb)?;
    Ok(notes)
}

/// Transactions of `idx` that have no tree and whose content the store no
/// longer holds: what a previous generation of the index still names after a
/// prune freed it. Nothing can bring them back.
fn ghosts(root: &SystemRoot, idx: &StateIndex) -> Result<Vec<u64>> {
    let active = root.active_id();
    let archived = root.archived_ids()?;
    let store = root.store(false).ok();
    let mut out = Vec::new();
    for t in idx.transactions() {
        if Some(t.id) == active || archived.contains(&t.id) {
            continue;
        }
        let whole = match (&store, idx.layout(t.id)) {
            (Some(st), Some(l)) => crate::verify::layout_blobs(&l)
                .iter()
                .all(|(h, size)| st.stat(*h).ok().flatten().is_some_and(|m| m.st_size as u64 == *size)),
            _ => false,
        };
        if !whole {
            out.push(t.id);
        }
    }
    Ok(out)
}

/// Whether there is any tree on the root a rebuilt index could hold.
fn has_trees(root: &SystemRoot) -> bool {
    root.active_id().is_some() || root.archived_ids().is_ok_and(|v| !v.is_empty())
}

/// Loads the index and brings it in line with the trees (see the module doc).
/// `must_exist`: a root with neither an index nor a tree is an error (there
/// is nothing to change). On a moss root only the load: moss's databases are
/// the truth there, and the trees are moss's.
pub fn prepare(root: &SystemRoot, must_exist: bool, prep: Prep) -> Result<Prepared> {
    let mut notes = Vec::new();
    let mut fell_back = false;
    let (mut idx, clean) = match load_index(root) {
        Ok(l) => {
            fell_back = l.fallback.is_some();
            notes.extend(l.fallback.iter().cloned());
            notes.extend(l.notes.iter().cloned());
            let clean = l.fallback.is_none() && l.existed;
            if !l.existed && !has_trees(root) && must_exist {
                return Err(crate::root::not_a_root(&root.path));
            }
            if !l.existed && has_trees(root) {
                notes.push(format!(
                    "{} is missing: {} it from the trees (summaries and dates are not on them)",
                    root.index_path().display(),
                    if prep.dry_run { "`lifeboat state recover` would rebuild" } else { "rebuilding" }
                ));
            }
            (l.index, clean)
        }
        Err(Error::Index(e)) if !root.is_moss() => {
            if prep.dry_run {
                return Err(Error::Index(e));
            }
            notes.push(format!("{e}"));
            notes.extend(set_aside_damaged(root, &["state.idx", "state.idx.prev"])?);
            notes.push("rebuilding the state index from the trees (summaries and dates are not on them)".into());
            (StateIndex::empty(), false)
        }
        Err(e) => return Err(e),
    };
    if root.is_moss() {
        return Ok(Prepared { index: idx, notes, clean, adopted: Vec::new(), wrote: false });
    }
    // A newer generation (or a lost one) may have handed out ids this index
    // cannot see: never reuse them.
    let mut hi = idx.next_id().max(prep.id_floor.saturating_add(1));
    for id in root.named_ids().into_iter().chain(root.archived_ids()?).chain(root.active_id()) {
        hi = hi.max(id.saturating_add(1));
    }
    idx = idx.with_next_id(hi);

    let plan = reconcile::plan(root, &idx)?;
    notes.extend(plan.describe(root, prep.dry_run));
    let mut adopt: Vec<(TreeAt, u64)> = plan.adoptions().into_iter().map(|(n, id)| (TreeAt::Slot(n), id)).collect();
    if let Some(a) = root.active_id().filter(|a| !idx.contains(*a)) {
        // The active tree is adopted whatever a slot says: it is the one in use.
        adopt.retain(|(_, id)| *id != a);
        adopt.push((TreeAt::Active, a));
        notes.push(format!(
            "{} {}/usr as transaction {a} (the active tree; not in the index)",
            if prep.dry_run { "would adopt" } else { "adopted" },
            root.path.display()
        ));
    }
    // Loaded from `.prev`: what it names that is gone for good (pruned since)
    // is dropped, and the damaged main file set aside, not overwritten.
    let drop = if fell_back { ghosts(root, &idx)? } else { Vec::new() };
    for id in &drop {
        notes.push(format!(
            "transaction {id}, which the previous generation of the index names, has no tree and its content \
             is no longer in the store (it was pruned): {}",
            if prep.dry_run { "it would be dropped" } else { "dropped" }
        ));
    }
    if prep.dry_run {
        return Ok(Prepared { index: idx, notes, clean, adopted: Vec::new(), wrote: false });
    }
    notes.extend(reconcile::apply(root, &plan)?);
    let adopted: Vec<u64> = adopt.iter().map(|(_, id)| *id).collect();
    let mut wrote = false;
    if !adopt.is_empty() || fell_back {
        let scanned = if adopt.is_empty() { Vec::new() } else { scan_trees(root, &adopt)? };
        let refs: Vec<(TxMeta, &Layout)> = scanned.iter().map(|(m, l)| (m.clone(), l)).collect();
        let wire = idx.rebuilt_with(refs, &drop).map_err(Error::IndexBuild)?;
        if fell_back {
            notes.extend(set_aside_damaged(root, &["state.idx"])?);
        }
        crate::failpoint::hit("recover-index");
        root.store_index(&wire, clean)?;
        idx = StateIndex::from_wire(wire).map_err(Error::IndexBuild)?;
        wrote = true;
    }
    Ok(Prepared { index: idx, notes, clean, adopted, wrote })
}

/// `lifeboat state recover`: [`prepare`] on its own, for a root whose index was
/// lost or damaged (every writing command does the same first).
pub fn recover(root: &SystemRoot, prep: Prep) -> Result<Prepared> {
    root.refuse_on_moss("recover the index from the trees", "lifeboat state import")?;
    prepare(root, true, prep)
}
