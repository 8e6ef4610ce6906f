//! The reader against real images and real tools: systemd's stub and boot loader
//! as Debian ships them (their CheckSum fields, written by the GNU linker, are the
//! oracle for the checksum), `objdump -h` for the section table, and a UKI made
//! by the objcopy recipe of systemd 252's documentation for `read_uki`.

mod common;

use common::*;
use lifeboat_pe::{pe_checksum, read_uki, PeImage};

#[test]
fn sections_match_objdump_and_checksums_match_the_linker() {
    for path in [STUB, SYSTEMD_BOOT] {
        let bytes = read(path);
        let pe = PeImage::parse(&bytes).unwrap();
        assert!(pe.is_pe32_plus());
        assert!(!pe.is_signed());
        assert_eq!(pe_checksum(&bytes, pe.checksum_offset()), pe.stored_checksum(), "{path}");
        let ours: Vec<(String, u32, u32)> =
            pe.sections().iter().map(|s| (s.name.clone(), s.virtual_address, s.virtual_size)).collect();
        assert_eq!(ours, objdump_sections(std::path::Path::new(path)), "{path}");
        for s in pe.sections() {
            assert_eq!(s.data.len(), (s.virtual_size.min(s.raw_size)) as usize);
        }
    }
    let boot = read(SYSTEMD_BOOT);
    let pe = PeImage::parse(&boot).unwrap();
    let osrel = String::from_utf8_lossy(pe.section(".osrel").unwrap()).into_owned();
    assert!(osrel.contains("systemd-boot"), "{osrel}");
    // Not a UKI: no .linux.
    assert_eq!(read_uki(&boot).unwrap_err().to_string(), "not a unified kernel image: no .linux section");
}

#[test]
fn read_uki_reads_an_objcopy_made_uki() {
    let dir = TempDir::new("reader-objcopy");
    let uki =
        objcopy_uki(&dir, b"ID=debian\nPRETTY_NAME=\"Debian 12\"\n\0\0", b"root=/dev/vda1 ro\0", b"KERNEL", b"INITRD!");
    let info = read_uki(&uki).unwrap();
    assert_eq!(info.osrel.as_deref(), Some("ID=debian\nPRETTY_NAME=\"Debian 12\"\n"));
    assert_eq!(info.cmdline.as_deref(), Some("root=/dev/vda1 ro"));
    assert_eq!(info.uname, None);
    assert!(info.sbat.as_deref().unwrap().starts_with("sbat,1,"));
    assert_eq!((info.linux_size, info.initrd_size), (6, 7));
}
