//! A FAT volume's geometry from its boot sector: where the FATs, the fixed root
//! directory and the clusters lie, and which FAT it is. Shared by the check at
//! open ([`crate::fatcheck`]) and lifeboat's own write path ([`crate::fatwrite`]).

use std::io::{self, Read, Seek, SeekFrom};

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
}
