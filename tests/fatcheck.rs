//! Reconciliation of a FAT volume at open ([`lifeboat_esp::fatcheck`]), judged
//! by `fsck.fat -n` (strictly: exit status 0, dirty flag included) and by the
//! files reading back. Each test makes on a volume lifeboat populated, on FAT32
//! and on FAT16, one kind of what lifeboat's own interrupted writes leave —
//! leaked clusters, FAT copies that differ in clusters in flight, `.`/`..` out
//! of place, a torn rename, an orphaned long name, the dirty flag — and checks
//! that opening the volume repairs it and a write afterwards keeps it whole; or
//! one kind of damage they cannot leave — a directory or a file on a cluster
//! the FAT calls free, a size that disagrees with its chain, a cross-link — and
//! checks that the volume is read and never written, byte for byte.

mod common;

use std::fs;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use lifeboat_esp::fat::{format, FatVolume};
use lifeboat_esp::window::{MemBacking, Window};
use lifeboat_esp::Volume;

/// A FAT image (32 MiB is FAT32 with 512-byte clusters here; 16 MiB is FAT16)
/// populated through lifeboat's own FAT backend.
fn populated(mib: usize) -> Vec<u8> {
    let mem = Arc::new(MemBacking(Mutex::new(vec![0u8; mib << 20])));
    let len = (mib << 20) as u64;
    format(Window::new(mem.clone(), 0, len, true), *b"LIFEBOAT   ", 0x1234_5678).unwrap();
    {
        let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
        v.create_dir_all("EFI/Linux").unwrap();
        v.create_dir_all("EFI/empty").unwrap();
        v.create_dir_all("loader/entries").unwrap();
        v.write_file("EFI/Linux/a.efi", &mut &pattern(5000, 1)[..]).unwrap();
        v.write_file("big.bin", &mut &pattern(100_000, 2)[..]).unwrap();
        v.write_file("loader/entries/x.conf", &mut &b"title x\nlinux /EFI/Linux/a.efi\n"[..]).unwrap();
        v.close().unwrap();
    }
    let img = mem.0.lock().unwrap().clone();
    img
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// What a test needs of the geometry.
struct Geo {
    bps: usize,
    spc: usize,
    fat_start: usize,
    fats: usize,
    fat_bytes: usize,
    first_data: usize,
    fat32: bool,
}

fn geo(img: &[u8]) -> Geo {
    let u16at = |i: usize| u16::from_le_bytes([img[i], img[i + 1]]) as usize;
    let u32at = |i: usize| u32::from_le_bytes([img[i], img[i + 1], img[i + 2], img[i + 3]]) as usize;
    let bps = u16at(11);
    let fat_size = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
    let fats = img[16] as usize;
    let root_dir_bytes = (u16at(17) * 32).div_ceil(bps) * bps;
    let fat_start = u16at(14) * bps;
    Geo {
        bps,
        spc: img[13] as usize,
        fat_start,
        fats,
        fat_bytes: fat_size * bps,
        first_data: fat_start + fats * fat_size * bps + root_dir_bytes,
        fat32: u16at(22) == 0,
    }
}

impl Geo {
    fn cluster(&self, c: usize) -> usize {
        self.first_data + (c - 2) * self.bps * self.spc
    }
    fn get(&self, img: &[u8], copy: usize, c: usize) -> u32 {
        let at = self.fat_start + copy * self.fat_bytes;
        if self.fat32 {
            u32::from_le_bytes(img[at + c * 4..at + c * 4 + 4].try_into().unwrap()) & 0x0FFF_FFFF
        } else {
            u16::from_le_bytes(img[at + c * 2..at + c * 2 + 2].try_into().unwrap()) as u32
        }
    }
    fn set(&self, img: &mut [u8], copy: usize, c: usize, v: u32) {
        let at = self.fat_start + copy * self.fat_bytes;
        if self.fat32 {
            img[at + c * 4..at + c * 4 + 4].copy_from_slice(&v.to_le_bytes());
        } else {
            img[at + c * 2..at + c * 2 + 2].copy_from_slice(&(v as u16).to_le_bytes());
        }
    }
    fn set_all(&self, img: &mut [u8], c: usize, v: u32) {
        for k in 0..self.fats {
            self.set(img, k, c, v);
        }
    }
    fn eoc(&self) -> u32 {
        if self.fat32 {
            0x0FFF_FFFF
        } else {
            0xFFFF
        }
    }
    fn free_clusters(&self, img: &[u8]) -> Vec<usize> {
        let n = (img.len() - self.first_data) / (self.bps * self.spc);
        (2..n + 2).filter(|&c| self.get(img, 0, c) == 0).collect()
    }
}

/// The byte offset of the live short entry named `short` (11 bytes, 8.3 padded).
fn entry(img: &[u8], short: &[u8; 11]) -> usize {
    (0..img.len() / 32)
        .map(|i| i * 32)
        .find(|&o| &img[o..o + 11] == short && img[o + 11] & 0x3F != 0x0F)
        .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(short)))
}

fn start_of(img: &[u8], e: usize) -> usize {
    (u16::from_le_bytes([img[e + 20], img[e + 21]]) as usize) << 16
        | u16::from_le_bytes([img[e + 26], img[e + 27]]) as usize
}

/// `fsck.fat -n` on the image: Ok when it exits 0 and says nothing but its
/// version and the summary line (it reports a wrong long-name checksum and
/// still exits 0), or its report.
fn fsck(img: &[u8]) -> Result<(), String> {
    let s = Scratch::new("fatcheck");
    let p = s.join("v.fat");
    fs::write(&p, img).unwrap();
    let o = Command::new("fsck.fat").arg("-n").arg(&p).output().expect("fsck.fat is missing (dosfstools)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let quiet =
        out.lines().filter(|l| !l.trim().is_empty()).all(|l| l.starts_with("fsck.fat ") || l.contains(" files, "));
    if o.status.success() && quiet {
        Ok(())
    } else {
        Err(out)
    }
}

/// Opens the damaged image (which reconciles it), writes one new file, closes;
/// returns the image, what was repaired, and the volume reopened for reading.
fn open_and_write(img: Vec<u8>) -> (Vec<u8>, lifeboat_esp::fatcheck::Reconciled) {
    let len = img.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(img)));
    let rec;
    {
        let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
        rec = v.reconciled().clone();
        v.write_file("EFI/new.bin", &mut &pattern(20_000, 3)[..]).unwrap();
        v.close().unwrap();
    }
    let img = mem.0.lock().unwrap().clone();
    (img, rec)
}

fn read(img: &[u8], path: &str) -> Vec<u8> {
    let len = img.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(img.to_vec())));
    let mut v = FatVolume::open(Window::new(mem, 0, len, false), "r").unwrap();
    v.read(path).unwrap()
}

fn list(img: &[u8], dir: &str) -> Vec<String> {
    let len = img.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(img.to_vec())));
    let mut v = FatVolume::open(Window::new(mem, 0, len, false), "r").unwrap();
    let mut names: Vec<String> = v.list(dir).unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    names
}

/// The files every repaired volume must still hold.
fn intact(img: &[u8]) {
    assert_eq!(read(img, "EFI/Linux/a.efi"), pattern(5000, 1));
    assert_eq!(read(img, "big.bin"), pattern(100_000, 2));
    assert_eq!(read(img, "loader/entries/x.conf"), b"title x\nlinux /EFI/Linux/a.efi\n");
    assert_eq!(read(img, "EFI/new.bin"), pattern(20_000, 3));
}

const SIZES: [usize; 2] = [32, 16];

#[test]
fn a_populated_volume_is_clean_and_opening_it_writes_nothing() {
    for mib in SIZES {
        let img = populated(mib);
        fsck(&img).unwrap();
        let len = img.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(img.clone())));
        {
            let v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
            assert!(!v.reconciled().changed(), "{:?}", v.reconciled());
            assert!(v.reconciled().damage.is_empty());
        }
        assert!(*mem.0.lock().unwrap() == img, "opening a clean volume changed it");
    }
}

/// Opens `img` for writing, requires damage whose text holds `want`, every
/// write refused with [`lifeboat_esp::Error::Damaged`], and the image
/// unchanged byte for byte.
fn never_written(img: Vec<u8>, want: &str) {
    let before = img.clone();
    let len = img.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(img)));
    {
        let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
        let rec = v.reconciled().clone();
        let text: Vec<String> = rec.damage.iter().map(|d| d.to_string()).collect();
        assert!(text.iter().any(|d| d.contains(want)), "want {want:?} in {text:?}");
        for e in [
            v.write_file("EFI/new.bin", &mut &b"x"[..]).unwrap_err(),
            v.remove("EFI/Linux/a.efi").unwrap_err(),
            v.rename("big.bin", "big2.bin").unwrap_err(),
            v.create_dir_all("new/dir").unwrap_err(),
        ] {
            assert!(matches!(e, lifeboat_esp::Error::Damaged { .. }), "{e}");
        }
        v.close().unwrap();
    }
    let after = mem.0.lock().unwrap().clone();
    let diff: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
    assert!(diff.is_empty(), "a damaged volume was written at {:?}", &diff[..diff.len().min(8)]);
}

#[test]
fn a_directory_on_a_cluster_the_fat_calls_free_is_damage_and_never_written() {
    // lifeboat's writer marks a directory's cluster in every FAT copy before
    // the entry that links it: a free one is damage (a zeroed FAT sector),
    // and claiming it would lose whatever the rest of the chain held.
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        let c = start_of(&img, entry(&img, b"LINUX      "));
        assert_ne!(g.get(&img, 0, c), 0);
        g.set_all(&mut img, c, 0);
        assert!(fsck(&img).is_err(), "the damage is visible to fsck.fat");
        never_written(img.clone(), &format!("/EFI/Linux: its first cluster {c} is free in the FAT"));
        // Read through it as it is.
        assert_eq!(read(&img, "EFI/Linux/a.efi"), pattern(5000, 1));
    }
}

#[test]
fn zeroed_fat_entries_are_damage_and_no_entry_is_removed() {
    // What a FAT sector zeroed in both copies does to a file: its first
    // cluster's entry free (it was taken for an interrupted deletion and the
    // file removed, its other clusters freed as leaked), or a middle entry
    // free (the file was cut there and the rest freed). lifeboat's deletions
    // remove the entry before they free a cluster, so neither is its own.
    for mib in SIZES {
        let img = populated(mib);
        let g = geo(&img);
        let big = start_of(&img, entry(&img, b"BIG     BIN"));
        let second = g.get(&img, 0, big) as usize;
        let third = g.get(&img, 0, second) as usize;
        let mut first_free = img.clone();
        g.set_all(&mut first_free, big, 0);
        never_written(first_free, "/big.bin: its first cluster");
        let mut middle_free = img.clone();
        g.set_all(&mut middle_free, second, 0);
        g.set_all(&mut middle_free, third, 0);
        never_written(
            middle_free,
            &format!("/big.bin: its cluster chain runs into cluster {second}, free in the FAT, after 1 cluster(s)"),
        );
        // A whole FAT sector of both copies zeroed (the review's case):
        // every file and directory in it is damage, none is removed.
        let mut sector = img.clone();
        for k in 0..g.fats {
            let at = g.fat_start + k * g.fat_bytes;
            sector[at..at + g.bps].fill(0);
            // The reserved entries 0 and 1 stay (a FAT without them is no FAT).
            sector[at..at + 8].copy_from_slice(&img[at..at + 8]);
        }
        never_written(sector, "is free in the FAT");
    }
}

#[test]
fn leaked_clusters_are_freed_and_the_free_count_rewritten() {
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        let free = g.free_clusters(&img);
        // A chain of three and seven single clusters no entry reaches.
        let leak: Vec<usize> = free.iter().rev().step_by(5).take(10).copied().collect();
        g.set_all(&mut img, leak[0], leak[1] as u32);
        g.set_all(&mut img, leak[1], leak[2] as u32);
        for &c in &leak[2..] {
            g.set_all(&mut img, c, g.eoc());
        }
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert_eq!(rec.freed, 10, "{rec:?}");
        assert_eq!(rec.fsinfo_fixed, g.fat32, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        intact(&img);
    }
}

#[test]
fn sizes_that_disagree_with_their_chains_are_damage_never_cut() {
    // fsck.fat's rules cut a file to its chain and free a chain past its
    // size; lifeboat's writer never leaves either (it writes the entry with
    // the size of the chain it completed), so both are damage, left as they are.
    for mib in SIZES {
        let img = populated(mib);
        let g = geo(&img);
        let cb = g.bps * g.spc;
        // big.bin: one more cluster allocated past its size.
        let mut longer = img.clone();
        let big = entry(&longer, b"BIG     BIN");
        let mut chain = vec![start_of(&longer, big)];
        while g.get(&longer, 0, *chain.last().unwrap()) < g.eoc() - 7 {
            chain.push(g.get(&longer, 0, *chain.last().unwrap()) as usize);
        }
        assert_eq!(chain.len(), 100_000usize.div_ceil(cb));
        let spare = g.free_clusters(&longer)[100];
        g.set_all(&mut longer, *chain.last().unwrap(), spare as u32);
        g.set_all(&mut longer, spare, g.eoc());
        assert!(fsck(&longer).is_err());
        never_written(longer.clone(), "/big.bin: its size (100000 bytes) needs");
        assert_eq!(read(&longer, "big.bin"), pattern(100_000, 2));
        // x.conf: a size beyond its one cluster.
        let mut shorter = img.clone();
        let x = entry(&shorter, b"X~1     CON");
        shorter[x + 28..x + 32].copy_from_slice(&((cb * 3) as u32).to_le_bytes());
        assert!(fsck(&shorter).is_err());
        never_written(
            shorter,
            &format!("/loader/entries/x.conf: its size ({} bytes) needs 3 cluster(s), its chain has 1", cb * 3),
        );
    }
}

#[test]
fn fat_copies_that_differ_are_made_equal_to_the_first() {
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        let c = g.free_clusters(&img)[7];
        g.set(&mut img, 1, c, g.eoc());
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert_eq!(rec.fats_mirrored, 1, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        let n = g.fat_bytes;
        assert!(img[g.fat_start..g.fat_start + n] == img[g.fat_start + n..g.fat_start + 2 * n]);
        intact(&img);
    }
}

#[test]
fn dot_entries_behind_long_name_slots_are_put_first() {
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        let c = start_of(&img, entry(&img, b"EMPTY      "));
        let at = g.cluster(c);
        // What fatfs writes for a new directory and a crash keeps: a long-name
        // slot before `.` and another before `..`.
        let (dot, dotdot) = (img[at..at + 32].to_vec(), img[at + 32..at + 64].to_vec());
        let mut lfn = vec![0u8; 32];
        lfn[0] = 0x41;
        lfn[1] = b'.';
        lfn[11] = 0x0F;
        lfn[13] = 0x77;
        img[at..at + 32].copy_from_slice(&lfn);
        img[at + 32..at + 64].copy_from_slice(&dot);
        img[at + 64..at + 96].copy_from_slice(&lfn);
        img[at + 96..at + 128].copy_from_slice(&dotdot);
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert_eq!(rec.dots_fixed, 1, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        assert!(list(&img, "EFI/empty").is_empty());
        intact(&img);
    }
}

/// `img` with one more file written through lifeboat's FAT backend.
fn with_file(img: Vec<u8>, path: &str, data: &[u8]) -> Vec<u8> {
    let len = img.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(img)));
    let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
    v.write_file(path, &mut &data[..]).unwrap();
    v.close().unwrap();
    let img = mem.0.lock().unwrap().clone();
    img
}

#[test]
fn a_torn_rename_of_lifeboat_keeps_its_long_name_and_a_broken_long_name_goes() {
    for mib in SIZES {
        // The long-name slots before the short entry carry another checksum:
        // lifeboat's rename of `k.efi.lbtmp` to `k.efi.lbnew` rewrote the short
        // entry and the long name in different sectors and only one reached
        // the disk. Both name the file.
        let img = with_file(populated(mib), "EFI/Linux/kernel-image.efi.lbnew", b"complete kernel");
        let mut img = img;
        let e = entry(&img, b"KERNEL~1LBN");
        assert_eq!(img[e - 32 + 11], 0x0F);
        let k = (1..8).take_while(|k| img[e - 32 * k + 11] == 0x0F).count();
        for s in 1..=k {
            img[e - 32 * s + 13] ^= 0x55;
        }
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert_eq!(rec.long_names_rejoined, 1, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        // Rejoined, the complete `.lbnew` is known for what it is: the open
        // completed the replacement it waited for.
        assert_eq!(rec.interrupted, ["EFI/Linux/kernel-image.efi.lbnew"], "{rec:?}");
        assert_eq!(read(&img, "EFI/Linux/kernel-image.efi"), b"complete kernel");
        assert!(!list(&img, "EFI/Linux").iter().any(|n| n.ends_with(".lbnew")));
        intact(&img);

        // A long name whose sequence is broken (its first slot lost the
        // "last part" mark) belongs to nothing: deleted, the file keeps its
        // data under its short name.
        let mut img = populated(mib);
        let e = entry(&img, b"A       EFI");
        img[e - 32] &= !0x40;
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert_eq!(rec.slots_deleted, 1, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        assert_eq!(read(&img, "EFI/Linux/A.EFI"), pattern(5000, 1));
        assert_eq!(list(&img, "EFI/Linux"), ["A.EFI"]);
    }
}

#[test]
fn another_tools_stale_long_name_is_left_alone() {
    for mib in SIZES {
        // A whole long name whose checksum is not its entry's, with nothing of
        // lifeboat's in either name: what an 8.3-only rename by another tool
        // leaves. Every reader ignores it; it is not lifeboat's to change.
        let mut img = populated(mib);
        let e = entry(&img, b"A       EFI");
        img[e - 32 + 13] ^= 0x55;
        let before = img.clone();
        let len = img.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(img)));
        {
            let v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
            assert!(!v.reconciled().changed(), "{:?}", v.reconciled());
        }
        assert!(*mem.0.lock().unwrap() == before, "the stale long name was changed");
    }
}

#[test]
fn the_dirty_flag_of_an_interrupted_writer_is_cleared() {
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        let at = if g.fat32 { 0x41 } else { 0x25 };
        img[at] |= 1;
        assert!(fsck(&img).is_err());
        let (img, rec) = open_and_write(img);
        assert!(rec.dirty_cleared, "{rec:?}");
        assert_eq!(img[at] & 1, 0);
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        intact(&img);
    }
}

#[test]
fn a_cross_linked_volume_is_read_but_never_written() {
    for mib in SIZES {
        let mut img = populated(mib);
        let g = geo(&img);
        // x.conf names a.efi's first cluster (and size) too; one cluster is
        // leaked, and the dirty flag set. The free and the flag would be
        // repairs on a whole volume; on a damaged one nothing is written at all.
        let a = start_of(&img, entry(&img, b"A       EFI"));
        let ae = entry(&img, b"A       EFI");
        let x = entry(&img, b"X~1     CON");
        img[x + 26..x + 28].copy_from_slice(&(a as u16).to_le_bytes());
        img[x + 20..x + 22].copy_from_slice(&((a >> 16) as u16).to_le_bytes());
        let size = img[ae + 28..ae + 32].to_vec();
        img[x + 28..x + 32].copy_from_slice(&size);
        img[if g.fat32 { 0x41 } else { 0x25 }] |= 1;
        let leak = g.free_clusters(&img)[50];
        g.set_all(&mut img, leak, g.eoc());
        let before = img.clone();
        let len = img.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(img)));
        {
            let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
            let rec = v.reconciled().clone();
            assert!(!rec.changed(), "{rec:?}");
            assert!(rec.damage.iter().any(|d| d.to_string().contains("cross-linked")), "{rec:?}");
            // Reading still works; every write refuses, naming the damage and the mend.
            assert_eq!(v.read("EFI/Linux/a.efi").unwrap(), pattern(5000, 1));
            for e in [
                v.write_file("EFI/new.bin", &mut &b"x"[..]).unwrap_err(),
                v.remove("big.bin").unwrap_err(),
                v.rename("big.bin", "big2.bin").unwrap_err(),
                v.create_dir_all("new/dir").unwrap_err(),
            ] {
                assert!(matches!(e, lifeboat_esp::Error::Damaged { .. }), "{e}");
                let m = e.to_string();
                assert!(
                    m.contains("cross-linked") && m.contains("disk check t --repair") && m.contains("fsck.fat -a"),
                    "{m}"
                );
            }
            v.close().unwrap();
        }
        let after = mem.0.lock().unwrap().clone();
        let diff: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
        assert!(diff.is_empty(), "a damaged volume was written at {:?}", &diff[..diff.len().min(8)]);
    }
}

#[test]
fn the_cli_says_what_it_repaired_before_it_writes() {
    let s = Scratch::new("fatcheck-cli");
    let img = s.join("d.img");
    let img = img.to_str().unwrap();
    ok(&["disk", "create", img, "--size", "64M", "--esp-size", "48M", "--root-size", "0"]);
    let f = s.join("f");
    fs::write(&f, b"kernel bytes").unwrap();
    let dest = format!("{img}:esp:/EFI/Linux/a.efi");
    ok(&["disk", "put", f.to_str().unwrap(), &dest]);
    // An interrupted writer: the dirty flag set and one cluster leaked.
    let esp = lifeboat_esp::Disk::open(std::path::Path::new(img), false)
        .unwrap()
        .find(lifeboat_esp::PartitionKind::Esp)
        .unwrap()
        .start as usize;
    let mut bytes = fs::read(img).unwrap();
    let g = geo(&bytes[esp..]);
    let leak = g.free_clusters(&bytes[esp..esp + (48 << 20)])[10];
    g.set_all(&mut bytes[esp..], leak, g.eoc());
    bytes[esp + 0x41] |= 1;
    fs::write(img, &bytes).unwrap();
    let o = run(&["disk", "put", f.to_str().unwrap(), &format!("{img}:esp:/EFI/Linux/b.efi")]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 leaked cluster(s) freed"), "{err}");
    assert!(err.contains("dirty flag of an interrupted writer cleared"), "{err}");
    let bytes = fs::read(img).unwrap();
    fsck(&bytes[esp..esp + (48 << 20)]).unwrap();
    let o = run(&["disk", "put", f.to_str().unwrap(), &format!("{img}:esp:/EFI/Linux/c.efi")]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("checked at open"), "nothing left to repair");
}

/// Runs a tool that must be there (setup installs it), failing loudly if not.
fn tool(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} is missing: {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn volumes_other_tools_made_are_left_byte_for_byte() {
    // FAT12, FAT16 and FAT32 made by mkfs.fat and written by mtools (long and
    // short names, nested directories, hidden and system attributes, a label):
    // another OS's clean volume has nothing to reconcile.
    let s = Scratch::new("fatcheck-foreign");
    let big = s.join("big");
    fs::write(&big, pattern(70_000, 9)).unwrap();
    let small = s.join("small");
    fs::write(&small, b"hi\n").unwrap();
    for (bits, kib) in [("12", "2000"), ("16", "20000"), ("32", "40000")] {
        let img = s.join(&format!("v{bits}.img"));
        let i = img.to_str().unwrap();
        tool("mkfs.fat", &["-F", bits, "-n", "FOREIGN", "-C", i, kib]);
        tool("mmd", &["-i", i, "::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot", "::/A Long Directory Name"]);
        tool("mmd", &["-i", i, "::/A Long Directory Name/deeper still"]);
        tool("mcopy", &["-i", i, big.to_str().unwrap(), "::/EFI/Microsoft/Boot/bootmgfw.efi"]);
        tool("mcopy", &["-i", i, small.to_str().unwrap(), "::/A Long Directory Name/deeper still/Some Long Name.txt"]);
        tool("mcopy", &["-i", i, small.to_str().unwrap(), "::/UPPER.TXT"]);
        tool("mattrib", &["-i", i, "+h", "+s", "::/UPPER.TXT"]);
        let before = fs::read(&img).unwrap();
        fsck(&before).unwrap_or_else(|e| panic!("FAT{bits} as made:\n{e}"));
        let len = before.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(before.clone())));
        {
            let v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "foreign").unwrap();
            assert!(!v.reconciled().changed(), "FAT{bits}: {:?}", v.reconciled());
            assert!(v.reconciled().damage.is_empty(), "FAT{bits}: {:?}", v.reconciled());
        }
        assert!(*mem.0.lock().unwrap() == before, "FAT{bits}: opening another tool's volume changed it");
    }
}

#[test]
fn a_fat_copy_missing_allocations_takes_them_from_the_other() {
    for mib in SIZES {
        // big.bin's chain is free in the first FAT and allocated in the second:
        // an allocation the other copy has not had yet (another writer's order).
        // Walking the first FAT alone took big.bin for an interrupted deletion
        // and removed it; the copies' union keeps it.
        let mut img = populated(mib);
        let g = geo(&img);
        let mut c = start_of(&img, entry(&img, b"BIG     BIN"));
        while c < g.eoc() as usize - 7 {
            let next = g.get(&img, 0, c) as usize;
            g.set(&mut img, 0, c, 0);
            c = next;
        }
        assert!(fsck(&img).is_err());
        // Opened read-only, it reads through the union and writes nothing.
        let mem = Arc::new(MemBacking(Mutex::new(img.clone())));
        {
            let mut v = FatVolume::open(Window::new(mem.clone(), 0, img.len() as u64, false), "r").unwrap();
            assert_eq!(v.reconciled().fats_mirrored, 1, "{:?}", v.reconciled());
            assert_eq!(v.read("big.bin").unwrap(), pattern(100_000, 2));
        }
        assert!(*mem.0.lock().unwrap() == img, "a read-only open wrote");
        let (img, rec) = open_and_write(img);
        assert!(rec.damage.is_empty(), "{rec:?}");
        assert_eq!(rec.fats_mirrored, 1, "{rec:?}");
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        intact(&img);
    }
}

#[test]
fn fat_copies_that_disagree_with_neither_consistent_are_left_as_they_are() {
    for mib in SIZES {
        // Each copy has a link of its own into another file's chain: which one
        // is right cannot be told, so nothing is written, not even by --repair.
        let mut img = populated(mib);
        let g = geo(&img);
        let a = start_of(&img, entry(&img, b"A       EFI"));
        let big = start_of(&img, entry(&img, b"BIG     BIN"));
        g.set(&mut img, 0, a, big as u32);
        g.set(&mut img, 1, big, a as u32);
        let before = img.clone();
        let len = img.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(img)));
        {
            let mut v = FatVolume::open(Window::new(mem.clone(), 0, len, true), "t").unwrap();
            let d = v.damage().to_vec();
            assert!(matches!(d.as_slice(), [lifeboat_esp::fatcheck::Damage::FatsDisagree { .. }]), "{d:?}");
            assert!(v.write_file("x", &mut &b"x"[..]).is_err());
            v.close().unwrap();
        }
        let mut w = Window::new(mem.clone(), 0, len, true);
        let done = lifeboat_esp::fatcheck::repair(&mut w).unwrap();
        assert_eq!(done.fat_taken, None, "{done:?}");
        assert!(!done.reconciled.damage.is_empty());
        drop(w);
        assert!(*mem.0.lock().unwrap() == before, "a volume no copy of which is consistent was written");
    }
}

#[test]
fn a_removal_never_frees_a_cluster_another_entry_names() {
    for mib in SIZES {
        // Two entries of one directory on one chain (another writer's rename,
        // cut between its writes). lifeboat's writer (below the check at open,
        // which refuses such a volume) removes the one without freeing the
        // chain the other names: the survivor reads back and fsck.fat is silent.
        let mut img = populated(mib);
        let e = entry(&img, b"A       EFI");
        let mut dup = img[e..e + 32].to_vec();
        dup[..11].copy_from_slice(b"B       EFI");
        // The directory's first free slot after its entries.
        let mut at = e + 32;
        while img[at] != 0 {
            at += 32;
        }
        img[at..at + 32].copy_from_slice(&dup);
        let len = img.len() as u64;
        let mem = Arc::new(MemBacking(Mutex::new(img)));
        {
            let mut w = Window::new(mem.clone(), 0, len, true);
            let mut wr = lifeboat_esp::fatwrite::FatWriter::load(&mut w).unwrap();
            wr.remove(&mut w, &["EFI", "Linux", "B.EFI"]).unwrap();
            wr.finish(&mut w).unwrap();
            w.sync().unwrap();
        }
        let img = mem.0.lock().unwrap().clone();
        fsck(&img).unwrap_or_else(|e| panic!("{mib} MiB:\n{e}"));
        assert_eq!(read(&img, "EFI/Linux/a.efi"), pattern(5000, 1));
        assert_eq!(list(&img, "EFI/Linux"), ["a.efi"]);
    }
}
