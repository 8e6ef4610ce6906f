//! A partition window: `Read + Write + Seek` over `[offset, offset + len)` of a disk
//! file, refusing any access outside it, so a damaged FAT can never make lifeboat
//! write into a neighbouring partition.
//!
//! `fatfs` reads and writes metadata a few bytes at a time (a FAT entry is four
//! bytes; allocating one cluster rewrites four of them) and file data a cluster at a
//! time. Without help that is one syscall per entry. The window therefore keeps a
//! direct-mapped cache of 4 KiB blocks: small reads are served from it and small
//! writes change it (write-back), while large writes that continue each other are
//! gathered into one `pwrite` of up to 4 MiB. Every write also patches any cached
//! copy, so the cache is always the latest content. [`Window::write_pending`] writes
//! everything out (gathered data first, then dirty blocks, adjacent blocks
//! coalesced); `FatVolume` calls it at the end of every operation, and
//! [`Window::sync`] before every fsync, so durability points are unchanged.
//!
//! It also bounds how much may be read per operation (the shared budget behind
//! [`Window::guard`]): `fatfs` follows cluster chains as the FAT says, and a chain
//! that loops would otherwise be read forever.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a window's bytes live.
pub trait Backing: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize>;
    fn sync(&self) -> io::Result<()>;
}

impl Backing for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

const BLOCK: u64 = 4096;
const SLOTS: usize = 1024;
const GATHER_MIN: usize = 512;
const GATHER_MAX: usize = 4 << 20;

/// A cached block: its number, bytes, and whether they differ from the backing.
struct Slot {
    block: u64,
    data: Box<[u8]>,
    dirty: bool,
}

/// State shared by every handle from [`Window::share`].
struct Shared {
    slots: Vec<Option<Slot>>,
    /// Gathered large writes: window offset and bytes, not yet written.
    pending: Option<(u64, Vec<u8>)>,
}

/// A bounded view of part of a backing file.
pub struct Window {
    backing: Arc<dyn Backing>,
    offset: u64,
    len: u64,
    pos: u64,
    writable: bool,
    /// Bytes that may still be read before the operation is declared runaway;
    /// `u64::MAX` is unlimited. Shared so the owner of a `fatfs::FileSystem` (which
    /// swallows the window) can re-arm it per operation.
    budget: Arc<AtomicU64>,
    shared: Arc<Mutex<Shared>>,
    /// Bytes that reads of `[at, at + len)` return instead of the backing's
    /// (see [`Window::overlay_reads`]).
    overlay: Option<Arc<(u64, Vec<u8>)>>,
}

/// The error a runaway read turns into.
pub fn runaway() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "read far more than the volume holds: a cluster chain loops")
}

fn poisoned() -> io::Error {
    io::Error::other("window cache poisoned")
}

impl Window {
    pub fn new(backing: Arc<dyn Backing>, offset: u64, len: u64, writable: bool) -> Self {
        let slots = (0..SLOTS).map(|_| None).collect();
        Window {
            backing,
            offset,
            len,
            pos: 0,
            writable,
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            shared: Arc::new(Mutex::new(Shared { slots, pending: None })),
            overlay: None,
        }
    }

    /// A second handle on the same partition, sharing the cache and the read budget
    /// (for the few raw FAT fix-ups lifeboat makes beside `fatfs`).
    pub fn share(&self) -> Window {
        Window {
            backing: self.backing.clone(),
            offset: self.offset,
            len: self.len,
            pos: 0,
            writable: self.writable,
            budget: self.budget.clone(),
            shared: self.shared.clone(),
            overlay: None,
        }
    }

    /// [`Window::share`] that refuses every write.
    pub fn read_only(&self) -> Window {
        let mut w = self.share();
        w.writable = false;
        w
    }

    /// [`Window::read_only`], keeping this handle's overlay.
    pub fn share_overlaid(&self) -> Window {
        let mut w = self.read_only();
        w.overlay = self.overlay.clone();
        w
    }

    /// This handle with reads of `[at, at + bytes.len())` served from `bytes`
    /// (the FAT a damaged volume is read through, in place of the first copy);
    /// anything else reads as before. Meant for read-only handles.
    pub fn overlay_reads(mut self, at: u64, bytes: Vec<u8>) -> Window {
        self.overlay = Some(Arc::new((at, bytes)));
        self
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The read budget; store a byte count to arm it, `u64::MAX` to disarm.
    pub fn guard(&self) -> Arc<AtomicU64> {
        self.budget.clone()
    }

    /// The backing store and the byte range of this window.
    pub fn backing(&self) -> (Arc<dyn Backing>, u64, u64) {
        (self.backing.clone(), self.offset, self.len)
    }

    /// Writes everything out, then syncs the backing.
    pub fn sync(&self) -> io::Result<()> {
        self.write_pending()?;
        self.backing.sync()
    }

    /// Writes gathered data and dirty blocks to the backing (without syncing).
    pub fn write_pending(&self) -> io::Result<()> {
        let mut sh = self.shared.lock().map_err(|_| poisoned())?;
        self.write_out(&mut sh)
    }

    fn write_out(&self, sh: &mut Shared) -> io::Result<()> {
        if let Some((at, data)) = sh.pending.take() {
            self.write_all_backing(&data, at)?;
        }
        let mut dirty: Vec<usize> = (0..SLOTS).filter(|&i| sh.slots[i].as_ref().is_some_and(|s| s.dirty)).collect();
        dirty.sort_by_key(|&i| sh.slots[i].as_ref().map(|s| s.block));
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut next = u64::MAX;
        for i in dirty {
            let Some(slot) = sh.slots[i].as_mut() else { continue };
            slot.dirty = false;
            let at = slot.block * BLOCK;
            if at != next && !run.is_empty() {
                self.write_all_backing(&run, run_start)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = at;
            }
            run.extend_from_slice(&slot.data);
            next = at + slot.data.len() as u64;
        }
        if !run.is_empty() {
            self.write_all_backing(&run, run_start)?;
        }
        Ok(())
    }

    fn write_all_backing(&self, buf: &[u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let w = self.backing.write_at(&buf[done..], self.offset + at + done as u64)?;
            if w == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
            }
            done += w;
        }
        Ok(())
    }

    fn read_exact_backing(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let r = self.backing.read_at(&mut buf[done..], self.offset + at + done as u64)?;
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "disk image shorter than its partition table says",
                ));
            }
            done += r;
        }
        Ok(())
    }

    fn check(&self, n: usize) -> io::Result<()> {
        if self.pos.checked_add(n as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("access at {}+{} is outside the partition ({} bytes)", self.pos, n, self.len),
            ));
        }
        Ok(())
    }

    /// The slot holding block `b`, loaded from the backing if needed (a dirty block
    /// it displaces is written out first).
    fn load(&self, sh: &mut Shared, b: u64) -> io::Result<usize> {
        let i = (b as usize) % SLOTS;
        if sh.slots[i].as_ref().is_some_and(|s| s.block == b) {
            return Ok(i);
        }
        if let Some(old) = sh.slots[i].as_ref().filter(|s| s.dirty) {
            self.write_all_backing(&old.data, old.block * BLOCK)?;
        }
        let start = b * BLOCK;
        if overlaps(&sh.pending, start, BLOCK) {
            let (at, data) = sh.pending.take().unwrap_or_default();
            self.write_all_backing(&data, at)?;
        }
        let n = BLOCK.min(self.len - start) as usize;
        let mut data = vec![0u8; n].into_boxed_slice();
        self.read_exact_backing(&mut data, start)?;
        sh.slots[i] = Some(Slot { block: b, data, dirty: false });
        Ok(i)
    }

    /// Applies written bytes to every cached block they touch.
    fn patch(sh: &mut Shared, at: u64, data: &[u8], mark_dirty: bool) {
        let end = at + data.len() as u64;
        let apply = |slot: &mut Slot| {
            let bs = slot.block * BLOCK;
            let (lo, hi) = (at.max(bs), end.min(bs + slot.data.len() as u64));
            if lo < hi {
                slot.data[(lo - bs) as usize..(hi - bs) as usize]
                    .copy_from_slice(&data[(lo - at) as usize..(hi - at) as usize]);
                slot.dirty |= mark_dirty;
            }
        };
        let (first, last) = (at / BLOCK, (end - 1) / BLOCK);
        if last - first < SLOTS as u64 {
            for b in first..=last {
                if let Some(slot) = sh.slots[(b as usize) % SLOTS].as_mut().filter(|s| s.block == b) {
                    apply(slot);
                }
            }
        } else {
            sh.slots.iter_mut().flatten().for_each(apply);
        }
    }

    /// Writes out whatever overlaps `[at, at + len)` before a direct read of it.
    fn settle(&self, sh: &mut Shared, at: u64, len: u64) -> io::Result<()> {
        let dirty_inside = sh
            .slots
            .iter()
            .flatten()
            .any(|s| s.dirty && s.block * BLOCK < at + len && at < s.block * BLOCK + s.data.len() as u64);
        if dirty_inside || overlaps(&sh.pending, at, len) {
            self.write_out(sh)?;
        }
        Ok(())
    }
}

fn overlaps(p: &Option<(u64, Vec<u8>)>, at: u64, len: u64) -> bool {
    matches!(p, Some((s, d)) if at < s + d.len() as u64 && *s < at + len)
}

impl Drop for Window {
    fn drop(&mut self) {
        // The last handle writes out what is left (errors surface earlier, at the
        // explicit write-outs every operation ends with).
        if Arc::strong_count(&self.shared) == 1 {
            let _ = self.write_pending();
        }
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        if n == 0 {
            return Ok(0);
        }
        let b = self.budget.load(Ordering::Relaxed);
        if b != u64::MAX {
            // Small reads are charged a sector, so loops over FAT entries (four bytes
            // a read) exhaust the budget as fast as loops over data.
            let charge = (n as u64).max(512);
            if b < charge {
                return Err(runaway());
            }
            self.budget.store(b - charge, Ordering::Relaxed);
        }
        // A read inside the overlay is served from it; one that reaches into it
        // stops at its start (callers read again for the rest).
        let pos = self.pos;
        let mut n = n;
        if let Some(o) = self.overlay.as_deref() {
            let (at, bytes) = (o.0, &o.1);
            let end = at + bytes.len() as u64;
            if pos >= at && pos < end {
                let k = n.min((end - pos) as usize);
                let from = (pos - at) as usize;
                buf[..k].copy_from_slice(&bytes[from..from + k]);
                self.pos += k as u64;
                return Ok(k);
            }
            if pos < at && pos + n as u64 > at {
                n = (at - pos) as usize;
            }
        }
        let mut sh = self.shared.lock().map_err(|_| poisoned())?;
        if (n as u64) < BLOCK {
            let mut done = 0;
            while done < n {
                let at = pos + done as u64;
                let b = at / BLOCK;
                let off = (at - b * BLOCK) as usize;
                let i = self.load(&mut sh, b)?;
                let slot = sh.slots[i].as_ref().ok_or_else(poisoned)?;
                let take = (n - done).min(slot.data.len().saturating_sub(off));
                if take == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past a cached block"));
                }
                buf[done..done + take].copy_from_slice(&slot.data[off..off + take]);
                done += take;
            }
        } else {
            self.settle(&mut sh, pos, n as u64)?;
            self.read_exact_backing(&mut buf[..n], pos)?;
        }
        drop(sh);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "volume opened read-only"));
        }
        self.check(buf.len())?;
        if buf.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let mut sh = self.shared.lock().map_err(|_| poisoned())?;
        if buf.len() >= GATHER_MIN {
            // Cached copies take the new bytes (staying clean: the gathered write
            // will carry them to the backing).
            Self::patch(&mut sh, pos, buf, false);
            let extend = matches!(&sh.pending, Some((at, d))
                if at + d.len() as u64 == pos && d.len() + buf.len() <= GATHER_MAX);
            if extend {
                if let Some((_, d)) = sh.pending.as_mut() {
                    d.extend_from_slice(buf);
                }
            } else {
                self.write_out(&mut sh)?;
                sh.pending = Some((pos, buf.to_vec()));
            }
        } else {
            // Small writes change cached blocks, written out later.
            let end = pos + buf.len() as u64;
            for b in pos / BLOCK..=(end - 1) / BLOCK {
                self.load(&mut sh, b)?;
            }
            Self::patch(&mut sh, pos, buf, true);
        }
        drop(sh);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek outside the partition")),
        }
    }
}

/// An in-memory backing, for tests and fuzzing.
pub struct MemBacking(pub std::sync::Mutex<Vec<u8>>);

impl Backing for MemBacking {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let v = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        let off = off as usize;
        if off >= v.len() {
            return Ok(0);
        }
        let n = buf.len().min(v.len() - off);
        buf[..n].copy_from_slice(&v[off..off + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        let mut v = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        let end = off as usize + buf.len();
        if end > v.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "past end of memory disk"));
        }
        v[off as usize..end].copy_from_slice(buf);
        Ok(buf.len())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn refuses_outside() {
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![0u8; 100])));
        let mut w = Window::new(b.clone(), 10, 20, true);
        assert!(w.write_all(&[1; 20]).is_ok());
        assert!(w.write(&[1]).is_err());
        assert!(w.seek(SeekFrom::Start(21)).is_err());
        w.write_pending().unwrap();
        let v = b.0.lock().unwrap();
        assert_eq!(v[9], 0);
        assert_eq!(v[10], 1);
        assert_eq!(v[29], 1);
        assert_eq!(v[30], 0);
    }

    #[test]
    fn cache_sees_writes() {
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![7u8; 3 * BLOCK as usize])));
        let mut w = Window::new(b.clone(), 0, 3 * BLOCK, true);
        let mut one = [0u8; 4];
        w.seek(SeekFrom::Start(BLOCK - 2)).unwrap();
        w.read_exact(&mut one).unwrap();
        assert_eq!(one, [7; 4]);
        w.seek(SeekFrom::Start(BLOCK - 1)).unwrap();
        w.write_all(&[1, 2]).unwrap();
        w.seek(SeekFrom::Start(BLOCK - 2)).unwrap();
        w.read_exact(&mut one).unwrap();
        assert_eq!(one, [7, 1, 2, 7]);
        let mut big = vec![0u8; 2 * BLOCK as usize];
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(&big).unwrap();
        w.seek(SeekFrom::Start(BLOCK - 2)).unwrap();
        w.read_exact(&mut one).unwrap();
        assert_eq!(one, [0; 4]);
        big.fill(9);
        w.seek(SeekFrom::Start(0)).unwrap();
        w.read_exact(&mut big).unwrap();
        assert!(big.iter().all(|&x| x == 0));
    }

    /// Random reads and writes of every size against a plain byte vector: every read
    /// agrees with the model, and after write_pending the backing equals it.
    #[test]
    fn model_check_against_a_vector() {
        let size = 3 * SLOTS as u64 * BLOCK; // enough to force evictions
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![0u8; size as usize])));
        let mut w = Window::new(b.clone(), 0, size, true);
        let mut model = vec![0u8; size as usize];
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for step in 0..20_000u64 {
            let len = match rnd(4) {
                0 => 1 + rnd(8),
                1 => 1 + rnd(600),
                2 => BLOCK,
                _ => 1 + rnd(3 * BLOCK),
            };
            // Mostly sequential, sometimes anywhere.
            let at = if rnd(3) == 0 { rnd(size - len) } else { (step * 4096) % (size - len) };
            w.seek(SeekFrom::Start(at)).unwrap();
            if rnd(2) == 0 {
                let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(step as u8)).collect();
                w.write_all(&data).unwrap();
                model[at as usize..(at + len) as usize].copy_from_slice(&data);
            } else {
                let mut got = vec![0u8; len as usize];
                w.read_exact(&mut got).unwrap();
                assert_eq!(got, &model[at as usize..(at + len) as usize], "step {step}: read {len} at {at}");
            }
            if rnd(500) == 0 {
                w.write_pending().unwrap();
                assert!(*b.0.lock().unwrap() == model, "step {step}: backing differs after write_pending");
            }
        }
        w.write_pending().unwrap();
        assert!(*b.0.lock().unwrap() == model);
    }

    #[test]
    fn guard_stops_runaway_reads() {
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![0u8; 100])));
        let mut w = Window::new(b, 0, 100, false);
        w.guard().store(700, Ordering::Relaxed);
        let mut buf = [0u8; 100];
        assert!(w.read_exact(&mut buf).is_ok());
        w.seek(SeekFrom::Start(0)).unwrap();
        assert!(w.read_exact(&mut [0u8; 4]).is_err(), "small reads are charged 512 bytes");
    }
}
