//! Just enough raw FAT to read geometry, follow cluster chains (with loop
//! detection) and look up directories, for one fix-up `fatfs` 0.3 needs: it writes
//! long-name entries in front of the `.` and `..` entries of a new directory, which
//! fsck.fat rejects ("Expected a valid '.' entry in this slot"). After `fatfs`
//! creates a directory, [`fix_dot_entries`] moves `.` and `..` to the first two
//! slots, drops the stray long-name entries, and points `..` of a child of the root
//! at cluster 0, as the FAT specification asks. The whole-volume check a crash
//! calls for is [`crate::fatcheck`].

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::window::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// Volume geometry from the boot sector.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub bps: u64,
    pub spc: u64,
    pub fat_start: u64,
    pub root_dir_start: u64,
    pub root_entries: u64,
    pub first_data: u64,
    pub clusters: u32,
    pub root_cluster: u32,
    pub kind: Kind,
    /// Number of FAT copies and the bytes of each.
    pub fats: u64,
    pub fat_bytes: u64,
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

fn read_at(w: &mut Window, at: u64, buf: &mut [u8]) -> io::Result<()> {
    w.seek(SeekFrom::Start(at))?;
    w.read_exact(buf)
}

impl Geometry {
    pub fn read(w: &mut Window) -> io::Result<Self> {
        let mut b = [0u8; 512];
        read_at(w, 0, &mut b)?;
        let u16at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
        let u32at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as u64;
        let bps = u16at(11);
        let spc = b[13] as u64;
        let reserved = u16at(14);
        let fats = b[16] as u64;
        let root_entries = u16at(17);
        let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
        let fat_size = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
        if bps == 0 || spc == 0 || fats == 0 || fat_size == 0 {
            return Err(bad("boot sector geometry is zero"));
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let fat_start = reserved * bps;
        let root_dir_start = (reserved + fats * fat_size) * bps;
        let first_data_sector = reserved + fats * fat_size + root_dir_sectors;
        let clusters = total.checked_sub(first_data_sector).ok_or_else(|| bad("no data region"))? / spc;
        let kind = if clusters < 4085 {
            Kind::Fat12
        } else if clusters < 65525 {
            Kind::Fat16
        } else {
            Kind::Fat32
        };
        Ok(Geometry {
            bps,
            spc,
            fat_start,
            root_dir_start,
            root_entries,
            first_data: first_data_sector * bps,
            clusters: clusters as u32,
            root_cluster: if kind == Kind::Fat32 { u32at(44) as u32 } else { 0 },
            kind,
            fats,
            fat_bytes: fat_size * bps,
        })
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.bps * self.spc
    }

    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.first_data + (c as u64 - 2) * self.cluster_bytes()
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c < self.clusters + 2
    }

    /// The FAT entry of cluster `c`: `Some(next)` or `None` at the end of a chain.
    pub fn next(&self, w: &mut Window, c: u32) -> io::Result<Option<u32>> {
        let (at, len) = crate::fatcheck::entry_bytes(self.kind, c);
        let mut e = [0u8; 4];
        read_at(w, self.fat_start + at as u64, &mut e[..len])?;
        let v = crate::fatcheck::decode(self.kind, &e, c);
        if v >= crate::fatcheck::end_mark(self.kind) {
            return Ok(None);
        }
        if !self.valid(v) {
            return Err(bad("cluster chain points outside the volume"));
        }
        Ok(Some(v))
    }

    /// The clusters of a chain, refusing loops.
    pub fn chain(&self, w: &mut Window, first: u32) -> io::Result<Vec<u32>> {
        if !self.valid(first) {
            return Err(bad("first cluster outside the volume"));
        }
        let mut out = vec![first];
        let mut c = first;
        while let Some(n) = self.next(w, c)? {
            if out.len() > self.clusters as usize {
                return Err(bad("a cluster chain loops"));
            }
            out.push(n);
            c = n;
        }
        Ok(out)
    }

    /// Byte ranges of a directory: the fixed root of FAT12/16 (cluster 0), or a chain.
    fn dir_ranges(&self, w: &mut Window, cluster: u32) -> io::Result<Vec<(u64, u64)>> {
        if cluster == 0 {
            return Ok(vec![(self.root_dir_start, self.root_entries * 32)]);
        }
        Ok(self.chain(w, cluster)?.into_iter().map(|c| (self.cluster_offset(c), self.cluster_bytes())).collect())
    }

    fn first_cluster(&self, e: &[u8]) -> u32 {
        crate::fatcheck::first_cluster(self.kind, e)
    }

    /// Looks up `name` (case-insensitively, long or short name) in a directory;
    /// returns the entry's first cluster and whether it is a directory.
    pub fn lookup(&self, w: &mut Window, dir: u32, name: &str) -> io::Result<Option<(u32, bool)>> {
        let mut lfn: Vec<(u8, [u16; 13])> = Vec::new();
        for (start, len) in self.dir_ranges(w, dir)? {
            let mut buf = vec![0u8; len as usize];
            read_at(w, start, &mut buf)?;
            for e in buf.chunks_exact(32) {
                match e[0] {
                    0 => return Ok(None),
                    0xE5 => {
                        lfn.clear();
                        continue;
                    }
                    _ => {}
                }
                if e[11] & 0x3F == 0x0F {
                    let mut part = [0u16; 13];
                    let idx = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                    for (k, &i) in idx.iter().enumerate() {
                        part[k] = u16::from_le_bytes([e[i], e[i + 1]]);
                    }
                    lfn.push((e[0] & 0x1F, part));
                    continue;
                }
                let long: String = {
                    let mut parts = std::mem::take(&mut lfn);
                    parts.sort_by_key(|p| p.0);
                    let units: Vec<u16> =
                        parts.iter().flat_map(|p| p.1).take_while(|&u| u != 0 && u != 0xFFFF).collect();
                    String::from_utf16_lossy(&units)
                };
                let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_owned();
                let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_owned();
                let short = if ext.is_empty() { base } else { format!("{base}.{ext}") };
                if long.eq_ignore_ascii_case(name) || short.eq_ignore_ascii_case(name) {
                    return Ok(Some((self.first_cluster(e), e[11] & 0x10 != 0)));
                }
            }
        }
        Ok(None)
    }

    /// The first cluster of the directory at `path` (0 for a FAT12/16 root).
    pub fn dir_cluster(&self, w: &mut Window, path: &[&str]) -> io::Result<Option<u32>> {
        let mut c = self.root_cluster;
        for name in path {
            match self.lookup(w, c, name)? {
                Some((n, true)) => c = n,
                _ => return Ok(None),
            }
        }
        Ok(Some(c))
    }
}

/// Puts `.` and `..` in the first two slots of the directory at `path` (which
/// `fatfs` just created), as described in the module documentation.
pub fn fix_dot_entries(w: &mut Window, path: &[&str]) -> io::Result<()> {
    let g = Geometry::read(w)?;
    let Some(c) = g.dir_cluster(w, path)? else {
        return Err(bad("new directory not found"));
    };
    if c == 0 || c == g.root_cluster {
        return Ok(());
    }
    let parent = if path.len() <= 1 { 0 } else { g.dir_cluster(w, &path[..path.len() - 1])?.unwrap_or(0) };
    let at = g.cluster_offset(c);
    let mut head = vec![0u8; g.cluster_bytes() as usize];
    read_at(w, at, &mut head)?;
    let before = head.clone();
    crate::fatcheck::order_dots(g.kind, &mut head, c, parent).map_err(|why| bad(&format!("new directory: {why}")))?;
    if head != before {
        w.seek(SeekFrom::Start(at))?;
        w.write_all(&head)?;
    }
    Ok(())
}
