#![no_main]
use std::sync::{Arc, Mutex};

use lifeboat_esp::fat::FatVolume;
use lifeboat_esp::fatcheck::reconcile;
use lifeboat_esp::window::{MemBacking, Window};
use lifeboat_esp::Volume;
use libfuzzer_sys::fuzz_target;

// lifeboat's own FAT write path on a volume of arbitrary bytes: the writes a
// boot sync makes (a directory tree, files of one and of many clusters, an
// in-place rename, a removal) must not panic, hang or write outside the window,
// what they wrote reads back, and on a volume the check at open understood,
// the volume they leave needs
// nothing from a second check: no leaked or cross-linked cluster, no size that
// disagrees with its chain, no torn name.
fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(data.to_vec())));
    let Ok(mut v) = FatVolume::open(Window::new(mem.clone(), 0, len, true), "fuzz") else { return };
    let trusted = v.reconciled().damage.is_empty();
    let small = vec![b'e'; 700];
    let large = vec![b'k'; 70_000];
    let _ = v.create_dir_all("loader/entries");
    let _ = v.write_file("loader/entries/a-1+3.conf.lbtmp", &mut &small[..]);
    let _ = v.rename("loader/entries/a-1+3.conf.lbtmp", "loader/entries/a-1+3.conf.lbnew");
    let wrote_large = v.write_file("vmlinuz-6.1.0-28-amd64", &mut &large[..]).is_ok();
    if let Ok(l) = v.list("") {
        if let Some(e) = l.iter().find(|e| !e.is_dir && e.name != "vmlinuz-6.1.0-28-amd64") {
            let _ = v.remove(&e.name);
        }
    }
    let renamed = v.rename("loader/entries/a-1+3.conf.lbnew", "loader/entries/a-1+3.conf").is_ok();
    // What was written reads back (through lifeboat's own reader).
    if wrote_large && trusted {
        assert_eq!(v.read("vmlinuz-6.1.0-28-amd64").expect("a file just written reads back"), large);
    }
    if renamed && trusted {
        assert_eq!(v.read("loader/entries/a-1+3.conf").expect("a renamed file reads back"), small);
    }
    if v.close().is_err() || !trusted {
        return;
    }
    let mut w = Window::new(mem, 0, len, true);
    let after = reconcile(&mut w).expect("a volume lifeboat wrote reads back");
    assert!(!after.changed(), "lifeboat's writes left {after:?}");
});
