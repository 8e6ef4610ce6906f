//! The first phase of a boot: the API filesystems (`/proc`, `/sys`, `/dev`,
//! `/run`, efivarfs) and the kernel modules the initrd carries, loaded in the order
//! the initrd recorded. A module that will not load is reported and the boot goes
//! on: it may not be needed.

use std::path::Path;

use nix::mount::{mount, MsFlags};

pub(crate) fn none() -> Option<&'static str> {
    None
}

/// Whether `p` is the root of a mount (another device than its parent).
pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Mounts `/proc`, `/sys`, `/dev` and `/run` where they are not mounted yet;
/// returns what failed, for the console.
pub fn mount_api() -> Vec<String> {
    let mut notes = Vec::new();
    let fs: [(&str, &str, MsFlags, Option<&str>); 4] = [
        ("proc", "/proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("sysfs", "/sys", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("tmpfs", "/run", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
    ];
    for (t, dir, flags, data) in fs {
        let _ = std::fs::create_dir_all(dir);
        if is_mountpoint(Path::new(dir)) {
            continue;
        }
        if let Err(e) = mount(Some(t), dir, Some(t), flags, data) {
            notes.push(format!("mount {t} on {dir}: {e}"));
        }
    }
    notes
}

/// Loads the modules bundled in the initrd, in their recorded order; returns
/// which failed and why.
pub fn load_modules() -> Vec<String> {
    let mut notes = Vec::new();
    let list = match std::fs::read_to_string(Path::new("/").join(lifeboat_initrd::LOAD_LIST)) {
        Ok(l) => l,
        Err(_) => return notes,
    };
    for m in list.lines().filter(|l| !l.trim().is_empty()) {
        let p = Path::new("/").join(m);
        let r = std::fs::File::open(&p).map_err(|e| e.to_string()).and_then(|f| {
            match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = r {
            notes.push(format!("module {}: {e}", p.display()));
        }
    }
    notes
}

/// Mounts efivarfs where the firmware is EFI, for `LoaderDevicePartUUID` and the
/// default entry.
pub fn mount_efivarfs() {
    let dir = Path::new("/sys/firmware/efi/efivars");
    if dir.is_dir() && !is_mountpoint(dir) {
        let _ = mount(
            Some("efivarfs"),
            dir,
            Some("efivarfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none(),
        );
    }
}

/// `LoaderDevicePartUUID`: the partition systemd-boot was started from.
pub fn loader_partuuid() -> Option<String> {
    let v = lifeboat_boot::efivars::EfiVars::open(Path::new(lifeboat_boot::efivars::DEFAULT_DIR)).ok()?;
    v.read_string("LoaderDevicePartUUID", lifeboat_boot::efivars::LOADER_GUID)
        .ok()
        .flatten()
        .map(|s| s.to_ascii_lowercase())
}
