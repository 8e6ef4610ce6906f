//! PE/COFF for UEFI, as lifeboat needs it for Secure Boot and unified kernel
//! images (UKIs): a bounded reader ([`PeImage`], [`read_uki`]), the UKI builder
//! ([`build_uki`]), and native Authenticode signing and verification ([`sign`],
//! [`verify`], [`authenticode_sha256`]) with an RSA key ([`SigningKey`]).
//!
//! The crate owns the PE format and the Authenticode signature format, nothing
//! else: it reads and writes bytes in memory, and its only I/O is
//! [`SigningKey::load`] reading a key and a certificate file. Every read of an
//! image goes through `lifeboat_codec::Reader` or is bounds-checked against the
//! image first, so hostile input is a typed [`Error`], never a panic.
//!
//! # Why these crates
//!
//! Signing needs RSA, DER and the X.509/CMS structures; writing them by hand would
//! be the riskiest code in the crate. RustCrypto's are pure Rust (the static musl
//! build takes no C), maintained together, and their digest-0.10 generation is the
//! one the workspace already uses for `sha2` (LUKS) and builds with our
//! rust-version 1.85 (the 0.11/0.10-pre generation needs a newer compiler):
//! `rsa` 0.9 (PKCS#1 v1.5 signatures, PKCS#1/PKCS#8 key parsing), `der` 0.7
//! (encoding, and the `Sequence` derive for the Authenticode structures CMS does
//! not know: SpcIndirectDataContent, DigestInfo), `spki` 0.7, `x509-cert` 0.2
//! (the signer's certificate: issuer, serial, public key) and `cms` 0.2
//! (SignedData, SignerInfo, ContentInfo; PKCS#7 v1.5 SignedData as Authenticode
//! uses it is encoded the same). `rsa` 0.9 has a known timing side channel in
//! *decryption* (RUSTSEC-2023-0071, "Marvin"); lifeboat only signs, locally, with
//! PKCS#1 v1.5 — deterministic, no decryption oracle for anyone to time.

#![forbid(unsafe_code)]

mod authenticode;
mod error;
mod image;
mod sign;
mod uki;

pub use authenticode::authenticode_sha256;
pub use error::Error;
pub use image::{pe_checksum, PeImage, Section};
pub use sign::{
    certificate_der, indirect_data_content, sign, sign_replacing, signature_der, signed_digest, verify, SigningKey,
    Verdict,
};
pub use uki::{build_uki, read_uki, UkiInfo, UkiParts, UKI_SECTION_CHARACTERISTICS};
