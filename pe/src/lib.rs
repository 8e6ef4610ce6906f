//! PE/COFF for UEFI, as lifeboat needs it for Secure Boot and unified kernel
//! images (UKIs): a bounded reader ([`PeImage`], [`read_uki`]) and the UKI
//! builder ([`build_uki`]).
//!
//! The crate owns the PE format and nothing else: it reads and writes bytes in
//! memory and does no I/O.

#![forbid(unsafe_code)]

mod error;
mod image;
mod uki;

pub use error::Error;
pub use image::{pe_checksum, PeImage, Section};
pub use uki::{build_uki, read_uki, UkiInfo, UkiParts, UKI_SECTION_CHARACTERISTICS};
