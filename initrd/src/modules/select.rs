//! Which modules go into the rescue initrd, the way dracut and booster choose:
//!
//! - the **generic** set: every common block-storage path (NVMe, AHCI/SATA,
//!   virtio-blk and virtio-scsi, SCSI disk, USB storage and UAS with their host
//!   controllers, MMC/SD, hypervisor and common RAID HBA drivers), a keyboard for
//!   the rescue shell, the root filesystems lifeboat mounts (ext4, xfs, btrfs,
//!   f2fs), vfat with its code pages, and efivarfs;
//! - **host-only**: the driver chain of each block device this machine's root,
//!   `/usr`, ESP and XBOOTLDR sit on (from sysfs: every ancestor's driver and
//!   modalias) and their filesystems;
//!
//! plus modules named on the command line. Each comes with its hard dependencies
//! (modules.dep), its soft dependencies (modules.softdep, resolved through
//! modules.alias: `crypto-crc32c` -> `crc32c_generic`, `crc32c_intel`) and the
//! firmware files it declares when they are present. Built-in modules are not
//! errors; a named module that does not exist is, with the nearest names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::index::{norm, ModuleIndex};
use crate::files::Files;
use crate::{Error, Result};

/// The generic set, by module name. Names this kernel does not have (or has
/// built in) are skipped.
pub const GENERIC: &[&str] = &[
    // NVMe, SATA/AHCI and legacy ATA
    "nvme",
    "vmd",
    "ahci",
    "ata_piix",
    "ata_generic",
    "pata_acpi",
    // virtual machines
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "hv_vmbus",
    "hv_storvsc",
    "vmw_pvscsi",
    "xen_blkfront",
    // SCSI disks and common RAID / SAS HBAs
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    "aacraid",
    "hpsa",
    "smartpqi",
    "mptspi",
    "mptsas",
    // USB storage and the host controllers under it
    "usb_storage",
    "uas",
    "xhci_pci",
    "xhci_plat_hcd",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    // MMC / SD cards
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    "rtsx_pci_sdmmc",
    // a keyboard for the rescue shell
    "usbhid",
    "hid_generic",
    "atkbd",
    "i8042",
    // encrypted and LVM roots: device-mapper, dm-crypt and the ciphers LUKS
    // uses (the kernel would ask a modprobe the initrd does not have for them)
    "dm_mod",
    "dm_crypt",
    "xts",
    "cbc",
    "essiv",
    "aesni_intel",
    // filesystems
    "ext4",
    "xfs",
    "btrfs",
    "f2fs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "nls_ascii",
    "efivarfs",
];

/// What the host-only set is built from: sysfs device directories of the block
/// devices that hold the machine's root, `/usr`, ESP and XBOOTLDR (partitions
/// are fine; their parents are walked), and the filesystem types mounted there.
#[derive(Clone, Debug, Default)]
pub struct HostDevices {
    pub devices: Vec<PathBuf>,
    pub fstypes: Vec<String>,
}

/// The chosen modules.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Module names, each after its dependencies.
    pub order: Vec<String>,
    /// Names asked for explicitly: loaded at every boot, not only when hardware
    /// asks for them.
    pub always: Vec<String>,
    /// Names asked for that the kernel has built in.
    pub builtin: Vec<String>,
    /// Soft dependencies resolved to chosen modules: name -> (pre, post).
    pub soft: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Firmware files (relative to the firmware directory) the modules declare
    /// and that exist there.
    pub firmware: Vec<String>,
    /// Firmware declared but absent (not fatal: most is for hardware not here).
    pub firmware_missing: usize,
}

struct Walk<'a> {
    ix: &'a ModuleIndex,
    sel: Selection,
    done: BTreeSet<String>,
    stack: Vec<String>,
}

impl Walk<'_> {
    /// Adds `m` (a module name) after its pre-softdeps and dependencies.
    fn visit(&mut self, m: &str) -> Result<()> {
        if self.done.contains(m) {
            return Ok(());
        }
        if self.stack.iter().any(|s| s == m) {
            let mut cycle = self.stack.clone();
            cycle.push(m.to_owned());
            return Err(Error::Module(format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        self.stack.push(m.to_owned());
        let soft = self.ix.softdeps.get(m).cloned().unwrap_or_default();
        let mut pre = Vec::new();
        for s in &soft.pre {
            for r in self.ix.resolve(s) {
                // A soft dependency back onto the stack is not a cycle to refuse:
                // it only orders loading.
                if !self.stack.contains(&r) {
                    self.visit(&r)?;
                    pre.push(r);
                }
            }
        }
        for d in self.ix.deps.get(m).cloned().unwrap_or_default() {
            if !self.ix.path.contains_key(&d) {
                return Err(Error::Module(format!("{m} depends on {d}, which modules.dep does not list")));
            }
            self.visit(&d)?;
        }
        self.stack.pop();
        self.done.insert(m.to_owned());
        self.sel.order.push(m.to_owned());
        let mut post = Vec::new();
        for s in &soft.post {
            for r in self.ix.resolve(s) {
                if !self.stack.contains(&r) {
                    self.visit(&r)?;
                    post.push(r);
                }
            }
        }
        if !pre.is_empty() || !post.is_empty() {
            self.sel.soft.insert(m.to_owned(), (pre, post));
        }
        Ok(())
    }
}

/// Selects the generic set (or, given `host`, the host-only set) plus `named`.
pub fn select(ix: &ModuleIndex, host: Option<&HostDevices>, named: &[String]) -> Result<Selection> {
    let mut w = Walk { ix, sel: Selection::default(), done: BTreeSet::new(), stack: Vec::new() };
    let base: Vec<String> = match host {
        None => GENERIC.iter().map(|s| s.to_string()).collect(),
        Some(h) => host_modules(ix, h),
    };
    for n in &base {
        for m in ix.resolve(n) {
            w.visit(&m)?;
        }
    }
    for n in named {
        let ms = ix.resolve(n);
        if ms.is_empty() {
            if ix.is_builtin(n) {
                w.sel.builtin.push(norm(n));
                continue;
            }
            let near = ix.near(n);
            return Err(Error::Module(format!(
                "module {n} is neither in {} nor built into the kernel{}",
                ix.dir.join("modules.dep").display(),
                if near.is_empty() { String::new() } else { format!("; did you mean {}?", near.join(", ")) }
            )));
        }
        for m in ms {
            w.visit(&m)?;
            if !w.sel.always.contains(&m) {
                w.sel.always.push(m);
            }
        }
    }
    // efivarfs is what PID 1 reads the loader's partition from: always loaded.
    {
        for m in ix.resolve("efivarfs") {
            w.visit(&m)?;
            if !w.sel.always.contains(&m) {
                w.sel.always.push(m);
            }
        }
    }
    Ok(w.sel)
}

impl HostDevices {
    /// What the host-only set is chosen from, as plain facts, sorted: each
    /// device ancestor's driver module (`module:NAME`, or `driver:NAME` when
    /// the driver has no module link) and modalias (`modalias:...`), and each
    /// filesystem type (`fs:TYPE`). Equal facts give an equal selection from
    /// one module directory, so a cache key covers these instead of the modules.
    pub fn facts(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for dev in &self.devices {
            let mut cur = std::fs::canonicalize(dev).unwrap_or_else(|_| dev.clone());
            loop {
                if let Ok(link) = std::fs::read_link(cur.join("driver/module")) {
                    if let Some(n) = link.file_name() {
                        out.insert(format!("module:{}", norm(&n.to_string_lossy())));
                    }
                } else if let Ok(link) = std::fs::read_link(cur.join("driver")) {
                    if let Some(n) = link.file_name() {
                        out.insert(format!("driver:{}", norm(&n.to_string_lossy())));
                    }
                }
                if let Ok(alias) = std::fs::read_to_string(cur.join("modalias")) {
                    out.insert(format!("modalias:{}", alias.trim()));
                }
                if !cur.pop() || cur.file_name().is_none_or(|n| n == "devices" || n == "sys") {
                    break;
                }
            }
        }
        for t in &self.fstypes {
            let t = if t == "vfat" || t == "msdos" { "vfat" } else { t.as_str() };
            out.insert(format!("fs:{t}"));
        }
        out.into_iter().collect()
    }
}

/// Modules of the host's block devices: every sysfs ancestor's driver (by its
/// `module` link, or by name) and modalias, and the filesystems mounted there
/// (from [`HostDevices::facts`]).
pub fn host_modules(ix: &ModuleIndex, host: &HostDevices) -> Vec<String> {
    let mut out = BTreeSet::new();
    for fact in host.facts() {
        let Some((kind, v)) = fact.split_once(':') else { continue };
        match kind {
            "module" => {
                out.insert(v.to_owned());
            }
            "driver" if ix.path.contains_key(v) => {
                out.insert(v.to_owned());
            }
            "modalias" => out.extend(ix.for_modalias(v)),
            "fs" => {
                out.insert(format!("fs-{v}"));
                if v == "vfat" {
                    out.extend(["nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii"].map(String::from));
                }
            }
            _ => {}
        }
    }
    out.into_iter().collect()
}

/// Firmware files the selected modules declare (`firmware=` in their module
/// info), kept when present in `firmware` (the tree below /lib/firmware:
/// symlinks resolved there, as the kernel's loader resolves them, regular
/// files only); `None` when there is no such directory.
pub fn firmware(sel: &mut Selection, module_bytes: &BTreeMap<String, Vec<u8>>, firmware: Option<&dyn Files>) {
    let mut have = BTreeSet::new();
    for m in &sel.order {
        let Some(b) = module_bytes.get(m) else { continue };
        for fw in super::modinfo::values(b, "firmware") {
            if fw.split('/').any(|c| c == ".." || c.is_empty()) {
                continue;
            }
            if firmware.is_some_and(|d| d.is_file(&fw)) {
                have.insert(fw);
            } else {
                sel.firmware_missing += 1;
            }
        }
    }
    sel.firmware = have.into_iter().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix() -> ModuleIndex {
        let mut ix = ModuleIndex::default();
        ix.parse_dep(
            "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko\nkernel/fs/jbd2/jbd2.ko:\n\
             kernel/lib/crc16.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko:\n\
             kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
             kernel/drivers/nvme/host/nvme-core.ko:\nkernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\n\
             kernel/drivers/ata/libahci.ko:\nkernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
        )
        .unwrap();
        ix.parse_alias(
            "alias crypto-crc32c crc32c_generic\nalias crypto-crc32c crc32c_intel\nalias fs-ext4 ext4\n\
             alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias pci:v*d*sv*sd*bc01sc06i01* ahci\n",
        );
        ix.parse_softdep("softdep ext4 pre: crypto-crc32c\n");
        ix.builtin = ["efivarfs".to_owned(), "vfat".to_owned()].into();
        ix
    }

    #[test]
    fn generic_follows_softdeps_through_aliases_and_skips_what_is_missing() {
        let s = select(&ix(), None, &[]).unwrap();
        let pos = |m: &str| s.order.iter().position(|x| x == m).unwrap_or_else(|| panic!("{m} not chosen: {s:?}"));
        assert!(pos("crc32c_generic") < pos("ext4") && pos("crc32c_intel") < pos("ext4"));
        assert!(pos("jbd2") < pos("ext4") && pos("nvme_core") < pos("nvme") && pos("libahci") < pos("ahci"));
        assert_eq!(s.soft["ext4"].0, ["crc32c_generic", "crc32c_intel"]);
        assert!(!s.order.contains(&"a".to_owned()));
    }

    #[test]
    fn named_modules_builtins_unknowns_and_cycles() {
        let ix = ix();
        let s = select(&ix, Some(&HostDevices::default()), &["nvme".into(), "vfat".into()]).unwrap();
        assert_eq!(s.order, ["nvme_core", "nvme"]);
        assert_eq!(s.always, ["nvme"]);
        assert!(s.builtin.contains(&"vfat".to_owned()));
        let e = select(&ix, Some(&HostDevices::default()), &["ext5".into()]).unwrap_err().to_string();
        assert!(e.contains("ext5") && e.contains("did you mean ext4"), "{e}");
        let e = select(&ix, Some(&HostDevices::default()), &["a".into()]).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("a -> b -> a"), "{e}");
    }

    #[test]
    fn host_only_walks_a_stand_in_sysfs() {
        let t = std::env::temp_dir().join(format!("lb-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let pci = t.join("devices/pci0000:00/0000:00:03.0");
        let part = pci.join("nvme/nvme0/nvme0n1/nvme0n1p2");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::create_dir_all(t.join("bus/pci/drivers/nvme")).unwrap();
        std::fs::create_dir_all(t.join("module/nvme")).unwrap();
        std::os::unix::fs::symlink(t.join("bus/pci/drivers/nvme"), pci.join("driver")).unwrap();
        std::os::unix::fs::symlink(t.join("module/nvme"), t.join("bus/pci/drivers/nvme/module")).unwrap();
        std::fs::write(pci.join("modalias"), "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n").unwrap();
        let host = HostDevices { devices: vec![part], fstypes: vec!["ext4".into()] };
        let s = select(&ix(), Some(&host), &[]).unwrap();
        let mut got = s.order.clone();
        got.sort();
        assert_eq!(got, ["crc16", "crc32c_generic", "crc32c_intel", "ext4", "jbd2", "nvme", "nvme_core"]);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
