//! A partition window: `Read + Write + Seek` over `[offset, offset + len)` of a disk
//! file, refusing any access outside it, so a damaged FAT can never make lifeboat
//! write into a neighbouring partition.
//!
//! Small reads (FAT entries, directory entries, which `fatfs` reads a few bytes at a
//! time) are served from a direct-mapped cache of 4 KiB blocks; writes go straight
//! through to the backing and patch any cached copy, so the cache never holds
//! anything the disk does not.
//!
//! It also bounds how much may be read per operation ([`Window::arm_guard`]): `fatfs`
//! follows cluster chains as the FAT says, and a chain that loops would otherwise be
//! read forever.

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
    /// Shared by every handle from [`Window::share`], so writes through one are seen
    /// by reads through the other.
    cache: Arc<Mutex<BlockCache>>,
}

/// Direct-mapped slots of (block number, block bytes).
type BlockCache = Vec<Option<(u64, Box<[u8]>)>>;

const BLOCK: u64 = 4096;
const SLOTS: usize = 1024;

impl Window {
    pub fn new(backing: Arc<dyn Backing>, offset: u64, len: u64, writable: bool) -> Self {
        Window {
            backing,
            offset,
            len,
            pos: 0,
            writable,
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            cache: Arc::new(Mutex::new(vec![None; SLOTS])),
        }
    }

    /// A second handle on the same partition, sharing the block cache and the read
    /// budget (for the few raw FAT fix-ups lifeboat makes beside `fatfs`).
    pub fn share(&self) -> Window {
        Window {
            backing: self.backing.clone(),
            offset: self.offset,
            len: self.len,
            pos: 0,
            writable: self.writable,
            budget: self.budget.clone(),
            cache: self.cache.clone(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
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

    pub fn sync(&self) -> io::Result<()> {
        self.backing.sync()
    }

    fn check(&self, n: usize) -> io::Result<()> {
        if self
            .pos
            .checked_add(n as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "access at {}+{} is outside the partition ({} bytes)",
                    self.pos, n, self.len
                ),
            ));
        }
        Ok(())
    }
}

/// The error a runaway read turns into.
pub fn runaway() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "read far more than the volume holds: a cluster chain loops",
    )
}

impl Window {
    fn read_exact_backing(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let r = self
                .backing
                .read_at(&mut buf[done..], self.offset + at + done as u64)?;
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

    /// Copies bytes of block `b` (window-relative) from `off` into `out`, loading the
    /// block into the cache if needed; returns how many were copied.
    fn copy_from_block(&self, b: u64, off: usize, out: &mut [u8]) -> io::Result<usize> {
        let slot = (b as usize) % SLOTS;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| io::Error::other("cache poisoned"))?;
        let hit = matches!(&cache[slot], Some((n, _)) if *n == b);
        if !hit {
            let start = b * BLOCK;
            let n = BLOCK.min(self.len - start) as usize;
            let mut data = vec![0u8; n].into_boxed_slice();
            self.read_exact_backing(&mut data, start)?;
            cache[slot] = Some((b, data));
        }
        match &cache[slot] {
            Some((_, d)) => {
                let take = out.len().min(d.len().saturating_sub(off));
                out[..take].copy_from_slice(&d[off..off + take]);
                Ok(take)
            }
            None => Err(io::Error::other("cache slot empty")),
        }
    }

    fn patch_cache(&mut self, at: u64, data: &[u8]) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let end = at + data.len() as u64;
        let (first, last) = (at / BLOCK, (end - 1) / BLOCK);
        if last - first >= SLOTS as u64 {
            cache.iter_mut().for_each(|c| *c = None);
            return;
        }
        for b in first..=last {
            let slot = (b as usize) % SLOTS;
            if let Some((n, blk)) = &mut cache[slot] {
                if *n == b {
                    let bs = b * BLOCK;
                    let lo = at.max(bs);
                    let hi = end.min(bs + blk.len() as u64);
                    if lo < hi {
                        blk[(lo - bs) as usize..(hi - bs) as usize]
                            .copy_from_slice(&data[(lo - at) as usize..(hi - at) as usize]);
                    }
                }
            }
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
        if (n as u64) < BLOCK {
            // Small read: from cached blocks (at most two).
            let mut done = 0;
            while done < n {
                let at = self.pos + done as u64;
                let b = at / BLOCK;
                let off = (at - b * BLOCK) as usize;
                let take = self.copy_from_block(b, off, &mut buf[done..n])?;
                if take == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past a cached block",
                    ));
                }
                done += take;
            }
        } else {
            let pos = self.pos;
            self.read_exact_backing(&mut buf[..n], pos)?;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "volume opened read-only",
            ));
        }
        self.check(buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let w = self
                .backing
                .write_at(&buf[done..], self.offset + self.pos + done as u64)?;
            if w == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
            }
            done += w;
        }
        let pos = self.pos;
        self.patch_cache(pos, buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
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
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past end of memory disk",
            ));
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
        let v = b.0.lock().unwrap();
        assert_eq!(v[9], 0);
        assert_eq!(v[10], 1);
        assert_eq!(v[29], 1);
        assert_eq!(v[30], 0);
    }

    #[test]
    fn cache_sees_writes() {
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![
            7u8;
            3 * BLOCK as usize
        ])));
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

    #[test]
    fn guard_stops_runaway_reads() {
        let b = Arc::new(MemBacking(std::sync::Mutex::new(vec![0u8; 100])));
        let mut w = Window::new(b, 0, 100, false);
        w.guard().store(700, Ordering::Relaxed);
        let mut buf = [0u8; 100];
        assert!(w.read_exact(&mut buf).is_ok());
        w.seek(SeekFrom::Start(0)).unwrap();
        assert!(
            w.read_exact(&mut [0u8; 4]).is_err(),
            "small reads are charged 512 bytes"
        );
    }
}
