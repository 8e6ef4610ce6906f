//! Boot sync: compute the wanted contents of `$BOOT` and the ESP from the retained
//! transactions, compare with what is there, plan, check the plan fits, apply.
//!
//! lifeboat's namespace is narrow: entry files `loader/entries/<token>-<tx>-<kver>
//! [+L-D].conf` that carry `lifeboat.tx=`, and content-named files below `<token>/`
//! (`<kver>/vmlinuz-<h>`, `<kver>/<name>-<h>.initrd`, the rescue initrd built for
//! a kernel, `<kver>/lifeboat-<h>.initrd`, and one given for every entry,
//! `lifeboat-<h>.initrd`). Nothing else is
//! removed or changed, whoever else shares the ESP. Of `loader.conf` only the
//! `default` and `timeout` keys are touched.
//!
//! With Secure Boot an entry is a signed unified kernel image instead (Type #2):
//! `EFI/Linux/<token>-<tx>-<kver>[+L-D].efi`, one file holding the kernel, the
//! initrds and the command line with `lifeboat.tx=`, so that nothing the menu
//! could edit selects the transaction. Such a file is ours only when its name is
//! in the token's namespace and its bytes carry `lifeboat.tx=<tx>`; it is
//! planned, counted, replaced and removed as an entry file is (written under a
//! temporary name, flushed, renamed: it appears whole or not at all).
//!
//! Order of application: interrupted replacements are completed, unwanted entries
//! are removed before the files they reference, files are copied before the entries
//! that reference them, `loader.conf` last. An entry that is already right is never
//! rewritten, so the active transaction's entry stays bootable throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_esp::volume::{join, Volume};

use crate::bls::{self, Entry};
use crate::loaderconf;
use crate::{Error, Result};

/// Where a file's bytes come from.
#[derive(Clone)]
pub enum Source {
    Path(PathBuf),
    /// A file that must hold exactly the bytes whose xxh3-128 is given (a
    /// store blob, copied under that content's name): a copy of anything else
    /// fails before the file gets its name on `$BOOT`.
    Checked(PathBuf, u128),
    Bytes(Arc<[u8]>),
    /// Bytes made only when a copy needs them (a rescue initrd whose copy on
    /// `$BOOT` was found damaged), which must hash to the given xxh3-128.
    Made(Arc<dyn Make>, u128),
}

/// Makes a file's bytes on demand (see [`Source::Made`]).
pub trait Make: Send + Sync {
    fn make(&self) -> std::io::Result<Vec<u8>>;
    /// What is made, for messages.
    fn describe(&self) -> String;
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) | Source::Checked(p, _) => write!(f, "{}", p.display()),
            Source::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Source::Made(m, _) => write!(f, "{}", m.describe()),
        }
    }
}

/// Hashes what passes through it; at the end, an error unless the bytes were
/// the ones named.
struct HashChecked<R> {
    inner: R,
    hash: xxhash_rust::xxh3::Xxh3,
    want: u128,
    what: String,
}

impl<R: Read> Read for HashChecked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got = self.hash.digest128();
            if got != self.want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} holds xxh3-128 {got:032x}, not {:032x} (its name): damaged, not copied",
                        self.what, self.want
                    ),
                ));
            }
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl Source {
    /// Every byte (what a unified kernel image is built from), through the
    /// same checks a copy makes.
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open()?.read_to_end(&mut v)?;
        Ok(v)
    }

    /// A path is a file lifeboat did not write (a store blob, a file a person
    /// named): opened through the one door, so a FIFO or a device put there
    /// fails the copy at once instead of blocking it forever.
    fn open(&self) -> std::io::Result<Box<dyn Read>> {
        match self {
            Source::Path(p) => Ok(Box::new(lifeboat_fs::foreign::open_file(p)?)),
            Source::Checked(p, want) => Ok(Box::new(HashChecked {
                inner: lifeboat_fs::foreign::open_file(p)?,
                hash: xxhash_rust::xxh3::Xxh3::new(),
                want: *want,
                what: p.display().to_string(),
            })),
            Source::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            Source::Made(m, want) => Ok(Box::new(HashChecked {
                inner: std::io::Cursor::new(m.make()?),
                hash: xxhash_rust::xxh3::Xxh3::new(),
                want: *want,
                what: m.describe(),
            })),
        }
    }
}

/// A file to place on `$BOOT`, identified by its content hash.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Lowercase hex digest; part of the file name.
    pub hash: String,
    pub len: u64,
    pub source: Source,
}

/// One retained transaction's wanted entry.
#[derive(Clone, Debug)]
pub struct WantedEntry {
    pub tx: u64,
    pub active: bool,
    pub title: String,
    pub version: String,
    pub sort_key: String,
    pub machine_id: Option<String>,
    pub kver: String,
    pub linux: Blob,
    /// The transaction's own initrds, in order: (name stem, content).
    pub initrds: Vec<(String, Blob)>,
    /// lifeboat's rescue initrd, listed after the transaction's own so that
    /// its `/init` is the one the kernel runs.
    pub rescue_initrd: Option<RescueInitrd>,
    pub options: String,
    /// With Secure Boot: the signed unified kernel image that is this entry
    /// (`EFI/Linux/<stem>.efi`), in place of a `.conf` with its kernel and
    /// initrd files. Its bytes already hold `linux`, the initrds and `options`.
    pub uki: Option<Blob>,
}

/// lifeboat's rescue initrd of an entry, and where it lives on `$BOOT`.
#[derive(Clone, Debug)]
pub enum RescueInitrd {
    /// One given for every entry (`boot sync --initrd FILE`):
    /// `<token>/lifeboat-<h>.initrd`.
    Shared(Blob),
    /// Built for the entry's kernel from its transaction's modules:
    /// `<token>/<kver>/lifeboat-<h>.initrd`, shared by the entries whose
    /// inputs are the same.
    Kernel(Blob),
}

impl RescueInitrd {
    pub fn blob(&self) -> &Blob {
        match self {
            RescueInitrd::Shared(b) | RescueInitrd::Kernel(b) => b,
        }
    }
}

/// Where a rescue initrd built for kernel `kver` lives on `$BOOT`.
pub fn kernel_initrd_path(token: &str, kver: &str, hash: &str) -> String {
    join(&join(token, &kver_name(kver)), &format!("lifeboat-{hash}.initrd"))
}

/// What to sync.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub token: String,
    /// Every candidate; `keep` of them are retained (the active one always).
    pub entries: Vec<WantedEntry>,
    pub keep: usize,
    /// Boot-counting tries for entries created by this sync.
    pub tries: Option<u32>,
    /// `timeout` for loader.conf, when lifeboat should set it.
    pub timeout: Option<u32>,
    /// Transactions whose wanted entry cannot be built now (say, a kernel missing
    /// from the store): their existing entries and files are left as they are.
    pub protected: Vec<u64>,
    /// The `default` pattern the user chose (`boot set-default`), kept instead
    /// of the active transaction's while it names an entry that stays: one of
    /// ours that this plan keeps, or another's (an entry lifeboat does not manage).
    pub pinned_default: Option<String>,
}

/// One file operation of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Remove a file in lifeboat's namespace.
    Remove { path: String, size: u64 },
    /// Copy content to a new content-named file.
    Copy { path: String, size: u64 },
    /// Write (or rewrite) an entry file.
    WriteEntry { path: String, tx: u64 },
    /// Write loader.conf on the ESP.
    LoaderConf,
}

/// The computed plan.
#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Transactions that will have an entry.
    pub kept: Vec<u64>,
    /// Transactions left out because the volume is too small.
    pub dropped_for_space: Vec<u64>,
    pub need: u64,
    pub free: u64,
    contents: BTreeMap<String, Vec<u8>>,
    sources: BTreeMap<String, Blob>,
    loader_conf: Option<String>,
    recover_dirs: Vec<String>,
    /// The new files fit only after the old ones are gone: removals go first —
    /// all but those in `late`. Otherwise copies, entries and loader.conf are
    /// written first and removals come last, so every moment has the old
    /// entries or the new ones complete.
    pub remove_first: bool,
    /// Removals (lowercase paths) that wait until the new entries and
    /// loader.conf are in place even when removals go first: the entry the
    /// loader boots now and the files only it names.
    late: BTreeSet<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty()
    }
}

/// A file of ours found on `$BOOT`.
#[derive(Clone, Debug)]
struct Present {
    path: String,
    size: u64,
    /// Where its content is read: `path`, or the complete `.lbnew` that the
    /// next writable open renames to `path` (a dry run on a read-only volume
    /// plans from what that open will leave).
    read: String,
}

/// An entry of ours found on `$BOOT`.
#[derive(Clone, Debug)]
pub struct OurEntry {
    /// The file name, in `loader/entries` (Type #1) or `EFI/Linux` (a UKI).
    pub file: String,
    pub tx: u64,
    pub kver: String,
    pub counter: Option<bls::Counter>,
    /// The entry file's text; empty for a UKI.
    pub text: String,
    /// `Some(size)` when the entry is a unified kernel image in `EFI/Linux`.
    pub uki: Option<u64>,
}

impl OurEntry {
    /// Its path on the volume.
    pub fn path(&self) -> String {
        match self.uki {
            Some(_) => join(UKI_DIR, &self.file),
            None => join("loader/entries", &self.file),
        }
    }

    /// Its size on the volume.
    pub fn size(&self) -> u64 {
        self.uki.unwrap_or(self.text.len() as u64)
    }
}

/// Where unified kernel images (Type #2 entries) live on `$BOOT`.
pub const UKI_DIR: &str = crate::uki::DIR;

/// Parses a UKI file name of ours: `<token>-<tx>-<kver>[+L[-D]].efi`
/// ([`crate::uki::parse_name`], the one rule listing and blessing use too).
pub fn parse_uki_name(token: &str, file: &str) -> Option<(u64, String, Option<bls::Counter>)> {
    crate::uki::parse_name(token, file)
}

/// Whether a unified kernel image's `.cmdline` section (read through
/// `lifeboat-pe`'s bounded reader) carries `lifeboat.tx=<tx>` as a word. A
/// file that is not a UKI does not.
pub fn uki_names_tx(bytes: &[u8], tx: u64) -> bool {
    match lifeboat_pe::read_uki(bytes) {
        Ok(info) => info.cmdline.is_some_and(|c| crate::uki::cmdline_names_tx(&c, tx)),
        Err(_) => false,
    }
}

/// The file-name form of a kernel version: no `/`, and no `+` (which would read
/// as a boot counter).
pub fn kver_name(kver: &str) -> String {
    kver.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '^') { c } else { '_' })
        .collect()
}

/// The longest kernel version accepted: the kernel's own limit for a
/// release string (`__NEW_UTS_LEN`).
pub const MAX_KVER: usize = 64;

/// Why a kernel version cannot name a boot entry and its directory on a FAT
/// volume, if it cannot: empty, `.` or `..`, a `/`, a control character, a
/// trailing dot or space (FAT drops them), or longer than [`MAX_KVER`] bytes.
pub fn kver_problem(kver: &str) -> Option<&'static str> {
    if kver.is_empty() || kver == "." || kver == ".." || kver.contains('/') {
        Some("not a version directory name")
    } else if lifeboat_fs::shown::has_control(kver) {
        Some("a control character")
    } else if kver.ends_with('.') || kver.ends_with(' ') {
        Some("a trailing dot or space, which a FAT name cannot end with")
    } else if kver.len() > MAX_KVER {
        Some("longer than a kernel release can be (64 bytes)")
    } else {
        None
    }
}

/// Whether a kernel version can name a boot entry ([`kver_problem`]).
pub fn kver_ok(kver: &str) -> bool {
    kver_problem(kver).is_none()
}

/// Entry file stem of a transaction (without counter and `.conf`).
pub fn entry_stem(token: &str, tx: u64, kver: &str) -> String {
    format!("{token}-{tx}-{}", kver_name(kver))
}

/// The `default` pattern selecting transaction `tx`'s entry (whatever its counter).
pub fn default_pattern(token: &str, tx: u64) -> String {
    format!("{token}-{tx}-*")
}

/// Parses an entry file name of ours: `<token>-<tx>-<kver>[+L[-D]].conf`.
pub fn parse_entry_name(token: &str, file: &str) -> Option<(u64, String, Option<bls::Counter>)> {
    let (stem, counter) = bls::split_counter(file, ".conf")?;
    let rest = stem.strip_prefix(token)?.strip_prefix('-')?;
    let (tx, kver) = rest.split_once('-')?;
    if tx.is_empty() || !tx.bytes().all(|b| b.is_ascii_digit()) || kver.is_empty() {
        return None;
    }
    Some((tx.parse().ok()?, kver.to_owned(), counter))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a file below `<token>/` has a name lifeboat gives files.
fn is_our_file(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if let Some(h) = n.strip_prefix("vmlinuz-") {
        return is_hex(h);
    }
    if let Some(stem) = n.strip_suffix(".initrd") {
        if let Some((_, h)) = stem.rsplit_once('-') {
            return is_hex(h);
        }
    }
    false
}

/// Whether an entry file is lifeboat's: its name is in the token's namespace
/// (`<token>-<tx>-<kver>[+L-D].conf`) and its options carry `lifeboat.tx=<tx>` — a
/// name alone is not enough. Returns (tx, kver, counter).
pub fn owned_by_us(token: &str, file: &str, entry: &Entry) -> Option<(u64, String, Option<bls::Counter>)> {
    let (tx, kver, counter) = parse_entry_name(token, file)?;
    let tx_opt = format!("lifeboat.tx={tx}");
    entry.options().split_whitespace().any(|o| o == tx_opt).then_some((tx, kver, counter))
}

/// Lists lifeboat's entries on a volume.
pub fn our_entries(boot: &mut dyn Volume, token: &str) -> Result<Vec<OurEntry>> {
    // Without `loader/entries` there may still be images in `EFI/Linux`.
    let list = match boot.list("loader/entries") {
        Ok(l) => l,
        Err(lifeboat_esp::Error::NotFound { .. }) => vec![],
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for f in list {
        if f.is_dir {
            continue;
        }
        if parse_entry_name(token, &f.name).is_none() {
            continue;
        }
        let bytes = boot.read(&join("loader/entries", &f.name))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let Some((tx, kver, counter)) = owned_by_us(token, &f.name, &Entry::parse(&text)) else {
            continue;
        };
        out.push(OurEntry { file: f.name, tx, kver, counter, text, uki: None });
    }
    out.extend(our_ukis(boot, token)?);
    out.sort_by_key(|e| e.tx);
    Ok(out)
}

/// lifeboat's unified kernel images in `EFI/Linux`: named in the token's
/// namespace and carrying `lifeboat.tx=<tx>`.
fn our_ukis(boot: &mut dyn Volume, token: &str) -> Result<Vec<OurEntry>> {
    let list = match boot.list(UKI_DIR) {
        Ok(l) => l,
        Err(lifeboat_esp::Error::NotFound { .. }) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for f in list {
        if f.is_dir {
            continue;
        }
        let Some((tx, kver, counter)) = parse_uki_name(token, &f.name) else {
            continue;
        };
        // Larger than any image lifeboat writes or reads (PID 1 comes here):
        // not provably ours, left alone.
        if f.size > crate::uki::MAX_UKI {
            continue;
        }
        let bytes = match boot.read(&join(UKI_DIR, &f.name)) {
            Ok(b) => b,
            // Clusters that cannot be read: not provably ours, left alone.
            Err(lifeboat_esp::Error::Fat { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if !uki_names_tx(&bytes, tx) {
            continue;
        }
        out.push(OurEntry { file: f.name, tx, kver, counter, text: String::new(), uki: Some(f.size) });
    }
    Ok(out)
}

/// The files of ours below `<token>/` and the directories there (the token
/// directory first). Through [`lifeboat_esp::volume::walk`]: a directory cycle
/// on a damaged volume ends the walk with an error, not a listing that never ends.
fn our_files(boot: &mut dyn Volume, token: &str) -> Result<(Vec<Present>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let all = match lifeboat_esp::volume::walk(boot, token) {
        Ok(a) => a,
        Err(lifeboat_esp::Error::NotFound { .. }) => return Ok((files, dirs)),
        Err(e) => return Err(e.into()),
    };
    dirs.push(token.to_owned());
    let mut completes = Vec::new();
    for (p, e) in all {
        if e.is_dir {
            dirs.push(p);
        } else if lifeboat_esp::volume::is_interrupted(&p) {
            // What the next writable open makes of it (a writable open has
            // done so already): a `.lbtmp` goes, a `.lbnew` takes its name.
            let cut = p.len() - lifeboat_esp::volume::NEW_SUFFIX.len();
            let is_new = p.is_char_boundary(cut)
                && p[cut..].eq_ignore_ascii_case(lifeboat_esp::volume::NEW_SUFFIX)
                && is_our_file(lifeboat_esp::volume::split(&p[..cut]).1);
            if is_new {
                completes.push(Present { path: p[..cut].to_owned(), size: e.size, read: p });
            }
        } else if is_our_file(&e.name) {
            files.push(Present { read: p.clone(), path: p, size: e.size });
        }
    }
    for c in completes {
        files.retain(|f| !f.path.eq_ignore_ascii_case(&c.path));
        files.push(c);
    }
    Ok((files, dirs))
}

/// Renders the entry of `w` with `files` as its paths.
fn render_entry(w: &WantedEntry, linux: &str, initrds: &[String]) -> String {
    let mut e = Entry::default();
    e.push("title", &w.title);
    e.push("version", &w.version);
    e.push("sort-key", &w.sort_key);
    if let Some(m) = &w.machine_id {
        e.push("machine-id", m);
    }
    e.push("linux", &format!("/{linux}"));
    for i in initrds {
        e.push("initrd", &format!("/{i}"));
    }
    e.push("options", &w.options);
    let mut s = String::from("# Written by lifeboat; `lifeboat boot sync` rewrites it.\n");
    s.push_str(&e.render());
    s
}

struct Layout {
    /// path -> blob, for every file the kept entries need.
    files: BTreeMap<String, Blob>,
    /// tx -> (linux path, initrd paths)
    per_tx: BTreeMap<u64, (String, Vec<String>)>,
}

fn layout(token: &str, kept: &[&WantedEntry]) -> Layout {
    let mut files = BTreeMap::new();
    let mut per_tx = BTreeMap::new();
    for w in kept {
        if w.uki.is_some() {
            // The image is the entry: placed with the entries, not here.
            continue;
        }
        let kdir = join(token, &kver_name(&w.kver));
        let linux = join(&kdir, &format!("vmlinuz-{}", w.linux.hash));
        files.insert(linux.clone(), w.linux.clone());
        let mut ins = Vec::new();
        for (stem, b) in &w.initrds {
            let p = join(&kdir, &format!("{}-{}.initrd", kver_name(stem), b.hash));
            files.insert(p.clone(), b.clone());
            ins.push(p);
        }
        match &w.rescue_initrd {
            Some(RescueInitrd::Shared(b)) => {
                let p = join(token, &format!("lifeboat-{}.initrd", b.hash));
                files.insert(p.clone(), b.clone());
                ins.push(p);
            }
            Some(RescueInitrd::Kernel(b)) => {
                let p = kernel_initrd_path(token, &w.kver, &b.hash);
                files.insert(p.clone(), b.clone());
                ins.push(p);
            }
            None => {}
        }
        per_tx.insert(w.tx, (linux, ins));
    }
    Layout { files, per_tx }
}

/// Whether the file at `path` holds the content named `hash` (xxh3-128, hex):
/// a kernel damaged in place, same size, is found and copied again.
fn holds(vol: &mut dyn Volume, path: &str, hash: &str) -> Result<bool> {
    // A file whose clusters cannot be read (a chain cut short or looping on
    // a damaged volume) does not hold it either: copied again, or, on a
    // volume that refuses writes, listed as what the sync would copy.
    let data = match vol.read(path) {
        Ok(d) => d,
        Err(lifeboat_esp::Error::Fat { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data)).eq_ignore_ascii_case(hash))
}

/// The entry file and the files it names (lowercase, volume paths) of the entry
/// of ours the loader boots now: the newest that loader.conf's `default`
/// pattern matches, else our newest entry.
fn booted_now(entries: &[OurEntry], loader_conf: Option<&str>) -> BTreeSet<String> {
    let default = loader_conf.and_then(|t| loaderconf::get_key(t, "default"));
    let named = |e: &&OurEntry| match default {
        Some(d) => match d.strip_suffix('*') {
            Some(pre) => e.file.starts_with(pre),
            None => e.file == d,
        },
        None => false,
    };
    let Some(e) = entries.iter().filter(named).max_by_key(|e| e.tx).or_else(|| entries.iter().max_by_key(|e| e.tx))
    else {
        return BTreeSet::new();
    };
    let parsed = Entry::parse(&e.text);
    let mut out: BTreeSet<String> = parsed
        .all("linux")
        .into_iter()
        .chain(parsed.all("initrd"))
        .map(|f| f.trim_start_matches('/').to_lowercase())
        .collect();
    out.insert(e.path().to_lowercase());
    out
}

/// The entries in the order a sync keeps them: the active one first, then
/// newest first. A plan keeps the first `keep` (fewer when space is short).
pub fn candidates(entries: &[WantedEntry]) -> Vec<&WantedEntry> {
    let mut cands: Vec<&WantedEntry> = entries.iter().collect();
    cands.sort_by(|a, b| b.active.cmp(&a.active).then(b.tx.cmp(&a.tx)));
    cands
}

/// Computes the plan. `esp` is `None` when `$BOOT` is the ESP.
pub fn plan(req: &SyncRequest, boot: &mut dyn Volume, esp: Option<&mut dyn Volume>) -> Result<Plan> {
    if req.token.is_empty() || req.token.contains('/') {
        return Err(Error::Invalid(format!("entry token {:?} is not usable", req.token)));
    }
    // A kernel version becomes part of file names and the entry's `version`
    // line: one with a control character or a `/` would add lines or leave
    // lifeboat's directory. The caller leaves such kernels out; this is the
    // last word.
    for w in &req.entries {
        if !kver_ok(&w.kver) {
            return Err(Error::Invalid(format!(
                "transaction {}: kernel version {:?} has a control character or \"/\"; no entry can carry it",
                w.tx,
                lifeboat_fs::shown::shown_str(&w.kver)
            )));
        }
    }
    let token = req.token.as_str();
    let present_entries = our_entries(boot, token)?;
    let (present_files, token_dirs) = our_files(boot, token)?;
    let space = boot.space()?;

    let cands = candidates(&req.entries);
    let target = req.keep.max(1).min(cands.len());
    let mut n = target;

    let separate_esp = esp.is_some();
    // Room `loader/` needs for loader.conf's temporary name, should it be rewritten.
    let lc_tmp = vec![format!("loader.conf{}", lifeboat_esp::volume::TMP_SUFFIX)];
    let (loader_text, esp_space, esp_name, lc_room) = match esp {
        Some(v) => {
            (read_opt(v, "loader/loader.conf")?, Some(v.space()?), v.describe(), v.room_needed("loader", &lc_tmp)?)
        }
        None => (read_opt(boot, "loader/loader.conf")?, None, String::new(), boot.room_needed("loader", &lc_tmp)?),
    };
    // What the machine boots now: the entry of ours loader.conf's default names
    // (the newest such), else our newest. Its files go last, whatever the space.
    let fallback_files = booted_now(&present_entries, loader_text.as_deref());

    loop {
        let kept: Vec<&WantedEntry> = cands[..n].to_vec();
        let lay = layout(token, &kept);
        let mut steps = Vec::new();
        let mut contents = BTreeMap::new();
        let mut freed = 0u64;
        let mut need = 0u64;
        // Temporary names written per directory: they may make it grow.
        let mut writes_into: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut writing = |path: &str| {
            let (dir, name) = lifeboat_esp::volume::split(path);
            writes_into.entry(dir.to_owned()).or_default().push(format!("{name}{}", lifeboat_esp::volume::TMP_SUFFIX));
        };
        let present_lc: BTreeMap<String, &Present> = present_files.iter().map(|p| (p.path.to_lowercase(), p)).collect();

        // Entries.
        let mut entry_file_for: BTreeMap<u64, String> = BTreeMap::new();
        let mut protected_files: BTreeSet<String> = BTreeSet::new();
        for e in &present_entries {
            if req.protected.contains(&e.tx) && !kept.iter().any(|w| w.tx == e.tx) {
                let parsed = Entry::parse(&e.text);
                for f in parsed.all("linux").into_iter().chain(parsed.all("initrd")) {
                    protected_files.insert(f.trim_start_matches('/').to_lowercase());
                }
                continue;
            }
            // Wanted: same transaction, same kernel, same kind (a `.conf`
            // for a Type #1 entry, an image for a UKI).
            let wanted = kept.iter().any(|w| {
                w.tx == e.tx && kver_name(&w.kver).eq_ignore_ascii_case(&e.kver) && w.uki.is_some() == e.uki.is_some()
            });
            if wanted && !entry_file_for.contains_key(&e.tx) {
                entry_file_for.insert(e.tx, e.file.clone());
            } else {
                let size = e.size();
                freed += space.alloc(size);
                steps.push(Step::Remove { path: e.path(), size });
            }
        }
        // Files no kept entry needs.
        for p in &present_files {
            if !lay.files.keys().any(|k| k.eq_ignore_ascii_case(&p.path))
                && !protected_files.contains(&p.path.to_lowercase())
            {
                freed += space.alloc(p.size);
                steps.push(Step::Remove { path: p.path.clone(), size: p.size });
            }
        }
        // Files to copy.
        let mut new_dirs = BTreeSet::new();
        for (path, blob) in &lay.files {
            match present_lc.get(&path.to_lowercase()) {
                Some(p) if p.size == blob.len && holds(boot, &p.read, &blob.hash)? => {}
                Some(_) => {
                    // Same name, other content: an interrupted or damaged
                    // copy. The replacement holds both until the new one is
                    // whole, so the old one frees nothing before.
                    need += space.alloc(blob.len);
                    writing(path);
                    steps.push(Step::Copy { path: path.clone(), size: blob.len });
                }
                None => {
                    need += space.alloc(blob.len);
                    let (dir, _) = lifeboat_esp::volume::split(path);
                    if !token_dirs.iter().any(|d| d.eq_ignore_ascii_case(dir)) {
                        new_dirs.insert(dir.to_owned());
                    }
                    writing(path);
                    steps.push(Step::Copy { path: path.clone(), size: blob.len });
                }
            }
        }
        need += new_dirs.len() as u64 * space.cluster;
        // Unified kernel images: each is its entry, copied whole under a
        // temporary name and renamed, so it is there complete or not at all.
        let mut uki_sources: BTreeMap<String, Blob> = BTreeMap::new();
        for w in &kept {
            let Some(blob) = &w.uki else {
                continue;
            };
            let path = match entry_file_for.get(&w.tx) {
                Some(f) => {
                    let path = join(UKI_DIR, f);
                    if holds(boot, &path, &blob.hash)? {
                        continue;
                    }
                    path
                }
                None => {
                    let stem = entry_stem(token, w.tx, &w.kver);
                    let name = match req.tries {
                        Some(t) => format!("{stem}+{t}-0.efi"),
                        None => format!("{stem}.efi"),
                    };
                    join(UKI_DIR, &name)
                }
            };
            // A replacement holds old and new until the rename.
            need += space.alloc(blob.len);
            writing(&path);
            uki_sources.insert(path.clone(), blob.clone());
            steps.push(Step::Copy { path, size: blob.len });
        }
        if !uki_sources.is_empty() && !boot.exists(UKI_DIR)? {
            need += 2 * space.cluster;
        }
        // Entry files, after their kernels.
        for w in kept.iter().filter(|w| w.uki.is_none()) {
            let (linux, ins) = &lay.per_tx[&w.tx];
            let text = render_entry(w, linux, ins);
            let path = match entry_file_for.get(&w.tx) {
                Some(f) => {
                    let cur = present_entries.iter().find(|e| &e.file == f).map(|e| e.text.as_str());
                    if cur == Some(text.as_str()) {
                        continue;
                    }
                    join("loader/entries", f)
                }
                None => {
                    let stem = entry_stem(token, w.tx, &w.kver);
                    let name = match req.tries {
                        Some(t) => format!("{stem}+{t}-0.conf"),
                        None => format!("{stem}.conf"),
                    };
                    join("loader/entries", &name)
                }
            };
            // A replacement briefly holds old and new.
            need += space.alloc(text.len() as u64);
            writing(&path);
            contents.insert(path.clone(), text.into_bytes());
            steps.push(Step::WriteEntry { path, tx: w.tx });
        }
        if !boot.exists("loader/entries")? {
            need += 2 * space.cluster;
        }

        // loader.conf: default follows the active transaction, unless its entry is
        // still being tried, in which case the loader's own order (newest first,
        // exhausted entries last) must be free to fall back.
        let active = kept.iter().find(|w| w.active);
        let counting = active.is_some_and(|a| match entry_file_for.get(&a.tx) {
            Some(f) => {
                let suffix = if a.uki.is_some() { ".efi" } else { ".conf" };
                bls::split_counter(f, suffix).and_then(|(_, c)| c).is_some()
            }
            None => req.tries.is_some(),
        });
        // A pin on one of our entries holds only while the plan keeps it.
        let pinned = req.pinned_default.clone().filter(|p| {
            !p.starts_with(&format!("{token}-")) || kept.iter().any(|w| default_pattern(token, w.tx) == *p)
        });
        let default = match active {
            _ if pinned.is_some() => pinned,
            Some(_) if counting => Some(format!("{token}-*")),
            Some(a) => Some(default_pattern(token, a.tx)),
            None => None,
        };
        let mut lc = loader_text.clone().unwrap_or_default();
        if let Some(d) = &default {
            lc = loaderconf::set_key(&lc, "default", Some(d));
        }
        if let Some(t) = req.timeout {
            lc = loaderconf::set_key(&lc, "timeout", Some(&t.to_string()));
        }
        let loader_conf =
            (Some(&lc) != loader_text.as_ref() && !(lc.is_empty() && loader_text.is_none())).then_some(lc);
        // loader.conf is replaced too: its temporary copy beside the old one,
        // and room in `loader/` for the temporary name. On a separate ESP
        // that is the ESP's space (checked below), else $BOOT's.
        let lc_need = loader_conf.as_ref().map_or(0, |t| esp_space.unwrap_or(space).alloc(t.len() as u64) + lc_room);
        if loader_conf.is_some() {
            steps.push(Step::LoaderConf);
            if !separate_esp {
                need += lc_need;
            }
        }
        // A directory that gets new entries (the temporary names, while the
        // old files stay) may have to grow.
        for (dir, names) in &writes_into {
            need += boot.room_needed(dir, names)?;
        }

        let free = space.free + freed;
        let remove_first = need > space.free;
        let late: BTreeSet<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Remove { path, .. } if fallback_files.contains(&path.to_lowercase()) => Some(path.to_lowercase()),
                _ => None,
            })
            .collect();
        let freed_late: u64 = steps
            .iter()
            .filter_map(|s| match s {
                Step::Remove { path, size } if late.contains(&path.to_lowercase()) => Some(space.alloc(*size)),
                _ => None,
            })
            .sum();
        // Removing first must still leave what the machine boots now until
        // the new entries are complete.
        let mut keeps_fallback = !remove_first || need <= free - freed_late;
        // Nothing to copy or write: every kept entry, the active one's
        // included, is complete on the volume, and only loader.conf is to
        // change. When even its temporary copy does not fit beside what the
        // machine boots now (a volume another writer filled), that goes first
        // after all: the active entry boots in its stead. Otherwise such a
        // volume could never be synced again.
        let nothing_new = !steps.iter().any(|s| matches!(s, Step::Copy { .. } | Step::WriteEntry { .. }));
        let late = if !keeps_fallback && nothing_new && need <= free {
            keeps_fallback = true;
            BTreeSet::new()
        } else {
            late
        };
        let fits = need <= free && keeps_fallback;
        if fits || n <= 1 {
            if need <= free && !keeps_fallback {
                return Err(Error::NoSpace {
                    volume: boot.describe(),
                    need,
                    free: free - freed_late,
                    detail: format!(
                        "the new files ({need} bytes) do not fit on {} beside the entry the machine boots now ({} bytes free without it): a power cut while copying would leave nothing to boot; nothing was changed",
                        boot.describe(),
                        free - freed_late
                    ),
                });
            }
            if !fits {
                return Err(Error::NoSpace {
                    volume: boot.describe(),
                    need,
                    free,
                    detail: format!(
                        "even the active transaction alone needs {need} bytes on {} ({} free now, {} after removing what lifeboat no longer needs); nothing was changed",
                        boot.describe(),
                        space.free,
                        free
                    ),
                });
            }
            if let (Some(e), true) = (esp_space, loader_conf.is_some()) {
                if lc_need > e.free {
                    return Err(Error::NoSpace {
                        volume: esp_name.clone(),
                        need: lc_need,
                        free: e.free,
                        detail: format!(
                            "loader/loader.conf cannot be rewritten on {esp_name}: {lc_need} bytes needed for its \
                             new copy, {} free; nothing was changed",
                            e.free
                        ),
                    });
                }
            }
            let kept_ids: Vec<u64> = kept.iter().map(|w| w.tx).collect();
            let dropped_for_space: Vec<u64> = cands[n..target].iter().map(|w| w.tx).collect();
            let mut recover_dirs = vec!["loader/entries".to_owned(), "loader".to_owned()];
            recover_dirs.extend(token_dirs.iter().cloned());
            // Removals first, then copies, then entries, then loader.conf.
            steps.sort_by_key(|s| match s {
                Step::Remove { path, .. } if path.starts_with("loader/") || path.starts_with(UKI_DIR) => 0,
                Step::Remove { .. } => 1,
                Step::Copy { .. } => 2,
                Step::WriteEntry { .. } => 3,
                Step::LoaderConf => 4,
            });
            let mut sources = lay.files;
            sources.extend(uki_sources);
            return Ok(Plan {
                steps,
                kept: kept_ids,
                dropped_for_space,
                need,
                free,
                contents,
                sources,
                loader_conf,
                recover_dirs,
                remove_first,
                late,
            });
        }
        // Drop the oldest transaction that is not the active one.
        n -= 1;
    }
}

/// A file's content as the next writer will find it: its complete `.lbnew`
/// when a cut left one (a writable open renames it into place before the plan
/// is made; a dry run plans from what that will give), else the file.
fn read_opt(v: &mut dyn Volume, path: &str) -> Result<Option<String>> {
    for p in [format!("{path}{}", lifeboat_esp::volume::NEW_SUFFIX), path.to_owned()] {
        match v.read(&p) {
            Ok(b) => return Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(lifeboat_esp::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub recovered: Vec<String>,
    pub bytes_copied: u64,
}

/// Applies a plan computed against the same volumes.
pub fn apply(plan: &Plan, boot: &mut dyn Volume, esp: Option<&mut dyn Volume>) -> Result<Applied> {
    let mut done = Applied::default();
    // Recovery first, even when nothing else is to do: a plan that found
    // loader.conf current through its complete `.lbnew` is a no-op, and the
    // `.lbnew` must still take its name.
    for d in &plan.recover_dirs {
        done.recovered.extend(boot.recover(d)?);
    }
    let mut esp = esp;
    if let Some(e) = esp.as_deref_mut() {
        done.recovered.extend(crate::loaderconf::recover_esp(e)?);
    }
    if plan.is_noop() {
        return Ok(done);
    }
    // Copies (written, flushed, renamed: three flushes in all), then entries the
    // same way, then removals (entries before the files they name), then
    // loader.conf; removals first only when the space is needed.
    if plan.remove_first {
        apply_removals(plan, boot, |p| !plan.late.contains(&p.to_lowercase()))?;
    }
    let mut copies: Vec<(String, Box<dyn Read>)> = Vec::new();
    let mut expect = Vec::new();
    for s in &plan.steps {
        if let Step::Copy { path, size } = s {
            let blob = plan.sources.get(path).ok_or_else(|| Error::Invalid(format!("no source for {path}")))?;
            let (dir, _) = lifeboat_esp::volume::split(path);
            boot.create_dir_all(dir)?;
            let r = blob.source.open().map_err(|e| Error::Io { at: format!("{:?}", blob.source), source: e })?;
            copies.push((path.clone(), r));
            expect.push((path.clone(), *size, blob.source.clone()));
        }
    }
    if !copies.is_empty() {
        let sizes = boot.replace_all(&mut copies)?;
        for ((path, size, src), n) in expect.iter().zip(sizes) {
            if n != *size {
                return Err(Error::Invalid(format!("{src:?} changed while copying it to {path}")));
            }
            done.bytes_copied += n;
        }
    }
    let mut entries: Vec<(String, Box<dyn Read>)> = Vec::new();
    for s in &plan.steps {
        if let Step::WriteEntry { path, .. } = s {
            let text = plan.contents.get(path).ok_or_else(|| Error::Invalid(format!("no content for {path}")))?;
            entries.push((path.clone(), Box::new(std::io::Cursor::new(text.clone()))));
        }
    }
    if !entries.is_empty() {
        boot.create_dir_all("loader/entries")?;
        boot.replace_all(&mut entries)?;
    }
    // loader.conf names the new default before the old entries go: a cut in
    // between leaves a default that names an entry.
    if plan.steps.contains(&Step::LoaderConf) {
        let text = plan.loader_conf.as_deref().unwrap_or_default();
        let v: &mut dyn Volume = match esp {
            Some(v) => v,
            None => &mut *boot,
        };
        v.create_dir_all("loader")?;
        v.replace("loader/loader.conf", &mut text.as_bytes())?;
    }
    apply_removals(plan, boot, |p| !plan.remove_first || plan.late.contains(&p.to_lowercase()))?;
    // Directories below the token that became empty.
    remove_empty_dirs(boot, &plan.recover_dirs)?;
    boot.flush()?;
    Ok(done)
}

/// The plan's removals that `now` selects (entries sorted before files), then
/// a flush.
fn apply_removals(plan: &Plan, boot: &mut dyn Volume, now: impl Fn(&str) -> bool) -> Result<()> {
    let mut removed_any = false;
    for s in &plan.steps {
        if let Step::Remove { path, .. } = s {
            if now(path) {
                boot.remove_if_exists(path)?;
                removed_any = true;
            }
        }
    }
    if removed_any {
        boot.flush()?;
    }
    Ok(())
}

fn remove_empty_dirs(boot: &mut dyn Volume, dirs: &[String]) -> Result<()> {
    let mut ds: Vec<&String> = dirs.iter().filter(|d| !d.starts_with("loader")).collect();
    ds.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in ds {
        if matches!(boot.list(d), Ok(l) if l.is_empty()) {
            boot.remove(d)?;
        }
    }
    Ok(())
}
