//! Power cuts at the block level on the ESP. Each operation lifeboat makes on a
//! FAT ESP — a sync that adds entries, one that removes entries and collects
//! kernels, installing the loader, set-default and other loader.conf edits,
//! a sync that writes unified kernel images (Type #1 entries replaced by UKIs,
//! and UKIs replaced and collected), blessing an entry, blessing one whose
//! entry set another writer placed across
//! two sectors (with and without room for the new set in the old short entry's
//! sector) — runs on a recording disk; every write and flush is kept,
//! and crash images are made from every prefix of the writes, from seeded
//! reorderings of each flush epoch's writes, and from torn (first-sector-only)
//! writes. Each image is judged by:
//!
//! - `fsck.fat -n` (the dirty flag aside: a crash always leaves it) — reported;
//! - bootable: `loader.conf`'s default names an entry, the active transaction's
//!   entry is there, and every file it names holds the content its name says;
//! - foreign files and the user's `loader.conf` lines byte-identical;
//! - the next run (which reconciles the volume at open): the same operation
//!   again completes, what it wrote is there, and `fsck.fat -n` has nothing to
//!   say about the volume it leaves, dirty flag included.
//!
//! The figures (tried / held per judgement and operation) are printed, and the
//! judgements lifeboat promises for every image are asserted; see RELIABILITY.md.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::sync::Arc;

use common::fatraw::Fat;
use common::*;
use lifeboat_boot::plan::{self, Blob, Source, SyncRequest, WantedEntry};
use lifeboat_esp::fat::FatVolume;
use lifeboat_esp::record::{crash_images, RecordingDisk};
use lifeboat_esp::window::{Backing, Window};
use lifeboat_esp::Volume;

const TOKEN: &str = "4c424f4154544553544d414348494e45";
const USER_LINES: &str = "# the user's own settings\nconsole-mode max\neditor no\n";

/// A disk image with an ESP, made by lifeboat itself, as bytes.
fn base_image(s: &Scratch) -> (Vec<u8>, u64, u64) {
    let img = s.join("disk.img");
    ok(&["disk", "create", img.to_str().unwrap(), "--size", "48M", "--esp-size", "40M", "--root-size", "0"]);
    let d = lifeboat_esp::Disk::open(&img, false).unwrap();
    let p = d.find(lifeboat_esp::PartitionKind::Esp).unwrap().clone();
    (fs::read(&img).unwrap(), p.start, p.size)
}

fn volume(backing: Arc<dyn Backing>, off: u64, len: u64) -> FatVolume {
    FatVolume::open(Window::new(backing, off, len, true), "esp").unwrap()
}

struct Mem(std::sync::Mutex<Vec<u8>>);
impl Backing for Mem {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let g = self.0.lock().unwrap();
        let o = off as usize;
        let n = buf.len().min(g.len().saturating_sub(o));
        buf[..n].copy_from_slice(&g[o..o + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<usize> {
        let mut g = self.0.lock().unwrap();
        let o = off as usize;
        g[o..o + buf.len()].copy_from_slice(buf);
        Ok(buf.len())
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn blob(tag: &str, len: usize) -> Blob {
    let data: Arc<[u8]> = tag.bytes().cycle().take(len).collect::<Vec<u8>>().into();
    Blob { hash: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data)), len: len as u64, source: Source::Bytes(data) }
}

fn entry(tx: u64, active: bool, kernel: &Blob) -> WantedEntry {
    WantedEntry {
        tx,
        active,
        title: format!("Test OS, transaction {tx}"),
        version: format!("{tx}-6.1"),
        sort_key: "test".into(),
        machine_id: Some(TOKEN.into()),
        kver: "6.1".into(),
        linux: kernel.clone(),
        initrds: vec![],
        rescue_initrd: Some(lifeboat_boot::plan::RescueInitrd::Shared(blob("rescue", 40_000))),
        options: format!("quiet lifeboat.tx={tx}"),
        uki: None,
    }
}

/// The entry of `tx` as a unified kernel image built by lifeboat-pe from the
/// real systemd-stub (`variant` changes its command line, so its bytes), with
/// a small kernel: the writes, not the bytes, are what the cuts fall between. Every
/// image made is remembered: a crash image's UKI must be one of them, whole.
fn uki_entry(tx: u64, active: bool, kernel: &Blob, variant: u32) -> WantedEntry {
    let stub = fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        .expect("systemd-stub is missing: scripts/setup.sh installs systemd-boot-efi");
    let mut w = entry(tx, active, kernel);
    let linux = kernel.source.read_all().unwrap();
    let cmdline = format!("quiet lifeboat.tx={tx} v={variant}");
    let image = lifeboat_pe::build_uki(&lifeboat_pe::UkiParts {
        stub: &stub,
        osrel: b"ID=test\n",
        cmdline: cmdline.as_bytes(),
        uname: Some(b"6.1"),
        initrd: &[7u8; 4096],
        linux: &linux,
    })
    .unwrap();
    let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&image));
    UKIS.lock().unwrap().insert(hash.clone());
    w.uki = Some(Blob { hash, len: image.len() as u64, source: Source::Bytes(image.into()) });
    w.options = cmdline;
    w
}

/// The xxh3-128 of every UKI [`uki_entry`] made.
static UKIS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn req(entries: Vec<WantedEntry>, keep: usize) -> SyncRequest {
    SyncRequest {
        token: TOKEN.into(),
        entries,
        keep,
        tries: None,
        timeout: None,
        protected: vec![],
        pinned_default: None,
    }
}

fn sync(v: &mut dyn Volume, r: &SyncRequest) {
    let p = plan::plan(r, v, None).unwrap();
    plan::apply(&p, v, None).unwrap();
}

/// The files another OS keeps on the ESP, and the user's loader.conf lines.
fn seed_foreign(v: &mut dyn Volume) {
    for (p, d) in [
        ("EFI/Microsoft/Boot/bootmgfw.efi", &b"MZ windows boot manager"[..]),
        ("loader/entries/fedora-6.5.conf", &b"title Fedora\nlinux /fedora/vmlinuz\noptions quiet\n"[..]),
        ("fedora/vmlinuz", &b"fedora kernel bytes"[..]),
        ("loader/loader.conf", USER_LINES.as_bytes()),
    ] {
        let (dir, _) = lifeboat_esp::volume::split(p);
        v.create_dir_all(dir).unwrap();
        v.replace(p, &mut &d[..]).unwrap();
    }
    v.flush().unwrap();
}

/// One operation on the ESP, the way lifeboat makes it.
type Op = Box<dyn Fn(&mut dyn Volume)>;

struct Case {
    name: &'static str,
    /// Brings the volume to the state before the operation.
    setup: Op,
    /// Then a raw edit of the image (the ESP at the given offset): a layout
    /// another writer leaves, which lifeboat's own writes never make.
    layout: Option<fn(&mut [u8], usize)>,
    /// fsck.fat may also find an orphaned long-name part on a crash image (see
    /// [`only_in_flight`]): only renames of a set that spans two sectors.
    orphan_ok: bool,
    op: Op,
    /// The active transaction before and after the operation: every image must
    /// boot one of them, intact.
    active: (u64, u64),
    /// What holds once the next run has completed, beyond the active entry.
    done: fn(&mut dyn Volume) -> Result<(), String>,
}

fn nothing_more(_: &mut dyn Volume) -> Result<(), String> {
    Ok(())
}

/// Files anywhere on the volume left half-replaced (`.lbtmp`, `.lbnew`: the
/// next run must finish or discard them) and files known only by an 8.3 name
/// (`~` in the name: a long name a cut lost, which lifeboat cannot recognise).
fn leftovers(v: &mut dyn Volume) -> Result<(Vec<String>, Vec<String>), String> {
    fn walk(v: &mut dyn Volume, d: &str, out: &mut (Vec<String>, Vec<String>)) -> Result<(), String> {
        for e in v.list(d).map_err(|e| e.to_string())? {
            let p = lifeboat_esp::volume::join(d, &e.name);
            if e.is_dir {
                walk(v, &p, out)?;
            } else if p.ends_with(".lbtmp") || p.ends_with(".lbnew") {
                out.0.push(p);
            } else if p.contains('~') {
                out.1.push(p);
            }
        }
        Ok(())
    }
    let mut left = (Vec::new(), Vec::new());
    walk(v, "", &mut left)?;
    Ok(left)
}

/// Nothing half-replaced is left after a completed run.
fn no_leftovers(v: &mut dyn Volume) -> Result<(), String> {
    match leftovers(v)? {
        (half, _) if !half.is_empty() => Err(format!("left half-replaced: {half:?}")),
        _ => Ok(()),
    }
}

/// Both copies of the loader hold what was installed.
fn loader_installed(v: &mut dyn Volume) -> Result<(), String> {
    for p in ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"] {
        let got = v.read(p).map_err(|e| format!("{p}: {e}"))?;
        if got != vec![0x5a; 120_000] {
            return Err(format!("{p}: {} bytes, not the installed loader", got.len()));
        }
    }
    Ok(())
}

fn k(n: u64) -> Blob {
    blob(&format!("kernel-{n}"), 300_000 + n as usize * 1000)
}

fn uk(n: u64) -> Blob {
    blob(&format!("uki-kernel-{n}"), 40_000 + n as usize * 1000)
}

/// A kernel a third of the test ESP could not hold twice beside three others.
fn big(n: u64) -> Blob {
    blob(&format!("big-kernel-{n}"), 11_000_000 + n as usize * 1000)
}

fn cases() -> Vec<Case> {
    let base = |v: &mut dyn Volume| {
        seed_foreign(v);
        sync(v, &req(vec![entry(1, true, &k(1))], 5));
    };
    vec![
        Case {
            name: "sync adding two entries",
            setup: Box::new(base),
            op: Box::new(|v| {
                sync(v, &req(vec![entry(1, false, &k(1)), entry(2, false, &k(2)), entry(3, true, &k(3))], 5))
            }),
            active: (1, 3),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "sync removing entries and kernels",
            setup: Box::new(move |v| {
                base(v);
                sync(v, &req(vec![entry(1, false, &k(1)), entry(2, false, &k(2)), entry(3, true, &k(3))], 5));
            }),
            op: Box::new(|v| sync(v, &req(vec![entry(3, true, &k(3))], 1))),
            active: (3, 3),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "sync writing UKIs in place of Type #1 entries",
            setup: Box::new(base),
            op: Box::new(|v| {
                sync(
                    v,
                    &req(
                        vec![
                            uki_entry(1, false, &uk(1), 0),
                            uki_entry(2, false, &uk(2), 0),
                            uki_entry(3, true, &uk(3), 0),
                        ],
                        5,
                    ),
                )
            }),
            active: (1, 3),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "sync replacing one UKI and collecting two",
            setup: Box::new(move |v| {
                base(v);
                sync(
                    v,
                    &req(
                        vec![
                            uki_entry(1, false, &uk(1), 0),
                            uki_entry(2, false, &uk(2), 0),
                            uki_entry(3, true, &uk(3), 0),
                        ],
                        5,
                    ),
                );
            }),
            op: Box::new(|v| sync(v, &req(vec![uki_entry(3, true, &uk(3), 1)], 1))),
            active: (3, 3),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "install the loader",
            setup: Box::new(base),
            op: Box::new(|v| {
                lifeboat_boot::loaderconf::recover_esp(v).unwrap();
                for dest in ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"] {
                    let (dir, _) = lifeboat_esp::volume::split(dest);
                    v.create_dir_all(dir).unwrap();
                    v.replace(dest, &mut &vec![0x5a; 120_000][..]).unwrap();
                }
                v.flush().unwrap();
            }),
            active: (1, 1),
            done: loader_installed,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "set-default and timeout in loader.conf",
            setup: Box::new(move |v| {
                base(v);
                sync(v, &req(vec![entry(1, true, &k(1)), entry(2, false, &k(2))], 5));
            }),
            op: Box::new(|v| {
                lifeboat_boot::loaderconf::set_on(v, "default", Some(&plan::default_pattern(TOKEN, 2))).unwrap();
                lifeboat_boot::loaderconf::set_on(v, "timeout", Some("7")).unwrap();
                v.flush().unwrap();
            }),
            active: (1, 1),
            done: |v| {
                let conf =
                    String::from_utf8_lossy(&v.read("loader/loader.conf").map_err(|e| e.to_string())?).into_owned();
                match lifeboat_boot::loaderconf::get_key(&conf, "timeout") {
                    Some("7") => Ok(()),
                    t => Err(format!("timeout is {t:?} after the next run")),
                }
            },
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "sync that must remove before it copies (the ESP is nearly full)",
            setup: Box::new(|v| {
                seed_foreign(v);
                sync(v, &req(vec![entry(1, false, &big(1)), entry(2, false, &big(2)), entry(3, true, &big(3))], 5));
            }),
            op: Box::new(|v| sync(v, &req(vec![entry(3, false, &big(3)), entry(4, true, &big(4))], 1))),
            active: (3, 4),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "bless (boot counter dropped from an entry's name)",
            setup: Box::new(|v| {
                seed_foreign(v);
                let mut r = req(vec![entry(1, true, &k(1))], 5);
                r.tries = Some(3);
                sync(v, &r);
            }),
            op: Box::new(|v| {
                let ours = plan::our_entries(v, TOKEN).unwrap();
                let e = &ours[0];
                let to = e.file.replace("+3-0", "");
                v.rename(&format!("loader/entries/{}", e.file), &format!("loader/entries/{to}")).unwrap();
                v.flush().unwrap();
            }),
            active: (1, 1),
            done: nothing_more,
            layout: None,
            orphan_ok: false,
        },
        Case {
            name: "bless an entry placed across two sectors (2 of its 5 slots in the first)",
            setup: Box::new(counted),
            layout: Some(|img, off| across_sectors(img, off, 2, false)),
            op: Box::new(bless),
            active: (1, 1),
            done: blessed,
            orphan_ok: true,
        },
        Case {
            name: "bless an entry placed across two sectors (its short entry alone in the second)",
            setup: Box::new(counted),
            layout: Some(|img, off| across_sectors(img, off, 4, false)),
            op: Box::new(bless),
            active: (1, 1),
            done: blessed,
            orphan_ok: true,
        },
        Case {
            name: "bless an entry placed across two sectors (2 of its 5 slots in the first; no room in the second)",
            setup: Box::new(counted),
            layout: Some(|img, off| across_sectors(img, off, 2, true)),
            op: Box::new(bless),
            active: (1, 1),
            done: blessed,
            orphan_ok: true,
        },
        Case {
            name: "bless an entry placed across two sectors (its short entry alone in the second; no room there)",
            setup: Box::new(counted),
            layout: Some(|img, off| across_sectors(img, off, 4, true)),
            op: Box::new(bless),
            active: (1, 1),
            done: blessed,
            orphan_ok: true,
        },
    ]
}

/// An entry with a boot counter, beside the foreign files.
fn counted(v: &mut dyn Volume) {
    seed_foreign(v);
    let mut r = req(vec![entry(1, true, &k(1))], 5);
    r.tries = Some(3);
    sync(v, &r);
}

/// Moves the counted entry's set (4 long-name slots and its short entry) so it
/// spans a sector boundary with `before` slots in the first sector: what the
/// firmware's FAT driver may leave when systemd-boot renames the entry to count
/// a boot (FAT keeps no set inside a sector; lifeboat's own writes do). With
/// `full`, the second sector has no room for another set: the rename cannot
/// move the name in one write there.
fn across_sectors(img: &mut [u8], off: usize, before: usize, full: bool) {
    let f = Fat::read(img, off);
    let dir = f.start(img, f.find(img, "loader/entries").expect("loader/entries").short());
    let (name, set) = f.sets(img, dir).into_iter().find(|(n, _)| n.ends_with("+3-0.conf")).expect("a counted entry");
    assert_eq!(set.slots.len(), 5, "{name}: 4 long-name slots and the short entry");
    f.span_two_sectors(img, &format!("loader/entries/{name}"), before, full);
}

/// `boot bless`: the counted entry renamed without its counter (nothing when
/// a previous run did it).
fn bless(v: &mut dyn Volume) {
    let ours = plan::our_entries(v, TOKEN).unwrap();
    if let Some(e) = ours.iter().find(|e| e.file.contains("+3-0")) {
        let to = e.file.replace("+3-0", "");
        v.rename(&format!("loader/entries/{}", e.file), &format!("loader/entries/{to}")).unwrap();
    }
    v.flush().unwrap();
}

/// The entry is blessed, and one entry it is.
fn blessed(v: &mut dyn Volume) -> Result<(), String> {
    let ours = plan::our_entries(v, TOKEN).map_err(|e| e.to_string())?;
    let files: Vec<&str> = ours.iter().map(|e| e.file.as_str()).collect();
    match files.as_slice() {
        [one] if !one.contains('+') => Ok(()),
        _ => Err(format!("entries after the next run: {files:?}")),
    }
}

/// `fsck.fat -n` on the partition's bytes; the dirty flag a crash leaves aside.
fn fsck_clean(s: &Scratch, part: &[u8]) -> Result<(), String> {
    let Err(out) = fsck_strict(s, part) else {
        return Ok(());
    };
    // The dirty flag: "Dirty bit is set", and on FAT32 its byte (offset 65 of
    // the boot sector) differing from the backup boot sector.
    let mut problems = Vec::new();
    let mut lines = out.lines().skip(1).peekable();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t.is_empty()
            || t.starts_with("Dirty bit is set")
            || t.starts_with("Automatically removing dirty bit")
            || t.starts_with("Leaving filesystem unchanged")
            // FSInfo's count declared unknown (0xFFFFFFFF) while lifeboat
            // writes, as the FAT specification allows; fsck.fat exits 0.
            || t.starts_with("Free cluster summary uninitialized")
            || t.contains(" files, ")
        {
            continue;
        }
        if t.starts_with("There are differences between boot sector and its backup") {
            let mut only_dirty = true;
            while let Some(n) = lines.peek() {
                let n = n.trim();
                if n.starts_with("This is mostly harmless") || n.starts_with("Not automatically fixing") {
                    lines.next();
                } else if n.chars().next().is_some_and(|c| c.is_ascii_digit()) && n.contains(':') {
                    only_dirty &= n.starts_with("65:");
                    lines.next();
                } else {
                    break;
                }
            }
            if !only_dirty {
                problems.push(t.to_owned());
            }
            continue;
        }
        problems.push(t.to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Whether what fsck.fat found (the lines [`fsck_clean`] returns) is only space
/// in flight: clusters allocated and not yet linked, or unlinked and not yet
/// freed, the FAT copies differing in them, a stale free count. FAT has no
/// journal: an allocation and the entry that links it are two writes, so no
/// order of writes avoids these at every cut. Anything about a file or a
/// directory entry is damage.
///
/// With `orphan_ok`, also an orphaned long-name part (fsck.fat deletes it, and
/// so does the next check): a rename of a set with long-name slots in two
/// sectors cannot avoid one. Each write changes one sector, and a set whose
/// long-name slots lie in both is whole or broken, never gone, until both have
/// been written; lifeboat deletes the old short entry's sector first (the
/// clusters are never named twice), which orphans the first sector's part.
fn only_in_flight(problems: &str, orphan_ok: bool) -> bool {
    problems.lines().all(|l| {
        let t = l.trim();
        (orphan_ok && (t.starts_with("Orphaned long file name part") || t == "Auto-deleting."))
            || t.starts_with("FATs differ but appear to be intact")
            || t.starts_with("Using first FAT")
            || (t.starts_with("Reclaimed ") && t.contains(" unused cluster"))
            || t.starts_with("Free cluster summary")
            || t.starts_with("Auto-correcting")
    })
}

/// Whether fsck.fat said nothing but its version and summary (it reports some
/// damage, a wrong long-name checksum, and still exits 0).
fn quiet(out: &str) -> bool {
    out.lines().filter(|l| !l.trim().is_empty()).all(|l| l.starts_with("fsck.fat ") || l.contains(" files, "))
}

/// `fsck.fat -n` passes with nothing to say, the dirty flag included.
fn fsck_strict(s: &Scratch, part: &[u8]) -> Result<(), String> {
    let p = s.join("part.fat");
    fs::write(&p, part).unwrap();
    let o = Command::new("fsck.fat").arg("-n").arg(&p).output().expect("fsck.fat is missing (dosfstools)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() && quiet(&out) {
        Ok(())
    } else {
        Err(out)
    }
}

/// Bootable (the default names an entry; the active transaction's entry, before
/// or after the operation, is there with intact files) and nothing foreign lost.
fn invariants(v: &mut dyn Volume, active: (u64, u64)) -> Result<(), String> {
    // Between removing the old loader.conf and renaming the new one into place,
    // only the complete `loader.conf.lbnew` exists: the next run renames it
    // (systemd-boot meanwhile boots with its defaults).
    let conf = v
        .read("loader/loader.conf")
        .or_else(|_| v.read("loader/loader.conf.lbnew"))
        .map_err(|e| format!("loader.conf and its .lbnew: {e}"))?;
    let conf = String::from_utf8_lossy(&conf).into_owned();
    for l in USER_LINES.lines() {
        if !conf.lines().any(|c| c == l) {
            return Err(format!("loader.conf lost the user's line {l:?}:\n{conf}"));
        }
    }
    let ours = plan::our_entries(v, TOKEN).map_err(|e| e.to_string())?;
    let default = lifeboat_boot::loaderconf::get_key(&conf, "default").ok_or("no default")?.to_owned();
    let glob = |pat: &str, s: &str| match pat.strip_suffix('*') {
        Some(pre) => s.starts_with(pre),
        None => s == pat,
    };
    if !ours.iter().any(|e| glob(&default, &e.file)) {
        return Err(format!("the default {default:?} names no entry"));
    }
    let intact = |v: &mut dyn Volume, tx: u64| -> Result<(), String> {
        let act = ours.iter().find(|e| e.tx == tx).ok_or(format!("no entry for transaction {tx}"))?;
        if act.uki.is_some() {
            let path = act.path();
            let data = v.read(&path).map_err(|e| format!("{path}: {e}"))?;
            let got = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data));
            return match UKIS.lock().unwrap().contains(&got) {
                true => Ok(()),
                false => Err(format!("{path} is not an image the sync wrote whole ({got})")),
            };
        }
        let parsed = lifeboat_boot::bls::Entry::parse(&act.text);
        for f in parsed.all("linux").into_iter().chain(parsed.all("initrd")) {
            let path = f.trim_start_matches('/');
            let data = v.read(path).map_err(|e| format!("{path}: {e}"))?;
            let got = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data));
            if !path.contains(&got) {
                return Err(format!("{path} does not hold the content its name says ({got})"));
            }
        }
        Ok(())
    };
    if let (Err(a), Err(b)) = (intact(v, active.0), intact(v, active.1)) {
        return Err(format!("neither the old nor the new active transaction boots: {a}; {b}"));
    }
    for (p, d) in [
        ("EFI/Microsoft/Boot/bootmgfw.efi", &b"MZ windows boot manager"[..]),
        ("loader/entries/fedora-6.5.conf", &b"title Fedora\nlinux /fedora/vmlinuz\noptions quiet\n"[..]),
        ("fedora/vmlinuz", &b"fedora kernel bytes"[..]),
    ] {
        if v.read(p).ok().as_deref() != Some(d) {
            return Err(format!("foreign file {p} changed"));
        }
    }
    Ok(())
}

#[derive(Default, Debug)]
struct Tally {
    tried: usize,
    /// Images after whose next run a file is known only by an 8.3 name.
    short_only: usize,
    fsck: usize,
    /// fsck.fat finds nothing but clusters in flight ([`only_in_flight`]).
    in_flight: usize,
    bootable: usize,
    next_run: usize,
    next_fsck: usize,
}

#[test]
fn every_crash_image_of_every_esp_operation() {
    let s = Scratch::new("crash-esp");
    let (image, off, len) = base_image(&s);
    let mut report: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut fsck_failures: Vec<String> = Vec::new();
    let mut after_fsck_failures: Vec<String> = Vec::new();
    let mut short_only: Vec<String> = Vec::new();
    for case in cases() {
        // LIFEBOAT_CRASH_ONLY=TEXT runs only the cases whose name holds TEXT.
        if std::env::var("LIFEBOAT_CRASH_ONLY").is_ok_and(|o| !case.name.contains(&o)) {
            continue;
        }
        let disk = Arc::new(RecordingDisk::new(image.clone()));
        {
            let mut v = volume(disk.clone(), off, len);
            (case.setup)(&mut v);
            v.close().unwrap();
        }
        let disk = match case.layout {
            Some(edit) => {
                let mut img = disk.image();
                edit(&mut img, off as usize);
                fsck_strict(&s, &img[off as usize..(off + len) as usize])
                    .unwrap_or_else(|e| panic!("{}: the layout is not clean FAT:\n{e}", case.name));
                Arc::new(RecordingDisk::new(img))
            }
            None => disk,
        };
        let before = disk.start();
        {
            let mut v = volume(disk.clone(), off, len);
            (case.op)(&mut v);
            v.close().unwrap();
        }
        let events = disk.stop();
        let t = report.entry(case.name).or_default();
        for (cut, img) in crash_images(&before, &events, 6, 0x5eed) {
            t.tried += 1;
            let part = &img[off as usize..(off + len) as usize];
            match fsck_clean(&s, part) {
                Ok(()) => {
                    t.fsck += 1;
                    t.in_flight += 1;
                }
                Err(problems) if only_in_flight(&problems, case.orphan_ok) => t.in_flight += 1,
                Err(problems) => fsck_failures.push(format!("{} {cut:?}: fsck.fat:\n{problems}", case.name)),
            }
            let mem: Arc<dyn Backing> = Arc::new(Mem(std::sync::Mutex::new(img.clone())));
            let opened = FatVolume::open(Window::new(mem.clone(), off, len, true), "esp");
            let Ok(mut v) = opened else {
                failures.push(format!("{} {cut:?}: the volume does not open", case.name));
                continue;
            };
            let bootable = invariants(&mut v, case.active);
            match &bootable {
                Ok(()) => t.bootable += 1,
                Err(e) => {
                    if let Some(d) = std::env::var_os("LIFEBOAT_CRASH_DUMP") {
                        let _ = fs::write(
                            std::path::Path::new(&d).join(format!("unbootable-{}.fat", failures.len())),
                            part,
                        );
                    }
                    failures.push(format!("{} {cut:?}: {e}", case.name))
                }
            }
            // The next run: the same operation completes.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (case.op)(&mut v);
                v.close().unwrap();
            }));
            if let Err(p) = done {
                let why = p.downcast_ref::<String>().cloned().unwrap_or_default();
                if let Some(d) = std::env::var_os("LIFEBOAT_CRASH_DUMP") {
                    let _ = fs::write(std::path::Path::new(&d).join(format!("stuck-{}.fat", failures.len())), part);
                }
                failures.push(format!("{} {cut:?}: the next run failed: {why}", case.name));
                continue;
            }
            let fin = mem.clone();
            let mut buf = vec![0u8; len as usize];
            fin.read_at(&mut buf, off).unwrap();
            let mut v2 = volume(fin, off, len);
            if let Ok((_, short)) = leftovers(&mut v2) {
                if !short.is_empty() {
                    t.short_only += 1;
                    short_only.push(format!(
                        "{} {cut:?}: after the next run, known only by an 8.3 name: {short:?}",
                        case.name
                    ));
                }
            }
            match invariants(&mut v2, (case.active.1, case.active.1))
                .and_then(|()| (case.done)(&mut v2))
                .and_then(|()| no_leftovers(&mut v2))
            {
                Ok(()) => t.next_run += 1,
                Err(e) => {
                    if let Some(d) = std::env::var_os("LIFEBOAT_CRASH_DUMP") {
                        let d = std::path::Path::new(&d);
                        let _ = fs::write(d.join(format!("after-{}-crash.fat", failures.len())), part);
                        let _ = fs::write(d.join(format!("after-{}-next.fat", failures.len())), &buf);
                    }
                    failures.push(format!("{} {cut:?}: after the next run: {e}", case.name))
                }
            }
            match fsck_strict(&s, &buf) {
                Ok(()) => t.next_fsck += 1,
                Err(out) => {
                    if let Some(d) = std::env::var_os("LIFEBOAT_CRASH_DUMP") {
                        let _ = fs::write(
                            std::path::Path::new(&d).join(format!("unclean-{}.fat", after_fsck_failures.len())),
                            part,
                        );
                    }
                    after_fsck_failures.push(format!("{} {cut:?}: after the next run, fsck.fat:\n{out}", case.name))
                }
            }
        }
    }
    eprintln!("crash images of ESP operations (tried / fsck.fat -n clean / nothing but clusters in flight / bootable with foreign files intact / next run completes / clean after the next run / a file left with only an 8.3 name):");
    for (name, t) in &report {
        eprintln!(
            "  {name}: {} / {} / {} / {} / {} / {} / {}",
            t.tried, t.fsck, t.in_flight, t.bootable, t.next_run, t.next_fsck, t.short_only
        );
    }
    for f in failures.iter().take(10).chain(fsck_failures.iter().take(4)).chain(&short_only) {
        eprintln!("{f}");
    }
    if let Some(p) = std::env::var_os("LIFEBOAT_CRASH_FSCK_LOG") {
        let all: Vec<&String> = fsck_failures.iter().chain(&after_fsck_failures).collect();
        fs::write(p, all.iter().map(|s| format!("{s}\n----\n")).collect::<String>()).unwrap();
    }
    for f in after_fsck_failures.iter().take(4) {
        eprintln!("{f}");
    }
    // What holds for every image: the old or the new active transaction boots
    // with intact files, nothing foreign or of the user's is lost, the next run
    // completes, and after it fsck.fat -n has nothing to say (the reconciliation
    // at open repairs what the cut left). On the crash image itself fsck.fat
    // finds at most clusters in flight: lifeboat's write order (esp/src/fatwrite.rs)
    // never lets an entry name clusters its FAT does not give it.
    for (name, t) in &report {
        assert_eq!(t.in_flight, t.tried, "{name}: a crash image with a damaged file or directory entry");
        assert_eq!(t.bootable, t.tried, "{name}: an image that boots neither the old nor the new active transaction");
        assert_eq!(t.next_run, t.tried, "{name}: an image the next run does not complete");
        assert_eq!(t.next_fsck, t.tried, "{name}: an image fsck.fat -n finds fault with after the next run");
    }
}
