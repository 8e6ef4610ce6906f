//! The LUKS header parser and unlock, fed thousands of deterministic mutations of
//! real headers (the fuzz seeds, made by cryptsetup with passphrase "fuzz"): none may
//! panic, and the unmutated seeds must open. LUKS2 checksums are recomputed after
//! each mutation (as the fuzz target does too), so mutations reach the JSON metadata
//! and the keyslots instead of stopping at the checksum.

use std::io::Cursor;

use lifeboat_luks::{probe, Header, KdfLimits, LuksError, UnlockOptions};
use sha2::{Digest, Sha256};

const SEEDS: [(&str, &[u8]); 4] = [
    ("luks2-pbkdf2-cbc128", include_bytes!("../../fuzz/corpus/luks_header/luks2-pbkdf2-cbc128")),
    ("luks2-argon2id-cbc128", include_bytes!("../../fuzz/corpus/luks_header/luks2-argon2id-cbc128")),
    ("luks1-pbkdf2-cbc128", include_bytes!("../../fuzz/corpus/luks_header/luks1-pbkdf2-cbc128")),
    ("luks2-64k-headers-only", include_bytes!("../../fuzz/corpus/luks_header/luks2-64k-headers-only")),
];

const LIMITS: KdfLimits =
    KdfLimits { max_pbkdf2_iterations: 2000, max_argon2_time: 4, max_argon2_memory_kib: 256, max_argon2_lanes: 4 };

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn unlock(data: &[u8]) -> Result<(), LuksError> {
    let _ = probe(data);
    let mut dev = Cursor::new(data);
    let h = Header::read("m", &mut dev)?;
    let _ = h.keyslots();
    let u = h.unlock(&mut dev, b"fuzz", &UnlockOptions { keyslot: None, limits: LIMITS })?;
    let _ = u.dm_table("/dev/m", data.len() as u64 + (1 << 20), false);
    Ok(())
}

fn fix_luks2_checksums(b: &mut [u8]) {
    let Some(size) = b.get(8..16).map(|s| u64::from_be_bytes(s.try_into().unwrap())) else { return };
    if !(0x4000..=0x40_0000).contains(&size) || !size.is_power_of_two() {
        return;
    }
    let n = size as usize;
    for at in [0, n] {
        if let Some(copy) = b.get_mut(at..at + n) {
            copy[448..512].fill(0);
            let sum = Sha256::digest(&*copy);
            copy[448..480].copy_from_slice(&sum);
        }
    }
}

/// Where mutations land: the binary header, the JSON text, or anywhere.
fn mutate(seed: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    let json_end = v[4096.min(v.len())..].iter().position(|&b| b == 0).map_or(v.len(), |p| p + 4096);
    for _ in 0..1 + r.below(3) {
        if v.is_empty() {
            break;
        }
        let at = match r.below(3) {
            0 => r.below(592),
            1 => 4096 + r.below(json_end.saturating_sub(4096)),
            _ => r.below(v.len()),
        }
        .min(v.len() - 1);
        match r.below(7) {
            0 => v[at] ^= 1 << r.below(8),
            1 => v[at] = [0, 0xff, 0x7f, 0x80, b'0', b'9', b'"', b'{', b'}', b','][r.below(10)],
            2 => {
                let end = (at + 8).min(v.len());
                v[at..end].fill(0xff);
            }
            3 => v.truncate(at),
            // JSON numbers: make a digit run longer or a number absurd.
            4 => {
                let digits = b"99999999999999999999";
                v.splice(at..at, digits[..1 + r.below(digits.len())].iter().copied());
            }
            5 => {
                let n = (r.below(16) + 1).min(v.len() - at);
                let chunk = v[at..at + n].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v[at] = r.next() as u8,
        }
    }
    v
}

#[test]
fn seeds_open_with_their_passphrase() {
    for (name, seed) in SEEDS {
        let r = unlock(seed);
        if name.ends_with("headers-only") {
            assert!(matches!(r, Err(LuksError::Io { .. })), "{name}: {r:?}");
        } else {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn mutated_headers_never_panic() {
    let mut r = Rng(0x0005_eed1_u64 << 7);
    let mut opened = 0;
    for (_, seed) in SEEDS {
        for _ in 0..400 {
            let mut m = mutate(seed, &mut r);
            let _ = unlock(&m);
            fix_luks2_checksums(&mut m);
            opened += usize::from(unlock(&m).is_ok());
        }
    }
    // Mutations outside what the unlock reads leave some volumes openable.
    assert!(opened > 0);
}
