//! The content-addressed store, in moss's v2 layout:
//! `.moss/assets/v2/<h[0:2]>/<h[2:4]>/<h[4:6]>/<h>`.
//!
//! A blob is written as an unnamed file (`O_TMPFILE`) in lifeboat's staging
//! directory beside the store (`.moss/assets/lifeboat-stage`) and linked in under
//! its final name, never replacing one; where the system cannot do that, it is
//! written under a temporary name there (leftovers of a crash are removed by the
//! next commit) and renamed into place. Either way a name in the store is only
//! ever given to a finished file. Blobs are made durable with one `syncfs` per
//! operation, before any index that needs them is written; a blob cut short by
//! a power cut before that sync (its name made, its data not) is named by no
//! index, and the next add of its content replaces it.

use std::fs::File;
use std::io;
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
    /// The store's directory was made by this open: it holds no blob but those
    /// added through it, so an add need not look for one first (a second add of
    /// the same content finds the name taken).
    fresh: bool,
    /// The 256 first-level directories, opened by [`Store::for_worker`] (in the
    /// worker's thread, whose descriptor table may be its own): a blob is then
    /// found by walking three components, not four — the blit's links spend a
    /// third of their time walking the store's path. Empty, or `None` for a
    /// directory that could not be opened: the walk starts at the top.
    tops: Vec<Option<OwnedFd>>,
    /// Blobs with their metadata ([`crate::variants`]), where this root has
    /// them (never on a moss root).
    variants: Option<crate::variants::Variants>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Where a blob is, for `*at` calls: the store's descriptor and the path below it,
/// formatted on the stack (the walks look up a quarter of a million blobs).
pub struct BlobLoc<'a> {
    pub dir: BorrowedFd<'a>,
    buf: [u8; crate::hash::STORE_PATH_MAX],
    /// Where the path below `dir` starts in `buf`: past `aa/` when `dir` is a
    /// first-level directory.
    start: usize,
    len: usize,
}

impl BlobLoc<'_> {
    pub fn rel(&self) -> &[u8] {
        &self.buf[self.start..self.len]
    }
}

/// Adds blobs to the store from one thread: keeps the store's 256 first-level
/// directories open (a commit adds blobs in tree order, so their names are
/// scattered over all of them) and its own descriptor of the staging directory.
/// Each blob is written as an unnamed file and linked in under its name (or,
/// where the system refuses, written under a temporary name and renamed), never
/// replacing a whole blob: a blob under its final name is always complete, and
/// two threads adding the same content leave one blob.
pub struct BlobWriter<'s> {
    store: &'s Store,
    stage: Option<OwnedFd>,
    top: Vec<Option<OwnedFd>>,
    /// Whether blobs are written as unnamed files (until the system refuses).
    unnamed: bool,
}

/// A blob's place below one of the store's first-level directories.
struct BlobName {
    buf: [u8; crate::hash::STORE_PATH_MAX],
    len: usize,
}

impl BlobName {
    fn of(h: Hash128) -> Self {
        let mut buf = [0u8; crate::hash::STORE_PATH_MAX];
        let len = h.store_path_into(&mut buf);
        BlobName { buf, len }
    }
    /// Index of the first-level directory (its two hex digits).
    fn top(&self) -> usize {
        let d = |b: u8| (b as char).to_digit(16).unwrap_or(0) as usize;
        d(self.buf[0]) * 16 + d(self.buf[1])
    }
    fn top_name(&self) -> &[u8] {
        &self.buf[..2]
    }
    /// `bb/cc/<name>`, below the first-level directory.
    fn below_top(&self) -> &[u8] {
        &self.buf[3..self.len]
    }
    fn second(&self) -> &[u8] {
        &self.buf[3..5]
    }
    fn third(&self) -> &[u8] {
        &self.buf[6..8]
    }
    /// `cc/<name>`, below the second-level directory.
    fn below_second(&self) -> &[u8] {
        &self.buf[6..self.len]
    }
    fn name(&self) -> &[u8] {
        &self.buf[9..self.len]
    }
}

impl BlobWriter<'_> {
    /// The first-level directory of `n`, made if missing.
    fn top_dir(&mut self, n: &BlobName) -> io::Result<BorrowedFd<'_>> {
        let i = n.top();
        if self.top[i].is_none() {
            mkdir_at(self.store.fd.as_fd(), n.top_name())?;
            self.top[i] = Some(fsutil::open_dir_at(self.store.fd.as_fd(), n.top_name())?);
        }
        match &self.top[i] {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(io::Error::other("store directory not open")),
        }
    }

    /// The size of blob `n`, if it is in the store.
    fn existing_size(&mut self, n: &BlobName) -> io::Result<Option<u64>> {
        let top = self.top_dir(n)?;
        Ok(fsutil::lstat_at(top, n.below_top())?.map(|st| st.st_size as u64))
    }

    /// Adds blob `h` holding `bytes` (the bytes its hash was computed from).
    /// Returns whether it was new.
    pub fn put_bytes(&mut self, h: Hash128, bytes: &[u8], perm: u32, uid: u32, gid: u32) -> Result<bool> {
        use std::io::Write;
        self.put(h, bytes.len() as u64, perm, uid, gid, |mut out| out.write_all(bytes))
    }

    /// Copies `src` (of `size` bytes when it was hashed) in as blob `h`, hashing
    /// what it copies: a file whose content is no longer `h` is refused. Returns
    /// whether the blob was new.
    pub fn put_file(&mut self, h: Hash128, size: u64, src: &File, perm: u32, uid: u32, gid: u32) -> Result<bool> {
        self.put(h, size, perm, uid, gid, |out| {
            let (got, _) = copy_hashing(src, out)?;
            if got != h {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("its content changed while it was being stored (now {got}, was {h})"),
                ));
            }
            Ok(())
        })
    }

    fn put(
        &mut self,
        h: Hash128,
        size: u64,
        perm: u32,
        uid: u32,
        gid: u32,
        fill: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<bool> {
        let n = BlobName::of(h);
        let dest = self.store.blob_path(h);
        let found = if self.store.fresh { None } else { self.existing_size(&n).ctx("stat", &dest)? };
        if found == Some(size) {
            return Ok(false);
        }
        // A blob of another size was cut short by a crash before the sync that
        // would have made it whole (no index names a blob before that sync): it
        // is replaced.
        let replace = found.is_some();
        // Lent out for the call: the staging directory is borrowed while the
        // first-level directories are opened.
        let stage = self.stage.take();
        let res = self.write_blob(stage.as_ref().map(|s| s.as_fd()), &n, replace, perm, uid, gid, fill);
        self.stage = stage;
        res.map_err(|e| Error::io("add to store", dest, e))
    }

    /// Writes the blob and names it: an unnamed file (`O_TMPFILE`) linked in
    /// under the blob's name where the system allows, else a temporary name
    /// renamed into place.
    #[allow(clippy::too_many_arguments)]
    fn write_blob(
        &mut self,
        stage: Option<BorrowedFd>,
        n: &BlobName,
        replace: bool,
        perm: u32,
        uid: u32,
        gid: u32,
        fill: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<bool> {
        // Without a staging directory (a repair), the file is made in the blob's
        // own directory.
        let own_dir;
        let tmp_dir = match stage {
            Some(s) => s,
            None => {
                own_dir = self.leaf_dir(n)?;
                own_dir.as_fd()
            }
        };
        let mut fill = Some(fill);
        let mut content: Option<File> = None;
        if self.unnamed && !replace {
            if let Some(out) = fsutil::create_unnamed(tmp_dir, perm)? {
                if let Some(fill) = fill.take() {
                    fill(&out)?;
                }
                set_new_owner_perm(out.as_fd(), perm, uid, gid)?;
                crate::failpoint::hit("store-add");
                match self.link_in(out.as_fd(), n) {
                    Ok(new) => return Ok(new),
                    // No CAP_DAC_READ_SEARCH: name it the other way, from now on.
                    Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound) => {
                        self.unnamed = false;
                        content = Some(out);
                    }
                    Err(e) => return Err(e),
                }
            } else {
                self.unnamed = false;
            }
        }
        let tmp = format!("{TMP_PREFIX}{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed));
        let out = create_excl(tmp_dir, tmp.as_bytes(), perm)?;
        let res = (|| -> io::Result<bool> {
            match (content, fill) {
                (Some(c), _) => copy_all(&c, &out).map(|_| ())?,
                (None, Some(fill)) => fill(&out)?,
                (None, None) => return Err(io::Error::other("blob content lost")),
            }
            set_new_owner_perm(out.as_fd(), perm, uid, gid)?;
            crate::failpoint::hit("store-add");
            self.place(tmp_dir, tmp.as_bytes(), n, replace)
        })();
        if !matches!(res, Ok(true)) {
            let c = cstr(tmp.as_bytes())?;
            let _ = nix::unistd::unlinkat(tmp_dir, c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        res
    }

    /// The blob's own (third-level) directory, made if missing; each level is
    /// opened without following a symlink.
    fn leaf_dir(&mut self, n: &BlobName) -> io::Result<OwnedFd> {
        let top = self.top_dir(n)?;
        let second = open_or_make(top, n.second())?;
        mkdir_at(second.as_fd(), n.third())?;
        fsutil::open_dir_at(second.as_fd(), n.third())
    }

    /// Names an unnamed file as blob `n`; `false` when another thread put the
    /// same blob there first.
    fn link_in(&mut self, fd: BorrowedFd, n: &BlobName) -> io::Result<bool> {
        if self.store.fresh {
            return self.link_in_fresh(fd, n);
        }
        let top = self.top_dir(n)?;
        let second = open_or_make(top, n.second())?;
        let linked = match mkdir_new(second.as_fd(), n.third())? {
            // A directory this call made holds no symlink: the two-part name
            // resolves inside it.
            true => fsutil::link_unnamed(fd, second.as_fd(), n.below_second()),
            false => {
                let third = fsutil::open_dir_at(second.as_fd(), n.third())?;
                fsutil::link_unnamed(fd, third.as_fd(), n.name())
            }
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`BlobWriter::link_in`] into a store this process made moments ago: it
    /// holds only what its own writers made, so no symlink can be on the way,
    /// and the blob's directories are made and the blob linked in by their
    /// paths below the first-level directory (held open) — without opening and
    /// closing the second level for each of 200,000 blobs.
    fn link_in_fresh(&mut self, fd: BorrowedFd, n: &BlobName) -> io::Result<bool> {
        let top = self.top_dir(n)?;
        let below = n.below_top();
        let dirs = below.get(..5).unwrap_or(below); // `bb/cc`
        if let Err(e) = mkdir_at(top, dirs) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            mkdir_at(top, n.second())?;
            mkdir_at(top, dirs)?;
        }
        match fsutil::link_unnamed(fd, top, below) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renames the finished temporary file to the blob's name (over a damaged
    /// one with `replace`); `false` when another thread put the same blob there
    /// first.
    fn place(&mut self, tmp_dir: BorrowedFd, tmp: &[u8], n: &BlobName, replace: bool) -> io::Result<bool> {
        let third = self.leaf_dir(n)?;
        let renamed = if replace {
            fsutil::rename(tmp_dir, tmp, third.as_fd(), n.name())
        } else {
            fsutil::rename_noreplace(tmp_dir, tmp, third.as_fd(), n.name())
        };
        match renamed {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Opens directory `name` below `dir` (never following a symlink), making it
/// first if it is missing: a store of 200,000 blobs has nearly all of its
/// 65,536 second-level directories, so trying to make one first mostly fails.
fn open_or_make(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    match fsutil::open_dir_at(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mkdir_at(dir, name)?;
            fsutil::open_dir_at(dir, name)
        }
        r => r,
    }
}

/// `mkdirat`, where a directory already there is fine.
fn mkdir_at(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    mkdir_new(dir, name).map(|_| ())
}

/// `mkdirat`: `true` if it made the directory, `false` if something was there.
fn mkdir_new(dir: BorrowedFd, name: &[u8]) -> io::Result<bool> {
    let c = cstr(name)?;
    match nix::sys::stat::mkdirat(dir, c.as_c_str(), Mode::from_bits_truncate(0o755)) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

impl Store {
    /// Opens (and with `create`, makes) the store below the root directory `root`.
    pub fn open(root: BorrowedFd, root_path: &Path, create: bool) -> Result<Self> {
        let path = root_path.join(STORE_REL);
        if create {
            let mut cur = fsutil::dup(root).ctx("open", root_path)?;
            let mut fresh = false;
            for c in STORE_REL.split('/') {
                let cs = cstr(c.as_bytes()).ctx("open", &path)?;
                // `.moss/assets` holds every setuid binary any tree had: closed to others.
                let mode = if c == "assets" { 0o700 } else { 0o755 };
                match nix::sys::stat::mkdirat(cur.as_fd(), cs.as_c_str(), Mode::from_bits_truncate(mode)) {
                    Ok(()) => fresh = true,
                    Err(nix::errno::Errno::EEXIST) => fresh = false,
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
            return Ok(Store { path, fd: cur, stage: Some(stage), fresh, tops: Vec::new(), variants: None });
        }
        let fd = fsutil::open_dir_beneath(root, STORE_REL.as_bytes()).ctx("open store", &path)?;
        Ok(Store::with_fd(path, fd))
    }

    fn with_fd(path: PathBuf, fd: OwnedFd) -> Self {
        Store { path, fd, stage: None, fresh: false, tops: Vec::new(), variants: None }
    }

    /// The same store through a descriptor of its own, for a worker thread:
    /// threads sharing one descriptor pay for its reference count bouncing between
    /// cores on every `*at` call.
    pub fn for_worker(&self) -> io::Result<Store> {
        let fd = fsutil::open_dir_at(self.fd.as_fd(), b".")?;
        let tops = (0..=255u8)
            .map(|b| {
                let name = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                fsutil::open_dir_at(fd.as_fd(), &name).ok()
            })
            .collect();
        let variants = self.variants.as_ref().and_then(|v| v.dup().ok());
        Ok(Store { path: self.path.clone(), fd, stage: None, fresh: false, tops, variants })
    }

    /// With the root's variants ([`crate::variants`]): opened where they are,
    /// and made first with `create` (a command that writes, on a root that is
    /// lifeboat's). Without them, files that cannot be a blob's inode are copies.
    pub fn with_variants(mut self, root: BorrowedFd, root_path: &Path, create: bool) -> Self {
        self.variants = crate::variants::Variants::open(root, root_path, create).ok().flatten();
        self
    }

    pub fn variants(&self) -> Option<&crate::variants::Variants> {
        self.variants.as_ref()
    }

    /// Locates blob `h` for `*at` calls.
    pub fn locate(&self, h: Hash128) -> BlobLoc<'_> {
        let mut buf = [0u8; crate::hash::STORE_PATH_MAX];
        let len = h.store_path_into(&mut buf);
        let first = hex_value(buf[0]).zip(hex_value(buf[1])).map(|(a, b)| usize::from(a << 4 | b));
        match first.and_then(|i| self.tops.get(i)).and_then(|t| t.as_ref()) {
            Some(top) => BlobLoc { dir: top.as_fd(), buf, start: 3, len },
            None => BlobLoc { dir: self.fd.as_fd(), buf, start: 0, len },
        }
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

    /// Opens a blob for reading (never following a symlink in its name, never
    /// blocking on a FIFO put in its place).
    pub fn open_blob(&self, h: Hash128) -> io::Result<File> {
        let rel = h.store_path();
        let c = cstr(rel.as_bytes())?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        Ok(File::from(fd))
    }

    /// Opens blob `h` to copy from, checked to be a regular file of `size`
    /// bytes: a blob cut short, or something else put under its name, is
    /// refused by name.
    pub fn open_blob_checked(&self, h: Hash128, size: u64) -> io::Result<File> {
        let f = self.open_blob(h).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(io::ErrorKind::NotFound, format!("store blob {} is missing", h.moss_hex()))
            } else {
                e
            }
        })?;
        let st = nix::sys::stat::fstat(f.as_fd()).map_err(io_err)?;
        if st.st_mode & lifeboat_fs::libc_mode::S_IFMT != lifeboat_fs::libc_mode::S_IFREG || st.st_size as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("store blob {} is not a regular file of {size} bytes: damaged", h.moss_hex()),
            ));
        }
        Ok(f)
    }

    /// A writer of new blobs, for one thread.
    pub fn writer(&self) -> io::Result<BlobWriter<'_>> {
        let stage = match &self.stage {
            Some(s) => Some(fsutil::dup(s.as_fd())?),
            None => None,
        };
        Ok(BlobWriter { store: self, stage, top: (0..256).map(|_| None).collect(), unnamed: true })
    }

    /// Copies `src` into the store as blob `h`, with the given permissions and
    /// owner (owner only when running as root). Existing blobs are left alone.
    /// The content is hashed as it is copied: a file that changed since it was
    /// hashed (by a commit's scan) is refused, never stored under a name that
    /// is not its content's.
    pub fn add(&self, h: Hash128, src: &File, perm: u32, uid: u32, gid: u32) -> Result<()> {
        let size = src.metadata().ctx("stat", self.blob_path(h))?.len();
        self.writer().ctx("open", &self.path)?.put_file(h, size, src, perm, uid, gid).map(|_| ())
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

/// The data of `f` (of `size` bytes) as `(offset, length)` extents, in order:
/// what lies between them is a hole. Found with `SEEK_DATA`/`SEEK_HOLE`; a
/// filesystem that cannot tell gives one extent, the whole file.
pub fn data_extents(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let fd = f.as_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data at or after `pos`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) if pos == 0 => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(io_err(e)),
        };
        if data >= size {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(size),
            Err(e) => return Err(io_err(e)),
        };
        if hole <= data {
            return Err(io::Error::other("SEEK_HOLE went backwards"));
        }
        out.push((data, hole - data));
        pos = hole;
    }
    Ok(out)
}

/// One zeroed buffer, for hashing holes without reading them.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Copies a whole file and returns the hash of what was copied: each byte of
/// data read once, hashed and written at its offset; holes are hashed as the
/// zeros they read as and left holes in the copy (the copy is as sparse as
/// the source).
pub fn copy_hashing(src: &File, dst: &File) -> io::Result<(Hash128, u64)> {
    use std::os::unix::fs::FileExt;
    let size = src.metadata()?.len();
    let extents = data_extents(src, size)?;
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
        let mut pos = 0u64;
        for (at, len) in extents {
            while pos < at {
                let n = (at - pos).min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..n]);
                pos += n as u64;
            }
            let end = at + len;
            while pos < end {
                let want = (end - pos).min(buf.len() as u64) as usize;
                let n = match src.read_at(&mut buf[..want], pos) {
                    // Shorter than it was: the hash will not match what was asked.
                    Ok(0) => return Ok((Hash128(h.digest128()), pos)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                h.update(&buf[..n]);
                dst.write_all_at(&buf[..n], pos)?;
                pos += n as u64;
            }
        }
        while pos < size {
            let n = (size - pos).min(ZEROS.len() as u64) as usize;
            h.update(&ZEROS[..n]);
            pos += n as u64;
        }
        dst.set_len(size)?;
        Ok((Hash128(h.digest128()), size))
    })
}

/// Copies a whole file, data extent by data extent (in the kernel where it
/// can), so that holes stay holes.
pub fn copy_all(src: &File, dst: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = src.metadata()?.len();
    let mut in_kernel = true;
    let mut buf = Vec::new();
    for (at, len) in data_extents(src, size)? {
        let end = at + len;
        let mut pos = at;
        while pos < end {
            if in_kernel {
                let (mut i, mut o) = (pos as i64, pos as i64);
                match nix::fcntl::copy_file_range(
                    src.as_fd(),
                    Some(&mut i),
                    dst.as_fd(),
                    Some(&mut o),
                    (end - pos).min(1 << 30) as usize,
                ) {
                    Ok(0) => break,
                    Ok(n) => {
                        pos += n as u64;
                        continue;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(
                        nix::errno::Errno::EXDEV
                        | nix::errno::Errno::ENOSYS
                        | nix::errno::Errno::EINVAL
                        | nix::errno::Errno::EOPNOTSUPP,
                    ) => in_kernel = false,
                    Err(e) => return Err(io_err(e)),
                }
            }
            if buf.is_empty() {
                buf = vec![0u8; 128 * 1024];
            }
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = match src.read_at(&mut buf[..want], pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    dst.set_len(size)?;
    Ok(size)
}

/// Whether this process may change owners (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// [`set_owner_perm`] for a file this process just created: its `fstat` first,
/// and only what differs is changed (each change is a journalled inode update).
pub fn set_new_owner_perm(fd: BorrowedFd, perm: u32, uid: u32, gid: u32) -> io::Result<()> {
    let st = nix::sys::stat::fstat(fd).map_err(io_err)?;
    let owner_ok = !is_root() || (st.st_uid == uid && st.st_gid == gid);
    if owner_ok && st.st_mode & 0o7777 == perm & 0o7777 {
        return Ok(());
    }
    set_owner_perm(fd, perm, uid, gid)
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

    #[test]
    fn a_blob_cut_short_is_replaced_and_both_ways_of_naming_agree() {
        let base = std::env::temp_dir().join(format!("lb-store-put-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = fsutil::open_dir(&base).unwrap();
        let store = Store::open(root.as_fd(), &base, true).unwrap();
        // Unnamed files linked in, and temporary names renamed into place.
        for (unnamed, content) in [(true, &b"linked in"[..]), (false, &b"renamed in"[..])] {
            let h = Hash128::of(content);
            let mut w = store.writer().unwrap();
            w.unnamed = unnamed;
            assert!(w.put_bytes(h, content, 0o4755, 0, 0).unwrap());
            assert!(!w.put_bytes(h, content, 0o4755, 0, 0).unwrap(), "a second add is not new");
            let p = store.blob_path(h);
            assert_eq!(std::fs::read(&p).unwrap(), content);
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o4755);
        }
        assert_eq!(fsutil::list_dir(store.stage.as_ref().unwrap().as_fd()).unwrap().len(), 0, "nothing left staged");
        // What a power cut leaves of a blob written but not yet synced: its name,
        // no content. The next add of that content makes it whole.
        let h = Hash128::of(b"whole at last");
        std::fs::create_dir_all(store.blob_path(h).parent().unwrap()).unwrap();
        std::fs::write(store.blob_path(h), b"").unwrap();
        let reopened = Store::open(root.as_fd(), &base, true).unwrap();
        assert!(reopened.writer().unwrap().put_bytes(h, b"whole at last", 0o644, 0, 0).unwrap());
        assert_eq!(std::fs::read(store.blob_path(h)).unwrap(), b"whole at last");
        // Two writers adding the same content at once leave one blob, one of
        // them saying it was new.
        let same = Hash128::of(b"twice");
        let news: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| s.spawn(|| reopened.writer().unwrap().put_bytes(same, b"twice", 0o644, 0, 0).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(news.iter().filter(|n| **n).count(), 1, "{news:?}");
        assert_eq!(std::fs::read(store.blob_path(same)).unwrap(), b"twice");
        let _ = std::fs::remove_dir_all(&base);
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
