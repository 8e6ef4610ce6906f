//! The LUKS anti-forensic splitter, merge direction. A key of n bytes is stored as
//! `stripes` blocks of n bytes; the key is the last block XOR the running value
//! `d`, where `d` starts at zero and for every block but the last becomes
//! `diffuse(d XOR block)`. Diffusing hashes `d` in digest-sized pieces, each
//! prefixed with its piece number as 4 big-endian bytes, the last piece (and its
//! hash) cut to what is left. Losing any one stripe on disk loses the key, which is
//! the point: a partly wiped keyslot is useless.

use zeroize::{Zeroize, Zeroizing};

use crate::kdf::Hash;

/// Recovers the `key_len`-byte key from `material` (`stripes` blocks of `key_len`
/// bytes; anything after them is ignored). `None` when `material` is too short or
/// a size is 0, which callers have already ruled out.
pub(crate) fn merge(material: &[u8], key_len: usize, stripes: usize, hash: Hash) -> Option<Zeroizing<Vec<u8>>> {
    if key_len == 0 || stripes == 0 {
        return None;
    }
    let material = material.get(..key_len.checked_mul(stripes)?)?;
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    let mut blocks = material.chunks_exact(key_len);
    let last = blocks.next_back()?;
    for block in blocks {
        xor_into(&mut d, block);
        diffuse(&mut d, hash);
    }
    xor_into(&mut d, last);
    Some(d)
}

fn xor_into(d: &mut [u8], s: &[u8]) {
    for (a, b) in d.iter_mut().zip(s) {
        *a ^= b;
    }
}

fn diffuse(d: &mut [u8], hash: Hash) {
    let mut piece = [0u8; 64];
    for (n, chunk) in d.chunks_mut(hash.digest_len()).enumerate() {
        // A key is at most 64 bytes, so there are at most 4 pieces.
        let counter = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        let piece = &mut piece[..chunk.len()];
        hash.digest_into(&[&counter, chunk], piece);
        chunk.copy_from_slice(piece);
    }
    piece.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split direction, for the round trip: random-looking stripes, and the last
    /// one chosen so the merge gives `key`.
    fn split(key: &[u8], stripes: usize, hash: Hash) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = vec![0u8; key.len()];
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..stripes - 1 {
            let block: Vec<u8> = (0..key.len())
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            xor_into(&mut d, &block);
            diffuse(&mut d, hash);
            out.extend_from_slice(&block);
        }
        xor_into(&mut d, key);
        out.extend_from_slice(&d);
        out
    }

    #[test]
    fn merge_inverts_split_for_every_hash_and_odd_sizes() {
        for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            for key_len in [16, 20, 32, 33, 48, 64] {
                let key: Vec<u8> = (0..key_len as u8).collect();
                let mut material = split(&key, 7, hash);
                material.extend_from_slice(&[0xee; 100]);
                assert_eq!(merge(&material, key_len, 7, hash).unwrap().as_slice(), key.as_slice());
            }
        }
    }

    #[test]
    fn short_material_or_zero_sizes_give_none() {
        assert!(merge(&[0; 63], 16, 4, Hash::Sha256).is_none());
        assert!(merge(&[0; 64], 0, 4, Hash::Sha256).is_none());
        assert!(merge(&[0; 64], 16, 0, Hash::Sha256).is_none());
        assert!(merge(&[0; 64], usize::MAX, 2, Hash::Sha256).is_none());
        assert_eq!(merge(&[5; 16], 16, 1, Hash::Sha1).unwrap().as_slice(), &[5; 16]);
    }
}
