//! lifeboat's own FAT write path, ordered for power cuts.
//!
//! FAT has no journal: a file is its data, its chain in every FAT copy and its
//! directory entry, in three places no single write covers. This module orders
//! the writes so that a cut between any two of them (and any reordering or
//! tearing of the writes between two flushes) leaves nothing worse than clusters
//! in flight — allocated but not yet linked, or unlinked but not yet freed, and
//! the FAT copies differing in those — never a directory entry that points at
//! free or foreign clusters, a directory without its `.` and `..`, or a long name
//! torn from its short entry:
//!
//! - a new file: its data and its chain in every FAT, a flush, then its entry;
//! - a new directory: its own cluster with `.` and `..` and its chain, a flush,
//!   then the entry that links it;
//! - a directory that must grow: the new zeroed cluster marked end of chain, a
//!   flush, then the link from the old last cluster, a flush;
//! - a removal: the entry deleted, a flush, then its clusters freed (so no new
//!   data can land in clusters a surviving entry still names), never one that
//!   another entry names;
//! - a rename within a directory: the entry set rewritten in the sector of its
//!   short entry, one write (then, for a set another writer placed across two
//!   sectors, what is left of it in the earlier one deleted); when that sector
//!   has no room, through a pending entry, so no cut leaves two entries on one
//!   chain (see [`FatWriter::rename`]).
//!
//! Every entry set lifeboat writes lies inside one 512-byte sector (the unit
//! every disk writes whole), so creating, deleting and renaming an entry are each
//! one atomic write. A long name of more than fifteen slots cannot fit; its short
//! entry is written first and its long-name slots after a flush (a cut shows the
//! file under its 8.3 name, which fsck.fat accepts), and deleted in the reverse
//! order.
//!
//! While a session writes, the boot sector's dirty flag is set and the FAT32
//! FSInfo free count says "unknown"; [`FatWriter::finish`] writes the true count
//! and clears the flag. The in-memory FAT is the first copy as
//! [`crate::fatcheck::reconcile`] left it (all copies equal), so allocation never
//! trusts a hint on disk.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use crate::fatcheck::{
    self, entry_bytes, first_cluster, get, is_lfn, lfn_checksum, marks, read_at, set, set_first_cluster, write_at,
};
use crate::fatraw::{Geometry, Kind};
use crate::window::Window;

/// The unit a disk writes whole; entry sets never straddle one.
const SECTOR: usize = 512;
const SLOTS_PER_SECTOR: usize = SECTOR / 32;
/// FAT allows a directory 65,536 entries.
const MAX_DIR_SLOTS: usize = 65_536;
/// The largest FAT held in memory (as in reconciliation).
const MAX_FAT_BYTES: u64 = 16 << 20;

/// A FAT12/16 root directory has a fixed number of entries; the volume may
/// have space left when it is full.
const ROOT_FULL: &str =
    "the root directory is full (a FAT12/16 root holds a fixed number of entries, whatever space is free): put the file in a directory";

const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
const DELETED: u8 = 0xE5;

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what}: not found"))
}

/// Everything written so far reaches the disk before anything written after.
fn barrier(w: &mut Window) -> io::Result<()> {
    w.sync()
}

/// A directory's bytes and where they live.
struct DirImage {
    /// First cluster; 0 for the fixed root of FAT12/16.
    cluster: u32,
    /// Clusters of the chain (empty for the fixed root).
    chain: Vec<u32>,
    /// Byte ranges on the volume, in order.
    ranges: Vec<(u64, u64)>,
    bytes: Vec<u8>,
}

impl DirImage {
    fn slots(&self) -> usize {
        self.bytes.len() / 32
    }

    fn slot(&self, i: usize) -> &[u8] {
        &self.bytes[i * 32..i * 32 + 32]
    }

    /// The first slot marked end-of-directory, or the slot count.
    fn end(&self) -> usize {
        (0..self.slots()).find(|&i| self.bytes[i * 32] == 0).unwrap_or(self.slots())
    }

    /// Volume offset of byte `at` of the directory.
    fn offset(&self, mut at: u64) -> u64 {
        for &(start, len) in &self.ranges {
            if at < len {
                return start + at;
            }
            at -= len;
        }
        u64::MAX
    }

    /// Writes the 512-byte unit holding slot `i` as it is in memory.
    fn write_sector_of(&self, w: &mut Window, i: usize) -> io::Result<()> {
        let s = i / SLOTS_PER_SECTOR * SECTOR;
        let e = (s + SECTOR).min(self.bytes.len());
        write_at(w, self.offset(s as u64), &self.bytes[s..e])
    }
}

/// One entry of a directory: its slots (long-name slots, then the short entry).
#[derive(Clone, Debug)]
struct Found {
    first_slot: usize,
    short_slot: usize,
    attr: u8,
    cluster: u32,
}

/// Where a new entry set goes: its first slot, and whether free slots before it
/// had to be marked deleted (they were past the end marker).
struct Placement {
    at: usize,
    fill_from: usize,
}

/// The FAT of an open volume and the allocator over it.
pub struct FatWriter {
    g: Geometry,
    fat: Vec<u8>,
    next: u32,
    free: u32,
    session: bool,
    /// Why this volume must not be written (damage found at open), if it must not.
    refused: Option<String>,
}

impl FatWriter {
    /// Reads the first FAT of the volume in `w` (after reconciliation; on a
    /// damaged volume, through the overlay of the FAT reads follow).
    pub fn load(w: &mut Window) -> io::Result<Self> {
        let g = Geometry::read(w)?;
        if g.fat_bytes > MAX_FAT_BYTES {
            return Err(invalid(format!("a FAT of {} bytes is larger than lifeboat writes", g.fat_bytes)));
        }
        if g.clusters == 0 || g.fat_start == 0 || g.first_data + g.clusters as u64 * g.cluster_bytes() > w.len() {
            return Err(invalid("the volume's geometry does not fit its partition".into()));
        }
        let needed = match g.kind {
            Kind::Fat32 => (g.clusters as u64 + 2) * 4,
            Kind::Fat16 => (g.clusters as u64 + 2) * 2,
            Kind::Fat12 => (g.clusters as u64 + 2) * 3 / 2 + 1,
        };
        if needed > g.fat_bytes {
            return Err(invalid(format!("the FAT ({} bytes) is too small for {} clusters", g.fat_bytes, g.clusters)));
        }
        let mut fat = vec![0u8; g.fat_bytes as usize];
        read_at(w, g.fat_start, &mut fat)?;
        let free = (2..g.clusters + 2).filter(|&c| get(g.kind, &fat, c) == 0).count() as u32;
        Ok(FatWriter { g, fat, next: 2, free, session: false, refused: None })
    }

    /// From now on every write refuses with `why`, and the dirty flag is left
    /// as it is: the volume has damage the check at open does not repair.
    pub fn refuse_writes(&mut self, why: String) {
        self.refused = Some(why);
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.g.cluster_bytes()
    }

    pub fn total_clusters(&self) -> u64 {
        self.g.clusters as u64
    }

    pub fn free_clusters(&self) -> u64 {
        self.free as u64
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c < self.g.clusters + 2
    }

    fn fat_get(&self, c: u32) -> u32 {
        get(self.g.kind, &self.fat, c)
    }

    /// Sets entry `c` in memory and in every FAT copy (written at the next flush).
    fn fat_set(&mut self, w: &mut Window, c: u32, v: u32) -> io::Result<()> {
        let was = self.fat_get(c);
        set(self.g.kind, &mut self.fat, c, v);
        match (was == 0, v == 0) {
            (true, false) => self.free = self.free.saturating_sub(1),
            (false, true) => self.free = self.free.saturating_add(1),
            _ => {}
        }
        let (at, len) = entry_bytes(self.g.kind, c);
        let bytes = self.fat[at..at + len].to_vec();
        for k in 0..self.g.fats {
            write_at(w, self.g.fat_start + k * self.g.fat_bytes + at as u64, &bytes)?;
        }
        Ok(())
    }

    /// The clusters of a chain as the in-memory FAT has them (bounded).
    fn chain(&self, first: u32) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = first;
        let end = fatcheck::end_mark(self.g.kind);
        while self.valid(c) {
            if out.len() > self.g.clusters as usize {
                return Err(invalid(format!("the cluster chain from {first} loops")));
            }
            out.push(c);
            let n = self.fat_get(c);
            if n >= end || n == 0 {
                break;
            }
            c = n;
        }
        Ok(out)
    }

    /// A free cluster, searching forward from the last one handed out.
    fn take_free(&mut self) -> io::Result<u32> {
        if self.free == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "the volume is full"));
        }
        let n = self.g.clusters;
        for k in 0..n {
            let c = 2 + (self.next - 2 + k) % n;
            if self.fat_get(c) == 0 {
                self.next = 2 + (c - 2 + 1) % n;
                return Ok(c);
            }
        }
        Err(io::Error::new(io::ErrorKind::StorageFull, "the volume is full"))
    }

    /// Marks the volume as being written: dirty flag set, FSInfo count unknown.
    fn begin(&mut self, w: &mut Window) -> io::Result<()> {
        if let Some(why) = &self.refused {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("not written: {why}")));
        }
        if self.session {
            return Ok(());
        }
        let flag_at = if self.g.kind == Kind::Fat32 { 0x41 } else { 0x25 };
        let mut flag = [0u8; 1];
        read_at(w, flag_at, &mut flag)?;
        write_at(w, flag_at, &[flag[0] | 1])?;
        if let Some(at) = self.fsinfo_at(w)? {
            write_at(w, at + 488, &u32::MAX.to_le_bytes())?;
        }
        barrier(w)?;
        self.session = true;
        Ok(())
    }

    /// The FSInfo sector's offset, if the volume has a valid one.
    fn fsinfo_at(&self, w: &mut Window) -> io::Result<Option<u64>> {
        if self.g.kind != Kind::Fat32 {
            return Ok(None);
        }
        let mut bs = [0u8; 512];
        read_at(w, 0, &mut bs)?;
        let at = u16::from_le_bytes([bs[48], bs[49]]) as u64 * self.g.bps;
        if at == 0 || at + 512 > self.g.fat_start {
            return Ok(None);
        }
        let mut fsi = [0u8; 512];
        read_at(w, at, &mut fsi)?;
        let sig = |i: usize| u32::from_le_bytes([fsi[i], fsi[i + 1], fsi[i + 2], fsi[i + 3]]);
        Ok((sig(0) == 0x4161_5252 && sig(484) == 0x6141_7272).then_some(at))
    }

    /// Ends a session: FSInfo gets the true count, a flush, the dirty flag is
    /// cleared, a flush. The flag is cleared only on a volume the check at open
    /// found whole (a damaged one never begins a session).
    pub fn finish(&mut self, w: &mut Window) -> io::Result<()> {
        if !self.session || self.refused.is_some() {
            return Ok(());
        }
        if let Some(at) = self.fsinfo_at(w)? {
            write_at(w, at + 488, &self.free.to_le_bytes())?;
            write_at(w, at + 492, &self.next.to_le_bytes())?;
        }
        barrier(w)?;
        let flag_at = if self.g.kind == Kind::Fat32 { 0x41 } else { 0x25 };
        let mut flag = [0u8; 1];
        read_at(w, flag_at, &mut flag)?;
        write_at(w, flag_at, &[flag[0] & !1])?;
        barrier(w)?;
        self.session = false;
        Ok(())
    }

    fn read_dir(&self, w: &mut Window, cluster: u32) -> io::Result<DirImage> {
        let (chain, ranges) = if cluster == 0 {
            (Vec::new(), vec![(self.g.root_dir_start, self.g.root_entries * 32)])
        } else {
            let chain = self.chain(cluster)?;
            if chain.is_empty() {
                return Err(invalid(format!("directory cluster {cluster} is outside the volume")));
            }
            let r = chain.iter().map(|&c| (self.g.cluster_offset(c), self.g.cluster_bytes())).collect();
            (chain, r)
        };
        let total: u64 = ranges.iter().map(|r: &(u64, u64)| r.1).sum();
        if total > (MAX_DIR_SLOTS * 32) as u64 {
            return Err(invalid(format!("directory at cluster {cluster} is longer than FAT allows")));
        }
        let mut bytes = vec![0u8; total as usize];
        let mut at = 0usize;
        for &(start, len) in &ranges {
            read_at(w, start, &mut bytes[at..at + len as usize])?;
            at += len as usize;
        }
        Ok(DirImage { cluster, chain, ranges, bytes })
    }

    /// The entries of a directory (not `.`/`..`/volume label), with the names
    /// they answer to.
    fn entries(&self, d: &DirImage) -> Vec<(Found, Option<String>, String)> {
        let mut out = Vec::new();
        let mut run: Vec<usize> = Vec::new();
        for i in 0..d.end() {
            let e = d.slot(i);
            if e[0] == DELETED {
                run.clear();
                continue;
            }
            if is_lfn(e) {
                if e[0] & 0x40 != 0 {
                    run.clear();
                }
                run.push(i);
                continue;
            }
            let lfn = std::mem::take(&mut run);
            if e[11] & 0x08 != 0 || e[0] == b'.' {
                continue;
            }
            let long = long_name(d, &lfn, &e[..11]);
            // Long-name slots right before the entry go with it, valid or not:
            // left behind by a deletion they would be orphans.
            let first_slot = lfn.first().copied().unwrap_or(i);
            let found = Found { first_slot, short_slot: i, attr: e[11], cluster: first_cluster(self.g.kind, e) };
            out.push((found, long, short_display(e)));
        }
        out
    }

    fn find(&self, d: &DirImage, name: &str) -> Option<Found> {
        self.entries(d)
            .into_iter()
            .find(|(_, long, short)| {
                long.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(name)) || short.eq_ignore_ascii_case(name)
            })
            .map(|(f, _, _)| f)
    }

    /// The first cluster of directory `path` (0 for a FAT12/16 root).
    fn dir_cluster(&self, w: &mut Window, path: &[&str]) -> io::Result<u32> {
        let mut c = if self.g.kind == Kind::Fat32 { self.g.root_cluster } else { 0 };
        for (k, name) in path.iter().enumerate() {
            let d = self.read_dir(w, c)?;
            match self.find(&d, name) {
                Some(f) if f.attr & ATTR_DIR != 0 => c = f.cluster,
                Some(_) => return Err(invalid(format!("{} is a file, not a directory", path[..=k].join("/")))),
                None => return Err(not_found(&path[..=k].join("/"))),
            }
        }
        Ok(c)
    }

    /// The first cluster of directory `path` (0 for a FAT12/16 root), for
    /// walks that must know a directory met twice.
    pub fn dir_first_cluster(&self, w: &mut Window, path: &[&str]) -> io::Result<u32> {
        self.dir_cluster(w, path)
    }

    /// When `name` is not any entry's long name in directory `parent` but is
    /// the 8.3 alias of an entry with another name, that name: a file written
    /// as `name` would be that file by its alias. `None` otherwise, and when
    /// `parent` does not exist yet.
    pub fn alias_of(&self, w: &mut Window, parent: &[&str], name: &str) -> io::Result<Option<String>> {
        let pc = match self.dir_cluster(w, parent) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let d = self.read_dir(w, pc)?;
        let entries = self.entries(&d);
        if entries.iter().any(|(_, long, short)| {
            long.as_deref().map_or(short.eq_ignore_ascii_case(name), |l| l.eq_ignore_ascii_case(name))
        }) {
            return Ok(None);
        }
        Ok(entries
            .into_iter()
            .find(|(_, long, short)| long.is_some() && short.eq_ignore_ascii_case(name))
            .and_then(|(_, long, _)| long))
    }

    /// Where `k` slots fit inside one sector of `d` as it is, if anywhere:
    /// slots before the end marker first, then the first sector after it.
    fn find_place(&self, d: &DirImage, k: usize) -> Option<Placement> {
        let end = d.end();
        let free = |d: &DirImage, i: usize| i >= end || d.bytes[i * 32] == DELETED;
        let fits = |d: &DirImage, i: usize| {
            i / SLOTS_PER_SECTOR == (i + k - 1) / SLOTS_PER_SECTOR
                && i + k <= d.slots()
                && (i..i + k).all(|j| free(d, j))
        };
        let start = if d.cluster == 0 || d.cluster == self.g.root_cluster { 0 } else { 2 };
        for i in start..d.slots() {
            if i > end {
                break;
            }
            if fits(d, i) {
                return Some(Placement { at: i, fill_from: i });
            }
        }
        let next_sector = end.div_ceil(SLOTS_PER_SECTOR) * SLOTS_PER_SECTOR;
        (next_sector + k <= d.slots()).then_some(Placement { at: next_sector, fill_from: end })
    }

    /// Finds room for `k` slots inside one sector, growing the directory if
    /// needed (ordered as the module documentation says).
    fn place(&mut self, w: &mut Window, d: &mut DirImage, k: usize) -> io::Result<Placement> {
        if let Some(p) = self.find_place(d, k) {
            return Ok(p);
        }
        let end = d.end();
        let old_slots = d.slots();
        self.grow(w, d)?;
        Ok(Placement { at: old_slots, fill_from: end.min(old_slots) })
    }

    /// The clusters directory `dir` must grow by to take a new entry set for
    /// each of `names` at once (what a replacement's temporary names add while
    /// the old files stay), placed as [`FatWriter::create_file`] would place
    /// them; a directory that does not exist yet counts as a new one of one
    /// cluster. Nothing is written.
    pub fn growth_for(&self, w: &mut Window, dir: &[&str], names: &[&str]) -> io::Result<u64> {
        let cb = self.g.cluster_bytes() as usize;
        let mut d = match self.dir_cluster(w, dir) {
            Ok(c) => self.read_dir(w, c)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `.` and `..` taken, the rest free.
                let mut bytes = vec![0u8; cb];
                bytes[0] = b'.';
                bytes[32] = b'.';
                DirImage { cluster: u32::MAX, chain: Vec::new(), ranges: Vec::new(), bytes }
            }
            Err(e) => return Err(e),
        };
        let mut grown = 0u64;
        for name in names {
            let (_, long) = short_name_for(name, &HashSet::new())?;
            let k = if long { name.encode_utf16().count().div_ceil(13) + 1 } else { 1 };
            if k > SLOTS_PER_SECTOR {
                // Placed across sectors from the end marker on: at most this.
                grown += (k * 32).div_ceil(cb) as u64;
                continue;
            }
            let p = match self.find_place(&d, k) {
                Some(p) => p,
                None if d.cluster == 0 => return Err(io::Error::new(io::ErrorKind::StorageFull, ROOT_FULL)),
                None => {
                    let (end, old) = (d.end(), d.slots());
                    d.bytes.extend(std::iter::repeat_n(0u8, cb));
                    grown += 1;
                    Placement { at: old, fill_from: end.min(old) }
                }
            };
            let end = d.end();
            for i in p.fill_from..p.at {
                d.bytes[i * 32] = DELETED;
            }
            for i in p.at..p.at + k {
                d.bytes[i * 32..i * 32 + 32].fill(b' ');
            }
            let sector_end = ((p.at / SLOTS_PER_SECTOR + 1) * SLOTS_PER_SECTOR).min(d.slots());
            for i in (p.at + k).max(end)..sector_end {
                d.bytes[i * 32..i * 32 + 32].fill(0);
            }
        }
        Ok(grown)
    }

    /// Grows a directory by one cluster: the zeroed cluster marked end of chain,
    /// a flush, then the link from the old last cluster, a flush.
    fn grow(&mut self, w: &mut Window, d: &mut DirImage) -> io::Result<()> {
        if d.cluster == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, ROOT_FULL));
        }
        if d.slots() + (self.g.cluster_bytes() / 32) as usize > MAX_DIR_SLOTS {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "the directory has FAT's most entries"));
        }
        let c = self.take_free()?;
        let last = *d.chain.last().ok_or_else(|| invalid("directory without clusters".into()))?;
        let zero = vec![0u8; self.g.cluster_bytes() as usize];
        write_at(w, self.g.cluster_offset(c), &zero)?;
        let eoc = marks(self.g.kind).0;
        self.fat_set(w, c, eoc)?;
        barrier(w)?;
        self.fat_set(w, last, c)?;
        barrier(w)?;
        d.chain.push(c);
        d.ranges.push((self.g.cluster_offset(c), self.g.cluster_bytes()));
        d.bytes.extend_from_slice(&zero);
        Ok(())
    }

    /// Writes a new entry set for `name` with the given short entry (its name
    /// bytes are chosen here) into directory `d`.
    fn add_entry(&mut self, w: &mut Window, d: &mut DirImage, name: &str, mut sfn: [u8; 32]) -> io::Result<()> {
        let lfn = name_slots(d, None, name, &mut sfn)?;
        let k = lfn.len() + 1;
        if k <= SLOTS_PER_SECTOR {
            let p = self.place(w, d, k)?;
            if p.fill_from < p.at {
                // Free slots past the end marker become deleted ones, so readers
                // that stop at the marker reach the new set; a separate flush when
                // they lie in an earlier sector.
                for i in p.fill_from..p.at {
                    d.bytes[i * 32] = DELETED;
                }
                if p.fill_from / SLOTS_PER_SECTOR != p.at / SLOTS_PER_SECTOR {
                    for s in (p.fill_from / SLOTS_PER_SECTOR)..(p.at / SLOTS_PER_SECTOR) {
                        d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
                    }
                    barrier(w)?;
                }
            }
            let end = d.end();
            for (j, slot) in lfn.iter().chain(std::iter::once(&sfn)).enumerate() {
                let i = p.at + j;
                d.bytes[i * 32..i * 32 + 32].copy_from_slice(slot);
            }
            // Past the old end marker nothing is promised to be zero; what
            // follows the set in its sector becomes the new end.
            let sector_end = ((p.at / SLOTS_PER_SECTOR + 1) * SLOTS_PER_SECTOR).min(d.slots());
            for i in (p.at + k).max(end)..sector_end {
                d.bytes[i * 32..i * 32 + 32].fill(0);
            }
            return d.write_sector_of(w, p.at);
        }
        // Longer than a sector holds: the short entry first, then its long name.
        let p = self.place_spanning(w, d, k)?;
        let short_at = p + k - 1;
        // The slots in front of the short entry are marked deleted first, so no
        // end marker hides it from readers.
        for i in p..short_at {
            d.bytes[i * 32..i * 32 + 32].fill(0);
            d.bytes[i * 32] = DELETED;
        }
        for s in (p / SLOTS_PER_SECTOR)..=((short_at - 1) / SLOTS_PER_SECTOR) {
            d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
        }
        barrier(w)?;
        d.bytes[short_at * 32..short_at * 32 + 32].copy_from_slice(&sfn);
        d.write_sector_of(w, short_at)?;
        barrier(w)?;
        for (j, slot) in lfn.iter().enumerate() {
            d.bytes[(p + j) * 32..(p + j) * 32 + 32].copy_from_slice(slot);
        }
        for s in (p / SLOTS_PER_SECTOR)..=((short_at - 1) / SLOTS_PER_SECTOR) {
            d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
        }
        Ok(())
    }

    /// Room for a set longer than a sector: a run of deleted slots before the
    /// end marker, or the slots from the end marker on (growing as needed).
    fn place_spanning(&mut self, w: &mut Window, d: &mut DirImage, k: usize) -> io::Result<usize> {
        let end = d.end();
        let mut run = 0;
        for i in 0..end {
            run = if d.bytes[i * 32] == DELETED { run + 1 } else { 0 };
            if run == k {
                return Ok(i + 1 - k);
            }
        }
        while d.slots() < end + k {
            self.grow(w, d)?;
        }
        Ok(end)
    }

    /// Deletes an entry set: long-name slots before the short entry when they
    /// lie in other sectors (a cut leaves the file under its 8.3 name), then a
    /// flush.
    fn delete_entry(&self, w: &mut Window, d: &mut DirImage, f: &Found) -> io::Result<()> {
        for i in f.first_slot..=f.short_slot {
            d.bytes[i * 32] = DELETED;
        }
        let short_sector = f.short_slot / SLOTS_PER_SECTOR;
        let first_sector = f.first_slot / SLOTS_PER_SECTOR;
        if first_sector != short_sector {
            for s in first_sector..short_sector {
                d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
            }
            barrier(w)?;
        }
        d.write_sector_of(w, f.short_slot)?;
        barrier(w)
    }

    fn new_short_entry(&self, attr: u8, cluster: u32, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[11] = attr;
        let (date, time) = crate::clock::dos_now();
        e[14..16].copy_from_slice(&time.to_le_bytes());
        e[16..18].copy_from_slice(&date.to_le_bytes());
        e[18..20].copy_from_slice(&date.to_le_bytes());
        e[22..24].copy_from_slice(&time.to_le_bytes());
        e[24..26].copy_from_slice(&date.to_le_bytes());
        set_first_cluster(self.g.kind, &mut e, cluster);
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }

    /// Streams file `path` into `out`, reading each run of contiguous clusters
    /// with one read (through `fatfs` a file is read a cluster at a time: a boot
    /// sync that checks the kernels it keeps made 7,765 reads for 29 MiB).
    pub fn read_file(&self, w: &mut Window, path: &[&str], out: &mut dyn Write) -> io::Result<u64> {
        let (name, parent) = split_last(path)?;
        let pc = self.dir_cluster(w, parent)?;
        let d = self.read_dir(w, pc)?;
        let f = self.find(&d, name).ok_or_else(|| not_found(&path.join("/")))?;
        if f.attr & ATTR_DIR != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: is a directory", path.join("/"))));
        }
        let e = d.slot(f.short_slot);
        let size = u32::from_le_bytes([e[28], e[29], e[30], e[31]]) as u64;
        if size == 0 {
            return Ok(0);
        }
        let chain = if self.valid(f.cluster) { self.chain(f.cluster)? } else { Vec::new() };
        let cb = self.g.cluster_bytes();
        if (chain.len() as u64) * cb < size {
            return Err(invalid("its clusters hold less than its size".into()));
        }
        const RUN: u64 = 4 << 20;
        let mut buf = vec![0u8; RUN.min(size.div_ceil(cb) * cb) as usize];
        let mut left = size;
        let mut k = 0;
        while left > 0 {
            // The longest run of consecutive clusters from chain[k], up to RUN.
            let mut n = 1;
            while k + n < chain.len() && chain[k + n] == chain[k] + n as u32 && (n as u64 + 1) * cb <= RUN {
                n += 1;
            }
            let bytes = ((n as u64) * cb).min(left) as usize;
            read_at(w, self.g.cluster_offset(chain[k]), &mut buf[..bytes])?;
            out.write_all(&buf[..bytes])?;
            left -= bytes as u64;
            k += n;
        }
        Ok(size)
    }

    /// For a new entry at `path`: its name, its directory's cluster and image,
    /// once the name is checked to be free and valid and the session begun.
    fn new_name<'p>(&mut self, w: &mut Window, path: &[&'p str]) -> io::Result<(&'p str, u32, DirImage)> {
        let (name, parent) = split_last(path)?;
        let pc = self.dir_cluster(w, parent)?;
        let d = self.read_dir(w, pc)?;
        if self.find(&d, name).is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: exists", path.join("/"))));
        }
        validate_name(name)?;
        self.begin(w)?;
        Ok((name, pc, d))
    }

    /// Creates `path` (which must not exist) holding what `data` yields: data
    /// and chain, a flush, the entry.
    pub fn create_file(&mut self, w: &mut Window, path: &[&str], data: &mut dyn Read) -> io::Result<u64> {
        let (name, _, mut d) = self.new_name(w, path)?;
        let cb = self.g.cluster_bytes() as usize;
        let mut buf = vec![0u8; (1 << 20) / cb * cb + cb];
        let mut chain: Vec<u32> = Vec::new();
        let mut total = 0u64;
        let r = (|| -> io::Result<()> {
            loop {
                let mut n = 0;
                while n < buf.len() {
                    match data.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if n == 0 {
                    return Ok(());
                }
                if total + n as u64 > u32::MAX as u64 {
                    return Err(io::Error::new(io::ErrorKind::FileTooLarge, "FAT files end at 4 GiB"));
                }
                for piece in buf[..n].chunks(cb) {
                    let c = self.take_free()?;
                    let eoc = marks(self.g.kind).0;
                    self.fat_set(w, c, eoc)?;
                    if let Some(&prev) = chain.last() {
                        self.fat_set(w, prev, c)?;
                    }
                    chain.push(c);
                    write_at(w, self.g.cluster_offset(c), piece)?;
                }
                total += n as u64;
                if n < buf.len() {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = r {
            // Nothing names these clusters: give them back.
            for c in chain {
                self.fat_set(w, c, 0)?;
            }
            return Err(e);
        }
        barrier(w)?;
        let first = chain.first().copied().unwrap_or(0);
        let e = self.new_short_entry(ATTR_ARCHIVE, first, total as u32);
        if let Err(err) = self.add_entry(w, &mut d, name, e) {
            // No entry names the chain (the directory is full): give it back.
            for c in chain {
                self.fat_set(w, c, 0)?;
            }
            return Err(err);
        }
        Ok(total)
    }

    /// Creates directory `path` (which must not exist): its cluster with `.`
    /// and `..`, a flush, the entry.
    pub fn create_dir(&mut self, w: &mut Window, path: &[&str]) -> io::Result<()> {
        let (name, pc, mut d) = self.new_name(w, path)?;
        let c = self.take_free()?;
        let mut cl = vec![0u8; self.g.cluster_bytes() as usize];
        let mut dot = self.new_short_entry(ATTR_DIR, c, 0);
        dot[..11].copy_from_slice(b".          ");
        let parent_ref = if pc == self.g.root_cluster { 0 } else { pc };
        let mut dotdot = self.new_short_entry(ATTR_DIR, parent_ref, 0);
        dotdot[..11].copy_from_slice(b"..         ");
        cl[..32].copy_from_slice(&dot);
        cl[32..64].copy_from_slice(&dotdot);
        write_at(w, self.g.cluster_offset(c), &cl)?;
        let eoc = marks(self.g.kind).0;
        self.fat_set(w, c, eoc)?;
        barrier(w)?;
        let e = self.new_short_entry(ATTR_DIR, c, 0);
        if let Err(err) = self.add_entry(w, &mut d, name, e) {
            self.fat_set(w, c, 0)?;
            return Err(err);
        }
        Ok(())
    }

    /// Removes a file or an empty directory: the entry, a flush, the clusters
    /// — but never a cluster another entry of the directory still names (two
    /// entries on one chain: another writer's rename cut between its writes;
    /// the check at open refuses volumes with cross-links anywhere else).
    pub fn remove(&mut self, w: &mut Window, path: &[&str]) -> io::Result<()> {
        let (name, parent) = split_last(path)?;
        let pc = self.dir_cluster(w, parent)?;
        let mut d = self.read_dir(w, pc)?;
        let f = self.find(&d, name).ok_or_else(|| not_found(&path.join("/")))?;
        if f.attr & ATTR_DIR != 0 && self.valid(f.cluster) {
            let sub = self.read_dir(w, f.cluster)?;
            if !self.entries(&sub).is_empty() {
                return Err(io::Error::other(format!("{}: directory not empty", path.join("/"))));
            }
        }
        let named = self.named_by_others(&d, &f)?;
        self.begin(w)?;
        self.delete_entry(w, &mut d, &f)?;
        if self.valid(f.cluster) {
            // Up to the first cluster another entry names: from there on the
            // chain is that entry's.
            for c in self.chain(f.cluster)?.into_iter().take_while(|c| !named.contains(c)) {
                self.fat_set(w, c, 0)?;
            }
        }
        Ok(())
    }

    /// The clusters the entries of `d` other than `f` name.
    fn named_by_others(&self, d: &DirImage, f: &Found) -> io::Result<HashSet<u32>> {
        let mut named = HashSet::new();
        for (e, _, _) in self.entries(d) {
            if e.short_slot != f.short_slot && self.valid(e.cluster) {
                named.extend(self.chain(e.cluster)?);
            }
        }
        Ok(named)
    }

    /// Renames `from` to `to` within directory `dir`; `to` must not exist. The
    /// set is rewritten in place (one sector) when the sector holding it has
    /// room; otherwise the new set is written, a flush, the old one deleted.
    pub fn rename(&mut self, w: &mut Window, dir: &[&str], from: &str, to: &str) -> io::Result<()> {
        let pc = self.dir_cluster(w, dir)?;
        let mut d = self.read_dir(w, pc)?;
        let f = self.find(&d, from).ok_or_else(|| not_found(&join(dir, from)))?;
        if let Some(g) = self.find(&d, to) {
            if g.short_slot == f.short_slot && from == to {
                return Ok(());
            }
            if g.short_slot != f.short_slot {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: exists", join(dir, to))));
            }
        }
        validate_name(to)?;
        self.begin(w)?;
        let mut sfn: [u8; 32] = d.slot(f.short_slot).try_into().map_err(|_| invalid("short entry".into()))?;
        sfn[12] = 0;
        let lfn = name_slots(&d, Some(f.short_slot), to, &mut sfn)?;
        let k = lfn.len() + 1;
        let sector = f.short_slot / SLOTS_PER_SECTOR;
        if k <= SLOTS_PER_SECTOR {
            let end = d.end();
            let lo = sector * SLOTS_PER_SECTOR;
            let usable =
                |i: usize| (f.first_slot..=f.short_slot).contains(&i) || i >= end || d.bytes[i * 32] == DELETED;
            // A run inside the old short entry's sector, wholly usable, never
            // starting past the end marker (readers stop there). When the old
            // set began in an earlier sector, a run after the sector's first
            // slot is preferred: that slot, deleted, ends what is left of the
            // old long name there, which fsck.fat then calls an orphan it
            // deletes (not a name the new one starts within).
            let fits = |i: usize| i <= end && i + k <= d.slots() && (i..i + k).all(usable);
            let spans = f.first_slot < lo;
            let at = (lo + usize::from(spans)..=lo + SLOTS_PER_SECTOR - k)
                .find(|&i| fits(i))
                .or_else(|| (spans && fits(lo)).then_some(lo));
            if let Some(at) = at {
                // One write moves the name: the old set's slots in this sector
                // deleted, the new set written, the clusters named by one entry
                // before and after.
                for i in f.first_slot..=f.short_slot {
                    d.bytes[i * 32] = DELETED;
                }
                for (j, slot) in lfn.iter().chain(std::iter::once(&sfn)).enumerate() {
                    let i = at + j;
                    d.bytes[i * 32..i * 32 + 32].copy_from_slice(slot);
                }
                // Past the old end marker nothing is promised to be zero; what
                // follows the set in its sector becomes the new end. Deleted
                // slots left at the directory's tail stay "deleted": the end
                // marker is only ever moved by a fresh directory.
                let sector_end = (lo + SLOTS_PER_SECTOR).min(d.slots());
                for i in (at + k).max(end)..sector_end {
                    d.bytes[i * 32..i * 32 + 32].fill(0);
                }
                d.write_sector_of(w, at)?;
                // What the old set has in earlier sectors (another writer placed
                // it across sectors) is an orphaned long name until this flush
                // is followed by its deletion: no order of one-sector writes
                // takes apart a set in two sectors without one, and fsck.fat and
                // the next check delete it too.
                let earlier: std::collections::BTreeSet<usize> =
                    (f.first_slot..f.short_slot).map(|i| i / SLOTS_PER_SECTOR).filter(|&s| s != sector).collect();
                if !earlier.is_empty() {
                    barrier(w)?;
                    for s in earlier {
                        d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
                    }
                }
                return Ok(());
            }
        }
        // The old short entry's sector has no room for the new set. Two
        // entries must never name one chain, at any cut: the new set is written
        // pending (no clusters; it records which it is to take, see fatcheck's
        // `PENDING_MARK`), a flush; the sector of the old short entry loses what
        // the old set has there, a flush; the new entry takes the clusters and
        // the rest of the old set goes, a flush. A cut before the old short
        // entry goes leaves the old name whole and the pending entry, which the
        // next check removes; a cut after it, the chain named by no entry and the
        // pending entry, which the next check completes. An empty file (no
        // clusters) is written under its new name at once.
        let cluster = first_cluster(self.g.kind, &sfn);
        let size = u32::from_le_bytes([sfn[28], sfn[29], sfn[30], sfn[31]]);
        let mut first = sfn;
        first[..11].fill(b' ');
        if self.valid(cluster) {
            fatcheck::set_pending(self.g.kind, &mut first, cluster, size);
        }
        self.add_entry(w, &mut d, to, first)?;
        barrier(w)?;
        let mut d = self.read_dir(w, pc)?;
        let n = self.find(&d, to).ok_or_else(|| invalid(format!("{}: the new entry is not there", join(dir, to))))?;
        let mut done = sfn;
        done[..11].copy_from_slice(&d.slot(n.short_slot)[..11]);
        let old_sector = f.short_slot / SLOTS_PER_SECTOR;
        let new_sector = n.short_slot / SLOTS_PER_SECTOR;
        for i in f.first_slot..=f.short_slot {
            if i / SLOTS_PER_SECTOR == old_sector {
                d.bytes[i * 32] = DELETED;
            }
        }
        if new_sector == old_sector {
            d.bytes[n.short_slot * 32..n.short_slot * 32 + 32].copy_from_slice(&done);
        }
        d.write_sector_of(w, f.short_slot)?;
        barrier(w)?;
        let mut rest = std::collections::BTreeSet::new();
        if new_sector != old_sector {
            d.bytes[n.short_slot * 32..n.short_slot * 32 + 32].copy_from_slice(&done);
            rest.insert(new_sector);
        }
        for i in f.first_slot..f.short_slot {
            if i / SLOTS_PER_SECTOR != old_sector {
                d.bytes[i * 32] = DELETED;
                rest.insert(i / SLOTS_PER_SECTOR);
            }
        }
        for s in rest {
            d.write_sector_of(w, s * SLOTS_PER_SECTOR)?;
        }
        barrier(w)
    }
}

fn join(dir: &[&str], name: &str) -> String {
    let mut p = dir.join("/");
    if !p.is_empty() {
        p.push('/');
    }
    p.push_str(name);
    p
}

fn split_last<'a, 'b>(path: &'b [&'a str]) -> io::Result<(&'a str, &'b [&'a str])> {
    match path.split_last() {
        Some((name, parent)) => Ok((name, parent)),
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "the root cannot be created or removed")),
    }
}

/// Refuses a name FAT cannot hold ([`crate::volume::name_problem`]).
fn validate_name(name: &str) -> io::Result<()> {
    match crate::volume::name_problem(name) {
        Some(w) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {w}"))),
        None => Ok(()),
    }
}

/// Names `sfn` for `name` in directory `d` (an 8.3 name no other entry there has;
/// the entry at `skip`, being renamed, does not count) and returns the long-name
/// slots to write before it (none for an exact upper-case 8.3 name).
fn name_slots(d: &DirImage, skip: Option<usize>, name: &str, sfn: &mut [u8; 32]) -> io::Result<Vec<[u8; 32]>> {
    let taken: HashSet<[u8; 11]> = (0..d.end())
        .filter(|&i| Some(i) != skip)
        .map(|i| d.slot(i))
        .filter(|e| e[0] != DELETED && !is_lfn(e))
        .map(|e| e[..11].try_into().unwrap_or([0; 11]))
        .collect();
    let (short, needs_long) = short_name_for(name, &taken)?;
    sfn[..11].copy_from_slice(&short);
    Ok(if needs_long { lfn_slots(name, &short) } else { Vec::new() })
}

/// Characters an 8.3 name may hold besides letters and digits.
fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b)
}

/// The 8.3 name for `long` not in `taken`, and whether a long name is needed
/// beside it (anything but an exact upper-case 8.3 name).
fn short_name_for(long: &str, taken: &HashSet<[u8; 11]>) -> io::Result<([u8; 11], bool)> {
    let (base, ext) = match long.rfind('.') {
        Some(i) if i > 0 => (&long[..i], &long[i + 1..]),
        _ => (long, ""),
    };
    let exact = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && base.bytes().all(short_char_ok)
        && ext.bytes().all(short_char_ok);
    let mut lossy = false;
    let map = |s: &str, lossy: &mut bool| -> Vec<u8> {
        let mut out = Vec::new();
        for c in s.chars() {
            if c == ' ' || c == '.' {
                *lossy = true;
                continue;
            }
            let u = c.to_ascii_uppercase();
            if u.is_ascii() && short_char_ok(u as u8) {
                out.push(u as u8);
            } else {
                *lossy = true;
                out.push(b'_');
            }
        }
        out
    };
    lossy |= base.starts_with('.');
    let mut b = map(base.trim_start_matches('.'), &mut lossy);
    let mut x = map(ext, &mut lossy);
    if b.is_empty() {
        b.push(b'_');
    }
    lossy |= b.len() > 8 || x.len() > 3;
    x.truncate(3);
    let mut name = [b' '; 11];
    name[8..8 + x.len()].copy_from_slice(&x);
    if exact
        && !taken.contains(&{
            let mut n = name;
            n[..b.len()].copy_from_slice(&b);
            n
        })
    {
        name[..b.len()].copy_from_slice(&b);
        return Ok((name, false));
    }
    if !lossy && b.len() <= 8 {
        let mut n = name;
        n[..b.len()].copy_from_slice(&b);
        if !taken.contains(&n) {
            return Ok((n, true));
        }
    }
    for k in 1..=999_999u32 {
        let tail = format!("~{k}");
        let keep = b.len().min(8 - tail.len());
        let mut n = name;
        n[..keep].copy_from_slice(&b[..keep]);
        n[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        n[keep + tail.len()..8].fill(b' ');
        if !taken.contains(&n) {
            return Ok((n, true));
        }
    }
    Err(io::Error::new(io::ErrorKind::StorageFull, format!("{long:?}: no free 8.3 name")))
}

/// The long-name slots for `long` over `short`, in directory order (the last
/// part first).
fn lfn_slots(long: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = long.encode_utf16().collect();
    let n = units.len().div_ceil(13);
    let sum = lfn_checksum(short);
    let idx = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    let mut out = Vec::with_capacity(n);
    for part in (0..n).rev() {
        let mut e = [0u8; 32];
        e[0] = (part + 1) as u8 | if part + 1 == n { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = sum;
        for (k, &i) in idx.iter().enumerate() {
            let pos = part * 13 + k;
            let u = match pos.cmp(&units.len()) {
                std::cmp::Ordering::Less => units[pos],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
            e[i..i + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.push(e);
    }
    out
}

/// The long name of the slots `lfn` before `short`, if they form a valid one.
fn long_name(d: &DirImage, lfn: &[usize], short: &[u8]) -> Option<String> {
    let first = *lfn.first()?;
    let n = (d.slot(first)[0] & 0x1F) as usize;
    if d.slot(first)[0] & 0x40 == 0 || n != lfn.len() {
        return None;
    }
    let sum = lfn_checksum(short);
    let idx = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    let mut units = Vec::new();
    for (k, &i) in lfn.iter().rev().enumerate() {
        let e = d.slot(i);
        if (e[0] & 0x1F) as usize != k + 1 || e[13] != sum {
            return None;
        }
        units.extend(idx.iter().map(|&j| u16::from_le_bytes([e[j], e[j + 1]])));
    }
    let len = units.iter().position(|&u| u == 0 || u == 0xFFFF).unwrap_or(units.len());
    String::from_utf16(&units[..len]).ok()
}

/// An 8.3 entry's name as readers show it (`BASE.EXT`).
fn short_display(e: &[u8]) -> String {
    let mut raw = e[..11].to_vec();
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let base = String::from_utf8_lossy(&raw[..8]).trim_end().to_owned();
    let ext = String::from_utf8_lossy(&raw[8..11]).trim_end().to_owned();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        let none = HashSet::new();
        assert_eq!(short_name_for("LINUX", &none).unwrap(), (*b"LINUX      ", false));
        assert_eq!(short_name_for("BOOTX64.EFI", &none).unwrap(), (*b"BOOTX64 EFI", false));
        assert_eq!(short_name_for("linux", &none).unwrap(), (*b"LINUX      ", true));
        assert_eq!(short_name_for("loader.conf", &none).unwrap(), (*b"LOADER~1CON", true));
        assert_eq!(short_name_for("initrd", &none).unwrap(), (*b"INITRD     ", true));
        assert_eq!(short_name_for("loader.conf.lbtmp", &none).unwrap(), (*b"LOADER~1LBT", true));
        assert_eq!(short_name_for("a+b.conf", &none).unwrap(), (*b"A_B~1   CON", true));
        let mut taken = HashSet::new();
        taken.insert(*b"LOADER~1LBT");
        assert_eq!(short_name_for("loader.conf.lbtmp", &taken).unwrap(), (*b"LOADER~2LBT", true));
        taken.insert(*b"LINUX      ");
        assert_eq!(short_name_for("linux", &taken).unwrap(), (*b"LINUX~1    ", true));
    }

    #[test]
    fn long_name_slots_round_trip() {
        let name = "lifeboat-4c424f4154544553544d414348494e45-3+2-1.conf";
        let short = *b"LIFEBO~1CON";
        let slots = lfn_slots(name, &short);
        assert_eq!(slots.len(), 4);
        assert_eq!(slots[0][0], 0x44);
        let mut bytes = Vec::new();
        for s in &slots {
            bytes.extend_from_slice(s);
        }
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(&short);
        bytes.extend_from_slice(&e);
        let d = DirImage { cluster: 0, chain: vec![], ranges: vec![(0, bytes.len() as u64)], bytes };
        assert_eq!(long_name(&d, &[0, 1, 2, 3], &short).as_deref(), Some(name));
    }

    #[test]
    fn names_fat_refuses() {
        for bad in ["", "a:b", "a\\b", "x.", "x ", "q?", ".."] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("vmlinuz-6.1.0-28-amd64").unwrap();
    }
}
