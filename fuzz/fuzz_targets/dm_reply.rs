#![no_main]
use libfuzzer_sys::fuzz_target;

// Device-mapper ioctl replies (struct dm_ioctl, the data area, dm_name_list) on
// arbitrary bytes.
fuzz_target!(|data: &[u8]| {
    lifeboat_dm::fuzzing::dm_reply(data);
});
