#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let e = lifeboat_boot::bls::Entry::parse(&text);
    let _ = lifeboat_boot::bls::Entry::parse(&e.render());
    let _ = lifeboat_boot::bls::split_counter(&text, ".conf");
    let _ = lifeboat_boot::loaderconf::set_key(&text, "default", Some("x"));
    let mut halves = text.splitn(2, '\n');
    let (a, b) = (halves.next().unwrap_or(""), halves.next().unwrap_or(""));
    let _ = lifeboat_boot::version::compare(a, b);
});
