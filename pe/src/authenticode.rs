//! The Authenticode image hash (the "PE image hash" of Microsoft's *Windows
//! Authenticode Portable Executable Signature Format*): SHA-256 over the headers
//! without the CheckSum field and the certificate-table directory entry, then each
//! section's raw data in the order of PointerToRawData, then whatever follows the
//! sections up to the certificate table. UEFI firmware and sbverify compute it the
//! same way; it is what a signature's SpcIndirectDataContent carries.

use sha2::{Digest, Sha256};

use crate::{Error, PeImage};

/// The Authenticode SHA-256 of `image` as it is (an unsigned image's bytes to its
/// end; a signed one's up to its certificate table, which must end the file).
pub fn authenticode_sha256(image: &[u8]) -> Result<[u8; 32], Error> {
    let pe = PeImage::parse(image)?;
    image_hash(&pe)
}

pub(crate) fn image_hash(pe: &PeImage) -> Result<[u8; 32], Error> {
    let bytes = pe.bytes;
    let headers = pe.size_of_headers() as usize;
    let checksum = pe.checksum_offset();
    let bad_headers = |what| Error::BadField {
        what,
        at: pe.checksum_offset() - 4,
        value: headers as u64,
        why: "SizeOfHeaders ends before the fields the image hash skips",
    };
    let mut h = Sha256::new();
    // Headers: [0, CheckSum), [CheckSum + 4, certificate entry), [entry + 8, SizeOfHeaders).
    if checksum + 4 > headers {
        return Err(bad_headers("SizeOfHeaders"));
    }
    h.update(&bytes[..checksum]);
    match pe.cert_dir_offset() {
        Some(dir) => {
            if dir + 8 > headers {
                return Err(bad_headers("SizeOfHeaders"));
            }
            h.update(&bytes[checksum + 4..dir]);
            h.update(&bytes[dir + 8..headers]);
        }
        None => h.update(&bytes[checksum + 4..headers]),
    }
    let mut sum = headers as u64;
    let mut sections: Vec<_> = pe.sections().iter().filter(|s| s.raw_size != 0).collect();
    sections.sort_by_key(|s| s.raw_offset);
    for s in sections {
        // In bounds: PeImage::parse checked every section's raw data.
        let start = s.raw_offset as usize;
        h.update(&bytes[start..start + s.raw_size as usize]);
        sum += u64::from(s.raw_size);
    }
    let end = match pe.certificate_table() {
        Some((off, size)) => {
            if u64::from(off) + u64::from(size) != bytes.len() as u64 {
                return Err(Error::BadCertTable {
                    offset: off.into(),
                    size: size.into(),
                    why: format!("does not end the file ({} bytes)", bytes.len()),
                });
            }
            off as usize
        }
        None => bytes.len(),
    };
    if (sum as usize) < end {
        h.update(&bytes[sum as usize..end]);
    }
    Ok(h.finalize().into())
}
