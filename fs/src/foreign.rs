//! Opening files lifeboat did not create — a tree's kernels and initrds, a
//! machine's configuration, a loader given on the command line, a copy a repair
//! recovers content from — through one door: never blocking on a FIFO or a
//! device put where a file was expected (`O_NONBLOCK`, `O_NOCTTY`), never
//! following a symlink at the last component (`O_NOFOLLOW`) unless it resolves
//! inside a given root (`RESOLVE_IN_ROOT`), and refusing anything that is not a
//! regular file with an error that says what it is.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::{cstr, io_err, libc_mode::*};

const FLAGS: OFlag =
    OFlag::O_RDONLY.union(OFlag::O_NONBLOCK).union(OFlag::O_NOCTTY).union(OFlag::O_CLOEXEC).union(OFlag::O_NOFOLLOW);

/// What a non-regular file is, for messages.
fn kind_of(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFDIR => "a directory",
        S_IFLNK => "a symlink",
        0o010000 => "a FIFO",
        0o020000 => "a character device",
        0o060000 => "a block device",
        0o140000 => "a socket",
        _ => "not a regular file",
    }
}

/// Checks that `fd` is a regular file; clears `O_NONBLOCK` (it mattered only
/// for the open of a FIFO).
fn regular(fd: OwnedFd) -> io::Result<File> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io_err)?;
    if st.st_mode & S_IFMT != S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(st.st_mode)),
        ));
    }
    Ok(File::from(fd))
}

/// The error `openat` gives for a symlink opened with `O_NOFOLLOW`, in words.
fn named(e: nix::errno::Errno) -> io::Error {
    match e {
        nix::errno::Errno::ELOOP => {
            io::Error::new(io::ErrorKind::InvalidInput, "is a symlink (not followed), not a regular file")
        }
        nix::errno::Errno::ENXIO => {
            io::Error::new(io::ErrorKind::InvalidInput, "is a device or socket, not a regular file")
        }
        e => io_err(e),
    }
}

/// Opens the regular file at `path` for reading (see the module doc).
pub fn open_file(path: &Path) -> io::Result<File> {
    let fd = nix::fcntl::open(path, FLAGS, Mode::empty()).map_err(named)?;
    regular(fd)
}

/// Opens the regular file `rel` below `dir`, never following a symlink anywhere
/// on the way and never leaving `dir`.
pub fn open_file_beneath(dir: BorrowedFd, rel: &[u8]) -> io::Result<File> {
    let fd = crate::open_beneath(dir, rel, FLAGS).map_err(|e| match e.raw_os_error() {
        Some(code) => named(nix::errno::Errno::from_raw(code)),
        None => e,
    })?;
    regular(fd)
}

/// Opens the regular file `rel` of the tree `root` as that tree sees it:
/// symlinks (an `etc/os-release` pointing at `../usr/lib/os-release`, or at
/// `/usr/lib/os-release`) are followed, but resolved inside `root`
/// (`RESOLVE_IN_ROOT`), so nothing outside it is ever opened. Kernels without
/// `openat2` (before 5.6) follow no symlink at all.
pub fn open_file_in_root(root: BorrowedFd, rel: &[u8]) -> io::Result<File> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let rel = {
        let mut r = rel;
        while let [b'/', rest @ ..] = r {
            r = rest;
        }
        r
    };
    let c = cstr(rel)?;
    let how = OpenHow::new()
        .flags(FLAGS.difference(OFlag::O_NOFOLLOW))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(root, c.as_c_str(), how) {
        Ok(fd) => regular(fd),
        Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => open_file_beneath(root, rel),
        Err(e) => Err(named(e)),
    }
}

/// Opens the regular file a person named on a command line or in a setting:
/// symlinks on the way are followed, as they meant (`--loader
/// /usr/lib/…/systemd-bootx64.efi` may well be one), but what the path reaches
/// is opened as [`open_file`] opens it — never blocking on a FIFO, and only if
/// it is a regular file.
pub fn open_named(path: &Path) -> io::Result<File> {
    open_file(&std::fs::canonicalize(path)?)
}

/// Reads all of `f`, refusing more than `max` bytes.
pub fn read_capped(f: File, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("is larger than {max} bytes")));
    }
    Ok(out)
}

/// [`open_file`] and [`read_capped`].
pub fn read_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_capped(open_file(path)?, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn fifos_devices_and_symlinks_are_refused_without_blocking() {
        let base = std::env::temp_dir().join(format!("lb-foreign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/usr/lib")).unwrap();
        std::fs::create_dir_all(base.join("root/etc")).unwrap();
        std::fs::write(base.join("root/usr/lib/os-release"), b"ID=inside\n").unwrap();
        std::fs::write(base.join("outside"), b"ID=outside\n").unwrap();
        nix::unistd::mkfifo(&base.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        symlink(base.join("outside"), base.join("link")).unwrap();
        // An absolute symlink, as distributions ship /etc/os-release.
        symlink("/usr/lib/os-release", base.join("root/etc/os-release")).unwrap();
        symlink(base.join("fifo"), base.join("root/etc/fifo")).unwrap();

        let e = open_file(&base.join("fifo")).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let e = open_file(&base.join("link")).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let e = open_file(&base.join("root")).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = open_file(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        assert_eq!(read_file(&base.join("outside"), 100).unwrap(), b"ID=outside\n");
        assert!(read_file(&base.join("outside"), 3).unwrap_err().to_string().contains("larger than 3"));

        let root = crate::open_dir(&base.join("root")).unwrap();
        let f = open_file_in_root(root.as_fd(), b"etc/os-release").unwrap();
        assert_eq!(read_capped(f, 100).unwrap(), b"ID=inside\n", "resolved inside the root");
        assert!(open_file_in_root(root.as_fd(), b"etc/fifo").is_err(), "a symlink out of the root is not followed");
        let e = open_file_beneath(root.as_fd(), b"etc/os-release").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        // A name a person gave follows its symlinks, to a regular file only.
        assert_eq!(read_capped(open_named(&base.join("link")).unwrap(), 100).unwrap(), b"ID=outside\n");
        let e = open_named(&base.join("root/etc/fifo")).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
