//! The crate's one error type. Every variant names the device (or header file) it is
//! about; the ones about metadata name the field and what is wrong with it, so a
//! message printed by PID 1 or the host tool says where to look without a debugger.
//! A wrong passphrase is its own variant, apart from damage and unsupported features:
//! PID 1 asks again after the first and gives up after the others.

use std::{fmt, io};

use lifeboat_codec::Short;

#[derive(Debug)]
pub enum LuksError {
    /// Reading the device failed (or it ended early).
    Io { device: String, what: String, source: io::Error },
    /// No LUKS header: no magic at the start and no LUKS2 secondary header at any of
    /// the offsets the specification allows.
    NotLuks { device: String },
    /// A header field is malformed or out of range.
    Invalid { device: String, field: String, problem: String },
    /// Neither copy of a LUKS2 header is usable; what is wrong with each.
    NoValidHeader { device: String, problems: Vec<String> },
    /// Something lifeboat does not implement: a cipher, a hash, a KDF, a segment kind.
    Unsupported { device: String, what: String },
    /// A mandatory LUKS2 requirement (such as an interrupted online re-encryption):
    /// a reader that does not implement it must not open the volume.
    Requirement { device: String, requirement: String },
    /// A keyslot's KDF asks for more time or memory than the caller allows.
    KdfLimit { device: String, keyslot: u32, what: String },
    /// Memory for a KDF or a keyslot area could not be had.
    OutOfMemory { device: String, what: String, bytes: u64 },
    /// No keyslot to try: the one asked for is not active, or none is usable.
    NoKeyslot { device: String, keyslot: Option<u32>, why: String },
    /// The passphrase opened none of the keyslots tried: each one's key digest differed.
    WrongPassphrase { device: String, tried: Vec<u32> },
    /// No keyslot opened, and some failed for reasons other than the passphrase
    /// (listed per keyslot, wrong-passphrase ones included).
    KeyslotsFailed { device: String, failures: Vec<(u32, String)> },
}

impl LuksError {
    pub(crate) fn invalid(device: &str, field: impl Into<String>, problem: impl Into<String>) -> Self {
        LuksError::Invalid { device: device.to_string(), field: field.into(), problem: problem.into() }
    }

    pub(crate) fn unsupported(device: &str, what: impl Into<String>) -> Self {
        LuksError::Unsupported { device: device.to_string(), what: what.into() }
    }

    pub(crate) fn io(device: &str, what: impl Into<String>, source: io::Error) -> Self {
        LuksError::Io { device: device.to_string(), what: what.into(), source }
    }

    /// A bounded read of a binary header ran short.
    pub(crate) fn short(device: &str, short: Short) -> Self {
        LuksError::invalid(device, short.what, format!("truncated ({short})"))
    }

    /// True when the passphrase was simply wrong: worth asking again.
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, LuksError::WrongPassphrase { .. })
    }

    /// The device or file the error is about.
    pub fn device(&self) -> &str {
        match self {
            LuksError::Io { device, .. }
            | LuksError::NotLuks { device }
            | LuksError::Invalid { device, .. }
            | LuksError::NoValidHeader { device, .. }
            | LuksError::Unsupported { device, .. }
            | LuksError::Requirement { device, .. }
            | LuksError::KdfLimit { device, .. }
            | LuksError::OutOfMemory { device, .. }
            | LuksError::NoKeyslot { device, .. }
            | LuksError::WrongPassphrase { device, .. }
            | LuksError::KeyslotsFailed { device, .. } => device,
        }
    }
}

fn list_slots(slots: &[u32]) -> String {
    slots.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl LuksError {
    /// The message without the device name in front, for lists under one device.
    pub fn detail(&self) -> String {
        struct Detail<'a>(&'a LuksError);
        impl fmt::Display for Detail<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_detail(f)
            }
        }
        Detail(self).to_string()
    }

    fn fmt_detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LuksError::Io { what, source, .. } => write!(f, "reading {what}: {source}"),
            LuksError::NotLuks { .. } => write!(f, "not a LUKS volume (no LUKS header found)"),
            LuksError::Invalid { field, problem, .. } => write!(f, "LUKS header field {field}: {problem}"),
            LuksError::NoValidHeader { problems, .. } => write!(f, "no usable LUKS2 header: {}", problems.join("; ")),
            LuksError::Unsupported { what, .. } => write!(f, "unsupported: {what}"),
            LuksError::Requirement { requirement, .. } => write!(
                f,
                "the LUKS2 header has the mandatory requirement {requirement:?}, which lifeboat does not implement \
                 (finish or undo it with cryptsetup)"
            ),
            LuksError::KdfLimit { keyslot, what, .. } => {
                write!(f, "keyslot {keyslot}: the KDF asks for {what}, over the limit set for this unlock")
            }
            LuksError::OutOfMemory { what, bytes, .. } => write!(f, "cannot allocate {bytes} bytes for {what}"),
            LuksError::NoKeyslot { keyslot: Some(k), why, .. } => write!(f, "keyslot {k}: {why}"),
            LuksError::NoKeyslot { keyslot: None, why, .. } => write!(f, "no keyslot to try: {why}"),
            LuksError::WrongPassphrase { tried, .. } => {
                write!(f, "wrong passphrase (no match in keyslot {})", list_slots(tried))
            }
            LuksError::KeyslotsFailed { failures, .. } => {
                write!(f, "no keyslot opened: ")?;
                for (i, (slot, why)) in failures.iter().enumerate() {
                    write!(f, "{}keyslot {slot}: {why}", if i > 0 { "; " } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for LuksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.device())?;
        self.fmt_detail(f)
    }
}

impl std::error::Error for LuksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LuksError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
