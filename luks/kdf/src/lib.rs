//! Key derivation for lifeboat-luks: PBKDF2 (HMAC with SHA-1, SHA-256, SHA-384 or
//! SHA-512) and Argon2i/Argon2id (version 0x13, memory in KiB, one lane per "cpu"),
//! plus the plain hashes the AF splitter diffuses with. Every cost a header asks for
//! is checked against [`KdfLimits`] before any work or allocation, so a hostile or
//! fuzzed header cannot make an unlock take minutes or gigabytes; Argon2's memory is
//! reserved fallibly (an error, not an abort, when it is not there) and zeroed
//! afterwards.
//!
//! A crate of its own only so that the release profile can optimise it for speed
//! while the rest of lifeboat is optimised for size: the PBKDF2 and Argon2 loops are
//! generic code, instantiated (and so optimised) in the crate that names the hash,
//! and with link-time optimisation the final pass runs at the binary's level, which
//! neither unrolls nor vectorises. Everything at `opt-level = "z"`, a PBKDF2 unlock
//! took 1.4 times cryptsetup's time; this way it takes half (bench/luks_unlock.py).
//! Argon2 runs a slice's lanes on parallel threads, as cryptsetup does.

#![forbid(unsafe_code)]

use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroize;

/// The hashes LUKS names in `hash-spec`, `af.hash` and PBKDF2 parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The hash LUKS calls `name` (cryptsetup writes them lower case).
    pub fn from_name(name: &str) -> Option<Hash> {
        match name {
            "sha1" => Some(Hash::Sha1),
            "sha256" => Some(Hash::Sha256),
            "sha384" => Some(Hash::Sha384),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// PBKDF2-HMAC filling `out`.
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, out),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out),
            Hash::Sha384 => pbkdf2::pbkdf2_hmac::<Sha384>(password, salt, iterations, out),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, out),
        }
    }

    /// The hash of `parts` concatenated, written to the start of `out` (as much of the
    /// digest as fits: the AF splitter's last block may be shorter than a digest).
    pub fn digest_into(self, parts: &[&[u8]], out: &mut [u8]) {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8]) {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            let mut full = d.finalize();
            let n = out.len().min(full.len());
            out[..n].copy_from_slice(&full[..n]);
            full.as_mut_slice().zeroize();
        }
        match self {
            Hash::Sha1 => run::<Sha1>(parts, out),
            Hash::Sha256 => run::<Sha256>(parts, out),
            Hash::Sha384 => run::<Sha384>(parts, out),
            Hash::Sha512 => run::<Sha512>(parts, out),
        }
    }
}

/// Which Argon2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argon2Kind {
    Argon2i,
    Argon2id,
}

/// A keyslot's KDF as its header gives it. Hash names stay strings until use, so a
/// keyslot with a hash lifeboat lacks fails alone, with a message naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kdf {
    Pbkdf2 { hash: String, iterations: u32, salt: Vec<u8> },
    Argon2 { kind: Argon2Kind, time: u32, memory_kib: u32, lanes: u32, salt: Vec<u8> },
}

impl std::fmt::Display for Kdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kdf::Pbkdf2 { hash, iterations, .. } => write!(f, "pbkdf2-{hash}, {iterations} iterations"),
            Kdf::Argon2 { kind, time, memory_kib, lanes, .. } => write!(
                f,
                "{}, time {time}, memory {memory_kib} KiB, {lanes} lanes",
                match kind {
                    Argon2Kind::Argon2i => "argon2i",
                    Argon2Kind::Argon2id => "argon2id",
                }
            ),
        }
    }
}

/// Caps on what one KDF run may cost. The defaults admit everything cryptsetup
/// creates (its Argon2 memory maximum is 4 GiB, PBKDF2 iterations are a u32 in
/// LUKS1); fuzzing and tests pass small ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfLimits {
    /// PBKDF2 iterations, for keyslots and for the volume-key digest alike.
    pub max_pbkdf2_iterations: u32,
    /// Argon2 passes.
    pub max_argon2_time: u32,
    /// Argon2 memory in KiB (the default: 4 GiB).
    pub max_argon2_memory_kib: u32,
    /// Argon2 lanes (the specification's own maximum is 2^24 - 1).
    pub max_argon2_lanes: u32,
}

impl Default for KdfLimits {
    fn default() -> Self {
        KdfLimits {
            max_pbkdf2_iterations: u32::MAX,
            max_argon2_time: u32::MAX,
            max_argon2_memory_kib: 4 * 1024 * 1024,
            max_argon2_lanes: Params::MAX_P_COST,
        }
    }
}

/// Why a KDF could not run; the caller adds the device and keyslot.
#[derive(Debug, PartialEq, Eq)]
pub enum KdfFault {
    Unsupported(String),
    Invalid(String),
    Limit(String),
    OutOfMemory(u64),
}

impl KdfLimits {
    /// Checks a PBKDF2 iteration count (LUKS never has 0).
    pub fn pbkdf2(&self, iterations: u32) -> Result<(), KdfFault> {
        if iterations == 0 {
            return Err(KdfFault::Invalid("PBKDF2 iterations are 0".into()));
        }
        if iterations > self.max_pbkdf2_iterations {
            return Err(KdfFault::Limit(format!(
                "{iterations} PBKDF2 iterations (limit {})",
                self.max_pbkdf2_iterations
            )));
        }
        Ok(())
    }
}

impl Kdf {
    /// Checks the parameters and the caps without doing any work.
    pub fn check(&self, limits: &KdfLimits) -> Result<(), KdfFault> {
        match self {
            Kdf::Pbkdf2 { hash, iterations, .. } => {
                Hash::from_name(hash).ok_or_else(|| KdfFault::Unsupported(format!("PBKDF2 hash {hash:?}")))?;
                limits.pbkdf2(*iterations)
            }
            Kdf::Argon2 { time, memory_kib, lanes, salt, .. } => {
                if *time == 0 || *lanes == 0 || *lanes > Params::MAX_P_COST {
                    return Err(KdfFault::Invalid(format!("Argon2 time {time} or lanes {lanes} out of range")));
                }
                // Argon2 needs 8 KiB per lane at least (two blocks per slice).
                if u64::from(*memory_kib) < 8 * u64::from(*lanes) {
                    return Err(KdfFault::Invalid(format!("Argon2 memory {memory_kib} KiB is under 8 KiB per lane")));
                }
                if salt.len() < argon2::MIN_SALT_LEN {
                    return Err(KdfFault::Invalid(format!("Argon2 salt of {} bytes is too short", salt.len())));
                }
                if *time > limits.max_argon2_time {
                    return Err(KdfFault::Limit(format!("{time} Argon2 passes (limit {})", limits.max_argon2_time)));
                }
                if *memory_kib > limits.max_argon2_memory_kib {
                    return Err(KdfFault::Limit(format!(
                        "{memory_kib} KiB of Argon2 memory (limit {})",
                        limits.max_argon2_memory_kib
                    )));
                }
                if *lanes > limits.max_argon2_lanes {
                    return Err(KdfFault::Limit(format!("{lanes} Argon2 lanes (limit {})", limits.max_argon2_lanes)));
                }
                Ok(())
            }
        }
    }

    /// Derives `out.len()` bytes from `passphrase`.
    pub fn derive(&self, passphrase: &[u8], out: &mut [u8], limits: &KdfLimits) -> Result<(), KdfFault> {
        self.check(limits)?;
        match self {
            Kdf::Pbkdf2 { hash, iterations, salt } => {
                let hash =
                    Hash::from_name(hash).ok_or_else(|| KdfFault::Unsupported(format!("PBKDF2 hash {hash:?}")))?;
                hash.pbkdf2(passphrase, salt, *iterations, out);
                Ok(())
            }
            Kdf::Argon2 { kind, time, memory_kib, lanes, salt } => {
                let algorithm = match kind {
                    Argon2Kind::Argon2i => Algorithm::Argon2i,
                    Argon2Kind::Argon2id => Algorithm::Argon2id,
                };
                let params = Params::new(*memory_kib, *time, *lanes, Some(out.len()))
                    .map_err(|e| KdfFault::Invalid(format!("Argon2 parameters: {e}")))?;
                // Exactly the blocks the parameters ask for (memory rounded down to a
                // multiple of 4 blocks per lane), reserved fallibly.
                let blocks = params.block_count();
                let mut memory: Vec<Block> = Vec::new();
                memory.try_reserve_exact(blocks).map_err(|_| KdfFault::OutOfMemory(blocks as u64 * 1024))?;
                memory.resize_with(blocks, Block::new);
                let result = Argon2::new(algorithm, Version::V0x13, params)
                    .hash_password_into_with_memory(passphrase, salt, out, &mut memory)
                    .map_err(|e| KdfFault::Invalid(format!("Argon2: {e}")));
                wipe(&mut memory);
                result
            }
        }
    }
}

/// Overwrites Argon2's working memory, which holds what the keyslot key is derived
/// from, as the reference implementation does. `Zeroize` on the blocks writes one
/// volatile word at a time (a tenth of a second for cryptsetup's default gigabyte);
/// a plain fill runs at memset speed, and `black_box` makes the compiler treat the
/// memory as read afterwards, so it cannot drop the stores as dead.
fn wipe(memory: &mut [Block]) {
    memory.fill(Block::new());
    std::hint::black_box(memory);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn pbkdf2_matches_rfc6070() {
        let mut out = [0u8; 20];
        Hash::Sha1.pbkdf2(b"password", b"salt", 2, &mut out);
        assert_eq!(hex(&out), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }

    #[test]
    fn argon2_matches_the_reference_implementation() {
        // Expected outputs from the reference `argon2` command line tool:
        //   printf password | argon2 somesaltsomesalt -id -t 3 -k 32 -p 4 -l 32 -r
        //   printf password | argon2 somesaltsomesalt -i -t 2 -k 64 -p 1 -l 64 -r
        let salt = b"somesaltsomesalt".to_vec();
        let id = Kdf::Argon2 { kind: Argon2Kind::Argon2id, time: 3, memory_kib: 32, lanes: 4, salt: salt.clone() };
        let mut out = [0u8; 32];
        id.derive(b"password", &mut out, &KdfLimits::default()).unwrap();
        assert_eq!(hex(&out), "f25048ec48311a804ea9edd74e08c30765aa0f8d47c2a5b5a6097243cdf2e5ce");
        let i = Kdf::Argon2 { kind: Argon2Kind::Argon2i, time: 2, memory_kib: 64, lanes: 1, salt };
        let mut out = [0u8; 64];
        i.derive(b"password", &mut out, &KdfLimits::default()).unwrap();
        assert_eq!(
            hex(&out),
            "2ea425cfe2c513e78b8db345900cebbfb34231c600ddefe8380191f9c132a3f8\
             07640a613e9fd7480592af14a3f94e8b7333822d3a3406856567a8ff860fac0a"
        );
    }

    #[test]
    fn costs_over_the_limits_are_refused_before_any_work() {
        let small =
            KdfLimits { max_pbkdf2_iterations: 10, max_argon2_time: 2, max_argon2_memory_kib: 64, max_argon2_lanes: 1 };
        let mut out = [0u8; 32];
        let p = Kdf::Pbkdf2 { hash: "sha256".into(), iterations: 11, salt: vec![0; 32] };
        assert!(matches!(p.derive(b"x", &mut out, &small), Err(KdfFault::Limit(_))));
        let a = Kdf::Argon2 { kind: Argon2Kind::Argon2i, time: 1, memory_kib: u32::MAX, lanes: 1, salt: vec![0; 32] };
        assert!(matches!(a.derive(b"x", &mut out, &small), Err(KdfFault::Limit(_))));
        let a = Kdf::Argon2 { kind: Argon2Kind::Argon2i, time: 1, memory_kib: 64, lanes: u32::MAX, salt: vec![0; 32] };
        assert!(matches!(a.derive(b"x", &mut out, &small), Err(KdfFault::Invalid(_))));
        let a = Kdf::Argon2 { kind: Argon2Kind::Argon2i, time: 1, memory_kib: 15, lanes: 2, salt: vec![0; 32] };
        assert!(matches!(a.check(&KdfLimits::default()), Err(KdfFault::Invalid(_))));
        let p = Kdf::Pbkdf2 { hash: "whirlpool".into(), iterations: 1, salt: vec![] };
        assert_eq!(p.check(&small), Err(KdfFault::Unsupported("PBKDF2 hash \"whirlpool\"".into())));
    }
}
