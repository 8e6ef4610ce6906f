//! Key derivation: PBKDF2 and Argon2 with their cost caps ([`KdfLimits`]), and the
//! hashes the AF splitter uses. The code is the `lifeboat-luks-kdf` crate (luks/kdf),
//! kept apart so that the release profile optimises these loops for speed and the
//! rest of lifeboat for size.

pub use lifeboat_luks_kdf::{Argon2Kind, Hash, Kdf, KdfFault, KdfLimits};
