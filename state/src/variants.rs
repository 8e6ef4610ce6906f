//! Blobs with their metadata: one inode for each distinct (content, mode,
//! owner, extended attributes) that a tree needs and the store's blob cannot be.
//!
//! The store names content only, and a tree's file is a hard link to its blob,
//! so every name of a blob shares the blob's mode, owner and attributes. A file
//! whose metadata differs — a capability on one binary, an SELinux label on
//! every file of a distribution that uses them, the same bytes as a 0644
//! document and a 0755 script — cannot be that link. Rather than a copy per
//! tree (and per transaction), such a file is linked to a *variant*: a copy of
//! the blob that carries the entry's metadata, made once under
//! `.moss/assets/lifeboat-variants/<h[0:2]>/<hash>.<key>` (`<key>` the xxh3-64
//! of the metadata) and shared by every tree and transaction that needs the
//! same. A variant is written as an unnamed file and linked in only once it is
//! whole and carries its metadata, so its name is only ever given to a finished
//! file; the `syncfs` that makes a tree durable makes its variants durable too.
//! `state prune` removes the variants no retained transaction needs.
//!
//! On a moss root there are none: `.moss/assets` is moss's, and moss's layout
//! records no attributes.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;

use crate::attrs::{self, AttrSet};
use crate::hash::Hash128;
use crate::layout::{EntryData, LayoutEntry};
use crate::store::{self, Store};
use lifeboat_fs::{self as fsutil, io_err, xattr::Target};

/// Where the variants are, below the root.
pub const VARIANTS_REL: &str = ".moss/assets/lifeboat-variants";

/// The metadata a variant carries, as one 64-bit key.
pub fn key(perm: u32, uid: u32, gid: u32, attrs: Option<&AttrSet>) -> u64 {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&perm.to_le_bytes());
    b.extend_from_slice(&uid.to_le_bytes());
    b.extend_from_slice(&gid.to_le_bytes());
    for x in attrs.map(|a| a.items()).unwrap_or_default() {
        b.extend_from_slice(&(x.name.len() as u32).to_le_bytes());
        b.extend_from_slice(&x.name);
        b.extend_from_slice(&(x.value.len() as u32).to_le_bytes());
        b.extend_from_slice(&x.value);
    }
    xxhash_rust::xxh3::xxh3_64(&b)
}

/// The key of file entry `e`'s variant.
pub fn key_of(e: &LayoutEntry) -> u64 {
    key(e.perm, e.uid, e.gid, e.attrs.as_deref())
}

/// `<h[0:2]>` and `<hash>.<key>`: the variant's directory and name.
fn names(h: Hash128, key: u64) -> (String, String) {
    let hex = h.moss_hex();
    let dir = hex.get(..2).unwrap_or("00").to_owned();
    (dir, format!("{hex}.{key:016x}"))
}

/// The store's variants directory, opened.
pub struct Variants {
    path: PathBuf,
    fd: OwnedFd,
}

impl Variants {
    /// Opens `.moss/assets/lifeboat-variants` below `root`, made first with
    /// `create`; `None` where it is not there (and not to be made).
    pub fn open(root: BorrowedFd, root_path: &Path, create: bool) -> io::Result<Option<Self>> {
        let path = root_path.join(VARIANTS_REL);
        if create {
            let assets = fsutil::open_dir_beneath(root, b".moss/assets")?;
            match fsutil::with_cstr(b"lifeboat-variants", |c| {
                nix::sys::stat::mkdirat(assets.as_fd(), c, nix::sys::stat::Mode::from_bits_truncate(0o700))
            })? {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        match fsutil::open_dir_beneath(root, VARIANTS_REL.as_bytes()) {
            Ok(fd) => Ok(Some(Variants { path, fd })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The same directory through a descriptor of its own (a worker's).
    pub fn dup(&self) -> io::Result<Self> {
        Ok(Variants { path: self.path.clone(), fd: fsutil::open_dir_at(self.fd.as_fd(), b".")? })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `stat` of the variant of `hash` with `key`, if there is one.
    pub fn stat(&self, hash: Hash128, key: u64) -> Option<nix::sys::stat::FileStat> {
        let (d, n) = names(hash, key);
        fsutil::lstat_at(self.fd.as_fd(), format!("{d}/{n}").as_bytes()).ok().flatten()
    }

    /// Links file entry `e`'s variant into `dir` as `name`, making the variant
    /// from the store's blob first when there is none (or one cut short by a
    /// power cut). `false` when it cannot (`EMLINK`, a filesystem without
    /// unnamed files): the caller copies.
    pub fn place(&self, e: &LayoutEntry, store: &Store, dir: BorrowedFd, name: &[u8]) -> io::Result<bool> {
        let EntryData::File { hash, size } = e.data else { return Ok(false) };
        let (d, n) = names(hash, key_of(e));
        let rel = format!("{d}/{n}");
        for attempt in 0..2 {
            let linked = fsutil::with_cstr(rel.as_bytes(), |src| {
                fsutil::with_cstr(name, |dst| nix::unistd::linkat(self.fd.as_fd(), src, dir, dst, AtFlags::empty()))
            })??;
            match linked {
                Ok(()) => {
                    let st = fsutil::lstat_at(dir, name)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                    if st.st_size as u64 == size && self.carries(e, &st, dir, name)? {
                        return Ok(true);
                    }
                    // Cut short (its name reached the disk, its data did not),
                    // or its metadata changed through a tree's link to it:
                    // made again, once.
                    fsutil::with_cstr(name, |c| {
                        nix::unistd::unlinkat(dir, c, nix::unistd::UnlinkatFlags::NoRemoveDir)
                    })?
                    .map_err(io_err)?;
                    if attempt == 0 {
                        self.remove(hash, key_of(e))?;
                    }
                }
                Err(Errno::ENOENT) if attempt == 0 => {}
                Err(Errno::EMLINK | Errno::ENOENT) => return Ok(false),
                Err(err) => return Err(io_err(err)),
            }
            if !self.make(e, store, hash, &d, &n)? {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Whether the variant just linked as `name` in `dir` (`st`) carries `e`'s
    /// metadata: a regular file of its mode and owner, with its attributes.
    fn carries(
        &self,
        e: &LayoutEntry,
        st: &nix::sys::stat::FileStat,
        dir: BorrowedFd,
        name: &[u8],
    ) -> io::Result<bool> {
        let owner_ok = !store::is_root() || (st.st_uid == e.uid && st.st_gid == e.gid);
        if st.st_mode & lifeboat_fs::libc_mode::S_IFMT != lifeboat_fs::libc_mode::S_IFREG
            || st.st_mode & 0o7777 != e.perm
            || !owner_ok
        {
            return Ok(false);
        }
        if e.attrs.is_none() {
            return Ok(true);
        }
        let have = attrs::read(Target::At(dir, name))?;
        Ok(attrs::differences(e.attrs.as_deref(), have.as_deref()).is_empty())
    }

    /// Makes the variant `d/n` of `e` from the blob: an unnamed file, filled,
    /// given owner, mode and attributes, then named (another thread may name
    /// its own first: either is whole).
    fn make(&self, e: &LayoutEntry, store: &Store, hash: Hash128, d: &str, n: &str) -> io::Result<bool> {
        let size = match e.data {
            EntryData::File { size, .. } => size,
            _ => 0,
        };
        let src: File = store.open_blob_checked(hash, size)?;
        let Some(out) = fsutil::create_unnamed(self.fd.as_fd(), e.perm)? else { return Ok(false) };
        store::copy_all(&src, &out)?;
        store::set_owner_perm(out.as_fd(), e.perm, e.uid, e.gid)?;
        // Exactly these: a default ACL on the directory would have given it one.
        attrs::apply(Target::Fd(out.as_fd()), e.attrs.as_deref(), true)?;
        match fsutil::with_cstr(d.as_bytes(), |c| {
            nix::sys::stat::mkdirat(self.fd.as_fd(), c, nix::sys::stat::Mode::from_bits_truncate(0o700))
        })? {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_err(e)),
        }
        let sub = fsutil::open_dir_at(self.fd.as_fd(), d.as_bytes())?;
        crate::failpoint::hit("variant-link");
        match fsutil::link_unnamed(out.as_fd(), sub.as_fd(), n.as_bytes()) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(true),
            // No CAP_DAC_READ_SEARCH: the caller copies instead.
            Err(err) if matches!(err.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Removes one variant (trees that link it keep their links).
    pub fn remove(&self, hash: Hash128, key: u64) -> io::Result<()> {
        let (d, n) = names(hash, key);
        let Ok(sub) = fsutil::open_dir_at(self.fd.as_fd(), d.as_bytes()) else { return Ok(()) };
        match fsutil::with_cstr(n.as_bytes(), |c| {
            nix::unistd::unlinkat(sub.as_fd(), c, nix::unistd::UnlinkatFlags::NoRemoveDir)
        })? {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Every variant: its content hash and key (names of other shapes skipped).
    pub fn list(&self) -> io::Result<Vec<(Hash128, u64)>> {
        let mut out = Vec::new();
        for d in fsutil::list_dir(self.fd.as_fd())? {
            if d.len() != 2 || !d.iter().all(u8::is_ascii_hexdigit) {
                continue;
            }
            let sub = fsutil::open_dir_at(self.fd.as_fd(), &d)?;
            for n in fsutil::list_dir(sub.as_fd())? {
                let Some(s) = std::str::from_utf8(&n).ok() else { continue };
                let Some((h, k)) = s.split_once('.') else { continue };
                if let (Some(h), Ok(k)) = (Hash128::parse_hex(h), u64::from_str_radix(k, 16)) {
                    if names(h, k).0.as_bytes() == &d[..] {
                        out.push((h, k));
                    }
                }
            }
        }
        Ok(out)
    }
}
