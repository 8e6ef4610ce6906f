//! The bounded PE/COFF reader: DOS header, PE signature, COFF header, optional
//! header (PE32 and PE32+), data directories and the section table, each read
//! through `lifeboat_codec::Reader` and every offset and size checked against the
//! image before it is used. It also keeps the file offsets of the fields the
//! builder and the signer rewrite (CheckSum, the certificate-table entry) and
//! computes the PE checksum.

use lifeboat_codec::Reader;

use crate::Error;

/// `MZ`.
const DOS_MAGIC: u16 = 0x5a4d;
/// `PE\0\0`.
const PE_MAGIC: u32 = 0x0000_4550;
pub(crate) const PE32_MAGIC: u16 = 0x10b;
pub(crate) const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Size of one section header.
pub(crate) const SECTION_HEADER_SIZE: usize = 40;
/// The certificate table's index among the data directories.
pub(crate) const CERT_DIR: usize = 4;
/// Section tables longer than this are refused (the PE format's own limit is
/// 96 for older loaders and 65535 for the field; no UEFI image comes near).
const MAX_SECTIONS: usize = 4096;

/// One section: its name, where it is loaded and its bytes as the loader sees
/// them (raw data trimmed to VirtualSize).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section<'a> {
    /// The 8-byte name up to its first NUL (a long `/N` name is kept as written).
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    /// The raw data, at most VirtualSize bytes of it (all of it when VirtualSize is 0).
    pub data: &'a [u8],
    /// PointerToRawData.
    pub raw_offset: u32,
    /// SizeOfRawData.
    pub raw_size: u32,
    /// The section's Characteristics flags.
    pub characteristics: u32,
}

/// A parsed PE image borrowing its bytes.
#[derive(Clone, Debug)]
pub struct PeImage<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) sections: Vec<Section<'a>>,
    /// File offset of the COFF header (after `PE\0\0`).
    pub(crate) coff_at: usize,
    /// File offset of the optional header.
    pub(crate) opt_at: usize,
    pub(crate) magic: u16,
    /// File offset of the section table.
    pub(crate) section_table_at: usize,
    /// File offset of the data directories and how many there are.
    pub(crate) dirs_at: usize,
    pub(crate) dir_count: usize,
    pub(crate) section_alignment: u32,
    pub(crate) file_alignment: u32,
    pub(crate) size_of_image: u32,
    pub(crate) size_of_headers: u32,
    /// The certificate table as (file offset, size); (0, 0) when there is none.
    pub(crate) cert_table: (u32, u32),
}

impl<'a> PeImage<'a> {
    /// Parses the headers and the section table of `bytes`. Bounded: any offset or
    /// size outside the image is an [`Error`], never a panic.
    pub fn parse(bytes: &'a [u8]) -> Result<PeImage<'a>, Error> {
        let mut r = Reader::new(bytes);
        let mz = r.u16_le("DOS header magic")?;
        if mz != DOS_MAGIC {
            return Err(Error::BadMagic { what: "DOS header magic (MZ)", at: 0, found: mz.into() });
        }
        r.seek(0x3c, "DOS header")?;
        let e_lfanew = r.u32_le("DOS header e_lfanew")? as usize;
        r.seek(e_lfanew, "PE signature (e_lfanew)")?;
        let sig = r.u32_le("PE signature")?;
        if sig != PE_MAGIC {
            return Err(Error::BadMagic { what: "PE signature", at: e_lfanew, found: sig });
        }
        let coff_at = r.position();
        let _machine = r.u16_le("COFF Machine")?;
        let nsections = r.u16_le("COFF NumberOfSections")? as usize;
        r.skip(12, "COFF TimeDateStamp and symbol table fields")?;
        let opt_size = r.u16_le("COFF SizeOfOptionalHeader")? as usize;
        let _characteristics = r.u16_le("COFF Characteristics")?;
        let opt_at = r.position();
        let mut opt = r.sub(opt_size, "optional header")?;
        let section_table_at = r.position();

        let magic = opt.u16_le("optional header Magic")?;
        let (dirs_off, count_off) = match magic {
            PE32_PLUS_MAGIC => (112, 108),
            PE32_MAGIC => (96, 92),
            m => {
                return Err(Error::BadMagic {
                    what: "optional header Magic (PE32 or PE32+)",
                    at: opt_at,
                    found: m.into(),
                })
            }
        };
        opt.seek(32, "optional header")?;
        let section_alignment = opt.u32_le("SectionAlignment")?;
        let file_alignment = opt.u32_le("FileAlignment")?;
        opt.seek(56, "optional header")?;
        let size_of_image = opt.u32_le("SizeOfImage")?;
        let size_of_headers = opt.u32_le("SizeOfHeaders")?;
        opt.seek(count_off, "optional header")?;
        let dir_count = opt.u32_le("NumberOfRvaAndSizes")? as usize;
        if dir_count > opt.left() / 8 {
            return Err(Error::BadField {
                what: "NumberOfRvaAndSizes",
                at: opt_at + count_off,
                value: dir_count as u64,
                why: "more data directories than the optional header holds",
            });
        }
        let dirs_at = opt_at + dirs_off;
        for (what, v, at) in
            [("SectionAlignment", section_alignment, opt_at + 32), ("FileAlignment", file_alignment, opt_at + 36)]
        {
            if v == 0 || !v.is_power_of_two() {
                return Err(Error::BadField { what, at, value: v.into(), why: "not a power of two" });
            }
        }
        if size_of_headers as usize > bytes.len() {
            return Err(Error::BadField {
                what: "SizeOfHeaders",
                at: opt_at + 60,
                value: size_of_headers.into(),
                why: "beyond the end of the image",
            });
        }

        let cert_table = if dir_count > CERT_DIR {
            let mut d = Reader::new(bytes);
            d.seek(dirs_at + CERT_DIR * 8, "certificate table directory entry")?;
            let off = d.u32_le("certificate table offset")?;
            let size = d.u32_le("certificate table size")?;
            if size != 0 && (off as u64 + size as u64 > bytes.len() as u64 || (off as usize) < section_table_at) {
                return Err(Error::BadCertTable {
                    offset: off.into(),
                    size: size.into(),
                    why: format!("outside the image ({} bytes) or inside its headers", bytes.len()),
                });
            }
            if size == 0 {
                (0, 0)
            } else {
                (off, size)
            }
        } else {
            (0, 0)
        };

        if nsections > MAX_SECTIONS {
            return Err(Error::BadField {
                what: "COFF NumberOfSections",
                at: coff_at + 2,
                value: nsections as u64,
                why: "too many sections",
            });
        }
        let mut t = r.sub(nsections * SECTION_HEADER_SIZE, "section table")?;
        let mut sections = Vec::with_capacity(nsections);
        for index in 0..nsections {
            let raw_name: [u8; 8] = t.array("section Name")?;
            let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
            let name = String::from_utf8_lossy(&raw_name[..name_len]).into_owned();
            let virtual_size = t.u32_le("section VirtualSize")?;
            let virtual_address = t.u32_le("section VirtualAddress")?;
            let raw_size = t.u32_le("section SizeOfRawData")?;
            let raw_offset = t.u32_le("section PointerToRawData")?;
            t.skip(12, "section relocation and line number fields")?;
            let characteristics = t.u32_le("section Characteristics")?;
            let data = if raw_size == 0 {
                &bytes[..0]
            } else {
                let start = raw_offset as usize;
                let end = start.checked_add(raw_size as usize).filter(|&e| e <= bytes.len()).ok_or_else(|| {
                    Error::BadSection {
                        index,
                        name: name.clone(),
                        why: format!(
                            "raw data at offset {raw_offset:#x}, {raw_size} bytes, is past the end of the \
                             image ({} bytes)",
                            bytes.len()
                        ),
                    }
                })?;
                let raw = &bytes[start..end];
                if virtual_size != 0 && (virtual_size as usize) < raw.len() {
                    &raw[..virtual_size as usize]
                } else {
                    raw
                }
            };
            sections.push(Section { name, virtual_address, virtual_size, data, raw_offset, raw_size, characteristics });
        }
        Ok(PeImage {
            bytes,
            sections,
            coff_at,
            opt_at,
            magic,
            section_table_at,
            dirs_at,
            dir_count,
            section_alignment,
            file_alignment,
            size_of_image,
            size_of_headers,
            cert_table,
        })
    }

    /// Every section, in the order of the section table.
    pub fn sections(&self) -> &[Section<'a>] {
        &self.sections
    }

    /// The data of the first section called `name`, trimmed to its VirtualSize.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        self.sections.iter().find(|s| s.name == name).map(|s| s.data)
    }

    /// True when the image has a non-empty certificate table (an Authenticode signature).
    pub fn is_signed(&self) -> bool {
        self.cert_table.1 != 0
    }

    /// PE32+ (64-bit) rather than PE32.
    pub fn is_pe32_plus(&self) -> bool {
        self.magic == PE32_PLUS_MAGIC
    }

    pub fn section_alignment(&self) -> u32 {
        self.section_alignment
    }

    pub fn file_alignment(&self) -> u32 {
        self.file_alignment
    }

    pub fn size_of_image(&self) -> u32 {
        self.size_of_image
    }

    pub fn size_of_headers(&self) -> u32 {
        self.size_of_headers
    }

    /// The certificate table's file offset and size, when there is one.
    pub fn certificate_table(&self) -> Option<(u32, u32)> {
        self.is_signed().then_some(self.cert_table)
    }

    /// The CheckSum field as stored.
    pub fn stored_checksum(&self) -> u32 {
        lifeboat_codec::le_u32_at(self.bytes, self.checksum_at()).unwrap_or(0)
    }

    /// File offset of the section table.
    pub fn section_table_offset(&self) -> usize {
        self.section_table_at
    }

    /// File offset of the COFF header.
    pub fn coff_header_offset(&self) -> usize {
        self.coff_at
    }

    /// File offset of the optional header's CheckSum field (the same in PE32 and PE32+).
    pub fn checksum_offset(&self) -> usize {
        self.checksum_at()
    }

    /// File offset of the optional header's CheckSum field (the same in PE32 and PE32+).
    pub(crate) fn checksum_at(&self) -> usize {
        self.opt_at + 64
    }

    /// File offset of the certificate-table directory entry, if the image has one.
    pub fn cert_dir_offset(&self) -> Option<usize> {
        (self.dir_count > CERT_DIR).then_some(self.dirs_at + CERT_DIR * 8)
    }
}

/// The PE checksum (as `imagehlp`'s CheckSumMappedFile computes it) of `bytes`,
/// whose CheckSum field is at `checksum_at` and counts as zero: the 16-bit
/// little-endian words summed with end-around carry, plus the file's length.
pub fn pe_checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for (i, w) in chunks.by_ref().enumerate() {
        let at = i * 2;
        let v = if at >= checksum_at && at < checksum_at + 4 { 0 } else { u16::from_le_bytes([w[0], w[1]]) };
        sum += u64::from(v);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// Recomputes and stores the checksum of a whole image in place.
pub(crate) fn store_checksum(bytes: &mut [u8], checksum_at: usize) {
    let sum = pe_checksum(bytes, checksum_at);
    bytes[checksum_at..checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: headers of 0x200 bytes, one `.text` section of 0x200
    /// raw bytes whose VirtualSize is 5, 16 data directories.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 56..opt + 60].copy_from_slice(&0x2000u32.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let st = opt + 240;
        b[st..st + 5].copy_from_slice(b".text");
        b[st + 8..st + 12].copy_from_slice(&5u32.to_le_bytes());
        b[st + 12..st + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        b[st + 16..st + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[st + 20..st + 24].copy_from_slice(&0x200u32.to_le_bytes());
        b[st + 36..st + 40].copy_from_slice(&0x6000_0020u32.to_le_bytes());
        b[0x200..0x205].copy_from_slice(b"hello");
        b[0x205] = 0xcc;
        b
    }

    #[test]
    fn parses_a_minimal_image() {
        let b = tiny();
        let pe = PeImage::parse(&b).unwrap();
        assert!(pe.is_pe32_plus());
        assert_eq!(pe.section_table_offset(), 0x148);
        assert_eq!(pe.checksum_offset(), 0x58 + 64);
        assert_eq!(pe.cert_dir_offset(), Some(0x58 + 112 + 32));
        assert_eq!(pe.sections().len(), 1);
        let s = &pe.sections()[0];
        assert_eq!((s.name.as_str(), s.virtual_address, s.virtual_size), (".text", 0x1000, 5));
        // Trimmed to VirtualSize: the 0xcc after it is not data.
        assert_eq!(pe.section(".text"), Some(&b"hello"[..]));
        assert_eq!(pe.section(".data"), None);
        assert!(!pe.is_signed());
    }

    #[test]
    fn parses_pe32() {
        // The same image as PE32: a 224-byte optional header, 16 directories at 96.
        let mut b = tiny();
        let opt = 0x58;
        b[0x54..0x56].copy_from_slice(&224u16.to_le_bytes());
        b[opt..opt + 2].copy_from_slice(&0x10bu16.to_le_bytes());
        b[opt + 108..opt + 112].fill(0);
        b[opt + 92..opt + 96].copy_from_slice(&16u32.to_le_bytes());
        // The section table moves up by 16 bytes.
        let st = b[0x148..0x170].to_vec();
        b[0x148..0x170].fill(0);
        b[0x138..0x160].copy_from_slice(&st);
        let pe = PeImage::parse(&b).unwrap();
        assert!(!pe.is_pe32_plus());
        assert_eq!(pe.section_table_offset(), 0x138);
        assert_eq!(pe.cert_dir_offset(), Some(opt + 96 + 32));
        assert_eq!(pe.section(".text"), Some(&b"hello"[..]));
        assert_eq!(crate::authenticode_sha256(&b).unwrap().len(), 32);
    }

    #[test]
    fn hostile_headers_are_typed_errors() {
        let b = tiny();
        let err = |m: &dyn Fn(&mut Vec<u8>)| {
            let mut c = b.clone();
            m(&mut c);
            PeImage::parse(&c).unwrap_err().to_string()
        };
        assert!(err(&|c| c[0] = b'X').contains("MZ"));
        assert!(err(&|c| c[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes())).contains("e_lfanew"));
        assert!(err(&|c| c[0x41] = b'X').contains("PE signature"));
        assert!(err(&|c| c[0x58] = 0).contains("Magic"));
        assert!(err(&|c| c[0x58 + 108] = 200).contains("NumberOfRvaAndSizes"));
        assert!(err(&|c| c[0x58 + 33] = 3).contains("SectionAlignment"));
        assert!(err(&|c| c[0x46..0x48].copy_from_slice(&0xffffu16.to_le_bytes())).contains("NumberOfSections"));
        assert!(err(&|c| c[0x46..0x48].copy_from_slice(&60u16.to_le_bytes())).contains("section table"));
        assert!(err(&|c| c[0x148 + 20..0x148 + 24].copy_from_slice(&0xffff_ff00u32.to_le_bytes()))
            .contains("section 0 (\".text\"): raw data at offset 0xffffff00"));
        let cert = 0x58 + 112 + 32;
        assert!(err(&|c| {
            c[cert..cert + 4].copy_from_slice(&0x300u32.to_le_bytes());
            c[cert + 4..cert + 8].copy_from_slice(&0x200u32.to_le_bytes());
        })
        .contains("certificate table at offset 0x300"));
        for n in 0..b.len() {
            assert!(PeImage::parse(&b[..n]).is_err(), "{n} bytes parsed");
        }
    }

    #[test]
    fn checksum_is_pinned() {
        let b = tiny();
        let pe = PeImage::parse(&b).unwrap();
        // 16-bit words of the image summed with carry, plus its length (pinned; the
        // integration tests check the algorithm against the GNU linker's own checksums).
        assert_eq!(pe_checksum(&b, pe.checksum_offset()), 0x60c0);
        let mut odd = b.clone();
        odd.push(0x07);
        assert_eq!(pe_checksum(&odd, pe.checksum_offset()), 0x60c0 + 7 + 1);
    }
}
