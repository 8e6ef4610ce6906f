//! The locks a root is worked under: lifeboat's own (`.moss/lifeboat/lock`,
//! waited for as long as the caller set with [`set_own_lock_wait`], by default
//! not at all: two lifeboats do not interleave changes) and, on a root moss
//! manages, moss's (`.moss/.moss-lockfile`, waited for a while: a moss
//! transaction ends).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::root::LOCKFILE;
use lifeboat_fs as fsutil;

/// Seconds to wait for another lifeboat's lock (`--wait`): set once per
/// process by the command line before any root is opened.
static OWN_WAIT_SECS: AtomicU64 = AtomicU64::new(0);

/// How long [`own_lock_wait`] waits from now on.
pub fn set_own_lock_wait(wait: Duration) {
    OWN_WAIT_SECS.store(wait.as_secs(), Ordering::Relaxed);
}

/// How long to wait for another lifeboat holding the root's own lock.
pub fn own_lock_wait() -> Duration {
    Duration::from_secs(OWN_WAIT_SECS.load(Ordering::Relaxed))
}

/// Takes an exclusive lock on `file`, retrying every 100 ms until `wait` has
/// passed; `Ok(None)` when another process still holds it then.
pub fn lock_waiting(
    mut file: std::fs::File,
    wait: Duration,
) -> std::result::Result<Option<Flock<std::fs::File>>, nix::errno::Errno> {
    // A wait too long for the clock waits for ever rather than panicking.
    let deadline = Instant::now().checked_add(wait);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if deadline.is_none_or(|d| Instant::now() < d) => {
                file = f;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e),
        }
    }
}

/// How long lifeboat waits for a running moss to release its lock:
/// `LIFEBOAT_MOSS_WAIT` seconds, 30 by default.
pub fn moss_lock_wait() -> Duration {
    let secs = std::env::var("LIFEBOAT_MOSS_WAIT").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    Duration::from_secs(secs)
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
        match lock_waiting(std::fs::File::from(fd), wait) {
            Ok(Some(lock)) => Ok(MossLock { _lock: lock }),
            Ok(None) => Err(Error::MossBusy(shown)),
            Err(e) => Err(Error::io("lock", shown, fsutil::io_err(e))),
        }
    }
}
