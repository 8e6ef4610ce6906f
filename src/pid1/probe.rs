//! Block devices as PID 1 sees them: disks and partitions from sysfs, PARTUUIDs and
//! partition types from each disk's GPT, filesystem types and UUIDs from
//! superblocks; and finding the root device from `root=` or the Discoverable
//! Partitions type. The sysfs and /dev roots are parameters for host-side tests.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use lifeboat_esp::{Disk, PartitionKind};

/// One block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    pub name: String,
    pub dev: PathBuf,
    pub size: u64,
    /// For partitions: the disk's name and the partition number.
    pub parent: Option<(String, u32)>,
    pub partuuid: Option<String>,
    pub part_kind: Option<PartitionKind>,
    pub fstype: Option<&'static str>,
    pub uuid: Option<String>,
}

/// What `root=` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSpec {
    PartUuid(String),
    Uuid(String),
    Path(PathBuf),
    /// No `root=`: the DPS root partition type.
    Discover,
}

impl RootSpec {
    pub fn parse(v: Option<&str>) -> RootSpec {
        match v {
            None => RootSpec::Discover,
            Some(v) => {
                if let Some(u) = v.strip_prefix("PARTUUID=") {
                    RootSpec::PartUuid(u.to_ascii_lowercase())
                } else if let Some(u) = v.strip_prefix("UUID=") {
                    RootSpec::Uuid(u.to_ascii_lowercase())
                } else if let Some(u) = v.strip_prefix("/dev/disk/by-partuuid/") {
                    RootSpec::PartUuid(u.to_ascii_lowercase())
                } else if let Some(u) = v.strip_prefix("/dev/disk/by-uuid/") {
                    RootSpec::Uuid(u.to_ascii_lowercase())
                } else {
                    RootSpec::Path(PathBuf::from(v))
                }
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn uuid_str(b: &[u8]) -> String {
    let h = hex(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Filesystem type and UUID from the superblock (ext2/3/4, XFS, btrfs, FAT).
pub fn probe_fs(dev: &Path) -> Option<(&'static str, Option<String>)> {
    let mut f = fs::File::open(dev).ok()?;
    let mut b = vec![0u8; 69 * 1024];
    let n = f.read(&mut b).ok()?;
    let b = &b[..n];
    if b.len() >= 1144 && b[1080..1082] == [0x53, 0xEF] {
        let incompat = u32::from_le_bytes([b[1120], b[1121], b[1122], b[1123]]);
        let compat = u32::from_le_bytes([b[1116], b[1117], b[1118], b[1119]]);
        let t = if incompat & 0x40 != 0 || incompat & 0x200 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some((t, Some(uuid_str(&b[1128..1144]))));
    }
    if b.len() >= 48 && &b[0..4] == b"XFSB" {
        return Some(("xfs", Some(uuid_str(&b[32..48]))));
    }
    if b.len() >= 65536 + 72 && &b[65536 + 64..65536 + 72] == b"_BHRfS_M" {
        return Some(("btrfs", Some(uuid_str(&b[65536 + 32..65536 + 48]))));
    }
    if b.len() >= 512 && b[510] == 0x55 && b[511] == 0xAA && (&b[82..87] == b"FAT32" || &b[54..57] == b"FAT") {
        let serial = if &b[82..87] == b"FAT32" { &b[67..71] } else { &b[39..43] };
        let s = format!("{:02X}{:02X}-{:02X}{:02X}", serial[3], serial[2], serial[1], serial[0]);
        return Some(("vfat", Some(s)));
    }
    None
}

/// Block devices below a sysfs root.
pub struct Probe {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Probe { sys: PathBuf::from("/sys"), dev: PathBuf::from("/dev") }
    }
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

impl Probe {
    /// Every disk and partition (loop, ram and zram devices skipped).
    pub fn scan(&self) -> Vec<BlockDev> {
        self.scan_with(true)
    }

    /// Like [`Probe::scan`]; without `filesystems`, superblocks are not read (the
    /// root-device poll needs them only for `root=UUID=`).
    pub fn scan_with(&self, filesystems: bool) -> Vec<BlockDev> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.sys.join("class/block")) else {
            return out;
        };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut gpts: BTreeMap<String, Option<Disk>> = BTreeMap::new();
        for name in names {
            if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
                continue;
            }
            let base = self.sys.join("class/block").join(&name);
            let size = read_trim(&base.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512;
            let partno = read_trim(&base.join("partition")).and_then(|s| s.parse::<u32>().ok());
            let parent = partno.and_then(|n| {
                let real = fs::canonicalize(&base).ok()?;
                let p = real.parent()?.file_name()?.to_string_lossy().into_owned();
                Some((p, n))
            });
            let dev = self.dev.join(&name);
            let (mut partuuid, mut part_kind) = (None, None);
            if let Some((disk, n)) = &parent {
                let d = gpts.entry(disk.clone()).or_insert_with(|| Disk::open(&self.dev.join(disk), false).ok());
                if let Some(p) = d.as_ref().and_then(|d| d.partitions.iter().find(|p| p.number == *n)) {
                    partuuid = Some(p.part_guid.clone());
                    part_kind = Some(p.kind);
                }
            }
            let (fstype, uuid) = match if filesystems { probe_fs(&dev) } else { None } {
                Some((t, u)) => (Some(t), u),
                None => (None, None),
            };
            out.push(BlockDev { name, dev, size, parent, partuuid, part_kind, fstype, uuid });
        }
        out
    }

    /// The device `spec` names, if it is present now. `boot_partuuid` is the
    /// loader's `LoaderDevicePartUUID`, which picks the disk for discovery.
    pub fn find_root(&self, spec: &RootSpec, boot_partuuid: Option<&str>) -> Result<Option<PathBuf>, String> {
        if let RootSpec::Path(p) = spec {
            return Ok(p.exists().then(|| p.clone()));
        }
        let devs = self.scan_with(matches!(spec, RootSpec::Uuid(_)));
        match spec {
            RootSpec::PartUuid(u) => Ok(devs.iter().find(|d| d.partuuid.as_deref() == Some(u)).map(|d| d.dev.clone())),
            RootSpec::Uuid(u) => Ok(devs
                .iter()
                .find(|d| d.uuid.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(u))
                .map(|d| d.dev.clone())),
            RootSpec::Path(_) => Ok(None),
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

    /// The whole disk a device belongs to (itself if it is a disk).
    pub fn disk_of(&self, dev: &Path) -> Option<PathBuf> {
        let name = dev.file_name()?.to_string_lossy().into_owned();
        let base = self.sys.join("class/block").join(&name);
        if base.join("partition").exists() {
            let real = fs::canonicalize(&base).ok()?;
            Some(self.dev.join(real.parent()?.file_name()?))
        } else {
            Some(self.dev.join(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_specs() {
        assert_eq!(RootSpec::parse(Some("PARTUUID=AB")), RootSpec::PartUuid("ab".into()));
        assert_eq!(RootSpec::parse(Some("UUID=x")), RootSpec::Uuid("x".into()));
        assert_eq!(RootSpec::parse(Some("/dev/disk/by-partuuid/Q")), RootSpec::PartUuid("q".into()));
        assert_eq!(RootSpec::parse(Some("/dev/sda2")), RootSpec::Path("/dev/sda2".into()));
        assert_eq!(RootSpec::parse(None), RootSpec::Discover);
    }

    #[test]
    fn ext4_superblock() {
        let p = std::env::temp_dir().join(format!("lb-ext4-{}", std::process::id()));
        let mut b = vec![0u8; 4096];
        b[1080] = 0x53;
        b[1081] = 0xEF;
        b[1120] = 0x40; // extents
        for (i, x) in b[1128..1144].iter_mut().enumerate() {
            *x = i as u8;
        }
        fs::write(&p, &b).unwrap();
        let (t, u) = probe_fs(&p).unwrap();
        assert_eq!(t, "ext4");
        assert_eq!(u.unwrap(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn discovery_over_fake_sysfs_and_dev() {
        let t = std::env::temp_dir().join(format!("lb-probe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let (sys, dev) = (t.join("sys"), t.join("dev"));
        fs::create_dir_all(sys.join("class/block")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        // A real GPT image as /dev/vda, with sysfs entries for it and its partitions.
        let img = dev.join("vda");
        lifeboat_esp::disk::create(
            &img,
            &lifeboat_esp::disk::CreateSpec { size: 64 << 20, esp: 8 << 20, xbootldr: None, root: None },
        )
        .unwrap();
        let d = Disk::open(&img, false).unwrap();
        let devices = sys.join("devices/virtual/vda");
        fs::create_dir_all(&devices).unwrap();
        std::os::unix::fs::symlink(&devices, sys.join("class/block/vda")).unwrap();
        for p in &d.partitions {
            let pname = format!("vda{}", p.number);
            fs::create_dir_all(devices.join(&pname)).unwrap();
            fs::write(devices.join(&pname).join("partition"), format!("{}\n", p.number)).unwrap();
            std::os::unix::fs::symlink(devices.join(&pname), sys.join("class/block").join(&pname)).unwrap();
            fs::write(dev.join(&pname), b"").unwrap();
        }
        let probe = Probe { sys, dev: dev.clone() };
        let root = d.find(PartitionKind::RootX86_64).unwrap();
        let want = dev.join(format!("vda{}", root.number));
        assert_eq!(probe.find_root(&RootSpec::Discover, None).unwrap(), Some(want.clone()));
        assert_eq!(probe.find_root(&RootSpec::PartUuid(root.part_guid.clone()), None).unwrap(), Some(want.clone()));
        assert_eq!(probe.find_root(&RootSpec::PartUuid("nope".into()), None).unwrap(), None);
        assert_eq!(probe.disk_of(&want), Some(dev.join("vda")));
        fs::remove_dir_all(&t).unwrap();
    }
}
