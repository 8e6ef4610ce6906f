//! Raw edits of a FAT32 volume inside an image, for tests that make the damage
//! (or the layout) another writer leaves: FAT entries per copy, entries found by
//! their long names, an entry set moved so it spans two sectors. Written from
//! the FAT specification, independently of lifeboat's own FAT code.
#![allow(dead_code)]

/// A FAT32 volume at byte `off` of an image.
pub struct Fat {
    pub off: usize,
    pub bps: usize,
    pub spc: usize,
    pub fat_start: usize,
    pub fats: usize,
    pub fat_bytes: usize,
    pub first_data: usize,
    pub clusters: usize,
    pub root: u32,
}

/// One entry set: the offsets (in the image) of its slots, long-name slots
/// first, the short entry last.
#[derive(Clone, Debug)]
pub struct Set {
    pub slots: Vec<usize>,
    /// Index of the first slot in its directory, and the directory's first cluster.
    pub index: usize,
    pub dir: u32,
}

impl Set {
    pub fn short(&self) -> usize {
        *self.slots.last().unwrap()
    }
}

const PARTS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

fn u16at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}

fn u32at(b: &[u8], i: usize) -> usize {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize
}

impl Fat {
    pub fn read(img: &[u8], off: usize) -> Fat {
        let b = &img[off..off + 512];
        let bps = u16at(b, 11);
        let spc = b[13] as usize;
        assert_eq!(u16at(b, 22), 0, "not FAT32");
        let fat_size = u32at(b, 36);
        let fats = b[16] as usize;
        let fat_start = off + u16at(b, 14) * bps;
        let first_data = fat_start + fats * fat_size * bps;
        let total = u32at(b, 32);
        let data_sectors = total - (first_data - off) / bps;
        Fat {
            off,
            bps,
            spc,
            fat_start,
            fats,
            fat_bytes: fat_size * bps,
            first_data,
            clusters: data_sectors / spc,
            root: u32at(b, 44) as u32,
        }
    }

    pub fn cb(&self) -> usize {
        self.bps * self.spc
    }

    pub fn cluster(&self, c: u32) -> usize {
        self.first_data + (c as usize - 2) * self.cb()
    }

    pub fn get(&self, img: &[u8], copy: usize, c: u32) -> u32 {
        let at = self.fat_start + copy * self.fat_bytes + c as usize * 4;
        u32at(img, at) as u32 & 0x0FFF_FFFF
    }

    pub fn set(&self, img: &mut [u8], copy: usize, c: u32, v: u32) {
        let at = self.fat_start + copy * self.fat_bytes + c as usize * 4;
        img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_all(&self, img: &mut [u8], c: u32, v: u32) {
        for k in 0..self.fats {
            self.set(img, k, c, v);
        }
    }

    /// The FAT copy `copy` as bytes.
    pub fn copy<'a>(&self, img: &'a [u8], copy: usize) -> &'a [u8] {
        &img[self.fat_start + copy * self.fat_bytes..self.fat_start + (copy + 1) * self.fat_bytes]
    }

    pub fn chain(&self, img: &[u8], first: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = first;
        while c >= 2 && (c as usize) < self.clusters + 2 && out.len() <= self.clusters {
            out.push(c);
            c = self.get(img, 0, c);
        }
        out
    }

    pub fn free_cluster(&self, img: &[u8]) -> u32 {
        (2..self.clusters as u32 + 2).find(|&c| self.get(img, 0, c) == 0).expect("a free cluster")
    }

    /// The offsets of every slot of the directory starting at cluster `first`.
    pub fn slots(&self, img: &[u8], first: u32) -> Vec<usize> {
        self.chain(img, first)
            .iter()
            .flat_map(|&c| (0..self.cb() / 32).map(move |i| self.cluster(c) + i * 32))
            .collect()
    }

    /// The live entry sets of a directory with the names they answer to (the
    /// long name when a whole one matches the short entry, else the 8.3 name).
    pub fn sets(&self, img: &[u8], dir: u32) -> Vec<(String, Set)> {
        let slots = self.slots(img, dir);
        let mut out = Vec::new();
        let mut run: Vec<usize> = Vec::new();
        for (i, &o) in slots.iter().enumerate() {
            let e = &img[o..o + 32];
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                run.clear();
                continue;
            }
            if e[11] & 0x3F == 0x0F {
                if e[0] & 0x40 != 0 {
                    run.clear();
                }
                run.push(i);
                continue;
            }
            let sum = e[..11].iter().fold(0u8, |s, &b| s.rotate_right(1).wrapping_add(b));
            let whole = !run.is_empty()
                && run.iter().enumerate().all(|(k, &s)| {
                    let l = &img[slots[s]..slots[s] + 32];
                    (l[0] & 0x1F) as usize == run.len() - k && l[13] == sum
                });
            let name = if whole {
                let units: Vec<u16> = run
                    .iter()
                    .rev()
                    .flat_map(|&s| {
                        let at = slots[s];
                        PARTS.iter().map(move |&p| u16at(img, at + p) as u16)
                    })
                    .take_while(|&u| u != 0 && u != 0xFFFF)
                    .collect();
                String::from_utf16(&units).unwrap()
            } else {
                let base = String::from_utf8_lossy(&e[..8]).trim_end().to_owned();
                let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_owned();
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            };
            let first = if whole { run[0] } else { i };
            let set = Set { slots: (first..=i).map(|k| slots[k]).collect(), index: first, dir };
            out.push((name, set));
            run.clear();
        }
        out
    }

    /// The first cluster named by the short entry at `e`.
    pub fn start(&self, img: &[u8], e: usize) -> u32 {
        ((u16at(img, e + 20) << 16) | u16at(img, e + 26)) as u32
    }

    pub fn set_start(&self, img: &mut [u8], e: usize, c: u32) {
        img[e + 20..e + 22].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        img[e + 26..e + 28].copy_from_slice(&(c as u16).to_le_bytes());
    }

    pub fn size(&self, img: &[u8], e: usize) -> u32 {
        u32at(img, e + 28) as u32
    }

    pub fn set_size(&self, img: &mut [u8], e: usize, s: u32) {
        img[e + 28..e + 32].copy_from_slice(&s.to_le_bytes());
    }

    /// The set of `path` (names compared case-insensitively).
    pub fn find(&self, img: &[u8], path: &str) -> Option<Set> {
        let mut dir = self.root;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (k, p) in parts.iter().enumerate() {
            let (_, set) = self.sets(img, dir).into_iter().find(|(n, _)| n.eq_ignore_ascii_case(p))?;
            if k + 1 == parts.len() {
                return Some(set);
            }
            dir = self.start(img, set.short());
        }
        None
    }

    /// Moves the set of `path` to the end of its directory so that its first
    /// `before` slots end one sector and the rest begin the next (as another
    /// writer may place a set: FAT does not keep sets inside sectors), growing
    /// the directory by a zeroed cluster when it must. With `fill`, the rest
    /// of the second sector gets empty files (`PAD00.BIN`, ...), so no new set
    /// fits beside the moved one there. Returns the new set.
    pub fn span_two_sectors(&self, img: &mut [u8], path: &str, before: usize, fill: bool) -> Set {
        let set = self.find(img, path).unwrap_or_else(|| panic!("{path}: not found"));
        let k = set.slots.len();
        assert!(before >= 1 && before < k, "{path}: {k} slots cannot put {before} before the boundary");
        let per_sector = self.bps / 32;
        let bytes: Vec<Vec<u8>> = set.slots.iter().map(|&o| img[o..o + 32].to_vec()).collect();
        for &o in &set.slots {
            img[o] = 0xE5;
        }
        let mut slots = self.slots(img, set.dir);
        let end = slots.iter().position(|&o| img[o] == 0).unwrap_or(slots.len());
        // The first slot at or past the end marker from which `before` slots
        // reach a sector's end.
        let at = end + (per_sector - (end + before) % per_sector) % per_sector;
        while slots.len() < (at + before).div_ceil(per_sector) * per_sector + per_sector {
            let chain = self.chain(img, set.dir);
            let c = self.free_cluster(img);
            let o = self.cluster(c);
            img[o..o + self.cb()].fill(0);
            self.set_all(img, c, 0x0FFF_FFFF);
            self.set_all(img, *chain.last().unwrap(), c);
            // FSInfo's free count, one less.
            let fsi = self.off + u16at(img, self.off + 48) * self.bps;
            let free = u32at(img, fsi + 488) as u32;
            if free != u32::MAX {
                img[fsi + 488..fsi + 492].copy_from_slice(&(free - 1).to_le_bytes());
            }
            slots = self.slots(img, set.dir);
        }
        for &o in &slots[end..at] {
            img[o..o + 32].fill(0);
            img[o] = 0xE5;
        }
        for (j, b) in bytes.iter().enumerate() {
            let o = slots[at + j];
            img[o..o + 32].copy_from_slice(b);
        }
        if fill {
            let sector_end = at + before + per_sector;
            for (n, i) in (at + k..sector_end).enumerate() {
                let o = slots[i];
                let e = &mut img[o..o + 32];
                e.fill(0);
                e[..11].copy_from_slice(format!("PAD{n:02}   BIN").as_bytes());
                e[11] = 0x20;
                // 1980-01-01, 00:00: a valid DOS date.
                for d in [16, 18, 24] {
                    e[d..d + 2].copy_from_slice(&0x21u16.to_le_bytes());
                }
            }
        }
        let moved = Set { slots: (at..at + k).map(|i| slots[i]).collect(), index: at, dir: set.dir };
        assert_ne!(moved.slots[before - 1] / self.bps, moved.slots[before] / self.bps, "the set spans two sectors");
        moved
    }

    /// Sets or clears the dirty flag in the boot sector.
    pub fn set_dirty(&self, img: &mut [u8], dirty: bool) {
        let at = self.off + 0x41;
        img[at] = if dirty { img[at] | 1 } else { img[at] & !1 };
    }

    pub fn dirty(&self, img: &[u8]) -> bool {
        img[self.off + 0x41] & 1 != 0
    }
}
