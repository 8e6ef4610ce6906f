#![no_main]
use libfuzzer_sys::fuzz_target;

// A disk image of arbitrary bytes: GPT, then the FAT volume of the ESP.
fuzz_target!(|data: &[u8]| {
    let p = std::env::temp_dir().join(format!("lbfuzz-{}", std::process::id()));
    if std::fs::write(&p, data).is_err() {
        return;
    }
    if let Ok(d) = lifeboat_esp::Disk::open(&p, false) {
        for part in d.partitions.clone() {
            if let Ok(mut v) = lifeboat_esp::fat::FatVolume::open(d.window(&part), "fuzz") {
                use lifeboat_esp::Volume;
                if let Ok(l) = v.list("") {
                    for e in l.iter().take(8) {
                        let _ = v.stat(&e.name);
                        if !e.is_dir {
                            let _ = v.read(&e.name);
                        }
                    }
                }
            }
        }
    }
});
