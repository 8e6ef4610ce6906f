//! The root phase of a boot: what `root=` names (or, without it, the Discoverable
//! Partitions root on the disk the loader started from), waiting for it to appear
//! for `lifeboat.rootwait` seconds, and mounting it on `/sysroot`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_esp::blockdev::{probe_fs, BlockDev, SysBlock};
use lifeboat_esp::PartitionKind;
use nix::mount::{mount, MsFlags};

use super::{devices, progress, say, Boot, BootError, Phase, SYSROOT};

/// What `root=` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSpec {
    /// `PARTUUID=` (with `/PARTNROFF=n`: the partition n further on that disk).
    PartUuid(String, i64),
    Uuid(String),
    /// `LABEL=`: the filesystem label.
    Label(String),
    /// `PARTLABEL=`: the GPT partition name.
    PartLabel(String),
    Path(PathBuf),
    /// No `root=`: the DPS root partition type.
    Discover,
}

/// Undoes udev's escaping of `/dev/disk/by-label/` names (`\x20` for a space).
fn unescape_udev(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RootSpec {
    /// Parses `root=` in every form a user copies from a running system:
    /// `PARTUUID=` (`/PARTNROFF=n`), `UUID=`, `LABEL=`, `PARTLABEL=`, the
    /// `/dev/disk/by-{partuuid,uuid,label,partlabel}/` links, or a device path.
    pub fn parse(v: Option<&str>) -> RootSpec {
        let Some(v) = v else { return RootSpec::Discover };
        let partuuid = |u: &str| {
            let (u, off) = match u.split_once("/PARTNROFF=") {
                Some((u, n)) => (u, n.parse::<i64>().unwrap_or(0)),
                None => (u, 0),
            };
            RootSpec::PartUuid(u.to_ascii_lowercase(), off)
        };
        if let Some(u) = v.strip_prefix("PARTUUID=") {
            partuuid(u)
        } else if let Some(u) = v.strip_prefix("UUID=") {
            RootSpec::Uuid(u.to_ascii_lowercase())
        } else if let Some(l) = v.strip_prefix("LABEL=") {
            RootSpec::Label(l.to_owned())
        } else if let Some(l) = v.strip_prefix("PARTLABEL=") {
            RootSpec::PartLabel(l.to_owned())
        } else if let Some(u) = v.strip_prefix("/dev/disk/by-partuuid/") {
            partuuid(u)
        } else if let Some(u) = v.strip_prefix("/dev/disk/by-uuid/") {
            RootSpec::Uuid(u.to_ascii_lowercase())
        } else if let Some(l) = v.strip_prefix("/dev/disk/by-label/") {
            RootSpec::Label(unescape_udev(l))
        } else if let Some(l) = v.strip_prefix("/dev/disk/by-partlabel/") {
            RootSpec::PartLabel(unescape_udev(l))
        } else {
            RootSpec::Path(PathBuf::from(v))
        }
    }

    /// The device `self` names among `devs`, if present now. `boot_partuuid` is
    /// the loader's `LoaderDevicePartUUID`, which picks the disk for discovery.
    pub fn find(&self, devs: &[BlockDev], boot_partuuid: Option<&str>) -> Result<Option<PathBuf>, String> {
        match self {
            RootSpec::Path(p) => Ok(p.exists().then(|| p.clone())),
            RootSpec::PartUuid(u, 0) => {
                Ok(devs.iter().find(|d| d.partuuid.as_deref() == Some(u)).map(|d| d.dev.clone()))
            }
            RootSpec::PartUuid(u, off) => {
                let Some((disk, n)) =
                    devs.iter().find(|d| d.partuuid.as_deref() == Some(u)).and_then(|d| d.parent.clone())
                else {
                    return Ok(None);
                };
                let want = n as i64 + off;
                Ok(devs
                    .iter()
                    .find(|d| d.parent.as_ref().is_some_and(|(dk, dn)| *dk == disk && *dn as i64 == want))
                    .map(|d| d.dev.clone()))
            }
            RootSpec::Label(l) => Ok(devs.iter().find(|d| d.label.as_deref() == Some(l)).map(|d| d.dev.clone())),
            RootSpec::PartLabel(l) => {
                Ok(devs.iter().find(|d| d.partlabel.as_deref() == Some(l)).map(|d| d.dev.clone()))
            }
            RootSpec::Uuid(u) => Ok(devs
                .iter()
                .find(|d| d.uuid.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(u))
                .map(|d| d.dev.clone())),
            RootSpec::Discover => {
                let roots: Vec<&BlockDev> =
                    devs.iter().filter(|d| d.part_kind == Some(PartitionKind::RootX86_64)).collect();
                if let Some(b) = boot_partuuid {
                    let disk = devs.iter().find(|d| d.partuuid.as_deref() == Some(b)).and_then(|d| d.parent.clone());
                    if let Some((disk, _)) = disk {
                        return Ok(roots
                            .iter()
                            .find(|r| r.parent.as_ref().map(|p| &p.0) == Some(&disk))
                            .map(|r| r.dev.clone()));
                    }
                }
                let mut disks: Vec<&String> = roots.iter().filter_map(|r| r.parent.as_ref().map(|p| &p.0)).collect();
                disks.dedup();
                match disks.len() {
                    0 => Ok(None),
                    1 => Ok(roots.first().map(|r| r.dev.clone())),
                    n => Err(format!(
                        "{n} disks have a root-x86-64 partition and the loader did not say which disk it booted from; pass root="
                    )),
                }
            }
        }
    }

    /// Whether finding this root needs superblocks read (not only GPTs).
    fn needs_filesystems(&self) -> bool {
        matches!(self, RootSpec::Uuid(_) | RootSpec::Label(_))
    }
}

fn describe(d: &BlockDev) -> String {
    let mut s = d.name.clone();
    if let Some(k) = d.part_kind {
        s.push_str(&format!(" {}", k.as_str()));
    }
    if let Some(t) = d.fstype {
        s.push_str(&format!(" {t}"));
    }
    if let Some(u) = &d.partuuid {
        s.push_str(&format!(" PARTUUID={u}"));
    }
    s
}

impl Boot {
    /// The root device, waiting for it up to `lifeboat.rootwait` seconds (30).
    pub(super) fn find_root(&mut self) -> Result<PathBuf, BootError> {
        if let Some(d) = &self.root_dev {
            return Ok(d.clone());
        }
        let spec = RootSpec::parse(self.cmdline.get("root"));
        let wait = self.cmdline.get("lifeboat.rootwait").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30);
        let sys = SysBlock::default();
        let boot_part = devices::loader_partuuid();
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut announced = false;
        loop {
            let devs =
                if matches!(spec, RootSpec::Path(_)) { Vec::new() } else { sys.scan_with(spec.needs_filesystems()) };
            if let Some(d) = spec.find(&devs, boot_part.as_deref()).map_err(|e| BootError::new(Phase::Root, e))? {
                match self.cmdline.get("root") {
                    Some(r) => say(format!("root={r} is {}", d.display())),
                    None => say(format!("the root partition (by its type, no root= given) is {}", d.display())),
                }
                self.root_dev = Some(d.clone());
                return Ok(d);
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = sys.scan().iter().map(describe).collect();
                let what = match &spec {
                    RootSpec::Discover => "a root-x86-64 partition (no root= given)".to_owned(),
                    s => format!("root={}", self.cmdline.get("root").unwrap_or(&format!("{s:?}"))),
                };
                return Err(BootError::new(
                    Phase::Root,
                    format!(
                        "{what} did not appear within {wait} s; block devices seen: {}",
                        if seen.is_empty() { "none".into() } else { seen.join("; ") }
                    ),
                ));
            }
            if !announced {
                say(format!("waiting up to {wait} s for the root device"));
                announced = true;
            }
            // New devices (and the modules they ask for) while waiting.
            match self.modules.as_mut() {
                Some(m) => {
                    m.poll(Duration::from_millis(50));
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
            self.say_module_notes();
        }
    }

    /// Mounts `dev` on `/sysroot` (read-write: a rollback or repair may follow).
    pub(super) fn mount_root(&mut self, dev: &Path) -> Result<(), BootError> {
        let target = Path::new(SYSROOT);
        let _ = std::fs::create_dir_all(target);
        if devices::is_mountpoint(target) {
            return Ok(());
        }
        progress::step(&format!("mounting the root {}", dev.display()));
        let fstype = match self.cmdline.get("rootfstype") {
            Some(t) => t.to_owned(),
            None => probe_fs(dev).map(|f| f.fstype.to_owned()).ok_or_else(|| {
                BootError::new(
                    Phase::Root,
                    format!("{}: no filesystem lifeboat recognises (pass rootfstype=)", dev.display()),
                )
            })?,
        };
        if let Some(m) = self.modules.as_mut() {
            m.load_filesystem(&fstype);
        }
        self.say_module_notes();
        let data = self.cmdline.get("rootflags");
        mount(Some(dev), target, Some(fstype.as_str()), MsFlags::empty(), data).map_err(|e| {
            BootError::new(Phase::Root, format!("mount {} ({fstype}) on {SYSROOT}: {e}", dev.display()))
        })?;
        say(format!("mounted {} ({fstype}) on {SYSROOT}", dev.display()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_specs() {
        assert_eq!(RootSpec::parse(Some("PARTUUID=AB")), RootSpec::PartUuid("ab".into(), 0));
        assert_eq!(RootSpec::parse(Some("PARTUUID=AB/PARTNROFF=1")), RootSpec::PartUuid("ab".into(), 1));
        assert_eq!(RootSpec::parse(Some("UUID=x")), RootSpec::Uuid("x".into()));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-partuuid/Q")), RootSpec::PartUuid("q".into(), 0));
        assert_eq!(RootSpec::parse(Some("LABEL=my root")), RootSpec::Label("my root".into()));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-label/my\\x20root")), RootSpec::Label("my root".into()));
        assert_eq!(RootSpec::parse(Some("PARTLABEL=root-x86-64")), RootSpec::PartLabel("root-x86-64".into()));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-partlabel/r")), RootSpec::PartLabel("r".into()));
        assert_eq!(RootSpec::parse(Some("/dev/sda2")), RootSpec::Path("/dev/sda2".into()));
        assert_eq!(RootSpec::parse(None), RootSpec::Discover);
    }

    #[test]
    fn discovery_picks_the_boot_disk_and_refuses_to_guess() {
        let part = |disk: &str, n: u32, kind, uuid: &str| BlockDev {
            name: format!("{disk}{n}"),
            dev: PathBuf::from(format!("/dev/{disk}{n}")),
            parent: Some((disk.into(), n)),
            partuuid: Some(uuid.into()),
            part_kind: Some(kind),
            ..BlockDev::default()
        };
        let devs = vec![
            part("vda", 1, PartitionKind::Esp, "e1"),
            part("vda", 2, PartitionKind::RootX86_64, "r1"),
            part("vdb", 1, PartitionKind::Esp, "e2"),
            part("vdb", 2, PartitionKind::RootX86_64, "r2"),
        ];
        let d = RootSpec::Discover;
        assert_eq!(d.find(&devs, Some("e2")).unwrap(), Some(PathBuf::from("/dev/vdb2")));
        assert!(d.find(&devs, None).unwrap_err().contains("2 disks"));
        assert_eq!(d.find(&devs[..2], None).unwrap(), Some(PathBuf::from("/dev/vda2")));
        assert_eq!(RootSpec::PartUuid("r1".into(), 0).find(&devs, None).unwrap(), Some(PathBuf::from("/dev/vda2")));
        assert_eq!(RootSpec::PartUuid("e1".into(), 1).find(&devs, None).unwrap(), Some(PathBuf::from("/dev/vda2")));
        assert_eq!(RootSpec::PartUuid("r1".into(), -1).find(&devs, None).unwrap(), Some(PathBuf::from("/dev/vda1")));
        assert_eq!(RootSpec::PartUuid("nope".into(), 0).find(&devs, None).unwrap(), None);
        let mut labelled = devs.clone();
        labelled[3].label = Some("data root".into());
        labelled[1].partlabel = Some("root-x86-64".into());
        assert_eq!(
            RootSpec::Label("data root".into()).find(&labelled, None).unwrap(),
            Some(PathBuf::from("/dev/vdb2"))
        );
        assert_eq!(
            RootSpec::PartLabel("root-x86-64".into()).find(&labelled, None).unwrap(),
            Some(PathBuf::from("/dev/vda2"))
        );
    }
}
