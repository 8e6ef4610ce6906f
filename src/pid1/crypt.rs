//! Encrypted and LVM roots in PID 1: which LUKS containers to open and how,
//! read from the kernel command line as systemd-cryptsetup-generator reads it
//! (`rd.luks.uuid=`, `rd.luks.name=UUID=NAME`, `rd.luks.key=`,
//! `rd.luks.options=`, their `luks.*` forms, `rd.luks=0`), opening them with a
//! key file built into the initrd or a passphrase asked on every console, and
//! mapping them with dm-crypt; then the LVM logical volumes the command line
//! selects (`rd.lvm.vg=`, `rd.lvm.lv=`, all when none is named). Nothing here
//! writes to a disk: a mapping only reads through to its device.

use std::fs::File;
use std::path::{Path, PathBuf};

use lifeboat_dm::lvm::{self, Selection};
use lifeboat_dm::{ensure_node, DevNo, DmControl, Target};
use lifeboat_esp::blockdev::{BlockDev, SysBlock};
use lifeboat_luks::{Header, UnlockOptions, Unlocked};

use super::{ask, progress, say, Boot, BootError, Phase};
use crate::cmdline::KernelCmdline;

/// Where `initrd build --keyfile` puts key files in the initrd.
pub const KEY_DIR: &str = "/etc/lifeboat/keys";
/// Passphrase attempts per container when `tries=` does not say (systemd's default).
const TRIES_DEFAULT: u32 = 3;

/// One LUKS container the command line names, or any container found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuksWanted {
    /// Lower-case, dashed; `None`: any container (the root's, found by its type).
    pub uuid: Option<String>,
    /// The mapping's name: `rd.luks.name=`'s, else `luks-<uuid>`.
    pub name: Option<String>,
}

/// What the command line says about LUKS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LuksConfig {
    /// `rd.luks=0`: open nothing.
    pub disabled: bool,
    pub wanted: Vec<LuksWanted>,
    /// (uuid or `None` for all, key file path).
    pub keys: Vec<(Option<String>, String)>,
    /// (uuid or `None` for all, options).
    pub options: Vec<(Option<String>, String)>,
    /// What the console should hear about parameters not taken as given.
    pub notes: Vec<String>,
}

fn norm_uuid(u: &str) -> String {
    u.trim().trim_start_matches("luks-").to_ascii_lowercase()
}

fn looks_like_uuid(u: &str) -> bool {
    let n = norm_uuid(u);
    n.len() == 36 && n.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

/// Every value of `key` (and of the same key without `rd.`), in order.
fn values<'a>(c: &'a KernelCmdline, key: &str) -> Vec<&'a str> {
    let bare = key.strip_prefix("rd.").unwrap_or(key);
    c.words
        .iter()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            (k == key || k == bare).then_some(v)
        })
        .collect()
}

impl LuksConfig {
    pub fn from_cmdline(c: &KernelCmdline) -> LuksConfig {
        let mut cfg = LuksConfig::default();
        for v in values(c, "rd.luks") {
            if matches!(v, "0" | "no" | "false" | "off") {
                cfg.disabled = true;
            }
        }
        for v in values(c, "rd.luks.uuid") {
            let u = norm_uuid(v);
            if !cfg.wanted.iter().any(|w| w.uuid.as_deref() == Some(&u)) {
                cfg.wanted.push(LuksWanted { uuid: Some(u), name: None });
            }
        }
        for v in values(c, "rd.luks.name") {
            match v.split_once('=') {
                Some((u, name)) if valid_mapping_name(name) => {
                    let u = norm_uuid(u);
                    match cfg.wanted.iter_mut().find(|w| w.uuid.as_deref() == Some(&u)) {
                        Some(w) => w.name = Some(name.to_owned()),
                        None => cfg.wanted.push(LuksWanted { uuid: Some(u), name: Some(name.to_owned()) }),
                    }
                }
                _ => {
                    cfg.notes.push(format!("rd.luks.name={}: not UUID=NAME; ignored", lifeboat_fs::shown::shown_str(v)))
                }
            }
        }
        for v in values(c, "rd.luks.key") {
            let (uuid, path) = match v.split_once('=') {
                Some((u, p)) if looks_like_uuid(u) => (Some(norm_uuid(u)), p),
                _ => (None, v),
            };
            if let Some((p, dev)) = path.split_once(':') {
                cfg.notes.push(format!(
                    "rd.luks.key={}: a key file on another device ({}) is not supported; looking for {} in the initrd",
                    lifeboat_fs::shown::shown_str(v),
                    lifeboat_fs::shown::shown_str(dev),
                    lifeboat_fs::shown::shown_str(p)
                ));
                cfg.keys.push((uuid, p.to_owned()));
            } else {
                cfg.keys.push((uuid, path.to_owned()));
            }
        }
        for v in values(c, "rd.luks.options") {
            match v.split_once('=') {
                Some((u, o)) if looks_like_uuid(u) => cfg.options.push((Some(norm_uuid(u)), o.to_owned())),
                _ => cfg.options.push((None, v.to_owned())),
            }
        }
        cfg
    }

    /// The options for the container `uuid`: its own, else the global ones.
    fn options_for(&self, uuid: &str) -> ContainerOptions {
        let text = self
            .options
            .iter()
            .rev()
            .find(|(u, _)| u.as_deref() == Some(uuid))
            .or_else(|| self.options.iter().rev().find(|(u, _)| u.is_none()))
            .map(|(_, o)| o.as_str())
            .unwrap_or("");
        ContainerOptions::parse(text)
    }

    /// The key files to try for `uuid`, in order: named for it, named for all,
    /// then the initrd's `KEY_DIR/<uuid>.key`.
    fn keys_for(&self, uuid: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> =
            self.keys.iter().filter(|(u, _)| u.as_deref() == Some(uuid)).map(|(_, p)| PathBuf::from(p)).collect();
        out.extend(self.keys.iter().filter(|(u, _)| u.is_none()).map(|(_, p)| PathBuf::from(p)));
        out.push(Path::new(KEY_DIR).join(format!("{uuid}.key")));
        out
    }
}

/// `rd.luks.options=` as lifeboat applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerOptions {
    pub discard: bool,
    pub read_only: bool,
    pub tries: u32,
    /// Options lifeboat does not act on (named on the console).
    pub ignored: Vec<String>,
}

impl ContainerOptions {
    pub fn parse(text: &str) -> ContainerOptions {
        let mut o = ContainerOptions { discard: false, read_only: false, tries: TRIES_DEFAULT, ignored: Vec::new() };
        for opt in text.split(',').filter(|s| !s.is_empty()) {
            match opt.split_once('=') {
                None if opt == "discard" || opt == "allow-discards" => o.discard = true,
                None if opt == "readonly" || opt == "read-only" => o.read_only = true,
                // The cipher and sizes come from the LUKS header, whatever crypttab says.
                None if matches!(opt, "luks" | "nofail" | "noauto" | "x-initrd.attach") => {}
                Some(("tries", n)) => match n.parse::<u32>() {
                    // tries=0 means "ask forever" to systemd.
                    Ok(0) => o.tries = u32::MAX,
                    Ok(n) => o.tries = n.min(1000),
                    Err(_) => o.ignored.push(opt.to_owned()),
                },
                _ => o.ignored.push(opt.to_owned()),
            }
        }
        o
    }
}

/// The kernel modules dm-crypt needs for `cipher` (built-in ones are skipped by
/// the loader): the kernel would ask a `modprobe` the initrd does not have.
fn crypto_modules(cipher: &str) -> Vec<&'static str> {
    let mut m = vec!["dm_mod", "dm_crypt"];
    if cipher.contains("xts") {
        m.push("xts");
    }
    if cipher.contains("cbc") {
        m.push("cbc");
    }
    if cipher.contains("essiv") {
        m.extend(["essiv", "sha256_generic"]);
    }
    if cipher.starts_with("aes") {
        // AES-NI where the processor has it; the generic AES is built in.
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if cpu.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "aes")) {
            m.push("aesni_intel");
        }
    }
    m
}

/// What device-mapper takes as a name (`DM_NAME_LEN` 128 with its NUL, no `/`,
/// not `.` or `..`), and what a console shows plainly.
pub fn valid_mapping_name(n: &str) -> bool {
    !n.is_empty() && n.len() < 128 && n != "." && n != ".." && n.bytes().all(|c| c.is_ascii_graphic() && c != b'/')
}

/// KDF costs PID 1 accepts from a header: far above what cryptsetup makes
/// (a few million PBKDF2 iterations, Argon2 passes in the tens), far below a
/// header crafted to keep PID 1 busy for hours.
fn pid1_kdf_limits() -> lifeboat_luks::KdfLimits {
    lifeboat_luks::KdfLimits {
        max_pbkdf2_iterations: 200_000_000,
        max_argon2_time: 1000,
        ..lifeboat_luks::KdfLimits::default()
    }
}

/// The mapping of the LUKS container `uuid`, whatever its name: cryptsetup and
/// lifeboat give it the dm uuid `CRYPT-LUKSn-<uuid without dashes>-<name>`.
fn existing_mapping_of(uuid: &str) -> Option<PathBuf> {
    let hex = uuid.replace('-', "");
    for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("dm-") {
            continue;
        }
        let dmu = std::fs::read_to_string(e.path().join("dm/uuid")).unwrap_or_default();
        let dmu = dmu.trim();
        let ours = ["CRYPT-LUKS1-", "CRYPT-LUKS2-"].iter().any(|p| {
            dmu.strip_prefix(p).is_some_and(|r| r.strip_prefix(hex.as_str()).is_some_and(|r| r.starts_with('-')))
        });
        if ours {
            return Some(PathBuf::from("/dev").join(n));
        }
    }
    None
}

/// A device's size in bytes from sysfs (the scan's figure).
fn size_of(d: &BlockDev) -> u64 {
    d.size
}

impl Boot {
    /// Opens the LUKS container on `dev` (`d` as the scan saw it) as `name`,
    /// with a key file or a passphrase; returns the mapping's device node.
    pub(super) fn open_luks(&mut self, d: &BlockDev, name: Option<&str>) -> Result<PathBuf, BootError> {
        let err = |why: String| BootError::new(Phase::Root, why);
        let shown = d.dev.display().to_string();
        let mut f = File::open(&d.dev).map_err(|e| err(format!("{shown}: {e}")))?;
        let header = Header::read(&shown, &mut f).map_err(|e| err(e.to_string()))?;
        for n in &header.notes {
            say(n);
        }
        let uuid = header.uuid.to_ascii_lowercase();
        let shown_uuid = lifeboat_fs::shown::shown_str(&uuid);
        // A name device-mapper refuses would be refused only after the passphrase.
        let name = match name.filter(|n| valid_mapping_name(n)) {
            Some(n) => n.to_owned(),
            None => {
                if let Some(n) = name {
                    say(format!(
                        "rd.luks.name: {} is not a name device-mapper takes; using luks-{shown_uuid}",
                        lifeboat_fs::shown::shown_str(n)
                    ));
                }
                format!("luks-{uuid}")
            }
        };
        if !valid_mapping_name(&name) {
            return Err(err(format!("{shown}: the LUKS UUID {shown_uuid} cannot name a mapping")));
        }
        // Opened already (by an earlier worker, or `unlock` in the shell), under
        // any name: that mapping is the container's.
        if let Some(node) = existing_mapping_of(&uuid).or_else(|| self.existing_mapping(&name)) {
            self.opened.insert(uuid.clone());
            return Ok(node);
        }
        let opts = self.luks.options_for(&uuid);
        if !opts.ignored.is_empty() {
            say(format!("rd.luks.options: lifeboat does not act on {}", opts.ignored.join(",")));
        }
        let unlock_opts = UnlockOptions { keyslot: None, limits: pid1_kdf_limits() };
        let mut unlocked: Option<Unlocked> = None;
        for key in self.luks.keys_for(&uuid) {
            // A regular file of at most 8 MiB (cryptsetup's default limit): a
            // device or a FIFO named by rd.luks.key= is never read whole or waited on.
            let bytes = match lifeboat_fs::foreign::read_file(&key, 8 << 20) {
                Ok(b) => zeroize::Zeroizing::new(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    say(format!("{shown}: key file {}: {e}", key.display()));
                    continue;
                }
            };
            match header.unlock(&mut f, &bytes, &unlock_opts) {
                Ok(u) => {
                    say(format!("{shown}: opened with the key file {}", key.display()));
                    unlocked = Some(u);
                    break;
                }
                Err(e) if e.is_wrong_passphrase() => {
                    say(format!("{shown}: the key file {} does not open it", key.display()))
                }
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let mut tries = 0;
        while unlocked.is_none() {
            if tries >= opts.tries {
                return Err(err(format!(
                    "{shown} (LUKS{} {shown_uuid}): no key opened it after {tries} passphrase{}; `unlock {shown}` in the shell tries again",
                    header.version,
                    if tries == 1 { "" } else { "s" }
                )));
            }
            tries += 1;
            progress::step(&format!("{}a passphrase for {shown}", progress::ASKING));
            let label = if header.label.is_empty() {
                String::new()
            } else {
                format!(" \"{}\"", lifeboat_fs::shown::shown_str(&header.label))
            };
            let pass =
                ask::ask_secret(&format!("Passphrase for {shown}{label} (LUKS{} {shown_uuid}): ", header.version))
                    .map_err(err)?;
            progress::step(&format!("opening {shown}"));
            match header.unlock(&mut f, &pass, &unlock_opts) {
                Ok(u) => unlocked = Some(u),
                Err(e) if e.is_wrong_passphrase() => say(format!(
                    "{shown}: wrong passphrase{}",
                    match opts.tries.saturating_sub(tries) {
                        0 => String::new(),
                        // tries=0: asked until right.
                        n if opts.tries == u32::MAX => {
                            let _ = n;
                            String::new()
                        }
                        n => format!(" ({n} more tr{})", if n == 1 { "y" } else { "ies" }),
                    }
                )),
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let u = unlocked.ok_or_else(|| err(format!("{shown}: not opened")))?;
        self.map_luks(d, &uuid, header.version, &name, &u, &opts)
    }

    fn existing_mapping(&self, name: &str) -> Option<PathBuf> {
        let dm = DmControl::open().ok()?;
        let info = dm.status(name).ok()??;
        ensure_node(name, info.dev).ok()
    }

    fn map_luks(
        &mut self,
        d: &BlockDev,
        uuid: &str,
        version: u8,
        name: &str,
        u: &Unlocked,
        opts: &ContainerOptions,
    ) -> Result<PathBuf, BootError> {
        let err = |why: String| BootError::new(Phase::Root, why);
        let shown = d.dev.display().to_string();
        if let Some(m) = self.modules.as_mut() {
            for name in crypto_modules(&u.cipher) {
                m.load(name);
            }
        }
        self.say_module_notes();
        let (major, minor) = d.devnum.ok_or_else(|| err(format!("{shown}: no device number")))?;
        let size = size_of(d);
        let data = match u.data_size_bytes {
            Some(n) => n,
            None => size.checked_sub(u.data_offset_bytes).ok_or_else(|| {
                err(format!("{shown}: the LUKS data offset {} is past the device's end ({size})", u.data_offset_bytes))
            })?,
        };
        let mut options: Vec<String> = Vec::new();
        // The header's persistent flag counts as cryptsetup applies it.
        if opts.discard || u.allow_discards_in_header {
            options.push("allow_discards".into());
        }
        options.extend(u.performance_flags.iter().cloned());
        if u.sector_size != 512 {
            options.push(format!("sector_size:{}", u.sector_size));
            // LUKS2 counts the IV in sectors of that size, as cryptsetup maps it.
            options.push("iv_large_sectors".into());
        }
        let opt_refs: Vec<&str> = options.iter().map(String::as_str).collect();
        let target = Target::crypt(
            0,
            data / 512,
            &u.cipher,
            u.volume_key.as_bytes(),
            u.iv_tweak,
            format!("{major}:{minor}"),
            u.data_offset_bytes / 512,
            &opt_refs,
        );
        let dm_uuid = format!("CRYPT-LUKS{version}-{}-{name}", uuid.replace('-', ""));
        let dm = DmControl::open().map_err(|e| err(e.to_string()))?;
        let dev = dm.create(name, &dm_uuid, &[target], opts.read_only).map_err(|e| err(e.to_string()))?;
        let node = ensure_node(name, dev).map_err(|e| err(e.to_string()))?;
        say(format!(
            "{shown}: LUKS{version} {} opened as {} ({u})",
            lifeboat_fs::shown::shown_str(uuid),
            node.display()
        ));
        self.opened.insert(uuid.to_owned());
        Ok(node)
    }

    /// Opens the containers the command line names that are present and not
    /// open yet. Returns whether one was opened.
    pub(super) fn open_named_luks(&mut self, devs: &[BlockDev]) -> Result<bool, BootError> {
        if self.luks.disabled {
            return Ok(false);
        }
        let mut any = false;
        for w in self.luks.wanted.clone() {
            let Some(uuid) = &w.uuid else { continue };
            if self.opened.contains(uuid) {
                continue;
            }
            let found = devs
                .iter()
                .find(|d| d.fstype == Some("crypto_LUKS") && d.uuid.as_deref().map(norm_uuid).as_deref() == Some(uuid));
            if let Some(d) = found {
                self.open_luks(d, w.name.as_deref())?;
                any = true;
            }
        }
        Ok(any)
    }

    /// [`Boot::activate_lvm`] during the root wait: a volume group not complete
    /// yet (its second disk still to come, the named VG not there yet) or a
    /// foreign one lifeboat cannot read is not a reason to stop waiting — said
    /// once, kept for the message if the root never appears.
    pub(super) fn try_lvm(&mut self, devs: &[BlockDev], sel: &Selection) -> usize {
        match self.activate_lvm(devs, sel) {
            Ok(n) => n,
            Err(e) => {
                if self.said.insert(e.why.clone()) {
                    say(format!("LVM: {}; still waiting", e.why));
                }
                self.stack_problem = Some(e.why);
                0
            }
        }
    }

    /// With no container named: opens every LUKS container present (the root
    /// is looked for inside them). Returns whether one was opened.
    pub(super) fn open_any_luks(&mut self, devs: &[BlockDev]) -> Result<bool, BootError> {
        if self.luks.disabled || !self.luks.wanted.is_empty() {
            return Ok(false);
        }
        let mut any = false;
        for d in devs.iter().filter(|d| d.fstype == Some("crypto_LUKS")) {
            let uuid = d.uuid.as_deref().map(norm_uuid).unwrap_or_default();
            if self.opened.contains(&uuid) || self.failed_luks.contains(&uuid) {
                continue;
            }
            say(format!("the root did not appear; {} is a LUKS container: opening it", d.dev.display()));
            match self.open_luks(d, None) {
                Ok(_) => any = true,
                Err(e) => {
                    // The next container may still hold the root.
                    say(e.to_string());
                    self.failed_luks.insert(uuid);
                }
            }
        }
        Ok(any)
    }

    /// Activates the LVM logical volumes `sel` names (every one when it names
    /// none) on the physical volumes present. Returns how many were made.
    pub(super) fn activate_lvm(&mut self, devs: &[BlockDev], sel: &Selection) -> Result<usize, BootError> {
        let err = |why: String| BootError::new(Phase::Root, why);
        if !sel.enabled {
            return Ok(0);
        }
        let mut pvs = Vec::new();
        for d in devs.iter().filter(|d| d.fstype == Some("LVM2_member")) {
            let Some((ma, mi)) = d.devnum else { continue };
            let Ok(f) = File::open(&d.dev) else { continue };
            match lvm::read_pv(&f) {
                Ok(Some(pv)) => pvs.push((DevNo::new(ma, mi), pv)),
                Ok(None) => {}
                Err(e) => say(format!("{}: {e}", d.dev.display())),
            }
        }
        if pvs.is_empty() {
            return Ok(0);
        }
        if let Some(m) = self.modules.as_mut() {
            m.load("dm_mod");
        }
        self.say_module_notes();
        let (plan, notes) = lvm::plan_activation_lenient(&pvs, sel).map_err(|e| err(e.to_string()))?;
        for n in notes {
            // The root wait asks again and again: each note once.
            if self.said.insert(n.clone()) {
                say(format!("LVM: {n}"));
            }
        }
        let dm = DmControl::open().map_err(|e| err(e.to_string()))?;
        let mut made = 0;
        for lv in plan {
            if self.activated.contains(&lv.dm_name) {
                continue;
            }
            // Names come from the disk: only lvm2's own character set makes
            // `/dev/VG/LV` and `/dev/mapper/VG-LV`.
            if !lvm::lvm_name_ok(&lv.vg) || !lvm::lvm_name_ok(&lv.lv) || !valid_mapping_name(&lv.dm_name) {
                let n = format!(
                    "LVM: {}/{} is not a name lvm2 makes; left inactive",
                    lifeboat_fs::shown::shown_str(&lv.vg),
                    lifeboat_fs::shown::shown_str(&lv.lv)
                );
                if self.said.insert(n.clone()) {
                    say(n);
                }
                continue;
            }
            let dev = match dm.status(&lv.dm_name).map_err(|e| err(e.to_string()))? {
                Some(info) => info.dev,
                None => dm
                    .create(&lv.dm_name, &lv.dm_uuid, &lv.targets, lv.read_only)
                    .map_err(|e| err(format!("activating {}/{}: {e}", lv.vg, lv.lv)))?,
            };
            let node = ensure_node(&lv.dm_name, dev).map_err(|e| err(e.to_string()))?;
            // /dev/VG/LV, as udev makes it.
            let vgdir = Path::new("/dev").join(&lv.vg);
            let _ = std::fs::create_dir_all(&vgdir);
            let _ = std::os::unix::fs::symlink(format!("../mapper/{}", lv.dm_name), vgdir.join(&lv.lv));
            say(format!("LVM: activated {}/{} as {}", lv.vg, lv.lv, node.display()));
            self.activated.insert(lv.dm_name.clone());
            made += 1;
        }
        Ok(made)
    }
}

/// The rescue shell's `unlock [DEV] [NAME]`: opens a LUKS container (every one
/// not open when no device is named) with a passphrase.
pub fn shell_unlock(args: &[&str], cmdline: &KernelCmdline) -> Result<String, String> {
    let mut boot = Boot::new(cmdline.clone());
    boot.modules = super::modload::ModuleLoader::open();
    let devs = SysBlock::default().scan_with(true);
    let targets: Vec<&BlockDev> = match args.first() {
        Some(d) => devs.iter().filter(|x| x.dev == Path::new(d) || x.name == *d).collect(),
        None => devs.iter().filter(|x| x.fstype == Some("crypto_LUKS")).collect(),
    };
    if targets.is_empty() {
        return Err(match args.first() {
            Some(d) => format!("no device {d}"),
            None => "no LUKS container found (`disks` lists the block devices)".into(),
        });
    }
    let mut out = Vec::new();
    for d in targets {
        if d.fstype != Some("crypto_LUKS") {
            return Err(format!("{} is not a LUKS container", d.dev.display()));
        }
        let name = args.get(1).copied().map(str::to_owned).or_else(|| {
            let u = d.uuid.as_deref().map(norm_uuid)?;
            boot.luks.wanted.iter().find(|w| w.uuid.as_deref() == Some(&u)).and_then(|w| w.name.clone())
        });
        let node = boot.open_luks(d, name.as_deref()).map_err(|e| e.why)?;
        out.push(format!("{} is open as {}", d.dev.display(), node.display()));
    }
    let devs = SysBlock::default().scan_with(true);
    let sel = Selection::from_cmdline(&cmdline.words.join(" "));
    if let Ok(n) = boot.activate_lvm(&devs, &sel) {
        if n > 0 {
            out.push(format!("{n} LVM logical volume{} activated", if n == 1 { "" } else { "s" }));
        }
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_cryptsetup_generator_forms() {
        let u = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0";
        let c = KernelCmdline::parse(&format!(
            "rd.luks.uuid=luks-{} rd.luks.name={}=cryptroot rd.luks.key={u}=/etc/lifeboat/keys/r.key \
             rd.luks.options=discard,tries=5,timeout=10 luks.key=/k:UUID=1 rd.luks.uuid=AAAAAAAA-0000-0000-0000-000000000000",
            u.to_uppercase(),
            u
        ));
        let cfg = LuksConfig::from_cmdline(&c);
        assert!(!cfg.disabled);
        assert_eq!(
            cfg.wanted,
            vec![
                LuksWanted { uuid: Some(u.into()), name: Some("cryptroot".into()) },
                LuksWanted { uuid: Some("aaaaaaaa-0000-0000-0000-000000000000".into()), name: None },
            ]
        );
        assert_eq!(
            cfg.keys_for(u),
            vec![
                PathBuf::from("/etc/lifeboat/keys/r.key"),
                PathBuf::from("/k"),
                PathBuf::from(format!("/etc/lifeboat/keys/{u}.key"))
            ]
        );
        assert_eq!(cfg.notes.len(), 1, "{:?}", cfg.notes);
        let o = cfg.options_for(u);
        assert!(o.discard && !o.read_only);
        assert_eq!(o.tries, 5);
        assert_eq!(o.ignored, vec!["timeout=10".to_owned()]);
        assert!(LuksConfig::from_cmdline(&KernelCmdline::parse("rd.luks=0")).disabled);
        assert!(LuksConfig::from_cmdline(&KernelCmdline::parse("luks=no")).disabled);
        assert_eq!(ContainerOptions::parse("tries=0").tries, u32::MAX);
        assert_eq!(ContainerOptions::parse("").tries, TRIES_DEFAULT);
    }

    fn pv_dev(file: &str, minor: u32) -> BlockDev {
        BlockDev {
            name: file.into(),
            dev: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/pid1/testdata")).join(file),
            devnum: Some((7, minor)),
            size: 16 << 20,
            fstype: Some("LVM2_member"),
            ..BlockDev::default()
        }
    }

    /// review27: the root wait calls `activate_lvm(..)?` on every pass while it
    /// waits. An unrelated PV (a data disk's VG `datavg`) being present before the
    /// named VG's PV has appeared (a slow disk, a LUKS container still to come) is
    /// an ordinary moment of that wait: it must not end the boot. Today the plan
    /// says NotFound and the root wait ends in the rescue shell at once.
    #[test]
    fn review27_named_lv_not_there_yet_is_not_an_error_while_waiting() {
        let c = KernelCmdline::parse("root=/dev/mapper/vg-root rd.lvm.lv=vg/root");
        let sel = Selection::from_cmdline(&c.words.join(" "));
        let mut boot = Boot::new(c);
        assert_eq!(boot.try_lvm(&[pv_dev("datavg-pv.img", 1)], &sel), 0);
        let p = boot.stack_problem.clone().expect("kept for the timeout message");
        assert!(p.contains("vg/root"), "{p}");
    }

    /// review27: a VG over two disks, one of which shows up a moment later: the
    /// named LV's missing PV must be waited for, not fail the root phase.
    #[test]
    fn review27_second_pv_of_the_named_vg_not_there_yet_is_not_an_error_while_waiting() {
        let c = KernelCmdline::parse("root=/dev/mapper/vg-root rd.lvm.lv=vg/root");
        let sel = Selection::from_cmdline(&c.words.join(" "));
        let mut boot = Boot::new(c);
        assert_eq!(boot.try_lvm(&[pv_dev("vg-pv-a.img", 2)], &sel), 0);
        assert!(boot.stack_problem.is_some());
    }

    /// review27: no rd.lvm.* given, the root not there after 3 s: PID 1 looks in
    /// every VG. One PV on some other disk whose metadata cannot be read (damaged,
    /// another tool's) must cost only a note — the root may be in a LUKS container
    /// opened in the same pass, or on a disk still coming — not the whole boot.
    #[test]
    fn review27_one_unreadable_foreign_pv_does_not_end_the_root_wait() {
        let src = pv_dev("datavg-pv.img", 1);
        let mut img = std::fs::read(&src.dev).unwrap();
        // Damage the metadata text (the area starts at 4096; its header is 512 bytes).
        for b in &mut img[4096 + 512..4096 + 4096] {
            *b ^= 0x5a;
        }
        let bad = std::env::temp_dir().join(format!("lb-review27-badpv-{}", std::process::id()));
        std::fs::write(&bad, &img).unwrap();
        let d = BlockDev { dev: bad.clone(), ..src };
        let c = KernelCmdline::parse("root=/dev/mapper/luks-x");
        let sel = Selection::from_cmdline(&c.words.join(" "));
        let mut boot = Boot::new(c);
        let n = boot.try_lvm(&[d], &sel);
        let _ = std::fs::remove_file(&bad);
        assert_eq!(n, 0);
    }

    /// review27: `rd.luks.name=UUID=..` (or a name of 128+ bytes) is taken as the
    /// mapping's name; device-mapper refuses it only in map_luks, after the user
    /// typed the passphrase — and again after every `continue`. It should be
    /// refused with a note when the command line is read, as names with '/' are.
    #[test]
    fn review27_mapping_names_dm_refuses_are_refused_when_read() {
        let u = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0";
        for bad in ["..".to_owned(), ".".to_owned(), "x".repeat(128)] {
            let cfg = LuksConfig::from_cmdline(&KernelCmdline::parse(&format!("rd.luks.name={u}={bad}")));
            let name = cfg.wanted.iter().find_map(|w| w.name.clone());
            if let Some(n) = name {
                assert!(
                    lifeboat_dm::ioctl::check_name(&n).is_ok(),
                    "rd.luks.name={u}={}: accepted, refused by device-mapper only after the passphrase",
                    &bad[..bad.len().min(8)]
                );
            }
        }
    }

    #[test]
    fn modules_for_ciphers() {
        assert!(crypto_modules("aes-xts-plain64").contains(&"xts"));
        let m = crypto_modules("aes-cbc-essiv:sha256");
        assert!(m.contains(&"cbc") && m.contains(&"essiv") && !m.contains(&"xts"));
    }
}
