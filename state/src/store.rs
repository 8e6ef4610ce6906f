//! The content-addressed store, in moss's v2 layout:
//! `.moss/assets/v2/<h[0:2]>/<h[2:4]>/<h[4:6]>/<h>`.
//!
//! A blob is added by copying into a temporary name in lifeboat's staging directory
//! beside the store (`.moss/assets/lifeboat-stage`; leftovers of a crash are removed
//! by the next commit) and renaming it into place, so a blob under its final name is
//! always complete. Blobs are made
//! durable with one `syncfs` per operation, before any index that needs them is
//! written.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash128;
use lifeboat_fs::{self as fsutil, cstr, io_err};

pub const STORE_REL: &str = ".moss/assets/v2";
/// The staging directory for blobs being added: beside the v2 tree, not in it.
pub const STAGE_REL: &str = ".moss/assets/lifeboat-stage";
const TMP_PREFIX: &str = ".lbtmp-";

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// An open content store.
pub struct Store {
    path: PathBuf,
    fd: OwnedFd,
    /// Where new blobs are written before they are renamed into place (opened for
    /// writing only). One directory for all of them makes ext4 give blobs added
    /// in a row neighbouring inodes, so a blit in the same (tree) order dirties
    /// neighbouring inode-table blocks, as `cp -al` of an ordinary tree does;
    /// created in each blob's own directory, they were scattered.
    stage: Option<OwnedFd>,
}

/// Where a blob is, for `*at` calls: the store's descriptor and the path below it,
/// formatted on the stack (the walks look up a quarter of a million blobs).
pub struct BlobLoc<'a> {
    pub dir: BorrowedFd<'a>,
    buf: [u8; crate::hash::STORE_PATH_MAX],
    len: usize,
}

impl BlobLoc<'_> {
    pub fn rel(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Store {
    /// Opens (and with `create`, makes) the store below the root directory `root`.
    pub fn open(root: BorrowedFd, root_path: &Path, create: bool) -> Result<Self> {
        let path = root_path.join(STORE_REL);
        if create {
            let mut cur = fsutil::dup(root).ctx("open", root_path)?;
            for c in STORE_REL.split('/') {
                let cs = cstr(c.as_bytes()).ctx("open", &path)?;
                match nix::sys::stat::mkdirat(cur.as_fd(), cs.as_c_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io("create", &path, io_err(e))),
                }
                cur = fsutil::open_dir_at(cur.as_fd(), c.as_bytes()).ctx("open", &path)?;
            }
            let stage_path = root_path.join(STAGE_REL);
            let (parent, name) = STAGE_REL.rsplit_once('/').unwrap_or(("", STAGE_REL));
            let parent = fsutil::open_dir_beneath(root, parent.as_bytes()).ctx("open", &stage_path)?;
            let cname = cstr(name.as_bytes()).ctx("create", &stage_path)?;
            match nix::sys::stat::mkdirat(parent.as_fd(), cname.as_c_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(Error::io("create", &stage_path, io_err(e))),
            }
            let stage = fsutil::open_dir_at(parent.as_fd(), name.as_bytes()).ctx("open", &stage_path)?;
            // Left by an add that crashed: the caller holds the root's lock.
            for n in fsutil::list_dir(stage.as_fd()).ctx("list", &stage_path)? {
                if n.starts_with(TMP_PREFIX.as_bytes()) {
                    let c = cstr(&n).ctx("remove", &stage_path)?;
                    let _ = nix::unistd::unlinkat(stage.as_fd(), c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
                }
            }
            return Ok(Store { path, fd: cur, stage: Some(stage) });
        }
        let fd = fsutil::open_dir_beneath(root, STORE_REL.as_bytes()).ctx("open store", &path)?;
        Ok(Store::with_fd(path, fd))
    }

    fn with_fd(path: PathBuf, fd: OwnedFd) -> Self {
        Store { path, fd, stage: None }
    }

    /// The same store through a descriptor of its own, for a worker thread:
    /// threads sharing one descriptor pay for its reference count bouncing between
    /// cores on every `*at` call.
    pub fn for_worker(&self) -> io::Result<Store> {
        Ok(Store { path: self.path.clone(), fd: fsutil::open_dir_at(self.fd.as_fd(), b".")?, stage: None })
    }

    /// Locates blob `h` for `*at` calls.
    pub fn locate(&self, h: Hash128) -> BlobLoc<'_> {
        let mut buf = [0u8; crate::hash::STORE_PATH_MAX];
        let len = h.store_path_into(&mut buf);
        BlobLoc { dir: self.fd.as_fd(), buf, len }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn blob_path(&self, h: Hash128) -> PathBuf {
        self.path.join(h.store_path())
    }

    /// `lstat` of a blob; `None` when absent.
    pub fn stat(&self, h: Hash128) -> io::Result<Option<FileStat>> {
        let loc = self.locate(h);
        fsutil::lstat_at(loc.dir, loc.rel())
    }

    /// Opens a blob for reading (never following a symlink in its name).
    pub fn open_blob(&self, h: Hash128) -> io::Result<File> {
        let rel = h.store_path();
        let c = cstr(rel.as_bytes())?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        Ok(File::from(fd))
    }

    fn ensure_dirs(&self, h: Hash128) -> io::Result<OwnedFd> {
        let rel = h.store_path();
        let parts: Vec<&str> = rel.split('/').collect();
        let mut cur = fsutil::dup(self.fd.as_fd())?;
        for p in &parts[..3] {
            let c = cstr(p.as_bytes())?;
            match nix::sys::stat::mkdirat(cur.as_fd(), c.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
            cur = fsutil::open_dir_at(cur.as_fd(), p.as_bytes())?;
        }
        Ok(cur)
    }

    /// Copies `src` into the store as blob `h`, with the given permissions and
    /// owner (owner only when running as root). Existing blobs are left alone.
    /// The content is hashed as it is copied: a file that changed since it was
    /// hashed (by a commit's scan) is refused, never stored under a name that
    /// is not its content's.
    pub fn add(&self, h: Hash128, src: &File, perm: u32, uid: u32, gid: u32) -> Result<()> {
        let dest = self.blob_path(h);
        let dir = self.ensure_dirs(h).ctx("create store directory for", &dest)?;
        let name = h.moss_hex();
        if fsutil::lstat_at(dir.as_fd(), name.as_bytes()).ctx("stat", &dest)?.is_some() {
            return Ok(());
        }
        let tmp = format!("{TMP_PREFIX}{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed));
        let tmp_dir = self.stage.as_ref().map(|s| s.as_fd()).unwrap_or(dir.as_fd());
        let out = create_excl(tmp_dir, tmp.as_bytes(), perm).ctx("create", dest.with_file_name(&tmp))?;
        let res = (|| -> io::Result<()> {
            let (got, _) = copy_hashing(src, &out)?;
            if got != h {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("its content changed while it was being stored (now {got}, was {h})"),
                ));
            }
            set_owner_perm(out.as_fd(), perm, uid, gid)?;
            crate::failpoint::hit("store-add");
            fsutil::rename(tmp_dir, tmp.as_bytes(), dir.as_fd(), name.as_bytes())
        })();
        if let Err(e) = res {
            let c = cstr(tmp.as_bytes()).ctx("remove", &dest)?;
            let _ = nix::unistd::unlinkat(tmp_dir, c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            return Err(Error::io("add to store", dest, e));
        }
        Ok(())
    }

    /// Removes a blob and the directories it leaves empty. Each directory is
    /// opened beneath the store without following a symlink, so a symlink planted
    /// in the store never makes this unlink anything outside it.
    pub fn remove(&self, h: Hash128) -> io::Result<()> {
        let rel = h.store_path();
        let parts: Vec<&str> = rel.split('/').collect();
        let Some((name, dirs)) = parts.split_last() else { return Ok(()) };
        let unlink = |dir: BorrowedFd, name: &str, flag| {
            fsutil::with_cstr(name.as_bytes(), |c| nix::unistd::unlinkat(dir, c, flag))?.map_err(io_err)
        };
        match fsutil::open_dir_beneath(self.fd.as_fd(), dirs.join("/").as_bytes()) {
            Ok(d) => match unlink(d.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(io::Error::other(format!("{rel}: a symlink in the store's path; not followed")))
            }
            Err(e) => return Err(e),
        }
        for depth in (1..=dirs.len()).rev() {
            let Ok(parent) = fsutil::open_dir_beneath(self.fd.as_fd(), dirs[..depth - 1].join("/").as_bytes()) else {
                break;
            };
            if unlink(parent.as_fd(), dirs[depth - 1], nix::unistd::UnlinkatFlags::RemoveDir).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Every blob name in the store (temporary files and foreign names skipped).
    pub fn list(&self) -> Result<Vec<Hash128>> {
        let mut out = Vec::new();
        let lvl = |fd: BorrowedFd, p: &Path| -> Result<Vec<Vec<u8>>> {
            let mut v = fsutil::list_dir(fd).ctx("list", p)?;
            v.retain(|n| n.len() == 2 && n.iter().all(|b| b.is_ascii_hexdigit()));
            Ok(v)
        };
        for a in lvl(self.fd.as_fd(), &self.path)? {
            let fa = fsutil::open_dir_at(self.fd.as_fd(), &a).ctx("open", &self.path)?;
            for b in lvl(fa.as_fd(), &self.path)? {
                let fb = fsutil::open_dir_at(fa.as_fd(), &b).ctx("open", &self.path)?;
                for c in lvl(fb.as_fd(), &self.path)? {
                    let fc = fsutil::open_dir_at(fb.as_fd(), &c).ctx("open", &self.path)?;
                    for n in fsutil::list_dir(fc.as_fd()).ctx("list", &self.path)? {
                        let Ok(s) = std::str::from_utf8(&n) else {
                            continue;
                        };
                        if let Some(h) = Hash128::parse_hex(s) {
                            if h.store_path().as_bytes().starts_with(&[a[0], a[1], b'/', b[0], b[1], b'/', c[0], c[1]])
                            {
                                out.push(h);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Creates a new file with `O_EXCL`, never following a symlink.
pub fn create_excl(dir: BorrowedFd, name: &[u8], perm: u32) -> io::Result<File> {
    let c = cstr(name)?;
    let fd = nix::fcntl::openat(
        dir,
        c.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(perm & 0o777),
    )
    .map_err(io_err)?;
    Ok(File::from(fd))
}

/// Copies a whole file from its start and returns the hash of what was copied:
/// each byte read once, hashed and written.
pub fn copy_hashing(src: &File, dst: &File) -> io::Result<(Hash128, u64)> {
    use std::io::{Seek, SeekFrom, Write};
    let mut s = src;
    s.seek(SeekFrom::Start(0))?;
    // One buffer per thread, reused: a fresh 256 KiB allocation per blob is an
    // mmap, 64 page faults and an munmap each (a commit of 200,000 blobs spent
    // over a minute in the kernel on them).
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < 256 * 1024 {
            buf.resize(256 * 1024, 0);
        }
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut d = dst;
        let mut total = 0u64;
        loop {
            let n = match s.read(&mut buf[..]) {
                Ok(0) => return Ok((Hash128(h.digest128()), total)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            d.write_all(&buf[..n])?;
            total += n as u64;
        }
    })
}

/// Copies a whole file, in the kernel where it can.
pub fn copy_all(src: &File, dst: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut s = src;
    s.seek(SeekFrom::Start(0))?;
    let mut total = 0u64;
    loop {
        match nix::fcntl::copy_file_range(src.as_fd(), None, dst.as_fd(), None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::EOPNOTSUPP,
            ) if total == 0 => {
                break;
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    let mut buf = vec![0u8; 128 * 1024];
    let mut d = dst;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        d.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Whether this process may change owners (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sets permissions, and the owner when running as root.
pub fn set_owner_perm(fd: BorrowedFd, perm: u32, uid: u32, gid: u32) -> io::Result<()> {
    if is_root() {
        nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into())).map_err(io_err)?;
    }
    // After chown, which clears set-id bits.
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(perm)).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_that_is_not_its_name_is_never_stored() {
        let base = std::env::temp_dir().join(format!("lb-store-add-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = fsutil::open_dir(&base).unwrap();
        let store = Store::open(root.as_fd(), &base, true).unwrap();
        std::fs::write(base.join("f"), b"changed after the scan").unwrap();
        let f = File::open(base.join("f")).unwrap();
        let scanned = Hash128::of(b"what the scan hashed");
        let e = store.add(scanned, &f, 0o644, 0, 0).unwrap_err().to_string();
        assert!(e.contains("changed while it was being stored"), "{e}");
        assert!(store.stat(scanned).unwrap().is_none());
        let right = Hash128::of(b"changed after the scan");
        store.add(right, &f, 0o644, 0, 0).unwrap();
        assert_eq!(std::fs::read(store.blob_path(right)).unwrap(), b"changed after the scan");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn remove_never_follows_a_symlink_out_of_the_store() {
        let base = std::env::temp_dir().join(format!("lb-store-rm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = fsutil::open_dir(&base).unwrap();
        let store = Store::open(root.as_fd(), &base, true).unwrap();
        let (kept, planted) = (Hash128::of(b"kept"), Hash128::of(b"planted"));
        store.add(kept, &File::open(file(&base, "k", b"kept")).unwrap(), 0o644, 0, 0).unwrap();
        // The planted blob's first-level directory is a symlink to a look-alike tree
        // outside the store, holding a file under the blob's name.
        let outside = base.join("outside");
        let rel = planted.store_path();
        let target = outside.join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, b"not the store's").unwrap();
        let top = store.path().join(&rel[..2]);
        let _ = std::fs::remove_dir_all(&top);
        std::os::unix::fs::symlink(outside.join(&rel[..2]), &top).unwrap();
        let err = store.remove(planted).unwrap_err().to_string();
        assert!(err.contains("a symlink in the store's path; not followed"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not the store's");
        // An ordinary blob goes, with the directories it leaves empty.
        store.remove(kept).unwrap();
        assert!(!store.path().join(kept.store_path()).exists());
        assert!(!store.path().join(&kept.store_path()[..8]).exists());
        let _ = std::fs::remove_dir_all(&base);
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
