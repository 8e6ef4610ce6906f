//! The root phase of a boot: what `root=` names (or, without it, the Discoverable
//! Partitions root on the disk the loader started from), waiting for it to appear
//! for `lifeboat.rootwait` seconds, and mounting it on `/sysroot`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_esp::blockdev::{probe_fs, BlockDev, SysBlock};
use lifeboat_esp::PartitionKind;
use nix::mount::{mount, MsFlags};

use super::{devices, progress, say, Boot, BootError, Phase, SYSROOT};

/// How long PID 1 waits for the root when `lifeboat.rootwait=` does not say.
pub const ROOTWAIT_DEFAULT: u64 = 30;
/// The longest wait `lifeboat.rootwait=` can ask for: a day. Anything longer is
/// taken as this (a deadline past the clock's range would end PID 1's worker).
pub const ROOTWAIT_MAX: u64 = 86_400;

/// How long to wait for the root, and what the console should hear about a
/// value that was not taken as given.
pub fn root_wait(cmdline: &crate::cmdline::KernelCmdline) -> (Duration, Option<String>) {
    let (secs, note) = cmdline.number("lifeboat.rootwait", ROOTWAIT_DEFAULT, ROOTWAIT_MAX);
    (Duration::from_secs(secs), note)
}

/// What `root=` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSpec {
    /// `PARTUUID=` (with `/PARTNROFF=n`: the partition n further on that disk;
    /// the kernel reads n as an `int`, and so does lifeboat).
    PartUuid(String, i32),
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
    /// A `/PARTNROFF=` that is not a number the kernel would take is refused:
    /// guessing 0 would mount the partition the offset was meant to skip.
    pub fn parse(v: Option<&str>) -> Result<RootSpec, String> {
        let Some(v) = v else { return Ok(RootSpec::Discover) };
        let partuuid = |u: &str| -> Result<RootSpec, String> {
            let (u, off) = match u.split_once("/PARTNROFF=") {
                Some((u, n)) => (
                    u,
                    n.parse::<i32>().map_err(|_| {
                        format!(
                            "root={}: PARTNROFF={} is not a whole number between {} and {}",
                            lifeboat_fs::shown::shown_str(v),
                            lifeboat_fs::shown::shown_str(n),
                            i32::MIN,
                            i32::MAX
                        )
                    })?,
                ),
                None => (u, 0),
            };
            Ok(RootSpec::PartUuid(u.to_ascii_lowercase(), off))
        };
        Ok(if let Some(u) = v.strip_prefix("PARTUUID=") {
            partuuid(u)?
        } else if let Some(u) = v.strip_prefix("UUID=") {
            RootSpec::Uuid(u.to_ascii_lowercase())
        } else if let Some(l) = v.strip_prefix("LABEL=") {
            RootSpec::Label(l.to_owned())
        } else if let Some(l) = v.strip_prefix("PARTLABEL=") {
            RootSpec::PartLabel(l.to_owned())
        } else if let Some(u) = v.strip_prefix("/dev/disk/by-partuuid/") {
            partuuid(u)?
        } else if let Some(u) = v.strip_prefix("/dev/disk/by-uuid/") {
            RootSpec::Uuid(u.to_ascii_lowercase())
        } else if let Some(l) = v.strip_prefix("/dev/disk/by-label/") {
            RootSpec::Label(unescape_udev(l))
        } else if let Some(l) = v.strip_prefix("/dev/disk/by-partlabel/") {
            RootSpec::PartLabel(unescape_udev(l))
        } else {
            RootSpec::Path(PathBuf::from(v))
        })
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
                // Both fit an i64 with room to spare: no sum overflows.
                let want = i64::from(n) + i64::from(*off);
                Ok(devs
                    .iter()
                    .find(|d| d.parent.as_ref().is_some_and(|(dk, dn)| *dk == disk && i64::from(*dn) == want))
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

/// A device node named by path (`root=/dev/sda3`) as the scan would see it:
/// its number from the node, its size from sysfs.
fn node_as_blockdev(dev: &Path) -> BlockDev {
    use std::os::unix::fs::MetadataExt;
    let devnum = std::fs::metadata(dev).ok().filter(|m| m.rdev() != 0).map(|m| {
        let r = m.rdev();
        (nix::sys::stat::major(r) as u32, nix::sys::stat::minor(r) as u32)
    });
    let size = devnum
        .and_then(|(a, b)| std::fs::read_to_string(format!("/sys/dev/block/{a}:{b}/size")).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |n| n.saturating_mul(512));
    BlockDev { name: dev.display().to_string(), dev: dev.to_path_buf(), devnum, size, ..BlockDev::default() }
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
        let spec = RootSpec::parse(self.cmdline.get("root")).map_err(|e| BootError::new(Phase::Root, e))?;
        let (wait_for, note) = root_wait(&self.cmdline);
        if let Some(n) = note {
            say(n);
        }
        let wait = wait_for.as_secs();
        let sys = SysBlock::default();
        let boot_part = devices::loader_partuuid();
        // Bounded above, so this cannot fail; were it to, wait as long as it may.
        let start = Instant::now();
        let deadline = start.checked_add(wait_for);
        let past = |now: Instant| match deadline {
            Some(d) => now >= d,
            None => now.duration_since(start) >= wait_for,
        };
        let mut announced = false;
        for n in self.luks.notes.drain(..) {
            say(n);
        }
        let lvm_sel = lifeboat_dm::lvm::Selection::from_cmdline(&self.cmdline.words.join(" "));
        let lvm_named = lvm_sel.enabled && !lvm_sel.is_all();
        let stacked = !self.luks.wanted.is_empty() || lvm_named;
        // How long the devices present get to show the root before PID 1 looks
        // inside LUKS containers and volume groups nobody named.
        let settle = Duration::from_secs(3);
        let mut last_seen = Vec::new();
        let mut looked_inside = false;
        loop {
            let scan = |fs: bool| if matches!(spec, RootSpec::Path(_)) && !fs { Vec::new() } else { sys.scan_with(fs) };
            let look_inside = start.elapsed() >= settle;
            let mut devs = scan(spec.needs_filesystems() || stacked || look_inside);
            // Named containers and volumes as soon as they appear.
            let mut changed = self.open_named_luks(&devs)?;
            if changed {
                devs = scan(true);
            }
            // Volume groups are read again only when the devices changed: the
            // wait polls every 50 ms, and a PV's metadata does not change under it.
            let seen: Vec<(String, Option<&'static str>)> = devs.iter().map(|d| (d.name.clone(), d.fstype)).collect();
            let new_devices = seen != last_seen;
            last_seen = seen;
            if lvm_named && new_devices && self.try_lvm(&devs, &lvm_sel) > 0 {
                changed = true;
            }
            if changed {
                devs = scan(true);
            }
            if let Some(d) = spec.find(&devs, boot_part.as_deref()).map_err(|e| BootError::new(Phase::Root, e))? {
                match self.cmdline.get("root") {
                    Some(r) => say(format!("root={r} is {}", d.display())),
                    None => say(format!("the root partition (by its type, no root= given) is {}", d.display())),
                }
                // A root that is a LUKS container (the Discoverable Partitions
                // root, or root= naming the partition): the filesystem is inside.
                let d = match probe_fs(&d).map(|f| f.fstype) {
                    Some("crypto_LUKS") => {
                        let bd = devs.iter().find(|b| b.dev == d).cloned().unwrap_or_else(|| node_as_blockdev(&d));
                        self.open_luks(&bd, Some("root"))?
                    }
                    _ => d,
                };
                self.root_dev = Some(d.clone());
                return Ok(d);
            }
            if look_inside {
                let opened = self.open_any_luks(&devs)?;
                let devs = if opened { scan(true) } else { devs };
                let activated = if lvm_named || !lvm_sel.enabled || !(opened || new_devices || !looked_inside) {
                    0
                } else {
                    self.try_lvm(&devs, &lvm_sel)
                };
                looked_inside = true;
                if opened || activated > 0 {
                    continue;
                }
            }
            if past(Instant::now()) {
                let seen: Vec<String> = sys.scan().iter().map(describe).collect();
                let what = match &spec {
                    RootSpec::Discover => "a root-x86-64 partition (no root= given)".to_owned(),
                    s => format!("root={}", self.cmdline.get("root").unwrap_or(&format!("{s:?}"))),
                };
                let lvm = self.stack_problem.as_ref().map(|p| format!("; LVM: {p}")).unwrap_or_default();
                return Err(BootError::new(
                    Phase::Root,
                    format!(
                        "{what} did not appear within {wait} s; block devices seen: {}{lvm}",
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
        assert_eq!(RootSpec::parse(Some("PARTUUID=AB")), Ok(RootSpec::PartUuid("ab".into(), 0)));
        assert_eq!(RootSpec::parse(Some("PARTUUID=AB/PARTNROFF=1")), Ok(RootSpec::PartUuid("ab".into(), 1)));
        assert_eq!(RootSpec::parse(Some("UUID=x")), Ok(RootSpec::Uuid("x".into())));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-partuuid/Q")), Ok(RootSpec::PartUuid("q".into(), 0)));
        assert_eq!(RootSpec::parse(Some("LABEL=my root")), Ok(RootSpec::Label("my root".into())));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-label/my\\x20root")), Ok(RootSpec::Label("my root".into())));
        assert_eq!(RootSpec::parse(Some("PARTLABEL=root-x86-64")), Ok(RootSpec::PartLabel("root-x86-64".into())));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-partlabel/r")), Ok(RootSpec::PartLabel("r".into())));
        assert_eq!(RootSpec::parse(Some("/dev/sda2")), Ok(RootSpec::Path("/dev/sda2".into())));
        assert_eq!(RootSpec::parse(None), Ok(RootSpec::Discover));
    }

    #[test]
    fn hostile_partnroff_and_rootwait_never_overflow() {
        for bad in ["9223372036854775807", "2147483648", "-2147483649", "x", "", "18446744073709551615"] {
            let e = RootSpec::parse(Some(&format!("PARTUUID=ab/PARTNROFF={bad}"))).unwrap_err();
            assert!(e.contains("is not a whole number between"), "{e}");
        }
        let part = |n: u32, uuid: &str| BlockDev {
            name: format!("vda{n}"),
            dev: PathBuf::from(format!("/dev/vda{n}")),
            parent: Some(("vda".into(), n)),
            partuuid: Some(uuid.into()),
            ..BlockDev::default()
        };
        let devs = vec![part(1, "a"), part(u32::MAX, "z")];
        for off in [i32::MAX, i32::MIN, 1, -1] {
            let s = RootSpec::parse(Some(&format!("PARTUUID=z/PARTNROFF={off}"))).unwrap();
            assert_eq!(s.find(&devs, None), Ok(None), "{off}");
            let s = RootSpec::parse(Some(&format!("PARTUUID=a/PARTNROFF={off}"))).unwrap();
            assert_eq!(s.find(&devs, None), Ok(None), "{off}");
        }
        // The rescue shell's `continue` runs the same wait again: neither panics.
        use crate::cmdline::KernelCmdline;
        for v in ["18446744073709551615", "99999999999999999999", "-5", "x"] {
            let c = KernelCmdline::parse(&format!("lifeboat.rootwait={v}"));
            for _ in 0..2 {
                let (wait, note) = root_wait(&c);
                assert!(wait <= Duration::from_secs(ROOTWAIT_MAX), "{v}");
                assert!(note.is_some(), "{v}");
                assert!(Instant::now().checked_add(wait).is_some());
            }
        }
        assert_eq!(root_wait(&KernelCmdline::parse("quiet")), (Duration::from_secs(30), None));
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
