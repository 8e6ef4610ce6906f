#![no_main]
use libfuzzer_sys::fuzz_target;

// Filesystem superblocks PID 1 reads to find and mount the root, and kmsg records.
fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_esp::blockdev::probe_fs_bytes(data);
    let _ = lifeboat::kmsg::Record::parse(data);
    let _ = lifeboat_state::moss::stamp::Stamp::parse(&String::from_utf8_lossy(data));
});
