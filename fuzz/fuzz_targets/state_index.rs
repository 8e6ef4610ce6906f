#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = lifeboat_state::index::file::decode(data) {
        for t in idx.transactions().map(|t| t.id).collect::<Vec<_>>() {
            let _ = idx.layout(t);
        }
    }
});
