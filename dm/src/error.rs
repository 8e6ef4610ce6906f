//! The device-mapper error: which operation on which mapping failed and, for a
//! failed ioctl, what the kernel's errno means for that operation — the raw errno
//! alone ("Invalid argument") does not tell someone at a rescue prompt that the
//! dm-crypt module is missing.

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug)]
pub enum DmError {
    /// A mapping name or uuid the kernel would refuse (empty, too long, a `/`).
    InvalidName { name: String, why: &'static str },
    /// A target that cannot be encoded (type name too long, NUL in the parameters).
    BadTarget { name: String, why: String },
    /// `/dev/mapper/control` could not be created or opened.
    Control { path: PathBuf, errno: Errno },
    /// An ioctl failed.
    Ioctl { op: &'static str, name: String, errno: Errno },
    /// The kernel's reply did not have the layout of `dm-ioctl.h`.
    BadReply { op: &'static str, name: String, why: String },
    /// The kernel speaks another major version of the interface.
    Version { found: [u32; 3] },
    /// Creating, loading or resuming failed and removing the half-made mapping
    /// failed too: both are reported.
    Cleanup { first: Box<DmError>, remove: Errno },
    /// The block node of a mapping could not be made.
    Node { path: PathBuf, errno: Errno },
}

/// What an errno means for a device-mapper operation, from the kernel's
/// `drivers/md/dm-ioctl.c` and `dm-table.c`.
fn meaning(op: &str, errno: Errno) -> &'static str {
    match (op, errno) {
        (_, Errno::EPERM | Errno::EACCES) => "device-mapper needs CAP_SYS_ADMIN",
        (_, Errno::ENOTTY) => "the kernel does not know this device-mapper ioctl",
        ("create", Errno::EBUSY) => "a mapping with this name or uuid already exists",
        ("remove", Errno::EBUSY) => "the mapping is still open (mounted, swapped on, or under another mapping)",
        (_, Errno::ENXIO) => "there is no mapping by that name",
        ("load table", Errno::EINVAL) => {
            "the kernel refused the table: a target type it does not have (is the dm-crypt \
             or dm-mod module loaded?), a bad parameter or key, or a device that is not there"
        }
        ("load table", Errno::ENODEV | Errno::ENOENT) => "a device named in the table does not exist",
        ("load table", Errno::EBUSY) => "a device named in the table is held exclusively by something else",
        ("resume", Errno::EINVAL) => "the mapping has no table to resume",
        (_, Errno::ENOMEM) => "the kernel is out of memory",
        (_, Errno::EINVAL) => "the kernel refused the request",
        _ => "",
    }
}

impl fmt::Display for DmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmError::InvalidName { name, why } => write!(f, "device-mapper name {name:?}: {why}"),
            DmError::BadTarget { name, why } => write!(f, "device-mapper table of {name}: {why}"),
            DmError::Control { path, errno } => {
                write!(f, "cannot open {}: {}", path.display(), errno.desc())?;
                if matches!(errno, Errno::ENODEV | Errno::ENXIO) {
                    write!(f, ": device-mapper is not in the kernel (load the dm-mod module)")?;
                }
                Ok(())
            }
            DmError::Ioctl { op, name, errno } => {
                write!(f, "device-mapper {op} of {name:?}: {}", errno.desc())?;
                match meaning(op, *errno) {
                    "" => Ok(()),
                    m => write!(f, ": {m}"),
                }
            }
            DmError::BadReply { op, name, why } => {
                write!(f, "device-mapper {op} of {name:?}: unreadable reply from the kernel: {why}")
            }
            DmError::Version { found } => write!(
                f,
                "the kernel's device-mapper interface is version {}.{}.{}; lifeboat speaks 4.x",
                found[0], found[1], found[2]
            ),
            DmError::Cleanup { first, remove } => {
                write!(f, "{first}; removing the half-made mapping failed too: {}", remove.desc())
            }
            DmError::Node { path, errno } => write!(f, "cannot make block node {}: {}", path.display(), errno.desc()),
        }
    }
}

impl std::error::Error for DmError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_mapping_and_the_meaning() {
        let e = DmError::Ioctl { op: "load table", name: "luks-root".into(), errno: Errno::EINVAL };
        let s = e.to_string();
        assert!(s.contains("luks-root") && s.contains("dm-crypt"), "{s}");
        let e = DmError::Ioctl { op: "remove", name: "vg-root".into(), errno: Errno::EBUSY };
        assert!(e.to_string().contains("still open"));
        let e = DmError::Control { path: "/dev/mapper/control".into(), errno: Errno::ENODEV };
        assert!(e.to_string().contains("dm-mod"));
    }
}
