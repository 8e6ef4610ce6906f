//! A fast, non-cryptographic hasher for in-memory tables whose keys are small
//! and come from lifeboat's own index (path ids, modes, content hashes): the
//! standard SipHash resists attacker-chosen keys, which these tables never hold
//! from outside, at several times the cost per entry. One multiply and rotate
//! per word, the scheme of rustc's own `FxHasher`.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    h: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.h = (self.h.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

/// For `HashMap::with_hasher`.
pub type FastBuild = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    #[test]
    fn equal_keys_hash_equal_and_different_ones_spread() {
        let b = super::FastBuild::default();
        let h = |x: &dyn Fn(&mut super::FastHasher)| {
            let mut s = b.build_hasher();
            x(&mut s);
            std::hash::Hasher::finish(&s)
        };
        assert_eq!(h(&|s| (1u32, b"abc".as_slice()).hash(s)), h(&|s| (1u32, b"abc".as_slice()).hash(s)));
        let set: std::collections::HashSet<u64> = (0u32..10_000).map(|i| h(&|s| i.hash(s))).collect();
        assert_eq!(set.len(), 10_000);
        assert_ne!(h(&|s| s.write_all_bytes(b"ab")), h(&|s| s.write_all_bytes(b"ab\\0")));
    }

    trait WriteAll {
        fn write_all_bytes(&mut self, b: &[u8]);
    }
    impl WriteAll for super::FastHasher {
        fn write_all_bytes(&mut self, b: &[u8]) {
            std::hash::Hasher::write(self, b)
        }
    }
}
