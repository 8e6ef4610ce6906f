//! The check of a FAT volume at open, and reconciliation of what lifeboat's own
//! interrupted writes leave. Every open checks (a read-only open only reports
//! what reconciliation would do); a writable open reconciles, before `fatfs` or
//! lifeboat's writer sees the volume.
//!
//! `fatfs` trusts what it reads: a stale free count is believed, and clusters a
//! crash leaked stay leaked. So the whole tree is walked once with the FAT in
//! memory and every cluster given at most one owner. What is repaired at open
//! is only what lifeboat's crash-ordered writes ([`crate::fatwrite`]) can leave,
//! and nothing that removes or shortens an entry: clusters in flight (allocated
//! and not yet linked, unlinked and not yet freed, the FAT copies differing in
//! them) are settled and what no entry reaches is freed; an entry lifeboat's
//! writer left pending in a rename across sectors is completed when its source
//! is gone and dropped when it is not; a whole long name over a short entry
//! written apart from it by one of lifeboat's renames (`.lbtmp` → `.lbnew` → the
//! name) is rejoined to it (another tool's stale long name is left alone, as
//! fsck.fat -a does), and long-name slots that belong to no entry are deleted;
//! `.` and `..` are put in the first two slots and a directory's size field set
//! to 0 (metadata of the directory itself, no file's data); the other FAT
//! copies are made equal to the first; FSInfo's free count is rewritten; then
//! the dirty flag is cleared. The names of files an interrupted replacement
//! left (`NAME.lbtmp`, `NAME.lbnew`, see [`crate::volume`]) are collected for
//! [`crate::fat::FatVolume`], which completes them once the volume is whole.
//!
//! lifeboat's writer links an entry only to a chain already whole in every FAT
//! copy, and removes an entry before it frees its chain, so an entry whose
//! first cluster is free, a chain that runs into a free cluster, loops, or
//! disagrees with its file's size, a directory whose chain does either, and a
//! directory entry naming one of its own ancestors are none of lifeboat's
//! leftovers: they are [`Damage`]. Taking them for an interrupted deletion (as
//! this check once did) removed other systems' files when a FAT sector was
//! zeroed in both copies.
//!
//! The FAT copies are compared before anything is written. They may differ in
//! clusters in flight — one copy calls a cluster free where the other has it
//! allocated, or one ends a chain where the other links one more cluster — and
//! then the tree is walked on their union (nothing another copy still allocates
//! is taken for free; what no entry reaches is freed anyway). Any other
//! difference is [`Damage`]: which copy is right cannot be told from either alone.
//!
//! Nothing is deleted that a directory reaches, and the writes are ordered so a
//! power cut during reconciliation leaves a volume no worse than before: first
//! what makes data reachable (chain values every copy must have, directory
//! entries), a flush; then what frees clusters, the FAT mirrors and FSInfo, a
//! flush; then the dirty flag. A volume with damage gets no write at all, keeps
//! its dirty flag, and is refused for writing by [`crate::fat::FatVolume`]: a
//! free count or a freed cluster decided on a tree that could not be read whole
//! could destroy what the unread part holds. [`repair`] (`lifeboat disk check
//! --repair`) mends the damage it can decide from the volume alone: FAT copies
//! that disagree, when exactly one is consistent with the tree, and files that
//! share clusters with another entry, each given its own copy of what its
//! chain holds. A loop, a chain that leaves the volume or runs into a free
//! cluster, a size its chain does not match and a directory cycle are not
//! decidable: left as they are, and named.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::fatraw::{Geometry, Kind};
use crate::window::Window;

/// What reconciliation found and did (or, on a read-only open, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Allocated clusters no file or directory reaches, freed.
    pub freed: usize,
    /// Directories whose entry carried a size (a directory's is 0), set to 0.
    pub entries_fixed: usize,
    /// Whole long names over a short entry written apart from them (one of
    /// lifeboat's renames, torn), given the short entry's checksum.
    pub long_names_rejoined: usize,
    /// Directories whose `.` and `..` entries were rewritten.
    pub dots_fixed: usize,
    /// Long-name slots (and stray `.`/`..` entries) that belonged to no file, deleted.
    pub slots_deleted: usize,
    /// Renames across sectors a cut interrupted after the old name went: the new
    /// entry given the clusters it was to take.
    pub renames_completed: usize,
    /// Renames across sectors a cut interrupted before the old name went: the
    /// new entry, still empty, removed (the old name keeps the file).
    pub renames_undone: usize,
    /// FAT copies made equal to the first.
    pub fats_mirrored: usize,
    /// FSInfo's free-cluster count or next-free hint rewritten.
    pub fsinfo_fixed: bool,
    /// The boot sector's dirty flag (set by a writer that did not finish) cleared.
    pub dirty_cleared: bool,
    /// What is not repaired at open; with any, nothing was written.
    pub damage: Vec<Damage>,
    /// The FAT copy reads follow (0-based): the first, unless the copies
    /// disagree and another is the one consistent with the tree.
    pub fat_copy: usize,
    /// Files an interrupted replacement left (`NAME.lbtmp`, `NAME.lbnew`), as
    /// volume paths: [`crate::fat::FatVolume`] completes them at a writable open
    /// of a whole volume. Not counted by [`Reconciled::changed`]: the check
    /// itself does not touch them.
    pub interrupted: Vec<String>,
}

impl Reconciled {
    /// Whether the volume was (or would be) changed.
    pub fn changed(&self) -> bool {
        self.freed
            + self.entries_fixed
            + self.long_names_rejoined
            + self.dots_fixed
            + self.slots_deleted
            + self.renames_completed
            + self.renames_undone
            + self.fats_mirrored
            > 0
            || self.fsinfo_fixed
            || self.dirty_cleared
    }

    /// One line per kind of repair, then one per damage, for the user.
    pub fn describe(&self) -> Vec<String> {
        let mut out = self.repairs();
        for d in &self.damage {
            out.push(format!("not repaired: {d}"));
        }
        out
    }

    /// One line per kind of repair.
    pub fn repairs(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        say(self.freed, "leaked cluster(s) freed");
        say(self.entries_fixed, "directory size field(s) set to 0");
        say(self.long_names_rejoined, "long name(s) of a torn rename rejoined to their entry");
        say(self.dots_fixed, "directory `.`/`..` pair(s) rewritten");
        say(self.slots_deleted, "orphaned long-name or stray dot slot(s) deleted");
        say(self.renames_completed, "interrupted rename(s) completed");
        say(self.renames_undone, "interrupted rename(s) undone (the old name keeps the file)");
        say(self.fats_mirrored, "FAT copy(ies) made equal to the first");
        if self.fsinfo_fixed {
            out.push("FSInfo free-cluster count rewritten".into());
        }
        if self.dirty_cleared {
            out.push("dirty flag of an interrupted writer cleared".into());
        }
        out
    }

    /// One line per interrupted replacement a writable open completes: the
    /// file that takes the complete `.lbnew`'s content, or the `.lbtmp` that goes.
    pub fn pending(&self) -> Vec<String> {
        self.interrupted
            .iter()
            .map(|p| {
                let cut = p.len() - crate::volume::NEW_SUFFIX.len();
                let base = (p.is_char_boundary(cut) && p[cut..].eq_ignore_ascii_case(crate::volume::NEW_SUFFIX))
                    .then(|| &p[..cut]);
                match base {
                    Some(base) => match crate::volume::name_problem(crate::volume::split(base).1) {
                        None => format!("the interrupted replacement of {base} (its complete {p} takes the name)"),
                        Some(why) => format!("the leftover {p} (discarded: {why})"),
                    },
                    None => format!("the unfinished {p} (discarded)"),
                }
            })
            .collect()
    }
}

/// Damage the check at open does not repair; a volume with any is not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// A chain names a cluster past the volume's end (or a reserved value).
    OutOfVolume { path: String, cluster: u32 },
    /// A chain runs into a cluster marked bad or reserved.
    BadCluster { path: String, cluster: u32 },
    /// A cluster two entries name; `path` met it second. `dir`: `path` is a directory.
    CrossLinked { path: String, other: String, cluster: u32, dir: bool },
    /// A chain that runs into a cluster the FAT calls free, `at` clusters in
    /// (0: the entry's first cluster is free). Not something lifeboat's writes
    /// leave: they link only whole chains and free a chain after its entry goes.
    FreeInChain { path: String, cluster: u32, at: usize, dir: bool },
    /// A chain that comes back to a cluster it already went through.
    Loop { path: String, cluster: u32, dir: bool },
    /// A file whose size and chain disagree: `size` bytes need `need`
    /// clusters, the chain has `clusters`.
    SizeMismatch { path: String, size: u64, need: u64, clusters: u64 },
    /// A directory entry naming one of its own ancestors: walking into it
    /// never ends.
    DirCycle { path: String, ancestor: String },
    /// A directory entry without a valid first cluster.
    NoFirstCluster { path: String },
    /// A directory whose first two slots hold other entries than `.` and `..`.
    Dots { path: String, why: String },
    /// A directory chain longer than FAT allows a directory.
    DirTooLong { path: String, clusters: usize },
    /// Directories nested deeper than the check follows.
    TooDeep { path: String },
    /// The FAT copies differ beyond clusters in flight: `entries` clusters, the
    /// first of them `cluster` with these values (one per copy); `verdicts`
    /// says, per copy, whether the tree walked with it alone is consistent.
    FatsDisagree { entries: usize, cluster: u32, values: Vec<u32>, verdicts: Vec<String> },
    /// The volume could not be checked at all.
    NotChecked { why: String },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::OutOfVolume { path, cluster } => write!(f, "{path}: cluster {cluster} is outside the volume"),
            Damage::BadCluster { path, cluster } => write!(f, "{path}: cluster {cluster} is marked bad or reserved"),
            Damage::CrossLinked { path, other, cluster, .. } => {
                write!(f, "{path}: cluster {cluster} also belongs to {other} (cross-linked)")
            }
            Damage::FreeInChain { path, cluster, at: 0, .. } => {
                write!(f, "{path}: its first cluster {cluster} is free in the FAT")
            }
            Damage::FreeInChain { path, cluster, at, .. } => {
                write!(
                    f,
                    "{path}: its cluster chain runs into cluster {cluster}, free in the FAT, after {at} cluster(s)"
                )
            }
            Damage::Loop { path, cluster, .. } => {
                write!(f, "{path}: its cluster chain loops (back to cluster {cluster})")
            }
            Damage::SizeMismatch { path, size, need, clusters } => {
                write!(f, "{path}: its size ({size} bytes) needs {need} cluster(s), its chain has {clusters}")
            }
            Damage::DirCycle { path, ancestor } => {
                write!(f, "{path}: a directory cycle (it is {ancestor}, one of its own parents, again)")
            }
            Damage::NoFirstCluster { path } => write!(f, "{path}: a directory without a valid first cluster"),
            Damage::Dots { path, why } => write!(f, "{path}: `.` and `..` not repairable: {why}"),
            Damage::DirTooLong { path, clusters } => {
                write!(f, "{path}: a directory of {clusters} clusters, beyond FAT's 65,536 entries")
            }
            Damage::TooDeep { path } => write!(f, "{path}: nested deeper than {MAX_DEPTH} directories"),
            Damage::FatsDisagree { entries, cluster, values, verdicts } => {
                let vals: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
                write!(
                    f,
                    "the FAT copies disagree beyond clusters in flight at {entries} cluster(s) (cluster {cluster}: {})",
                    vals.join(" against ")
                )?;
                if !verdicts.is_empty() {
                    write!(f, "; {}", verdicts.join("; "))?;
                }
                Ok(())
            }
            Damage::NotChecked { why } => write!(f, "not checked: {why}"),
        }
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

/// An 8.3 entry's name as listings show it: the case bits other systems set
/// (byte 12: 0x08 a lower-case base, 0x10 a lower-case extension; mtools and
/// Windows write `a.bin` so) applied, so messages name files as users see them.
fn short_name(e: &[u8]) -> String {
    let mut raw = e[..11].to_vec();
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    if e[12] & 0x08 != 0 {
        raw[..8].make_ascii_lowercase();
    }
    if e[12] & 0x10 != 0 {
        raw[8..11].make_ascii_lowercase();
    }
    let base = String::from_utf8_lossy(&raw[0..8]).trim_end().to_owned();
    let ext = String::from_utf8_lossy(&raw[8..11]).trim_end().to_owned();
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

/// The creation-time hundredths byte (valid: 0..=199) of an entry lifeboat's
/// writer leaves pending in a rename across sectors: a file entry with no
/// clusters and size 0 that records, in its creation and write time fields, the
/// clusters and size it is to take once the old name is gone. Readers see an
/// empty file; fsck.fat accepts it; [`reconcile`] completes or drops it.
pub(crate) const PENDING_MARK: u8 = 0xFB;

fn pending_check(c: u32, s: u32) -> u16 {
    let x = c ^ s.rotate_left(16) ^ 0x4C42_5245;
    (x ^ (x >> 16)) as u16
}

/// Makes the short entry `e` the pending form naming cluster `c` and size `s`.
pub(crate) fn set_pending(kind: Kind, e: &mut [u8], c: u32, s: u32) {
    set_first_cluster(kind, e, 0);
    set_size(e, 0);
    e[13] = PENDING_MARK;
    e[14..18].copy_from_slice(&c.to_le_bytes());
    e[22..26].copy_from_slice(&s.to_le_bytes());
    e[18..20].copy_from_slice(&pending_check(c, s).to_le_bytes());
}

/// The cluster and size a pending entry is to take, if `e` is one.
pub(crate) fn pending_of(kind: Kind, e: &[u8]) -> Option<(u32, u32)> {
    if is_lfn(e) || e[11] & 0x18 != 0 || first_cluster(kind, e) != 0 || size_of(e) != 0 || e[13] != PENDING_MARK {
        return None;
    }
    let c = u32::from_le_bytes([e[14], e[15], e[16], e[17]]);
    let s = u32::from_le_bytes([e[22], e[23], e[24], e[25]]);
    (u16::from_le_bytes([e[18], e[19]]) == pending_check(c, s)).then_some((c, s))
}

/// A pending entry made whole: its clusters, its size, times of now.
fn complete_pending(kind: Kind, e: &mut [u8], c: u32, s: u64) {
    let (date, time) = crate::clock::dos_now();
    e[13] = 0;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    set_first_cluster(kind, e, c);
    set_size(e, s);
}

/// One directory read whole: where its bytes live and the bytes.
struct DirBuf {
    ranges: Vec<(u64, u64)>,
    bytes: Vec<u8>,
    original: Vec<u8>,
}

/// Volume offset of byte `at` of a directory laid out in `ranges`.
fn offset_in(ranges: &[(u64, u64)], mut at: u64) -> u64 {
    for &(start, len) in ranges {
        if at < len {
            return start + at;
        }
        at -= len;
    }
    u64::MAX
}

/// A file that met a cluster another entry owns: where its short entry is.
#[derive(Clone, Debug)]
struct Shared {
    path: String,
    entry_at: u64,
    first: u32,
    size: u64,
}

/// A pending entry of an interrupted rename, resolved after the whole walk
/// (only then is it known whether another entry still owns its clusters).
struct Pending {
    dir: usize,
    slots: Vec<usize>,
    short: usize,
    cluster: u32,
    size: u32,
    path: String,
}

/// What a file's chain came to.
enum Chain {
    /// The entry's first cluster and size, which its chain matches.
    Fine(u32, u64),
    /// It met a cluster another entry owns (damage recorded).
    Shared,
    /// It leaves the volume, meets a bad mark or a free cluster, loops, or
    /// does not match the size (damage recorded).
    Broken,
}

/// The walk's state: the FAT as it should become, and who owns what.
struct Walk<'a> {
    g: Geometry,
    w: &'a mut Window,
    fat: Vec<u32>,
    /// Per cluster: 0 when no entry reaches it, else 1 + an index into `names`.
    owner: Vec<u32>,
    names: Vec<String>,
    out: Reconciled,
    dirs: Vec<DirBuf>,
    /// A digest of every entry seen and every file's chain, to tell whether two
    /// FAT copies describe the same tree.
    digest: u64,
    shared: Vec<Shared>,
    pending: Vec<Pending>,
    /// First clusters of the directories being walked, outermost first, with
    /// their paths: an entry naming one of them is a cycle.
    ancestors: Vec<(u32, String)>,
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl<'a> Walk<'a> {
    fn new(g: Geometry, w: &'a mut Window, fat: Vec<u32>) -> Self {
        let n = fat.len();
        Walk {
            g,
            w,
            fat,
            owner: vec![0; n],
            names: Vec::new(),
            out: Reconciled::default(),
            dirs: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            shared: Vec::new(),
            pending: Vec::new(),
            ancestors: Vec::new(),
        }
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && (c as u64) < self.g.clusters as u64 + 2
    }

    fn id(&mut self, path: &str) -> u32 {
        self.names.push(path.to_owned());
        self.names.len() as u32
    }

    fn owner_name(&self, c: u32) -> String {
        let k = self.owner[c as usize] as usize;
        self.names.get(k.wrapping_sub(1)).cloned().unwrap_or_else(|| "another entry".into())
    }

    fn damage(&mut self, d: Damage) {
        self.out.damage.push(d);
    }

    /// A cluster of `path`'s chain (owner `id`) that already has an owner:
    /// the chain looping back into itself, or a cross-link.
    fn met_owned(&mut self, path: &str, c: u32, id: u32, dir: bool) {
        if self.owner[c as usize] == id {
            self.damage(Damage::Loop { path: path.to_owned(), cluster: c, dir });
        } else {
            let other = self.owner_name(c);
            self.damage(Damage::CrossLinked { path: path.to_owned(), other, cluster: c, dir });
        }
    }

    /// Follows a directory's chain. A free cluster in it, a loop, a bad mark
    /// or a cluster outside the volume is damage (`None`).
    fn dir_chain(&mut self, first: u32, path: &str) -> Option<Vec<u32>> {
        let (_, end, badc) = marks(self.g.kind);
        if let Some((_, ancestor)) = self.ancestors.iter().find(|(c, _)| *c == first) {
            let ancestor = ancestor.clone();
            self.damage(Damage::DirCycle { path: path.to_owned(), ancestor });
            return None;
        }
        let id = self.id(path);
        let mut chain = Vec::new();
        let mut c = first;
        loop {
            if !self.valid(c) {
                self.damage(Damage::OutOfVolume { path: path.to_owned(), cluster: c });
                return None;
            }
            if self.owner[c as usize] != 0 {
                self.met_owned(path, c, id, true);
                return None;
            }
            let v = self.fat[c as usize];
            if v == 0 {
                self.damage(Damage::FreeInChain { path: path.to_owned(), cluster: c, at: chain.len(), dir: true });
                return None;
            }
            self.owner[c as usize] = id;
            chain.push(c);
            if v >= end {
                return Some(chain);
            }
            if v == badc || v == 1 {
                self.damage(Damage::BadCluster { path: path.to_owned(), cluster: c });
                return None;
            }
            c = v;
        }
    }

    /// Follows a file's chain; it must match the size exactly (what
    /// lifeboat's writer and every whole writer leave). Anything else is
    /// damage, never cut or removed here: a chain that runs into a free
    /// cluster is what a zeroed FAT sector looks like too, and fsck.fat's
    /// rules (cut the file, free the rest) would destroy another system's file.
    fn file_chain(&mut self, first: u32, size: u64, path: &str) -> Chain {
        let (_, end, badc) = marks(self.g.kind);
        let cb = self.g.cluster_bytes();
        let need = size.div_ceil(cb);
        let mismatch = |clusters: u64| Damage::SizeMismatch { path: path.to_owned(), size, need, clusters };
        if first == 0 {
            if size != 0 {
                self.damage(mismatch(0));
                return Chain::Broken;
            }
            return Chain::Fine(0, 0);
        }
        let id = self.id(path);
        let mut chain: Vec<u32> = Vec::new();
        let mut c = first;
        loop {
            if !self.valid(c) {
                self.damage(Damage::OutOfVolume { path: path.to_owned(), cluster: c });
                return Chain::Broken;
            }
            if self.owner[c as usize] != 0 {
                self.met_owned(path, c, id, false);
                return if self.owner[c as usize] == id { Chain::Broken } else { Chain::Shared };
            }
            let v = self.fat[c as usize];
            if v == 0 {
                self.damage(Damage::FreeInChain { path: path.to_owned(), cluster: c, at: chain.len(), dir: false });
                return Chain::Broken;
            }
            self.owner[c as usize] = id;
            chain.push(c);
            if v >= end {
                break;
            }
            if v == badc || v == 1 {
                self.damage(Damage::BadCluster { path: path.to_owned(), cluster: c });
                return Chain::Broken;
            }
            c = v;
        }
        if chain.len() as u64 != need {
            self.damage(mismatch(chain.len() as u64));
            return Chain::Broken;
        }
        self.digest = fnv(self.digest, path.as_bytes());
        for &c in &chain {
            self.digest = fnv(self.digest, &c.to_le_bytes());
        }
        Chain::Fine(first, size)
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
            self.out.damage.push(Damage::TooDeep { path });
            return Ok(());
        }
        let is_root = depth == 0;
        let ranges = if own == 0 {
            vec![(self.g.root_dir_start, self.g.root_entries * 32)]
        } else {
            match self.dir_chain(own, &path) {
                Some(chain) if chain.len() as u64 * self.g.cluster_bytes() > MAX_DIR_BYTES => {
                    self.out.damage.push(Damage::DirTooLong { path, clusters: chain.len() });
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
                    self.out.damage.push(Damage::Dots { path, why });
                    self.dirs.push(d);
                    return Ok(());
                }
            }
        }
        let slots = d.bytes.len() / 32;
        let mut run: Vec<usize> = Vec::new();
        let mut children = Vec::new();
        let mut pending = Vec::new();
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
            let shown = match long_name_of(&d.bytes, &long_name, &e) {
                Some(l) => l,
                None => short_name(&e),
            };
            let name = format!("{}{}", if is_root { "/" } else { "" }, shown);
            let child_path = if is_root { name } else { format!("{path}/{name}") };
            let first = first_cluster(kind, &e);
            if attr & 0x10 != 0 {
                if size_of(&e) != 0 {
                    set_size(&mut d.bytes[i * 32..i * 32 + 32], 0);
                    self.out.entries_fixed += 1;
                }
                if first == 0 || !self.valid(first) {
                    self.out.damage.push(Damage::NoFirstCluster { path: child_path });
                } else {
                    children.push((first, child_path));
                }
            } else if let Some((c, s)) = pending_of(kind, &e) {
                pending.push((long_name, i, c, s, child_path));
            } else {
                let size = size_of(&e);
                let lower = shown.to_ascii_lowercase();
                if lower.len() > crate::volume::NEW_SUFFIX.len()
                    && (lower.ends_with(crate::volume::TMP_SUFFIX) || lower.ends_with(crate::volume::NEW_SUFFIX))
                {
                    self.out.interrupted.push(child_path.trim_start_matches('/').to_owned());
                }
                match self.file_chain(first, size, &child_path) {
                    Chain::Shared => {
                        let entry_at = offset_in(&d.ranges, i as u64 * 32);
                        self.shared.push(Shared { path: child_path, entry_at, first, size });
                    }
                    Chain::Fine(..) | Chain::Broken => {}
                }
            }
            i += 1;
        }
        self.drop_slots(&mut d, &mut run);
        self.digest = fnv(self.digest, path.as_bytes());
        self.digest = fnv(self.digest, &d.bytes[..i.min(slots) * 32]);
        self.dirs.push(d);
        let dir = self.dirs.len() - 1;
        for (slots, short, cluster, size, path) in pending {
            self.pending.push(Pending { dir, slots, short, cluster, size, path });
        }
        // `..` of a child of the root names cluster 0, whatever the root's cluster.
        let parent_of_children = if is_root { 0 } else { own };
        self.ancestors.push((own, path));
        for (c, p) in children {
            self.walk(c, parent_of_children, p, depth + 1)?;
        }
        self.ancestors.pop();
        Ok(())
    }

    fn drop_slots(&mut self, d: &mut DirBuf, run: &mut Vec<usize>) {
        for &s in run.iter() {
            d.bytes[s * 32] = 0xE5;
        }
        self.out.slots_deleted += run.len();
        run.clear();
    }

    /// Completes or drops the pending entries of interrupted renames (only
    /// lifeboat's writer makes them: a mark and a check value in fields no
    /// other writer sets so): one whose clusters no other entry owns takes
    /// them (the old name is gone); one whose clusters another entry still
    /// owns, or that are free, is removed — it has no clusters of its own, so
    /// nothing is lost with it. A chain that does not match the size it
    /// records is damage, as for any file.
    fn resolve_pending(&mut self) {
        let kind = self.g.kind;
        for p in std::mem::take(&mut self.pending) {
            let c = p.cluster;
            let takeable = self.valid(c) && self.fat[c as usize] != 0 && self.owner[c as usize] == 0;
            if !takeable {
                let d = &mut self.dirs[p.dir];
                for s in p.slots.iter().copied().chain([p.short]) {
                    d.bytes[s * 32] = 0xE5;
                }
                self.out.renames_undone += 1;
                continue;
            }
            if let Chain::Fine(nf, ns) = self.file_chain(c, p.size as u64, &p.path) {
                let d = &mut self.dirs[p.dir];
                complete_pending(kind, &mut d.bytes[p.short * 32..p.short * 32 + 32], nf, ns);
                self.out.renames_completed += 1;
            }
        }
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

/// The UTF-16 units a run of long-name slots (in directory order) spells.
fn lfn_units(bytes: &[u8], run: &[usize]) -> Vec<u16> {
    const PARTS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
    run.iter()
        .rev()
        .flat_map(|&s| PARTS.iter().map(move |&i| u16::from_le_bytes([bytes[s * 32 + i], bytes[s * 32 + i + 1]])))
        .take_while(|&u| u != 0 && u != 0xFFFF)
        .collect()
}

/// The long name of `short` when the slots `run` are a whole one of it (for
/// messages: paths name files as the user knows them).
fn long_name_of(bytes: &[u8], run: &[usize], short: &[u8]) -> Option<String> {
    if run.is_empty() || !lfn_run_fits(bytes, run, short, true) {
        return None;
    }
    String::from_utf16(&lfn_units(bytes, run)).ok()
}

/// Whether a long name and the short entry after it are two names of one of
/// lifeboat's two-phase replacements: either side carries the `.lbtmp` or
/// `.lbnew` suffix (`LBT`/`LBN` as an 8.3 extension).
fn lifeboat_rename(bytes: &[u8], run: &[usize], short: &[u8]) -> bool {
    let long = String::from_utf16_lossy(&lfn_units(bytes, run)).to_ascii_lowercase();
    long.ends_with(crate::volume::TMP_SUFFIX)
        || long.ends_with(crate::volume::NEW_SUFFIX)
        || &short[8..11] == b"LBT"
        || &short[8..11] == b"LBN"
}

/// Adds to `out` the 512-byte sectors where `new` differs from `old`, at `base`.
fn diff_sectors(base: u64, old: &[u8], new: &[u8], out: &mut Vec<(u64, Vec<u8>)>) {
    for (k, (o, n)) in old.chunks(512).zip(new.chunks(512)).enumerate() {
        if o != n {
            out.push((base + k as u64 * 512, n.to_vec()));
        }
    }
}

fn write_all(w: &mut Window, writes: &[(u64, Vec<u8>)]) -> io::Result<()> {
    for (at, b) in writes {
        write_at(w, *at, b)?;
    }
    Ok(())
}

/// The value the FAT copies give one cluster, counting clusters in flight as
/// agreement: one copy free where another allocates (the allocation, or the
/// free, not yet mirrored: the allocation is kept, and freed below if nothing
/// reaches it), or one ending a chain where another links a cluster more (a
/// directory's growth not yet mirrored: the link is kept). `None` for any other
/// difference.
fn agreed(kind: Kind, clusters: u32, vals: &[u32]) -> Option<u32> {
    let end = end_mark(kind);
    let first = *vals.first()?;
    if vals.iter().all(|&v| v == first) {
        return Some(first);
    }
    let sane = |v: u32| v == 0 || v >= end || (v >= 2 && (v as u64) < clusters as u64 + 2);
    if !vals.iter().all(|&v| sane(v)) {
        return None;
    }
    let mut links = vals.iter().copied().filter(|&v| v != 0 && v < end);
    match links.next() {
        Some(l) => links.all(|x| x == l).then_some(l),
        None => vals.iter().copied().find(|&v| v != 0),
    }
}

/// What the check found: the writes reconciliation would make, and what it
/// knows of the tree (for [`repair`]).
struct Exam {
    g: Geometry,
    copies: Vec<Vec<u8>>,
    /// The FAT as the tree needs it (claims and chain ends applied).
    fat: Vec<u32>,
    owned: Vec<bool>,
    out: Reconciled,
    /// Phase 1 (what makes data reachable) and phase 2 (frees, mirrors,
    /// FSInfo): sector writes, each phase followed by a flush.
    reach: Vec<(u64, Vec<u8>)>,
    frees: Vec<(u64, Vec<u8>)>,
    /// Phase 3: the dirty flag's offset and its byte cleared.
    flag: Option<(u64, u8)>,
    shared: Vec<Shared>,
    /// When the copies disagree: the one consistent with the tree, if exactly
    /// one tree is.
    pick: Option<usize>,
    /// The FAT reads should follow when it is not the first copy as it is on
    /// disk: the consistent copy, or the copies' union (clusters in flight).
    read_fat: Option<Vec<u8>>,
}

impl Exam {
    fn damaged(g: Geometry, damage: Damage) -> Exam {
        Exam {
            g,
            copies: Vec::new(),
            fat: Vec::new(),
            owned: Vec::new(),
            out: Reconciled { damage: vec![damage], ..Default::default() },
            reach: Vec::new(),
            frees: Vec::new(),
            flag: None,
            shared: Vec::new(),
            pick: None,
            read_fat: None,
        }
    }
}

fn flag_at(kind: Kind) -> u64 {
    if kind == Kind::Fat32 {
        0x41
    } else {
        0x25
    }
}

/// Reads the volume and decides everything reconciliation would do; writes nothing.
fn examine(w: &mut Window) -> io::Result<Exam> {
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
        let why = format!("a FAT of {} bytes × {} is beyond what is checked", g.fat_bytes, g.fats);
        return Ok(Exam::damaged(g, Damage::NotChecked { why }));
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
    let per: Vec<Vec<u32>> = copies.iter().map(|b| (0..entries as u32).map(|c| get(kind, b, c)).collect()).collect();
    let root = if kind == Kind::Fat32 { g.root_cluster } else { 0 };
    let mut fat = per[0].clone();
    let mut disagree = 0usize;
    let mut first_bad: Option<(u32, Vec<u32>)> = None;
    if per.len() > 1 {
        for c in 2..entries as usize {
            let vals: Vec<u32> = per.iter().map(|p| p[c]).collect();
            match agreed(kind, g.clusters, &vals) {
                Some(v) => fat[c] = v,
                None => {
                    disagree += 1;
                    first_bad.get_or_insert((c as u32, vals));
                }
            }
        }
    }
    if disagree > 0 {
        // Which copy is right: walk the tree with each alone. A copy is
        // consistent when the walk finds no damage (no file on a free cluster,
        // cut short or looping, no cross-link).
        let mut verdicts = Vec::new();
        let mut consistent: Vec<(usize, u64)> = Vec::new();
        for (k, p) in per.iter().enumerate() {
            let mut walk = Walk::new(g, w, p.clone());
            walk.walk(root, 0, "/".into(), 0)?;
            walk.resolve_pending();
            match walk.out.damage.first() {
                None => {
                    verdicts.push(format!("FAT copy {} is consistent with the tree", k + 1));
                    consistent.push((k, walk.digest));
                }
                Some(d) => verdicts.push(format!("with FAT copy {}: {d}", k + 1)),
            }
        }
        let pick = match consistent.first() {
            Some(&(k, dg)) if consistent.iter().all(|&(_, d)| d == dg) => Some(k),
            _ => None,
        };
        let (cluster, values) = first_bad.unwrap_or_default();
        let mut e = Exam::damaged(g, Damage::FatsDisagree { entries: disagree, cluster, values, verdicts });
        e.out.fat_copy = pick.unwrap_or(0);
        e.pick = pick;
        e.read_fat = pick.map(|k| copies[k].clone());
        e.copies = copies;
        e.fat = fat;
        return Ok(e);
    }
    let read_fat = (fat != per[0]).then(|| {
        let mut img = copies[0].clone();
        for (c, &v) in fat.iter().enumerate().skip(2) {
            if get(kind, &img, c as u32) != v {
                set(kind, &mut img, c as u32, v);
            }
        }
        img
    });
    let mut walk = Walk::new(g, w, fat);
    walk.walk(root, 0, "/".into(), 0)?;
    walk.resolve_pending();
    let Walk { mut fat, owner, mut out, dirs, shared, .. } = walk;
    let owned: Vec<bool> = owner.iter().map(|&o| o != 0).collect();
    if !out.damage.is_empty() {
        let out = Reconciled { damage: out.damage, interrupted: out.interrupted, ..Default::default() };
        return Ok(Exam {
            g,
            copies,
            fat,
            owned,
            out,
            reach: Vec::new(),
            frees: Vec::new(),
            flag: None,
            shared,
            pick: None,
            read_fat,
        });
    }
    let (_, _, badc) = marks(kind);
    for c in 2..entries as usize {
        if fat[c] != 0 && fat[c] != badc && !owned[c] {
            fat[c] = 0;
            out.freed += 1;
        }
    }
    let mut fat1 = copies[0].clone();
    for (c, &v) in fat.iter().enumerate().skip(2) {
        if get(kind, &fat1, c as u32) != v {
            set(kind, &mut fat1, c as u32, v);
        }
    }

    // Phase 1: what makes data reachable — non-zero FAT entries in every copy,
    // then directory entries.
    let mut reach_w = Vec::new();
    let mut after = copies.clone();
    for (k, copy) in after.iter_mut().enumerate() {
        let mut reach = copy.clone();
        for (c, &v) in fat.iter().enumerate().skip(2) {
            if v != 0 && get(kind, &reach, c as u32) != v {
                set(kind, &mut reach, c as u32, v);
            }
        }
        diff_sectors(g.fat_start + k as u64 * g.fat_bytes, copy, &reach, &mut reach_w);
        *copy = reach;
    }
    for d in &dirs {
        let mut at = 0usize;
        for &(start, len) in &d.ranges {
            let (o, n) = (&d.original[at..at + len as usize], &d.bytes[at..at + len as usize]);
            diff_sectors(start, o, n, &mut reach_w);
            at += len as usize;
        }
    }

    // Phase 2: frees, the mirrors, FSInfo.
    let mut frees_w = Vec::new();
    for (k, copy) in after.iter().enumerate() {
        diff_sectors(g.fat_start + k as u64 * g.fat_bytes, copy, &fat1, &mut frees_w);
        if copies[k] != copies[0] {
            out.fats_mirrored += 1;
        }
    }
    let mut bs = [0u8; 512];
    read_at(w, 0, &mut bs)?;
    if kind == Kind::Fat32 {
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
                    frees_w.push((at, fsi.to_vec()));
                    out.fsinfo_fixed = true;
                }
            }
        }
    }

    // Phase 3: the volume is consistent; say so.
    let fa = flag_at(kind);
    let byte = bs[fa as usize];
    let flag = (byte & 1 != 0).then_some((fa, byte & !1));
    out.dirty_cleared = flag.is_some();
    Ok(Exam { g, copies, fat, owned, out, reach: reach_w, frees: frees_w, flag, shared, pick: None, read_fat })
}

/// Makes the writes [`examine`] decided, in its three flushed phases.
fn apply(w: &mut Window, e: &Exam) -> io::Result<()> {
    for batch in [&e.reach, &e.frees] {
        write_all(w, batch)?;
        if !batch.is_empty() {
            w.sync()?;
        }
    }
    if let Some((at, b)) = e.flag {
        write_at(w, at, &[b])?;
        w.sync()?;
    }
    Ok(())
}

/// Checks the FAT volume in `w` and says what [`reconcile`] would do; writes
/// nothing. Errors are I/O errors and volumes that are not FAT.
pub fn check(w: &mut Window) -> io::Result<Reconciled> {
    Ok(examine(w)?.out)
}

/// Reconciles the FAT volume in `w` (see the module documentation). Errors are
/// I/O errors; a volume with [`Damage`] is reported in
/// [`Reconciled::damage`], not refused, and nothing is written to it.
pub fn reconcile(w: &mut Window) -> io::Result<Reconciled> {
    let e = examine(w)?;
    if e.out.damage.is_empty() {
        apply(w, &e)?;
    }
    Ok(e.out)
}

/// The check at open ([`crate::fat::FatVolume::open`]): with `write`,
/// [`reconcile`]; without, [`check`]. Also returns the FAT reads should follow
/// when it is not the first copy as it now is on disk (the copy consistent with
/// the tree on a damaged volume; the copies' union on a read-only open of a
/// volume with clusters in flight).
pub(crate) fn at_open(w: &mut Window, write: bool) -> io::Result<(Reconciled, Option<Vec<u8>>)> {
    let e = examine(w)?;
    if write && e.out.damage.is_empty() {
        apply(w, &e)?;
        return Ok((e.out, None));
    }
    Ok((e.out, e.read_fat))
}

/// What [`repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// The FAT copy (0-based) written over the others, when they disagreed.
    pub fat_taken: Option<usize>,
    /// Files that shared clusters with another entry, each given its own copy.
    pub unshared: Vec<String>,
    /// The reconciliation that followed; its damage is what is left.
    pub reconciled: Reconciled,
    /// Interrupted replacements completed afterwards (by
    /// [`crate::fat::check_volume`], on a volume left whole).
    pub completed: Vec<String>,
}

/// Sets the dirty flag (a flush after) before repair writes, so a cut during
/// them leaves the volume marked; the reconciliation that ends a repair
/// clears it, and damage left keeps it.
fn mark_dirty(w: &mut Window, kind: Kind) -> io::Result<()> {
    let at = flag_at(kind);
    let mut b = [0u8; 1];
    read_at(w, at, &mut b)?;
    if b[0] & 1 == 0 {
        write_at(w, at, &[b[0] | 1])?;
        w.sync()?;
    }
    Ok(())
}

/// Mends what the volume alone decides, then reconciles (`lifeboat disk check
/// --repair`):
///
/// - FAT copies that disagree beyond clusters in flight: when the tree walked
///   with one copy alone is consistent (no damage, no file losing data) and no
///   other consistent copy describes a different tree, that copy is written over
///   the others. Otherwise nothing is written: which is right cannot be told.
/// - Files that share clusters with another entry (cross-links): the entry met
///   second in the walk gets its own copy of the clusters its size needs, in clusters
///   free in every copy and reached by nothing — data and chain, a flush, then
///   its entry, a flush — so both keep their content and no cluster another
///   entry names is freed. A shared directory is left (it is reported).
///
/// Anything else is not decidable from the volume — a chain that leaves it,
/// runs into a free cluster or loops (copying around a loop would make content
/// up), a size the chain does not match, a directory cycle, a shared
/// directory, a cross-linked file whose chain does not hold what its size
/// needs, no room for the copies — and is left as it is, reported in the
/// result's damage, with the dirty flag set. Each step is ordered so a cut leaves the volume no
/// worse, and a later repair carries on.
pub fn repair(w: &mut Window) -> io::Result<Repaired> {
    let mut exam = examine(w)?;
    let mut done = Repaired::default();
    if exam.out.damage.iter().any(|d| matches!(d, Damage::FatsDisagree { .. })) {
        let Some(k) = exam.pick else {
            done.reconciled = exam.out;
            return Ok(done);
        };
        mark_dirty(w, exam.g.kind)?;
        let g = exam.g;
        let mut writes = Vec::new();
        for (j, copy) in exam.copies.iter().enumerate() {
            if j != k {
                diff_sectors(g.fat_start + j as u64 * g.fat_bytes, copy, &exam.copies[k], &mut writes);
            }
        }
        write_all(w, &writes)?;
        w.sync()?;
        done.fat_taken = Some(k);
        exam = examine(w)?;
    }
    for _ in 0..64 {
        let only_files = exam.out.damage.iter().all(|d| matches!(d, Damage::CrossLinked { dir: false, .. }));
        if exam.out.damage.is_empty() || !only_files || exam.shared.is_empty() {
            break;
        }
        mark_dirty(w, exam.g.kind)?;
        let mut progress = false;
        for s in exam.shared.clone() {
            if unshare(w, &mut exam, &s)? {
                done.unshared.push(s.path.clone());
                progress = true;
            }
        }
        if !progress {
            break;
        }
        exam = examine(w)?;
    }
    if exam.out.damage.is_empty() {
        apply(w, &exam)?;
    }
    done.reconciled = exam.out;
    Ok(done)
}

/// Gives the file `s` its own copy of the clusters its size needs, which its
/// chain must hold: new clusters written and chained in every FAT copy, a
/// flush, then its entry pointed at them, a flush. `false` when there is no
/// room, or the chain does not hold what the size needs (ends early, loops).
fn unshare(w: &mut Window, exam: &mut Exam, s: &Shared) -> io::Result<bool> {
    let g = exam.g;
    let (kind, cb) = (g.kind, g.cluster_bytes());
    let (eoc, end, _) = marks(kind);
    let valid = |c: u32| c >= 2 && (c as u64) < g.clusters as u64 + 2;
    let need = s.size.div_ceil(cb) as usize;
    // The clusters the file's size needs, which its chain must hold, each
    // once: a chain that ends early, runs into a free cluster or comes back
    // on itself has no content to copy that the volume decides, and copying
    // around it would make content up.
    let mut old = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut c = s.first;
    while old.len() < need {
        if !valid(c) || exam.fat[c as usize] == 0 || !seen.insert(c) {
            return Ok(false);
        }
        old.push(c);
        let v = exam.fat[c as usize];
        if v >= end {
            break;
        }
        c = v;
    }
    if old.len() < need {
        return Ok(false);
    }
    let fresh: Vec<u32> =
        (2..g.clusters + 2).filter(|&c| exam.fat[c as usize] == 0 && !exam.owned[c as usize]).take(old.len()).collect();
    if fresh.len() < old.len() {
        return Ok(false);
    }
    let mut buf = vec![0u8; cb as usize];
    for (&from, &to) in old.iter().zip(&fresh) {
        read_at(w, g.cluster_offset(from), &mut buf)?;
        write_at(w, g.cluster_offset(to), &buf)?;
    }
    let mut writes = Vec::new();
    for (k, copy) in exam.copies.iter_mut().enumerate() {
        let mut img = copy.clone();
        for (i, &c) in fresh.iter().enumerate() {
            set(kind, &mut img, c, fresh.get(i + 1).copied().unwrap_or(eoc));
        }
        diff_sectors(g.fat_start + k as u64 * g.fat_bytes, copy, &img, &mut writes);
        *copy = img;
    }
    for (i, &c) in fresh.iter().enumerate() {
        exam.fat[c as usize] = fresh.get(i + 1).copied().unwrap_or(eoc);
        exam.owned[c as usize] = true;
    }
    write_all(w, &writes)?;
    w.sync()?;
    let sector = s.entry_at / 512 * 512;
    let mut b = [0u8; 512];
    read_at(w, sector, &mut b)?;
    let o = (s.entry_at - sector) as usize;
    set_first_cluster(kind, &mut b[o..o + 32], fresh.first().copied().unwrap_or(0));
    write_at(w, sector, &b)?;
    w.sync()?;
    Ok(true)
}
