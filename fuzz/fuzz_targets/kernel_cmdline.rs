#![no_main]
use libfuzzer_sys::fuzz_target;

// /proc/cmdline as PID 1 reads it (any bytes), and root= in every form.
fuzz_target!(|data: &[u8]| {
    let c = lifeboat::cmdline::KernelCmdline::parse_bytes(data);
    let _ = (c.tx(), c.read_only(), c.flag("lifeboat.repair"));
    if let Ok(spec) = lifeboat::pid1::root::RootSpec::parse(c.get("root")) {
        let _ = spec.find(&[], None);
    }
});
