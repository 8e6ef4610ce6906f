//! The first phase of a boot: the API filesystems (`/proc`, `/sys`, `/dev`,
//! `/run`, efivarfs) and the loader's partition. The kernel modules the hardware
//! asks for are loaded by [`super::modload`].

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
