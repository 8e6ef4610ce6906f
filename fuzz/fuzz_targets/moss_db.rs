#![no_main]
use libfuzzer_sys::fuzz_target;

// moss's databases as bytes: a hostile or truncated SQLite file where
// .moss/db/layout is, read by the import (which must answer with an error).
fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("lbfuzz-moss-{}", std::process::id()));
    let db = base.join(".moss/db");
    if std::fs::create_dir_all(&db).is_err() {
        return;
    }
    // The first four bytes (little-endian) say where the state database ends.
    if data.len() < 4 {
        return;
    }
    let cut = (u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize).min(data.len() - 4);
    let (state, layout) = data[4..].split_at(cut);
    if std::fs::write(db.join("state"), state).is_err() || std::fs::write(db.join("layout"), layout).is_err() {
        return;
    }
    let _ = std::fs::create_dir_all(base.join(".moss/assets/v2"));
    if let Ok(root) = lifeboat_state::root::SystemRoot::open(&base) {
        let _ = lifeboat_state::moss::import::read(&root);
    }
});
