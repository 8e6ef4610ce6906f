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

impl Hash128 {
    /// The digest of an in-memory buffer.
    pub fn of(bytes: &[u8]) -> Self {
        Hash128(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// Hashes a reader to its end, with `buf` as scratch space.
    pub fn of_reader(mut r: impl Read, buf: &mut [u8]) -> io::Result<(Self, u64)> {
        let mut h = Xxh3::new();
        let mut total = 0u64;
        loop {
            let n = match r.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            total += n as u64;
        }
        Ok((Hash128(h.digest128()), total))
    }

    /// The name moss gives this content in its store (`{:02x}`, no zero padding).
    pub fn moss_hex(&self) -> String {
        format!("{:02x}", self.0)
    }

    /// Relative path of the blob under `assets/v2`: `h[0:2]/h[2:4]/h[4:6]/h`.
    pub fn store_path(&self) -> String {
        let h = self.moss_hex();
        // A u128 formatted with {:02x} has at least two digits; shorter than six only
        // for digests below 2^20, which still need three directory levels.
        let pad = format!("{h:0>6}");
        format!("{}/{}/{}/{}", &pad[0..2], &pad[2..4], &pad[4..6], h)
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
