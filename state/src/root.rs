//! A system root lifeboat manages: `DIR/usr`, `DIR/.moss/root/<id>/usr`, the store
//! and the state index, all reached through fds relative to `DIR` so nothing is
//! written outside it.
//!
//! What lies under `.moss/root` is put in order by [`crate::reconcile`], and the
//! index brought in line with it by [`crate::recover`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use crate::error::{Error, IoContext, Result};
use crate::index::{self, file::Loaded, StateIndex};
use crate::store::Store;
use lifeboat_fs::{self as fsutil, cstr, io_err};

pub const STATE_ID: &[u8] = b".stateID";
/// moss's state database: a root that has one is moss's ([`crate::moss`]).
pub const STATE_DB: &str = ".moss/db/state";
/// The file moss `flock`s while it works.
pub const LOCKFILE: &str = ".moss/.moss-lockfile";
/// Files moss writes into every tree itself, which no package layout lists:
/// expected there, never "extra", never removed. Relative to `/usr`.
pub const GENERATED: [&str; 3] = [".stateID", "lib/os-release", "lib/system-model.kdl"];

/// The largest transaction id lifeboat hands out or accepts from a tree or a
/// slot name (2^48: a commit a second for nine million years); anything above is
/// not one of its ids, and the next id can always be one more.
pub const MAX_TX_ID: u64 = 1 << 48;

/// A transaction id as lifeboat writes one: decimal digits, no sign, no
/// leading zero, at most [`MAX_TX_ID`]; `None` for anything else.
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse::<u64>().ok().filter(|&id| id <= MAX_TX_ID)
}

/// Whether the root below `root` is moss's (it has moss's state database).
pub fn is_moss_root(root: BorrowedFd) -> bool {
    fsutil::lstat_at(root, STATE_DB.as_bytes()).ok().flatten().is_some()
}
pub const INDEX_REL: &str = ".moss/lifeboat/state.idx";

/// Where a transaction's tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeState {
    Active,
    Archived,
    /// In the index, but its tree is gone; activation rebuilds it from the store.
    NotMaterialised,
}

impl TreeState {
    pub fn as_str(self) -> &'static str {
        match self {
            TreeState::Active => "active",
            TreeState::Archived => "archived",
            TreeState::NotMaterialised => "archived (tree rebuilt from the store on activation)",
        }
    }
}

/// A root with neither a state index nor a transaction tree: said one way
/// wherever it is met, with the command that makes one.
pub fn not_a_root(path: &Path) -> Error {
    Error::NotARoot {
        path: path.to_owned(),
        why: format!(
            "not a lifeboat root: no state index ({}) and no transaction tree; `lifeboat --root {} state commit \
             --from TREE` makes one",
            path.join(INDEX_REL).display(),
            path.display()
        ),
    }
}

/// An opened system root.
pub struct SystemRoot {
    pub path: PathBuf,
    fd: OwnedFd,
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
    /// moss manages this root: then lifeboat owns only `.moss/lifeboat`.
    moss: bool,
    /// moss's lock, held from [`SystemRoot::open_locked`] on a moss root.
    moss_lock: Option<crate::lock::MossLock>,
}

impl SystemRoot {
    /// Opens `path` for reading (no lock, nothing created).
    pub fn open(path: &Path) -> Result<Self> {
        let fd = fsutil::open_dir(path).ctx("open root", path)?;
        let moss = is_moss_root(fd.as_fd());
        Ok(SystemRoot { path: path.to_owned(), fd, _lock: None, moss, moss_lock: None })
    }

    /// Whether moss manages this root: then lifeboat owns only `.moss/lifeboat`.
    pub fn is_moss(&self) -> bool {
        self.moss
    }

    /// Paths of a tree that no layout lists but that belong there (relative to
    /// `/usr`): lifeboat's `.stateID`, and on a moss root the files moss writes.
    pub fn unlisted(&self) -> &'static [&'static str] {
        if self.moss {
            &GENERATED
        } else {
            &[".stateID"]
        }
    }

    /// Refuses `what` on a moss root, naming the moss command that does it.
    pub fn refuse_on_moss(&self, what: &'static str, instead: &'static str) -> Result<()> {
        if self.moss {
            return Err(Error::MossOwned { what, instead });
        }
        Ok(())
    }

    /// Runs `f` under moss's lock: the one this root holds, or one taken for it.
    pub fn with_moss_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.moss_lock.is_some() {
            return f();
        }
        let _lock = crate::lock::MossLock::acquire(self.fd(), &self.path, crate::lock::moss_lock_wait())?;
        f()
    }

    /// Creates `.moss/lifeboat`, lifeboat's own directory, where it is missing.
    pub fn ensure_own_dir(&self) -> Result<()> {
        mkdir_at(self.fd(), ".moss", &self.path.join(".moss"))?;
        let moss = fsutil::open_dir_at(self.fd(), b".moss").ctx("open", self.path.join(".moss"))?;
        mkdir_at(moss.as_fd(), "lifeboat", &self.path.join(".moss/lifeboat"))
    }

    /// Opens `path` for changes: creates `.moss/...` if `init`, and takes the lock.
    /// On a moss root, only `.moss/lifeboat` is created, and moss's lock is held too.
    pub fn open_locked(path: &Path, init: bool) -> Result<Self> {
        if let Ok(fd) = fsutil::open_dir(path) {
            if is_moss_root(fd.as_fd()) {
                return Self::open_moss_locked(path, fd);
            }
        }
        if init {
            match std::fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create root", path, e)),
            }
        }
        let fd = fsutil::open_dir(path).ctx("open root", path)?;
        let lb = path.join(".moss/lifeboat");
        if init {
            mkdir_at(fd.as_fd(), ".moss", &path.join(".moss"))?;
            let moss = fsutil::open_dir_at(fd.as_fd(), b".moss").ctx("open", path.join(".moss"))?;
            // `root` and `assets` hold old setuid binaries: closed to others.
            mkdir_mode_at(moss.as_fd(), "root", &path.join(".moss/root"), 0o700)?;
            mkdir_mode_at(moss.as_fd(), "assets", &path.join(".moss/assets"), 0o700)?;
            mkdir_at(moss.as_fd(), "lifeboat", &path.join(".moss/lifeboat"))?;
        } else if fsutil::lstat_at(fd.as_fd(), b".moss/lifeboat").ctx("stat", &lb)?.is_none() {
            return Err(not_a_root(path));
        }
        let lock = Self::own_lock(fd.as_fd(), path)?;
        Ok(SystemRoot { path: path.to_owned(), fd, _lock: Some(lock), moss: false, moss_lock: None })
    }

    /// Opens `path` holding lifeboat's own lock only, not moss's: for work
    /// (a boot sync) that takes moss's lock itself around what reads moss's
    /// databases, through a root it opens of its own — holding moss's lock
    /// here too would make that second `flock` wait for this one.
    pub fn open_own_locked(path: &Path) -> Result<Self> {
        let fd = fsutil::open_dir(path).ctx("open root", path)?;
        let moss = is_moss_root(fd.as_fd());
        let mut root = SystemRoot { path: path.to_owned(), fd, _lock: None, moss, moss_lock: None };
        if moss {
            root.ensure_own_dir()?;
        } else if fsutil::lstat_at(root.fd(), b".moss/lifeboat").ctx("stat", path.join(".moss/lifeboat"))?.is_none() {
            return Err(not_a_root(path));
        }
        root._lock = Some(Self::own_lock(root.fd(), path)?);
        Ok(root)
    }

    fn open_moss_locked(path: &Path, fd: OwnedFd) -> Result<Self> {
        let mut root = SystemRoot { path: path.to_owned(), fd, _lock: None, moss: true, moss_lock: None };
        root.ensure_own_dir()?;
        root._lock = Some(Self::own_lock(root.fd(), path)?);
        root.moss_lock = Some(crate::lock::MossLock::acquire(root.fd(), path, crate::lock::moss_lock_wait())?);
        Ok(root)
    }

    /// lifeboat's own lock, `.moss/lifeboat/lock`.
    fn own_lock(fd: BorrowedFd, path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let lb = path.join(".moss/lifeboat");
        let lbfd = fsutil::open_dir_beneath(fd, b".moss/lifeboat").ctx("open", &lb)?;
        let c = cstr(b"lock").ctx("lock", &lb)?;
        let lf = nix::fcntl::openat(
            lbfd.as_fd(),
            c.as_c_str(),
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io_err)
        .ctx("open", lb.join("lock"))?;
        let wait = crate::lock::own_lock_wait();
        match crate::lock::lock_waiting(std::fs::File::from(lf), wait) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(Error::Busy { path: lb.join("lock"), waited: wait.as_secs() }),
            Err(e) => Err(Error::io("lock", lb.join("lock"), io_err(e))),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.join(INDEX_REL)
    }

    /// Loads the index file (falling back to `.prev`), as it is: the path is
    /// resolved below the root fd, so a symlinked `.moss` cannot redirect it.
    /// [`crate::recover::load_index`] is what commands use: on a moss root it
    /// follows moss's databases first.
    pub fn load_index_file(&self) -> Result<Loaded> {
        self.check_no_symlinks(b".moss/lifeboat")?;
        index::file::load(&self.index_path()).map_err(|e| Error::Index(Box::new(e)))
    }

    /// Writes a new generation of the index. `loaded_clean` says the current main
    /// file loaded without falling back: only then does it become `.prev`.
    pub fn store_index(&self, w: &index::wire::PayloadWire, loaded_clean: bool) -> Result<()> {
        self.check_no_symlinks(b".moss/lifeboat")?;
        index::file::store(&self.index_path(), w, loaded_clean).ctx("write", self.index_path())
    }

    /// Refuses when any component of `rel` is a symlink.
    fn check_no_symlinks(&self, rel: &[u8]) -> Result<()> {
        match fsutil::open_dir_beneath(self.fd.as_fd(), rel) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::NotARoot {
                path: self.path.join(fsutil::os(rel)),
                why: format!("cannot be used ({e}); it must be a real directory"),
            }),
        }
    }

    /// The store, made first with `create`; with the variants this root has
    /// (none on a moss root).
    pub fn store(&self, create: bool) -> Result<Store> {
        let s = Store::open(self.fd.as_fd(), &self.path, create)?;
        Ok(if self.moss { s } else { s.with_variants(self.fd(), &self.path, false) })
    }

    /// The store for a command that writes trees: on a root that is
    /// lifeboat's, its variants directory is made where missing.
    pub fn store_for_writing(&self, create: bool) -> Result<Store> {
        let s = Store::open(self.fd.as_fd(), &self.path, create)?;
        Ok(if self.moss { s } else { s.with_variants(self.fd(), &self.path, true) })
    }

    /// `.moss/root`, opened.
    pub fn trees_dir(&self) -> Result<OwnedFd> {
        fsutil::open_dir_beneath(self.fd.as_fd(), b".moss/root").ctx("open", self.path.join(".moss/root"))
    }

    /// The id in `usr/.stateID` of the tree at `dir/name`.
    pub fn tree_id_at(dir: BorrowedFd, name: &[u8]) -> Option<u64> {
        let usr = fsutil::open_dir_beneath(dir, name).ok()?;
        let b = fsutil::read_small_at(usr.as_fd(), STATE_ID, 64).ok()?;
        parse_id(std::str::from_utf8(&b).ok()?.trim())
    }

    /// The active transaction id (`DIR/usr/.stateID`), if any.
    pub fn active_id(&self) -> Option<u64> {
        Self::tree_id_at(self.fd.as_fd(), b"usr")
    }

    pub fn has_usr(&self) -> Result<bool> {
        Ok(fsutil::lstat_at(self.fd.as_fd(), b"usr").ctx("stat", self.path.join("usr"))?.is_some())
    }

    /// Ids of archived trees present under `.moss/root` (by directory name).
    pub fn archived_ids(&self) -> Result<Vec<u64>> {
        let Ok(d) = self.trees_dir() else {
            return Ok(vec![]);
        };
        let mut ids: Vec<u64> = fsutil::list_dir(d.as_fd())
            .ctx("list", self.path.join(".moss/root"))?
            .into_iter()
            .filter_map(|n| std::str::from_utf8(&n).ok().and_then(parse_id))
            .filter(|&id: &u64| fsutil::lstat_at(d.as_fd(), format!("{id}/usr").as_bytes()).ok().flatten().is_some())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every id a name under `.moss/root` carries — a slot, a tree being
    /// pruned (`pruning-N`), one set aside (`kept-N-...`) — so that none is
    /// handed out again while something still names it.
    pub fn named_ids(&self) -> Vec<u64> {
        let Ok(d) = self.trees_dir() else { return Vec::new() };
        fsutil::list_dir(d.as_fd())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| {
                let s = String::from_utf8(n).ok()?;
                let rest = s.strip_prefix("pruning-").or_else(|| s.strip_prefix("kept-")).unwrap_or(&s);
                parse_id(rest.split(['-', '.']).next().unwrap_or(rest))
            })
            .collect()
    }

    /// Where each transaction of `idx` lives.
    pub fn tree_state(&self, idx: &StateIndex, id: u64, archived: &[u64]) -> TreeState {
        if self.active_id() == Some(id) {
            TreeState::Active
        } else if archived.contains(&id) && idx.contains(id) {
            TreeState::Archived
        } else {
            TreeState::NotMaterialised
        }
    }

    /// Closes `.moss/root` and `.moss/assets` to everyone but root (0700):
    /// an archived tree keeps old setuid binaries (a `sudo` with a known hole),
    /// and the store holds every one of them too. Returns what it changed. On a
    /// moss root nothing: those directories are moss's.
    pub fn tighten(&self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if self.moss {
            return Ok(notes);
        }
        for rel in [".moss/root", ".moss/assets"] {
            let p = self.path.join(rel);
            let Ok(fd) = fsutil::open_dir_beneath(self.fd(), rel.as_bytes()) else { continue };
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io_err).ctx("stat", &p)?;
            if st.st_mode & 0o077 != 0 {
                nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o700))
                    .map_err(io_err)
                    .ctx("chmod", &p)?;
                notes.push(format!(
                    "{} was {:o}; now {:o}, so that old setuid binaries in archived trees run for nobody",
                    p.display(),
                    st.st_mode & 0o7777,
                    st.st_mode & 0o700
                ));
            }
        }
        Ok(notes)
    }
}

fn mkdir_at(root: BorrowedFd, rel: &str, shown: &Path) -> Result<()> {
    mkdir_mode_at(root, rel, shown, 0o755)
}

fn mkdir_mode_at(root: BorrowedFd, rel: &str, shown: &Path, mode: u32) -> Result<()> {
    let c = cstr(rel.as_bytes()).ctx("create", shown)?;
    match nix::sys::stat::mkdirat(root, c.as_c_str(), Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::io("create", shown, io_err(e))),
    }
}
