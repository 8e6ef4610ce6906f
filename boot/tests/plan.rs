//! The sync planner on an in-memory volume: what goes where, GC of pruned
//! transactions, space pressure, protected entries, no-op syncs, and foreign files
//! that must stay byte-identical.

use std::sync::Arc;

use lifeboat_boot::plan::{self, Blob, RescueInitrd, Source, Step, SyncRequest, WantedEntry};
use lifeboat_boot::Error;
use lifeboat_esp::mem::MemVolume;
use lifeboat_esp::Volume;

const TOKEN: &str = "4c424f4154544553544d414348494e45";

/// Content named by its real hash, as the sync names kernels and initrds.
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
        rescue_initrd: Some(RescueInitrd::Shared(blob("r", 1000))),
        options: format!("quiet lifeboat.tx={tx}"),
        uki: None,
    }
}

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

fn sync(v: &mut MemVolume, r: &SyncRequest) -> Result<plan::Plan, Error> {
    let p = plan::plan(r, v, None)?;
    plan::apply(&p, v, None)?;
    Ok(p)
}

fn seed_foreign(v: &mut MemVolume) {
    for (p, d) in [
        ("loader/entries/fedora-6.5.conf", &b"title Fedora\nlinux /fedora/vmlinuz\n"[..]),
        ("loader/entries/garbage.conf", &b"\x00\xff not an entry at all"[..]),
        // Another install of this OS (another machine id), with lifeboat entries of its own.
        ("loader/entries/feedfacefeedfacefeedfacefeedface-3-6.1.conf", &b"title Twin\noptions lifeboat.tx=3\n"[..]),
        // A name in our namespace that we did not write.
        (&format!("loader/entries/{TOKEN}-9-6.1.conf"), &b"title Hand-written\noptions quiet\n"[..]),
        ("fedora/vmlinuz", &b"fedora kernel"[..]),
        ("EFI/Microsoft/Boot/bootmgfw.efi", &b"MZ"[..]),
        ("loader/loader.conf", &b"# mine\neditor no\ntimeout 4\n"[..]),
    ] {
        let (dir, _) = lifeboat_esp::volume::split(p);
        v.create_dir_all(dir).unwrap();
        v.write_file(p, &mut &*d).unwrap();
    }
}

/// Everything on the volume that is not lifeboat's: not below the token
/// directory, not an entry lifeboat wrote, not loader.conf (whose other lines are
/// checked on their own).
fn foreign(v: &MemVolume) -> Vec<(String, Option<Vec<u8>>)> {
    v.snapshot()
        .into_iter()
        .filter(|(p, _)| !p.starts_with(TOKEN))
        .filter(|(p, d)| {
            let ours = p.starts_with(&format!("loader/entries/{TOKEN}-"))
                && d.as_ref().is_some_and(|d| String::from_utf8_lossy(d).contains("Written by lifeboat"));
            !ours
        })
        .filter(|(p, _)| p != "loader/loader.conf")
        .collect()
}

#[test]
fn one_entry_per_transaction_shared_kernels_and_gc() {
    let mut v = MemVolume::new(64 << 20, 4096);
    seed_foreign(&mut v);
    let before = foreign(&v);
    let k1 = blob("k1", 3 << 20);
    let k2 = blob("k2", 3 << 20);
    let r = req(vec![entry(1, false, &k1), entry(2, false, &k1), entry(3, true, &k2)], 5);
    let p = sync(&mut v, &r).unwrap();
    assert_eq!(p.kept, [3, 2, 1]);
    let copies = p.steps.iter().filter(|s| matches!(s, Step::Copy { .. })).count();
    assert_eq!(copies, 3, "two kernels (shared by content) and the rescue initrd: {:?}", p.steps);
    let snap = v.snapshot();
    for tx in 1..=3 {
        assert!(snap.contains_key(&format!("loader/entries/{TOKEN}-{tx}-6.1.conf")));
    }
    let lc = String::from_utf8(v.read("loader/loader.conf").unwrap()).unwrap();
    assert_eq!(lc, format!("# mine\neditor no\ntimeout 4\ndefault {TOKEN}-3-*\n"));

    // Nothing to do writes nothing.
    let m = v.mutations;
    let p = sync(&mut v, &r).unwrap();
    assert!(p.is_noop(), "{:?}", p.steps);
    assert_eq!(v.mutations, m);

    // Transaction 1 pruned: its entry goes; the kernel stays (2 uses it).
    let r = req(vec![entry(2, false, &k1), entry(3, true, &k2)], 5);
    sync(&mut v, &r).unwrap();
    let snap = v.snapshot();
    assert!(!snap.contains_key(&format!("loader/entries/{TOKEN}-1-6.1.conf")));
    assert!(snap.keys().any(|k| k.contains(&k1.hash)));
    // Only 3 left: k1 is collected, and so is its version directory if empty.
    let r = req(vec![entry(3, true, &k2)], 5);
    sync(&mut v, &r).unwrap();
    assert!(!v.snapshot().keys().any(|k| k.contains(&k1.hash)));
    assert_eq!(foreign(&v), before, "foreign files changed");
}

#[test]
fn full_volume_drops_oldest_then_refuses() {
    let k: Vec<Blob> = (0..4).map(|i| blob(&format!("k{i}"), 10 << 20)).collect();
    // Room for two kernels (and entries), not three.
    let mut v = MemVolume::new(24 << 20, 4096);
    seed_foreign(&mut v);
    let before = foreign(&v);
    let r = req(vec![entry(1, false, &k[0]), entry(2, false, &k[1]), entry(3, true, &k[2])], 5);
    let p = sync(&mut v, &r).unwrap();
    assert_eq!(p.kept, [3, 2]);
    assert_eq!(p.dropped_for_space, [1]);
    // A new transaction: the old kernels must go before the new one fits.
    let r = req(vec![entry(2, false, &k[1]), entry(3, false, &k[2]), entry(4, true, &k[3])], 5);
    let p = sync(&mut v, &r).unwrap();
    assert_eq!(p.kept, [4, 3]);
    let order: Vec<usize> = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Step::Remove { .. } | Step::Copy { .. }))
        .map(|(i, _)| i)
        .collect();
    assert!(!order.is_empty());
    let first_copy = p.steps.iter().position(|s| matches!(s, Step::Copy { .. })).unwrap();
    let last_remove = p.steps.iter().rposition(|s| matches!(s, Step::Remove { .. })).unwrap();
    assert!(last_remove < first_copy, "removals must come before copies: {:?}", p.steps);
    // Even the active transaction alone does not fit: nothing changes.
    let huge = blob("h", 40 << 20);
    let snap = v.snapshot();
    let m = v.mutations;
    let err = plan::plan(&req(vec![entry(5, true, &huge)], 5), &mut v, None).unwrap_err();
    match err {
        Error::NoSpace { need, .. } => assert!(need > 40 << 20),
        e => panic!("{e}"),
    }
    assert_eq!(v.snapshot(), snap);
    assert_eq!(v.mutations, m);
    assert_eq!(foreign(&v), before);
}

#[test]
fn protected_transactions_keep_their_entries() {
    let mut v = MemVolume::new(64 << 20, 4096);
    let k = blob("k", 1 << 20);
    sync(&mut v, &req(vec![entry(1, false, &k), entry(2, true, &k)], 5)).unwrap();
    // Transaction 1's kernel can no longer be read (say, missing from the store):
    // it is not wanted, but protected, so its entry and kernel stay.
    let mut r = req(vec![entry(2, true, &blob("k2", 1 << 20))], 5);
    r.protected = vec![1];
    sync(&mut v, &r).unwrap();
    let snap = v.snapshot();
    assert!(snap.contains_key(&format!("loader/entries/{TOKEN}-1-6.1.conf")));
    assert!(snap.keys().any(|p| p.contains(&k.hash)));
}

#[test]
fn boot_counting_names_and_default() {
    let mut v = MemVolume::new(64 << 20, 4096);
    let k = blob("k", 1 << 20);
    sync(&mut v, &req(vec![entry(1, true, &k)], 5)).unwrap();
    let mut r = req(vec![entry(1, false, &k), entry(2, true, &k)], 5);
    r.tries = Some(3);
    sync(&mut v, &r).unwrap();
    let snap = v.snapshot();
    assert!(snap.contains_key(&format!("loader/entries/{TOKEN}-2-6.1+3-0.conf")), "{:?}", snap.keys());
    assert!(snap.contains_key(&format!("loader/entries/{TOKEN}-1-6.1.conf")), "existing entries keep their name");
    let lc = String::from_utf8(v.read("loader/loader.conf").unwrap()).unwrap();
    assert_eq!(lc, format!("default {TOKEN}-*\n"), "an unproven default lets the loader fall back");
    // The loader counted a boot: a resync keeps the counter where it is.
    v.rename(&format!("loader/entries/{TOKEN}-2-6.1+3-0.conf"), &format!("loader/entries/{TOKEN}-2-6.1+2-1.conf"))
        .unwrap();
    let p = sync(&mut v, &r).unwrap();
    assert!(p.is_noop(), "{:?}", p.steps);
}

#[test]
fn a_kernel_damaged_in_place_is_copied_again() {
    let k = blob("k", 1 << 20);
    let mut v = MemVolume::new(64 << 20, 4096);
    let r = req(vec![entry(1, true, &k)], 5);
    sync(&mut v, &r).unwrap();
    let path = v.snapshot().into_keys().find(|p| p.contains(&k.hash)).unwrap();
    // Same name, same size, other bytes: a bit flip, a torn write.
    let mut bad = v.read(&path).unwrap();
    bad[4096] ^= 0x40;
    v.replace(&path, &mut &bad[..]).unwrap();
    let p = plan::plan(&r, &mut v, None).unwrap();
    assert!(p.steps.iter().any(|s| matches!(s, Step::Copy { path: c, .. } if *c == path)), "{:?}", p.steps);
    sync(&mut v, &r).unwrap();
    assert_eq!(v.read(&path).unwrap(), vec![b'k'; 1 << 20]);
    assert!(plan::plan(&r, &mut v, None).unwrap().steps.iter().all(|s| !matches!(s, Step::Copy { .. })));
}

#[test]
fn removing_first_never_removes_what_the_machine_boots_now_before_the_new_entry_exists() {
    // Room for two 10 MiB kernels, not three: transaction 4 replaces 2 and 3.
    let k: Vec<Blob> = (0..4).map(|i| blob(&format!("k{i}"), 10 << 20)).collect();
    let mut v = MemVolume::new(24 << 20, 4096);
    sync(&mut v, &req(vec![entry(2, false, &k[1]), entry(3, true, &k[2])], 5)).unwrap();
    let p = plan::plan(&req(vec![entry(4, true, &k[3])], 1), &mut v, None).unwrap();
    assert!(p.remove_first);
    // Transaction 3's entry and kernel (what loader.conf boots now) are removed
    // only after 4's entry and loader.conf are written; that every moment
    // boots 3 or 4 is asserted on every crash image by tests/crash_esp.rs
    // ("sync that must remove before it copies"). Here: the plan and its end.
    let order: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Remove { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(order.len(), 4, "{order:?}");
    plan::apply(&p, &mut v, None).unwrap();
    let snap = v.snapshot();
    assert!(snap.keys().any(|f| f.contains(&k[3].hash)));
    assert!(!snap.keys().any(|f| f.contains(&k[2].hash)), "transaction 3's kernel is gone in the end");

    // A new kernel that fits only if the booted one goes first: refused, nothing changed.
    let mut v = MemVolume::new(24 << 20, 4096);
    sync(&mut v, &req(vec![entry(1, true, &k[0])], 5)).unwrap();
    let huge = blob("h", 15 << 20);
    let snap = v.snapshot();
    let m = v.mutations;
    match plan::plan(&req(vec![entry(2, true, &huge)], 1), &mut v, None).unwrap_err() {
        Error::NoSpace { detail, .. } => assert!(detail.contains("boots now"), "{detail}"),
        e => panic!("{e}"),
    }
    assert_eq!(v.snapshot(), snap);
    assert_eq!(v.mutations, m);
}

/// Makes the bytes of a blob on demand, counting how often it was asked.
struct Counting {
    data: Vec<u8>,
    made: std::sync::atomic::AtomicUsize,
}

impl plan::Make for Counting {
    fn make(&self) -> std::io::Result<Vec<u8>> {
        self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.data.clone())
    }
    fn describe(&self) -> String {
        "a test initrd".into()
    }
}

#[test]
fn kernel_initrds_live_beside_their_kernel_are_counted_shared_remade_and_collected() {
    let mut v = MemVolume::new(64 << 20, 4096);
    let (ka, kb) = (blob("ka", 1 << 20), blob("kb", 1 << 20));
    let (ra, rb) = (blob("ra", 2 << 20), blob("rb", 2 << 20));
    let with = |tx: u64, active: bool, kver: &str, k: &Blob, rd: &Blob| {
        let mut e = entry(tx, active, k);
        e.kver = kver.into();
        e.rescue_initrd = Some(RescueInitrd::Kernel(rd.clone()));
        e
    };
    let r = req(
        vec![with(1, false, "6.1-a", &ka, &ra), with(2, false, "6.1-a", &ka, &ra), with(3, true, "6.1-b", &kb, &rb)],
        5,
    );
    let p = plan::plan(&r, &mut v, None).unwrap();
    let pa = plan::kernel_initrd_path(TOKEN, "6.1-a", &ra.hash);
    let pb = plan::kernel_initrd_path(TOKEN, "6.1-b", &rb.hash);
    assert_eq!(pa, format!("{TOKEN}/6.1-a/lifeboat-{}.initrd", ra.hash));
    let copies: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| if let Step::Copy { path, .. } = s { Some(path.as_str()) } else { None })
        .collect();
    assert_eq!(copies.iter().filter(|c| **c == pa || **c == pb).count(), 2, "shared by content: {copies:?}");
    // The space check counts them: two kernels and two initrds at least.
    assert!(p.need >= 6 << 20, "{}", p.need);
    plan::apply(&p, &mut v, None).unwrap();
    let e1 = String::from_utf8(v.read(&format!("loader/entries/{TOKEN}-1-6.1-a.conf")).unwrap()).unwrap();
    assert!(e1.lines().last().is_some_and(|l| l == "options quiet lifeboat.tx=1"), "{e1}");
    assert!(e1.contains(&format!("initrd /{pa}\n")), "{e1}");
    // Too small a volume for them is refused before anything is written.
    let mut small = MemVolume::new(5 << 20, 4096);
    let e = plan::plan(&req(vec![with(3, true, "6.1-b", &kb, &rb)], 5), &mut small, None);
    assert!(e.is_ok(), "3 MiB fit in 5");
    let e = plan::plan(&req(vec![with(3, true, "6.1-b", &kb, &blob("big", 5 << 20))], 5), &mut small, None);
    assert!(matches!(e, Err(Error::NoSpace { .. })), "{e:?}");

    // An initrd made on demand is made only when its copy is damaged.
    let counting = Arc::new(Counting { data: b"rb".iter().copied().cycle().take(2 << 20).collect(), made: 0.into() });
    let want = u128::from_str_radix(&rb.hash, 16).unwrap();
    let lazy = Blob { hash: rb.hash.clone(), len: rb.len, source: Source::Made(counting.clone(), want) };
    let r = req(
        vec![with(1, false, "6.1-a", &ka, &ra), with(2, false, "6.1-a", &ka, &ra), with(3, true, "6.1-b", &kb, &lazy)],
        5,
    );
    assert!(sync(&mut v, &r).unwrap().is_noop());
    assert_eq!(counting.made.load(std::sync::atomic::Ordering::SeqCst), 0);
    let mut bad = v.read(&pb).unwrap();
    bad[100] ^= 1;
    v.replace(&pb, &mut &bad[..]).unwrap();
    sync(&mut v, &r).unwrap();
    assert_eq!(counting.made.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(v.read(&pb).unwrap(), counting.data);
    // Bytes that are not the ones named are never copied under that name.
    v.replace(&pb, &mut &bad[..]).unwrap();
    let wrong = Arc::new(Counting { data: vec![0; 2 << 20], made: 0.into() });
    let lazy = Blob { hash: rb.hash.clone(), len: rb.len, source: Source::Made(wrong, want) };
    let r2 = req(vec![with(3, true, "6.1-b", &kb, &lazy)], 5);
    assert!(sync(&mut v, &r2).is_err());

    // Pruned to 3: kernel A's initrd (and kernel) are named by no entry and go.
    sync(&mut v, &req(vec![with(3, true, "6.1-b", &kb, &rb)], 5)).unwrap();
    let snap = v.snapshot();
    assert!(!snap.contains_key(&pa) && snap.contains_key(&pb), "{:?}", snap.keys());
    assert!(!snap.keys().any(|k| k.starts_with(&format!("{TOKEN}/6.1-a"))), "{:?}", snap.keys());
}
