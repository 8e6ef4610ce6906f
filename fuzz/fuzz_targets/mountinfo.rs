#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let m = lifeboat_esp::discover::parse_mountinfo(&text);
    let _ = lifeboat_esp::discover::mount_of(&m, std::path::Path::new("/usr"));
});
