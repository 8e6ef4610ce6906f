//! The crate's one error type: every variant says what was wrong and where (file
//! offset, section or key file), so a caller can print it as is.

use std::fmt;
use std::path::PathBuf;

use lifeboat_codec::Short;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A field or structure ran past the end of the image.
    Truncated(Short),
    /// A magic number is not the one the format requires.
    BadMagic { what: &'static str, at: usize, found: u32 },
    /// A header field has a value the format forbids or the reader cannot accept.
    BadField { what: &'static str, at: usize, value: u64, why: &'static str },
    /// A section header points outside the image or is otherwise unusable.
    BadSection { index: usize, name: String, why: String },
    /// The certificate table (data directory 4) is malformed.
    BadCertTable { offset: u64, size: u64, why: String },
    /// A section a unified kernel image must have is missing.
    NotUki { missing: &'static str },
    /// The stub's header has no room for the section headers a build adds.
    NoRoom { need: usize, have: usize },
    /// The input to a build is unusable (empty kernel, image too big).
    Build { why: String },
    /// `sign` was given an image that already carries a signature.
    AlreadySigned,
    /// A key or certificate file could not be used; the key material itself is never named.
    Key { path: PathBuf, why: String },
    /// The signature (PKCS#7 SignedData) inside an image is malformed or unsupported.
    BadSignature { why: String },
    /// Signing itself failed (RSA, DER encoding).
    Crypto { why: String },
}

impl From<Short> for Error {
    fn from(s: Short) -> Self {
        Error::Truncated(s)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated(s) => write!(f, "PE image truncated: {s}"),
            Error::BadMagic { what, at, found } => {
                write!(f, "not a PE image: bad {what} at offset {at:#x} (found {found:#x})")
            }
            Error::BadField { what, at, value, why } => {
                write!(f, "PE header field {what} at offset {at:#x} is {value:#x}: {why}")
            }
            Error::BadSection { index, name, why } => write!(f, "PE section {index} ({name:?}): {why}"),
            Error::BadCertTable { offset, size, why } => {
                write!(f, "PE certificate table at offset {offset:#x}, {size} bytes: {why}")
            }
            Error::NotUki { missing } => write!(f, "not a unified kernel image: no {missing} section"),
            Error::NoRoom { need, have } => write!(
                f,
                "the stub's headers have no room for the new section headers: they need {need} bytes, \
                 {have} are free before the first section's data"
            ),
            Error::Build { why } => write!(f, "cannot build the unified kernel image: {why}"),
            Error::AlreadySigned => {
                write!(f, "the image is already signed (use sign_replacing to replace its signature)")
            }
            Error::Key { path, why } => write!(f, "{}: {why}", path.display()),
            Error::BadSignature { why } => write!(f, "PE signature: {why}"),
            Error::Crypto { why } => write!(f, "signing failed: {why}"),
        }
    }
}

impl std::error::Error for Error {}
