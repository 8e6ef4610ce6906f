//! The filesystem calls every lifeboat crate shares, as thin typed wrappers over
//! the Linux syscalls: directory fds and walks below a directory that never follow
//! a symlink (`openat2(RESOLVE_BENEATH)` with an `O_NOFOLLOW` fallback),
//! `renameat2` exchange and no-replace (musl has no wrapper), `syncfs`, directory
//! listings with `getdents64` into reused buffers, and the one atomic file write
//! ([`atomic_write_at`], [`atomic_write`]: temporary name, fsync, rename, fsync of
//! the directory) that every host-side writer uses; and [`foreign`], the one way
//! to open a file lifeboat did not create; [`shown`], the one way to print a name
//! lifeboat did not choose.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub mod foreign;
pub mod xattr;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

pub mod shown;

/// Converts a nix errno into an io::Error.
pub fn io_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Calls `f` with `b` as a C string, on the stack when it is short: the tree walks
/// make hundreds of thousands of `*at` calls, and a heap `CString` for each shows.
pub fn with_cstr<R>(b: &[u8], f: impl FnOnce(&std::ffi::CStr) -> R) -> io::Result<R> {
    let mut buf = [0u8; 256];
    if b.len() < buf.len() {
        buf[..b.len()].copy_from_slice(b);
        let c = std::ffi::CStr::from_bytes_with_nul(&buf[..=b.len()])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        Ok(f(c))
    } else {
        Ok(f(cstr(b)?.as_c_str()))
    }
}

/// Opens a directory by absolute or cwd-relative path.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(io_err)
}

/// Opens the directory `name` (one component) below `dir`, refusing symlinks.
pub fn open_dir_at(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    with_cstr(name, |c| {
        nix::fcntl::openat(
            dir,
            c,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    })?
    .map_err(io_err)
}

/// Opens a relative multi-component path below `dir` one component at a time with
/// `O_NOFOLLOW`, so no symlink anywhere in it is followed.
pub fn open_dir_beneath(dir: BorrowedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let mut comps = 0;
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if comp == b".." || comp == b"." {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "`.` or `..` in path"));
        }
        comps += 1;
    }
    if comps == 0 {
        return dup(dir);
    }
    // One syscall where the kernel has openat2 (5.6+) and a filter allows it; the
    // same guarantees as the walk below: no symlink anywhere, nothing outside.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match with_cstr(rel, |c| nix::fcntl::openat2(dir, c, how))? {
        Ok(fd) => return Ok(fd),
        Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(io_err(e)),
    }
    open_dir_walk(dir, rel)
}

/// [`open_dir_beneath`] one component at a time, each opened with `O_NOFOLLOW`.
fn open_dir_walk(dir: BorrowedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let next = open_dir_at(cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir), comp)?;
        cur = Some(next);
    }
    match cur {
        Some(f) => Ok(f),
        None => dup(dir),
    }
}

pub fn dup(fd: BorrowedFd) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

const RENAME_EXCHANGE: u32 = 1 << 1;
const RENAME_NOREPLACE: u32 = 1 << 0;

fn renameat2(olddir: BorrowedFd, old: &[u8], newdir: BorrowedFd, new: &[u8], flags: u32) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the fds are
    // borrowed and open. musl has no renameat2 wrapper, hence the raw syscall.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens an unnamed regular file in directory `dir` (`O_TMPFILE`, read and
/// write): it has no name until [`link_unnamed`] gives it one, and vanishes if
/// the process dies first. `None` where the filesystem cannot make one.
pub fn create_unnamed(dir: BorrowedFd, perm: u32) -> io::Result<Option<std::fs::File>> {
    match nix::fcntl::openat(
        dir,
        c".",
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(perm & 0o777),
    ) {
        Ok(fd) => Ok(Some(std::fs::File::from(fd))),
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EISDIR | nix::errno::Errno::EINVAL) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// Gives the unnamed file `fd` the name `name` in `dir`, never replacing what is
/// there (`AlreadyExists`). Needs `CAP_DAC_READ_SEARCH` (`PermissionDenied` or
/// `NotFound` without it).
pub fn link_unnamed(fd: BorrowedFd, dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the fds are
    // borrowed and open.
    let r = unsafe {
        nix::libc::linkat(fd.as_raw_fd(), c"".as_ptr(), dir.as_raw_fd(), n.as_ptr(), nix::libc::AT_EMPTY_PATH)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Atomically swaps two paths (both must exist).
pub fn exchange(adir: BorrowedFd, a: &[u8], bdir: BorrowedFd, b: &[u8]) -> io::Result<()> {
    renameat2(adir, a, bdir, b, RENAME_EXCHANGE)
}

/// Renames without replacing an existing target.
pub fn rename_noreplace(adir: BorrowedFd, a: &[u8], bdir: BorrowedFd, b: &[u8]) -> io::Result<()> {
    renameat2(adir, a, bdir, b, RENAME_NOREPLACE)
}

/// Plain rename (replaces the target).
pub fn rename(adir: BorrowedFd, a: &[u8], bdir: BorrowedFd, b: &[u8]) -> io::Result<()> {
    renameat2(adir, a, bdir, b, 0)
}

/// Flushes the whole filesystem holding `fd`.
pub fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    nix::unistd::syncfs(fd).map_err(io_err)
}

/// Starts writing the file's dirty pages to the device and returns without
/// waiting for them, so that a later `syncfs` waits for less: a writer of many
/// files (a commit adds 200,000 blobs) overlaps their writeback with its own
/// work. Durability still comes from the `syncfs`; this only moves the
/// writing earlier, so a failure here is no failure.
pub fn start_writeback(fd: BorrowedFd) {
    // SAFETY: `fd` is open for the call; the kernel only reads the arguments.
    let _ = unsafe { nix::libc::sync_file_range(fd.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE) };
}

pub fn fsync(fd: BorrowedFd) -> io::Result<()> {
    nix::unistd::fsync(fd).map_err(io_err)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when it does not exist.
pub fn lstat_at(dir: BorrowedFd, name: &[u8]) -> io::Result<Option<nix::sys::stat::FileStat>> {
    match with_cstr(name, |c| nix::sys::stat::fstatat(dir, c, AtFlags::AT_SYMLINK_NOFOLLOW))? {
        Ok(s) => Ok(Some(s)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// What `statx` says of an inode: the `stat` fields the checks compare and the
/// two timestamps that, with the inode number, tell one inode's life from
/// another's — its birth (`None` where the filesystem keeps none) and its last
/// change, which every link, unlink, `chmod`, `chown` and write moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statx {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u32,
    /// Seconds and nanoseconds.
    pub ctime: (i64, u32),
    pub btime: Option<(i64, u32)>,
}

/// `statx(dir, name, AT_SYMLINK_NOFOLLOW)` (the raw syscall: older musl has no
/// wrapper); `Ok(None)` when it does not exist. An empty `name` is `dir` itself.
pub fn statx_at(dir: BorrowedFd, name: &[u8]) -> io::Result<Option<Statx>> {
    use nix::libc;
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    let mut sx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let r = with_cstr(name, |c| {
        // SAFETY: `c` is a NUL-terminated path and `sx` a buffer of the size the
        // kernel fills; the descriptor is borrowed for the call.
        unsafe { libc::syscall(libc::SYS_statx, dir.as_raw_fd(), c.as_ptr(), flags, mask, sx.as_mut_ptr()) }
    })?;
    if r != 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    // SAFETY: the kernel filled the buffer (it was zeroed before, so a field it
    // left alone reads as 0).
    let sx = unsafe { sx.assume_init() };
    let ts = |t: libc::statx_timestamp| (t.tv_sec, t.tv_nsec);
    Ok(Some(Statx {
        mode: u32::from(sx.stx_mode),
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        size: sx.stx_size,
        dev: libc::makedev(sx.stx_dev_major, sx.stx_dev_minor),
        ino: sx.stx_ino,
        nlink: sx.stx_nlink,
        ctime: ts(sx.stx_ctime),
        btime: (sx.stx_mask & libc::STATX_BTIME != 0).then(|| ts(sx.stx_btime)),
    }))
}

/// The mount an open file is on (`statx`'s `STATX_MNT_ID`, Linux 5.8+), which
/// tells a bind mount of a directory of the same filesystem from the directory
/// itself, where the device number cannot; `None` where the kernel does not say.
pub fn mount_id(fd: BorrowedFd) -> Option<u64> {
    use nix::libc;
    const STATX_MNT_ID: u32 = 0x1000;
    let mut sx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: an empty, NUL-terminated path with AT_EMPTY_PATH names `fd`; `sx`
    // is a buffer of the size the kernel fills.
    let r = unsafe {
        libc::syscall(libc::SYS_statx, fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, STATX_MNT_ID, sx.as_mut_ptr())
    };
    if r != 0 {
        return None;
    }
    // SAFETY: filled by the kernel (zeroed before).
    let sx = unsafe { sx.assume_init() };
    (sx.stx_mask & STATX_MNT_ID != 0).then_some(sx.stx_mnt_id)
}

/// Whether the directory `sub`, opened below `parent`, is on another mount
/// (another device, or a bind mount of the same one).
fn other_mount(parent: BorrowedFd, sub: BorrowedFd) -> io::Result<bool> {
    let (a, b) = (nix::sys::stat::fstat(parent).map_err(io_err)?, nix::sys::stat::fstat(sub).map_err(io_err)?);
    if a.st_dev != b.st_dev {
        return Ok(true);
    }
    Ok(matches!((mount_id(parent), mount_id(sub)), (Some(x), Some(y)) if x != y))
}

/// Removes `name` below `dir` and, if it is a directory, everything in it, without
/// following symlinks or crossing into other mounts (a directory something is
/// mounted on, a bind mount of the same filesystem too, is refused whole; one
/// met deeper is left with its contents).
pub fn remove_tree_at(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let c = cstr(name)?;
    if st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFDIR {
        let sub = open_dir_at(dir, name)?;
        if other_mount(dir, sub.as_fd())? {
            return Err(io::Error::other("refusing to remove across a mount point"));
        }
        clear_dir(sub.as_fd(), st.st_dev)?;
        nix::unistd::unlinkat(dir, c.as_c_str(), nix::unistd::UnlinkatFlags::RemoveDir).map_err(io_err)
    } else {
        nix::unistd::unlinkat(dir, c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io_err)
    }
}

/// Empties a directory (same mount only; what is mounted below it is left,
/// and so is the directory it is mounted on).
pub fn clear_dir(dir: BorrowedFd, dev: u64) -> io::Result<()> {
    for name in list_dir(dir)? {
        let Some(st) = lstat_at(dir, &name)? else {
            continue;
        };
        if st.st_dev != dev {
            continue;
        }
        let c = cstr(&name)?;
        if st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFDIR {
            let sub = open_dir_at(dir, &name)?;
            if other_mount(dir, sub.as_fd())? {
                continue;
            }
            clear_dir(sub.as_fd(), dev)?;
            nix::unistd::unlinkat(dir, c.as_c_str(), nix::unistd::UnlinkatFlags::RemoveDir).map_err(io_err)?;
        } else {
            nix::unistd::unlinkat(dir, c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io_err)?;
        }
    }
    Ok(())
}

/// The target of symlink `name` below `dir`, read into `buf` (reused from call to
/// call: a walk over thousands of symlinks then allocates nothing, where a fresh
/// 4 KiB buffer each time makes musl's allocator map and unmap a group per call).
pub fn read_link_into<'b>(dir: BorrowedFd, name: &[u8], buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    // Linux caps a target at PATH_MAX - 1 bytes: a result filling the buffer
    // would mean a longer one, which it cannot be.
    const CAP: usize = nix::libc::PATH_MAX as usize + 1;
    if buf.len() < CAP {
        buf.resize(CAP, 0);
    }
    let n = with_cstr(name, |c| {
        // SAFETY: `c` is NUL-terminated; the kernel writes at most buf.len() bytes.
        unsafe { nix::libc::readlinkat(dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "symlink target longer than PATH_MAX"));
    }
    Ok(&buf[..n])
}

/// Gives the calling thread a private copy of the descriptor table
/// (`unshare(CLONE_FILES)`) where it may. A worker that opens and closes hundreds
/// of thousands of files then pays no atomic reference count per call on each
/// descriptor it uses (a shared table makes every `*at` and `read` take one, and
/// `read` the file position lock too). Only a speed-up: where it is refused (a
/// container's seccomp filter), the thread keeps the shared table and works the
/// same. Descriptors the thread opens afterwards may exist only in its table: it
/// must not hand them to other threads.
pub fn private_fd_table() -> bool {
    // SAFETY: unshare takes flags only; CLONE_FILES affects the calling thread.
    unsafe { nix::libc::unshare(nix::libc::CLONE_FILES) == 0 }
}

/// One directory entry as `getdents64` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `DT_*` (`DT_UNKNOWN` where the filesystem does not say).
    pub kind: u8,
}

/// Entries of a directory (without `.` and `..`), read with `getdents64` straight
/// from `dir` (rewound first; no second descriptor, no `stat`).
pub fn list_dir_entries(dir: BorrowedFd) -> io::Result<Vec<DirEntry>> {
    nix::unistd::lseek(dir, 0, nix::unistd::Whence::SeekSet).map_err(io_err)?;
    let mut listing = Listing::default();
    listing.read(dir)?;
    Ok(listing.iter().map(|e| DirEntry { name: e.name.to_vec(), ino: e.ino, kind: e.kind }).collect())
}

/// A directory's entries (without `.` and `..`) as `getdents64` gives them, held
/// in buffers that are reused from one directory to the next: a walk of a big tree
/// then allocates almost nothing per directory, which matters under musl, whose
/// allocator takes a lock and maps and unmaps memory for blocks this size.
#[derive(Default)]
pub struct Listing {
    /// The raw records of the last `getdents64` calls.
    raw: Vec<u8>,
    names: Vec<u8>,
    entries: Vec<ListedEntry>,
}

/// An entry of a [`Listing`]: its name is `names[at..at + len]`.
#[derive(Clone, Copy, Debug)]
struct ListedEntry {
    at: u32,
    len: u32,
    ino: u64,
    kind: u8,
}

/// A borrowed entry of a [`Listing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    pub name: &'a [u8],
    pub ino: u64,
    /// `DT_*` (`DT_UNKNOWN` where the filesystem does not say).
    pub kind: u8,
}

impl Listing {
    /// Replaces the listing with the entries of `dir` from its current position
    /// to its end (a freshly opened descriptor: all of them).
    pub fn read(&mut self, dir: BorrowedFd) -> io::Result<()> {
        self.names.clear();
        self.entries.clear();
        if self.raw.len() < 32 * 1024 {
            self.raw.resize(32 * 1024, 0);
        }
        loop {
            // SAFETY: the kernel writes at most raw.len() bytes into raw.
            let n = unsafe {
                nix::libc::syscall(nix::libc::SYS_getdents64, dir.as_raw_fd(), self.raw.as_mut_ptr(), self.raw.len())
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(());
            }
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name\0.
            let raw = &self.raw[..n as usize];
            let mut at = 0usize;
            while at + 19 <= raw.len() {
                let ino = u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
                let reclen = u16::from_ne_bytes([raw[at + 16], raw[at + 17]]) as usize;
                if reclen < 19 || at + reclen > raw.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed directory record"));
                }
                let kind = raw[at + 18];
                let name = &raw[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    let start = self.names.len();
                    self.names.extend_from_slice(name);
                    self.entries.push(ListedEntry { at: start as u32, len: name.len() as u32, ino, kind });
                }
                at += reclen;
            }
        }
    }

    /// Sorts the entries by name, in byte order.
    pub fn sort(&mut self) {
        let names = &self.names;
        let name = |e: &ListedEntry| &names[e.at as usize..(e.at + e.len) as usize];
        self.entries.sort_unstable_by(|a, b| name(a).cmp(name(b)));
    }

    fn get(&self, e: &ListedEntry) -> Listed<'_> {
        Listed { name: &self.names[e.at as usize..(e.at + e.len) as usize], ino: e.ino, kind: e.kind }
    }

    pub fn iter(&self) -> impl Iterator<Item = Listed<'_>> + '_ {
        self.entries.iter().map(|e| self.get(e))
    }

    /// How many entries (without `.` and `..`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry called `name`, in a listing [sorted](Self::sort), looked for from
    /// position `from` on, which is left at the first entry not before `name`:
    /// names asked for in increasing order cost one pass over the listing, not a
    /// binary search each.
    pub fn seek(&self, name: &[u8], from: &mut usize) -> Option<Listed<'_>> {
        while let Some(e) = self.entries.get(*from) {
            let at = self.get(e);
            match at.name.cmp(name) {
                std::cmp::Ordering::Less => *from += 1,
                std::cmp::Ordering::Equal => return Some(at),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Entries of a directory: name and inode number (see [`list_dir_entries`]).
pub fn list_dir_ino(dir: BorrowedFd) -> io::Result<Vec<(Vec<u8>, u64)>> {
    Ok(list_dir_entries(dir)?.into_iter().map(|e| (e.name, e.ino)).collect())
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    Ok(list_dir_entries(dir)?.into_iter().map(|e| e.name).collect())
}

/// Reads a small file at `rel` below `dir` (no symlink anywhere on the way, never
/// outside `dir`), refusing one longer than `max` bytes.
pub fn read_small_at(dir: BorrowedFd, rel: &[u8], max: usize) -> io::Result<Vec<u8>> {
    let fd = open_beneath(dir, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let mut f = std::fs::File::from(fd);
    let mut out = Vec::new();
    (&mut f).take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    Ok(out)
}

/// The temporary name an atomic write of `name` uses beside it (the ESP's crash
/// recovery knows the suffix).
pub fn atomic_tmp_name(name: &[u8]) -> Vec<u8> {
    let mut tmp = name.to_vec();
    tmp.extend_from_slice(b".lbtmp");
    tmp
}

/// Writes a file below `dir` atomically and durably: the data goes to a temporary
/// name beside it (created exclusively, never through a symlink), is fsynced, is
/// renamed over `name`, and the directory is fsynced, so after a crash `name` is
/// either the old file or the whole new one, and after a return it survives one.
/// `mode` is set exactly (whatever the umask) when given.
pub fn atomic_write_from(dir: BorrowedFd, name: &[u8], mode: Option<u32>, data: &mut dyn Read) -> io::Result<u64> {
    write_replacing(dir, name, mode, data, true)
}

/// Replaces `name` below `dir` with `data` through the same temporary name as
/// [`atomic_write_from`], but without its two fsyncs: for a cache that checks
/// its own bytes on reading, where a power cut may lose the new file (or leave
/// it empty) but costing a sync on every write would lose the point of it.
pub fn replace_unsynced(dir: BorrowedFd, name: &[u8], data: &[u8], mode: u32) -> io::Result<()> {
    write_replacing(dir, name, Some(mode), &mut &data[..], false).map(|_| ())
}

fn write_replacing(
    dir: BorrowedFd,
    name: &[u8],
    mode: Option<u32>,
    data: &mut dyn Read,
    durable: bool,
) -> io::Result<u64> {
    let tmp = atomic_tmp_name(name);
    let ct = cstr(&tmp)?;
    let _ = nix::unistd::unlinkat(dir, ct.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = nix::fcntl::openat(
        dir,
        ct.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode.unwrap_or(0o644)),
    )
    .map_err(io_err)?;
    let mut f = std::fs::File::from(fd);
    let written = (|| {
        if let Some(m) = mode {
            nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(m)).map_err(io_err)?;
        }
        let n = io::copy(data, &mut f)?;
        if durable {
            f.sync_all()?;
        }
        Ok(n)
    })();
    drop(f);
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = nix::unistd::unlinkat(dir, ct.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
    };
    rename(dir, &tmp, dir, name)?;
    if durable {
        fsync(dir)?;
    }
    Ok(n)
}

/// [`atomic_write_from`] of bytes.
pub fn atomic_write_at(dir: BorrowedFd, name: &[u8], data: &[u8], mode: u32) -> io::Result<()> {
    atomic_write_from(dir, name, Some(mode), &mut &data[..]).map(|_| ())
}

/// [`atomic_write_from`] by path: the file `path` in its parent directory (`.`
/// when it has none).
pub fn atomic_write_path(path: &Path, mode: Option<u32>, data: &mut dyn Read) -> io::Result<u64> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = open_dir(parent)?;
    atomic_write_from(dir.as_fd(), name.as_bytes(), mode, data)
}

/// [`atomic_write_path`] of bytes with an exact mode.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    atomic_write_path(path, Some(mode), &mut &data[..]).map(|_| ())
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// File-type bits, independent of the libc crate.
pub mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFLNK: u32 = 0o120000;
}

/// Opens `rel` (relative, possibly several components) below `dir` without following
/// any symlink and without leaving `dir`: `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS)`, or a component-by-component `O_NOFOLLOW` walk on kernels
/// older than 5.6.
pub fn open_beneath(dir: BorrowedFd, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let c = cstr(rel)?;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(dir, c.as_c_str(), how) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOSYS) => {
            let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => (&rel[..i], &rel[i + 1..]),
                None => (&rel[..0], rel),
            };
            let pd = open_dir_beneath(dir, parent)?;
            let cn = cstr(name)?;
            nix::fcntl::openat(pd.as_fd(), cn.as_c_str(), flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_dir_beneath_and_its_fallback_agree_and_never_follow_symlinks() {
        let base = std::env::temp_dir().join(format!("lb-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b/c")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("a/link")).unwrap();
        std::os::unix::fs::symlink("b", base.join("a/rel")).unwrap();
        std::fs::write(base.join("a/file"), b"x").unwrap();
        let root = open_dir(&base.join("a")).unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino;
        let want = std::fs::metadata(base.join("a/b/c")).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        for open in [open_dir_beneath, open_dir_walk] {
            assert_eq!(ino(&open(root.as_fd(), b"b/c").unwrap()), want);
            assert_eq!(ino(&open(root.as_fd(), b"b//c/").unwrap()), want);
            assert_eq!(ino(&open(root.as_fd(), b"").unwrap()), ino(&root));
            for bad in [&b"link"[..], b"link/x", b"rel", b"rel/c", b"file", b"missing"] {
                assert!(open(root.as_fd(), bad).is_err(), "{}", String::from_utf8_lossy(bad));
            }
        }
        // Symlink targets, into one reused buffer, up to the longest Linux allows.
        let mut buf = Vec::new();
        assert_eq!(read_link_into(root.as_fd(), b"rel", &mut buf).unwrap(), b"b");
        let long = vec![b'x'; nix::libc::PATH_MAX as usize - 1];
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&long), base.join("a/long")).unwrap();
        assert_eq!(read_link_into(root.as_fd(), b"long", &mut buf).unwrap(), &long[..]);
        assert_eq!(
            read_link_into(root.as_fd(), b"link", &mut buf).unwrap(),
            base.join("outside").as_os_str().as_bytes()
        );
        assert!(read_link_into(root.as_fd(), b"file", &mut buf).is_err());
        for bad in [&b".."[..], b"b/../..", b"./b"] {
            assert_eq!(open_dir_beneath(root.as_fd(), bad).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn atomic_write_replaces_whole_files_with_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("lb-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let p = base.join("f");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1, "no temporary file is left");
        // A symlink planted at the temporary name is replaced, never written through.
        std::fs::write(base.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(base.join("victim"), base.join("f.lbtmp")).unwrap();
        atomic_write(&p, b"three", 0o644).unwrap();
        assert_eq!(std::fs::read(base.join("victim")).unwrap(), b"keep");
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let _ = std::fs::remove_dir_all(&base);
    }
}
