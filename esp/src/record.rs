//! A recording disk for crash tests at the block level: a [`Backing`] over an
//! in-memory image that keeps every write and every flush an operation makes,
//! and makes the images a power cut could leave — every prefix of the writes,
//! writes of the last flush epoch reordered (any subset of them reached the
//! disk), and torn writes (only some of a write's sectors reached it).
//!
//! This is the crash model of lifeboat's design: the page cache and lifeboat's
//! own buffers are gone after a power cut; what is on the disk is what the
//! writes before the last completed flush put there, plus any subset of the
//! writes after it, each possibly cut at a sector boundary.

use std::io;
use std::sync::Mutex;

use crate::window::Backing;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Write { off: u64, data: Vec<u8> },
    Flush,
}

/// A disk image in memory that records what is done to it.
pub struct RecordingDisk {
    inner: Mutex<Inner>,
}

struct Inner {
    image: Vec<u8>,
    log: Vec<Event>,
    recording: bool,
}

impl RecordingDisk {
    pub fn new(image: Vec<u8>) -> Self {
        RecordingDisk { inner: Mutex::new(Inner { image, log: Vec::new(), recording: false }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording from the current content (the state before the
    /// operation); earlier events are forgotten.
    pub fn start(&self) -> Vec<u8> {
        let mut g = self.lock();
        g.log.clear();
        g.recording = true;
        g.image.clone()
    }

    /// Stops recording; returns the events.
    pub fn stop(&self) -> Vec<Event> {
        let mut g = self.lock();
        g.recording = false;
        std::mem::take(&mut g.log)
    }

    pub fn image(&self) -> Vec<u8> {
        self.lock().image.clone()
    }
}

impl Backing for RecordingDisk {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let g = self.lock();
        let off = off as usize;
        if off >= g.image.len() {
            return Ok(0);
        }
        let n = buf.len().min(g.image.len() - off);
        buf[..n].copy_from_slice(&g.image[off..off + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        let mut g = self.lock();
        let o = off as usize;
        let end =
            o.checked_add(buf.len()).filter(|&e| e <= g.image.len()).ok_or_else(|| io::Error::other("past the end"))?;
        g.image[o..end].copy_from_slice(buf);
        if g.recording {
            g.log.push(Event::Write { off, data: buf.to_vec() });
        }
        Ok(buf.len())
    }

    fn sync(&self) -> io::Result<()> {
        let mut g = self.lock();
        if g.recording && g.log.last() != Some(&Event::Flush) {
            g.log.push(Event::Flush);
        }
        Ok(())
    }
}

/// How a crash image came about, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The first `n` writes reached the disk, in order.
    Prefix(usize),
    /// Everything up to flush epoch `epoch`, then the writes of that epoch whose
    /// bits are set in `mask` (seeded).
    Reordered { epoch: usize, mask: u64 },
    /// The first `n` writes, then only the first `sectors` sectors of write `n`.
    Torn { n: usize, sectors: usize },
}

/// Deterministic pseudo-random numbers for seeded reorderings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn apply(image: &mut [u8], off: u64, data: &[u8]) {
    let o = off as usize;
    if let Some(dst) = image.get_mut(o..o + data.len()) {
        dst.copy_from_slice(data);
    }
}

/// The crash images of an operation that started from `before` and made
/// `events`: every prefix of the writes, `reorders` seeded subsets of each flush
/// epoch's writes, and each multi-sector write torn after its first sector.
pub fn crash_images(before: &[u8], events: &[Event], reorders: usize, seed: u64) -> Vec<(Cut, Vec<u8>)> {
    let writes: Vec<(u64, &[u8])> = events
        .iter()
        .filter_map(|e| match e {
            Event::Write { off, data } => Some((*off, data.as_slice())),
            Event::Flush => None,
        })
        .collect();
    // Epochs: ranges of write indices between flushes.
    let mut epochs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut n = 0;
    for e in events {
        match e {
            Event::Write { .. } => n += 1,
            Event::Flush => {
                if n > start {
                    epochs.push((start, n));
                }
                start = n;
            }
        }
    }
    if n > start {
        epochs.push((start, n));
    }
    let mut out = Vec::new();
    let mut img = before.to_vec();
    out.push((Cut::Prefix(0), img.clone()));
    for (i, (off, data)) in writes.iter().enumerate() {
        // Torn: only the first sector of this write.
        if data.len() > 512 {
            let mut t = img.clone();
            apply(&mut t, *off, &data[..512]);
            out.push((Cut::Torn { n: i, sectors: 1 }, t));
        }
        apply(&mut img, *off, data);
        out.push((Cut::Prefix(i + 1), img.clone()));
    }
    let mut rng = Rng(seed | 1);
    let mut base = before.to_vec();
    for (k, &(a, b)) in epochs.iter().enumerate() {
        let len = b - a;
        if len > 1 {
            for _ in 0..reorders {
                let mask = rng.next() & if len >= 64 { u64::MAX } else { (1u64 << len) - 1 };
                let mut t = base.clone();
                for (j, (off, data)) in writes[a..b].iter().enumerate() {
                    if j >= 64 || mask & (1 << j) != 0 {
                        apply(&mut t, *off, data);
                    }
                }
                out.push((Cut::Reordered { epoch: k, mask }, t));
            }
        }
        for (off, data) in &writes[a..b] {
            apply(&mut base, *off, data);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_cuts() {
        let d = RecordingDisk::new(vec![0u8; 4096]);
        let before = d.start();
        d.write_at(&[1; 1024], 0).unwrap();
        d.sync().unwrap();
        d.write_at(&[2; 10], 2000).unwrap();
        d.write_at(&[3; 10], 3000).unwrap();
        d.sync().unwrap();
        let ev = d.stop();
        assert_eq!(ev.len(), 5);
        let imgs = crash_images(&before, &ev, 4, 7);
        // Prefixes 0..=3, one torn write (the 1024-byte one), 4 reorderings of epoch 1.
        assert_eq!(imgs.iter().filter(|(c, _)| matches!(c, Cut::Prefix(_))).count(), 4);
        let torn = imgs.iter().find(|(c, _)| matches!(c, Cut::Torn { .. })).unwrap();
        assert_eq!(&torn.1[..513], &[&[1u8; 512][..], &[0u8]].concat()[..]);
        for (c, i) in &imgs {
            if let Cut::Reordered { epoch, mask } = c {
                // The flushed epoch is always whole; the other's writes follow the mask.
                assert_eq!((*epoch, &i[..1024]), (1, &[1u8; 1024][..]));
                assert_eq!(i[2000] == 2, mask & 1 != 0);
                assert_eq!(i[3000] == 3, mask & 2 != 0);
            }
        }
    }
}
