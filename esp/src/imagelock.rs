//! Who may write a disk image or block device: the one place the crate opens
//! one, taking an exclusive BSD `flock` on the descriptor of every writable
//! open for as long as the volume on it lives (the lock goes with the last
//! clone of the descriptor). This is systemd's "Locking Block Device Access"
//! convention: a tool writing a block device holds `LOCK_EX` so udev does not
//! probe half-written data, and two lifeboats (or a lifeboat and another tool
//! that follows it) never interleave their FAT writes on one image.
//!
//! Read-only opens take no lock: a reader of this process (discovery, the
//! XBOOTLDR's disk read while the ESP's is open for writing) would otherwise
//! wait on its own writer, since `flock` locks belong to open file
//! descriptions, not processes; and every read is checked (GPT CRCs, the FAT
//! check at open), so a read racing a writer fails rather than misleads.
//!
//! Within one process, a second writable open of a file already opened
//! writable shares the first descriptor (and its lock) rather than waiting on
//! it: `boot sync` opens the ESP and the XBOOTLDR of one disk at once.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Seconds to wait for another process's lock (`--wait`), set once per
/// process by the command line.
static WAIT_SECS: AtomicU64 = AtomicU64::new(0);

/// A file by its (device, inode).
type FileId = (u64, u64);

/// The files this process holds open for writing.
static HELD: Mutex<Vec<(FileId, Weak<File>)>> = Mutex::new(Vec::new());

/// How long a writable open waits for another holder of the image's lock.
pub fn set_lock_wait(wait: Duration) {
    WAIT_SECS.store(wait.as_secs(), Ordering::Relaxed);
}

/// Opens the image or device at `path`: read-only as it is, writable under
/// its exclusive lock (see the module's comment).
pub fn open_image(path: &Path, writable: bool) -> Result<Arc<File>> {
    let at = || path.display().to_string();
    let file = OpenOptions::new().read(true).write(writable).open(path).map_err(|e| Error::io(at(), e))?;
    if !writable {
        return Ok(Arc::new(file));
    }
    let meta = file.metadata().map_err(|e| Error::io(at(), e))?;
    let key = (meta.dev(), meta.ino());
    // A poisoned list is still a list: its entries are weak references only.
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    held.retain(|(_, w)| w.strong_count() > 0);
    if let Some(f) = held.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
        return Ok(f);
    }
    let waited = WAIT_SECS.load(Ordering::Relaxed);
    let deadline = Instant::now().checked_add(Duration::from_secs(waited));
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let r = unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(nix::libc::EINTR) => {}
            Some(nix::libc::EWOULDBLOCK) if deadline.is_none_or(|d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(nix::libc::EWOULDBLOCK) => return Err(Error::Busy { image: path.to_owned(), waited }),
            _ => return Err(Error::io(format!("{}: lock", at()), e)),
        }
    }
    let file = Arc::new(file);
    held.push((key, Arc::downgrade(&file)));
    Ok(file)
}
