//! Content hashes: xxh3-128 digests as the content store names them.
//!
//! moss formats a digest with `{:02x}` of the `u128`, so leading zero nibbles are
//! dropped. Store paths must match that byte for byte, while `xxhsum -H2` (and people)
//! print the zero-padded canonical form; both are offered here.

use std::fmt;
use std::io::{self, Read};

use xxhash_rust::xxh3::Xxh3;

/// An xxh3-128 digest of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash128(pub u128);

/// The longest [`Hash128::store_path`]: three two-digit levels and 32 digits.
pub const STORE_PATH_MAX: usize = 9 + 32;

/// Feeds the rest of `r` into `h`; returns how many bytes that was.
fn hash_rest(h: &mut Xxh3, mut r: impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
}

impl Hash128 {
    /// The digest of an in-memory buffer.
    pub fn of(bytes: &[u8]) -> Self {
        Hash128(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// Hashes a file expected to hold `expect` bytes, to its end, with `buf` as
    /// scratch space. Each read asks for one byte past the expected end, so a file
    /// of the expected size is read without the extra zero-length read that finds
    /// its end (a regular file's short read is its end), and a file that fits in
    /// `buf` is hashed in one shot. Files of any other size are still hashed whole.
    pub fn of_file_expecting(mut r: impl Read, expect: u64, buf: &mut [u8]) -> io::Result<(Self, u64)> {
        let mut h: Option<Xxh3> = None;
        let mut total = 0u64;
        loop {
            let left = expect.saturating_sub(total);
            let want = if left < buf.len() as u64 { left as usize + 1 } else { buf.len() };
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if h.is_none() && total == 0 && n < want && n as u64 == expect {
                return Ok((Hash128(xxhash_rust::xxh3::xxh3_128(&buf[..n])), n as u64));
            }
            h.get_or_insert_with(Xxh3::new).update(&buf[..n]);
            total += n as u64;
            if n < want && total == expect {
                break;
            }
        }
        Ok((Hash128(h.map(|h| h.digest128()).unwrap_or_else(|| xxhash_rust::xxh3::xxh3_128(&[]))), total))
    }

    /// Reads a file expected to hold `expect` bytes into `buf` and hashes it. When
    /// the whole file fits, it is left in `buf[..n]` (the third value is `true`), so
    /// a caller can write what it hashed without reading the file again; a file
    /// larger than `buf` is hashed to its end and only its last chunk is left.
    /// Like [`Hash128::of_file_expecting`], a read asks for one byte past the
    /// expected end, so a file of the expected size takes one read.
    pub fn of_file_buffered(mut r: impl Read, expect: u64, buf: &mut [u8]) -> io::Result<(Self, u64, bool)> {
        let mut filled = 0usize;
        loop {
            let room = buf.len() - filled;
            if room == 0 {
                break;
            }
            // Past the expected size, the file grew: read on in whole buffers.
            let left = expect.checked_sub(filled as u64);
            let want = match left {
                Some(left) if left < room as u64 => left as usize + 1,
                _ => room,
            };
            let n = match r.read(&mut buf[filled..filled + want]) {
                Ok(0) => return Ok((Hash128::of(&buf[..filled]), filled as u64, true)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            filled += n;
            // A regular file's short read is its end.
            if n < want && filled as u64 == expect {
                return Ok((Hash128::of(&buf[..filled]), filled as u64, true));
            }
        }
        // Larger than `buf`: hash what is there, then stream the rest.
        let mut h = Xxh3::new();
        h.update(buf);
        let total = buf.len() as u64 + hash_rest(&mut h, r, buf)?;
        Ok((Hash128(h.digest128()), total, false))
    }

    /// Hashes a reader to its end, with `buf` as scratch space.
    pub fn of_reader(r: impl Read, buf: &mut [u8]) -> io::Result<(Self, u64)> {
        let mut h = Xxh3::new();
        let total = hash_rest(&mut h, r, buf)?;
        Ok((Hash128(h.digest128()), total))
    }

    /// The name moss gives this content in its store (`{:02x}`, no zero padding).
    pub fn moss_hex(&self) -> String {
        format!("{:02x}", self.0)
    }

    /// Relative path of the blob under `assets/v2`: `h[0:2]/h[2:4]/h[4:6]/h`.
    pub fn store_path(&self) -> String {
        let mut buf = [0u8; STORE_PATH_MAX];
        let n = self.store_path_into(&mut buf);
        // Only ASCII hex digits and slashes were written.
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// [`Hash128::store_path`] written into `buf` without allocating (the verify
    /// and blit walks look up hundreds of thousands of blobs); returns its length.
    pub fn store_path_into(&self, buf: &mut [u8; STORE_PATH_MAX]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // `{:02x}`: no zero padding, but at least two digits.
        let digits = (32 - self.0.leading_zeros() as usize / 4).max(2);
        let mut full = [b'0'; 32];
        for (i, d) in full.iter_mut().enumerate() {
            *d = HEX[((self.0 >> (4 * (31 - i))) & 0xf) as usize];
        }
        let name = &full[32 - digits..];
        // Directories take the first six digits of the name padded to six: a
        // digest below 2^20 still gets three levels.
        let pad = &full[26.min(32 - digits)..];
        let mut n = 0;
        for level in 0..3 {
            buf[n..n + 2].copy_from_slice(&pad[2 * level..2 * level + 2]);
            buf[n + 2] = b'/';
            n += 3;
        }
        buf[n..n + digits].copy_from_slice(name);
        n + digits
    }

    /// Parses the moss form (any length up to 32 hex digits).
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Hash128)
    }

    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_be_bytes(b: [u8; 16]) -> Self {
        Hash128(u128::from_be_bytes(b))
    }
}

impl fmt::Display for Hash128 {
    /// The canonical, zero-padded form `xxhsum -H2` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash128({:032x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_with_an_expected_size_agrees_with_reading_to_the_end() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut buf = vec![0u8; 1024];
        for len in [0usize, 1, 2, 1023, 1024, 1025, 2048, 2049, 9999] {
            let want = Hash128::of(&data[..len]);
            for expect in [len as u64, 0, len as u64 / 2, len as u64 + 1, 1024, 5000] {
                let (h, n) = Hash128::of_file_expecting(&data[..len], expect, &mut buf).unwrap();
                assert_eq!((h, n), (want, len as u64), "len {len} expect {expect}");
            }
        }
    }

    #[test]
    fn buffered_hashing_agrees_and_keeps_a_file_that_fits() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 11 + i / 7) as u8).collect();
        for len in [0usize, 1, 2, 1023, 1024, 1025, 2048, 9999] {
            let want = Hash128::of(&data[..len]);
            for expect in [len as u64, 0, len as u64 / 2, len as u64 + 1, 1024, 5000] {
                let mut buf = vec![0u8; 1024];
                let (h, n, whole) = Hash128::of_file_buffered(&data[..len], expect, &mut buf).unwrap();
                assert_eq!((h, n), (want, len as u64), "len {len} expect {expect}");
                assert_eq!(whole, len < 1024, "len {len} expect {expect}");
                if whole {
                    assert_eq!(&buf[..len], &data[..len]);
                }
            }
        }
    }

    #[test]
    fn store_path_matches_the_padded_moss_name() {
        let reference = |h: Hash128| {
            let name = h.moss_hex();
            let pad = format!("{name:0>6}");
            format!("{}/{}/{}/{}", &pad[0..2], &pad[2..4], &pad[4..6], name)
        };
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834_u128;
        let mut cases = vec![0, 1, 0xf, 0x10, 0xfff, 0xfffff, 0x100000, 0xabcdef, u128::MAX];
        for shift in 0..128 {
            cases.push(1u128 << shift);
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(shift);
            cases.push(x >> (shift % 128));
        }
        for c in cases {
            assert_eq!(Hash128(c).store_path(), reference(Hash128(c)), "{c:x}");
        }
        assert_eq!(Hash128(0x5).store_path(), "00/00/05/05");
    }

    #[test]
    fn moss_form_drops_leading_zeros() {
        let h = Hash128(0x0abc_u128 << 112);
        assert_eq!(h.moss_hex().len(), 31);
        assert_eq!(h.to_string().len(), 32);
        assert!(h.store_path().starts_with("ab/c0/00/abc"));
    }

    #[test]
    fn tiny_digest_still_has_three_levels() {
        let h = Hash128(0x5);
        assert_eq!(h.moss_hex(), "05");
        assert_eq!(h.store_path(), "00/00/05/05");
        assert_eq!(Hash128::parse_hex("05"), Some(h));
    }

    #[test]
    fn known_vector() {
        // xxh3-128 of the empty input, as `xxhsum -H2 /dev/null` prints it.
        assert_eq!(Hash128::of(b"").to_string(), "99aa06d3014798d86001c324468d497f");
    }
}
