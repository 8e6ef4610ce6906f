//! `lifeboat state ...`: list, show, commit, activate, prune.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;

use super::Out;
use crate::bootsync::BootArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::json::Json;
use crate::timefmt;
use lifeboat_fs::shown::{controls_escaped, shown, shown_str};
use lifeboat_state::recover as txn_prep;
use lifeboat_state::root::SystemRoot;
use lifeboat_state::txn;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "state")]
/// transactions: list, show, commit, activate, prune
pub struct StateCmd {
    #[argh(subcommand)]
    pub cmd: StateSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum StateSub {
    List(ListCmd),
    Show(ShowCmd),
    Commit(CommitCmd),
    Activate(ActivateCmd),
    Prune(PruneCmd),
    Import(ImportCmd),
    Recover(RecoverCmd),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "recover")]
/// rebuild the state index from the trees on disk (a lost or damaged index);
/// every command that changes the root does this first when it must
pub struct RecoverCmd {
    /// only say what would be done
    #[argh(switch)]
    pub dry_run: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import")]
/// on a moss root: read moss's states into lifeboat's index now (every command
/// does when moss changed something; this is for moss's hooks and path units)
pub struct ImportCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
/// list transactions, newest first
pub struct ListCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
/// show one transaction
pub struct ShowCmd {
    #[argh(positional)]
    pub id: u64,
    /// also list every path: type, mode, uid:gid, size, xxh3-128 or target
    #[argh(switch)]
    pub files: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "commit")]
/// record TREE (the contents of a /usr) as a new transaction and make it active
pub struct CommitCmd {
    /// the tree to commit
    #[argh(option)]
    pub from: PathBuf,
    /// a one-line description
    #[argh(option, default = "String::new()")]
    pub summary: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "activate")]
/// make an archived transaction the active /usr
pub struct ActivateCmd {
    #[argh(positional)]
    pub id: u64,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "prune")]
/// remove old transactions and the content only they used
pub struct PruneCmd {
    /// how many of the newest transactions to keep, the active one always among
    /// them (default: keep = in lifeboat.conf, else 5; see Defaults below)
    #[argh(option)]
    pub keep: Option<usize>,
    /// only say what would be removed
    #[argh(switch)]
    pub dry_run: bool,
}

/// `state import`: reads moss's databases when they changed since the last
/// import; says so and touches nothing when they did not (a cheap check, for
/// path units and hooks that run after every moss transaction).
#[cfg(feature = "moss-import")]
fn import(root: &Path, out: &Out) -> Result<ExitCode> {
    let sr = SystemRoot::open(root)?;
    if !sr.is_moss() {
        return Err(crate::error::Error::bad_arg(
            "--root",
            root.display().to_string(),
            "is not a moss root (no .moss/db/state): lifeboat's own index needs no import",
        ));
    }
    let bar = super::progress::Bar::for_output(out);
    super::progress::step(&bar, "reading moss's databases");
    let imported = lifeboat_state::moss::import::refresh(&sr);
    drop(bar);
    match imported? {
        None => {
            out.line(format!("{} is current with moss's databases", sr.index_path().display()));
            out.json(&Json::obj().with("imported", false));
        }
        Some(imp) => {
            for n in &imp.notes {
                out.note(n);
            }
            let ids: Vec<String> = imp.states.iter().map(u64::to_string).collect();
            out.line(format!(
                "imported moss's states {} ({} layout rows) into {}",
                ids.join(", "),
                imp.rows,
                sr.index_path().display()
            ));
            out.json(
                &Json::obj()
                    .with("imported", true)
                    .with("states", Json::Arr(imp.states.iter().map(|&i| Json::from(i)).collect()))
                    .with("rows", imp.rows),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "moss-import"))]
fn import(_root: &Path, _out: &Out) -> Result<ExitCode> {
    Err(crate::error::Error::bad_arg(
        "state import",
        "",
        "this lifeboat is the rescue build, without SQLite: run the host build",
    ))
}

/// After a change of transactions, syncs the boot entries when a boot target is
/// configured (`--esp`, or `esp =` in the machine's lifeboat.conf).
fn sync_if_configured(root: &Path, args: &BootArgs, out: &Out) -> Result<()> {
    let (cfg, _) = Config::load(root);
    if args.esp.is_none() && cfg.esp.is_none() {
        return Ok(());
    }
    let ctx = crate::cli::boot::Ctx { root, args, out };
    out.nested("boot_sync", || crate::cli::boot::sync(&ctx, None, None, None, &crate::rescue::Ask::Keep, false))
}

/// What a command that changes the root needs to know beyond it: the
/// transaction ids the boot entries name (when a boot target is configured),
/// so that no id is handed out twice even after the index was lost.
fn prep(root: &Path, args: &BootArgs, out: &Out, dry_run: bool) -> txn_prep::Prep {
    let (cfg, _) = Config::load(root);
    let mut id_floor = 0;
    if args.esp.is_some() || cfg.esp.is_some() {
        let ctx = crate::cli::boot::Ctx { root, args, out };
        match crate::cli::boot::entry_tx_ids(&ctx) {
            Ok(ids) => id_floor = ids.into_iter().max().unwrap_or(0),
            Err(e) => out.note(format!("the boot entries could not be read ({e}): ids they name are not known")),
        }
    }
    txn_prep::Prep { id_floor, dry_run }
}

pub fn run(root: &Path, c: StateCmd, out: &Out, args: &BootArgs) -> Result<ExitCode> {
    let changes = !matches!(
        c.cmd,
        StateSub::List(_)
            | StateSub::Show(_)
            | StateSub::Prune(PruneCmd { dry_run: true, .. })
            | StateSub::Recover(RecoverCmd { dry_run: true })
    );
    let writes = changes && !matches!(c.cmd, StateSub::Import(_));
    let p = if writes || matches!(c.cmd, StateSub::Recover(_)) {
        prep(root, args, out, !changes)
    } else {
        txn_prep::Prep::default()
    };
    let new_active = matches!(c.cmd, StateSub::Commit(_) | StateSub::Activate(_));
    let code = run_inner(root, c, out, p)?;
    if new_active {
        unpin(root, out);
    }
    if changes {
        if let Err(e) = sync_if_configured(root, args, out) {
            // The change stands; the entries do not show it yet, and an entry
            // names its transaction: say what the next boot would do.
            out.note(
                "the change above is made, but the boot entries could not be updated: booting the default entry \
                 would make the transaction it names active again; mend the ESP, then run `lifeboat boot sync`",
            );
            return Err(e);
        }
    }
    Ok(code)
}

/// Another transaction is active now: a default chosen with `boot set-default`
/// gives way to it (else the next boot would activate the pinned one again).
fn unpin(root: &Path, out: &Out) {
    let Ok(sr) = SystemRoot::open(root) else { return };
    match crate::pin::clear(&sr) {
        Ok(true) => out.note(
            "the default chosen with `boot set-default` is dropped: the active transaction boots by default \
             (`lifeboat boot set-default ID` chooses again)",
        ),
        Ok(false) => {}
        Err(e) => out.note(format!("{e}; remove it by hand, or the boot default stays as set")),
    }
}

/// `state commit --from` a tree that is the root, holds it (`--from R/..`) or
/// lies in its `.moss` would copy the index, the store and the old `/usr` into
/// the new `/usr`: refused before anything is read. Both paths are compared
/// canonical, so `R/.`, `R/x/..` and symlinks to them are the same. A source
/// inside the root's own `usr` (`--from /usr` with `--root /`) is the usual
/// case and is taken. A path that cannot be resolved is left to the commit,
/// which names what is wrong with it.
fn refuse_source_holding_root(root: &Path, from: &Path) -> Result<()> {
    let (Ok(r), Ok(f)) = (std::fs::canonicalize(root), std::fs::canonicalize(from)) else {
        return Ok(());
    };
    let why = if f == r {
        "is the root itself"
    } else if r.starts_with(&f) {
        "contains the root"
    } else if f.starts_with(r.join(".moss")) {
        "is inside the root's .moss (lifeboat's and moss's own state)"
    } else {
        return Ok(());
    };
    Err(Error::usage(
        format!("--from {}", from.display()),
        format!(
            "{why} {} (--from resolves to {}): committing it would copy the root's .moss and usr into the new /usr; \
             give --from the directory that holds the new /usr's contents (bin, lib, ...)",
            root.display(),
            f.display()
        ),
    ))
}

fn run_inner(root: &Path, c: StateCmd, out: &Out, prep: txn_prep::Prep) -> Result<ExitCode> {
    match c.cmd {
        StateSub::Recover(r) => recover(root, r.dry_run, prep, out),
        StateSub::List(_) => list(root, out),
        StateSub::Import(_) => import(root, out),
        StateSub::Show(s) => show(root, s.id, s.files, out),
        StateSub::Commit(s) => {
            refuse_source_holding_root(root, &s.from)?;
            let bar = super::progress::Bar::for_output(out);
            let r = txn::commit(
                root,
                &s.from,
                &s.summary,
                prep,
                bar.as_ref().map(|b| b as &dyn lifeboat_state::verify::ProgressSink),
            )?;
            drop(bar);
            for n in &r.notes {
                out.note(n);
            }
            out.line(format!(
                "committed transaction {} ({} entries, {} new blobs; {} linked, {} copied, {} empty, {} symlinks, {} dirs)",
                r.id, r.entries, r.new_blobs, r.blit.linked, r.blit.copied, r.blit.empty, r.blit.symlinks, r.blit.dirs
            ));
            let mut j = Json::obj()
                .with("id", r.id)
                .with("entries", r.entries)
                .with("new_blobs", r.new_blobs)
                .with("linked", r.blit.linked)
                .with("copied", r.blit.copied)
                .with("empty", r.blit.empty)
                .with("symlinks", r.blit.symlinks)
                .with("dirs", r.blit.dirs);
            for (k, d) in &r.timings {
                j.push(&format!("{k}_us"), d.as_micros() as u64);
            }
            out.json(&j);
            Ok(ExitCode::SUCCESS)
        }
        StateSub::Activate(s) => {
            let r = txn::activate(root, s.id, prep)?;
            for n in &r.notes {
                out.note(n);
            }
            if r.previous == Some(r.id) {
                out.line(format!("transaction {} is already active", r.id));
            } else {
                out.line(format!(
                    "activated transaction {}{}{}",
                    r.id,
                    r.previous.map(|p| format!(" (transaction {p} archived)")).unwrap_or_default(),
                    if r.rebuilt { "; its tree was rebuilt from the store" } else { "" }
                ));
            }
            out.json(
                &Json::obj()
                    .with("id", r.id)
                    .with("previous", r.previous)
                    .with("rebuilt", r.rebuilt)
                    .with("swap_us", r.swap.as_micros() as u64)
                    .with("blit_us", r.blit.map(|d| d.as_micros() as u64)),
            );
            Ok(ExitCode::SUCCESS)
        }
        StateSub::Prune(s) => {
            let keep = s.keep.unwrap_or_else(|| crate::config::Defaults::of(&Config::load(root).0).keep);
            let r = txn::prune(root, keep, s.dry_run, prep)?;
            for n in &r.notes {
                out.note(n);
            }
            let ids = |v: &[u64]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
            if s.dry_run {
                out.line(format!(
                    "would remove: {}",
                    if r.removed.is_empty() { "nothing".into() } else { ids(&r.removed) }
                ));
            } else {
                out.line(format!(
                    "removed: {}; kept: {}; {} blobs freed",
                    if r.removed.is_empty() { "nothing".into() } else { ids(&r.removed) },
                    ids(&r.kept),
                    r.blobs_removed
                ));
            }
            out.json(
                &Json::obj()
                    .with("removed", r.removed.clone())
                    .with("kept", r.kept.clone())
                    .with("blobs_removed", r.blobs_removed)
                    .with("keep", keep)
                    .with("dry_run", s.dry_run),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `state recover [--dry-run]`.
fn recover(rootp: &Path, dry_run: bool, prep: txn_prep::Prep, out: &Out) -> Result<ExitCode> {
    let root = if dry_run { SystemRoot::open(rootp)? } else { SystemRoot::open_locked(rootp, false)? };
    let r = txn_prep::recover(&root, txn_prep::Prep { dry_run, ..prep })?;
    for n in &r.notes {
        out.note(n);
    }
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let all: Vec<u64> = r.index.transactions().map(|t| t.id).collect();
    let txs = |v: &[u64]| match v.len() {
        0 => "no transaction".to_string(),
        1 => format!("transaction {}", ids(v)),
        _ => format!("transactions {}", ids(v)),
    };
    if dry_run {
        out.line(format!("the index would hold {} (next id {})", txs(&all), r.index.next_id()));
    } else if r.adopted.is_empty() {
        out.line(format!("the index holds {}, every tree there is (next id {})", txs(&all), r.index.next_id()));
    } else {
        out.line(format!(
            "adopted {} from the trees; the index holds {} (next id {})",
            txs(&r.adopted),
            txs(&all),
            r.index.next_id()
        ));
    }
    out.json(
        &Json::obj()
            .with("adopted", r.adopted.clone())
            .with("transactions", all)
            .with("next_id", r.index.next_id())
            .with("dry_run", dry_run)
            .with("notes", r.notes.clone()),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(rootp: &Path, out: &Out) -> Result<ExitCode> {
    let root = SystemRoot::open(rootp)?;
    let loaded = lifeboat_state::recover::load_existing_index(&root)?;
    out.loaded(&loaded);
    let idx = &loaded.index;
    // Trees the index does not account for: said, never touched (the next
    // change, or `state recover`, adopts or tidies them).
    for n in lifeboat_state::reconcile::plan(&root, idx)?.describe(&root, true) {
        out.note(n);
    }
    if let Some(a) = root.active_id().filter(|a| !idx.contains(*a)) {
        out.note(format!(
            "the active /usr is transaction {a}, which this index does not hold: `lifeboat state recover` adds it"
        ));
    }
    let archived = root.archived_ids()?;
    let mut txs: Vec<_> = idx.transactions().collect();
    txs.reverse();
    let mut arr = Vec::new();
    if !out.json {
        println!("{:>6}  {:<16}  {:<10}  {:<24}  SUMMARY", "ID", "CREATED (UTC)", "STATE", "KERNELS");
    }
    for t in txs {
        let st = root.tree_state(idx, t.id, &archived);
        let short = match st {
            lifeboat_state::root::TreeState::Active => "active",
            lifeboat_state::root::TreeState::Archived => "archived",
            lifeboat_state::root::TreeState::NotMaterialised => "no-tree",
        };
        out.line(format!(
            "{:>6}  {:<16}  {:<10}  {:<24}  {}",
            t.id,
            timefmt::utc_minutes(t.created),
            short,
            if t.kernels.is_empty() { "-".to_string() } else { shown_str(&t.kernels.join(",")) },
            controls_escaped(&t.summary)
        ));
        arr.push(
            Json::obj()
                .with("id", t.id)
                .with("created", timefmt::rfc3339(t.created))
                .with("state", short)
                .with("kernels", t.kernels.clone())
                .with("summary", t.summary.as_str())
                .with("parent", t.parent),
        );
    }
    out.json(&Json::Arr(arr));
    Ok(ExitCode::SUCCESS)
}

fn show(rootp: &Path, id: u64, files: bool, out: &Out) -> Result<ExitCode> {
    let root = SystemRoot::open(rootp)?;
    let loaded = lifeboat_state::recover::load_existing_index(&root)?;
    out.loaded(&loaded);
    let idx = &loaded.index;
    let t = idx.get(id).ok_or(Error::State(lifeboat_state::Error::NoSuchTransaction(id)))?;
    let layout = idx.layout(id).ok_or(Error::State(lifeboat_state::Error::NoSuchTransaction(id)))?;
    let s = layout.stats();
    let st = root.tree_state(idx, id, &root.archived_ids()?);
    out.line(format!("transaction {id}"));
    out.line(format!("  created:   {}", timefmt::utc_minutes(t.created)));
    out.line(format!("  summary:   {}", controls_escaped(&t.summary)));
    out.line(format!("  parent:    {}", t.parent.map(|p| p.to_string()).unwrap_or_else(|| "-".into())));
    out.line(format!("  state:     {}", st.as_str()));
    out.line(format!(
        "  kernels:   {}",
        if t.kernels.is_empty() { "-".into() } else { shown_str(&t.kernels.join(", ")) }
    ));
    out.line(format!(
        "  layout:    {} entries: {} directories, {} files ({} bytes), {} symlinks",
        layout.len(),
        s.dirs,
        s.files,
        s.bytes,
        s.symlinks
    ));
    let fields = |e: &lifeboat_state::layout::LayoutEntry| match &e.data {
        lifeboat_state::layout::EntryData::Dir => ('d', 0, String::new()),
        lifeboat_state::layout::EntryData::File { hash, size } => ('f', *size, hash.to_string()),
        lifeboat_state::layout::EntryData::Symlink { target } => ('l', 0, shown(target)),
    };
    if files {
        out.lines(layout.entries().iter().map(|e| {
            let (kind, size, value) = fields(e);
            // Escaped: a name with a newline or a tab stays one field of one line.
            format!("{kind}\t{:o}\t{}:{}\t{size}\t{value}\t{}", e.perm, e.uid, e.gid, shown(&e.path))
        }));
    }
    // The same fields as the text: with --files, every path.
    let paths = files.then(|| {
        Json::Arr(
            layout
                .entries()
                .iter()
                .map(|e| {
                    let (kind, size, value) = fields(e);
                    let j = Json::obj()
                        .with("type", kind.to_string())
                        .with("mode", format!("{:o}", e.perm))
                        .with("uid", e.uid)
                        .with("gid", e.gid)
                        .with("size", size)
                        .with("path", shown(&e.path));
                    match kind {
                        'f' => j.with("hash", value),
                        'l' => j.with("target", value),
                        _ => j,
                    }
                })
                .collect(),
        )
    });
    out.json(
        &Json::obj()
            .with("paths", paths)
            .with("id", id)
            .with("created", timefmt::rfc3339(t.created))
            .with("summary", t.summary.as_str())
            .with("parent", t.parent)
            .with("state", st.as_str())
            .with("kernels", t.kernels.clone())
            .with("entries", layout.len())
            .with("directories", s.dirs)
            .with("files", s.files)
            .with("bytes", s.bytes)
            .with("symlinks", s.symlinks),
    );
    Ok(ExitCode::SUCCESS)
}
