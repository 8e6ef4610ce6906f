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
use lifeboat_fs::shown::shown_str;

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
    let mut esp_spec = args.esp.clone().or_else(|| cfg.esp.clone());
    let mut boot_spec = args.boot.clone().or_else(|| cfg.boot.clone());
    if esp_spec.is_none() {
        if !is_live(root) {
            return Err(Error::NoEsp {
                root: root.to_path_buf(),
                hint: format!(
                    "pass --esp (a mount point, a partition, or a disk image) or set esp = ... in {}",
                    root.join(crate::config::CONFIG_REL).display()
                ),
            });
        }
        let found = discover::boot_partitions(root, Path::new("/proc/self/mountinfo"), &SysBlock::default())?;
        esp_spec = found.esp;
        boot_spec = boot_spec.or(found.xbootldr);
        if esp_spec.is_none() {
            return Err(Error::NoPartition { kind: "ESP", disk: found.disk.clone() });
        }
    }
    let esp_spec = esp_spec.unwrap_or_default();
    let esp = open_target(&esp_spec, PartitionKind::Esp, writable)?;
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

/// Reads a file of a transaction: from the store by hash (always there for a
/// retained transaction), else from the tree.
fn content(root: &SystemRoot, layout: &Layout, rel: &[u8]) -> Option<(Hash128, u64, PathBuf)> {
    let e = layout.find(rel)?;
    let EntryData::File { hash, size } = e.data else {
        return None;
    };
    let store = root.path.join(lifeboat_state::store::STORE_REL).join(hash.store_path());
    if size == 0 {
        return Some((hash, 0, PathBuf::new()));
    }
    Some((hash, size, store))
}

/// Small text files (cmdline fragments, os-release) are read up to this size.
const SMALL_MAX: usize = 64 * 1024;

fn read_small(p: &Path) -> String {
    use std::io::Read;
    let mut b = Vec::new();
    let _ = std::fs::File::open(p).and_then(|f| f.take(SMALL_MAX as u64).read_to_end(&mut b));
    String::from_utf8_lossy(&b).into_owned()
}

/// A small file at `rel` below the root, never through a symlink.
fn read_in_root(root: &SystemRoot, rel: &str) -> String {
    lifeboat_fs::read_small_at(root.fd(), rel.as_bytes(), SMALL_MAX)
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
    pub rescue_initrd: Option<Blob>,
    pub root_arg: Option<String>,
    pub local_cmdline: String,
}

pub fn common(root: &Path, cfg: &Config, initrd: Option<&Path>) -> Result<Common> {
    let token = token::entry_token(root).ok_or_else(|| Error::NoEntryToken(root.to_path_buf()))?;
    let machine_id = token::machine_id(root);
    let initrd_path = initrd.map(Path::to_path_buf).or_else(|| {
        cfg.initrd.as_ref().map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() && !is_live(root) {
                root.join(p.strip_prefix("/").unwrap_or(&p))
            } else {
                p
            }
        })
    });
    let rescue_initrd = match initrd_path {
        Some(p) => {
            let bytes = std::fs::read(&p).map_err(|e| Error::io("read rescue initrd", &p, e))?;
            Some(Blob { hash: Hash128::of(&bytes).to_string(), len: bytes.len() as u64, source: Source::Path(p) })
        }
        None => None,
    };
    let mut local = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("etc/kernel/cmdline.d")) {
        let mut files: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cmdline")).collect();
        files.sort();
        local.extend(files.iter().map(|p| read_small(p)));
    }
    let local_cmdline = join_cmdline(local.iter().map(String::as_str));
    // On the running system, the root partition is known; elsewhere only cmdline
    // files may name it, and PID 1 finds the DPS root otherwise.
    let root_arg = if is_live(root) {
        discover::boot_partitions(root, Path::new("/proc/self/mountinfo"), &SysBlock::default())
            .ok()
            .and_then(|b| b.root_partuuid)
            .map(|u| format!("root=PARTUUID={u}"))
    } else {
        None
    };
    Ok(Common { token, machine_id, rescue_initrd, root_arg, local_cmdline })
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
    let active = root.active_id();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    for t in idx.transactions() {
        let Some(layout) = idx.layout(t.id) else {
            skipped.push((t.id, "layout unreadable".into()));
            continue;
        };
        let mut kvers = layout.kernels();
        // A version directory named with a control character or `/` would write
        // lines of its own into the entry: such a kernel is not booted.
        kvers.retain(|k| {
            let ok = lifeboat_boot::plan::kver_ok(k);
            if !ok {
                notes.push(format!(
                    "transaction {}: lib/kernel/{}/vmlinuz left out: a kernel version with a control character cannot name a boot entry",
                    t.id,
                    shown_str(k)
                ));
            }
            ok
        });
        kvers.sort_by(|a, b| version::compare(b, a));
        let Some(kver) = kvers.first().cloned() else {
            skipped.push((t.id, "carries no kernel lifeboat can boot (lib/kernel/<version>/vmlinuz)".into()));
            continue;
        };
        let kdir = format!("lib/kernel/{kver}");
        let blob = |rel: &[u8]| {
            content(root, &layout, rel).map(|(h, len, p)| Blob { hash: h.to_string(), len, source: Source::Path(p) })
        };
        let Some(linux) = blob(format!("{kdir}/vmlinuz").as_bytes()) else {
            continue;
        };
        if let Source::Path(p) = &linux.source {
            if !p.exists() {
                skipped.push((t.id, format!("kernel {kver}: {} is missing from the store", p.display())));
                continue;
            }
        }
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
            let name = String::from_utf8_lossy(name).into_owned();
            if let Some(stem) = name.strip_suffix(".initrd") {
                if let Some(b) = blob(&e.path) {
                    initrds.push((stem.to_owned(), b));
                }
            } else if name.ends_with(".cmdline") {
                if let Some((_, _, p)) = content(root, &layout, &e.path) {
                    cmdlines.push(read_small(&p));
                }
            }
        }
        let mut tree_cmd = Vec::new();
        for e in layout.entries() {
            if let Some(n) = e.path.strip_prefix(b"lib/kernel/cmdline.d/".as_slice()) {
                if n.ends_with(b".cmdline") && !n.contains(&b'/') {
                    if let Some((_, _, p)) = content(root, &layout, &e.path) {
                        tree_cmd.push(read_small(&p));
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
        if !options.split_whitespace().any(|w| w.starts_with("root=")) {
            if let Some(r) = &common.root_arg {
                options = format!("{r} {options}");
            }
        }
        // On a moss root the entry also names the state as moss's own initrd
        // (moss-fstx.service) reads it, so either initrd rolls back.
        let tx_opts = if root.is_moss() {
            format!("lifeboat.tx={} moss.fstx={}", t.id, t.id)
        } else {
            format!("lifeboat.tx={}", t.id)
        };
        options = join_cmdline([options.as_str(), &tx_opts]);
        let os_text = match content(root, &layout, b"lib/os-release") {
            Some((_, _, p)) => Some(read_small(&p)),
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
        out.push(WantedEntry {
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
            rescue_initrd: common.rescue_initrd.clone(),
            options,
        });
    }
    (out, Findings { skipped, notes })
}

/// Builds the request for `boot sync`.
pub fn request(
    root: &SystemRoot,
    idx: &StateIndex,
    cfg: &Config,
    keep: Option<usize>,
    tries: Option<u32>,
    timeout: Option<u32>,
    initrd: Option<&Path>,
) -> Result<(SyncRequest, Findings)> {
    let common = common(&root.path, cfg, initrd)?;
    let (entries, found) = wanted(root, idx, &common);
    Ok((
        SyncRequest {
            token: common.token,
            entries,
            keep: keep.or(cfg.keep).unwrap_or(5),
            tries: tries.or(cfg.tries),
            timeout: timeout.or(cfg.timeout),
            protected: found.skipped.iter().map(|(id, _)| *id).collect(),
        },
        found,
    ))
}

/// Points `loader.conf`'s `default` at transaction `tx`'s entry on the boot disk of
/// `root_dev` (PID 1, after a rollback chosen in the boot menu). Returns the
/// pattern written, or `None` when the disk has no entry for `tx`.
pub fn set_default_for_disk(root: &Path, root_dev: &Path, tx: u64) -> Result<Option<String>> {
    let disk = lifeboat_esp::blockdev::SysBlock::default()
        .disk_of_dev(root_dev)
        .ok_or_else(|| Error::NoDisk(root_dev.to_path_buf()))?;
    let args = BootArgs { esp: Some(disk.display().to_string()), boot: None, efivars: None };
    let mut t = open_targets(root, &args, &Config::default(), true)?;
    let tok = token::entry_token(root).ok_or_else(|| Error::NoEntryToken(root.to_path_buf()))?;
    let ours = lifeboat_boot::plan::our_entries(t.boot.volume.as_mut(), &tok)?;
    if !ours.iter().any(|e| e.tx == tx) {
        return Ok(None);
    }
    let pattern = lifeboat_boot::plan::default_pattern(&tok, tx);
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
