//! Unified kernel images: reading what systemd-boot shows of one ([`read_uki`])
//! and building one from systemd-stub ([`build_uki`]).

use crate::{Error, PeImage};

/// What systemd-boot reads from a Type #2 entry (a UKI): the sections as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UkiInfo {
    pub osrel: Option<String>,
    pub cmdline: Option<String>,
    pub uname: Option<String>,
    pub sbat: Option<String>,
    pub linux_size: u64,
    pub initrd_size: u64,
}

/// Reads a UKI's text sections (`.osrel`, `.cmdline`, `.uname`, `.sbat`, each as
/// lossy UTF-8 with trailing NULs trimmed, as systemd-boot reads them) and the
/// sizes of `.linux` and `.initrd`. An error when `bytes` is not a PE image or has
/// no `.linux` section.
pub fn read_uki(bytes: &[u8]) -> Result<UkiInfo, Error> {
    let pe = PeImage::parse(bytes)?;
    let linux = pe.section(".linux").ok_or(Error::NotUki { missing: ".linux" })?;
    let text = |name: &str| {
        pe.section(name).map(|d| {
            let end = d.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            String::from_utf8_lossy(&d[..end]).into_owned()
        })
    };
    Ok(UkiInfo {
        osrel: text(".osrel"),
        cmdline: text(".cmdline"),
        uname: text(".uname"),
        sbat: text(".sbat"),
        linux_size: linux.len() as u64,
        initrd_size: pe.section(".initrd").map_or(0, |d| d.len() as u64),
    })
}

/// The parts of a UKI: systemd-stub and the payload sections.
#[derive(Clone, Copy, Debug)]
pub struct UkiParts<'a> {
    /// systemd-stub (`linuxx64.efi.stub`), the PE image the sections are added to.
    pub stub: &'a [u8],
    /// os-release of the system the kernel boots.
    pub osrel: &'a [u8],
    /// The kernel command line.
    pub cmdline: &'a [u8],
    /// The kernel's release (`uname -r`), if given.
    pub uname: Option<&'a [u8]>,
    pub initrd: &'a [u8],
    /// The kernel (bzImage).
    pub linux: &'a [u8],
}

/// Characteristics of every added section, as objcopy's `--add-section` and ukify
/// set them: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ.
pub const UKI_SECTION_CHARACTERISTICS: u32 = 0x4000_0040;

fn align_up(v: u64, a: u32) -> u64 {
    let a = u64::from(a);
    v.div_ceil(a) * a
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    lifeboat_codec::le_u32_at(b, at).unwrap_or(0)
}

/// Builds a unified kernel image: the stub with `.osrel`, `.cmdline`, `.uname` (if
/// given), `.initrd` and `.linux` appended in that order (`.linux` last, as ukify
/// does; an empty part other than `.linux` is left out, which systemd-stub treats
/// as absent). systemd-stub finds them by name in its loaded image, at ImageBase +
/// VirtualAddress for VirtualSize bytes: each section gets the next VirtualAddress
/// aligned to SectionAlignment after everything the stub maps, raw data aligned to
/// FileAlignment after the stub's last section, VirtualSize = the part's length.
///
/// The stub's bytes after its last section (a COFF symbol table, a signature) are
/// not carried over; its certificate-table entry and COFF symbol-table pointer are
/// cleared; NumberOfSections, SizeOfImage, SizeOfInitializedData and the checksum
/// are updated. The output depends on the inputs only.
pub fn build_uki(parts: &UkiParts) -> Result<Vec<u8>, Error> {
    let pe = PeImage::parse(parts.stub)?;
    if parts.linux.is_empty() {
        return Err(Error::Build { why: "the kernel (.linux) is empty".into() });
    }
    let mut add: Vec<(&[u8; 8], &[u8])> = vec![(b".osrel\0\0", parts.osrel), (b".cmdline", parts.cmdline)];
    if let Some(u) = parts.uname {
        add.push((b".uname\0\0", u));
    }
    add.push((b".initrd\0", parts.initrd));
    add.retain(|(_, d)| !d.is_empty());
    add.push((b".linux\0\0", parts.linux));
    for (name, _) in &add {
        let n = std::str::from_utf8(&name[..]).unwrap_or("").trim_end_matches('\0');
        if pe.section(n).is_some() {
            return Err(Error::Build { why: format!("the stub already has a {n} section") });
        }
    }

    // Room for the new section headers: before SizeOfHeaders and before the first
    // section's raw data.
    let table_end = pe.section_table_offset() + pe.sections().len() * crate::image::SECTION_HEADER_SIZE;
    let first_raw = pe
        .sections()
        .iter()
        .filter(|s| s.raw_size != 0)
        .map(|s| s.raw_offset as usize)
        .chain([pe.size_of_headers() as usize])
        .min()
        .unwrap_or(0);
    let need = add.len() * crate::image::SECTION_HEADER_SIZE;
    let have = first_raw.saturating_sub(table_end);
    if need > have {
        return Err(Error::NoRoom { need, have });
    }

    // The stub's bytes end with its last section's raw data.
    let raw_end = pe
        .sections()
        .iter()
        // A section with no raw data has no bytes in the file, whatever its
        // PointerToRawData says (the reader checks only sections with data).
        .filter(|s| s.raw_size != 0)
        .map(|s| u64::from(s.raw_offset) + u64::from(s.raw_size))
        .chain([u64::from(pe.size_of_headers())])
        .max()
        .unwrap_or(0);
    let mut virt_end = pe
        .sections()
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
        .chain([u64::from(pe.size_of_image())])
        .max()
        .unwrap_or(0);
    let fa = pe.file_alignment();
    let sa = pe.section_alignment();
    let mut out = usize::try_from(raw_end)
        .ok()
        .and_then(|end| parts.stub.get(..end))
        .ok_or_else(|| Error::Build { why: format!("the stub's sections end at byte {raw_end}, past its end") })?
        .to_vec();
    let mut file_end = align_up(raw_end, fa);
    let too_big = || Error::Build { why: "the image would exceed the 4 GiB a PE image can address".into() };
    let mut headers = Vec::with_capacity(need);
    let mut init_data: u64 = 0;
    for (name, data) in &add {
        let va = align_up(virt_end, sa);
        let raw_size = align_up(data.len() as u64, fa);
        let vsize = u32::try_from(data.len()).map_err(|_| too_big())?;
        if va + raw_size > u64::from(u32::MAX) || file_end + raw_size > u64::from(u32::MAX) {
            return Err(too_big());
        }
        let mut h = [0u8; crate::image::SECTION_HEADER_SIZE];
        h[..8].copy_from_slice(&name[..]);
        put_u32(&mut h, 8, vsize);
        put_u32(&mut h, 12, va as u32);
        put_u32(&mut h, 16, raw_size as u32);
        put_u32(&mut h, 20, file_end as u32);
        put_u32(&mut h, 36, UKI_SECTION_CHARACTERISTICS);
        headers.extend_from_slice(&h);
        out.resize(file_end as usize, 0);
        out.extend_from_slice(data);
        file_end += raw_size;
        out.resize(file_end as usize, 0);
        virt_end = va + u64::from(vsize);
        init_data += raw_size;
    }
    out[table_end..table_end + need].copy_from_slice(&headers);
    let coff = pe.coff_header_offset();
    put_u16(&mut out, coff + 2, (pe.sections().len() + add.len()) as u16);
    // The COFF symbol table was after the last section: it is gone.
    put_u32(&mut out, coff + 8, 0);
    put_u32(&mut out, coff + 12, 0);
    let opt = pe.checksum_offset() - 64;
    let old_init = u64::from(get_u32(&out, opt + 8));
    put_u32(&mut out, opt + 8, u32::try_from(old_init + init_data).map_err(|_| too_big())?);
    put_u32(&mut out, opt + 56, u32::try_from(align_up(virt_end, sa)).map_err(|_| too_big())?);
    if let Some(at) = pe.cert_dir_offset() {
        out[at..at + 8].fill(0);
    }
    crate::image::store_checksum(&mut out, pe.checksum_offset());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tests::tiny;

    fn parts<'a>(stub: &'a [u8], initrd: &'a [u8], uname: Option<&'a [u8]>) -> UkiParts<'a> {
        UkiParts { stub, osrel: b"ID=x\n", cmdline: b"quiet", uname, initrd, linux: b"KERNEL" }
    }

    #[test]
    fn layout_is_pinned() {
        let stub = tiny();
        let uki = build_uki(&parts(&stub, b"", None)).unwrap();
        let pe = PeImage::parse(&uki).unwrap();
        let got: Vec<(&str, u32, u32, u32, u32, u32)> = pe
            .sections()
            .iter()
            .map(|s| (s.name.as_str(), s.virtual_address, s.virtual_size, s.raw_offset, s.raw_size, s.characteristics))
            .collect();
        assert_eq!(
            got,
            [
                (".text", 0x1000, 5, 0x200, 0x200, 0x6000_0020),
                (".osrel", 0x2000, 5, 0x400, 0x200, 0x4000_0040),
                (".cmdline", 0x3000, 5, 0x600, 0x200, 0x4000_0040),
                (".linux", 0x4000, 6, 0x800, 0x200, 0x4000_0040),
            ]
        );
        assert_eq!(uki.len(), 0xa00);
        assert_eq!(pe.size_of_image(), 0x5000);
        // SizeOfInitializedData grew by the three raw sizes.
        assert_eq!(lifeboat_codec::le_u32_at(&uki, 0x58 + 8), Some(0x600));
        assert_eq!(pe.stored_checksum(), crate::pe_checksum(&uki, pe.checksum_offset()));
        let info = read_uki(&uki).unwrap();
        assert_eq!((info.osrel.as_deref(), info.cmdline.as_deref()), (Some("ID=x\n"), Some("quiet")));
        assert_eq!((info.linux_size, info.initrd_size), (6, 0));
        // Deterministic.
        assert_eq!(build_uki(&parts(&stub, b"", None)).unwrap(), uki);
    }

    #[test]
    fn refuses_when_the_section_table_has_no_room() {
        let stub = tiny();
        // 144 bytes free between the table (ending at 0x170) and the first data (0x200).
        let e = build_uki(&parts(&stub, b"initrd", Some(b"6.1.0"))).unwrap_err();
        assert!(matches!(e, Error::NoRoom { need: 200, have: 144 }), "{e}");
        assert!(e.to_string().contains("no room"));
    }

    /// A stub with a section that has no raw data but a PointerToRawData past
    /// the file's end (the reader does not check it: there are no bytes to
    /// read) is built around, never sliced by.
    #[test]
    fn a_section_without_raw_data_pointing_past_the_end_is_no_panic() {
        let mut stub = tiny();
        // Headers of 0x400 bytes (room for more section headers), .text moved there.
        stub.resize(0x600, 0);
        stub.copy_within(0x200..0x400, 0x400);
        stub[0x200..0x400].fill(0);
        let opt = 0x58;
        stub[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        stub[opt + 56..opt + 60].copy_from_slice(&0x3000u32.to_le_bytes());
        let st = opt + 240;
        stub[st + 20..st + 24].copy_from_slice(&0x400u32.to_le_bytes());
        // A second section, .bss: VirtualSize 0x100, no raw data, offset far out.
        stub[0x46..0x48].copy_from_slice(&2u16.to_le_bytes());
        let bss = st + 40;
        stub[bss..bss + 4].copy_from_slice(b".bss");
        stub[bss + 8..bss + 12].copy_from_slice(&0x100u32.to_le_bytes());
        stub[bss + 12..bss + 16].copy_from_slice(&0x2000u32.to_le_bytes());
        stub[bss + 20..bss + 24].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        stub[bss + 36..bss + 40].copy_from_slice(&0xc000_0080u32.to_le_bytes());
        PeImage::parse(&stub).expect("the reader takes it");
        let uki = build_uki(&parts(&stub, b"initrd", Some(b"6.1.0"))).expect("built");
        let info = read_uki(&uki).unwrap();
        assert_eq!((info.linux_size, info.initrd_size), (6, 6));
    }

    #[test]
    fn refuses_an_empty_kernel_and_a_stub_that_is_already_a_uki() {
        let stub = tiny();
        let mut p = parts(&stub, b"", None);
        p.linux = b"";
        assert!(build_uki(&p).unwrap_err().to_string().contains("kernel (.linux) is empty"));
        let uki = build_uki(&parts(&stub, b"", None)).unwrap();
        assert!(build_uki(&parts(&uki, b"", None)).unwrap_err().to_string().contains("already has a .osrel"));
    }
}
