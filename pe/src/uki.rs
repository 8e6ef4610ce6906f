//! Unified kernel images: reading what systemd-boot shows of one ([`read_uki`])
//! and building one from systemd-stub ([`build_uki`]).

use crate::{Error, PeImage};

/// What systemd-boot reads from a Type #2 entry (a UKI): the sections as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UkiInfo {
    pub osrel: Option<String>,
    pub cmdline: Option<String>,
    pub uname: Option<String>,
    pub sbat: Option<String>,
    pub linux_size: u64,
    pub initrd_size: u64,
}

/// Reads a UKI's text sections (`.osrel`, `.cmdline`, `.uname`, `.sbat`, each as
/// lossy UTF-8 with trailing NULs trimmed, as systemd-boot reads them) and the
/// sizes of `.linux` and `.initrd`. An error when `bytes` is not a PE image or has
/// no `.linux` section.
pub fn read_uki(bytes: &[u8]) -> Result<UkiInfo, Error> {
    let pe = PeImage::parse(bytes)?;
    let linux = pe.section(".linux").ok_or(Error::NotUki { missing: ".linux" })?;
    let text = |name: &str| {
        pe.section(name).map(|d| {
            let end = d.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            String::from_utf8_lossy(&d[..end]).into_owned()
        })
    };
    Ok(UkiInfo {
        osrel: text(".osrel"),
        cmdline: text(".cmdline"),
        uname: text(".uname"),
        sbat: text(".sbat"),
        linux_size: linux.len() as u64,
        initrd_size: pe.section(".initrd").map_or(0, |d| d.len() as u64),
    })
}
