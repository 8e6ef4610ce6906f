//! The bridge from transactions to boot entries: opens `$BOOT` and the ESP (from
//! the command line, the config file, or discovery on a live system), and describes
//! each transaction's wanted entry — kernel, initrds and options — from its layout,
//! reading file content from the store by hash so that even a transaction whose
//! tree is gone gets its entry.

use std::path::{Path, PathBuf};

use lifeboat_boot::plan::{Blob, Source, SyncRequest, WantedEntry};
use lifeboat_boot::{token, version};
use lifeboat_esp::discover::{self, SysBlock};
use lifeboat_esp::{open_target, PartitionKind, Target};
use lifeboat_fs::foreign;
use lifeboat_fs::shown::{shown, shown_path, shown_str};
use std::os::fd::AsFd;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::timefmt;
use lifeboat_state::hash::Hash128;
use lifeboat_state::index::StateIndex;
use lifeboat_state::layout::{EntryData, Layout};
use lifeboat_state::root::SystemRoot;

/// The opened boot volumes: `$BOOT`, and the ESP when it is a different partition.
pub struct BootTargets {
    pub boot: Target,
    pub esp: Option<Target>,
}

/// Where boot volumes come from.
#[derive(Clone, Debug, Default)]
pub struct BootArgs {
    pub esp: Option<String>,
    pub boot: Option<String>,
    pub efivars: Option<PathBuf>,
}

fn is_live(root: &Path) -> bool {
    root == Path::new("/")
}

/// Opens the boot volumes for `root`.
pub fn open_targets(root: &Path, args: &BootArgs, cfg: &Config, writable: bool) -> Result<BootTargets> {
    open_targets_on(root, args, cfg, writable, is_live(root).then(Live::default).as_ref())
}

/// [`open_targets`] for `root`, which is the running system seen through
/// `live` when that is given (its boot partitions are then found when neither
/// the arguments nor the configuration name them).
pub fn open_targets_on(
    root: &Path,
    args: &BootArgs,
    cfg: &Config,
    writable: bool,
    live: Option<&Live>,
) -> Result<BootTargets> {
    let mut found_notes = Vec::new();
    let mut esp_spec = args.esp.clone().or_else(|| cfg.esp.clone());
    let mut boot_spec = args.boot.clone().or_else(|| cfg.boot.clone());
    if esp_spec.is_none() {
        let Some(live) = live else {
            return Err(Error::NoEsp {
                root: root.to_path_buf(),
                hint: format!(
                    "pass --esp (a mount point, a partition, or a disk image) or set esp = ... in {}",
                    root.join(crate::config::CONFIG_REL).display()
                ),
            });
        };
        let found = discover::boot_partitions(root, &live.mountinfo, &live.sys)?;
        esp_spec = found.esp;
        boot_spec = boot_spec.or(found.xbootldr);
        if esp_spec.is_none() {
            return Err(Error::NoPartition { kind: "ESP", disk: found.disk.clone() });
        }
        // Which disk was taken, when the root sits on several.
        found_notes = found.notes;
    }
    let esp_spec = esp_spec.unwrap_or_default();
    let mut esp = open_target(&esp_spec, PartitionKind::Esp, writable)?;
    esp.notes.extend(found_notes);
    // On a whole disk given as the ESP, its XBOOTLDR is $BOOT.
    if boot_spec.is_none() {
        if let Some(d) = &esp.disk {
            let (_, part) = lifeboat_esp::target::split_spec(&esp_spec);
            if part.is_none() {
                let disk = lifeboat_esp::Disk::open(d, false)?;
                if disk.find(PartitionKind::Xbootldr).is_some() {
                    boot_spec = Some(format!("{}:xbootldr", d.display()));
                }
            }
        }
    }
    match boot_spec {
        Some(b) => {
            let boot = open_target(&b, PartitionKind::Xbootldr, writable)?;
            Ok(BootTargets { boot, esp: Some(esp) })
        }
        None => Ok(BootTargets { boot: esp, esp: None }),
    }
}

/// A file of a transaction, as its layout records it.
enum Content {
    /// Recorded empty: there is no blob (the store never holds empty files).
    Empty,
    /// Its blob in the store, always there for a retained transaction.
    Blob { hash: Hash128, size: u64, path: PathBuf },
}

fn content(root: &SystemRoot, layout: &Layout, rel: &[u8]) -> Option<Content> {
    let e = layout.find(rel)?;
    let EntryData::File { hash, size } = e.data else {
        return None;
    };
    if size == 0 {
        return Some(Content::Empty);
    }
    let path = root.path.join(lifeboat_state::store::STORE_REL).join(hash.store_path());
    Some(Content::Blob { hash, size, path })
}

/// Small text files (cmdline fragments, os-release) are read up to this size.
const SMALL_MAX: u64 = 64 * 1024;

/// Why a file cannot be used, naming it: missing from the store, or not a
/// regular file there (a FIFO would block the read forever).
fn unusable(what: &str, path: &Path, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("{what}: {} is missing from the store", shown_path(path))
    } else {
        format!("{what}: {}: {e}", shown_path(path))
    }
}

/// A store blob that will be copied to `$BOOT`, checked now that it can be
/// opened as a regular file (the copy opens it again through the same door).
fn boot_blob(what: &str, hash: Hash128, size: u64, path: PathBuf) -> std::result::Result<Blob, String> {
    foreign::open_file(&path).map_err(|e| unusable(what, &path, e))?;
    // Copied only if its bytes are still the ones the store names it by.
    Ok(Blob { hash: hash.to_string(), len: size, source: Source::Checked(path, hash.0) })
}

/// The text of a small file of a transaction (a cmdline fragment).
fn text(what: &str, c: Content) -> std::result::Result<String, String> {
    match c {
        Content::Empty => Ok(String::new()),
        Content::Blob { path, .. } => foreign::read_file(&path, SMALL_MAX)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| unusable(what, &path, e)),
    }
}

/// A small file at `rel` below the root, never through a symlink; empty when
/// it cannot be read.
fn read_in_root(root: &SystemRoot, rel: &str) -> String {
    foreign::open_file_beneath(root.fd(), rel.as_bytes())
        .and_then(|f| foreign::read_capped(f, SMALL_MAX))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Joins cmdline fragments: comments dropped, whitespace collapsed.
pub fn join_cmdline<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut words = Vec::new();
    for p in parts {
        for line in p.lines() {
            let l = line.trim();
            if l.starts_with('#') {
                continue;
            }
            words.extend(l.split_whitespace().map(str::to_owned));
        }
    }
    words.join(" ")
}

/// Options of every entry that lifeboat itself does not derive from the tree.
pub struct Common {
    pub token: String,
    pub machine_id: Option<String>,
    /// The root parameters of the running system (`root=PARTUUID=…`, or for a
    /// stacked root `root=UUID=… rd.luks.uuid=… rd.lvm.lv=VG/LV`), one word
    /// each; those the cmdline files already give are left out per entry.
    pub root_params: Vec<String>,
    pub local_cmdline: String,
    /// What the user should hear about the root parameters.
    pub notes: Vec<String>,
}

/// Where a running system's mounts and block devices are read:
/// `/proc/self/mountinfo`, `/sys` and `/dev`, or fake trees in tests.
pub struct Live {
    pub mountinfo: PathBuf,
    pub sys: SysBlock,
}

impl Default for Live {
    fn default() -> Self {
        Live { mountinfo: PathBuf::from("/proc/self/mountinfo"), sys: SysBlock::default() }
    }
}

/// The machine's own cmdline fragments, `etc/kernel/cmdline.d/*.cmdline` of
/// `root`, in name order. One that cannot be read (not a regular file, too
/// large) fails the sync, named: every entry's options would be wrong without it.
fn local_cmdline(root: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join("etc/kernel/cmdline.d");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io("list", &dir, e))?;
        let n = e.file_name().as_bytes().to_vec();
        if n.ends_with(b".cmdline") && !n.starts_with(b".") {
            names.push(n);
        }
    }
    names.sort();
    let rootfd = lifeboat_fs::open_dir(root).map_err(|e| Error::io("open", root, e))?;
    let mut parts = Vec::new();
    for n in names {
        let mut rel = b"etc/kernel/cmdline.d/".to_vec();
        rel.extend_from_slice(&n);
        let at = root.join(lifeboat_fs::os(&rel));
        let f = foreign::open_file_in_root(rootfd.as_fd(), &rel).map_err(|e| Error::io("read", &at, e))?;
        let b = foreign::read_capped(f, SMALL_MAX).map_err(|e| Error::io("read", &at, e))?;
        parts.push(String::from_utf8_lossy(&b).into_owned());
    }
    Ok(join_cmdline(parts.iter().map(String::as_str)))
}

pub fn common(root: &Path) -> Result<Common> {
    common_on(root, is_live(root).then(Live::default).as_ref())
}

/// [`common`] for `root`, which is the running system seen through `live` when
/// that is given.
pub fn common_on(root: &Path, live: Option<&Live>) -> Result<Common> {
    let token = token::entry_token(root).ok_or_else(|| Error::NoEntryToken(root.to_path_buf()))?;
    let machine_id = token::machine_id(root);
    let local_cmdline = local_cmdline(root)?;
    // On the running system, the root's devices are known; elsewhere only cmdline
    // files may name it, and PID 1 finds the DPS root otherwise.
    let mut notes = Vec::new();
    let mut root_params = Vec::new();
    if let Some(live) = live {
        match discover::root_device(root, &live.mountinfo, &live.sys) {
            Ok(found) => {
                let r = crate::rootparams::root_params(&found);
                notes.extend(found.notes);
                notes.extend(r.notes);
                root_params = r.params;
            }
            Err(e) => notes.push(format!(
                "the root's block device cannot be told ({e}); no root= is written unless the cmdline files give \
                 one"
            )),
        }
    }
    Ok(Common { token, machine_id, root_params, local_cmdline, notes })
}

/// What [`wanted`] found besides the entries: the transactions that get none
/// (by id, with the reason), and what the user should hear.
#[derive(Debug, Default)]
pub struct Findings {
    pub skipped: Vec<(u64, String)>,
    pub notes: Vec<String>,
}

/// The wanted entry of every transaction that has a kernel; transactions without
/// one are returned by id with the reason.
pub fn wanted(root: &SystemRoot, idx: &StateIndex, common: &Common) -> (Vec<WantedEntry>, Findings) {
    let mut out = Vec::new();
    let mut found = Findings::default();
    for t in idx.transactions() {
        let Some(layout) = idx.layout(t.id) else {
            found.skipped.push((t.id, "layout unreadable".into()));
            continue;
        };
        let mut kvers = layout.kernels();
        // A version directory named with a control character or `/` would write
        // lines of its own into the entry, and one FAT cannot name would stop
        // every sync: such a kernel is not booted, and said so.
        kvers.retain(|k| match lifeboat_boot::plan::kver_problem(k) {
            None => true,
            Some(why) => {
                found.notes.push(format!(
                    "transaction {}: lib/kernel/{}/vmlinuz left out: its version cannot name a boot entry ({why})",
                    t.id,
                    shown_str(k)
                ));
                false
            }
        });
        kvers.sort_by(|a, b| version::compare(b, a));
        let Some(kver) = kvers.first().cloned() else {
            found.skipped.push((t.id, "carries no kernel lifeboat can boot (lib/kernel/<version>/vmlinuz)".into()));
            continue;
        };
        match entry_of(root, t, &layout, kver, common, &mut found.notes) {
            Ok(w) => out.push(w),
            Err(why) => found.skipped.push((t.id, why)),
        }
    }
    (out, found)
}

/// The wanted entry of transaction `t`, booting kernel `kver`; why not, when a
/// file it needs cannot be had (the transaction is then left as it is on
/// `$BOOT`: an entry without one of its initrds or cmdline fragments could
/// boot wrong).
fn entry_of(
    root: &SystemRoot,
    t: &lifeboat_state::index::TxMeta,
    layout: &Layout,
    kver: String,
    common: &Common,
    notes: &mut Vec<String>,
) -> std::result::Result<WantedEntry, String> {
    let active = root.active_id();
    let kdir = format!("lib/kernel/{kver}");
    let shown_kdir = shown_str(&kdir);
    let linux = match content(root, layout, format!("{kdir}/vmlinuz").as_bytes()) {
        Some(Content::Blob { hash, size, path }) => {
            boot_blob(&format!("kernel {}", shown_str(&kver)), hash, size, path)?
        }
        Some(Content::Empty) => return Err(format!("kernel {shown_kdir}/vmlinuz is empty")),
        None => return Err(format!("kernel {shown_kdir}/vmlinuz is not a file")),
    };
    let mut initrds = Vec::new();
    let mut cmdlines = Vec::new();
    let kprefix = format!("{kdir}/");
    for e in layout.entries() {
        let Some(name) = e.path.strip_prefix(kprefix.as_bytes()) else {
            continue;
        };
        if name.contains(&b'/') {
            continue;
        }
        let shown_file = format!("{shown_kdir}/{}", shown(name));
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(stem) = name.strip_suffix(".initrd") {
            match content(root, layout, &e.path) {
                Some(Content::Blob { hash, size, path }) => {
                    initrds.push((stem.to_owned(), boot_blob(&format!("initrd {shown_file}"), hash, size, path)?))
                }
                // An empty initrd adds nothing to what the kernel unpacks; a
                // file of no bytes on $BOOT would only be something to go wrong.
                Some(Content::Empty) => {
                    notes.push(format!("transaction {}: initrd {shown_file} is empty; its entry goes without it", t.id))
                }
                None => {}
            }
        } else if name.ends_with(".cmdline") {
            if let Some(c) = content(root, layout, &e.path) {
                cmdlines.push(text(&format!("cmdline {shown_file}"), c)?);
            }
        }
    }
    let mut tree_cmd = Vec::new();
    for e in layout.entries() {
        if let Some(n) = e.path.strip_prefix(b"lib/kernel/cmdline.d/".as_slice()) {
            if n.ends_with(b".cmdline") && !n.contains(&b'/') {
                if let Some(c) = content(root, layout, &e.path) {
                    tree_cmd.push(text(&format!("cmdline lib/kernel/cmdline.d/{}", shown(n)), c)?);
                }
            }
        }
    }
    let mut options = join_cmdline(
        tree_cmd
            .iter()
            .chain(cmdlines.iter())
            .map(String::as_str)
            .chain(std::iter::once(common.local_cmdline.as_str())),
    );
    let root_params = crate::rootparams::missing(&common.root_params, &options);
    if !root_params.is_empty() {
        options = join_cmdline([root_params.join(" ").as_str(), &options]);
    }
    // On a moss root the entry also names the state as moss's own initrd
    // (moss-fstx.service) reads it, so either initrd rolls back.
    let tx_opts = if root.is_moss() {
        format!("lifeboat.tx={} moss.fstx={}", t.id, t.id)
    } else {
        format!("lifeboat.tx={}", t.id)
    };
    options = join_cmdline([options.as_str(), &tx_opts]);
    // The title only: an os-release that cannot be read gives a plain one.
    let os_text = match content(root, layout, b"lib/os-release") {
        Some(c) => text("os-release", c).ok(),
        // moss writes each tree's os-release itself; no layout lists it.
        None if root.is_moss() => {
            let tree = if active == Some(t.id) { "usr".to_owned() } else { format!(".moss/root/{}/usr", t.id) };
            Some(read_in_root(root, &format!("{tree}/lib/os-release")))
        }
        None => None,
    };
    let os = os_text.map(|t| token::parse_os_release(&t)).unwrap_or_default();
    let name = token::field(&os, "PRETTY_NAME").or_else(|| token::field(&os, "NAME")).unwrap_or("Linux");
    let sort_key = token::field(&os, "IMAGE_ID").or_else(|| token::field(&os, "ID")).unwrap_or("lifeboat");
    Ok(WantedEntry {
        tx: t.id,
        active: active == Some(t.id),
        title: if root.is_moss() && !t.summary.is_empty() {
            format!("{name}, state {}: {} ({})", t.id, t.summary, timefmt::utc_minutes(t.created))
        } else if root.is_moss() {
            format!("{name}, state {} ({})", t.id, timefmt::utc_minutes(t.created))
        } else {
            format!("{name}, transaction {} ({})", t.id, timefmt::utc_minutes(t.created))
        },
        version: format!("{}-{kver}", t.id),
        sort_key: sort_key.to_owned(),
        machine_id: common.machine_id.clone(),
        kver,
        linux,
        initrds,
        // Set by the caller: which rescue initrd the entries carry is decided
        // against what $BOOT holds (see `rescue`).
        rescue_initrd: None,
        options,
        // Set by the caller when Secure Boot is chosen (see `crate::uki`).
        uki: None,
    })
}

/// Builds the request for `boot sync`.
pub fn request(
    root: &SystemRoot,
    idx: &StateIndex,
    cfg: &Config,
    keep: Option<usize>,
    tries: Option<u32>,
    timeout: Option<u32>,
) -> Result<(SyncRequest, Findings)> {
    let common = common(&root.path)?;
    let (entries, mut found) = wanted(root, idx, &common);
    found.notes.splice(0..0, common.notes);
    Ok((
        SyncRequest {
            token: common.token,
            entries,
            keep: keep.unwrap_or(crate::config::Defaults::of(cfg).keep),
            tries: tries.or(crate::config::Defaults::of(cfg).tries),
            timeout: timeout.or(crate::config::Defaults::of(cfg).timeout),
            protected: found.skipped.iter().map(|(id, _)| *id).collect(),
            pinned_default: None,
        },
        found,
    ))
}

/// Points `loader.conf`'s `default` at transaction `tx`'s entry on the boot disk of
/// `root_dev` (PID 1, after a rollback chosen in the boot menu). Returns the
/// pattern written, or `None` when the disk has no entry for `tx`.
///
/// An entry still on trial (a boot counter) is not named: the loader boots
/// what the default names even after its tries ran out, so a default naming
/// it would keep booting it should it fail. Then the default is the loader's
/// own order (`<token>-*`, exhausted entries last), as `boot sync` writes it;
/// the entry becomes the default when it is blessed (`boot assess`, `boot bless`).
pub fn set_default_for_disk(root: &Path, root_dev: &Path, tx: u64) -> Result<Option<String>> {
    let disk = lifeboat_esp::blockdev::SysBlock::default()
        .disk_of_dev(root_dev)
        .ok_or_else(|| Error::NoDisk(root_dev.to_path_buf()))?;
    let args = BootArgs { esp: Some(disk.display().to_string()), boot: None, efivars: None };
    let mut t = open_targets(root, &args, &Config::default(), true)?;
    let tok = token::entry_token(root).ok_or_else(|| Error::NoEntryToken(root.to_path_buf()))?;
    let ours = lifeboat_boot::plan::our_entries(t.boot.volume.as_mut(), &tok)?;
    let mine: Vec<_> = ours.iter().filter(|e| e.tx == tx).collect();
    if mine.is_empty() {
        return Ok(None);
    }
    let pattern = if mine.iter().any(|e| e.counter.is_none()) {
        lifeboat_boot::plan::default_pattern(&tok, tx)
    } else {
        format!("{tok}-*")
    };
    let esp: &mut dyn lifeboat_esp::Volume = match t.esp.as_mut() {
        Some(e) => e.volume.as_mut(),
        None => t.boot.volume.as_mut(),
    };
    lifeboat_boot::loaderconf::set_on(esp, "default", Some(&pattern))?;
    Ok(Some(pattern))
}

/// On a moss root, entries moss's own boot sync (blsforme) wrote
/// (`$BOOT/loader/entries/<os-id>-<kver>-<state>.conf` with `moss.fstx=<state>`)
/// already boot their state: lifeboat adopts them — it adds no second entry for
/// that state and never changes or removes moss's — so the menu shows each state
/// once. Returns the states so covered, with moss's entry file.
pub fn adopt_moss_entries(req: &mut SyncRequest, boot: &mut dyn lifeboat_esp::Volume) -> Result<Vec<(u64, String)>> {
    let list = match boot.list("loader/entries") {
        Ok(l) => l,
        Err(lifeboat_esp::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut covered = Vec::new();
    for f in list.into_iter().filter(|f| !f.is_dir && f.name.ends_with(".conf")) {
        let bytes = boot.read(&lifeboat_esp::volume::join("loader/entries", &f.name))?;
        let entry = lifeboat_boot::bls::Entry::parse(&String::from_utf8_lossy(&bytes));
        if lifeboat_boot::plan::owned_by_us(&req.token, &f.name, &entry).is_some() {
            continue;
        }
        let state = entry
            .options()
            .split_whitespace()
            .find_map(|o| o.strip_prefix("moss.fstx=").and_then(|v| v.parse::<u64>().ok()));
        if let Some(id) = state {
            if req.entries.iter().any(|w| w.tx == id) && !covered.iter().any(|(c, _)| *c == id) {
                covered.push((id, f.name.clone()));
            }
        }
    }
    req.entries.retain(|w| !covered.iter().any(|(c, _)| *c == w.tx));
    Ok(covered)
}

/// A file of transaction `tx`'s `/usr` (`rel` below it), read from the
/// store by the hash its layout records: `Ok(None)` when the layout has no
/// such regular file; why not, when its blob cannot be read.
pub fn tx_file(
    root: &SystemRoot,
    idx: &StateIndex,
    tx: u64,
    rel: &str,
    max: u64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let layout = idx.layout(tx).ok_or_else(|| format!("transaction {tx}: layout unreadable"))?;
    match content(root, &layout, rel.as_bytes()) {
        None => Ok(None),
        Some(Content::Empty) => Ok(Some(Vec::new())),
        Some(Content::Blob { hash, path, .. }) => {
            let bytes = foreign::open_file(&path)
                .and_then(|f| foreign::read_capped(f, max))
                .map_err(|e| unusable(&format!("transaction {tx}: usr/{}", shown_str(rel)), &path, e))?;
            if Hash128(xxhash_rust::xxh3::xxh3_128(&bytes)) != hash {
                return Err(format!(
                    "transaction {tx}: usr/{}: its blob {} does not hold the content it is named by",
                    shown_str(rel),
                    shown_path(&path)
                ));
            }
            Ok(Some(bytes))
        }
    }
}
