//! The activation swap on a moss root, step for step as `moss state activate N`
//! does it, so moss finds exactly what its own command would have left:
//!
//! 1. `.moss/root/N` is renamed over the (empty) `.moss/root/staging`;
//! 2. `staging/usr` and `/usr` are exchanged with `renameat2(RENAME_EXCHANGE)`;
//! 3. the previous tree, now `staging/usr`, becomes `.moss/root/<previous>/usr`.
//!
//! moss records no database row for it. lifeboat adds what moss leaves out: an
//! fsync after each step, and a resume — a crash between steps leaves a state's
//! tree in `staging/usr` (each tree carries its id in `.stateID`), which the next
//! activation files where moss expects it before it goes on. No index is needed:
//! the swap works with the index missing or stale.

use std::os::fd::AsFd;

use crate::error::{Error, IoContext, Result};
use crate::root::SystemRoot;
use lifeboat_fs as fsutil;

/// What an activation did.
#[derive(Debug, Default)]
pub struct MossActivation {
    pub id: u64,
    pub previous: Option<u64>,
    /// Repairs of an earlier interrupted swap, for the user.
    pub notes: Vec<String>,
}

/// Makes moss state `id` the active `/usr` the way `moss state activate` does.
/// The caller holds moss's lock.
pub fn activate(root: &SystemRoot, id: u64) -> Result<MossActivation> {
    let rootp = root.path.join(".moss/root");
    let trees = root.trees_dir()?;
    let mut notes = Vec::new();
    let active = root.active_id().ok_or_else(|| Error::NotARoot {
        path: root.path.join("usr"),
        why: "has no .stateID: moss has no active state to swap out".into(),
    })?;
    let staging_tree = SystemRoot::tree_id_at(trees.as_fd(), b"staging/usr");
    let staged_usr = fsutil::lstat_at(trees.as_fd(), b"staging/usr").ctx("stat", rootp.join("staging/usr"))?;
    // A tree left in staging by an interrupted swap is filed first.
    let mut resumed = false;
    if staged_usr.is_some() {
        match staging_tree {
            Some(s) if s == id && s != active => {
                notes.push(format!(
                    "state {id}'s tree was in {}: resuming its activation",
                    rootp.join("staging").display()
                ));
                resumed = true;
            }
            Some(s)
                if s != active
                    && fsutil::lstat_at(trees.as_fd(), s.to_string().as_bytes()).ok().flatten().is_none() =>
            {
                archive(&trees, &rootp, s)?;
                notes.push(format!(
                    "state {s}'s tree was left in staging by an interrupted activation; filed it as {}",
                    rootp.join(format!("{s}/usr")).display()
                ));
            }
            other => {
                return Err(Error::NotARoot {
                    path: rootp.join("staging/usr"),
                    why: format!(
                        "holds a tree ({}) that no activation left there: moss's own interrupted transaction? \
                         lifeboat does not remove moss's staging; run moss to finish or clean it",
                        other.map(|s| format!("state {s}")).unwrap_or_else(|| "without a .stateID".into())
                    ),
                })
            }
        }
    }
    if active == id {
        return Ok(MossActivation { id, previous: Some(id), notes });
    }
    let slot = id.to_string();
    if !resumed {
        if SystemRoot::tree_id_at(trees.as_fd(), format!("{slot}/usr").as_bytes()).is_none() {
            return Err(Error::NoTree { id, path: rootp.join(format!("{slot}/usr")) });
        }
        if fsutil::lstat_at(trees.as_fd(), b"staging").ctx("stat", rootp.join("staging"))?.is_none() {
            fsutil::with_cstr(b"staging", |c| {
                nix::sys::stat::mkdirat(trees.as_fd(), c, nix::sys::stat::Mode::from_bits_truncate(0o755))
            })
            .ctx("create", rootp.join("staging"))?
            .map_err(fsutil::io_err)
            .ctx("create", rootp.join("staging"))?;
        }
        crate::failpoint::hit("moss-activate-stage");
        // Over the empty staging directory, as moss's fs::rename does.
        fsutil::rename(trees.as_fd(), slot.as_bytes(), trees.as_fd(), b"staging")
            .ctx("move to staging", rootp.join(&slot))?;
        fsutil::fsync(trees.as_fd()).ctx("sync", &rootp)?;
    }
    crate::failpoint::hit("moss-activate-exchange");
    let staging = fsutil::open_dir_at(trees.as_fd(), b"staging").ctx("open", rootp.join("staging"))?;
    fsutil::exchange(staging.as_fd(), b"usr", root.fd(), b"usr").ctx("exchange with", root.path.join("usr"))?;
    fsutil::fsync(root.fd()).ctx("sync", &root.path)?;
    fsutil::fsync(staging.as_fd()).ctx("sync", rootp.join("staging"))?;
    crate::failpoint::hit("moss-activate-archive");
    archive(&trees, &rootp, active)?;
    Ok(MossActivation { id, previous: Some(active), notes })
}

/// `staging/usr` → `.moss/root/<id>/usr`, as moss's `archive_state`.
fn archive(trees: &std::os::fd::OwnedFd, rootp: &std::path::Path, id: u64) -> Result<()> {
    let slot = id.to_string();
    if fsutil::lstat_at(trees.as_fd(), slot.as_bytes()).ctx("stat", rootp.join(&slot))?.is_none() {
        fsutil::with_cstr(slot.as_bytes(), |c| {
            nix::sys::stat::mkdirat(trees.as_fd(), c, nix::sys::stat::Mode::from_bits_truncate(0o755))
        })
        .ctx("create", rootp.join(&slot))?
        .map_err(fsutil::io_err)
        .ctx("create", rootp.join(&slot))?;
    }
    let dest = fsutil::open_dir_at(trees.as_fd(), slot.as_bytes()).ctx("open", rootp.join(&slot))?;
    let staging = fsutil::open_dir_at(trees.as_fd(), b"staging").ctx("open", rootp.join("staging"))?;
    fsutil::rename_noreplace(staging.as_fd(), b"usr", dest.as_fd(), b"usr")
        .ctx("archive", rootp.join(format!("{slot}/usr")))?;
    fsutil::fsync(dest.as_fd()).ctx("sync", rootp.join(&slot))?;
    fsutil::fsync(staging.as_fd()).ctx("sync", rootp.join("staging"))?;
    fsutil::fsync(trees.as_fd()).ctx("sync", rootp)?;
    Ok(())
}
