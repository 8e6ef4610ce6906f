#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = lifeboat_boot::loadopt::LoadOption::decode(data) {
        let _ = lifeboat_boot::loadopt::LoadOption::decode(&o.encode());
    }
});
