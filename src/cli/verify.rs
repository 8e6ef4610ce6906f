//! `lifeboat verify` and `lifeboat repair`. Exit status of verify: 0 clean, 1
//! differences found, 2 could not check; of repair: 0 all fixed, 1 something could
//! not be recovered (listed), 2 could not run.

use std::path::Path;
use std::process::ExitCode;

use argh::FromArgs;

use super::progress::Bar as TerminalBar;
use super::Out;
use crate::error::Result;
use crate::json::Json;
use lifeboat_fs::shown::{controls_escaped, shown_path, shown_str};
use lifeboat_state::root::SystemRoot;
use lifeboat_state::verify::{self, Difference, Options, ProgressSink, Which};

pub const EXIT_DIFFERENT: u8 = 1;
pub const EXIT_CANNOT_CHECK: u8 = 2;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "verify")]
/// compare /usr (or an archived transaction) with its layout
pub struct VerifyCmd {
    /// the transaction to check (default: the active one)
    #[argh(option)]
    pub state: Option<u64>,
    /// re-hash every file (default: metadata, and content only of files that are
    /// not the store's inode)
    #[argh(switch)]
    pub full: bool,
    /// also check every store blob a retained transaction needs: present, of
    /// its size, hashing to its name
    #[argh(switch)]
    pub store: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "repair")]
/// restore /usr (or an archived transaction) from the store
pub struct RepairCmd {
    /// the transaction to repair (default: the active one)
    #[argh(option)]
    pub state: Option<u64>,
    /// also remove files the transaction does not have
    #[argh(switch)]
    pub prune_extra: bool,
    /// re-hash every file first, so content damaged in place through a hard
    /// link (same size, still the store's inode) is found and fixed too
    #[argh(switch)]
    pub full: bool,
}

/// One difference on one line: the path escaped (a file named with a newline
/// is one name, not two lines of the listing), and so is the detail.
fn line(d: &Difference) -> String {
    let mut s = format!("{:<14} {}", d.class.as_str(), shown_str(&d.path));
    if !d.detail.is_empty() {
        s.push_str(&format!(" ({})", controls_escaped(&d.detail)));
    }
    s
}

fn which(s: Option<u64>) -> Which {
    s.map(Which::State).unwrap_or(Which::Active)
}

/// Runs verify; the exit code says clean / different.
pub fn verify(rootp: &Path, c: &VerifyCmd, out: &Out) -> Result<ExitCode> {
    let root = SystemRoot::open(rootp)?;
    let loaded = lifeboat_state::recover::load_existing_index(&root)?;
    out.loaded(&loaded);
    let idx = &loaded.index;
    let (id, tree, path) = verify::open_tree(&root, idx, which(c.state))?;
    let store = root.store(false)?;
    let bar = TerminalBar::for_output(out);
    let start = std::time::Instant::now();
    // Both walk the index; on two cores they take the time of one.
    let (layout, referenced) = std::thread::scope(|s| {
        let referenced = s.spawn(|| c.store.then(|| idx.referenced_blobs()));
        let layout = idx.layout(id);
        (layout, referenced.join().unwrap_or_else(|_| c.store.then(|| idx.referenced_blobs())))
    });
    let layout = layout.ok_or(crate::error::Error::State(lifeboat_state::Error::NoSuchTransaction(id)))?;
    // Read only: the stamps this check took are not saved (a repair saves them).
    let report = verify::check_root(
        &root,
        std::os::fd::AsFd::as_fd(&tree),
        &layout,
        &store,
        Options {
            full: c.full,
            progress: bar.as_ref().map(|b| b as &dyn ProgressSink),
            unlisted: root.unlisted(),
            known: None,
        },
        referenced.as_deref(),
    )?;
    let (diffs, bad_blobs) = (report.diffs, report.bad_blobs);
    out.lines(diffs.iter().map(line));
    for (h, why) in &bad_blobs {
        out.line(format!("{:<14} {} ({why})", "bad-blob", shown_path(&store.blob_path(*h))));
    }
    let clean = diffs.is_empty() && bad_blobs.is_empty();
    out.line(format!(
        "transaction {id} ({}): {} entries, {} {}, {} ms",
        shown_path(&path),
        layout.len(),
        if clean { "no".to_string() } else { (diffs.len() + bad_blobs.len()).to_string() },
        if diffs.len() + bad_blobs.len() == 1 { "difference" } else { "differences" },
        start.elapsed().as_millis()
    ));
    out.json(
        &Json::obj()
            .with("transaction", id)
            .with("clean", clean)
            .with("entries", layout.len())
            .with("stamps_trusted", report.stamps_trusted)
            .with("store_lookups", report.store_lookups)
            .with("dirs_listed", report.dirs_listed)
            .with(
                "differences",
                Json::Arr(
                    diffs
                        .iter()
                        .map(|d| {
                            Json::obj()
                                .with("class", d.class.as_str())
                                .with("path", d.path.as_str())
                                .with("detail", d.detail.as_str())
                        })
                        .collect(),
                ),
            )
            .with(
                "bad_blobs",
                Json::Arr(
                    bad_blobs
                        .iter()
                        .map(|(h, w)| Json::obj().with("hash", h.to_string()).with("why", w.to_string()))
                        .collect(),
                ),
            ),
    );
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DIFFERENT) })
}

pub fn repair(rootp: &Path, c: &RepairCmd, out: &Out) -> Result<ExitCode> {
    let root = SystemRoot::open_locked(rootp, false)?;
    let loaded = lifeboat_state::recover::load_existing_index(&root)?;
    out.loaded(&loaded);
    let start = std::time::Instant::now();
    let bar = TerminalBar::for_output(out);
    let opts = Options {
        full: c.full,
        progress: bar.as_ref().map(|b| b as &dyn ProgressSink),
        unlisted: root.unlisted(),
        known: None,
    };
    let r = verify::repair(&root, &loaded.index, which(c.state), c.prune_extra, opts)?;
    out.lines(r.fixed.iter().map(|f| format!("fixed   {}", line(f))));
    out.lines(r.removed_extra.iter().map(|p| format!("removed {}", shown_str(p))));
    for (h, from) in &r.recovered_blobs {
        out.line(format!("recovered blob {h} from {}", shown_path(from)));
    }
    for (p, to) in &r.set_aside {
        out.line(format!("kept    {} (what stood there) as {}", shown_str(p), shown_str(to)));
    }
    for (p, why) in &r.unrecoverable {
        out.line(format!("NOT RECOVERED {}: {}", shown_str(p), controls_escaped(why)));
    }
    out.line(format!(
        "repair: {} fixed, {} not recoverable, {} ms",
        r.fixed.len(),
        r.unrecoverable.len(),
        start.elapsed().as_millis()
    ));
    out.json(
        &Json::obj()
            .with(
                "fixed",
                Json::Arr(
                    r.fixed
                        .iter()
                        .map(|d| Json::obj().with("class", d.class.as_str()).with("path", d.path.as_str()))
                        .collect(),
                ),
            )
            .with("removed_extra", r.removed_extra.clone())
            .with(
                "set_aside",
                Json::Arr(
                    r.set_aside
                        .iter()
                        .map(|(p, to)| Json::obj().with("path", p.as_str()).with("kept_as", to.as_str()))
                        .collect(),
                ),
            )
            .with(
                "recovered_blobs",
                Json::Arr(
                    r.recovered_blobs
                        .iter()
                        .map(|(h, p)| Json::obj().with("hash", h.to_string()).with("from", p.display().to_string()))
                        .collect(),
                ),
            )
            .with(
                "unrecoverable",
                Json::Arr(
                    r.unrecoverable
                        .iter()
                        .map(|(p, w)| Json::obj().with("path", p.as_str()).with("why", w.as_str()))
                        .collect(),
                ),
            ),
    );
    Ok(if r.unrecoverable.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
