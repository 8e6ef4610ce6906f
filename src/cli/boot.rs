//! `lifeboat boot ...`: entries on `$BOOT`, sync, default and one-shot, boot
//! counting and boot assessment (bless or roll back, [`crate::assess`] runs
//! the health checks), and installing systemd-boot.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use lifeboat_boot::bls::{self, Entry, SortInfo};
use lifeboat_boot::efivars::{EfiVars, LOADER_GUID, NV_BS_RT};
use lifeboat_boot::plan::{self, Step};
use lifeboat_boot::{loaderconf, sbstate, sdboot, uki};
use lifeboat_esp::volume::join;
use lifeboat_esp::Volume;
use lifeboat_fs::shown::{controls_escaped, shown_str};

use super::disk::human;
use super::Out;
use crate::bootsync::{self, BootArgs, BootTargets};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::json::Json;
use crate::rescue;
use lifeboat_state::root::SystemRoot;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "boot")]
/// boot entries: status, list, sync, set-default, set-oneshot, bless, assess, install
pub struct BootCmd {
    #[argh(subcommand)]
    pub cmd: BootSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum BootSub {
    Status(StatusCmd),
    List(ListCmd),
    Sync(SyncCmd),
    SetDefault(SetDefaultCmd),
    SetOneshot(SetOneshotCmd),
    Bless(BlessCmd),
    Assess(AssessCmd),
    Install(InstallCmd),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
/// where the boot partitions are, their space, entries, default, one-shot, others
pub struct StatusCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
/// every entry on $BOOT in boot-menu order
pub struct ListCmd {}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sync")]
/// make $BOOT hold one entry per retained transaction (and nothing stale of ours)
pub struct SyncCmd {
    /// entries to keep, the active transaction's included (default: keep = in
    /// lifeboat.conf, else 5; see Defaults below)
    #[argh(option)]
    pub keep: Option<usize>,
    /// only print the plan
    #[argh(switch)]
    pub dry_run: bool,
    /// boot-counting tries for the entries this sync writes (a new transaction's);
    /// entries already on $BOOT keep their counting as it is, and a note names
    /// how many (default: tries = in lifeboat.conf, else no counting)
    #[argh(option)]
    pub tries: Option<u32>,
    /// loader.conf timeout in seconds (default: timeout = in lifeboat.conf, else
    /// loader.conf's own)
    #[argh(option)]
    pub timeout: Option<u32>,
    /// one lifeboat rescue initrd for every entry, instead of those built
    /// for each kernel; later syncs (also those after commit, activate and
    /// prune) keep it
    #[argh(option)]
    pub initrd: Option<PathBuf>,
    /// drop the rescue initrd from every entry (it is kept otherwise)
    #[argh(switch)]
    pub no_initrd: bool,
    /// give each entry the rescue initrd built for its kernel from its own
    /// transaction (the default; undoes --initrd and --no-initrd)
    #[argh(switch)]
    pub kernel_initrds: bool,
    /// build the kernels' rescue initrds with only the modules this machine's
    /// root, ESP and XBOOTLDR need (implies --kernel-initrds)
    #[argh(switch)]
    pub host_only: bool,
    /// make each entry a unified kernel image signed with the machine's db
    /// key (the default when lifeboat.conf says secure-boot = yes, or when
    /// the running firmware has Secure Boot on)
    #[argh(switch)]
    pub secure_boot: bool,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set-default")]
/// boot this transaction (or entry pattern) by default (loader.conf)
pub struct SetDefaultCmd {
    #[argh(positional)]
    pub target: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set-oneshot")]
/// boot this transaction once, on the next boot (LoaderEntryOneShot)
pub struct SetOneshotCmd {
    #[argh(positional)]
    pub target: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bless")]
/// mark the booted entry good (drop its boot counter)
pub struct BlessCmd {
    /// the entry file to bless (default: from LoaderBootCountPath)
    #[argh(option)]
    pub entry: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "assess")]
/// run the health checks (health.d/required.d, wanted.d); bless the booted
/// entry when the required ones pass, roll back after the configured number
/// of failed boots (assess-failures in lifeboat.conf)
pub struct AssessCmd {
    /// restart the machine when this boot rolls back (what
    /// lifeboat-bless.service asks for)
    #[argh(switch)]
    pub reboot: bool,
    /// the booted entry file (default: from LoaderBootCountPath, else
    /// LoaderEntrySelected)
    #[argh(option)]
    pub entry: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install")]
/// install systemd-boot on the ESP (only over nothing or systemd-boot)
pub struct InstallCmd {
    /// the loader binary (default: the active tree's systemd-bootx64.efi)
    #[argh(option)]
    pub loader: Option<PathBuf>,
    /// replace a newer systemd-boot with this older one (refused otherwise,
    /// as `bootctl update` refuses)
    #[argh(switch)]
    pub allow_downgrade: bool,
    /// sign the loader with the machine's db key (the default when
    /// lifeboat.conf says secure-boot = yes, or the firmware has it on)
    #[argh(switch)]
    pub secure_boot: bool,
    /// for a machine in setup mode: a directory with PK.auth, KEK.auth and
    /// db.auth, placed in loader/keys/<its name>/ for systemd-boot to enroll
    #[argh(option)]
    pub enroll_keys: Option<PathBuf>,
}

/// Shared context of the boot commands.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub args: &'a BootArgs,
    pub out: &'a Out,
}

fn cfg(ctx: &Ctx) -> Config {
    let (c, warnings) = Config::load(ctx.root);
    for w in warnings {
        ctx.out.note(w);
    }
    c
}

fn efivars(ctx: &Ctx) -> Result<EfiVars> {
    let dir = ctx.args.efivars.clone().unwrap_or_else(|| PathBuf::from(lifeboat_boot::efivars::DEFAULT_DIR));
    Ok(EfiVars::open(&dir)?)
}

/// Opens the boot volumes and says what their check at open found (an
/// interrupted replacement completed or pending, damage).
fn open_noted(ctx: &Ctx, config: &Config, writable: bool) -> Result<BootTargets> {
    let t = bootsync::open_targets(ctx.root, ctx.args, config, writable)?;
    for n in t.boot.notes.iter().chain(t.esp.iter().flat_map(|e| e.notes.iter())) {
        ctx.out.note(n);
    }
    Ok(t)
}

fn esp_vol(t: &mut BootTargets) -> &mut dyn Volume {
    match t.esp.as_mut() {
        Some(e) => e.volume.as_mut(),
        None => t.boot.volume.as_mut(),
    }
}

/// Whether a boot subcommand changes `$BOOT`, the ESP, EFI variables or the
/// root's lifeboat files (then it runs under the root's lock).
fn writes(c: &BootSub) -> bool {
    match c {
        BootSub::Status(_) | BootSub::List(_) => false,
        BootSub::Sync(s) => !s.dry_run,
        BootSub::SetDefault(_)
        | BootSub::SetOneshot(_)
        | BootSub::Bless(_)
        | BootSub::Assess(_)
        | BootSub::Install(_) => true,
    }
}

/// The root's lifeboat lock for a boot command that writes, taken as the
/// state commands take it (`--wait`, exit 75 when busy): two lifeboats never
/// plan from, and write, the same `$BOOT` at once. A root that is not one of
/// lifeboat's (no `.moss/lifeboat`) has nothing of its own to guard; the
/// image's own lock ([`lifeboat_esp`]) still keeps two writers of one disk
/// apart. The commands that lock here are only ever entered from the command
/// line: the auto-sync of commit, activate and prune calls [`sync`] under the
/// lock its state command already holds.
/// lifeboat's own lock only: on a moss root the sync takes moss's lock itself
/// around what it reads of moss's (a second `flock` of it here would wait for
/// this process's own).
fn lock_root(ctx: &Ctx) -> Result<Option<SystemRoot>> {
    match SystemRoot::open_own_locked(ctx.root) {
        Ok(r) => Ok(Some(r)),
        Err(lifeboat_state::Error::NotARoot { .. }) => Ok(None),
        // A root mounted read-only (a boot assessed before / is remounted)
        // cannot take the lock file, and no lifeboat can change it meanwhile;
        // the image's lock still guards an unmounted ESP.
        Err(lifeboat_state::Error::Io { source, path, .. }) if source.raw_os_error() == Some(nix::libc::EROFS) => {
            ctx.out.note(format!(
                "{}: read-only filesystem: going on without the root's lock",
                lifeboat_fs::shown::shown_path(&path)
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(ctx: &Ctx, c: BootCmd) -> Result<ExitCode> {
    let _lock = if writes(&c.cmd) { lock_root(ctx)? } else { None };
    match c.cmd {
        BootSub::Sync(s) => {
            let build = s.kernel_initrds || s.host_only;
            let ask = match (s.initrd, s.no_initrd, build) {
                (Some(_), true, _) => {
                    return Err(Error::usage("--no-initrd", "cannot go with --initrd FILE (give one of them)"))
                }
                (Some(_), _, true) | (None, true, true) => {
                    return Err(Error::usage(
                        if s.host_only { "--host-only" } else { "--kernel-initrds" },
                        "builds each kernel's rescue initrd: it cannot go with --initrd or --no-initrd",
                    ))
                }
                (Some(p), false, false) => rescue::Ask::Use(p),
                (None, true, false) => rescue::Ask::Drop,
                (None, false, true) => rescue::Ask::Build(s.host_only.then_some(crate::config::ModuleSet::HostOnly)),
                (None, false, false) => rescue::Ask::Keep,
            };
            sync_with(ctx, s.keep, s.tries, s.timeout, &ask, s.dry_run, s.secure_boot)?;
            Ok(ExitCode::SUCCESS)
        }
        BootSub::List(_) => list(ctx),
        BootSub::Status(_) => status(ctx),
        BootSub::SetDefault(s) => set_default(ctx, &s.target),
        BootSub::SetOneshot(s) => set_oneshot(ctx, &s.target),
        BootSub::Bless(b) => bless(ctx, b.entry.as_deref()),
        BootSub::Assess(a) => assess(ctx, &a),
        BootSub::Install(i) => {
            install(ctx, i.loader.as_deref(), i.allow_downgrade, i.secure_boot, i.enroll_keys.as_deref())
        }
    }
}

/// `boot sync`; also run after commit, activate and prune when a boot target is
/// configured.
pub fn sync(
    ctx: &Ctx,
    keep: Option<usize>,
    tries: Option<u32>,
    timeout: Option<u32>,
    initrd: &rescue::Ask,
    dry_run: bool,
) -> Result<()> {
    sync_with(ctx, keep, tries, timeout, initrd, dry_run, false)
}

/// Secure Boot as chosen for `root`: the flag, lifeboat.conf, or (on the
/// running system) the firmware; with it on, the checked db key.
fn secure_boot(ctx: &Ctx, config: &Config, flag: bool) -> Result<Option<crate::uki::Keys>> {
    // An unreadable choice is no choice: syncing with Secure Boot off would
    // delete every signed image, on would sign against the user's wish.
    if let Some((line, value)) = &config.secure_boot_invalid {
        return Err(Error::SecureBoot {
            path: ctx.root.join(crate::config::CONFIG_REL),
            problem: format!(
                "line {line}: secure-boot = {value:?} is none of yes, no, true, false, 1, 0, on, off (in any case);                  nothing is synced until it is fixed"
            ),
        });
    }
    let live = (ctx.root == Path::new("/")).then(|| {
        let dir = ctx.args.efivars.clone().unwrap_or_else(|| PathBuf::from(lifeboat_boot::efivars::DEFAULT_DIR));
        crate::uki::firmware_secure_boot(&dir)
    });
    let choice = crate::uki::choose(flag, config, live.flatten());
    if let crate::uki::Choice::Firmware(true) = choice {
        ctx.out.note("the firmware has Secure Boot on: entries are signed unified kernel images");
    }
    if !choice.on() {
        return Ok(None);
    }
    crate::uki::load_keys(ctx.root, config).map(Some).map_err(|e| match (choice, e) {
        // Chosen by the firmware alone: say how to choose otherwise.
        (crate::uki::Choice::Firmware(true), Error::SecureBoot { path, problem }) => Error::SecureBoot {
            path,
            problem: format!(
                "{problem} (Secure Boot is on in the firmware, so lifeboat signs; set secure-boot = no in \
                 lifeboat.conf to write unsigned Type #1 entries instead)"
            ),
        },
        (_, e) => e,
    })
}

/// Makes every kept entry of `req` a signed UKI: built from its transaction's
/// stub, kernel, initrds, os-release and options, then signed.
fn make_ukis(
    ctx: &Ctx,
    root: &SystemRoot,
    idx: &lifeboat_state::index::StateIndex,
    req: &mut plan::SyncRequest,
    keys: &crate::uki::Keys,
    boot: &mut dyn Volume,
) -> Result<()> {
    let cert = crate::uki::cert_der(keys)?;
    let present: Vec<plan::OurEntry> =
        plan::our_entries(boot, &req.token)?.into_iter().filter(|e| e.uki.is_some()).collect();
    let keep: Vec<u64> = plan::candidates(&req.entries).into_iter().take(req.keep.max(1)).map(|w| w.tx).collect();
    let mut unusable = Vec::new();
    for w in req.entries.iter_mut().filter(|w| keep.contains(&w.tx)) {
        let read = |b: &plan::Blob| {
            b.source.read_all().map_err(|e| Error::SecureBoot {
                path: PathBuf::from(format!("{:?}", b.source)),
                problem: format!("cannot be read for transaction {}'s image: {e}", w.tx),
            })
        };
        let stub = match bootsync::tx_file(root, idx, w.tx, crate::uki::STUB_REL, 16 << 20) {
            Ok(Some(s)) if !s.is_empty() => s,
            Ok(_) => {
                unusable.push((w.tx, format!("carries no systemd-stub (usr/{})", crate::uki::STUB_REL)));
                continue;
            }
            Err(why) => {
                unusable.push((w.tx, why));
                continue;
            }
        };
        let tree_osrel =
            bootsync::tx_file(root, idx, w.tx, "lib/os-release", 64 << 10).ok().flatten().unwrap_or_default();
        let osrel = crate::uki::entry_osrel(&tree_osrel, &w.title, &w.version);
        let mut initrds = Vec::new();
        for (_, b) in &w.initrds {
            initrds.push(read(b)?);
        }
        if let Some(r) = &w.rescue_initrd {
            initrds.push(read(r.blob())?);
        }
        let linux = read(&w.linux)?;
        let initrd = crate::uki::concat_initrds(&initrds);
        let image = crate::uki::build(&crate::uki::UkiParts {
            stub: &stub,
            osrel: &osrel,
            cmdline: w.options.as_bytes(),
            uname: w.kver.as_bytes(),
            linux: &linux,
            initrd: &initrd,
        })?;
        // The image there already, when it is this one with a signature that
        // verifies under this certificate, is kept: nothing is signed again,
        // and an image another signer made (with a signing time in its
        // signature) is not rewritten for that alone.
        let mut kept = None;
        for e in present.iter().filter(|e| e.tx == w.tx && e.kver.eq_ignore_ascii_case(&plan::kver_name(&w.kver))) {
            let bytes = match boot.read(&e.path()) {
                Ok(b) => b,
                Err(lifeboat_esp::Error::Fat { .. }) => continue,
                Err(err) => return Err(err.into()),
            };
            if crate::uki::is_signed_copy_of(&bytes, &image, &cert) {
                kept = Some(bytes);
                break;
            }
        }
        let signed = match kept {
            Some(b) => b,
            None => crate::uki::sign(&image, keys)?,
        };
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&signed));
        w.uki = Some(plan::Blob {
            hash,
            len: signed.len() as u64,
            source: plan::Source::Bytes(std::sync::Arc::from(signed.into_boxed_slice())),
        });
    }
    // Without a stub a transaction cannot boot signed: its entry is left as
    // it is (never replaced by an unsigned one the firmware would refuse).
    let active = req.entries.iter().find(|w| w.active).map(|w| w.tx);
    for (tx, why) in &unusable {
        ctx.out.note(format!("transaction {tx}: {why}; no signed image, its entry (if any) is left as it is"));
        req.entries.retain(|w| w.tx != *tx);
        req.protected.push(*tx);
    }
    // The active transaction cannot boot signed: left alone, loader.conf's
    // default would go on naming its unsigned entry, which the firmware
    // refuses. The newest transaction that got a signed image is the default
    // instead (unless the user chose one with set-default).
    if let Some(tx) = active.filter(|a| unusable.iter().any(|(u, _)| u == a)) {
        let newest = req.entries.iter().filter(|w| w.uki.is_some()).map(|w| w.tx).max();
        match newest {
            Some(n) => {
                ctx.out.note(format!(
                    "warning: the active transaction {tx} carries no systemd-stub, so it has no signed image and \
                     cannot boot under Secure Boot; the default is transaction {n}'s signed image"
                ));
                if req.pinned_default.is_none() {
                    req.pinned_default = Some(plan::default_pattern(&req.token, n));
                }
            }
            None => ctx.out.note(format!(
                "warning: the active transaction {tx} carries no systemd-stub, so it has no signed image and \
                 cannot boot under Secure Boot"
            )),
        }
    }
    Ok(())
}

/// [`sync`], with `--secure-boot` given or not.
#[allow(clippy::too_many_arguments)]
pub fn sync_with(
    ctx: &Ctx,
    keep: Option<usize>,
    tries: Option<u32>,
    timeout: Option<u32>,
    initrd: &rescue::Ask,
    dry_run: bool,
    secure_boot_flag: bool,
) -> Result<()> {
    let config = cfg(ctx);
    let keys = secure_boot(ctx, &config, secure_boot_flag)?;
    let root = SystemRoot::open(ctx.root)?;
    let loaded = lifeboat_state::recover::load_existing_index(&root)?;
    ctx.out.loaded(&loaded);
    let (req, found) = bootsync::request(&root, &loaded.index, &config, keep, tries, timeout)?;
    for n in &found.notes {
        ctx.out.note(n);
    }
    for (id, why) in &found.skipped {
        ctx.out.note(format!("transaction {id}: {why}; its entry (if any) is left as it is"));
    }
    if req.entries.is_empty() {
        return Err(Error::NoKernel);
    }
    let mut req = req;
    req.pinned_default = pinned_default(ctx, &root, &req, dry_run);
    let mut t = bootsync::open_targets(ctx.root, ctx.args, &config, !dry_run)?;
    for n in t.boot.notes.iter().chain(t.esp.iter().flat_map(|e| e.notes.iter())) {
        ctx.out.note(n);
    }
    // The loader boots what `default` names even when its tries ran out: a
    // pin whose every entry failed its trial (a rollback's, or the loader's
    // own count) is dropped rather than written back.
    if let Some(pattern) = req.pinned_default.clone() {
        let entries = all_entries(&mut t, Some(&req.token))?;
        let named: Vec<&Found> = entries.iter().filter(|e| glob_match(&pattern, &e.sort.id)).collect();
        if !named.is_empty() && named.iter().all(|e| e.sort.counter.is_some_and(|c| c.left == 0)) {
            ctx.out.note(format!(
                "the default set with `boot set-default` ({pattern}) names only entries out of tries (they failed \
                 their boots): dropped, the default follows the active transaction again"
            ));
            req.pinned_default = None;
            if !dry_run {
                if let Err(e) = crate::pin::clear(&root) {
                    ctx.out.note(e.to_string());
                }
            }
        }
    }
    // A damaged FAT volume is never written: the sync says what it would do,
    // then fails naming the damage.
    let refused = t.boot.volume.write_refusal().or_else(|| t.esp.as_ref().and_then(|e| e.volume.write_refusal()));
    let dry_run = dry_run || refused.is_some();
    let rescue = rescue::resolve(&root, &config, initrd, t.boot.volume.as_mut(), &req.token)?;
    for n in &rescue.notes {
        ctx.out.note(n);
    }
    if root.is_moss() {
        for (id, file) in bootsync::adopt_moss_entries(&mut req, t.boot.volume.as_mut())? {
            ctx.out.note(format!("state {id}: moss's own entry {file} boots it; lifeboat adds none"));
        }
    }
    let mut kernel_initrds = None;
    match &rescue.choice {
        rescue::Choice::None => {}
        rescue::Choice::Shared(b) => {
            for w in &mut req.entries {
                w.rescue_initrd = Some(plan::RescueInitrd::Shared(b.clone()));
            }
        }
        rescue::Choice::PerKernel(set) => {
            // Only for the entries the plan can keep: the others get none.
            let cands: Vec<&plan::WantedEntry> =
                plan::candidates(&req.entries).into_iter().take(req.keep.max(1)).collect();
            let bar = super::progress::Bar::for_output(ctx.out);
            super::progress::step(&bar, "the kernels' rescue initrds: reading, building when their inputs changed");
            let got = crate::kinitrd::provide(&root, &loaded.index, &cands, *set, t.boot.volume.as_mut(), &req.token);
            drop(bar);
            let got = got?;
            for n in &got.notes {
                ctx.out.note(n);
            }
            for w in &mut req.entries {
                w.rescue_initrd = got.per_tx.get(&w.tx).cloned().map(plan::RescueInitrd::Kernel);
            }
            kernel_initrds = Some(got);
        }
    }
    if let Some(k) = &keys {
        make_ukis(ctx, &root, &loaded.index, &mut req, k, t.boot.volume.as_mut())?;
        if req.entries.is_empty() {
            return Err(Error::NoKernel);
        }
    }
    let BootTargets { boot, esp } = &mut t;
    let esp_v: Option<&mut dyn Volume> = esp.as_mut().map(|e| e.volume.as_mut() as &mut dyn Volume);
    let plan = plan::plan(&req, boot.volume.as_mut(), esp_v)?;
    let mut steps = Vec::new();
    for s in &plan.steps {
        let (what, path) = match s {
            Step::Remove { path, .. } => ("remove", path.clone()),
            Step::Copy { path, .. } => ("copy", path.clone()),
            Step::WriteEntry { path, .. } => ("entry", path.clone()),
            Step::LoaderConf => ("loader.conf", "loader/loader.conf".to_owned()),
        };
        if dry_run || !ctx.out.json {
            ctx.out.line(format!("{}{what:<12} {path}", if dry_run { "would " } else { "" }));
        }
        steps.push(Json::obj().with("op", what).with("path", path));
    }
    // Said when asked on the command line (a setting in lifeboat.conf is the
    // machine's standing choice, not news at every sync).
    if let (Some(n), true) = (req.tries, tries.is_some()) {
        // Type #1 entries and, under Secure Boot, the images (each its own
        // entry, written as a copy into EFI/Linux).
        let mut written: Vec<u64> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::WriteEntry { tx, .. } => Some(*tx),
                Step::Copy { path, .. } => path
                    .strip_prefix(&format!("{}/", plan::UKI_DIR))
                    .and_then(|f| plan::parse_uki_name(&req.token, f))
                    .map(|(tx, _, _)| tx),
                _ => None,
            })
            .collect();
        written.sort_unstable();
        written.dedup();
        let untouched = plan.kept.iter().filter(|t| !written.contains(t)).count();
        if untouched > 0 {
            ctx.out.note(format!(
                "tries = {n} counts the boots of the entries this sync writes ({}); the {untouched} entries already on \
                 $BOOT keep their boot counting as it is",
                if written.is_empty() { "none".to_owned() } else { format!("transactions {written:?}") }
            ));
        }
    }
    if !plan.dropped_for_space.is_empty() {
        ctx.out.note(format!(
            "not enough space for every entry: transactions {:?} get none ({} bytes needed, {} free)",
            plan.dropped_for_space, plan.need, plan.free
        ));
    }
    if !dry_run {
        let esp_v: Option<&mut dyn Volume> = esp.as_mut().map(|e| e.volume.as_mut() as &mut dyn Volume);
        let bar = super::progress::Bar::for_output(ctx.out);
        super::progress::step(&bar, &format!("writing {} files to {}", plan.steps.len(), boot.location));
        let done = plan::apply(&plan, boot.volume.as_mut(), esp_v);
        drop(bar);
        let done = done?;
        for r in &done.recovered {
            ctx.out.note(r);
        }
        // Only once the entries carry it (or no longer do): the record says
        // what $BOOT holds. Without it the next sync reads the entries back,
        // so a root that cannot be written to costs a note, not the sync.
        if let Some(r) = &rescue.record {
            if let Err(e) = rescue::write_record(&root, r) {
                ctx.out.note(format!("{e}; the next sync reads the rescue initrd back from the entries"));
            }
        }
        // Which file each input key made, now that $BOOT holds them: a
        // cache that cannot be written costs the next sync a build, no more.
        if let Some(k) = &kernel_initrds {
            if let Err(e) = k.cache.store(&root) {
                ctx.out.note(format!("{e}; the next sync builds the rescue initrds again"));
            }
        }
    }
    if plan.is_noop() {
        ctx.out.line(format!("{} is up to date ({} entries)", boot.location, plan.kept.len()));
    } else if !dry_run {
        ctx.out.line(format!("synced {} entries to {}", plan.kept.len(), boot.location));
    }
    ctx.out.json(
        &Json::obj()
            .with("boot", boot.location.as_str())
            .with("kept", plan.kept.clone())
            .with("dropped_for_space", plan.dropped_for_space.clone())
            .with("rescue_initrd", rescue.name())
            .with("secure_boot", keys.is_some())
            .with(
                "kernel_initrds",
                Json::Arr(
                    kernel_initrds
                        .iter()
                        .flat_map(|k| k.reports.iter())
                        .map(|r| {
                            Json::obj()
                                .with("kver", r.kver.as_str())
                                .with("transactions", r.transactions.clone())
                                .with("file", r.file.as_str())
                                .with("built", r.built)
                        })
                        .collect(),
                ),
            )
            .with("steps", Json::Arr(steps))
            .with("dry_run", dry_run),
    );
    match refused {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// What kind of entry, with what the listing shows of it.
enum Kind {
    /// A Type #1 entry file in `loader/entries`.
    Type1(Entry),
    /// A Type #2 entry: a UKI in `EFI/Linux` (read only, whoever owns it).
    Type2(Box<uki::Type2>),
}

/// One entry found on a volume, either type.
struct Found {
    file: String,
    kind: Kind,
    sort: SortInfo,
    on_esp: bool,
    ours: Option<u64>,
}

impl Found {
    /// The fields `boot list` and `boot status` both give of an entry.
    fn json(&self) -> Json {
        Json::obj()
            .with("id", self.sort.id.as_str())
            .with("kind", self.kind_name())
            .with("path", self.path())
            .with("title", self.title())
            .with("version", self.sort.version.clone())
            .with("sort_key", self.sort.sort_key.clone())
            .with("transaction", self.ours)
            .with("owner", if self.ours.is_some() { "lifeboat" } else { "foreign" })
            .with("tries_left", self.sort.counter.map(|c| c.left))
            .with("tries_done", self.sort.counter.map(|c| c.done))
    }

    fn title(&self) -> &str {
        match &self.kind {
            Kind::Type1(e) => e.get("title").unwrap_or("(no title)"),
            Kind::Type2(u) => &u.title,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Type1(_) => "type1",
            Kind::Type2(_) => "type2",
        }
    }

    /// The path on its volume.
    fn path(&self) -> String {
        match self.kind {
            Kind::Type1(_) => join("loader/entries", &self.file),
            Kind::Type2(_) => join(uki::DIR, &self.file),
        }
    }

    /// The command line the loader passes.
    fn options(&self) -> Option<String> {
        match &self.kind {
            Kind::Type1(e) => Some(e.options()),
            Kind::Type2(u) => u.cmdline.clone(),
        }
    }
}

/// A `EFI/Linux/*.efi` file the loader does not show, and why.
struct Broken {
    file: String,
    on_esp: bool,
    reason: String,
}

/// Everything on the boot volumes: the entries in boot-menu order, then the UKIs
/// the loader would skip.
struct Listing {
    entries: Vec<Found>,
    broken: Vec<Broken>,
}

fn entries_on(v: &mut dyn Volume, on_esp: bool, token: Option<&str>, only_ours: bool, l: &mut Listing) -> Result<()> {
    let list = match v.list("loader/entries") {
        Ok(l) => l,
        Err(lifeboat_esp::Error::NotFound { .. }) => vec![],
        Err(e) => return Err(e.into()),
    };
    for f in list {
        if f.is_dir || !f.name.to_ascii_lowercase().ends_with(".conf") || f.name.starts_with('.') {
            continue;
        }
        let text = String::from_utf8_lossy(&v.read(&join("loader/entries", &f.name))?).into_owned();
        let entry = Entry::parse(&text);
        let ours = token.and_then(|t| plan::owned_by_us(t, &f.name, &entry)).map(|(tx, _, _)| tx);
        l.entries.push(Found {
            sort: SortInfo::of(&f.name, &entry),
            file: f.name,
            kind: Kind::Type1(entry),
            on_esp,
            ours,
        });
    }
    for u in uki::entries_on(v, token, only_ours)? {
        match u {
            uki::Uki::Entry(t) => l.entries.push(Found {
                file: t.file.clone(),
                sort: t.sort.clone(),
                on_esp,
                ours: t.ours,
                kind: Kind::Type2(t),
            }),
            uki::Uki::Broken { file, reason } => l.broken.push(Broken { file, on_esp, reason }),
        }
    }
    Ok(())
}

/// Type #1 and Type #2 entries of $BOOT and the ESP (both, when they are two
/// volumes), in the loader's one merged order.
fn listing(t: &mut BootTargets, token: Option<&str>) -> Result<Listing> {
    listing_of(t, token, false)
}

/// [`listing`], with only lifeboat's UKIs read when `only_ours`.
fn listing_of(t: &mut BootTargets, token: Option<&str>, only_ours: bool) -> Result<Listing> {
    let mut l = Listing { entries: Vec::new(), broken: Vec::new() };
    entries_on(t.boot.volume.as_mut(), t.esp.is_none(), token, only_ours, &mut l)?;
    if let Some(e) = t.esp.as_mut() {
        entries_on(e.volume.as_mut(), true, token, only_ours, &mut l)?;
    }
    l.entries.sort_by(|a, b| bls::compare(&a.sort, &b.sort));
    Ok(l)
}

fn all_entries(t: &mut BootTargets, token: Option<&str>) -> Result<Vec<Found>> {
    Ok(listing(t, token)?.entries)
}

/// The transaction ids lifeboat's own entries on the boot volumes name (read
/// only): a commit never hands one of them out again, even when the index that
/// knew them was lost.
pub fn entry_tx_ids(ctx: &Ctx) -> Result<Vec<u64>> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let mut t = bootsync::open_targets(ctx.root, ctx.args, &config, false)?;
    Ok(listing_of(&mut t, token.as_deref(), true)?.entries.into_iter().filter_map(|e| e.ours).collect())
}

fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.to_lowercase().chars().collect(), s.to_lowercase().chars().collect());
    fn rec(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| rec(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && rec(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && rec(&p[1..], &s[1..]),
        }
    }
    rec(&p, &s)
}

pub fn list(ctx: &Ctx) -> Result<ExitCode> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let mut t = open_noted(ctx, &config, false)?;
    let Listing { entries, broken } = listing(&mut t, token.as_deref())?;
    let lc = esp_vol(&mut t).read("loader/loader.conf").ok().map(|b| String::from_utf8_lossy(&b).into_owned());
    let default = lc.as_deref().and_then(|l| loaderconf::get_key(l, "default")).map(str::to_owned);
    let default_idx = match &default {
        Some(p) => entries.iter().position(|e| glob_match(p, &e.sort.id)),
        None => (!entries.is_empty()).then_some(0),
    };
    let mut arr = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mark = if Some(i) == default_idx { "*" } else { " " };
        let counter = e.sort.counter.map(|c| format!(" [tries left {}, done {}]", c.left, c.done)).unwrap_or_default();
        let kind = match &e.kind {
            Kind::Type1(_) => String::new(),
            Kind::Type2(u) => format!(
                " [UKI{}]",
                u.sort.version.as_deref().map(|v| format!(" {}", controls_escaped(v))).unwrap_or_default()
            ),
        };
        // Another system's entry is printed escaped: one entry, one line.
        ctx.out.line(format!(
            "{mark} {:<48} {}{kind}{}{}",
            shown_str(&e.file),
            controls_escaped(e.title()),
            counter,
            if e.ours.is_none() { "  (not lifeboat's)" } else { "" }
        ));
        let mut j = e.json().with("default", Some(i) == default_idx).with("on_esp", e.on_esp);
        match &e.kind {
            Kind::Type1(entry) => {
                j = j
                    .with("linux", entry.get("linux").map(str::to_owned))
                    .with("initrd", Json::Arr(entry.all("initrd").into_iter().map(Json::from).collect()))
            }
            Kind::Type2(u) => {
                j = j
                    .with("linux", e.path())
                    .with("uname", u.uname.clone())
                    .with("sbat", u.sbat.clone())
                    .with("signed", u.signature == uki::Signature::Signed)
            }
        }
        arr.push(j.with("options", e.options()));
    }
    for b in &broken {
        ctx.out.line(format!(
            "  {:<48} (broken, not shown by the loader: {})",
            shown_str(&join(uki::DIR, &b.file)),
            controls_escaped(&b.reason)
        ));
        arr.push(broken_json(b));
    }
    ctx.out.json(&Json::Arr(arr));
    Ok(ExitCode::SUCCESS)
}

fn broken_json(b: &Broken) -> Json {
    Json::obj()
        .with("file", b.file.as_str())
        .with("kind", "type2")
        .with("path", join(uki::DIR, &b.file))
        .with("broken", b.reason.as_str())
        .with("on_esp", b.on_esp)
}

/// Whether PE bytes would be refused by firmware enforcing Secure Boot, and why.
fn refused_why(bytes: &[u8]) -> Option<&'static str> {
    match uki::Signature::of(bytes) {
        Some(uki::Signature::Signed) => None,
        Some(s) => Some(s.predicate()),
        None => Some("is not a PE image"),
    }
}

/// The Secure Boot lines of `boot status`; returns the JSON and the warnings
/// for images the firmware would refuse.
fn secure_boot_status(ctx: &Ctx, t: &mut BootTargets, entries: &[Found]) -> Json {
    let mut j = Json::obj();
    let fw = match efivars(ctx).and_then(|v| Ok(sbstate::read(&v)?)) {
        Ok(fw) => fw,
        Err(e) => {
            ctx.out.line(format!("secure boot: unknown ({e})"));
            return j.with("error", e.to_string());
        }
    };
    let onoff = |b: Option<bool>| match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "absent",
    };
    ctx.out.line(format!(
        "secure boot: {}{}",
        onoff(fw.secure_boot),
        if fw.secure_boot == Some(true) && !fw.enforcing() { " (setup or audit mode: nothing is checked)" } else { "" }
    ));
    ctx.out.line(format!("setup mode:  {}", onoff(fw.setup_mode)));
    if fw.audit_mode.is_some() || fw.deployed_mode.is_some() {
        ctx.out.line(format!("audit mode:  {}; deployed mode: {}", onoff(fw.audit_mode), onoff(fw.deployed_mode)));
    }
    j.push("secure_boot", fw.secure_boot);
    j.push("setup_mode", fw.setup_mode);
    j.push("audit_mode", fw.audit_mode);
    j.push("deployed_mode", fw.deployed_mode);
    j.push("enforcing", fw.enforcing());
    for (name, why) in &fw.unreadable {
        ctx.out.line(format!("{name}: unreadable ({})", controls_escaped(why)));
    }
    j.push(
        "unreadable",
        Json::Arr(
            fw.unreadable
                .iter()
                .map(|(n, w)| Json::obj().with("variable", n.as_str()).with("why", w.as_str()))
                .collect(),
        ),
    );
    for (label, key, info, bits, table) in [
        ("loader", "loader", &fw.loader_info, fw.loader_features, sbstate::LOADER_FEATURES),
        ("stub", "stub", &fw.stub_info, fw.stub_features, sbstate::STUB_FEATURES),
    ] {
        if let Some(i) = info {
            ctx.out.line(format!("{label} info: {}", controls_escaped(i)));
        }
        let names = bits.map(|b| sbstate::feature_names(b, table));
        if let Some(n) = &names {
            ctx.out.line(format!("{label} features: {}", if n.is_empty() { "(none)".into() } else { n.join(", ") }));
        }
        j.push(
            key,
            Json::obj()
                .with("info", info.clone())
                .with("features", bits)
                .with("feature_names", names.map(|n| Json::Arr(n.into_iter().map(Json::from).collect()))),
        );
    }
    // What the firmware would refuse to start: checked only when it checks.
    let mut warnings = Vec::new();
    if fw.enforcing() {
        let esp = esp_vol(t);
        for path in ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"] {
            if let Ok(b) = esp.read(path) {
                if let Some(why) = refused_why(&b) {
                    warnings.push(format!("Secure Boot is on and the loader {path} {why}: the firmware refuses it"));
                }
            }
        }
        for e in entries {
            match &e.kind {
                Kind::Type2(u) if u.signature != uki::Signature::Signed => warnings.push(format!(
                    "Secure Boot is on and the UKI {} {}: the firmware refuses it",
                    shown_str(&e.path()),
                    u.signature.predicate()
                )),
                Kind::Type2(_) => {}
                Kind::Type1(entry) => {
                    let Some(linux) = entry.get("linux") else { continue };
                    // A Type #1 kernel is on the volume its entry is on.
                    let vol: &mut dyn Volume = match (&mut t.esp, e.on_esp) {
                        (Some(es), true) => es.volume.as_mut(),
                        _ => t.boot.volume.as_mut(),
                    };
                    let why = match vol.read(linux.trim_start_matches('/')) {
                        Ok(b) => refused_why(&b),
                        Err(_) => Some("is missing"),
                    };
                    if let Some(why) = why {
                        warnings.push(format!(
                            "Secure Boot is on and the kernel {} of entry {} {why}: the firmware refuses it",
                            controls_escaped(linux),
                            shown_str(&e.file)
                        ));
                    }
                }
            }
        }
    }
    for w in &warnings {
        ctx.out.note(format!("warning: {w}"));
    }
    j.with("warnings", Json::Arr(warnings.into_iter().map(Json::from).collect()))
}

fn status(ctx: &Ctx) -> Result<ExitCode> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    // What the check at open found (an interrupted replacement the next write
    // completes, damage) is part of the status.
    let mut t = open_noted(ctx, &config, false)?;
    let mut j = Json::obj();
    let bs = t.boot.volume.space()?;
    match &mut t.esp {
        Some(e) => {
            let es = e.volume.space()?;
            ctx.out.line(format!("ESP:      {} ({} free of {})", e.location, human(es.free), human(es.total)));
            ctx.out.line(format!("$BOOT:    {} ({} free of {})", t.boot.location, human(bs.free), human(bs.total)));
            j.push(
                "esp",
                Json::obj().with("location", e.location.as_str()).with("free", es.free).with("total", es.total),
            );
        }
        None => {
            ctx.out.line(format!(
                "ESP:      {} ({} free of {}); also $BOOT",
                t.boot.location,
                human(bs.free),
                human(bs.total)
            ));
        }
    }
    j.push(
        "boot",
        Json::obj().with("location", t.boot.location.as_str()).with("free", bs.free).with("total", bs.total),
    );
    ctx.out.line(format!("token:    {}", token.as_deref().unwrap_or("(none)")));
    j.push("token", token.clone());
    // Loaders under EFI/.
    let mut loaders = Vec::new();
    let esp = esp_vol(&mut t);
    for path in ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI", "EFI/Microsoft/Boot/bootmgfw.efi"] {
        // A cut install leaves the loader only as its complete `.lbnew`, which
        // the next write puts in place: shown, as pending.
        let new = format!("{path}{}", lifeboat_esp::volume::NEW_SUFFIX);
        let (b, pending) = match esp.read(path) {
            Ok(b) => (b, false),
            Err(_) => match esp.read(&new) {
                Ok(b) => (b, true),
                Err(_) => continue,
            },
        };
        let mut what = match sdboot::version(&b) {
            Some(v) => format!("systemd-boot {v}"),
            None if path.contains("Microsoft") => "Windows Boot Manager".into(),
            None => "another loader".into(),
        };
        if pending {
            what.push_str(&format!(" (only as {new}, an interrupted install: the next write puts it in place)"));
        }
        ctx.out.line(format!("loader:   {path}: {what}"));
        loaders.push(Json::obj().with("path", path).with("what", what).with("pending", pending));
    }
    if let Ok(dirs) = esp.list("EFI") {
        for d in dirs.iter().filter(|d| d.is_dir) {
            let n = d.name.to_ascii_lowercase();
            if !matches!(n.as_str(), "boot" | "systemd" | "linux" | "microsoft") {
                ctx.out.line(format!("other:    EFI/{}/ (another operating system's loader)", shown_str(&d.name)));
                loaders.push(Json::obj().with("path", format!("EFI/{}", d.name)).with("what", "other"));
            }
        }
    }
    j.push("loaders", Json::Arr(loaders));
    let lc = esp.read("loader/loader.conf").ok().map(|b| String::from_utf8_lossy(&b).into_owned());
    let default = lc.as_deref().and_then(|l| loaderconf::get_key(l, "default")).map(str::to_owned);
    let timeout = lc.as_deref().and_then(|l| loaderconf::get_key(l, "timeout")).map(str::to_owned);
    ctx.out.line(format!("default:  {}", controls_escaped(default.as_deref().unwrap_or("(first entry)"))));
    ctx.out.line(format!("timeout:  {}", controls_escaped(timeout.as_deref().unwrap_or("(loader default)"))));
    j.push("default", default.clone());
    j.push("timeout", timeout);
    let vars = efivars(ctx).ok();
    let get = |n: &str| vars.as_ref().and_then(|v| v.read_string(n, LOADER_GUID).ok().flatten());
    let oneshot = get("LoaderEntryOneShot");
    let selected = get("LoaderEntrySelected");
    // The entries the loader found at this boot, in its menu order: what it
    // made of $BOOT, to hold against the listing below.
    let seen = vars
        .as_ref()
        .and_then(|v| v.read("LoaderEntries", LOADER_GUID).ok().flatten())
        .map(|(_, d)| lifeboat_boot::efivars::from_utf16_list(&d));
    if let Some(seen) = &seen {
        ctx.out.line(format!("loader saw: {}", seen.iter().map(|s| controls_escaped(s)).collect::<Vec<_>>().join(" ")));
    }
    j.push("loader_entries", seen.map(|v| Json::Arr(v.into_iter().map(Json::from).collect())));
    ctx.out.line(format!("one-shot: {}", oneshot.as_deref().unwrap_or("-")));
    ctx.out
        .line(format!("booted:   {}", selected.as_deref().unwrap_or("- (no efivarfs, or not booted by systemd-boot)")));
    j.push("oneshot", oneshot);
    j.push("selected", selected);
    let Listing { entries, broken } = listing(&mut t, token.as_deref())?;
    let sb = secure_boot_status(ctx, &mut t, &entries);
    j.push("firmware", sb);
    let mut arr = Vec::new();
    // Whose signature a signed image carries, when the root's db
    // certificate can be read.
    let db = crate::uki::root_cert_der(ctx.root, &config);
    ctx.out.line("entries:");
    for e in &entries {
        let by_db = match (&e.kind, &db) {
            (Kind::Type2(u), Some(cert)) if u.signature == uki::Signature::Signed => {
                let vol: &mut dyn Volume = match (&mut t.esp, e.on_esp) {
                    (Some(es), true) => es.volume.as_mut(),
                    _ => t.boot.volume.as_mut(),
                };
                vol.read(&e.path()).ok().map(|b| crate::uki::signed_by(&b, cert))
            }
            _ => None,
        };
        let counter = e.sort.counter.map(|c| format!(" +{}-{}", c.left, c.done)).unwrap_or_default();
        let owner = match (e.ours, &e.kind) {
            (Some(tx), _) => format!("transaction {tx}"),
            (None, Kind::Type1(entry)) => format!(
                "foreign ({})",
                entry
                    .get("machine-id")
                    .map(|m| format!("machine-id {}", controls_escaped(m)))
                    .unwrap_or_else(|| "other install".into())
            ),
            (None, Kind::Type2(_)) => "foreign (UKI of another owner)".into(),
        };
        let about = match &e.kind {
            Kind::Type1(_) => String::new(),
            Kind::Type2(u) => format!(
                " UKI \"{}\" version {} sort-key {} uname {} {}{}",
                controls_escaped(&u.title),
                controls_escaped(u.sort.version.as_deref().unwrap_or("-")),
                controls_escaped(u.sort.sort_key.as_deref().unwrap_or("-")),
                controls_escaped(u.uname.as_deref().unwrap_or("-")),
                u.signature.describe(),
                match by_db {
                    Some(true) => " (by the root's db certificate)",
                    Some(false) => " (not by the root's db certificate)",
                    None => "",
                }
            ),
        };
        ctx.out.line(format!("  {:<48} {owner}{counter}{about}", shown_str(&e.file)));
        let mut o = e.json().with("options", e.options());
        if let Kind::Type2(u) = &e.kind {
            o = o
                .with("uname", u.uname.clone())
                .with("signed", u.signature == uki::Signature::Signed)
                .with("signature", u.signature.word())
                .with("signed_by_root_db", by_db);
        }
        arr.push(o);
    }
    for b in &broken {
        ctx.out.line(format!(
            "  {:<48} broken UKI: {}",
            shown_str(&join(uki::DIR, &b.file)),
            controls_escaped(&b.reason)
        ));
        arr.push(broken_json(b));
    }
    j.push("entries", Json::Arr(arr));
    assessment_status(ctx, &mut j);
    ctx.out.json(&j);
    Ok(ExitCode::SUCCESS)
}

/// Turns `ID` or an entry name into a loader.conf pattern.
fn target_pattern(root: &Path, token: Option<&str>, target: &str) -> Result<String> {
    match target.parse::<u64>() {
        Ok(id) => {
            let t = token.ok_or_else(|| Error::NoEntryToken(root.to_path_buf()))?;
            Ok(plan::default_pattern(t, id))
        }
        Err(_) => Ok(target.to_lowercase()),
    }
}

/// The default the user chose with `set-default`, while the entry it names
/// stays; a pin on a transaction no longer synced is dropped, with a note.
fn pinned_default(ctx: &Ctx, root: &SystemRoot, req: &plan::SyncRequest, dry_run: bool) -> Option<String> {
    let pin = match crate::pin::read(root) {
        Ok(p) => p?,
        Err(e) => {
            ctx.out.note(e);
            return None;
        }
    };
    let kept = plan::candidates(&req.entries).into_iter().take(req.keep.max(1)).any(|w| Some(w.tx) == pin.tx);
    match pin.tx {
        Some(tx) if !kept => {
            ctx.out.note(format!(
                "the default set with `boot set-default` names transaction {tx}, whose entry this sync does not \
                 keep (pruned, or beyond keep): the default follows the active transaction again"
            ));
            if !dry_run {
                if let Err(e) = crate::pin::clear(root) {
                    ctx.out.note(e.to_string());
                }
            }
            None
        }
        _ => Some(pin.pattern),
    }
}

pub fn set_default(ctx: &Ctx, target: &str) -> Result<ExitCode> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let pattern = target_pattern(ctx.root, token.as_deref(), target)?;
    let mut t = open_noted(ctx, &config, true)?;
    let entries = all_entries(&mut t, token.as_deref())?;
    let Some(hit) = entries.iter().find(|e| glob_match(&pattern, &e.sort.id)) else {
        return Err(Error::NoEntry { pattern });
    };
    // The loader boots what the default names even when its tries ran out:
    // an entry that failed its trial is never made the default.
    if hit.sort.counter.is_some_and(|c| c.left == 0) {
        return Err(Error::bad_arg(
            "default",
            target,
            format!(
                "its entry {} ran out of tries (it failed its boots): boot it once with `boot set-oneshot`, \
                 and `boot bless` it when it is good",
                hit.file
            ),
        ));
    }
    let hit = hit.file.clone();
    loaderconf::set_on(esp_vol(&mut t), "default", Some(&pattern))?;
    // Kept by later syncs until the user changes what boots.
    if let Err(e) = crate::pin::record(ctx.root, &pattern, target.parse().ok()) {
        ctx.out.note(e);
    }
    ctx.out.line(format!("default: {pattern} (now {hit})"));
    ctx.out.json(&Json::obj().with("default", pattern).with("entry", hit));
    Ok(ExitCode::SUCCESS)
}

fn set_oneshot(ctx: &Ctx, target: &str) -> Result<ExitCode> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let pattern = target_pattern(ctx.root, token.as_deref(), target)?;
    let mut t = open_noted(ctx, &config, false)?;
    let entries = all_entries(&mut t, token.as_deref())?;
    // The one-shot variable names one entry exactly, counter included.
    let hit = entries
        .iter()
        .find(|e| glob_match(&pattern, &e.sort.id))
        .ok_or_else(|| Error::NoEntry { pattern: pattern.clone() })?;
    let vars = efivars(ctx)?;
    vars.write_string("LoaderEntryOneShot", LOADER_GUID, NV_BS_RT, &hit.sort.id)?;
    ctx.out.line(format!("next boot (once): {}", hit.sort.id));
    ctx.out.json(&Json::obj().with("oneshot", hit.sort.id.as_str()));
    Ok(ExitCode::SUCCESS)
}

fn bless(ctx: &Ctx, entry: Option<&str>) -> Result<ExitCode> {
    let config = cfg(ctx);
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let name = match entry {
        Some(e) => e.to_owned(),
        None => {
            let vars = efivars(ctx)?;
            let p = vars.read_string("LoaderBootCountPath", LOADER_GUID)?;
            match p {
                Some(p) => p.rsplit(['\\', '/']).next().unwrap_or("").to_owned(),
                None => {
                    ctx.out.line(
                        "nothing to bless: the booted entry has no boot counter (LoaderBootCountPath is not set)",
                    );
                    ctx.out.json(&Json::obj().with("blessed", false).with("why", "LoaderBootCountPath is not set"));
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let Some((stem, Some(_))) = bls::split_counter(&name, EntryFile::of(&name).suffix) else {
        ctx.out.line(format!("{name} has no boot counter; nothing to do"));
        ctx.out.json(&Json::obj().with("blessed", false).with("entry", name.as_str()).with("why", "no boot counter"));
        return Ok(ExitCode::SUCCESS);
    };
    let mut t = open_noted(ctx, &config, true)?;
    match bless_in(&mut t, token.as_deref(), &name, stem)? {
        Some(good) => {
            ctx.out.line(format!("blessed: {name} -> {good}"));
            ctx.out.json(&Json::obj().with("blessed", true).with("from", name).with("to", good));
        }
        None => {
            ctx.out
                .line(format!("{} is not lifeboat's UKI; left as it is (its owner blesses it)", join(uki::DIR, &name)));
            ctx.out.json(&Json::obj().with("blessed", false).with("from", name).with("to", Json::Null));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a counted entry file lives: a Type #2 entry (a UKI) is counted in its
/// file name in EFI/Linux as a Type #1 entry is in loader/entries.
struct EntryFile {
    uki: bool,
    dir: &'static str,
    suffix: &'static str,
}

impl EntryFile {
    fn of(name: &str) -> EntryFile {
        if uki::is_candidate(name, false) {
            EntryFile { uki: true, dir: uki::DIR, suffix: ".efi" }
        } else {
            EntryFile { uki: false, dir: "loader/entries", suffix: ".conf" }
        }
    }

    /// The transaction of one of our entries named `name` (counter or not).
    fn transaction(&self, token: &str, name: &str) -> Option<u64> {
        if self.uki {
            uki::parse_name(token, name).map(|(tx, _, _)| tx)
        } else {
            plan::parse_entry_name(token, name).map(|(tx, _, _)| tx)
        }
    }
}

/// Renames an entry file where it is ($BOOT first, then the ESP) and flushes
/// that volume: one rename, so a cut leaves the old name or the new one.
/// Another owner's UKI is never renamed (`Ok(false)`): only one lifeboat made
/// (named by the entry token and booting `lifeboat.tx=` of its name).
fn rename_entry(t: &mut BootTargets, token: Option<&str>, from_name: &str, to_name: &str) -> Result<bool> {
    let kind = EntryFile::of(from_name);
    let from = join(kind.dir, from_name);
    let to = join(kind.dir, to_name);
    let on_boot = t.boot.volume.exists(&from)?;
    let on_esp = match t.esp.as_mut() {
        Some(e) => e.volume.exists(&from)?,
        None => false,
    };
    let vol: &mut dyn Volume = match (on_boot, t.esp.as_mut()) {
        (true, _) => t.boot.volume.as_mut(),
        (false, Some(e)) if on_esp => e.volume.as_mut(),
        _ => return Err(Error::bad_arg("entry", from, "is on neither $BOOT nor the ESP")),
    };
    if kind.uki {
        let ours = match uki::inspect(&vol.read(&from)?) {
            Ok(s) => token.and_then(|t| uki::owned_by_us(t, from_name, s.cmdline.as_deref())),
            Err(_) => None,
        };
        if ours.is_none() {
            return Ok(false);
        }
    }
    vol.rename(&from, &to)?;
    vol.flush()?;
    Ok(true)
}

/// Whether entry file `name` is on $BOOT or the ESP.
fn entry_present(ctx: &Ctx, config: &Config, name: &str) -> Result<bool> {
    let mut t = open_noted(ctx, config, false)?;
    let path = join(EntryFile::of(name).dir, name);
    Ok(t.boot.volume.exists(&path)? || t.esp.as_mut().map(|e| e.volume.exists(&path)).transpose()?.unwrap_or(false))
}

/// Blesses entry `name` (whose name without counter is `stem`): drops its
/// counter and, when it is ours, makes it the default again. Returns the new
/// name, or `None` for another owner's UKI (left as it is).
fn bless_in(t: &mut BootTargets, token: Option<&str>, name: &str, stem: &str) -> Result<Option<String>> {
    let kind = EntryFile::of(name);
    let good = format!("{stem}{}", kind.suffix);
    if !rename_entry(t, token, name, &good)? {
        return Ok(None);
    }
    // A proven entry of ours becomes the default again.
    if let Some((tok, tx)) = token.and_then(|tok| Some((tok, kind.transaction(tok, &good)?))) {
        loaderconf::set_on(esp_vol(t), "default", Some(&plan::default_pattern(tok, tx)))?;
    }
    Ok(Some(good))
}

/// The booted entry's file name: LoaderBootCountPath's (the name after the
/// loader counted this boot), else LoaderEntrySelected (the entry id, which
/// is the file name).
fn booted_entry(ctx: &Ctx) -> Option<String> {
    let vars = match efivars(ctx) {
        Ok(v) => v,
        Err(e) => {
            ctx.out.note(format!("{e}; the booted entry is not known"));
            return None;
        }
    };
    let read = |n: &str| match vars.read_string(n, LOADER_GUID) {
        Ok(v) => v,
        Err(e) => {
            ctx.out.note(format!("{e}"));
            None
        }
    };
    if let Some(p) = read("LoaderBootCountPath") {
        return Some(p.rsplit(['\\', '/']).next().unwrap_or("").to_owned()).filter(|n| !n.is_empty());
    }
    read("LoaderEntrySelected").filter(|n| !n.is_empty())
}

/// `boot assess`: the health checks, then bless or roll back.
///
/// Only an entry still on trial (with a boot counter) is blessed or rolled
/// back: a blessed entry proved itself once, and a failing check there is the
/// machine's trouble, not an update's, so it is recorded only. A failed boot
/// leaves the counter as the loader left it (it counts the next try itself);
/// at `assess-failures` failed boots (the counter's done count, which also
/// counts boots that never got this far), or when the tries ran out, the entry
/// is marked bad (`+0-D`, as `systemd-bless-boot bad` does), the newest older
/// entry of ours that still has tries is made the next boot (one-shot, and the
/// default when it is blessed; else the default stays the loader's own order,
/// which skips exhausted entries) and, with `--reboot`, the machine restarts.
fn assess(ctx: &Ctx, cmd: &AssessCmd) -> Result<ExitCode> {
    use crate::assess::{self as a, Kind, Verdict};
    if cmd.reboot && ctx.root.canonicalize().ok().as_deref() != Some(Path::new("/")) {
        return Err(Error::usage(
            "--reboot",
            format!("restarts this machine: only for the running system (--root /), not --root {}", ctx.root.display()),
        ));
    }
    let config = cfg(ctx);
    let limit = config.assess_failures.unwrap_or(a::DEFAULT_FAILURES);
    let timeout = std::time::Duration::from_secs(config.assess_timeout.unwrap_or(a::DEFAULT_TIMEOUT).into());
    let (checks, notes) = a::find_checks(ctx.root);
    for n in notes {
        ctx.out.note(n);
    }
    let mut results = Vec::new();
    for c in &checks {
        let outcome = a::run_check(ctx.root, c, timeout);
        ctx.out.line(format!("{} check {}: {}", c.kind.as_str(), shown_str(&c.name), outcome.describe()));
        results.push(a::CheckResult { kind: c.kind, name: c.name.clone(), outcome });
    }
    let verdict = if results.iter().any(|r| r.kind == Kind::Required && !r.outcome.passed()) {
        Verdict::Bad
    } else {
        Verdict::Good
    };
    let token = lifeboat_boot::token::entry_token(ctx.root);
    let entry = cmd.entry.clone().or_else(|| booted_entry(ctx));
    let counted = entry
        .as_deref()
        .and_then(|e| bls::split_counter(e, EntryFile::of(e).suffix))
        .and_then(|(stem, c)| Some((stem, c?)));
    let transaction = entry.as_deref().and_then(|e| token.as_deref().and_then(|t| EntryFile::of(e).transaction(t, e)));
    let mut rec = a::Record {
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        entry: entry.clone(),
        transaction,
        verdict,
        failures: None,
        action: "none".into(),
        reason: None,
        fallback: None,
        checks: results,
    };
    let mut rolled_back = false;
    match (verdict, &entry, counted) {
        (_, None, _) => {
            rec.reason = Some("the booted entry is not known (no LoaderBootCountPath or LoaderEntrySelected)".into())
        }
        // A name the user gave must name an entry: silence would read as done.
        (_, Some(name), _) if cmd.entry.is_some() && !entry_present(ctx, &config, name)? => {
            return Err(Error::NoEntry { pattern: name.clone() });
        }
        (_, Some(_), None) => {
            rec.reason =
                Some("the booted entry is not on trial (no boot counter): nothing to bless or roll back".into())
        }
        // Assessed already in this boot (the loader's variable still names
        // the file as it was): nothing to rename twice.
        (_, Some(name), Some(_)) if !entry_present(ctx, &config, name)? => {
            rec.reason = Some(format!(
                "{name} is on neither $BOOT nor the ESP under that name (assessed already in this boot?): nothing done"
            ))
        }
        (Verdict::Good, Some(name), Some((stem, _))) => {
            let mut t = open_noted(ctx, &config, true)?;
            match bless_in(&mut t, token.as_deref(), name, stem)? {
                Some(good) => {
                    ctx.out.line(format!("blessed: {name} -> {good}"));
                    rec.action = "blessed".into();
                }
                None => rec.reason = Some(format!("{name} is not lifeboat's UKI: its owner blesses it")),
            }
        }
        (Verdict::Bad, Some(name), Some((stem, c))) => {
            let failures = c.done.max(1);
            rec.failures = Some(failures);
            if failures < limit && c.left > 0 {
                rec.reason = Some(format!(
                    "failed boot {failures} of {limit}: the loader tries the entry again ({} tries left)",
                    c.left
                ));
            } else {
                match roll_back(ctx, &config, token.as_deref(), name, stem, c.done, transaction)? {
                    Some(fallback) => {
                        rec.action = "rolled-back".into();
                        rec.fallback = Some(fallback);
                        rolled_back = true;
                    }
                    None => {
                        rec.reason =
                            Some("no older entry of lifeboat's with tries left to go back to; the entry stays".into())
                    }
                }
            }
        }
    }
    if let Some(r) = &rec.reason {
        ctx.out.line(format!("{}: {r}", rec.verdict.as_str()));
    }
    if let Err(e) = a::write_record(ctx.root, &rec) {
        ctx.out.note(format!("{e}; the assessment is not recorded"));
    }
    ctx.out.line(format!(
        "boot assessed {}: {}{}",
        rec.verdict.as_str(),
        rec.action,
        rec.fallback.as_deref().map(|f| format!(" to {f}")).unwrap_or_default()
    ));
    ctx.out.json(&assessment_json(&rec));
    if rolled_back && cmd.reboot {
        ctx.out.line("rebooting into it");
        a::reboot()?;
    }
    Ok(if verdict == Verdict::Good { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Marks the failed entry bad and points the next boot at the newest older
/// entry of ours that still has tries; returns that entry, or `None` (and
/// changes nothing) when there is none.
fn roll_back(
    ctx: &Ctx,
    config: &Config,
    token: Option<&str>,
    name: &str,
    stem: &str,
    done: u32,
    booted_tx: Option<u64>,
) -> Result<Option<String>> {
    let (Some(token), Some(booted_tx)) = (token, booted_tx) else {
        return Ok(None);
    };
    let mut t = open_noted(ctx, config, true)?;
    let entries = all_entries(&mut t, Some(token))?;
    let exhausted = |e: &Found| e.sort.counter.is_some_and(|c| c.left == 0);
    let Some(fb) =
        entries.iter().filter(|e| e.ours.is_some_and(|tx| tx < booted_tx) && !exhausted(e)).max_by_key(|e| e.ours)
    else {
        return Ok(None);
    };
    let (fb_file, fb_tx, fb_blessed) = (fb.file.clone(), fb.ours.unwrap_or_default(), fb.sort.counter.is_none());
    // Bad first: should the machine stop right after, the loader already
    // passes the entry over.
    let bad = format!("{stem}+0-{done}{}", EntryFile::of(name).suffix);
    if !rename_entry(&mut t, Some(token), name, &bad)? {
        return Ok(None);
    }
    ctx.out.line(format!("marked bad: {name} -> {bad}"));
    // Never a default that names only an exhausted entry: a blessed fallback
    // by its pattern, else the loader's own order (exhausted entries last).
    let default = if fb_blessed { plan::default_pattern(token, fb_tx) } else { format!("{token}-*") };
    loaderconf::set_on(esp_vol(&mut t), "default", Some(&default))?;
    ctx.out.line(format!("default: {default}"));
    // A default chosen with `set-default` would bring the failed entry back
    // at the next sync: the rollback ends it.
    match SystemRoot::open(ctx.root).map_err(Error::from).and_then(|r| crate::pin::clear(&r)) {
        Ok(true) => ctx.out.note(format!(
            "the default set with `boot set-default` is dropped: it led to {name}, which failed; later syncs \
             choose the default as if none had been set"
        )),
        Ok(false) => {}
        Err(e) => ctx.out.note(format!("{e}; the next sync drops the default set with `boot set-default`")),
    }
    let id = fb_file.to_lowercase();
    match efivars(ctx).and_then(|v| Ok(v.write_string("LoaderEntryOneShot", LOADER_GUID, NV_BS_RT, &id)?)) {
        Ok(()) => ctx.out.line(format!("next boot (once): {id}")),
        Err(e) => ctx.out.note(format!("{e}; the default alone leads the next boot to {fb_file}")),
    }
    Ok(Some(fb_file))
}

/// The record as JSON (`boot assess`, `boot status`).
fn assessment_json(r: &crate::assess::Record) -> Json {
    use crate::assess::Kind;
    let names = |k: Kind| Json::Arr(r.failed(k).map(|c| Json::from(c.name.as_str())).collect());
    Json::obj()
        .with("time", crate::timefmt::rfc3339(r.time))
        .with("entry", r.entry.clone())
        .with("transaction", r.transaction)
        .with("verdict", r.verdict.as_str())
        .with("failures", r.failures)
        .with("action", r.action.as_str())
        .with("reason", r.reason.clone())
        .with("fallback", r.fallback.clone())
        .with("failed_required", names(Kind::Required))
        .with("failed_wanted", names(Kind::Wanted))
        .with(
            "checks",
            Json::Arr(
                r.checks
                    .iter()
                    .map(|c| {
                        Json::obj()
                            .with("kind", c.kind.as_str())
                            .with("name", c.name.as_str())
                            .with("passed", c.outcome.passed())
                            .with("result", c.outcome.describe())
                    })
                    .collect(),
            ),
        )
}

/// `boot status`'s lines on the last boot assessment (a block of its own).
fn assessment_status(ctx: &Ctx, j: &mut Json) {
    use crate::assess::Kind;
    match crate::assess::read_record(ctx.root) {
        Ok(None) => {
            ctx.out.line("assessed: - (no boot assessed yet: `lifeboat boot assess`)");
            j.push("assessment", Json::Null);
        }
        Err(e) => {
            ctx.out.line(format!("assessed: - ({e})"));
            j.push("assessment", Json::Null);
        }
        Ok(Some(r)) => {
            let entry = match (&r.entry, r.transaction) {
                (Some(e), Some(tx)) => format!("{} (transaction {tx})", shown_str(e)),
                (Some(e), None) => shown_str(e).to_string(),
                (None, _) => "(entry not known)".into(),
            };
            let action = match (r.action.as_str(), &r.fallback) {
                ("rolled-back", Some(f)) => format!("rolled back to {}", shown_str(f)),
                (a, _) => a.to_owned(),
            };
            let failures = r.failures.map(|f| format!(", failed boot {f}")).unwrap_or_default();
            ctx.out.line(format!(
                "assessed: {} {entry}: {}{failures}; {action}",
                crate::timefmt::rfc3339(r.time),
                r.verdict.as_str()
            ));
            for kind in [Kind::Required, Kind::Wanted] {
                for c in r.failed(kind) {
                    ctx.out.line(format!("  {} check {}: {}", kind.as_str(), shown_str(&c.name), c.outcome.describe()));
                }
            }
            if let Some(why) = &r.reason {
                ctx.out.line(format!("  {}", controls_escaped(why)));
            }
            j.push("assessment", assessment_json(&r));
        }
    }
}

fn install(
    ctx: &Ctx,
    loader: Option<&Path>,
    allow_downgrade: bool,
    secure_boot_flag: bool,
    enroll: Option<&Path>,
) -> Result<ExitCode> {
    let config = cfg(ctx);
    let keys = secure_boot(ctx, &config, secure_boot_flag)?;
    // The key files are read before anything is written, so a refused key
    // leaves the ESP as it was; so are the enrollment files.
    let enroll = enroll.map(read_enroll_keys).transpose()?;
    // Through the one door for files lifeboat did not make: the tree's loader
    // resolved inside the tree, a named one as named; a regular file either way.
    const LOADER_REL: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
    let (src, file) = match loader {
        Some(p) => (p.to_owned(), lifeboat_fs::foreign::open_named(p)),
        None => (
            ctx.root.join(LOADER_REL),
            lifeboat_fs::open_dir(ctx.root)
                .and_then(|d| lifeboat_fs::foreign::open_file_in_root(d.as_fd(), LOADER_REL.as_bytes())),
        ),
    };
    // A loader is a few hundred KiB; a file far larger is not one.
    let bin = file
        .and_then(|f| lifeboat_fs::foreign::read_capped(f, 64 << 20))
        .map_err(|e| Error::io("read loader", &src, e))?;
    let new_v = sdboot::version(&bin)
        .ok_or_else(|| Error::WrongFile { path: src.clone(), expected: "a systemd-boot binary" })?;
    // Signed with the machine's db key. A loader someone already signed is
    // never signed over: it is refused here, named (installing it as it is,
    // behind shim, is `--shim`'s, which lifeboat does not do yet).
    let unsigned = bin;
    let cert = keys.as_ref().map(crate::uki::cert_der).transpose()?;
    let bin = match &keys {
        Some(k) if crate::uki::is_signed(&unsigned) => {
            return Err(Error::SecureBoot {
                path: src.clone(),
                problem: format!(
                    "is signed already (not by lifeboat); give the unsigned loader with --loader, or install it \
                     yourself behind shim; it is not re-signed over with {}",
                    k.cert.display()
                ),
            })
        }
        Some(k) => crate::uki::sign(&unsigned, k)?,
        None => unsigned.clone(),
    };
    let mut t = open_noted(ctx, &config, true)?;
    let esp = esp_vol(&mut t);
    for r in lifeboat_boot::loaderconf::recover_esp(esp)? {
        ctx.out.note(format!("finished an interrupted replacement: {r}"));
    }
    let mut results = Vec::new();
    for dest in ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"] {
        let found = match esp.read(dest) {
            Ok(b) => Some(sdboot::version(&b)),
            Err(lifeboat_esp::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let action = match &found {
            Some(None) => {
                ctx.out.line(format!("{dest}: another loader is installed there; left alone"));
                "kept-foreign"
            }
            // Signed: up to date when the copy there is this loader with a
            // signature that verifies under this certificate.
            Some(Some(v))
                if v == &new_v
                    && cert.as_ref().is_none_or(|c| {
                        esp.read(dest).is_ok_and(|b| crate::uki::is_signed_copy_of(&b, &unsigned, c))
                    }) =>
            {
                ctx.out.line(format!("{dest}: systemd-boot {v} already installed"));
                "up-to-date"
            }
            Some(Some(v))
                if !allow_downgrade && lifeboat_boot::version::compare(v, &new_v) == std::cmp::Ordering::Greater =>
            {
                ctx.out.line(format!(
                    "{dest}: systemd-boot {v} is newer than {new_v}; left alone (--allow-downgrade replaces it)"
                ));
                "kept-newer"
            }
            _ => {
                let (dir, _) = lifeboat_esp::volume::split(dest);
                esp.create_dir_all(dir)?;
                esp.replace(dest, &mut bin.as_slice())?;
                match &found {
                    Some(Some(v)) => ctx.out.line(format!("{dest}: systemd-boot {v} -> {new_v}")),
                    _ => ctx.out.line(format!("{dest}: installed systemd-boot {new_v}")),
                }
                "installed"
            }
        };
        results.push(
            Json::obj()
                .with("path", dest)
                .with("found", found.map(|f| f.unwrap_or_else(|| "foreign".into())))
                .with("action", action),
        );
    }
    esp.create_dir_all("loader/entries")?;
    if !esp.exists("loader/entries.srel")? {
        esp.replace("loader/entries.srel", &mut &b"type1\n"[..])?;
    }
    if let Some((name, files)) = &enroll {
        let dir = join("loader/keys", name);
        esp.create_dir_all(&dir)?;
        let mut copies: Vec<(String, Box<dyn std::io::Read>)> = files
            .iter()
            .map(|(n, b)| (join(&dir, n), Box::new(std::io::Cursor::new(b.clone())) as Box<dyn std::io::Read>))
            .collect();
        esp.replace_all(&mut copies)?;
        // After the files: a loader.conf that offers enrollment always finds them.
        let lc = match esp.read("loader/loader.conf") {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(lifeboat_esp::Error::NotFound { .. }) => String::new(),
            Err(e) => return Err(e.into()),
        };
        let new = loaderconf::set_key(&lc, "secure-boot-enroll", Some("manual"));
        if new != lc {
            esp.replace("loader/loader.conf", &mut new.as_bytes())?;
        }
        ctx.out.line(format!(
            "{dir}: PK.auth, KEK.auth, db.auth; loader.conf: secure-boot-enroll manual (the menu offers \
             \"Enroll Secure Boot keys: {name}\" while the firmware is in setup mode)"
        ));
    }
    esp.flush()?;
    ctx.out.json(
        &Json::obj()
            .with("version", new_v)
            .with("signed", keys.is_some())
            .with("enroll_keys", enroll.as_ref().map(|(n, _)| n.clone()))
            .with("files", Json::Arr(results)),
    );
    Ok(ExitCode::SUCCESS)
}

/// `PK.auth`, `KEK.auth`, `db.auth` with their bytes.
type EnrollFiles = Vec<(&'static str, Vec<u8>)>;

/// The signed key lists of `--enroll-keys DIR` (`PK.auth`, `KEK.auth`,
/// `db.auth`, as efitools' `sign-efi-sig-list` makes them), read whole, with
/// the name systemd-boot shows them by (the directory's).
fn read_enroll_keys(dir: &Path) -> Result<(String, EnrollFiles)> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .ok_or_else(|| {
            Error::bad_arg(
                "--enroll-keys",
                dir.display().to_string(),
                "a directory named with letters, digits, - _ or .",
            )
        })?;
    let mut files = Vec::new();
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        let p = dir.join(f);
        let b = lifeboat_fs::foreign::open_named(&p)
            .and_then(|h| lifeboat_fs::foreign::read_capped(h, 1 << 20))
            .map_err(|e| Error::io("read", &p, e))?;
        // An authenticated variable starts with an EFI_TIME (16 bytes) and a
        // WIN_CERTIFICATE_UEFI_GUID whose type is 0x0EF1.
        if b.len() < 40 || lifeboat_codec::le_u16_at(&b, 22) != Some(0x0ef1) {
            return Err(Error::WrongFile {
                path: p,
                expected: "a signed EFI signature list (.auth, from sign-efi-sig-list)",
            });
        }
        files.push((f, b));
    }
    Ok((name, files))
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs() {
        assert!(super::glob_match("lb-12-*", "lb-12-6.1.conf"));
        assert!(super::glob_match("LB-12-*", "lb-12-6.1+3-0.conf"));
        assert!(!super::glob_match("lb-12-*", "lb-120-6.1.conf"));
        assert!(super::glob_match("a?c", "abc"));
    }
}
