#![no_main]
use libfuzzer_sys::fuzz_target;

// loader.conf: every edit keeps the user's other lines byte for byte.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (k, v) in [("default", Some("lb-*")), ("timeout", Some("5")), ("default", None)] {
        let out = lifeboat_boot::loaderconf::set_key(&text, k, v);
        let _ = lifeboat_boot::loaderconf::set_key(&out, k, v);
    }
});
