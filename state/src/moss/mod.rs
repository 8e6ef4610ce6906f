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

// What a moss root is and its lock are facts about roots ([`crate::root`],
// [`crate::lock`]); this module builds on them.
pub use crate::lock::MossLock;
pub use crate::root::{is_moss_root, GENERATED, LOCKFILE, STATE_DB};

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use lifeboat_fs as fsutil;

/// moss's layout database.
pub const LAYOUT_DB: &str = ".moss/db/layout";
/// The `PRAGMA user_version` of the databases this lifeboat reads.
pub const USER_VERSION: i64 = 1;

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
