//! Disk images against independent oracles: sgdisk, fsck.fat, mtools, mkfs.fat;
//! and bad images that must fail cleanly without writing anything.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn oracle(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn parts(img: &str) -> Vec<(u32, String, u64, u64)> {
    let j = ok(&["--json", "disk", "ls", img]);
    // Minimal extraction from our own JSON: number, kind, start, size.
    let mut out = Vec::new();
    for p in j.split("{\"number\":").skip(1) {
        let num: u32 = p.split(',').next().unwrap().parse().unwrap();
        let field = |k: &str| {
            p.split(&format!("\"{k}\":")).nth(1).unwrap().split([',', '}']).next().unwrap().trim_matches('"').to_owned()
        };
        out.push((num, field("kind"), field("start").parse().unwrap(), field("size").parse().unwrap()));
    }
    out
}

/// Copies a partition out of an image for fsck.fat.
fn extract(img: &str, start: u64, size: u64, to: &str) {
    let data = fs::read(img).unwrap();
    fs::write(to, &data[start as usize..(start + size) as usize]).unwrap();
}

fn fsck_clean(img: &str, start: u64, size: u64, scratch: &Scratch) {
    let p = scratch.join("part.img");
    extract(img, start, size, p.to_str().unwrap());
    let (okk, out) = oracle("fsck.fat", &["-n", p.to_str().unwrap()]);
    assert!(okk, "fsck.fat -n reports problems:\n{out}");
}

#[test]
fn created_images_satisfy_sgdisk_fsck_and_mtools() {
    let s = Scratch::new("disk");
    let img = s.join("d.img");
    let img = img.to_str().unwrap();
    ok(&[
        "disk",
        "create",
        img,
        "--size",
        "700M",
        "--esp-size",
        "300M",
        "--xbootldr-size",
        "64M",
        "--root-size",
        "100M",
    ]);
    let (okk, out) = oracle("sgdisk", &["-v", img]);
    assert!(okk && out.contains("No problems found"), "sgdisk -v:\n{out}");
    let p = parts(img);
    assert_eq!(p.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["esp", "xbootldr", "root-x86-64"]);
    for (_, _, start, size) in &p {
        assert_eq!(start % (1 << 20), 0, "partition not 1 MiB aligned");
        assert_eq!(size % (1 << 20), 0);
    }
    let (_, _, esp_start, esp_size) = p[0].clone();
    let (_, _, xb_start, xb_size) = p[1].clone();
    assert!(ok(&["disk", "df", &format!("{img}:esp")]).contains("FAT32"));
    assert!(ok(&["disk", "df", &format!("{img}:xbootldr")]).contains("FAT32"));
    fsck_clean(img, esp_start, esp_size, &s);
    fsck_clean(img, xb_start, xb_size, &s);

    // A write sequence: new dirs, replacements, a large file, removals, renames.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    write(&s.join("big"), &big, 0o644);
    write(&s.join("small"), b"hello\n", 0o644);
    write(&s.join("small2"), b"hello again, longer\n", 0o644);
    let e = |p: &str| format!("{img}:esp:{p}");
    ok(&["disk", "put", s.join("big").to_str().unwrap(), &e("EFI/Linux/kernel-a.efi")]);
    ok(&["disk", "put", s.join("small").to_str().unwrap(), &e("loader/entries/a-very-long-entry-name-1.conf")]);
    ok(&["disk", "put", s.join("small2").to_str().unwrap(), &e("loader/entries/a-very-long-entry-name-1.conf")]);
    ok(&["disk", "put", s.join("small").to_str().unwrap(), &e("deep/er/and/deeper/x")]);
    ok(&["disk", "rm", &e("deep/er/and/deeper/x")]);
    ok(&["disk", "rm", &e("deep/er/and/deeper")]);
    fsck_clean(img, esp_start, esp_size, &s);

    // mtools reads what lifeboat wrote, byte for byte.
    let at = format!("{img}@@{esp_start}");
    let o = Command::new("mtype").args(["-i", &at, "::/EFI/Linux/kernel-a.efi"]).output().unwrap();
    assert_eq!(o.stdout, big, "mtype returned different bytes");
    let o =
        Command::new("mtype").args(["-i", &at, "::/loader/entries/a-very-long-entry-name-1.conf"]).output().unwrap();
    assert_eq!(o.stdout, b"hello again, longer\n");
    // lifeboat reads what mtools wrote.
    write(&s.join("m"), &big[..123_457], 0o644);
    let (okk, out) = oracle("mmd", &["-i", &at, "::/MTOOLS"]);
    assert!(okk, "{out}");
    let (okk, out) = oracle("mcopy", &["-i", &at, s.join("m").to_str().unwrap(), "::/MTOOLS/Mixed Case Name.bin"]);
    assert!(okk, "{out}");
    let o = run(&["disk", "cat", &e("mtools/mixed case name.bin")]);
    assert!(o.status.success());
    assert_eq!(o.stdout, &big[..123_457]);
    fsck_clean(img, esp_start, esp_size, &s);
}

#[test]
fn mkfs_fat_volumes_open() {
    let s = Scratch::new("mkfs");
    let img = s.join("m.img");
    let img = img.to_str().unwrap();
    let f = fs::File::create(img).unwrap();
    f.set_len(96 << 20).unwrap();
    drop(f);
    let (okk, out) = oracle("sgdisk", &["-n", "1:2048:+60M", "-t", "1:ef00", img]);
    assert!(okk, "{out}");
    let (okk, out) = oracle("mkfs.fat", &["-F", "32", "--offset", "2048", img, &(60 * 1024).to_string()]);
    assert!(okk, "{out}");
    write(&s.join("x"), b"through lifeboat", 0o644);
    ok(&["disk", "put", s.join("x").to_str().unwrap(), &format!("{img}:esp:EFI/test/x")]);
    assert_eq!(ok(&["disk", "cat", &format!("{img}:1:EFI/test/x")]), "through lifeboat");
    fsck_clean(img, 2048 * 512, 60 << 20, &s);
}

fn sha(p: &str) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn bad_images_fail_cleanly_without_writing() {
    let s = Scratch::new("bad");
    let img = s.join("d.img");
    let img = img.to_str().unwrap();
    ok(&["disk", "create", img, "--size", "160M", "--esp-size", "100M"]);
    let (_, _, esp_start, _) = parts(img)[0].clone();
    write(&s.join("x"), b"payload", 0o644);
    ok(&["disk", "put", s.join("x").to_str().unwrap(), &format!("{img}:esp:dir/x")]);
    let pristine = fs::read(img).unwrap();
    let case = |name: &str, data: Vec<u8>, args: &[&str], want: &str| {
        let p = s.join(name);
        fs::write(&p, &data).unwrap();
        let path = p.to_str().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.replace("IMG", path)).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&refs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: succeeded");
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: want {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(sha(path), data, "{name}: the image was written");
    };
    case("empty.img", vec![], &["disk", "ls", "IMG"], "empty (0 bytes)");
    case("trunc.img", pristine[..60 << 20].to_vec(), &["disk", "ls", "IMG"], "(truncated?)");
    let mut both = pristine.clone();
    both[512 + 20] ^= 1;
    let n = both.len() - 512 + 20;
    both[n] ^= 1;
    case("bothcrc.img", both, &["disk", "ls", "IMG"], "no usable GPT");
    let mut past = pristine.clone();
    // Partition 1's last LBA (entry at LBA 2, offset 40) far past the end; fix the CRCs so
    // that only the range check can catch it.
    past[1024 + 40..1024 + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fix_gpt_crcs(&mut past);
    case("past.img", past, &["disk", "ls", "IMG"], "past the end of the disk");
    let mut bs = pristine.clone();
    bs[esp_start as usize + 510] = 0;
    case("bootsector.img", bs, &["disk", "ls", "IMG:esp"], "no boot sector signature");
    case(
        "bootsector2.img",
        {
            let mut b = pristine.clone();
            b[esp_start as usize + 510] = 0;
            b
        },
        &["disk", "put", "/etc/hostname", "IMG:esp:y"],
        "no boot sector signature",
    );

    // A primary header with a bad CRC: the backup is used, and the user is told.
    let mut prim = pristine.clone();
    prim[512 + 16] ^= 0xff;
    fs::write(s.join("prim.img"), &prim).unwrap();
    let o = run(&["disk", "ls", s.join("prim.img").to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("primary GPT header is damaged (header CRC mismatch); using the backup"));

    // A full directory cluster whose chain loops back to itself: an error, not a hang.
    let full = s.join("full.img");
    fs::write(&full, &pristine).unwrap();
    let at = format!("{}@@{esp_start}", full.display());
    let mut names = Vec::new();
    for i in 0..40 {
        let f = s.join(&format!("file-with-a-long-name-{i:02}.txt"));
        fs::write(&f, b"x").unwrap();
        names.push(f.display().to_string());
    }
    let mut args = vec!["-i".to_string(), at.clone()];
    args.extend(names);
    args.push("::/DIR/".into());
    let (okk, out) = oracle("mcopy", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(okk, "{out}");
    let mut lp = fs::read(&full).unwrap();
    let dir_cluster = cluster_of(&lp, esp_start, "DIR");
    set_fat32(&mut lp, esp_start, dir_cluster, dir_cluster);
    case("loop.img", lp, &["disk", "ls", "IMG:esp:dir"], "cluster chain loops");
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Recomputes the primary header's array and header CRCs after an edit.
fn fix_gpt_crcs(d: &mut [u8]) {
    let n = le32(d, 512 + 80) as usize * le32(d, 512 + 84) as usize;
    let arr = crc32(&d[1024..1024 + n]);
    d[512 + 88..512 + 92].copy_from_slice(&arr.to_le_bytes());
    d[512 + 16..512 + 20].fill(0);
    let h = crc32(&d[512..512 + 92]);
    d[512 + 16..512 + 20].copy_from_slice(&h.to_le_bytes());
}

/// First cluster of a short-named entry in the FAT32 root directory.
fn cluster_of(d: &[u8], part: u64, short: &str) -> u32 {
    let b = &d[part as usize..];
    let bps = u16::from_le_bytes([b[11], b[12]]) as usize;
    let spc = b[13] as usize;
    let reserved = u16::from_le_bytes([b[14], b[15]]) as usize;
    let fats = b[16] as usize;
    let fatsz = le32(b, 36) as usize;
    let root = le32(b, 44) as usize;
    let data = (reserved + fats * fatsz) * bps;
    let rootoff = data + (root - 2) * spc * bps;
    for e in b[rootoff..rootoff + spc * bps].chunks(32) {
        if e[11] != 0x0f && std::str::from_utf8(&e[..8]).unwrap_or("").trim_end() == short {
            return (u16::from_le_bytes([e[20], e[21]]) as u32) << 16 | u16::from_le_bytes([e[26], e[27]]) as u32;
        }
    }
    panic!("{short} not in the root directory");
}

fn set_fat32(d: &mut [u8], part: u64, cluster: u32, next: u32) {
    let b = &d[part as usize..];
    let bps = u16::from_le_bytes([b[11], b[12]]) as usize;
    let reserved = u16::from_le_bytes([b[14], b[15]]) as usize;
    let fats = b[16] as usize;
    let fatsz = le32(b, 36) as usize;
    for f in 0..fats {
        let at = part as usize + (reserved + f * fatsz) * bps + cluster as usize * 4;
        d[at..at + 4].copy_from_slice(&next.to_le_bytes());
    }
}

/// Every path on the ESP at 1 MiB of `img`, listed by mtools.
fn mdir_all(img: &str) -> Vec<String> {
    let (okk, out) = oracle("mdir", &["-/", "-b", "-i", &format!("{img}@@1M"), "::/"]);
    assert!(okk, "mdir: {out}");
    out.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
}

#[test]
fn put_leaves_nothing_behind() {
    let s = Scratch::new("put-behind");
    let img = s.join("d.img");
    let img = img.to_str().unwrap();
    ok(&["disk", "create", img, "--size", "64M", "--esp-size", "48M", "--root-size", "0"]);
    let e = |p: &str| format!("{img}:esp:{p}");
    write(&s.join("a.efi"), b"kernel a", 0o644);
    ok(&["disk", "put", s.join("a.efi").to_str().unwrap(), &e("EFI/Linux/a.efi")]);
    let half_done = |l: &[String]| l.iter().any(|p| p.contains(".lbtmp") || p.contains(".lbnew"));

    // Onto an existing directory: into it, as cp does (it used to fail with
    // `EFI/Linux.lbnew` left behind).
    write(&s.join("k.efi"), b"kernel k", 0o644);
    ok(&["disk", "put", s.join("k.efi").to_str().unwrap(), &e("EFI/Linux")]);
    let l = mdir_all(img);
    assert!(!half_done(&l), "{l:?}");
    assert_eq!(ok(&["disk", "cat", &e("EFI/Linux/k.efi")]), "kernel k");

    // Onto a path that is a directory: refused before anything is written.
    write(&s.join("sub"), b"not a directory", 0o644);
    ok(&["disk", "put", s.join("a.efi").to_str().unwrap(), &e("EFI/Linux/sub/x")]);
    let before = fs::read(img).unwrap();
    let o = run(&["disk", "put", s.join("sub").to_str().unwrap(), &e("EFI/Linux/")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory's"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read(img).unwrap() == before, "a refused put wrote");

    // Names the last rename could not give (FAT drops a trailing dot or space;
    // an 8.3 alias is another file's): refused before anything is written.
    // They used to leave `NAME.lbnew`, which failed every later write.
    write(&s.join("o.conf"), b"title Other\n", 0o644);
    ok(&["disk", "put", s.join("o.conf").to_str().unwrap(), &e("loader/entries/otherdistro-6.1.conf")]);
    ok(&["disk", "put", s.join("o.conf").to_str().unwrap(), &e("loader/loader.conf")]);
    let before = fs::read(img).unwrap();
    for (name, why) in [
        ("loader/entries/foo.", "cannot end with a dot or a space"),
        ("trail ", "cannot end with a dot or a space"),
        ("...", "cannot end with a dot or a space"),
        ("loader/loader.conf ", "cannot end with a dot or a space"),
        ("loader/entries/OTHERD~1.CON", "8.3 alias of otherdistro-6.1.conf"),
        ("a:b", "not allowed in a FAT name"),
    ] {
        let o = run(&["disk", "put", s.join("a.efi").to_str().unwrap(), &e(name)]);
        assert!(!o.status.success(), "{name:?} was put");
        assert!(String::from_utf8_lossy(&o.stderr).contains(why), "{name:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(fs::read(img).unwrap() == before, "the refused put of {name:?} wrote");
    }
    assert_eq!(ok(&["disk", "cat", &e("loader/entries/otherdistro-6.1.conf")]), "title Other\n");

    // A put that fails midway (the second file does not fit): neither file, no
    // `.lbtmp`, no directory it made, no space taken.
    let free = ok(&["--json", "disk", "df", &e("")]);
    write(&s.join("small"), b"small", 0o644);
    let huge = s.join("huge");
    fs::File::create(&huge).unwrap().set_len(60 << 20).unwrap();
    let o = run(&["disk", "put", s.join("small").to_str().unwrap(), huge.to_str().unwrap(), &e("new/dir/")]);
    assert!(!o.status.success(), "60 MiB fit a 48 MiB ESP");
    let l = mdir_all(img);
    assert!(!half_done(&l) && !l.iter().any(|p| p.contains("::/new")), "{l:?}");
    assert_eq!(ok(&["--json", "disk", "df", &e("")]), free, "the failed put kept space");
    let p = s.join("part.img");
    extract(img, 1 << 20, 48 << 20, p.to_str().unwrap());
    let (okk, out) = oracle("fsck.fat", &["-n", p.to_str().unwrap()]);
    assert!(okk && !out.contains("Reclaimed") && !out.contains("Dirty"), "fsck.fat -n:\n{out}");
}
