//! Extended attributes through descriptors: list, read, set and remove, for a
//! file or directory open in hand (`f*xattr`) or for an entry named in an open
//! directory without following it (`l*xattr` on `/proc/thread-self/fd/DIR/NAME`, the thread's own table: the
//! only way to reach a symlink's own attributes relative to a descriptor before
//! Linux 6.13's `*xattrat`). Values are bounded by the kernel's own limit
//! (`XATTR_SIZE_MAX`, 64 KiB), so a hostile file cannot make a read grow without
//! end, and a value that grows between the size probe and the read is read again.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::cstr;

/// The kernel's largest attribute value and name list.
pub const XATTR_SIZE_MAX: usize = 65536;

/// Where the attributes are: an open descriptor, or an entry of an open directory.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Fd(BorrowedFd<'a>),
    /// `name` in directory `dir`, not followed if it is a symlink.
    At(BorrowedFd<'a>, &'a [u8]),
}

/// The `/proc/thread-self/fd/DIR/NAME` path that reaches `name` in `dir`.
fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/thread-self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstr(&p)
}

fn check(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Calls `f` with a buffer of growing size until the answer fits (ERANGE means
/// it grew since the probe).
fn sized(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ERANGE) && cap < XATTR_SIZE_MAX => {
                cap = (cap * 4).min(XATTR_SIZE_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether an error means "this filesystem keeps no attributes" (not a failure
/// for a lister: there are none).
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENOTSUP))
}

/// The names of every attribute of `t` (an empty list where the filesystem keeps none).
pub fn list(t: Target) -> io::Result<Vec<Vec<u8>>> {
    let path = match t {
        Target::At(dir, name) => Some(proc_path(dir, name)?),
        Target::Fd(_) => None,
    };
    let raw = sized(|buf| {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the path is NUL-terminated.
        let r = unsafe {
            match (&t, &path) {
                (Target::Fd(fd), _) => nix::libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()),
                (_, Some(p)) => nix::libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                _ => -1,
            }
        };
        check(r)
    });
    match raw {
        Ok(raw) => Ok(raw.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect()),
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The value of attribute `name` of `t`; `None` when it has none of that name.
pub fn get(t: Target, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name)?;
    let path = match t {
        Target::At(dir, entry) => Some(proc_path(dir, entry)?),
        Target::Fd(_) => None,
    };
    let r = sized(|buf| {
        // SAFETY: as in `list`.
        let r = unsafe {
            match (&t, &path) {
                (Target::Fd(fd), _) => {
                    nix::libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
                (_, Some(p)) => nix::libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                _ => -1,
            }
        };
        check(r)
    });
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets attribute `name` of `t` to `value` (created or replaced).
pub fn set(t: Target, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `value` is valid for its length; the strings are NUL-terminated.
    let r = unsafe {
        match t {
            Target::Fd(fd) => {
                nix::libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) as isize
            }
            Target::At(dir, entry) => {
                let p = proc_path(dir, entry)?;
                nix::libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) as isize
            }
        }
    };
    check(r).map(|_| ())
}

/// Removes attribute `name` of `t`; one that is not there is not an error.
pub fn remove(t: Target, name: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: the strings are NUL-terminated.
    let r = unsafe {
        match t {
            Target::Fd(fd) => nix::libc::fremovexattr(fd.as_raw_fd(), n.as_ptr()) as isize,
            Target::At(dir, entry) => {
                let p = proc_path(dir, entry)?;
                nix::libc::lremovexattr(p.as_ptr(), n.as_ptr()) as isize
            }
        }
    };
    match check(r) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => Ok(()),
        r => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn attributes_of_files_directories_and_entries() {
        let base = std::env::temp_dir().join(format!("lb-xattr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("f"), b"x").unwrap();
        let dir = crate::open_dir(&base).unwrap();
        let f = std::fs::File::open(base.join("f")).unwrap();
        // The scratch filesystem must keep user attributes (ext4, xfs, btrfs, tmpfs 6.6+).
        set(Target::Fd(f.as_fd()), b"user.lifeboat", b"one").unwrap();
        let big = vec![7u8; 3000];
        set(Target::At(dir.as_fd(), b"f"), b"user.big", &big).unwrap();
        let mut names = list(Target::Fd(f.as_fd())).unwrap();
        names.sort();
        assert_eq!(names, [b"user.big".to_vec(), b"user.lifeboat".to_vec()]);
        assert_eq!(get(Target::At(dir.as_fd(), b"f"), b"user.big").unwrap().unwrap(), big);
        assert_eq!(get(Target::Fd(f.as_fd()), b"user.none").unwrap(), None);
        remove(Target::Fd(f.as_fd()), b"user.big").unwrap();
        remove(Target::Fd(f.as_fd()), b"user.big").unwrap();
        assert_eq!(list(Target::At(dir.as_fd(), b"f")).unwrap(), [b"user.lifeboat".to_vec()]);
        // A symlink's own attributes are reached, never its target's.
        std::os::unix::fs::symlink("f", base.join("l")).unwrap();
        assert!(list(Target::At(dir.as_fd(), b"l")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&base);
    }
}
