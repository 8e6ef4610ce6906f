//! Reconciliation of a FAT volume that a power cut, or any writer that stopped
//! midway, left inconsistent — run once whenever lifeboat opens a volume for
//! writing, before `fatfs` sees it.
//!
//! `fatfs` trusts what it reads: a directory whose cluster the FAT calls free gets
//! that cluster handed to the next new file (which then overwrites the directory),
//! a stale free count is believed, and clusters a crash leaked stay leaked. So the
//! whole tree is walked once with the first FAT in memory, every cluster given at
//! most one owner, and the volume brought to what `fsck.fat -a` would leave, with
//! one difference that keeps more: a directory chain that runs into a free cluster
//! claims it (its entries were written there) where fsck.fat cuts the chain.
//! Files follow fsck.fat's rules (a chain cut at a free cluster, a chain longer
//! than the size freed past it, a size beyond the chain cut to it); `.` and `..`
//! are put in the first two slots; a whole long name whose checksum does not
//! match its short entry is rejoined to it when the two are names of one of
//! lifeboat's own renames torn between two sectors (another tool's stale long
//! name is left alone, as fsck.fat -a does), and long-name slots that belong to
//! no entry are deleted; the other FAT copies are made equal to the first; FSInfo's free count
//! is rewritten; then the dirty flag is cleared.
//!
//! Nothing is deleted that a directory reaches, and the writes are ordered so a
//! power cut during reconciliation leaves a volume no worse than before: first
//! what makes data reachable (claims, chain ends, directory entries), a flush;
//! then what frees clusters, the FAT mirrors and FSInfo, a flush; then the dirty
//! flag. Anything not understood — a cluster with two owners, a chain leaving the
//! volume, a directory without clusters — is reported, and then only the claims
//! are written: a free count or a freed cluster decided on a tree that could not
//! be read whole could destroy what the unread part holds.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::fatraw::{Geometry, Kind};
use crate::window::Window;

/// What reconciliation found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Free clusters that ended a directory's chain, claimed for it.
    pub claimed: usize,
    /// Allocated clusters no file or directory reaches, freed.
    pub freed: usize,
    /// Files (and directories) whose size, first cluster or chain end disagreed,
    /// made to agree.
    pub entries_fixed: usize,
    /// Entries whose first cluster the FAT already calls free — a deletion the
    /// power cut interrupted after the clusters were freed — removed.
    pub unlinked: usize,
    /// Whole long names over a short entry written apart from them (one of
    /// lifeboat's renames, torn), given the short entry's checksum.
    pub long_names_rejoined: usize,
    /// Directories whose `.` and `..` entries were rewritten.
    pub dots_fixed: usize,
    /// Long-name slots (and stray `.`/`..` entries) that belonged to no file, deleted.
    pub slots_deleted: usize,
    /// FAT copies made equal to the first.
    pub fats_mirrored: usize,
    /// FSInfo's free-cluster count or next-free hint rewritten.
    pub fsinfo_fixed: bool,
    /// The boot sector's dirty flag (set by a writer that did not finish) cleared.
    pub dirty_cleared: bool,
    /// What was not understood; with any, only the claims were written.
    pub anomalies: Vec<String>,
}

impl Reconciled {
    /// Whether the volume was changed.
    pub fn changed(&self) -> bool {
        self.claimed
            + self.freed
            + self.entries_fixed
            + self.unlinked
            + self.long_names_rejoined
            + self.dots_fixed
            + self.slots_deleted
            + self.fats_mirrored
            > 0
            || self.fsinfo_fixed
            || self.dirty_cleared
    }

    /// One line per kind of repair, for the user.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        say(self.claimed, "free cluster(s) claimed for the directories that use them");
        say(self.freed, "leaked cluster(s) freed");
        say(self.entries_fixed, "entry size(s) or cluster chain(s) made to agree");
        say(self.unlinked, "entry(ies) of an interrupted deletion removed");
        say(self.long_names_rejoined, "long name(s) of a torn rename rejoined to their entry");
        say(self.dots_fixed, "directory `.`/`..` pair(s) rewritten");
        say(self.slots_deleted, "orphaned long-name or stray dot slot(s) deleted");
        say(self.fats_mirrored, "FAT copy(ies) made equal to the first");
        if self.fsinfo_fixed {
            out.push("FSInfo free-cluster count rewritten".into());
        }
        if self.dirty_cleared {
            out.push("dirty flag of an interrupted writer cleared".into());
        }
        for a in &self.anomalies {
            out.push(format!("not repaired: {a}"));
        }
        out
    }
}

/// The largest FAT reconciled in memory (a 16 GiB volume of 4 KiB clusters).
const MAX_FAT_BYTES: u64 = 16 << 20;
/// FAT allows a directory 65,536 entries of 32 bytes; a longer chain is not read.
const MAX_DIR_BYTES: u64 = 65_536 * 32;
/// Directory nesting beyond this is reported, not followed.
const MAX_DEPTH: usize = 64;

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

pub(crate) fn read_at(w: &mut Window, at: u64, buf: &mut [u8]) -> io::Result<()> {
    w.seek(SeekFrom::Start(at))?;
    w.read_exact(buf)
}

pub(crate) fn write_at(w: &mut Window, at: u64, buf: &[u8]) -> io::Result<()> {
    w.seek(SeekFrom::Start(at))?;
    w.write_all(buf)
}

/// Where entry `c` lies in a FAT (byte offset) and how many bytes to read for it.
pub(crate) fn entry_bytes(kind: Kind, c: u32) -> (usize, usize) {
    let c = c as usize;
    match kind {
        Kind::Fat32 => (c * 4, 4),
        Kind::Fat16 => (c * 2, 2),
        Kind::Fat12 => (c + c / 2, 2),
    }
}

/// Decodes entry `c` from the bytes at [`entry_bytes`].
pub(crate) fn decode(kind: Kind, e: &[u8], c: u32) -> u32 {
    let b = |i: usize| e.get(i).copied().unwrap_or(0) as u32;
    match kind {
        Kind::Fat32 => (b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24) & 0x0FFF_FFFF,
        Kind::Fat16 => b(0) | b(1) << 8,
        Kind::Fat12 if c % 2 == 1 => (b(0) | b(1) << 8) >> 4,
        Kind::Fat12 => (b(0) | b(1) << 8) & 0xFFF,
    }
}

/// Entry `c` of a FAT image (0 past its end).
pub(crate) fn get(kind: Kind, fat: &[u8], c: u32) -> u32 {
    let (at, len) = entry_bytes(kind, c);
    decode(kind, fat.get(at..).map_or(&[][..], |t| &t[..len.min(t.len())]), c)
}

/// Sets entry `c` of a FAT image (FAT32's reserved top bits kept).
pub(crate) fn set(kind: Kind, fat: &mut [u8], c: u32, v: u32) {
    let c = c as usize;
    match kind {
        Kind::Fat32 => {
            if let Some(e) = fat.get_mut(c * 4..c * 4 + 4) {
                let old = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                e.copy_from_slice(&((old & 0xF000_0000) | (v & 0x0FFF_FFFF)).to_le_bytes());
            }
        }
        Kind::Fat16 => {
            if let Some(e) = fat.get_mut(c * 2..c * 2 + 2) {
                e.copy_from_slice(&(v as u16).to_le_bytes());
            }
        }
        Kind::Fat12 => {
            let i = c + c / 2;
            if let Some(e) = fat.get_mut(i..i + 2) {
                let old = u16::from_le_bytes([e[0], e[1]]);
                let v = (v & 0xFFF) as u16;
                let new = if c % 2 == 1 { (old & 0x000F) | v << 4 } else { (old & 0xF000) | v };
                e.copy_from_slice(&new.to_le_bytes());
            }
        }
    }
}

/// The end-of-chain value written, the smallest value read as an end, and the
/// bad-cluster mark.
pub(crate) fn marks(kind: Kind) -> (u32, u32, u32) {
    match kind {
        Kind::Fat12 => (0xFFF, 0xFF8, 0xFF7),
        Kind::Fat16 => (0xFFFF, 0xFFF8, 0xFFF7),
        Kind::Fat32 => (0x0FFF_FFFF, 0x0FFF_FFF8, 0x0FFF_FFF7),
    }
}

/// The smallest entry value that ends a chain.
pub(crate) fn end_mark(kind: Kind) -> u32 {
    marks(kind).1
}

/// The checksum of an 8.3 name that its long-name slots carry.
pub(crate) fn lfn_checksum(short: &[u8]) -> u8 {
    short.iter().take(11).fold(0u8, |s, &b| s.rotate_right(1).wrapping_add(b))
}

const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

pub(crate) fn first_cluster(kind: Kind, e: &[u8]) -> u32 {
    let lo = u16::from_le_bytes([e[26], e[27]]) as u32;
    let hi = if kind == Kind::Fat32 { u16::from_le_bytes([e[20], e[21]]) as u32 } else { 0 };
    hi << 16 | lo
}

pub(crate) fn set_first_cluster(kind: Kind, e: &mut [u8], c: u32) {
    e[26..28].copy_from_slice(&(c as u16).to_le_bytes());
    if kind == Kind::Fat32 {
        e[20..22].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
    }
}

fn size_of(e: &[u8]) -> u64 {
    u32::from_le_bytes([e[28], e[29], e[30], e[31]]) as u64
}

pub(crate) fn set_size(e: &mut [u8], s: u64) {
    e[28..32].copy_from_slice(&(s as u32).to_le_bytes());
}

pub(crate) fn is_lfn(e: &[u8]) -> bool {
    e[11] & 0x3F == 0x0F
}

fn short_name(e: &[u8]) -> String {
    let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_owned();
    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_owned();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Puts `.` and `..` in the first two slots of a directory's first cluster
/// (`head`), pointing at `own` and `parent` (0 for the root). Handles what `fatfs`
/// and a crash leave: the two entries further down behind long-name slots, one
/// of them or both never written. Returns whether `head` changed, or `Err` when
/// the first two slots hold ordinary entries.
pub(crate) fn order_dots(kind: Kind, head: &mut [u8], own: u32, parent: u32) -> Result<bool, String> {
    let slots = head.len() / 32;
    if slots < 3 {
        return Err("directory cluster too small".into());
    }
    let slot = |h: &[u8], i: usize| h[i * 32..i * 32 + 32].to_vec();
    let is = |e: &[u8], n: &[u8; 11]| &e[..11] == n && e[11] & 0x10 != 0;
    let (a, b) = (slot(head, 0), slot(head, 1));
    if is(&a, DOT) && first_cluster(kind, &a) == own && is(&b, DOTDOT) && first_cluster(kind, &b) == parent {
        return Ok(false);
    }
    // Slots before `stop` hold only long-name, deleted and dot entries; `end`
    // is one past the last dot entry; `ended` says the scan met the end mark.
    let (mut dot, mut dotdot, mut end) = (None, None, 0);
    let mut stop = slots.min(16);
    let mut ended = false;
    for i in 0..slots.min(16) {
        let e = slot(head, i);
        if e[0] == 0 {
            (stop, ended) = (i, true);
            break;
        }
        if e[0] == 0xE5 || is_lfn(&e) {
            continue;
        }
        if is(&e, DOT) && dot.is_none() {
            dot = Some(e);
        } else if is(&e, DOTDOT) && dotdot.is_none() {
            dotdot = Some(e);
        } else {
            stop = i;
            break;
        }
        end = i + 1;
    }
    if stop < 2 && !ended {
        return Err("the first two slots hold other entries".into());
    }
    let mk = |name: &[u8; 11], from: Option<Vec<u8>>, first: u32| {
        let mut e = from.unwrap_or_else(|| {
            let mut e = vec![0u8; 32];
            e[11] = 0x10;
            e
        });
        e[..11].copy_from_slice(name);
        set_first_cluster(kind, &mut e, first);
        set_size(&mut e, 0);
        e
    };
    // Times of a missing entry are those of the other.
    let (d, dd) = (dot.clone().or(dotdot.clone()), dotdot.or(dot));
    head[..32].copy_from_slice(&mk(DOT, d, own));
    head[32..64].copy_from_slice(&mk(DOTDOT, dd, parent));
    for i in 2..end {
        head[i * 32] = 0xE5;
    }
    if ended && stop < 3 {
        // What followed the end mark was never part of the directory.
        head[64] = 0;
    }
    Ok(true)
}

/// One directory read whole: where its bytes live and the bytes.
struct DirBuf {
    ranges: Vec<(u64, u64)>,
    bytes: Vec<u8>,
    original: Vec<u8>,
}

/// The walk's state: the first FAT as it should become, and who owns what.
struct Walk<'a> {
    g: Geometry,
    w: &'a mut Window,
    fat: Vec<u32>,
    owned: Vec<bool>,
    out: Reconciled,
    dirs: Vec<DirBuf>,
}

impl Walk<'_> {
    fn valid(&self, c: u32) -> bool {
        c >= 2 && (c as u64) < self.g.clusters as u64 + 2
    }

    /// Follows a directory's chain, claiming a free cluster that ends it.
    fn dir_chain(&mut self, first: u32, path: &str) -> Option<Vec<u32>> {
        let (eoc, end, badc) = marks(self.g.kind);
        let mut chain = Vec::new();
        let mut c = first;
        loop {
            if !self.valid(c) {
                self.out.anomalies.push(format!("{path}: cluster {c} is outside the volume"));
                return None;
            }
            if self.owned[c as usize] {
                self.out.anomalies.push(format!("{path}: cluster {c} also belongs to another file (cross-linked)"));
                return None;
            }
            self.owned[c as usize] = true;
            chain.push(c);
            let v = self.fat[c as usize];
            if v == 0 {
                self.fat[c as usize] = eoc;
                self.out.claimed += 1;
                return Some(chain);
            }
            if v >= end {
                return Some(chain);
            }
            if v == badc || v == 1 {
                self.out.anomalies.push(format!("{path}: cluster {c} is marked bad or reserved"));
                return None;
            }
            c = v;
        }
    }

    /// Follows a file's chain and makes chain and size agree, as fsck.fat does.
    /// Returns the entry's new first cluster and size, or `None` when the first
    /// cluster is free: the clusters of a file being deleted were freed and the
    /// power cut came before its entry went, so the deletion is completed (where
    /// fsck.fat would keep an empty file — one that would hide, say, the
    /// complete `loader.conf.lbnew` waiting to take its name).
    fn file_chain(&mut self, first: u32, size: u64, path: &str) -> Option<(u32, u64)> {
        let (eoc, end, badc) = marks(self.g.kind);
        if first == 0 {
            return Some((0, 0));
        }
        if !self.valid(first) {
            self.out.anomalies.push(format!("{path}: first cluster {first} is outside the volume"));
            return Some((first, size));
        }
        if self.fat[first as usize] == 0 {
            return None;
        }
        let mut chain: Vec<u32> = Vec::new();
        let mut c = first;
        let mut cut = false;
        loop {
            if self.owned[c as usize] {
                self.out.anomalies.push(format!("{path}: cluster {c} also belongs to another file (cross-linked)"));
                return Some((first, size));
            }
            let v = self.fat[c as usize];
            if v == 0 {
                // The crash wrote the link but not the allocation: the chain ends before.
                cut = true;
                break;
            }
            self.owned[c as usize] = true;
            chain.push(c);
            if v >= end {
                break;
            }
            if v == badc || v == 1 || !self.valid(v) {
                self.out.anomalies.push(format!("{path}: its chain leaves the volume at cluster {c}"));
                return Some((first, size));
            }
            c = v;
        }
        let cb = self.g.cluster_bytes();
        let need = size.div_ceil(cb) as usize;
        let keep = chain.len().min(need);
        for &c in &chain[keep..] {
            self.owned[c as usize] = false;
        }
        if keep == 0 {
            return Some((0, 0));
        }
        if cut || keep < chain.len() {
            self.fat[chain[keep - 1] as usize] = eoc;
        }
        Some((first, size.min(keep as u64 * cb)))
    }

    fn read_dir(&mut self, ranges: Vec<(u64, u64)>) -> io::Result<DirBuf> {
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let mut bytes = vec![0u8; total as usize];
        let mut at = 0usize;
        for &(start, len) in &ranges {
            read_at(self.w, start, &mut bytes[at..at + len as usize])?;
            at += len as usize;
        }
        Ok(DirBuf { ranges, original: bytes.clone(), bytes })
    }

    /// Walks the directory whose first cluster is `own` (0: FAT12/16 fixed root)
    /// and whose `..` should name `parent`.
    fn walk(&mut self, own: u32, parent: u32, path: String, depth: usize) -> io::Result<()> {
        if depth > MAX_DEPTH {
            self.out.anomalies.push(format!("{path}: nested deeper than {MAX_DEPTH} directories"));
            return Ok(());
        }
        let is_root = depth == 0;
        let ranges = if own == 0 {
            vec![(self.g.root_dir_start, self.g.root_entries * 32)]
        } else {
            match self.dir_chain(own, &path) {
                Some(chain) if chain.len() as u64 * self.g.cluster_bytes() > MAX_DIR_BYTES => {
                    self.out
                        .anomalies
                        .push(format!("{path}: a directory of {} clusters, beyond FAT's 65,536 entries", chain.len()));
                    return Ok(());
                }
                Some(chain) => chain.iter().map(|&c| (self.g.cluster_offset(c), self.g.cluster_bytes())).collect(),
                None => return Ok(()),
            }
        };
        let mut d = self.read_dir(ranges)?;
        let kind = self.g.kind;
        if !is_root {
            let head_len = (self.g.cluster_bytes() as usize).min(d.bytes.len());
            match order_dots(kind, &mut d.bytes[..head_len], own, parent) {
                Ok(true) => self.out.dots_fixed += 1,
                Ok(false) => {}
                Err(why) => {
                    self.out.anomalies.push(format!("{path}: `.` and `..` not repairable: {why}"));
                    self.dirs.push(d);
                    return Ok(());
                }
            }
        }
        let slots = d.bytes.len() / 32;
        let mut run: Vec<usize> = Vec::new();
        let mut children = Vec::new();
        let first_slot = if is_root { 0 } else { 2 };
        let mut i = first_slot;
        while i < slots {
            let e = d.bytes[i * 32..i * 32 + 32].to_vec();
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                self.drop_slots(&mut d, &mut run);
                i += 1;
                continue;
            }
            if is_lfn(&e) {
                if e[0] & 0x40 != 0 {
                    self.drop_slots(&mut d, &mut run);
                }
                run.push(i);
                i += 1;
                continue;
            }
            if !run.is_empty() && !lfn_run_fits(&d.bytes, &run, &e, true) {
                if !lfn_run_fits(&d.bytes, &run, &e, false) {
                    // Slots out of sequence belong to no entry.
                    self.drop_slots(&mut d, &mut run);
                } else if lifeboat_rename(&d.bytes, &run, &e) {
                    // A whole long name over a short entry written apart from
                    // it: one of lifeboat's renames (`.lbtmp` → `.lbnew` → the
                    // name) cut between two sectors (an entry set can span
                    // them). Old and new name the same clusters and differ
                    // only at the end, so the long name as read is kept.
                    let sum = lfn_checksum(&e[..11]);
                    for &s in &run {
                        d.bytes[s * 32 + 13] = sum;
                    }
                    self.out.long_names_rejoined += 1;
                }
                // Otherwise a whole long name another tool left stale (an 8.3
                // rename that did not know of it): every reader ignores it, as
                // fsck.fat -a does, and it is not lifeboat's to change.
            }
            let long_name = std::mem::take(&mut run);
            let attr = e[11];
            if attr & 0x08 != 0 && attr & 0x10 == 0 {
                // The volume label.
                i += 1;
                continue;
            }
            if (&e[..11] == DOT || &e[..11] == DOTDOT) && attr & 0x10 != 0 {
                // A stray `.` or `..` below the first two slots.
                d.bytes[i * 32] = 0xE5;
                self.out.slots_deleted += 1;
                i += 1;
                continue;
            }
            let name = format!("{}{}", if is_root { "/" } else { "" }, short_name(&e));
            let child_path = if is_root { name } else { format!("{path}/{name}") };
            let first = first_cluster(kind, &e);
            if attr & 0x10 != 0 {
                if size_of(&e) != 0 {
                    set_size(&mut d.bytes[i * 32..i * 32 + 32], 0);
                    self.out.entries_fixed += 1;
                }
                if first == 0 || !self.valid(first) {
                    self.out.anomalies.push(format!("{child_path}: a directory without a valid first cluster"));
                } else {
                    children.push((first, child_path));
                }
            } else {
                let size = size_of(&e);
                match self.file_chain(first, size, &child_path) {
                    None => {
                        for s in long_name.into_iter().chain([i]) {
                            d.bytes[s * 32] = 0xE5;
                        }
                        self.out.unlinked += 1;
                    }
                    Some((nf, ns)) if (nf, ns) != (first, size) => {
                        let slot = &mut d.bytes[i * 32..i * 32 + 32];
                        set_first_cluster(kind, slot, nf);
                        set_size(slot, ns);
                        self.out.entries_fixed += 1;
                    }
                    Some(_) => {}
                }
            }
            i += 1;
        }
        self.drop_slots(&mut d, &mut run);
        self.dirs.push(d);
        // `..` of a child of the root names cluster 0, whatever the root's cluster.
        let parent_of_children = if is_root { 0 } else { own };
        for (c, p) in children {
            self.walk(c, parent_of_children, p, depth + 1)?;
        }
        Ok(())
    }

    fn drop_slots(&mut self, d: &mut DirBuf, run: &mut Vec<usize>) {
        for &s in run.iter() {
            d.bytes[s * 32] = 0xE5;
        }
        self.out.slots_deleted += run.len();
        run.clear();
    }
}

/// Whether the long-name slots `run` (in directory order) are a whole, well
/// ordered sequence; with `checksum`, each also carries `short`'s checksum.
fn lfn_run_fits(bytes: &[u8], run: &[usize], short: &[u8], checksum: bool) -> bool {
    let sum = lfn_checksum(&short[..11]);
    let n = run.len();
    run.iter().enumerate().all(|(k, &s)| {
        let e = &bytes[s * 32..s * 32 + 32];
        let seq = (e[0] & 0x1F) as usize;
        let first_flag = e[0] & 0x40 != 0;
        seq == n - k && first_flag == (k == 0) && (!checksum || e[13] == sum)
    })
}

/// Whether a long name and the short entry after it are two names of one of
/// lifeboat's two-phase replacements: either side carries the `.lbtmp` or
/// `.lbnew` suffix (`LBT`/`LBN` as an 8.3 extension).
fn lifeboat_rename(bytes: &[u8], run: &[usize], short: &[u8]) -> bool {
    const PARTS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    let units: Vec<u16> = run
        .iter()
        .rev()
        .flat_map(|&s| PARTS.iter().map(move |&i| u16::from_le_bytes([bytes[s * 32 + i], bytes[s * 32 + i + 1]])))
        .take_while(|&u| u != 0 && u != 0xFFFF)
        .collect();
    let long = String::from_utf16_lossy(&units).to_ascii_lowercase();
    long.ends_with(crate::volume::TMP_SUFFIX)
        || long.ends_with(crate::volume::NEW_SUFFIX)
        || &short[8..11] == b"LBT"
        || &short[8..11] == b"LBN"
}

/// Writes the 512-byte sectors where `new` differs from `old`, at `base`.
fn write_diff(w: &mut Window, base: u64, old: &[u8], new: &[u8]) -> io::Result<bool> {
    let mut wrote = false;
    for (k, (o, n)) in old.chunks(512).zip(new.chunks(512)).enumerate() {
        if o != n {
            write_at(w, base + k as u64 * 512, n)?;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// Reconciles the FAT volume in `w` (see the module documentation). Errors are
/// I/O errors; a volume it cannot make sense of is reported in
/// [`Reconciled::anomalies`], not refused.
pub fn reconcile(w: &mut Window) -> io::Result<Reconciled> {
    let g = Geometry::read(w)?;
    let kind = g.kind;
    if g.fat_start == 0 {
        // The FAT would begin on the boot sector, whose dirty flag is written.
        return Err(bad("no reserved sectors before the FAT".into()));
    }
    if g.first_data + g.clusters as u64 * g.cluster_bytes() > w.len() {
        return Err(bad("the volume claims more clusters than its partition holds".into()));
    }
    if g.fat_bytes > MAX_FAT_BYTES || g.fats > 4 {
        return Ok(Reconciled {
            anomalies: vec![format!("a FAT of {} bytes × {} is beyond what is checked", g.fat_bytes, g.fats)],
            ..Default::default()
        });
    }
    let entries = g.clusters as u64 + 2;
    let needed = match kind {
        Kind::Fat32 => entries * 4,
        Kind::Fat16 => entries * 2,
        Kind::Fat12 => entries * 3 / 2 + 1,
    };
    if needed > g.fat_bytes {
        return Err(bad(format!("the FAT ({} bytes) is too small for {} clusters", g.fat_bytes, g.clusters)));
    }
    let mut copies = Vec::new();
    for k in 0..g.fats {
        let mut b = vec![0u8; g.fat_bytes as usize];
        read_at(w, g.fat_start + k * g.fat_bytes, &mut b)?;
        copies.push(b);
    }
    let differed: Vec<bool> = copies.iter().map(|c| c != &copies[0]).collect();
    let fat: Vec<u32> = (0..entries as u32).map(|c| get(kind, &copies[0], c)).collect();
    let mut walk =
        Walk { g, w, owned: vec![false; entries as usize], fat, out: Reconciled::default(), dirs: Vec::new() };
    let root = if kind == Kind::Fat32 { g.root_cluster } else { 0 };
    walk.walk(root, 0, "/".into(), 0)?;
    let Walk { w, mut fat, owned, mut out, dirs, .. } = walk;
    let (_, _, badc) = marks(kind);
    let trusted = out.anomalies.is_empty();
    if trusted {
        for c in 2..entries as usize {
            if fat[c] != 0 && fat[c] != badc && !owned[c] {
                fat[c] = 0;
                out.freed += 1;
            }
        }
    } else {
        // Only claims: a free cluster a directory's chain runs into.
        for (c, v) in fat.iter_mut().enumerate().skip(2) {
            let was = get(kind, &copies[0], c as u32);
            if !(was == 0 && *v != 0) {
                *v = was;
            }
        }
        out = Reconciled { claimed: out.claimed, anomalies: out.anomalies, ..Default::default() };
    }
    let mut fat1 = copies[0].clone();
    for (c, &v) in fat.iter().enumerate().skip(2) {
        if get(kind, &fat1, c as u32) != v {
            set(kind, &mut fat1, c as u32, v);
        }
    }

    // Phase 1: what makes data reachable — non-zero FAT entries in every copy,
    // then directory entries.
    let mut wrote = false;
    for (k, copy) in copies.iter_mut().enumerate() {
        let mut reach = copy.clone();
        for (c, &v) in fat.iter().enumerate().skip(2) {
            if v != 0 && get(kind, &reach, c as u32) != v {
                set(kind, &mut reach, c as u32, v);
            }
        }
        wrote |= write_diff(w, g.fat_start + k as u64 * g.fat_bytes, copy, &reach)?;
        *copy = reach;
    }
    if trusted {
        for d in &dirs {
            let mut at = 0usize;
            for &(start, len) in &d.ranges {
                let (o, n) = (&d.original[at..at + len as usize], &d.bytes[at..at + len as usize]);
                wrote |= write_diff(w, start, o, n)?;
                at += len as usize;
            }
        }
    }
    if wrote {
        w.sync()?;
    }
    if !trusted {
        return Ok(out);
    }

    // Phase 2: frees, the mirrors, FSInfo.
    let mut wrote = false;
    for (k, copy) in copies.iter().enumerate() {
        wrote |= write_diff(w, g.fat_start + k as u64 * g.fat_bytes, copy, &fat1)?;
        if differed[k] {
            out.fats_mirrored += 1;
        }
    }
    if kind == Kind::Fat32 {
        let mut bs = [0u8; 512];
        read_at(w, 0, &mut bs)?;
        let at = u16::from_le_bytes([bs[48], bs[49]]) as u64 * g.bps;
        if at != 0 && at + 512 <= g.fat_start {
            let mut fsi = [0u8; 512];
            read_at(w, at, &mut fsi)?;
            let sig = |i: usize| u32::from_le_bytes([fsi[i], fsi[i + 1], fsi[i + 2], fsi[i + 3]]);
            if sig(0) == 0x4161_5252 && sig(484) == 0x6141_7272 {
                let free = fat.iter().skip(2).filter(|&&v| v == 0).count() as u32;
                let next = fat.iter().skip(2).position(|&v| v == 0).map_or(0xFFFF_FFFF, |p| p as u32 + 2);
                let hint = sig(492);
                let hint_ok = hint == 0xFFFF_FFFF || (hint >= 2 && (hint as u64) < entries);
                if sig(488) != free || !hint_ok {
                    fsi[488..492].copy_from_slice(&free.to_le_bytes());
                    if !hint_ok {
                        fsi[492..496].copy_from_slice(&next.to_le_bytes());
                    }
                    write_at(w, at, &fsi)?;
                    out.fsinfo_fixed = true;
                    wrote = true;
                }
            }
        }
    }
    if wrote {
        w.sync()?;
    }

    // Phase 3: the volume is consistent; say so.
    let flag_at = if kind == Kind::Fat32 { 0x41 } else { 0x25 };
    let mut flag = [0u8; 1];
    read_at(w, flag_at, &mut flag)?;
    if flag[0] & 1 != 0 {
        write_at(w, flag_at, &[flag[0] & !1])?;
        w.sync()?;
        out.dirty_cleared = true;
    }
    Ok(out)
}
