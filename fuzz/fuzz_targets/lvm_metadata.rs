#![no_main]
use libfuzzer_sys::fuzz_target;

// LVM2 metadata text (parser, model, activation plan) and PV labels/metadata
// areas, on arbitrary bytes.
fuzz_target!(|data: &[u8]| {
    lifeboat_dm::fuzzing::lvm_metadata(data);
});
