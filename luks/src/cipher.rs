//! Sector decryption as dm-crypt does it, for the ciphers LUKS volumes use: AES in
//! XTS mode (a 256, 384 or 512-bit key: two AES keys, data then tweak) with the
//! `plain64` or `plain` IV, and AES in CBC mode with `essiv:sha256`, `plain64` or
//! `plain`. The IV of a sector is its number in 512-byte units (dm-crypt's default,
//! which LUKS2 keeps for 4096-byte sectors too), little-endian in a 16-byte block:
//! XTS encrypts it with the tweak key, ESSIV with the SHA-256 of the key. Sectors are
//! whole multiples of 16 bytes, so XTS never needs ciphertext stealing. This is used
//! for keyslot areas (512-byte sectors from IV 0) and, through `decrypt_sectors`, for
//! checking data.

use std::fmt;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Xts,
    Cbc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IvGen {
    Plain,
    Plain64,
    EssivSha256,
}

/// A cipher specification in dm-crypt's `cipher-chainmode-ivmode` form that this
/// module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CipherSpec {
    mode: Mode,
    iv: IvGen,
}

impl CipherSpec {
    pub(crate) fn parse(spec: &str) -> Option<CipherSpec> {
        let (mode, iv) = match spec {
            "aes-xts-plain64" => (Mode::Xts, IvGen::Plain64),
            "aes-xts-plain" => (Mode::Xts, IvGen::Plain),
            "aes-cbc-essiv:sha256" => (Mode::Cbc, IvGen::EssivSha256),
            "aes-cbc-plain64" => (Mode::Cbc, IvGen::Plain64),
            "aes-cbc-plain" => (Mode::Cbc, IvGen::Plain),
            _ => return None,
        };
        Some(CipherSpec { mode, iv })
    }

    /// Key lengths in bytes the mode takes: XTS two AES keys, CBC one.
    pub(crate) fn key_len_ok(self, len: usize) -> bool {
        match self.mode {
            Mode::Xts => matches!(len, 32 | 48 | 64),
            Mode::Cbc => matches!(len, 16 | 24 | 32),
        }
    }
}

/// Why sectors could not be decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CipherError {
    /// Not one of the ciphers this crate implements.
    Unsupported(String),
    /// The key length does not fit the cipher.
    KeyLength { cipher: String, bits: usize },
    /// Sector sizes are powers of two from 512 to 4096.
    SectorSize(u64),
    /// The data is not a whole number of sectors.
    PartialSector { len: usize, sector_size: u64 },
}

impl fmt::Display for CipherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CipherError::Unsupported(c) => write!(f, "cipher {c:?} is not supported (only AES in XTS or CBC mode)"),
            CipherError::KeyLength { cipher, bits } => write!(f, "a {bits}-bit key does not fit cipher {cipher}"),
            CipherError::SectorSize(s) => write!(f, "sector size {s} is not a power of two from 512 to 4096"),
            CipherError::PartialSector { len, sector_size } => {
                write!(f, "{len} bytes are not a whole number of {sector_size}-byte sectors")
            }
        }
    }
}

impl std::error::Error for CipherError {}

/// Checks a sector size the way dm-crypt does.
pub(crate) fn sector_size_ok(size: u64) -> bool {
    (512..=4096).contains(&size) && size.is_power_of_two()
}

/// One AES key schedule of whichever size the key has.
enum Aes {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl Aes {
    fn new(key: &[u8]) -> Option<Aes> {
        // The aes crate zeroes its round keys on drop (its `zeroize` feature).
        match key.len() {
            16 => Aes128::new_from_slice(key).ok().map(Aes::A128),
            24 => Aes192::new_from_slice(key).ok().map(Aes::A192),
            32 => Aes256::new_from_slice(key).ok().map(Aes::A256),
            _ => None,
        }
    }

    fn encrypt(&self, b: &mut Block) {
        match self {
            Aes::A128(c) => c.encrypt_block(b),
            Aes::A192(c) => c.encrypt_block(b),
            Aes::A256(c) => c.encrypt_block(b),
        }
    }

    fn decrypt_all(&self, b: &mut [Block]) {
        match self {
            Aes::A128(c) => c.decrypt_blocks(b),
            Aes::A192(c) => c.decrypt_blocks(b),
            Aes::A256(c) => c.decrypt_blocks(b),
        }
    }

    #[cfg(test)]
    fn encrypt_all(&self, b: &mut [Block]) {
        match self {
            Aes::A128(c) => c.encrypt_blocks(b),
            Aes::A192(c) => c.encrypt_blocks(b),
            Aes::A256(c) => c.encrypt_blocks(b),
        }
    }
}

/// A keyed cipher for whole sectors.
pub(crate) struct SectorCipher {
    spec: CipherSpec,
    data: Aes,
    /// XTS: the tweak key; ESSIV: the key of SHA-256(key).
    iv_key: Option<Aes>,
}

impl SectorCipher {
    pub(crate) fn new(spec: CipherSpec, key: &[u8]) -> Option<SectorCipher> {
        if !spec.key_len_ok(key.len()) {
            return None;
        }
        match spec.mode {
            Mode::Xts => {
                let (k1, k2) = key.split_at(key.len() / 2);
                Some(SectorCipher { spec, data: Aes::new(k1)?, iv_key: Some(Aes::new(k2)?) })
            }
            Mode::Cbc => {
                let iv_key = match spec.iv {
                    IvGen::EssivSha256 => {
                        let mut salt = Sha256::digest(key);
                        let c = Aes::new(&salt);
                        salt.as_mut_slice().zeroize();
                        Some(c?)
                    }
                    IvGen::Plain | IvGen::Plain64 => None,
                };
                Some(SectorCipher { spec, data: Aes::new(key)?, iv_key })
            }
        }
    }

    /// The IV block of the sector numbered `n` (512-byte units).
    fn iv(&self, n: u64) -> Block {
        let mut iv = Block::default();
        match self.spec.iv {
            // `plain` is the sector number cut to 32 bits.
            IvGen::Plain => iv[..4].copy_from_slice(&(n as u32).to_le_bytes()),
            IvGen::Plain64 | IvGen::EssivSha256 => iv[..8].copy_from_slice(&n.to_le_bytes()),
        }
        if self.spec.mode == Mode::Xts || self.spec.iv == IvGen::EssivSha256 {
            if let Some(k) = &self.iv_key {
                k.encrypt(&mut iv);
            }
        }
        iv
    }

    /// Decrypts `data` in place: sectors of `sector_size` bytes, the first with IV
    /// sector number `first_iv`, each next one `sector_size / 512` further. Callers
    /// check the sector size; a bad one decrypts nothing.
    pub(crate) fn decrypt(&self, sector_size: usize, first_iv: u64, data: &mut [u8]) {
        if !sector_size_ok(sector_size as u64) {
            return;
        }
        let step = (sector_size / 512) as u64;
        let mut blocks = vec![Block::default(); sector_size / 16];
        let mut masks = vec![Block::default(); sector_size / 16];
        for (k, sector) in data.chunks_exact_mut(sector_size).enumerate() {
            let iv = self.iv(first_iv.wrapping_add((k as u64).wrapping_mul(step)));
            match self.spec.mode {
                Mode::Xts => {
                    // Each block's tweak is the encrypted IV times alpha^j in GF(2^128).
                    let mut t = u128::from_le_bytes(iv.into());
                    for m in masks.iter_mut() {
                        *m = Block::from(t.to_le_bytes());
                        t = (t << 1) ^ if t >> 127 == 1 { 0x87 } else { 0 };
                    }
                }
                Mode::Cbc => {
                    // Each block's plaintext is masked with the ciphertext before it.
                    if let Some(m) = masks.first_mut() {
                        *m = iv;
                    }
                    for (m, c) in masks.iter_mut().skip(1).zip(sector.chunks_exact(16)) {
                        m.copy_from_slice(c);
                    }
                }
            }
            for ((b, c), m) in blocks.iter_mut().zip(sector.chunks_exact(16)).zip(&masks) {
                b.copy_from_slice(c);
                if self.spec.mode == Mode::Xts {
                    xor16(b, m);
                }
            }
            self.data.decrypt_all(&mut blocks);
            for ((p, b), m) in sector.chunks_exact_mut(16).zip(&mut blocks).zip(&masks) {
                xor16(b, m);
                p.copy_from_slice(b);
            }
        }
        for b in blocks.iter_mut().chain(masks.iter_mut()) {
            b.as_mut_slice().zeroize();
        }
    }

    /// The inverse, for the tests' known answers and round trips.
    #[cfg(test)]
    fn encrypt(&self, sector_size: usize, first_iv: u64, data: &mut [u8]) {
        let step = (sector_size / 512) as u64;
        for (k, sector) in data.chunks_exact_mut(sector_size).enumerate() {
            let iv = self.iv(first_iv + k as u64 * step);
            let mut prev = iv;
            let mut t = u128::from_le_bytes(iv.into());
            for c in sector.chunks_exact_mut(16) {
                let mut b = Block::clone_from_slice(c);
                match self.spec.mode {
                    Mode::Xts => {
                        let m = Block::from(t.to_le_bytes());
                        xor16(&mut b, &m);
                        self.data.encrypt_all(std::slice::from_mut(&mut b));
                        xor16(&mut b, &m);
                        t = (t << 1) ^ if t >> 127 == 1 { 0x87 } else { 0 };
                    }
                    Mode::Cbc => {
                        xor16(&mut b, &prev);
                        self.data.encrypt(&mut b);
                        prev = b;
                    }
                }
                c.copy_from_slice(&b);
            }
        }
    }
}

fn xor16(a: &mut Block, b: &Block) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// Decrypts `data` in place as dm-crypt would read it: `cipher` (e.g.
/// `aes-xts-plain64`), `key` (the volume key), sectors of `sector_size` bytes, the
/// first of which has IV sector number `first_iv_sector` — counted in 512-byte units
/// like dm-crypt's IVs, whatever the sector size; the sector at byte `b` of a LUKS
/// data segment has `iv_tweak + b / 512`. See also [`crate::Unlocked::decrypt_sectors`].
pub fn decrypt_sectors(
    cipher: &str,
    key: &[u8],
    sector_size: u32,
    first_iv_sector: u64,
    data: &mut [u8],
) -> Result<(), CipherError> {
    let spec = CipherSpec::parse(cipher).ok_or_else(|| CipherError::Unsupported(cipher.to_string()))?;
    if !sector_size_ok(u64::from(sector_size)) {
        return Err(CipherError::SectorSize(u64::from(sector_size)));
    }
    let size = sector_size as usize;
    if data.len() % size != 0 {
        return Err(CipherError::PartialSector { len: data.len(), sector_size: u64::from(sector_size) });
    }
    let c = SectorCipher::new(spec, key)
        .ok_or_else(|| CipherError::KeyLength { cipher: cipher.to_string(), bits: key.len() * 8 })?;
    c.decrypt(size, first_iv_sector, data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(b: &[u8]) -> String {
        Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn xts_matches_ieee_1619_vector_2() {
        // Key1 = 11.., Key2 = 22.., data unit 0x3333333333, 32 bytes of 0x44.
        let mut key = [0x11u8; 32];
        key[16..].fill(0x22);
        let c = SectorCipher::new(CipherSpec::parse("aes-xts-plain64").unwrap(), &key).unwrap();
        let mut unit = [0x44u8; 512];
        c.encrypt(512, 0x33_3333_3333, &mut unit);
        let ct: String = unit[..32].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(ct, "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
    }

    /// Ciphertexts from Python's `cryptography` (AES-XTS with the little-endian sector
    /// as tweak; AES-CBC with the ESSIV IV computed by hand) of 1024 bytes of 0..255
    /// repeated: XTS with key 0..63 from sector 7, CBC-ESSIV with key 0..31 from 5.
    #[test]
    fn known_answers_and_round_trips() {
        let plain: Vec<u8> = (0..1024).map(|i| i as u8).collect();
        for (spec, key_len, first, want) in [
            ("aes-xts-plain64", 64, 7, "7fc73dd1bad65385f89731ccbe34ae2fdce014eac977aefb1bdd0c4526285359"),
            ("aes-cbc-essiv:sha256", 32, 5, "c4f06456da0815e710cd74753f8f36726fc35ab32958fe221d761a19d7a3cc3b"),
        ] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            let c = SectorCipher::new(CipherSpec::parse(spec).unwrap(), &key).unwrap();
            let mut data = plain.clone();
            c.encrypt(512, first, &mut data);
            assert_eq!(sha256_hex(&data), want, "{spec}");
            decrypt_sectors(spec, &key, 512, first, &mut data).unwrap();
            assert_eq!(data, plain, "{spec}");
        }
        for spec in ["aes-xts-plain", "aes-cbc-plain64", "aes-cbc-plain", "aes-xts-plain64"] {
            for key_len in [16, 24, 32, 48, 64] {
                let Some(c) = SectorCipher::new(CipherSpec::parse(spec).unwrap(), &vec![9; key_len]) else {
                    continue;
                };
                let mut data = plain.repeat(4);
                c.encrypt(2048, 3, &mut data);
                assert_ne!(data, plain.repeat(4));
                c.decrypt(2048, 3, &mut data);
                assert_eq!(data, plain.repeat(4), "{spec} {key_len}");
            }
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut d = [0u8; 512];
        assert_eq!(
            decrypt_sectors("twofish-xts-plain64", &[0; 64], 512, 0, &mut d),
            Err(CipherError::Unsupported("twofish-xts-plain64".into()))
        );
        assert_eq!(
            decrypt_sectors("aes-xts-plain64", &[0; 16], 512, 0, &mut d),
            Err(CipherError::KeyLength { cipher: "aes-xts-plain64".into(), bits: 128 })
        );
        assert_eq!(decrypt_sectors("aes-xts-plain64", &[0; 64], 768, 0, &mut d), Err(CipherError::SectorSize(768)));
        assert_eq!(
            decrypt_sectors("aes-xts-plain64", &[0; 64], 512, 0, &mut d[..100]),
            Err(CipherError::PartialSector { len: 100, sector_size: 512 })
        );
        assert_eq!(
            CipherError::Unsupported("serpent-xts-plain64".into()).to_string(),
            "cipher \"serpent-xts-plain64\" is not supported (only AES in XTS or CBC mode)"
        );
    }
}
