//! `/dev/mapper/control` and the mapper block nodes. PID 1 has devtmpfs but no
//! udev, so the control node (misc device 10:236) may need making, and nothing
//! makes `/dev/mapper/NAME`: [`ensure_node`] does. [`DmControl::create`] is the
//! three steps libdevmapper takes — create the device, load its table, resume it —
//! and removes the device again when a later step fails, so a wrong key or a
//! missing module leaves nothing behind to collide with the next attempt.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::ioctl::{self, flags, Cmd, Reply, Request};
use crate::{DevNo, DmError, ListedDevice, Target};

/// The misc device minor of device-mapper's control node (`MAPPER_CTRL_MINOR`).
const CONTROL_MAJOR: u64 = 10;
const CONTROL_MINOR: u64 = 236;
/// Reply room for a listing; doubled while the kernel says the buffer was full.
const LIST_START: usize = 16 * 1024;
const LIST_MAX: usize = 4 * 1024 * 1024;

/// An open `/dev/mapper/control`.
#[derive(Debug)]
pub struct DmControl {
    file: File,
}

/// What `DM_DEV_STATUS` says about a mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: String,
    pub dev: DevNo,
    pub open_count: i32,
    pub target_count: u32,
    pub read_only: bool,
    pub suspended: bool,
    /// A table is live (the mapping has been resumed with one).
    pub active: bool,
}

impl DmControl {
    /// Opens `/dev/mapper/control`, making it first if devtmpfs did not.
    pub fn open() -> Result<Self, DmError> {
        Self::open_at(Path::new("/dev/mapper/control"))
    }

    /// Opens the control node at `path`, making it (and its directory) when absent,
    /// then checks the interface version.
    pub fn open_at(path: &Path) -> Result<Self, DmError> {
        let open = || OpenOptions::new().read(true).write(true).custom_flags(libc_o_cloexec()).open(path);
        let err = |e: std::io::Error| DmError::Control { path: path.to_path_buf(), errno: errno_of(&e) };
        let file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                match mknod(
                    path,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o600),
                    makedev(CONTROL_MAJOR, CONTROL_MINOR),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(DmError::Control { path: path.to_path_buf(), errno }),
                }
                open().map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        let c = DmControl { file };
        c.version()?;
        Ok(c)
    }

    /// Sends one request; the buffer comes back holding the kernel's reply.
    fn call(&self, req: &Request, targets: &[Target], capacity: usize) -> Result<(Reply, Vec<u8>), DmError> {
        let mut buf = ioctl::encode(req, targets, capacity)?;
        let code = nix::request_code_readwrite!(ioctl::DM_IOCTL, req.cmd as u8, ioctl::HEADER_SIZE);
        // SAFETY: the buffer is a dm_ioctl header followed by its data area and is
        // exactly `data_size` bytes long, which is all the kernel reads or writes;
        // it lives until the call returns.
        let rc = unsafe { nix::libc::ioctl(self.file.as_raw_fd(), code as _, buf.as_mut_ptr()) };
        let op = op_name(req.cmd);
        if rc < 0 {
            return Err(DmError::Ioctl { op, name: req.name.to_string(), errno: Errno::last() });
        }
        let reply =
            ioctl::decode_reply(&buf).map_err(|why| DmError::BadReply { op, name: req.name.to_string(), why })?;
        if reply.version[0] != ioctl::VERSION[0] {
            return Err(DmError::Version { found: reply.version });
        }
        // Table loads may hold a key: the reply to those is not kept (the
        // Zeroizing buffer is wiped here); other replies carry names only.
        let keep = if req.cmd == Cmd::TableLoad { Vec::new() } else { buf.to_vec() };
        Ok((reply, keep))
    }

    /// The kernel's interface version (`DM_VERSION`).
    pub fn version(&self) -> Result<[u32; 3], DmError> {
        Ok(self.call(&Request::new(Cmd::Version, ""), &[], 0)?.0.version)
    }

    /// Creates mapping `name` with `uuid` (may be empty) and `targets`, and makes
    /// it live; returns its device number. On any failure after the device was
    /// created, the device is removed again.
    pub fn create(&self, name: &str, uuid: &str, targets: &[Target], read_only: bool) -> Result<DevNo, DmError> {
        ioctl::check_name(name)?;
        let mut req = Request::new(Cmd::DevCreate, name);
        req.uuid = uuid;
        let (reply, _) = self.call(&req, &[], 0)?;
        let loaded = (|| {
            let mut load = Request::new(Cmd::TableLoad, name);
            load.flags = flags::SECURE_DATA | if read_only { flags::READONLY } else { 0 };
            self.call(&load, targets, 0)?;
            // DM_DEV_SUSPEND without the suspend flag resumes: the loaded
            // (inactive) table becomes the live one.
            self.call(&Request::new(Cmd::DevSuspend, name), &[], 0)
        })();
        match loaded {
            Ok(_) => Ok(reply.dev),
            Err(first) => match self.remove(name) {
                Ok(()) => Err(first),
                Err(DmError::Ioctl { errno, .. }) => Err(DmError::Cleanup { first: Box::new(first), remove: errno }),
                Err(_) => Err(first),
            },
        }
    }

    /// Removes mapping `name` (`DM_DEV_REMOVE`).
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        self.call(&Request::new(Cmd::DevRemove, name), &[], 0).map(|_| ())
    }

    /// The state of mapping `name`, or `None` when there is none.
    pub fn status(&self, name: &str) -> Result<Option<DeviceInfo>, DmError> {
        match self.call(&Request::new(Cmd::DevStatus, name), &[], 0) {
            Ok((r, _)) => Ok(Some(DeviceInfo {
                name: r.name,
                uuid: r.uuid,
                dev: r.dev,
                open_count: r.open_count,
                target_count: r.target_count,
                read_only: r.flags & flags::READONLY != 0,
                suspended: r.flags & flags::SUSPEND != 0,
                active: r.flags & flags::ACTIVE_PRESENT != 0,
            })),
            Err(DmError::Ioctl { errno: Errno::ENXIO, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every mapping (`DM_LIST_DEVICES`), growing the reply buffer while the
    /// kernel says it was too small.
    pub fn list(&self) -> Result<Vec<ListedDevice>, DmError> {
        let mut cap = LIST_START;
        loop {
            let (reply, buf) = self.call(&Request::new(Cmd::ListDevices, ""), &[], cap)?;
            if reply.flags & flags::BUFFER_FULL != 0 {
                if cap >= LIST_MAX {
                    let why = format!("the list of mappings does not fit in {LIST_MAX} bytes");
                    return Err(DmError::BadReply { op: "list", name: String::new(), why });
                }
                cap *= 2;
                continue;
            }
            let bad = |why| DmError::BadReply { op: "list", name: String::new(), why };
            let data = ioctl::reply_data(&buf, &reply).map_err(bad)?;
            return ioctl::decode_name_list(data).map_err(bad);
        }
    }
}

fn op_name(cmd: Cmd) -> &'static str {
    match cmd {
        Cmd::Version => "version",
        Cmd::ListDevices => "list",
        Cmd::DevCreate => "create",
        Cmd::DevRemove => "remove",
        Cmd::DevSuspend => "resume",
        Cmd::DevStatus => "status",
        Cmd::TableLoad => "load table",
    }
}

fn libc_o_cloexec() -> i32 {
    nix::libc::O_CLOEXEC
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)
}

/// Makes `/dev/mapper/NAME` the block device `dev` and returns its path.
pub fn ensure_node(name: &str, dev: DevNo) -> Result<PathBuf, DmError> {
    ensure_node_in(Path::new("/dev"), name, dev)
}

/// [`ensure_node`] under another `/dev`. A node already there with the right
/// device number is kept; anything else by that name (a stale node from an
/// earlier mapping, a leftover file) is replaced.
pub fn ensure_node_in(dev_dir: &Path, name: &str, dev: DevNo) -> Result<PathBuf, DmError> {
    ioctl::check_name(name)?;
    let dir = dev_dir.join("mapper");
    let path = dir.join(name);
    let node_err = |errno| DmError::Node { path: path.clone(), errno };
    let want = makedev(dev.major as u64, dev.minor as u64);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == want => return Ok(path),
        Ok(_) => std::fs::remove_file(&path).map_err(|e| node_err(errno_of(&e)))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(node_err(errno_of(&e))),
    }
    std::fs::create_dir_all(&dir).map_err(|e| node_err(errno_of(&e)))?;
    // 0600: the initrd has no "disk" group, and only root opens volumes there.
    mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), want).map_err(node_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lifeboat-dm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Needs root (mknod); the crate's tests run as root on CI.
    #[test]
    fn ensure_node_makes_keeps_and_replaces() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("this test makes device nodes and must run as root");
        }
        let d = tmpdir("node");
        let p = ensure_node_in(&d, "vg-root", DevNo::new(253, 4)).unwrap();
        assert_eq!(p, d.join("mapper/vg-root"));
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_block_device());
        assert_eq!(m.rdev(), makedev(253, 4));
        let ino = m.ino();
        // Same device: kept.
        ensure_node_in(&d, "vg-root", DevNo::new(253, 4)).unwrap();
        assert_eq!(std::fs::symlink_metadata(&p).unwrap().ino(), ino);
        // Another device number (a stale node): replaced.
        ensure_node_in(&d, "vg-root", DevNo::new(253, 9)).unwrap();
        assert_eq!(std::fs::symlink_metadata(&p).unwrap().rdev(), makedev(253, 9));
        // A plain file by that name: replaced.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        ensure_node_in(&d, "vg-root", DevNo::new(253, 9)).unwrap();
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_block_device());
        assert!(matches!(ensure_node_in(&d, "../x", DevNo::new(1, 1)), Err(DmError::InvalidName { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Opening a control node made in a scratch directory: on a kernel with
    /// device-mapper the version must be 4.x; on one without (this test host) the
    /// open fails with the error that says device-mapper is missing.
    #[test]
    fn control_node_is_made_and_opened_or_says_what_is_missing() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("this test makes device nodes and must run as root");
        }
        let d = tmpdir("control");
        let path = d.join("mapper/control");
        match DmControl::open_at(&path) {
            Ok(c) => {
                let v = c.version().unwrap();
                assert_eq!(v[0], 4);
                c.list().unwrap();
                assert_eq!(c.status("lifeboat-test-no-such-mapping").unwrap(), None);
            }
            Err(e @ DmError::Control { errno: Errno::ENODEV | Errno::ENXIO, .. }) => {
                assert!(e.to_string().contains("device-mapper is not in the kernel"), "{e}");
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), makedev(10, 236));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
