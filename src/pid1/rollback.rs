//! The rollback-and-checks phase of a boot, on the mounted root: make the
//! transaction the boot entry names active (`lifeboat.tx=` / `moss.fstx=`), point
//! the default boot entry at it, and verify or repair `/usr` when the command line
//! asks. The initrd hook (dracut) runs the same phase on systemd's `/sysroot`.

use std::os::fd::AsFd;
use std::time::Instant;

use lifeboat_state::root::SystemRoot;
use lifeboat_state::verify::{self, Options, Which};

use super::{progress, say, Boot, BootError, Phase};
use crate::error::Error;

impl Boot {
    /// Rolls back to the transaction named on the command line.
    pub(super) fn rollback(&mut self) -> Result<(), BootError> {
        if self.rollback_done {
            return Ok(());
        }
        self.rollback_done = true;
        let fail = |e: Error| BootError::from_error(Phase::Rollback, e);
        let root = self.sysroot.clone();
        let root = root.as_path();
        progress::step("opening the system root");
        let sr = SystemRoot::open(root).map_err(|e| fail(e.into()))?;
        let moss = sr.is_moss();
        if !moss && !root.join(".moss/lifeboat").is_dir() {
            say("the root holds no lifeboat state index; booting it as it is");
            return Ok(());
        }
        let active = sr.active_id();
        let Some(req) = self.cmdline.tx() else {
            return Ok(());
        };
        let req = match req {
            Ok(r) => r,
            Err(v) => {
                say(format!("lifeboat.tx={v} is not a transaction id; booting the active transaction"));
                return Ok(());
            }
        };
        if Some(req) == active {
            say(format!("transaction {req} is active"));
            return Ok(());
        }
        let shown_active = active.map(|a| a.to_string()).unwrap_or_else(|| "(unknown)".into());
        if moss {
            // moss's swap needs no index: the state's tree is all it takes. The
            // index only tells whether this boot can also check /usr.
            progress::step("reading the state index");
            match lifeboat_state::recover::load_index(&sr) {
                Ok(l) => {
                    for n in l.fallback.iter().chain(&l.notes) {
                        say(n);
                    }
                }
                Err(e) => say(format!("{e}; rolling back without it (verify and repair need it)")),
            }
            if SystemRoot::tree_id_at(sr.fd(), format!(".moss/root/{req}/usr").as_bytes()) != Some(req) {
                say(format!(
                    "moss state {req} (named by the boot entry) has no tree under .moss/root: moss pruned it; \
                     booting the active state {shown_active}"
                ));
                return Ok(());
            }
        } else {
            progress::step("reading the state index");
            let idx = match lifeboat_state::recover::load_existing_index(&sr) {
                Ok(l) => l,
                Err(e) => {
                    // Lost or unreadable: the trees are the truth; rebuild it from them.
                    say(format!("{e}"));
                    progress::step("rebuilding the state index from the trees");
                    let locked = SystemRoot::open_locked(root, false).map_err(|e| fail(e.into()))?;
                    let p =
                        lifeboat_state::recover::recover(&locked, Default::default()).map_err(|e| fail(e.into()))?;
                    for n in p.notes {
                        say(n);
                    }
                    drop(locked);
                    lifeboat_state::recover::load_existing_index(&sr).map_err(|e| fail(e.into()))?
                }
            };
            for n in idx.fallback.iter().chain(&idx.notes) {
                say(n);
            }
            if !idx.index.contains(req) {
                say(format!(
                    "transaction {req} (named by the boot entry) is no longer retained: it was pruned; booting the active transaction {shown_active}"
                ));
                return Ok(());
            }
        }
        say(format!(
            "rolling back /usr: transaction {} -> {req}",
            active.map(|a| a.to_string()).unwrap_or_else(|| "(none)".into())
        ));
        progress::step(&format!("rolling back /usr to transaction {req}"));
        let r = lifeboat_state::txn::activate(root, req, Default::default()).map_err(|e| {
            BootError::from_error(Phase::Rollback, e.into()).context(format!("activating transaction {req}"))
        })?;
        for n in r.notes {
            say(n);
        }
        if r.rebuilt {
            say(format!("transaction {req}'s tree was rebuilt from the store"));
        }
        say(format!("transaction {req} is now active"));
        // The entry picked in the menu is the user's choice now: a default
        // chosen with `boot set-default` gives way to it (crate::pin).
        if let Ok(sr) = lifeboat_state::root::SystemRoot::open(root) {
            if let Ok(true) = crate::pin::clear(&sr) {
                say("the default chosen with `boot set-default` gives way to the entry picked");
            }
        }
        // Keep booting it by default: the entry the user chose becomes the default.
        if let Some(dev) = &self.root_dev {
            progress::step("updating the default boot entry on the ESP");
            match crate::bootsync::set_default_for_disk(root, dev, req) {
                Ok(Some(p)) => say(format!("default boot entry is now {p}")),
                Ok(None) => {}
                Err(e) => say(format!(
                    "could not update the default boot entry ({e}); the next boot may pick another transaction"
                )),
            }
        }
        Ok(())
    }

    /// `lifeboat.repair` / `lifeboat.verify` on the active tree.
    pub(super) fn checks(&mut self) -> Result<(), BootError> {
        if self.check_done {
            return Ok(());
        }
        let root = self.sysroot.clone();
        let root = root.as_path();
        let has_index = root.join(".moss/lifeboat").is_dir();
        if has_index && self.cmdline.flag("lifeboat.repair") {
            say("repairing /usr from the store (lifeboat.repair)");
            progress::step("repairing /usr from the store");
            let r = repair_active(root).map_err(|e| BootError::from_error(Phase::Checks, e).context("repair"))?;
            say(r);
        } else if has_index && self.cmdline.flag("lifeboat.verify") {
            say("verifying /usr (lifeboat.verify)");
            progress::step("verifying /usr");
            let (clean, summary) =
                verify_active(root).map_err(|e| BootError::from_error(Phase::Checks, e).context("verify"))?;
            say(&summary);
            if !clean {
                return Err(BootError::new(
                    Phase::Checks,
                    "/usr differs from its transaction; `repair` fixes it, `continue` boots anyway",
                ));
            }
        }
        self.check_done = true;
        Ok(())
    }
}

/// A quick verify of the active tree: (clean, a summary for the console).
pub fn verify_active(root: &std::path::Path) -> Result<(bool, String), Error> {
    let sr = SystemRoot::open(root)?;
    let idx = lifeboat_state::recover::load_existing_index(&sr)?.index;
    let (id, tree, _) = verify::open_tree(&sr, &idx, Which::Active)?;
    let layout = idx.layout(id).ok_or(lifeboat_state::Error::NoSuchTransaction(id))?;
    let store = sr.store(false)?;
    let t = Instant::now();
    let opts = Options { unlisted: sr.unlisted(), ..Options::default() };
    // Only a check: nothing is written (the stamps it took are not saved).
    let checked = verify::check_root(&sr, tree.as_fd(), &layout, &store, opts, None)?;
    let diffs = checked.diffs;
    let mut s = format!("transaction {id}: {} entries checked in {} ms", layout.len(), t.elapsed().as_millis());
    if diffs.is_empty() {
        s.push_str(", no differences");
    } else {
        s.push_str(&format!(", {} differences:", diffs.len()));
        for d in diffs.iter().take(20) {
            s.push_str(&format!("\n  {d}"));
        }
    }
    Ok((diffs.is_empty(), s))
}

/// A repair of the active tree; an error when something stays broken.
pub fn repair_active(root: &std::path::Path) -> Result<String, Error> {
    let sr = SystemRoot::open_locked(root, false)?;
    let idx = lifeboat_state::recover::load_existing_index(&sr)?.index;
    let t = Instant::now();
    let opts = Options { unlisted: sr.unlisted(), ..Options::default() };
    let r = verify::repair(&sr, &idx, Which::Active, false, opts)?;
    let mut s = format!("repair: {} fixed in {} ms", r.fixed.len(), t.elapsed().as_millis());
    for f in r.fixed.iter().take(20) {
        s.push_str(&format!("\n  fixed {f}"));
    }
    for (h, from) in &r.recovered_blobs {
        s.push_str(&format!("\n  recovered blob {h} from {}", from.display()));
    }
    for (p, to) in &r.set_aside {
        s.push_str(&format!("\n  kept what stood at {p} as {to}"));
    }
    if !r.unrecoverable.is_empty() {
        for (p, why) in &r.unrecoverable {
            s.push_str(&format!("\n  NOT recovered: {p}: {why}"));
        }
        return Err(Error::Unrecoverable { summary: s });
    }
    Ok(s)
}
