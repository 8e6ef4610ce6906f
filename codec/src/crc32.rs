//! The reflected CRC-32 (polynomial 0xEDB88320) that several on-disk formats
//! checksum with: GPT headers and partition arrays take it as IEEE 802.3 does
//! (start from all ones, invert at the end, [`crc32`]); LVM2 runs the same
//! register from its own start value with no inversion ([`crc32_update`]).

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// The register after `data`, from `state`, with no inversion either side:
/// `crc32_update(crc32_update(s, a), b)` is `a` then `b`.
pub fn crc32_update(state: u32, data: &[u8]) -> u32 {
    data.iter().fold(state, |c, &b| TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

/// CRC-32 as IEEE 802.3, zlib and GPT define it.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            super::crc32_update(super::crc32_update(7, b"1234"), b"56789"),
            super::crc32_update(7, b"123456789")
        );
    }
}
