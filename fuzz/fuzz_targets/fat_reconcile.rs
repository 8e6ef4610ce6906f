#![no_main]
use std::sync::{Arc, Mutex};

use lifeboat_esp::fatcheck::reconcile;
use lifeboat_esp::window::{MemBacking, Window};
use libfuzzer_sys::fuzz_target;

// A FAT volume of arbitrary bytes, opened for writing: reconciliation must not
// panic, hang or write outside the window, and on a volume it understood
// (no damage) a second pass finds nothing left to do.
fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let mem = Arc::new(MemBacking(Mutex::new(data.to_vec())));
    let mut w = Window::new(mem.clone(), 0, len, true);
    let Ok(first) = reconcile(&mut w) else { return };
    w.sync().unwrap();
    if first.damage.is_empty() {
        let mut w = Window::new(mem.clone(), 0, len, true);
        let second = reconcile(&mut w).expect("a reconciled volume reads back");
        assert!(!second.changed(), "second pass changed {second:?} after {first:?}");
    }
    if let Ok(mut v) = lifeboat_esp::fat::FatVolume::open(Window::new(mem, 0, len, true), "fuzz") {
        use lifeboat_esp::Volume;
        if let Ok(l) = v.list("") {
            for e in l.iter().take(8) {
                if !e.is_dir {
                    let _ = v.read(&e.name);
                }
            }
        }
    }
});
