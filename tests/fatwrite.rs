//! lifeboat's own FAT write path ([`lifeboat_esp::fatwrite`]) judged by other
//! tools: on FAT12, FAT16 and FAT32 volumes made by `mkfs.fat`, lifeboat creates
//! nested directories, a directory that must grow past its first cluster, 8.3 and
//! long names (one longer than a sector's worth of slots), files of zero, one and
//! many clusters, renames in place and removals; then `fsck.fat -n` must have
//! nothing to say, `mdir` must list exactly the names lifeboat wrote, and `mtype`
//! must read every file back byte for byte.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use common::*;
use lifeboat_esp::fat::FatVolume;
use lifeboat_esp::window::Window;
use lifeboat_esp::Volume;

fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} is missing: {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `fsck.fat -n` exits 0 and says nothing but its version and summary.
fn fsck_silent(img: &str, what: &str) {
    let o = Command::new("fsck.fat").args(["-n", img]).output().expect("fsck.fat is missing (dosfstools)");
    let out = String::from_utf8_lossy(&o.stdout);
    let quiet =
        out.lines().filter(|l| !l.trim().is_empty()).all(|l| l.starts_with("fsck.fat ") || l.contains(" files, "));
    assert!(o.status.success() && quiet, "{what}: fsck.fat -n:\n{out}");
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)).collect()
}

/// Every file under `dir` on the image, with its content, read by mtools.
fn read_back(img: &str, dir: &str, out: &mut BTreeMap<String, Vec<u8>>, s: &Scratch) {
    let listing = tool("mdir", &["-i", img, "-b", &format!("::{dir}")]);
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        let path = line.trim_end_matches('/').trim_start_matches("::").to_owned();
        if line.ends_with('/') {
            read_back(img, &path, out, s);
        } else {
            let local = s.join("one");
            tool("mcopy", &["-n", "-o", "-i", img, &format!("::{path}"), local.to_str().unwrap()]);
            out.insert(path, fs::read(&local).unwrap());
        }
    }
}

#[test]
fn what_lifeboat_writes_other_tools_read() {
    let s = Scratch::new("fatwrite");
    let long = format!("{}.conf", "a-very-long-entry-name-".repeat(9));
    assert!(long.len() > 200, "a name needing more slots than one sector holds");
    for (bits, kib) in [("12", "2000"), ("16", "20000"), ("32", "40000")] {
        let img = s.join(&format!("v{bits}.img"));
        let i = img.to_str().unwrap();
        tool("mkfs.fat", &["-F", bits, "-n", "TEST", "-C", i, kib]);
        let len = fs::metadata(&img).unwrap().len();
        let file = fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        {
            let mut v = FatVolume::open(Window::new(std::sync::Arc::new(file), 0, len, true), "t").unwrap();
            v.create_dir_all("EFI/BOOT").unwrap();
            v.create_dir_all("loader/entries").unwrap();
            v.create_dir_all("4c424f41/6.1.0-28-amd64").unwrap();
            fn put(v: &mut FatVolume, want: &mut BTreeMap<String, Vec<u8>>, p: &str, data: Vec<u8>) {
                v.write_file(p, &mut &data[..]).unwrap();
                want.insert(format!("/{p}"), data);
            }
            put(&mut v, &mut want, "EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1));
            put(&mut v, &mut want, "4c424f41/6.1.0-28-amd64/linux", pattern(5_000, 2));
            put(&mut v, &mut want, "4c424f41/6.1.0-28-amd64/initrd", Vec::new());
            put(&mut v, &mut want, "loader/loader.conf", b"timeout 3\n".to_vec());
            put(&mut v, &mut want, &format!("loader/entries/{long}"), b"title long\n".to_vec());
            // More entries than a 512-byte cluster (FAT32 here) or any cluster
            // of these sizes holds: the directory grows.
            for k in 0..150 {
                put(
                    &mut v,
                    &mut want,
                    &format!("loader/entries/lifeboat-{k:03}+3-0.conf"),
                    format!("title {k}\n").into_bytes(),
                );
            }
            // Renames in place (the boot counter dropped) and removals.
            for k in (0..150).step_by(3) {
                let from = format!("loader/entries/lifeboat-{k:03}+3-0.conf");
                let to = format!("loader/entries/lifeboat-{k:03}.conf");
                v.rename(&from, &to).unwrap();
                let data = want.remove(&format!("/{from}")).unwrap();
                want.insert(format!("/{to}"), data);
            }
            for k in (1..150).step_by(3) {
                let p = format!("loader/entries/lifeboat-{k:03}+3-0.conf");
                v.remove(&p).unwrap();
                want.remove(&format!("/{p}"));
            }
            // Created again into the slots the removals freed.
            put(&mut v, &mut want, "loader/entries/again.conf", b"title again\n".to_vec());
            // A replaced file, the crash-safe way.
            v.replace("loader/loader.conf", &mut &b"timeout 5\ndefault lifeboat-*\n"[..]).unwrap();
            want.insert("/loader/loader.conf".into(), b"timeout 5\ndefault lifeboat-*\n".to_vec());
            v.create_dir_all("gone/deeper").unwrap();
            v.remove("gone/deeper").unwrap();
            v.remove("gone").unwrap();
            let free_before = v.space().unwrap().free;
            v.write_file("scratch.bin", &mut &pattern(30_000, 3)[..]).unwrap();
            v.remove("scratch.bin").unwrap();
            assert_eq!(v.space().unwrap().free, free_before, "FAT{bits}: removing gave back what writing took");
            v.close().unwrap();
        }
        fsck_silent(i, &format!("FAT{bits}"));
        let mut got = BTreeMap::new();
        read_back(i, "", &mut got, &s);
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want), "FAT{bits}: mdir lists what lifeboat wrote");
        for (p, data) in &want {
            assert!(got[p] == *data, "FAT{bits}: {p} reads back differently through mtools");
        }
    }
}

#[test]
fn a_full_root_directory_refuses_and_leaks_nothing() {
    // FAT16 with a small fixed root (mkfs.fat rounds `-r 16` up to 64 slots):
    // files with long names (two slots each) fill it; the
    // one that does not fit is refused after its data was written, and the
    // clusters it took are given back (fsck.fat finds nothing unused).
    let s = Scratch::new("fatwrite-full");
    let img = s.join("v16.img");
    let i = img.to_str().unwrap();
    tool("mkfs.fat", &["-F", "16", "-r", "16", "-C", i, "20000"]);
    let len = fs::metadata(&img).unwrap().len();
    let file = fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let mut v = FatVolume::open(Window::new(std::sync::Arc::new(file), 0, len, true), "t").unwrap();
    let free = v.space().unwrap().free;
    let mut written = 0;
    let refused = loop {
        match v.write_file(&format!("kernel-{written:02}.efi"), &mut &pattern(9_000, written as u8)[..]) {
            Ok(_) => written += 1,
            Err(e) => break e.to_string(),
        }
        assert!(written <= 32, "64 slots cannot hold 33 long-named files");
    };
    assert!(refused.contains("root directory is full"), "{refused}");
    let used = free - v.space().unwrap().free;
    let per_file = v.space().unwrap().alloc(9_000);
    assert_eq!(used, written as u64 * per_file, "only the files written hold clusters");
    v.close().unwrap();
    fsck_silent(i, "FAT16 with a full root");
}
