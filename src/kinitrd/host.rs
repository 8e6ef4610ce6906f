//! This machine's boot devices, for a host-only module set: the block devices
//! (sysfs directories, with the devices under a device-mapper one) and the
//! filesystems of its root, `/usr` and boot partitions, read from the mount
//! table. `initrd build --host-only` and `boot sync --host-only` both choose
//! their modules from what this finds.

use std::path::Path;

use lifeboat_fs::foreign;
use lifeboat_initrd::modules::HostDevices;

use crate::error::{Error, Result};

/// The block devices (sysfs directories) and filesystems of this machine's root,
/// `/usr` and boot partitions, for a host-only initrd.
pub fn host_devices(sys: &Path, mountinfo: &Path) -> Result<HostDevices> {
    // A file given in place of /proc/self/mountinfo (itself a regular file to
    // fstat) goes through the door too.
    let text = foreign::open_named(mountinfo)
        .and_then(|f| foreign::read_capped(f, 16 << 20))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Error::io("read", mountinfo, e))?;
    let mounts = lifeboat_esp::discover::parse_mountinfo(&text);
    let mut host = HostDevices::default();
    let mut seen = Vec::new();
    for target in ["/", "/usr", "/boot", "/efi", "/boot/efi"] {
        let m = if target == "/" || target == "/usr" {
            lifeboat_esp::discover::mount_of(&mounts, Path::new(target))
        } else {
            mounts.iter().rev().find(|m| m.mount_point == Path::new(target))
        };
        let Some(m) = m else { continue };
        if seen.contains(&(m.major, m.minor)) {
            continue;
        }
        seen.push((m.major, m.minor));
        if !host.fstypes.contains(&m.fstype) {
            host.fstypes.push(m.fstype.clone());
        }
        // A device-mapper device: the devices under it too.
        let mut todo = vec![sys.join(format!("dev/block/{}:{}", m.major, m.minor))];
        while let Some(d) = todo.pop() {
            if let Ok(rd) = std::fs::read_dir(d.join("slaves")) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
            host.devices.push(d);
        }
    }
    if host.devices.is_empty() {
        return Err(Error::bad_arg("--mountinfo", mountinfo.display().to_string(), "no mount holds / here"));
    }
    Ok(host)
}
