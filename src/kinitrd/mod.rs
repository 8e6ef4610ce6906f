//! The rescue initrd of each boot entry, built for the entry's kernel from the
//! entry's own transaction: its `usr/lib/modules/<kver>` (the generic module set,
//! or host-only), its `usr/lib/firmware`, and the rescue build of lifeboat at
//! `usr/lib/lifeboat/lifeboat-rescue` of the newest retained transaction that
//! has one — the newest, so that an older kernel's entry still carries a
//! rescue binary that reads the index the running system writes now. A kernel
//! whose transaction has no module directory (every driver built in) gets an
//! initrd without modules.
//!
//! Every initrd is named by its content on `$BOOT`
//! (`<token>/<kver>/lifeboat-<h>.initrd`), so entries whose inputs are the
//! same share one file, and is built only when its inputs changed: their key
//! ([`key`]) is computed from the state index, and [`cache`] says which file a
//! key made; when that file is on `$BOOT`, nothing is built (its bytes are
//! made again only if the sync finds the copy damaged).

pub mod cache;
pub mod host;
pub mod key;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_boot::plan::{self, Blob, Make, Source, WantedEntry};
use lifeboat_esp::Volume;
use lifeboat_initrd::files::Files;
use lifeboat_initrd::modules::HostDevices;
use lifeboat_initrd::{BuildSpec, Built, Compression, ModuleSpec};
use lifeboat_state::hash::Hash128;
use lifeboat_state::index::StateIndex;
use lifeboat_state::layout::{EntryData, Layout};
use lifeboat_state::root::SystemRoot;
use lifeboat_state::store::STORE_REL;

use crate::config::ModuleSet;
use crate::error::{Error, Result};
use cache::{Cache, Made};
use tree::{read_blob, resolve, TreeFiles};

/// Where a transaction carries the rescue build of lifeboat, below `/usr`.
pub const RESCUE_BIN: &str = "lib/lifeboat/lifeboat-rescue";

/// The rescue binary every initrd of a sync carries.
#[derive(Clone, Copy, Debug)]
struct RescueBin {
    tx: u64,
    hash: Hash128,
    size: u64,
}

/// Transactions' layouts, each materialised once.
struct Layouts<'a> {
    idx: &'a StateIndex,
    got: BTreeMap<u64, Option<Arc<Layout>>>,
}

impl Layouts<'_> {
    fn get(&mut self, id: u64) -> Option<Arc<Layout>> {
        self.got.entry(id).or_insert_with(|| self.idx.layout(id).map(Arc::new)).clone()
    }
}

/// Where transaction `id`'s `/usr` is on disk (for messages).
fn tree_path(root: &SystemRoot, id: u64) -> PathBuf {
    if root.active_id() == Some(id) {
        root.path.join("usr")
    } else {
        root.path.join(format!(".moss/root/{id}/usr"))
    }
}

/// The rescue binary of the newest retained transaction that carries one,
/// with a note when that is not the newest transaction.
fn find_rescue_bin(layouts: &mut Layouts, notes: &mut Vec<String>) -> Option<RescueBin> {
    let mut ids: Vec<u64> = layouts.idx.transactions().map(|t| t.id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let newest = ids.first().copied();
    for id in ids {
        let Some(l) = layouts.get(id) else { continue };
        if let Some((_, e)) = resolve(&l, RESCUE_BIN.as_bytes()) {
            if let EntryData::File { hash, size } = e.data {
                if size > 0 {
                    if Some(id) != newest {
                        notes.push(format!(
                            "the newest transaction carries no usr/{RESCUE_BIN}: the rescue initrds carry transaction {id}'s"
                        ));
                    }
                    return Some(RescueBin { tx: id, hash, size });
                }
            }
        }
    }
    None
}

/// One rescue initrd to build: everything [`Builder::build`] reads.
struct Builder {
    kver: String,
    layout: Arc<Layout>,
    store: PathBuf,
    shown_tree: PathBuf,
    /// The module directory, resolved, relative to `/usr`.
    modules: Option<String>,
    firmware: Option<String>,
    config: Option<(Hash128, u64)>,
    binary: RescueBin,
    binary_shown: PathBuf,
    host: Option<HostDevices>,
    /// The machine's console keymap, as the archive appended to the initrd.
    keymap: Option<Arc<Vec<u8>>>,
}

impl Builder {
    fn files(&self, base: &str) -> Arc<dyn Files + Send + Sync> {
        Arc::new(TreeFiles {
            layout: self.layout.clone(),
            base: base.to_owned(),
            store: self.store.clone(),
            shown_tree: self.shown_tree.clone(),
        })
    }

    fn build(&self) -> Result<Built> {
        let b = self.binary;
        let binary = read_blob(&self.store, b.hash, b.size, lifeboat_initrd::MAX_FILE)
            .map_err(|e| Error::io("read", &self.binary_shown, e))?;
        let modules = match &self.modules {
            None => None,
            Some(dir) => {
                let kernel_config = match self.config {
                    Some((hash, size)) => Some(
                        read_blob(&self.store, hash, size, 16 << 20)
                            .map(|c| String::from_utf8_lossy(&c).into_owned())
                            .map_err(|e| Error::io("read", self.shown_tree.join("kernel configuration"), e))?,
                    ),
                    None => None,
                };
                Some(ModuleSpec {
                    kver: self.kver.clone(),
                    dir: self.files(dir),
                    host: self.host.clone(),
                    named: Vec::new(),
                    firmware: self.firmware.as_deref().map(|f| self.files(f)),
                    kernel_config,
                })
            }
        };
        let mut built = lifeboat_initrd::build(&BuildSpec {
            binary: binary.into(),
            modules,
            compression: Compression::Zstd(None),
        })?;
        if let Some(seg) = &self.keymap {
            built.bytes = lifeboat_initrd::append(&built.bytes, seg);
        }
        Ok(built)
    }
}

impl Make for Builder {
    fn make(&self) -> std::io::Result<Vec<u8>> {
        self.build().map(|b| b.bytes).map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("the rescue initrd for kernel {}", self.kver)
    }
}

/// A resolved path as a string, if it is one.
fn dir_of(layout: &Layout, path: &str) -> Option<String> {
    match resolve(layout, path.as_bytes()) {
        Some((p, e)) if matches!(e.data, EntryData::Dir) => String::from_utf8(p).ok(),
        _ => None,
    }
}

/// The kernel configuration the build consults: the first of the places a
/// kernel package puts it in `/usr`.
fn config_of(layout: &Layout, kver: &str) -> Option<(Hash128, u64)> {
    [
        format!("lib/kernel/{kver}/config"),
        format!("lib/modules/{kver}/config"),
        format!("lib/modules/{kver}/build/.config"),
    ]
    .iter()
    .find_map(|p| match resolve(layout, p.as_bytes()).map(|(_, e)| &e.data) {
        Some(EntryData::File { hash, size }) => Some((*hash, *size)),
        _ => None,
    })
}

/// One rescue initrd of this sync, for output.
#[derive(Debug)]
pub struct Report {
    pub kver: String,
    pub transactions: Vec<u64>,
    /// Its path on `$BOOT`.
    pub file: String,
    /// Built by this sync (else the copy on `$BOOT` is used).
    pub built: bool,
}

/// What [`provide`] decided.
#[derive(Debug, Default)]
pub struct Provided {
    /// Transaction -> the rescue initrd of its entry.
    pub per_tx: BTreeMap<u64, Blob>,
    /// The cache as this sync leaves it (the keys it used).
    pub cache: Cache,
    pub notes: Vec<String>,
    pub reports: Vec<Report>,
}

/// The transactions' ids, for a message.
fn ids(txs: &[u64]) -> String {
    txs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// The rescue initrd of each of `entries` (the entries the sync may keep).
pub fn provide(
    root: &SystemRoot,
    idx: &StateIndex,
    entries: &[&WantedEntry],
    set: ModuleSet,
    boot: &mut dyn Volume,
    token: &str,
) -> Result<Provided> {
    let mut out = Provided::default();
    let mut layouts = Layouts { idx, got: BTreeMap::new() };
    let Some(bin) = find_rescue_bin(&mut layouts, &mut out.notes) else {
        out.notes.push(format!(
            "no retained transaction carries usr/{RESCUE_BIN} (the rescue build of lifeboat): the entries carry no \
             lifeboat initrd; install it, or give `boot sync --initrd FILE`"
        ));
        return Ok(out);
    };
    let (host, set_name, facts) = match set {
        ModuleSet::Generic => (None, "generic", Vec::new()),
        ModuleSet::HostOnly if root.path != Path::new("/") => {
            out.notes.push(format!(
                "a host-only initrd describes this machine's disks, not those of {}: its rescue initrds get the generic module set",
                root.path.display()
            ));
            (None, "generic", Vec::new())
        }
        ModuleSet::HostOnly => match host::host_devices(Path::new("/sys"), Path::new("/proc/self/mountinfo")) {
            Ok(h) => {
                let facts = h.facts();
                (Some(h), "host-only", facts)
            }
            Err(e) => {
                out.notes.push(format!("{e}: the rescue initrds get the generic module set"));
                (None, "generic", Vec::new())
            }
        },
    };
    let store = root.path.join(STORE_REL);
    let binary_shown = tree_path(root, bin.tx).join(RESCUE_BIN);
    // The console keymap of the machine (its etc/vconsole.conf), so that a
    // passphrase is typed with its own layout: an input of every initrd's key.
    let keymap = {
        let vconsole = root.path.join("etc/vconsole.conf");
        match crate::cli::initrd::keymap_wanted(&None, &vconsole) {
            Ok(Some(name)) => match crate::cli::initrd::keymap_segment(&name) {
                Ok(seg) => Some(Arc::new(seg)),
                Err(e) => {
                    out.notes.push(format!(
                        "KEYMAP={name} of {} not carried ({e}); a passphrase prompt uses the US layout",
                        vconsole.display()
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                out.notes.push(format!("{e}; a passphrase prompt uses the US layout"));
                None
            }
        }
    };
    let keymap_input: Vec<(&str, Hash128)> = keymap.iter().map(|seg| ("keymap", Hash128::of(seg.as_slice()))).collect();
    // Key -> (builder, transactions).
    let mut groups: BTreeMap<String, (Arc<Builder>, Vec<u64>)> = BTreeMap::new();
    let mut key_of: BTreeMap<u64, String> = BTreeMap::new();
    for w in entries {
        let Some(layout) = layouts.get(w.tx) else { continue };
        let modules = dir_of(&layout, &format!("lib/modules/{}", w.kver));
        let firmware = dir_of(&layout, "lib/firmware");
        let config = config_of(&layout, &w.kver);
        let k = key::key(&key::Inputs {
            kver: &w.kver,
            layout: &layout,
            modules: modules.as_deref().map(str::as_bytes),
            firmware: firmware.as_deref().map(str::as_bytes),
            config: config.map(|c| c.0),
            binary: bin.hash,
            set: set_name,
            host_facts: &facts,
            extra: &keymap_input,
        });
        key_of.insert(w.tx, k.clone());
        let group = groups.entry(k).or_insert_with(|| {
            (
                Arc::new(Builder {
                    kver: w.kver.clone(),
                    layout: layout.clone(),
                    store: store.clone(),
                    shown_tree: tree_path(root, w.tx),
                    modules,
                    firmware,
                    config,
                    binary: bin,
                    binary_shown: binary_shown.clone(),
                    host: host.clone(),
                    keymap: keymap.clone(),
                }),
                Vec::new(),
            )
        });
        group.1.push(w.tx);
        group.1.sort_unstable();
    }
    let old = Cache::load(root);
    let mut blobs: BTreeMap<String, Blob> = BTreeMap::new();
    for (k, (builder, txs)) in &groups {
        let kver = &builder.kver;
        if let Some(m) = old.0.get(k).filter(|m| &m.kver == kver) {
            let path = plan::kernel_initrd_path(token, kver, &m.hash);
            let on_boot = match boot.stat(&path) {
                Ok(e) => e.is_some_and(|e| !e.is_dir && e.size == m.size),
                Err(lifeboat_esp::Error::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if let (true, Ok(want)) = (on_boot, u128::from_str_radix(&m.hash, 16)) {
                let made: Arc<dyn Make> = builder.clone();
                blobs.insert(k.clone(), Blob { hash: m.hash.clone(), len: m.size, source: Source::Made(made, want) });
                out.cache.0.insert(k.clone(), m.clone());
                out.reports.push(Report { kver: kver.clone(), transactions: txs.clone(), file: path, built: false });
                continue;
            }
        }
        let t = std::time::Instant::now();
        match builder.build() {
            Ok(b) => {
                let hash = Hash128::of(&b.bytes).to_string();
                let size = b.bytes.len() as u64;
                out.notes.push(format!(
                    "built the rescue initrd for kernel {kver} (transaction{} {}): {} modules ({set_name}), {} firmware \
                     files, {size} bytes, in {} ms",
                    if txs.len() == 1 { "" } else { "s" },
                    ids(txs),
                    b.modules,
                    b.firmware,
                    t.elapsed().as_millis()
                ));
                out.notes.extend(b.notes.iter().map(|n| format!("kernel {kver}: {n}")));
                let path = plan::kernel_initrd_path(token, kver, &hash);
                out.reports.push(Report { kver: kver.clone(), transactions: txs.clone(), file: path, built: true });
                out.cache.0.insert(k.clone(), Made { hash: hash.clone(), size, kver: kver.clone() });
                blobs.insert(k.clone(), Blob { hash, len: size, source: Source::Bytes(b.bytes.into()) });
            }
            Err(e) => out.notes.push(format!(
                "transaction{} {}: no rescue initrd for kernel {kver}: {e}; the entry goes without one",
                if txs.len() == 1 { "" } else { "s" },
                ids(txs)
            )),
        }
    }
    for (tx, k) in key_of {
        if let Some(b) = blobs.get(&k) {
            out.per_tx.insert(tx, b.clone());
        }
    }
    Ok(out)
}
