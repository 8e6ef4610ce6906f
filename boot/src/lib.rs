//! Boot management for lifeboat: Boot Loader Specification Type #1 entries (parse,
//! render, UAPI.10 version order, the specification's sort order), the entry token,
//! `loader.conf` editing, the sync planner that turns retained transactions into
//! entries, kernels and initrds on `$BOOT`, boot counting, Type #2 entries (UKIs in
//! `EFI/Linux`, read only), EFI variables through efivarfs (with the firmware's
//! Secure Boot state), and EFI load options for firmware boot entries.
//!
//! Everything on a boot partition is reached through `lifeboat_esp::Volume`, so every
//! planner test runs on an in-memory volume and the same code drives a FAT image, a
//! block device or a mounted ESP.

pub mod bls;
pub mod efivars;
pub mod firmware;
pub mod loaderconf;
pub mod loadopt;
pub mod plan;
pub mod sbstate;
pub mod sdboot;
pub mod token;
pub mod uki;
pub mod version;

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// A boot volume operation failed.
    Volume(lifeboat_esp::Error),
    /// The wanted contents do not fit.
    NoSpace {
        volume: String,
        need: u64,
        free: u64,
        detail: String,
    },
    Io {
        at: String,
        source: io::Error,
    },
    /// An EFI variable could not be read or written.
    EfiVar {
        name: String,
        why: String,
    },
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Volume(e) => write!(f, "{e}"),
            Error::NoSpace { detail, .. } => write!(f, "not enough space: {detail}"),
            Error::Io { at, source } => write!(f, "{at}: {source}"),
            Error::EfiVar { name, why } => write!(f, "EFI variable {name}: {why}"),
            Error::Invalid(w) => write!(f, "{w}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<lifeboat_esp::Error> for Error {
    fn from(e: lifeboat_esp::Error) -> Self {
        match e {
            lifeboat_esp::Error::NoSpace { volume, need, free } => {
                let detail = format!("{volume}: {need} bytes needed, {free} free");
                Error::NoSpace { volume, need, free, detail }
            }
            e => Error::Volume(e),
        }
    }
}
