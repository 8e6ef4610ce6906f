#![no_main]
use libfuzzer_sys::fuzz_target;

// The init check's ELF reader, a module's .modinfo, and compressed modules.
fuzz_target!(|data: &[u8]| {
    if let Some(e) = lifeboat::pid1::elf::Elf::parse(data) {
        let _ = (e.interp(), e.needed());
    }
    let _ = lifeboat_initrd::modules::modinfo::values(data, "firmware");
    use lifeboat_initrd::modules::compress::{decompress, Format};
    for f in [Format::Zstd, Format::Xz] {
        let _ = decompress(f, "fuzz", data);
    }
});
