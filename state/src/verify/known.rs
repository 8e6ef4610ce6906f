//! Known blobs: for each file of a layout, the store blob's inode as a check last
//! saw it through the store — inode number, birth time, last-change time — kept
//! in `.moss/lifeboat/known-blobs` in layout order, so that a later quick check
//! can tell that a tree file is still the store's inode from one `statx` in the
//! tree's own directory and one read of the next stamp, instead of looking every
//! blob up through the store's directory levels (most of a quick check's time
//! before this).
//!
//! A [`BlobStamp`] proves it exactly, not probably: every link, unlink, rename
//! over, `chmod`, `chown` and write moves an inode's change time, so a file whose
//! inode, birth and change time equal the stamp taken while the store named that
//! inode has had no link added or removed since — the store's name for it
//! included. A stamp is taken only when its change time is older than the check
//! by [`SETTLED`] (a change within the same clock tick as the stamp would not
//! move it). The stamps belong to a layout's sequence of contents (its digest
//! is in the header): a layout with other contents, or a file that is damaged,
//! is not used. The file is a cache: it is written without a sync and checked
//! on reading, and when it cannot be used the check looks every blob up.

use std::os::fd::{AsFd, BorrowedFd};

use lifeboat_codec::le_u64_at;
use lifeboat_fs::{self as fsutil, libc_mode::*, Statx};

use crate::layout::{EntryData, Layout};

/// Where the stamps live, below the root.
pub const KNOWN_REL: &[u8] = b".moss/lifeboat/known-blobs";
const MAGIC: &[u8; 8] = b"LBKNOWN1";
/// Magic, layout digest, entry count, checksum of the rows.
const HEADER: usize = 8 + 8 + 8 + 8;
/// The xxh3-64 of the stamp; 0 is no stamp.
const ROW: usize = 8;
/// The birth nanoseconds of a filesystem that keeps no birth time.
const NO_BIRTH: u32 = u32::MAX;
/// How much older than the check a change time must be to be stamped.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);
/// Files of the layout whose blobs are looked up before the stamps are trusted.
const SAMPLE: usize = 64;

/// One blob inode's identity: number, birth (where the filesystem keeps it) and
/// last change, seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobStamp {
    pub ino: u64,
    pub ctime: (i64, u32),
    pub btime: Option<(i64, u32)>,
}

impl BlobStamp {
    pub fn of(sx: &Statx) -> Self {
        BlobStamp { ino: sx.ino, ctime: sx.ctime, btime: sx.btime }
    }

    /// The 64-bit digest a row holds: xxh3-64 of the inode number, change time
    /// and birth time, never 0 (an empty row). Two inodes' stamps share one
    /// with a chance of 2^-64.
    pub fn digest(&self) -> u64 {
        let (bs, bn) = self.btime.unwrap_or((0, NO_BIRTH));
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.ino.to_le_bytes());
        b[8..16].copy_from_slice(&self.ctime.0.to_le_bytes());
        b[16..20].copy_from_slice(&self.ctime.1.to_le_bytes());
        b[20..28].copy_from_slice(&bs.to_le_bytes());
        b[28..32].copy_from_slice(&bn.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b).max(1)
    }
}

/// Stamps taken during one check, by layout entry: only of regular files whose
/// last change is older than the cutoff.
pub(crate) struct Stamper {
    cutoff: (i64, u32),
    pub(crate) taken: Vec<(u32, BlobStamp)>,
    /// Blobs looked up through the store.
    pub(crate) looked_up: u64,
    /// Directories listed (not trusted whole).
    pub(crate) listed: u64,
}

impl Stamper {
    pub(crate) fn new(cutoff: (i64, u32)) -> Self {
        Stamper { cutoff, taken: Vec::new(), looked_up: 0, listed: 0 }
    }

    /// Notes what the store showed for the blob of layout entry `entry`.
    pub(crate) fn saw(&mut self, entry: usize, sx: &Statx) {
        if let Some(s) = settled(sx, self.cutoff) {
            self.taken.push((entry as u32, s));
        }
    }

    /// Notes the directory of layout entry `entry`, just found to hold exactly
    /// the layout's entries (`sx` taken before it was listed).
    pub(crate) fn saw_whole_dir(&mut self, entry: usize, sx: &Statx) {
        if sx.mode & S_IFMT == S_IFDIR && sx.ctime < self.cutoff {
            self.taken.push((entry as u32, BlobStamp::of(sx)));
        }
    }
}

/// The stamp of a blob `statx` showed, when it is a regular file whose last
/// change is older than `cutoff`.
pub(crate) fn settled(sx: &Statx, cutoff: (i64, u32)) -> Option<BlobStamp> {
    (sx.mode & S_IFMT == S_IFREG && sx.ctime < cutoff).then(|| BlobStamp::of(sx))
}

/// The change times a check may stamp: older than now by [`SETTLED`].
pub(crate) fn cutoff_now() -> (i64, u32) {
    let t = std::time::SystemTime::now()
        .checked_sub(SETTLED)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    (t.as_secs().min(i64::MAX as u64) as i64, t.subsec_nanos())
}

/// Why a known-blobs file was not used.
#[derive(Debug, PartialEq, Eq)]
pub struct Unusable(pub String);

/// The digest of a layout's sequence of contents: each entry's content hash
/// (zero for what is not a non-empty file), in order. Stamps saved for one
/// digest are used for a layout with that digest only.
pub fn layout_digest(layout: &Layout) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in layout.entries() {
        let b = match &e.data {
            EntryData::File { hash, size } if *size > 0 => hash.0.to_le_bytes(),
            _ => [0; 16],
        };
        h.update(&b);
    }
    h.digest()
}

/// The stamps of a layout's files, one row (the stamp's digest) per layout
/// entry, in the file's own byte form (read in place: loading is a read and a
/// checksum).
pub struct KnownBlobs {
    digest: u64,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for KnownBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownBlobs {{ digest: {:016x}, entries: {} }}", self.digest, self.len())
    }
}

impl KnownBlobs {
    /// No stamps yet for a layout of `entries` entries with `digest`.
    pub fn empty(digest: u64, entries: usize) -> Self {
        let mut bytes = vec![0u8; HEADER + entries * ROW];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&digest.to_le_bytes());
        bytes[16..24].copy_from_slice(&(entries as u64).to_le_bytes());
        let mut k = KnownBlobs { digest, bytes };
        k.seal();
        k
    }

    fn seal(&mut self) {
        let sum = xxhash_rust::xxh3::xxh3_64(&self.bytes[HEADER..]);
        self.bytes[24..32].copy_from_slice(&sum.to_le_bytes());
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// How many layout entries the stamps are for.
    pub fn len(&self) -> usize {
        (self.bytes.len() - HEADER) / ROW
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn row(&self, entry: usize) -> u64 {
        HEADER.checked_add(entry.saturating_mul(ROW)).and_then(|at| le_u64_at(&self.bytes, at)).unwrap_or(0)
    }

    /// Whether a stamp of layout entry `entry`'s blob was taken.
    pub fn has(&self, entry: usize) -> bool {
        self.row(entry) != 0
    }

    /// Whether `sx` is the inode stamped for layout entry `entry`, unchanged.
    pub fn matches(&self, entry: usize, sx: &Statx) -> bool {
        let d = self.row(entry);
        d != 0 && d == BlobStamp::of(sx).digest()
    }

    /// Sets the stamps of entries (out-of-range entries are ignored); whether
    /// anything changed.
    pub fn set(&mut self, stamps: &[(u32, BlobStamp)]) -> bool {
        let mut changed = false;
        for &(i, s) in stamps {
            let at = HEADER + i as usize * ROW;
            let Some(row) = self.bytes.get_mut(at..at + ROW) else {
                continue;
            };
            let d = s.digest().to_le_bytes();
            if *row != d {
                row.copy_from_slice(&d);
                changed = true;
            }
        }
        if changed {
            self.seal();
        }
        changed
    }

    /// The file's bytes: the header (magic, layout digest, entry count, xxh3-64
    /// of the rows) and one little-endian stamp digest per entry.
    pub fn encode(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes [`KnownBlobs::encode`]'s bytes; anything else is refused with what
    /// is wrong.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, Unusable> {
        if bytes.len() < HEADER {
            return Err(Unusable(format!("{} bytes, shorter than the header", bytes.len())));
        }
        if bytes[..8] != *MAGIC {
            return Err(Unusable("not a known-blobs file (bad magic)".into()));
        }
        let digest = le_u64_at(&bytes, 8).unwrap_or_default();
        let entries = le_u64_at(&bytes, 16).unwrap_or_default();
        let rows = (bytes.len() - HEADER) as u64;
        if rows % ROW as u64 != 0 || rows / ROW as u64 != entries {
            return Err(Unusable(format!("{rows} bytes of rows for {entries} entries")));
        }
        if xxhash_rust::xxh3::xxh3_64(&bytes[HEADER..]) != le_u64_at(&bytes, 24).unwrap_or_default() {
            return Err(Unusable("checksum mismatch".into()));
        }
        Ok(KnownBlobs { digest, bytes })
    }

    /// The stamps saved below `root` for a layout with `digest` and `entries`
    /// entries; empty ones when there are none or they cannot be used (a cache
    /// that is wrong only makes a check slower).
    pub fn load(root: BorrowedFd, digest: u64, entries: usize) -> KnownBlobs {
        // Never more than the file for this layout can hold, and never blocking
        // on a FIFO planted under its name.
        let want = HEADER + entries.saturating_mul(ROW);
        let read = || -> Option<Vec<u8>> {
            let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK;
            let fd = fsutil::open_beneath(root, KNOWN_REL, flags).ok()?;
            let mut bytes = Vec::with_capacity(want);
            let f = std::fs::File::from(fd);
            std::io::Read::read_to_end(&mut std::io::Read::take(f, want as u64 + 1), &mut bytes).ok()?;
            Some(bytes)
        };
        match read().map(KnownBlobs::decode) {
            Some(Ok(k)) if k.digest == digest && k.len() == entries => k,
            _ => KnownBlobs::empty(digest, entries),
        }
    }

    /// Saves the stamps below `root`'s `.moss/lifeboat/` (lifeboat's own
    /// directory, on a moss root too), never through a symlink.
    pub fn save(&self, root: BorrowedFd) -> std::io::Result<()> {
        let cut = KNOWN_REL.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let dir = fsutil::open_dir_beneath(root, &KNOWN_REL[..cut])?;
        fsutil::replace_unsynced(std::os::fd::AsFd::as_fd(&dir), &KNOWN_REL[cut + 1..], &self.bytes, 0o644)
    }

    /// Whether a check of the tree `tree` should trust these stamps: at most
    /// three in four of up to [`SAMPLE`] files spread over `layout` would need
    /// their blob looked up — present, but not the inode stamped. A check that
    /// trusts the stamps looks up only those, one by one in tree order; a pass
    /// through the store in hash order is faster only when nearly all need it
    /// (measured: 0.80 s against 0.71 s for a 250,000-entry tree whose every
    /// blob was linked again, as the blit of another tree sharing them does). A
    /// missing file needs no lookup at all, so a wiped or half-wiped tree is
    /// checked by its stamps, not by a pass over 200,000 blobs.
    pub fn describe(&self, layout: &Layout, tree: BorrowedFd) -> bool {
        let es = layout.entries();
        if self.len() != es.len() {
            return false;
        }
        let step = (es.len() / SAMPLE).max(1);
        let (mut looked, mut lookups) = (0usize, 0usize);
        for at in (0..es.len()).step_by(step) {
            let found = es[at..].iter().take(step).enumerate().find_map(|(k, e)| match &e.data {
                EntryData::File { size, .. } if *size > 0 => Some((at + k, e)),
                _ => None,
            });
            let Some((i, e)) = found else {
                continue;
            };
            looked += 1;
            // A probe only, read-only: what the walk will find at the path,
            // reached as the walk reaches it (no symlink on the way, nothing
            // outside the tree). A parent that cannot be opened so holds no
            // file the walk would look up.
            let held = match e.parent() {
                [] => None,
                parent => match fsutil::open_dir_beneath(tree, parent) {
                    Ok(d) => Some(d),
                    Err(_) => continue,
                },
            };
            let dir = held.as_ref().map_or(tree, |d| d.as_fd());
            if let Ok(Some(sx)) = fsutil::statx_at(dir, e.name()) {
                if !self.matches(i, &sx) {
                    lookups += 1;
                }
            }
        }
        looked > 0 && lookups * 4 <= looked * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(i: u64) -> BlobStamp {
        BlobStamp { ino: i, ctime: (i as i64, 5), btime: (i % 2 == 0).then_some((7, 9)) }
    }

    fn sx(s: &BlobStamp) -> Statx {
        Statx {
            mode: S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            dev: 1,
            ino: s.ino,
            nlink: 2,
            ctime: s.ctime,
            btime: s.btime,
        }
    }

    #[test]
    fn stamps_survive_a_round_trip_byte_for_byte() {
        let mut k = KnownBlobs::empty(0xfeed, 4);
        assert!(k.set(&[(1, stamp(1)), (2, stamp(2)), (9, stamp(9))]));
        assert!(!k.set(&[(1, stamp(1))]), "the same stamp again changes nothing");
        let b = k.encode().to_vec();
        assert_eq!(b.len(), HEADER + 4 * ROW);
        assert_eq!(&b[..8], b"LBKNOWN1");
        assert_eq!(&b[HEADER + ROW..HEADER + 2 * ROW], &stamp(1).digest().to_le_bytes());
        assert_eq!(&b[HEADER..HEADER + ROW], &[0; 8], "no stamp");
        let back = KnownBlobs::decode(b.clone()).unwrap();
        assert_eq!(back.digest(), 0xfeed);
        let has: Vec<bool> = (0..5).map(|i| back.has(i)).collect();
        assert_eq!(has, [false, true, true, false, false]);
        assert!(back.matches(1, &sx(&stamp(1))) && back.matches(2, &sx(&stamp(2))));
        assert_eq!(back.encode(), &b[..]);
    }

    #[test]
    fn any_change_to_the_inode_breaks_the_match() {
        let mut k = KnownBlobs::empty(1, 1);
        let s = stamp(2);
        k.set(&[(0, s)]);
        assert!(k.matches(0, &sx(&s)));
        for other in [
            BlobStamp { ino: 3, ..s },
            BlobStamp { ctime: (s.ctime.0, s.ctime.1 + 1), ..s },
            BlobStamp { ctime: (s.ctime.0 + 1, s.ctime.1), ..s },
            BlobStamp { btime: None, ..s },
            BlobStamp { btime: Some((7, 10)), ..s },
        ] {
            assert!(!k.matches(0, &sx(&other)), "{other:?}");
        }
        assert!(!k.matches(1, &sx(&s)), "past the end");
    }

    #[test]
    fn a_damaged_file_is_refused_with_what_is_wrong() {
        let mut k = KnownBlobs::empty(1, 2);
        k.set(&[(0, stamp(3))]);
        let b = k.encode().to_vec();
        let why = |b: &[u8]| KnownBlobs::decode(b.to_vec()).err().map(|e| e.0).unwrap_or_default();
        assert!(why(&b[..b.len() - 1]).contains("bytes of rows"), "{}", why(&b[..b.len() - 1]));
        let mut flipped = b.clone();
        flipped[HEADER + 3] ^= 1;
        assert_eq!(why(&flipped), "checksum mismatch");
        let mut magic = b.clone();
        magic[0] = b'X';
        assert!(why(&magic).contains("magic"));
        assert!(why(&b[..5]).contains("shorter than the header"));
        let mut count = b.clone();
        count[16] = 3;
        assert!(why(&count).contains("for 3 entries"));
    }
}
