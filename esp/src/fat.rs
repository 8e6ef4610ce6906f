//! FAT volumes on a partition window: checked at every open
//! ([`crate::fatcheck`]; a damaged volume is read, never written; on a whole
//! one opened for writing, every replacement a cut interrupted is completed
//! before the volume is handed out), directories listed through `fatfs`
//! (read-only), file content read and everything written by lifeboat's own
//! [`crate::fatwrite`], names checked before a replacement writes (an 8.3 alias
//! of another file is refused).
//!
//! Every operation runs with a read budget on the window (so a looping cluster chain
//! ends in an error, not a hang) and inside `catch_unwind` (so a malformed volume
//! that trips an assertion in `fatfs` becomes an error, not a crash of PID 1).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fatfs::{FileSystem, FsOptions};

use crate::fatcheck::{Damage, Reconciled, Repaired};
use crate::fatraw::Geometry;
use crate::fatwrite::FatWriter;
use crate::volume::{components, DirEntry, Space, Volume};
use crate::window::Window;
use crate::{Error, Result};

type Fs = FileSystem<Window>;

/// A mounted-in-process FAT volume.
pub struct FatVolume {
    fs: Option<Fs>,
    name: String,
    guard: Arc<AtomicU64>,
    budget: u64,
    /// A second handle on the partition (same cache) for raw fix-ups.
    raw: Window,
    fat_type: &'static str,
    /// What the check at open found, and repaired on a writable volume.
    reconciled: Reconciled,
    /// Opened for writing (reconciled at open) or read-only (only checked).
    writable: bool,
    /// lifeboat's own FAT table: the ordered write path and the content reader
    /// (or why there is none; a read-only window refuses its writes).
    writer: std::result::Result<FatWriter, String>,
    /// Files interrupted replacements left that are not completed yet (a
    /// read-only or damaged volume keeps them), and what the open completed.
    pending: Vec<String>,
    completed: Vec<String>,
}

const MIN_FAT32_CLUSTERS: u64 = 65525 + 1024;

/// Formats a window as FAT (FAT32 when the size allows it with clusters of at least
/// 512 bytes; the largest such cluster up to 4 KiB, for write speed).
pub fn format(mut w: Window, label: [u8; 11], volume_id: u32) -> io::Result<()> {
    w.seek(SeekFrom::Start(0))?;
    let size = w.len();
    let mut opts = fatfs::FormatVolumeOptions::new().volume_label(label).volume_id(volume_id);
    for cluster in [4096u64, 2048, 1024, 512] {
        let n = size / cluster;
        let fat_sectors = (n * 4).div_ceil(512) * 2;
        let usable = n.saturating_sub((fat_sectors + 64) * 512 / cluster + 1);
        if usable >= MIN_FAT32_CLUSTERS {
            opts = opts.fat_type(fatfs::FatType::Fat32).bytes_per_cluster(cluster as u32);
            break;
        }
    }
    let (backing, offset, len) = w.backing();
    catch_unwind(AssertUnwindSafe(|| fatfs::format_volume(w, opts)))
        .unwrap_or_else(|_| Err(io::Error::other("formatter failed on this size")))?;
    // The formatter leaves the FAT32 free-cluster count unknown, which fsck.fat
    // reports; count once so FSInfo is right from the start.
    let w = Window::new(backing, offset, len, true);
    let fs = FileSystem::new(w, FsOptions::new().time_provider(&crate::clock::CLOCK))?;
    fs.stats()?;
    fs.unmount()
}

/// `lifeboat disk check`: the check the volume in `w` gets at every open,
/// reported without opening it for use (nothing written), or with `repair` (on a
/// writable window) [`crate::fatcheck::repair`]. A volume the check cannot read
/// at all is an error; damage is in the result.
pub fn check_volume(mut w: Window, name: &str, repair: bool) -> Result<Repaired> {
    check_boot_sector(&mut w).map_err(|why| Error::Fat { volume: name.to_owned(), why })?;
    let r = catch_unwind(AssertUnwindSafe(|| {
        if repair {
            crate::fatcheck::repair(&mut w)
        } else {
            crate::fatcheck::check(&mut w).map(|reconciled| Repaired { reconciled, ..Default::default() })
        }
    }))
    .unwrap_or_else(|_| Err(io::Error::other("malformed volume")));
    let mut done = r.map_err(|e| fat_err(name, e))?;
    w.sync().map_err(|e| Error::io(name.to_owned(), e))?;
    // A repaired volume is one every writer may open: what interrupted
    // replacements left is completed now, as the next writer's open would.
    if repair && done.reconciled.damage.is_empty() && !done.reconciled.interrupted.is_empty() {
        let v = FatVolume::open(w.share(), name)?;
        done.completed = v.completed().to_vec();
        v.close()?;
        done.reconciled.interrupted.clear();
    }
    Ok(done)
}

fn fat_err(name: &str, e: io::Error) -> Error {
    Error::Fat { volume: name.to_owned(), why: e.to_string() }
}

/// Checks the boot sector before `fatfs` sees it, with messages a user can act on.
fn check_boot_sector(w: &mut Window) -> std::result::Result<(), String> {
    let mut b = [0u8; 512];
    w.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    w.read_exact(&mut b).map_err(|e| format!("cannot read the boot sector: {e}"))?;
    w.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if b.iter().all(|&x| x == 0) {
        return Err("the partition is empty (no filesystem)".into());
    }
    if b[510] != 0x55 || b[511] != 0xAA {
        return Err("no boot sector signature (not FAT, or the boot sector is damaged)".into());
    }
    let bps = u16::from_le_bytes([b[11], b[12]]) as u64;
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(format!("bytes per sector {bps} is invalid"));
    }
    let spc = b[13] as u64;
    if spc == 0 || !spc.is_power_of_two() {
        return Err(format!("sectors per cluster {spc} is invalid"));
    }
    let reserved = u16::from_le_bytes([b[14], b[15]]) as u64;
    let fats = b[16] as u64;
    if reserved == 0 || fats == 0 {
        return Err("reserved sectors or FAT count is zero".into());
    }
    let total16 = u16::from_le_bytes([b[19], b[20]]) as u64;
    let total32 = u32::from_le_bytes([b[32], b[33], b[34], b[35]]) as u64;
    let total = if total16 != 0 { total16 } else { total32 };
    if total == 0 || total * bps > w.len() {
        return Err(format!("the volume claims {} bytes but its partition has {}", total * bps, w.len()));
    }
    Ok(())
}

impl FatVolume {
    /// Opens the FAT volume in `w`; `name` is used in messages. The volume is
    /// checked first ([`crate::fatcheck`]); a writable one is reconciled (what a
    /// power cut left half-done is made consistent before anything allocates
    /// from it), a read-only one only learns what reconciliation would do. A
    /// volume with damage the check does not repair is never written: it is
    /// read (through the FAT copy consistent with its tree, when the copies
    /// disagree and one is) and every write refuses with [`Error::Damaged`].
    pub fn open(mut w: Window, name: &str) -> Result<Self> {
        check_boot_sector(&mut w).map_err(|why| Error::Fat { volume: name.to_owned(), why })?;
        let guard = w.guard();
        let mut raw = w.share();
        let (_, _, len) = w.backing();
        let budget = len.saturating_mul(3).saturating_add(64 << 20);
        guard.store(budget, Ordering::Relaxed);
        let writable = w.is_writable();
        let r = catch_unwind(AssertUnwindSafe(|| crate::fatcheck::at_open(&mut raw, writable)))
            .unwrap_or_else(|_| Err(io::Error::other("malformed volume")));
        let (reconciled, read_fat) = match r {
            Ok(r) => r,
            // A volume the check cannot read is not written; whether it reads is
            // for fatfs to say.
            Err(e) if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof => {
                (Reconciled { damage: vec![Damage::NotChecked { why: e.to_string() }], ..Default::default() }, None)
            }
            Err(e) => {
                guard.store(u64::MAX, Ordering::Relaxed);
                return Err(fat_err(name, e));
            }
        };
        guard.store(budget, Ordering::Relaxed);
        // fatfs only reads (every write is lifeboat's own, through `raw`): its
        // handle cannot write, so it never puts an FSInfo or a flag of its own
        // behind lifeboat's ordered writes. Reads follow the FAT the check
        // chose when it is not the first copy as on disk.
        let mut reader = w.read_only();
        if let (Some(fat), Ok(g)) = (read_fat, Geometry::read(&mut raw)) {
            reader = reader.overlay_reads(g.fat_start, fat);
        }
        drop(w);
        let opts = FsOptions::new().update_accessed_date(false).time_provider(&crate::clock::CLOCK);
        let fs = catch_unwind(AssertUnwindSafe(|| FileSystem::new(reader.share_overlaid(), opts)))
            .unwrap_or_else(|_| Err(io::Error::other("malformed volume")))
            .map_err(|e| fat_err(name, e))?;
        // Loaded for read-only volumes too: reads of file content go through it.
        let writer = catch_unwind(AssertUnwindSafe(|| FatWriter::load(&mut reader)))
            .unwrap_or_else(|_| Err(io::Error::other("malformed volume")))
            .map(|mut wr| {
                if !reconciled.damage.is_empty() {
                    wr.refuse_writes("the check at open found damage".into());
                }
                wr
            })
            .map_err(|e| e.to_string());
        guard.store(u64::MAX, Ordering::Relaxed);
        let fat_type = match fs.fat_type() {
            fatfs::FatType::Fat12 => "FAT12",
            fatfs::FatType::Fat16 => "FAT16",
            fatfs::FatType::Fat32 => "FAT32",
        };
        let pending = reconciled.interrupted.clone();
        let mut v = FatVolume {
            fs: Some(fs),
            name: name.to_owned(),
            guard,
            budget,
            raw,
            fat_type,
            reconciled,
            writable,
            writer,
            pending,
            completed: Vec::new(),
        };
        // A replacement a cut interrupted (the `.lbnew` protocol of
        // `crate::volume`) is completed by whichever writer opens the volume
        // next, before anything reads it to plan a change: otherwise only the
        // same write again would complete it, and a planner would read the old
        // file while the complete new one waits.
        if writable && v.reconciled.damage.is_empty() && !v.pending.is_empty() {
            v.completed = v.complete_interrupted()?;
        }
        Ok(v)
    }

    /// What the open completed of interrupted replacements.
    pub fn completed(&self) -> &[String] {
        &self.completed
    }

    /// The damage the check at open found, if any (then nothing is written).
    pub fn damage(&self) -> &[Damage] {
        &self.reconciled.damage
    }

    /// The error every write on this volume gives, when it is damaged.
    fn refusal(&self) -> Option<Error> {
        (!self.reconciled.damage.is_empty())
            .then(|| Error::Damaged { volume: self.name.clone(), damage: self.reconciled.damage.clone() })
    }

    /// What reconciliation repaired when the volume was opened.
    pub fn reconciled(&self) -> &Reconciled {
        &self.reconciled
    }

    /// The same, one note per kind of repair (on a read-only open: what
    /// reconciliation would do, nothing written) and per damage, naming the volume.
    pub fn reconcile_notes(&self) -> Vec<String> {
        let r = &self.reconciled;
        let mut out: Vec<String> = if self.writable {
            r.repairs().into_iter().map(|d| format!("{}: checked at open: {d}", self.name)).collect()
        } else {
            let would = r.repairs();
            if would.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "{}: checked at open (opened read-only, nothing written): the next write would repair: {}",
                    self.name,
                    would.join("; ")
                )]
            }
        };
        for c in &self.completed {
            out.push(format!("{}: {c}", self.name));
        }
        if !self.pending.is_empty() {
            let when = if r.damage.is_empty() { "the next write completes" } else { "once mended, a write completes" };
            for p in r.pending() {
                out.push(format!("{}: {when} {p}", self.name));
            }
        }
        for d in &r.damage {
            out.push(format!("{}: checked at open: not repaired: {d}", self.name));
        }
        if r.damage.iter().any(|d| !matches!(d, Damage::NotChecked { .. })) {
            out.push(format!(
                "{}: damaged: read only, nothing is written to it; mend it with `lifeboat disk check {} --repair` or `fsck.fat -a`",
                self.name, self.name
            ));
        }
        out
    }

    pub fn fat_type(&self) -> &'static str {
        self.fat_type
    }

    /// Runs `f` on the filesystem with the read guard armed and panics contained.
    fn with<T>(&mut self, what: &str, f: impl FnOnce(&Fs) -> io::Result<T>) -> Result<T> {
        let Some(fs) = self.fs.as_ref() else {
            return Err(Error::Fat { volume: self.name.clone(), why: "volume was closed after an error".into() });
        };
        self.guard.store(self.budget, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| f(fs)));
        self.guard.store(u64::MAX, Ordering::Relaxed);
        self.settle(what, r)
    }

    /// Ends an operation: gathered writes reach the backing, errors name the
    /// volume, and after a panic the volume is not used again (its state is
    /// unknown).
    fn settle<T>(&mut self, what: &str, r: std::thread::Result<io::Result<T>>) -> Result<T> {
        let r = match (r, self.raw.write_pending()) {
            (Ok(Ok(_)), Err(e)) => Ok(Err(e)),
            (r, _) => r,
        };
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound { volume: self.name.clone(), path: what.to_owned() })
            }
            Ok(Err(e)) => Err(Error::Fat { volume: self.name.clone(), why: format!("{what}: {e}") }),
            Err(_) => {
                self.fs = None;
                self.writer = Err("an operation failed midway".into());
                Err(Error::Fat { volume: self.name.clone(), why: format!("{what}: the volume is malformed") })
            }
        }
    }

    /// Runs a read through lifeboat's own FAT table, with the read guard armed
    /// and panics contained.
    fn reading<T>(&mut self, what: &str, f: impl FnOnce(&FatWriter, &mut Window) -> io::Result<T>) -> Result<T> {
        self.through_writer(what, |wr, w| f(wr, w))
    }

    /// Runs a write through lifeboat's own FAT writer; refused on a damaged volume.
    fn writing<T>(&mut self, what: &str, f: impl FnOnce(&mut FatWriter, &mut Window) -> io::Result<T>) -> Result<T> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        self.through_writer(what, f)
    }

    fn through_writer<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut FatWriter, &mut Window) -> io::Result<T>,
    ) -> Result<T> {
        if self.fs.is_none() {
            return Err(Error::Fat { volume: self.name.clone(), why: "volume was closed after an error".into() });
        }
        let writer = match self.writer.as_mut() {
            Ok(wr) => wr,
            Err(why) => {
                return Err(Error::Fat { volume: self.name.clone(), why: format!("{what}: not written: {why}") })
            }
        };
        self.guard.store(self.budget, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| f(writer, &mut self.raw)));
        self.guard.store(u64::MAX, Ordering::Relaxed);
        self.settle(what, r)
    }

    /// Writes the FSInfo and clears the dirty flag.
    pub fn close(mut self) -> Result<()> {
        self.unmount()
    }

    fn unmount(&mut self) -> Result<()> {
        if let Some(fs) = self.fs.take() {
            if let Ok(wr) = self.writer.as_mut() {
                self.guard.store(self.budget, Ordering::Relaxed);
                let r = wr.finish(&mut self.raw);
                self.guard.store(u64::MAX, Ordering::Relaxed);
                r.map_err(|e| fat_err(&self.name, e))?;
            }
            // fatfs's handle is read-only: it has nothing to write.
            drop(fs);
            self.raw.sync().map_err(|e| Error::io(self.name.clone(), e))?;
        }
        Ok(())
    }
}

impl Drop for FatVolume {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

fn norm(path: &str) -> Result<String> {
    Ok(components(path)?.join("/"))
}

fn entry_of(e: &fatfs::DirEntry<Window>) -> DirEntry {
    DirEntry { name: e.file_name(), is_dir: e.is_dir(), size: if e.is_dir() { 0 } else { e.len() } }
}

fn open_dir<'a>(fs: &'a Fs, p: &str) -> io::Result<fatfs::Dir<'a, Window>> {
    if p.is_empty() {
        Ok(fs.root_dir())
    } else {
        fs.root_dir().open_dir(p)
    }
}

impl Volume for FatVolume {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn list(&mut self, dir: &str) -> Result<Vec<DirEntry>> {
        let p = norm(dir)?;
        self.with(&p.clone(), |fs| {
            let d = open_dir(fs, &p)?;
            let mut out = Vec::new();
            for e in d.iter() {
                let e = e?;
                let n = e.file_name();
                if n == "." || n == ".." {
                    continue;
                }
                out.push(entry_of(&e));
            }
            Ok(out)
        })
    }

    fn stat(&mut self, path: &str) -> Result<Option<DirEntry>> {
        let p = norm(path)?;
        if p.is_empty() {
            return Ok(Some(DirEntry { name: String::new(), is_dir: true, size: 0 }));
        }
        let (parent, name) = crate::volume::split(&p);
        let (parent, name) = (parent.to_owned(), name.to_owned());
        let r = self.with(&p, |fs| {
            let d = open_dir(fs, &parent)?;
            for e in d.iter() {
                let e = e?;
                if e.file_name().eq_ignore_ascii_case(&name) {
                    return Ok(Some(entry_of(&e)));
                }
            }
            Ok(None)
        });
        match r {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r,
        }
    }

    fn read_into(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let p = norm(path)?;
        if self.writer.is_ok() {
            let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
            return self.reading(&p, |wr, w| {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                wr.read_file(w, &parts, out)
            });
        }
        self.with(&p.clone(), |fs| {
            let mut f = fs.root_dir().open_file(&p)?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
        })
    }

    fn create_dir_all(&mut self, path: &str) -> Result<()> {
        let comps: Vec<String> = components(path)?.into_iter().map(str::to_owned).collect();
        for i in 0..comps.len() {
            let sub = comps[..=i].join("/");
            let exists = self.with(&sub.clone(), |fs| match fs.root_dir().open_dir(&sub) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            })?;
            if !exists {
                let parts: Vec<&str> = comps[..=i].iter().map(String::as_str).collect();
                self.writing(&sub, |wr, w| wr.create_dir(w, &parts))?;
            }
        }
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        let p = norm(path)?;
        match self.stat(&p)? {
            Some(e) if e.is_dir => return Err(Error::Invalid(format!("{p}: is a directory, not a file"))),
            Some(_) => self.remove(&p)?,
            None => {}
        }
        let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
        self.writing(&p, |wr, w| {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            wr.create_file(w, &parts, data)
        })
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let p = norm(path)?;
        let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
        self.writing(&p, |wr, w| {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            wr.remove(w, &parts)
        })
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (norm(from)?, norm(to)?);
        let (da, na) = crate::volume::split(&a);
        let (db, nb) = crate::volume::split(&b);
        if !da.eq_ignore_ascii_case(db) {
            return Err(Error::Invalid(format!("{a} -> {b}: lifeboat renames within one directory only")));
        }
        let dir: Vec<String> = components(da)?.into_iter().map(str::to_owned).collect();
        let (na, nb) = (na.to_owned(), nb.to_owned());
        self.writing(&a, |wr, w| {
            let dir: Vec<&str> = dir.iter().map(String::as_str).collect();
            wr.rename(w, &dir, &na, &nb)
        })
    }

    fn space(&mut self) -> Result<Space> {
        if let Ok(wr) = self.writer.as_ref() {
            let c = wr.cluster_bytes();
            return Ok(Space { total: wr.total_clusters() * c, free: wr.free_clusters() * c, cluster: c });
        }
        self.with("", |fs| {
            let s = fs.stats()?;
            let c = s.cluster_size() as u64;
            Ok(Space { total: s.total_clusters() as u64 * c, free: s.free_clusters() as u64 * c, cluster: c })
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.raw.sync().map_err(|e| Error::io(self.name.clone(), e))
    }

    fn write_refusal(&self) -> Option<Error> {
        self.refusal()
    }

    /// The generic checks, and a name that is another file's 8.3 alias:
    /// writing it would reach that file (the last rename refuses, leaving the
    /// `.lbnew` behind).
    fn check_name(&mut self, path: &str) -> Result<()> {
        let p = norm(path)?;
        let (_, name) = crate::volume::split(&p);
        if let Some(why) = crate::volume::replace_name_problem(name) {
            return Err(Error::Invalid(format!("{p}: {why}")));
        }
        if self.writer.is_err() {
            return Ok(());
        }
        let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
        let alias = self.reading(&p, |wr, w| {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            match parts.split_last() {
                Some((name, parent)) => wr.alias_of(w, parent, name),
                None => Ok(None),
            }
        })?;
        match alias {
            Some(long) => Err(Error::Invalid(format!(
                "{p}: {name} is the 8.3 alias of {long} in that directory; name the file by its name"
            ))),
            None => Ok(()),
        }
    }

    fn dir_identity(&mut self, dir: &str) -> Result<Option<(u64, u64)>> {
        if self.writer.is_err() {
            return Ok(None);
        }
        let p = norm(dir)?;
        let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
        let c = self.reading(&p, |wr, w| {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            wr.dir_first_cluster(w, &parts)
        })?;
        Ok(Some((0, c as u64)))
    }

    fn interrupted(&mut self) -> Result<Vec<String>> {
        Ok(self.pending.clone())
    }

    fn room_needed(&mut self, dir: &str, names: &[String]) -> Result<u64> {
        if self.writer.is_err() || names.is_empty() {
            return Ok(0);
        }
        let p = norm(dir)?;
        let parts: Vec<String> = components(&p)?.into_iter().map(str::to_owned).collect();
        let grown = self.reading(&p, |wr, w| {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Ok(wr.growth_for(w, &parts, &names)? * wr.cluster_bytes())
        })?;
        Ok(grown)
    }

    fn complete_interrupted(&mut self) -> Result<Vec<String>> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let paths = std::mem::take(&mut self.pending);
        crate::volume::complete_in(self, &paths)
    }
}
