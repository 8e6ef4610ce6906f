//! The stack of block devices under a device number, read from sysfs only: a
//! root on dm-crypt (LUKS), on an LVM logical volume (on LUKS or not), is a
//! `dm-N` device whose `dm/name`, `dm/uuid` and `slaves/` lead down to the
//! partitions and disks underneath. `boot sync` needs two things from the walk:
//! the disk whose ESP boots the system, and what the initrd must unlock and
//! activate before the root exists. Each layer is classified by the dm uuid that
//! cryptsetup and LVM give their mappings; a LUKS container's UUID is read from
//! its own header when it can be, as that is what the next boot matches it by.
//! A layer of any other kind is named as such and never guessed at, and the walk
//! is bounded: a cycle in `slaves/` or an absurd depth is an error, not a hang.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use lifeboat_fs::shown::{shown_path, shown_str};

use crate::blockdev::{parse_devnum, read_trim, DiskOf, SysBlock};
use crate::{Error, Result};

/// Layers below the device walked from, at most (real stacks are 1–4 deep:
/// LVM on LUKS on a partition, a thin LV on its pool on its data LV...).
pub const MAX_DEPTH: usize = 16;

/// Devices met in one walk, at most (an LV spanning many disks stays well below).
pub const MAX_DEVICES: usize = 256;

/// What one stacked layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// dm-crypt on a LUKS container, as cryptsetup and systemd-cryptsetup map it
    /// (dm uuid `CRYPT-LUKS<v>-<uuid hex>-<name>`). `uuid` is the container's
    /// UUID, dashed and lowercase, when known.
    Luks { version: u8, uuid: Option<String> },
    /// The dm-integrity device cryptsetup puts under a LUKS2 container with
    /// authenticated encryption (`CRYPT-SUBDEV-`): part of the container above,
    /// opened with it.
    LuksSubdev,
    /// An LVM logical volume (dm uuid `LVM-<vg uuid><lv uuid>`); `sub` names an
    /// LVM-internal layer of it (`real`, `cow`, `tpool`, ...).
    Lvm { vg: String, lv: String, sub: Option<String> },
    /// Anything lifeboat cannot name on a kernel command line: multipath,
    /// kpartx partition mappings, dm-verity, dm-integrity, plain dm-crypt,
    /// mappings without a dm uuid, md RAID, ...
    Other { what: String },
}

/// One stacked layer (a device with devices below it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Kernel name (`dm-1`).
    pub name: String,
    pub devnum: Option<(u32, u32)>,
    /// `dm/name` (`vg0-root`, `luks-…`), for device-mapper layers.
    pub dm_name: Option<String>,
    /// `dm/uuid`, for device-mapper layers that have one.
    pub dm_uuid: Option<String>,
    pub kind: LayerKind,
    /// Kernel names of the devices directly below.
    pub below: Vec<String>,
    /// What the user should hear about this layer (a header that disagrees with
    /// the mapping, one that could not be read).
    pub notes: Vec<String>,
}

/// A partition or whole disk at the bottom of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bottom {
    /// Kernel name (`vda3`).
    pub name: String,
    pub devnum: Option<(u32, u32)>,
    pub disk: DiskOf,
}

/// The devices under one device number: its layers top first (empty for a
/// plain partition or disk), and the partitions and disks underneath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// Kernel name of the device walked from.
    pub top: String,
    /// Layers in walk order (depth first, top first, each once).
    pub layers: Vec<Layer>,
    /// Partitions and disks at the bottom, in walk order, each once.
    pub bottoms: Vec<Bottom>,
}

impl Stack {
    /// Whether the device is a partition or disk itself, with nothing stacked.
    pub fn is_plain(&self) -> bool {
        self.layers.is_empty()
    }

    /// The whole disks underneath, each once, in walk order.
    pub fn disks(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for b in &self.bottoms {
            if !out.contains(&b.disk.disk) {
                out.push(b.disk.disk.clone());
            }
        }
        out
    }

    /// The layers lifeboat cannot describe, shown (`dm-2 (multipath, …)`).
    pub fn unknown(&self) -> Vec<String> {
        self.layers.iter().filter(|l| matches!(l.kind, LayerKind::Other { .. })).map(Layer::shown).collect()
    }

    /// One line for the user: `dm-1 (LVM vg0/root) on dm-0 (LUKS2 …) on vda3`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.layers.iter().map(Layer::shown).collect();
        parts.extend(self.bottoms.iter().map(|b| shown_str(&b.name)));
        parts.join(" on ")
    }
}

impl Layer {
    /// The layer for the user: kernel name and what it is.
    pub fn shown(&self) -> String {
        let what = match &self.kind {
            LayerKind::Luks { version, uuid: Some(u) } => format!("LUKS{version} {u}"),
            LayerKind::Luks { version, uuid: None } => format!("LUKS{version}, UUID unknown"),
            LayerKind::LuksSubdev => "integrity under a LUKS2 container".to_owned(),
            LayerKind::Lvm { vg, lv, sub: None } => format!("LVM {}/{}", shown_str(vg), shown_str(lv)),
            LayerKind::Lvm { vg, lv, sub: Some(s) } => {
                format!("LVM {}/{}, its {} layer", shown_str(vg), shown_str(lv), shown_str(s))
            }
            LayerKind::Other { what } => what.clone(),
        };
        format!("{} ({what})", shown_str(&self.name))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// 32 hex digits as a dashed, lowercase UUID (8-4-4-4-12).
pub fn dashed_uuid(hex32: &str) -> Option<String> {
    if hex32.len() != 32 || !hex32.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex32.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A dashed UUID (8-4-4-4-12 hex), lowercased; `None` for anything else, so
/// nothing but a UUID is ever written into a kernel command line from a header.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|c| c.is_ascii_hexdigit())) {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// The LUKS magic at offset 0 of both LUKS1 and LUKS2 (primary) headers.
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Where both binary headers keep the UUID, a NUL-padded 40-byte text field.
const LUKS_UUID_AT: usize = 168;
const LUKS_UUID_LEN: usize = 40;

/// A LUKS header's version and UUID, from the first bytes of a device; `None`
/// when there is no LUKS magic. The UUID is `None` when the field is not a UUID.
pub fn luks_header(b: &[u8]) -> Option<(u16, Option<String>)> {
    if b.get(0..6)? != LUKS_MAGIC {
        return None;
    }
    let version = u16::from_be_bytes([*b.get(6)?, *b.get(7)?]);
    let field = b.get(LUKS_UUID_AT..LUKS_UUID_AT + LUKS_UUID_LEN)?;
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let uuid = std::str::from_utf8(&field[..end]).ok().and_then(canonical_uuid);
    Some((version, uuid))
}

/// [`luks_header`] of the device node `dev`.
fn read_luks_header(dev: &Path) -> std::io::Result<Option<(u16, Option<String>)>> {
    let mut b = [0u8; LUKS_UUID_AT + LUKS_UUID_LEN];
    let mut f = fs::File::open(dev)?;
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(luks_header(&b[..n]))
}

/// Splits an LVM dm name `VG-LV` where a `-` inside either name is doubled.
/// Returns the VG and the rest (the LV, and an internal layer's suffix if any),
/// undoubled; `None` when there is no single dash.
pub fn split_lvm_name(dm_name: &str) -> Option<(String, String)> {
    let b = dm_name.as_bytes();
    let mut vg = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                vg.push('-');
                i += 2;
                continue;
            }
            let rest = dm_name.get(i + 1..)?.replace("--", "-");
            return (!vg.is_empty() && !rest.is_empty()).then_some((vg, rest));
        }
        // Byte-wise is safe: '-' is ASCII and never part of a UTF-8 sequence.
        let ch = dm_name[i..].chars().next()?;
        vg.push(ch);
        i += ch.len_utf8();
    }
    None
}

/// Whether `s` is a name LVM allows (`[A-Za-z0-9+_.-]`), and so can be written
/// on a kernel command line as it is.
fn lvm_name_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"+_.-".contains(&c))
}

/// An LVM layer from its dm uuid (after `LVM-`) and dm name.
fn lvm_kind(uuid_rest: &str, dm_name: Option<&str>) -> LayerKind {
    let ids = uuid_rest.get(..64).filter(|s| s.bytes().all(|c| c.is_ascii_alphanumeric()));
    let sub = uuid_rest.get(64..).and_then(|s| s.strip_prefix('-')).filter(|s| !s.is_empty());
    let whole = uuid_rest.len() == 64 || sub.is_some();
    let (Some(_), true) = (ids, whole) else {
        return LayerKind::Other { what: format!("an LVM mapping with an odd dm uuid LVM-{}", shown_str(uuid_rest)) };
    };
    let Some((vg, mut lv)) = dm_name.and_then(split_lvm_name) else {
        return LayerKind::Other {
            what: format!("an LVM mapping whose dm name {} is not VG-LV", shown_str(dm_name.unwrap_or(""))),
        };
    };
    if let Some(s) = sub {
        if let Some(l) = lv.strip_suffix(&format!("-{s}")) {
            lv = l.to_owned();
        }
    }
    if !lvm_name_ok(&vg) || !lvm_name_ok(&lv) {
        return LayerKind::Other {
            what: format!("an LVM volume {}/{} whose name LVM would not give", shown_str(&vg), shown_str(&lv)),
        };
    }
    LayerKind::Lvm { vg, lv, sub: sub.map(str::to_owned) }
}

/// A device-mapper layer by its dm uuid, as its maker wrote it.
fn dm_kind(uuid: Option<&str>, dm_name: Option<&str>) -> LayerKind {
    let Some(uuid) = uuid else {
        return LayerKind::Other { what: "a device-mapper mapping with no dm uuid (made by hand?)".to_owned() };
    };
    for (prefix, version) in [("CRYPT-LUKS1-", 1), ("CRYPT-LUKS2-", 2)] {
        if let Some(rest) = uuid.strip_prefix(prefix) {
            let hex = rest.split('-').next().unwrap_or("");
            return LayerKind::Luks { version, uuid: dashed_uuid(hex) };
        }
    }
    if uuid.starts_with("CRYPT-SUBDEV-") {
        return LayerKind::LuksSubdev;
    }
    if let Some(rest) = uuid.strip_prefix("LVM-") {
        return lvm_kind(rest, dm_name);
    }
    let what = if let Some(rest) = uuid.strip_prefix("CRYPT-") {
        match rest.split('-').next().unwrap_or("") {
            "PLAIN" => "plain dm-crypt (no LUKS header to name it by)".to_owned(),
            "VERITY" => "dm-verity".to_owned(),
            "INTEGRITY" => "dm-integrity".to_owned(),
            "BITLK" => "BitLocker (dm-crypt)".to_owned(),
            "TCRYPT" => "TrueCrypt/VeraCrypt (dm-crypt)".to_owned(),
            t => format!("dm-crypt of type {}", shown_str(t)),
        }
    } else if uuid.starts_with("mpath-") {
        "multipath".to_owned()
    } else if uuid.starts_with("part") && uuid.split('-').next().is_some_and(|p| p[4..].parse::<u32>().is_ok()) {
        "a partition mapping (kpartx)".to_owned()
    } else if uuid.starts_with("stratis-") {
        "Stratis".to_owned()
    } else {
        let prefix = uuid.split('-').next().unwrap_or(uuid);
        format!("a device-mapper mapping of kind {}", shown_str(prefix))
    };
    LayerKind::Other { what: format!("{what}, dm uuid {}", shown_str(uuid)) }
}

/// The state of one walk.
struct Walk<'a> {
    sys: &'a SysBlock,
    /// Kernel name of the device walked from, for errors.
    top: String,
    layers: Vec<Layer>,
    bottoms: Vec<Bottom>,
    /// Devices fully walked (a device reached twice is walked once).
    done: BTreeSet<PathBuf>,
    /// The chain from the top to the device being walked, for cycles.
    chain: Vec<PathBuf>,
    met: usize,
}

impl Walk<'_> {
    fn stack_err(&self, why: String) -> Error {
        Error::Stack { device: self.top.clone(), why }
    }

    fn visit(&mut self, real: &Path) -> Result<()> {
        if let Some(at) = self.chain.iter().position(|p| p == real) {
            let mut names: Vec<String> = self.chain[at..].iter().map(|p| shown_str(&file_name(p))).collect();
            names.push(shown_str(&file_name(real)));
            return Err(self.stack_err(format!("the devices' slaves form a cycle: {}", names.join(" → "))));
        }
        if self.done.contains(real) {
            return Ok(());
        }
        if self.chain.len() > MAX_DEPTH {
            return Err(self.stack_err(format!("more than {MAX_DEPTH} layers deep; refusing to walk further")));
        }
        self.met += 1;
        if self.met > MAX_DEVICES {
            return Err(self.stack_err(format!("more than {MAX_DEVICES} devices underneath; refusing to walk further")));
        }
        let name = file_name(real);
        let devnum = read_trim(&real.join("dev")).and_then(|s| parse_devnum(&s));
        let below = self.slaves(real)?;
        let dm = real.join("dm").is_dir();
        if dm || !below.is_empty() {
            let layer = self.layer(real, &name, devnum, dm, &below);
            self.layers.push(layer);
            self.chain.push(real.to_path_buf());
            for b in &below {
                self.visit(b)?;
            }
            self.chain.pop();
        } else {
            let disk = match read_trim(&real.join("partition")).and_then(|s| s.parse::<u32>().ok()) {
                Some(n) => {
                    let parent = real.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
                    let parent = parent
                        .ok_or_else(|| Error::Invalid(format!("{}: partition without a disk", real.display())))?;
                    DiskOf { disk: self.sys.dev.join(parent), partition: Some(n) }
                }
                None => DiskOf { disk: self.sys.dev.join(&name), partition: None },
            };
            self.bottoms.push(Bottom { name, devnum, disk });
        }
        self.done.insert(real.to_path_buf());
        Ok(())
    }

    /// The devices directly below `real` (its `slaves/`), resolved, in name order.
    fn slaves(&self, real: &Path) -> Result<Vec<PathBuf>> {
        let dir = real.join("slaves");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        let mut links: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(dir.display().to_string(), e))?;
            links.push(e.path());
            if links.len() > MAX_DEVICES {
                return Err(self.stack_err(format!("{}: more than {MAX_DEVICES} slaves", dir.display())));
            }
        }
        links.sort();
        links.iter().map(|l| fs::canonicalize(l).map_err(|e| Error::io(l.display().to_string(), e))).collect()
    }

    fn layer(&self, real: &Path, name: &str, devnum: Option<(u32, u32)>, dm: bool, below: &[PathBuf]) -> Layer {
        let dm_name = read_trim(&real.join("dm/name")).filter(|s| !s.is_empty());
        let dm_uuid = read_trim(&real.join("dm/uuid")).filter(|s| !s.is_empty());
        let mut notes = Vec::new();
        let kind = if dm {
            let mut kind = dm_kind(dm_uuid.as_deref(), dm_name.as_deref());
            if let LayerKind::Luks { version, uuid } = &mut kind {
                self.luks_uuid(name, *version, uuid, below, &mut notes);
            }
            kind
        } else if real.join("md").is_dir() {
            LayerKind::Other { what: "md RAID".to_owned() }
        } else {
            LayerKind::Other { what: "a stacked device that is not device-mapper".to_owned() }
        };
        let below = below.iter().map(|b| file_name(b)).collect();
        Layer { name: name.to_owned(), devnum, dm_name, dm_uuid, kind, below, notes }
    }

    /// Settles a LUKS layer's UUID: its container's header says what the next
    /// boot will match, so it wins over the mapping's dm uuid; the dm uuid is
    /// kept when the header cannot be read.
    fn luks_uuid(
        &self,
        name: &str,
        version: u8,
        uuid: &mut Option<String>,
        below: &[PathBuf],
        notes: &mut Vec<String>,
    ) {
        let [slave] = below else {
            notes.push(format!(
                "{}: a LUKS mapping over {} devices; its UUID is taken from the mapping's dm uuid",
                shown_str(name),
                below.len()
            ));
            return;
        };
        let sname = file_name(slave);
        let node = self.sys.dev.join(&sname);
        match read_luks_header(&node) {
            Ok(Some((v, Some(h)))) => {
                if uuid.as_ref().is_some_and(|d| *d != h) {
                    notes.push(format!(
                        "{}: the LUKS header on {} has UUID {h}, the mapping's dm uuid says {}; the header's is \
                         used (it is what the next boot finds)",
                        shown_str(name),
                        shown_str(&sname),
                        uuid.as_deref().unwrap_or("")
                    ));
                }
                if u16::from(version) != v {
                    notes.push(format!(
                        "{}: the mapping says LUKS{version}, the header on {} LUKS{v}",
                        shown_str(name),
                        shown_str(&sname)
                    ));
                }
                *uuid = Some(h);
            }
            Ok(Some((_, None))) => notes.push(format!(
                "{}: the LUKS header on {} holds no valid UUID; the mapping's dm uuid is used",
                shown_str(name),
                shown_str(&sname)
            )),
            Ok(None) => notes.push(format!(
                "{}: no LUKS header on {} (a detached header?); the UUID is the mapping's dm uuid, and the \
                 initrd needs the header too",
                shown_str(name),
                shown_str(&sname)
            )),
            Err(e) => notes.push(format!(
                "{}: the LUKS header on {} could not be read ({e}); the UUID is the mapping's dm uuid",
                shown_str(name),
                shown_path(&node)
            )),
        }
    }
}

impl SysBlock {
    /// The stack under device `major:minor`: its layers (none for a plain
    /// partition or disk) and the partitions and disks underneath.
    pub fn stack_of(&self, major: u32, minor: u32) -> Result<Stack> {
        let link = self.sys.join(format!("dev/block/{major}:{minor}"));
        let real = fs::canonicalize(&link).map_err(|e| Error::io(link.display().to_string(), e))?;
        let top = file_name(&real);
        let mut w = Walk {
            sys: self,
            top: top.clone(),
            layers: Vec::new(),
            bottoms: Vec::new(),
            done: BTreeSet::new(),
            chain: Vec::new(),
            met: 0,
        };
        w.visit(&real)?;
        Ok(Stack { top, layers: w.layers, bottoms: w.bottoms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_names_split_on_the_single_dash() {
        assert_eq!(split_lvm_name("vg0-root"), Some(("vg0".into(), "root".into())));
        assert_eq!(split_lvm_name("my--vg-my--lv"), Some(("my-vg".into(), "my-lv".into())));
        assert_eq!(split_lvm_name("vg-pool-tpool"), Some(("vg".into(), "pool-tpool".into())));
        assert_eq!(split_lvm_name("a---b"), Some(("a-".into(), "b".into())));
        for bad in ["", "novg", "-lv", "vg-", "a--b", "é--x"] {
            assert_eq!(split_lvm_name(bad), None, "{bad}");
        }
        assert_eq!(split_lvm_name("é-x"), Some(("é".into(), "x".into())));
    }

    const VG: &str = "Xd3ZkRvQ0OmmH5Lq8uE0mA9y3s7Xe2Kc";
    const LV: &str = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6";

    #[test]
    fn dm_uuids_classified() {
        let luks = dm_kind(Some("CRYPT-LUKS2-0123456789ABCDEF0123456789abcdef-luks-x"), Some("luks-x"));
        assert_eq!(luks, LayerKind::Luks { version: 2, uuid: Some("01234567-89ab-cdef-0123-456789abcdef".into()) });
        assert_eq!(dm_kind(Some("CRYPT-LUKS1-nothex-x"), None), LayerKind::Luks { version: 1, uuid: None });
        let lvm = dm_kind(Some(&format!("LVM-{VG}{LV}")), Some("vg0-root"));
        assert_eq!(lvm, LayerKind::Lvm { vg: "vg0".into(), lv: "root".into(), sub: None });
        let pool = dm_kind(Some(&format!("LVM-{VG}{LV}-tpool")), Some("vg0-pool-tpool"));
        assert_eq!(pool, LayerKind::Lvm { vg: "vg0".into(), lv: "pool".into(), sub: Some("tpool".into()) });
        assert_eq!(dm_kind(Some("CRYPT-SUBDEV-abc-x_dif"), None), LayerKind::LuksSubdev);
        for (uuid, name, what) in [
            ("mpath-3600a0b80", "mpatha", "multipath"),
            ("part1-mpath-3600", "mpatha1", "partition mapping"),
            ("CRYPT-VERITY-abc-usr", "usr", "dm-verity"),
            ("CRYPT-PLAIN-x", "x", "plain dm-crypt"),
            ("LVM-short", "vg0-root", "odd dm uuid"),
            (&format!("LVM-{VG}{LV}"), "noname", "not VG-LV"),
            (&format!("LVM-{VG}{LV}"), "vg0-ro\"ot", "LVM would not give"),
            ("weird", "x", "kind weird"),
        ] {
            match dm_kind(Some(uuid), Some(name)) {
                LayerKind::Other { what: w } => assert!(w.contains(what), "{uuid}: {w}"),
                k => panic!("{uuid}: {k:?}"),
            }
        }
        assert!(matches!(dm_kind(None, Some("x")), LayerKind::Other { .. }));
    }

    #[test]
    fn luks_headers_read_and_checked() {
        let mut b = vec![0u8; 512];
        b[..6].copy_from_slice(LUKS_MAGIC);
        b[7] = 2;
        b[168..204].copy_from_slice(b"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0");
        assert_eq!(luks_header(&b), Some((2, Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()))));
        b[170] = b' ';
        assert_eq!(luks_header(&b), Some((2, None)));
        b[0] = b'X';
        assert_eq!(luks_header(&b), None);
        for cut in [0, 5, 7, 170, 207] {
            let _ = luks_header(&b[..cut]);
        }
        assert_eq!(canonical_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 x"), None);
    }

    /// A fake sysfs: `dm-N` under devices/virtual/block, `dev/block` links.
    fn fake(t: &Path, names: &[&str]) {
        for n in names {
            let d = t.join("devices/virtual/block").join(n);
            fs::create_dir_all(d.join("slaves")).unwrap();
            fs::create_dir_all(d.join("dm")).unwrap();
            let minor: u32 = n.trim_start_matches("dm-").parse().unwrap();
            fs::write(d.join("dev"), format!("253:{minor}\n")).unwrap();
            fs::create_dir_all(t.join("dev/block")).unwrap();
            std::os::unix::fs::symlink(
                format!("../../devices/virtual/block/{n}"),
                t.join(format!("dev/block/253:{minor}")),
            )
            .unwrap();
        }
    }

    fn slave(t: &Path, upper: &str, lower: &str) {
        std::os::unix::fs::symlink(
            format!("../../{lower}"),
            t.join("devices/virtual/block").join(upper).join("slaves").join(lower),
        )
        .unwrap();
    }

    #[test]
    fn cycles_and_depth_refused() {
        let t = std::env::temp_dir().join(format!("lb-stack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        fake(&t, &["dm-0", "dm-1", "dm-2"]);
        slave(&t, "dm-0", "dm-1");
        slave(&t, "dm-1", "dm-2");
        slave(&t, "dm-2", "dm-1");
        let sb = SysBlock { sys: t.clone(), dev: t.join("dev") };
        let e = sb.stack_of(253, 0).unwrap_err().to_string();
        assert!(e.contains("cycle: dm-1 → dm-2 → dm-1"), "{e}");
        // A chain deeper than MAX_DEPTH.
        let names: Vec<String> = (10..10 + MAX_DEPTH as u32 + 2).map(|i| format!("dm-{i}")).collect();
        fake(&t, &names.iter().map(String::as_str).collect::<Vec<_>>());
        for w in names.windows(2) {
            slave(&t, &w[0], &w[1]);
        }
        let e = sb.stack_of(253, 10).unwrap_err().to_string();
        assert!(e.contains("layers deep"), "{e}");
        // A diamond is no cycle: dm-40 on dm-41 and dm-42, both on dm-43.
        fake(&t, &["dm-40", "dm-41", "dm-42", "dm-43"]);
        slave(&t, "dm-40", "dm-41");
        slave(&t, "dm-40", "dm-42");
        slave(&t, "dm-41", "dm-43");
        slave(&t, "dm-42", "dm-43");
        let s = sb.stack_of(253, 40).unwrap();
        let names: Vec<&str> = s.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["dm-40", "dm-41", "dm-43", "dm-42"]);
        assert!(s.bottoms.is_empty());
        fs::remove_dir_all(&t).unwrap();
    }
}
