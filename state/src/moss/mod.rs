//! A root that moss (AerynOS) manages, and what lifeboat may and may not do there.
//!
//! A root with `.moss/db/state` is moss's: its SQLite databases are the truth about
//! its transactions ("states"), and every tree, store blob, staging and isolation
//! directory and database is moss's. lifeboat owns only `.moss/lifeboat/`. It reads
//! moss's databases into its own index ([`import`], host only: the rescue binary
//! carries no SQLite), remembers what it read ([`stamp`]) so a host command
//! re-imports only when moss changed something, holds moss's own lock while it
//! works ([`MossLock`]), and changes trees in one way only — the activation swap
//! at boot, done step for step as `moss state activate` does it ([`activate`]).

pub mod activate;
#[cfg(feature = "moss-import")]
pub mod import;
pub mod stamp;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use lifeboat_fs as fsutil;

/// moss's state database, relative to the root.
pub const STATE_DB: &str = ".moss/db/state";
/// moss's layout database.
pub const LAYOUT_DB: &str = ".moss/db/layout";
/// The file moss `flock`s while it works.
pub const LOCKFILE: &str = ".moss/.moss-lockfile";
/// The `PRAGMA user_version` of the databases this lifeboat reads.
pub const USER_VERSION: i64 = 1;

/// Files moss writes into every tree itself, which no package layout lists:
/// expected there, never "extra", never removed. Relative to `/usr`.
pub const GENERATED: [&str; 3] = [".stateID", "lib/os-release", "lib/system-model.kdl"];

/// Whether the root below `root` is moss's (it has moss's state database).
pub fn is_moss_root(root: BorrowedFd) -> bool {
    fsutil::lstat_at(root, STATE_DB.as_bytes()).ok().flatten().is_some()
}

/// moss's lock on its root, held while lifeboat reads or changes anything moss
/// could be changing at the same time.
pub struct MossLock {
    _lock: Flock<std::fs::File>,
}

impl MossLock {
    /// Takes moss's lock, waiting up to `wait` while a running moss holds it; then
    /// refuses with an error that says so.
    pub fn acquire(root: BorrowedFd, root_path: &Path, wait: Duration) -> Result<MossLock> {
        let shown = root_path.join(LOCKFILE);
        let moss =
            fsutil::open_dir_beneath(root, b".moss").map_err(|e| Error::io("open", root_path.join(".moss"), e))?;
        let fd = fsutil::with_cstr(b".moss-lockfile", |c| {
            nix::fcntl::openat(
                moss.as_fd(),
                c,
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            )
        })
        .map_err(|e| Error::io("open", &shown, e))?
        .map_err(|e| Error::io("open", &shown, fsutil::io_err(e)))?;
        let mut file = std::fs::File::from(fd);
        let deadline = Instant::now() + wait;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(MossLock { _lock: lock }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(Error::MossBusy(shown)),
                Err((_, e)) => return Err(Error::io("lock", shown, fsutil::io_err(e))),
            }
        }
    }
}

/// Where each of moss's retained states is: the active `/usr` and every
/// `.moss/root/<id>/usr`, by the directory name.
pub fn retained(root: BorrowedFd) -> (Option<u64>, Vec<u64>) {
    let active = crate::root::SystemRoot::tree_id_at(root, b"usr");
    let mut archived = Vec::new();
    if let Ok(d) = fsutil::open_dir_beneath(root, b".moss/root") {
        for name in fsutil::list_dir(d.as_fd()).unwrap_or_default() {
            let Some(id) = std::str::from_utf8(&name).ok().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if fsutil::lstat_at(d.as_fd(), format!("{id}/usr").as_bytes()).ok().flatten().is_some() {
                archived.push(id);
            }
        }
    }
    archived.sort_unstable();
    archived.retain(|&id| Some(id) != active);
    (active, archived)
}

/// The path of a moss database below `root`, for messages.
pub fn db_path(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}
