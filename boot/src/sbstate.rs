//! The firmware's Secure Boot state and what the loader and stub say they
//! support, read from EFI variables: `SecureBoot`, `SetupMode`, `AuditMode`,
//! `DeployedMode` (UEFI global variables, one byte each), and systemd's
//! `LoaderFeatures` / `StubFeatures` (64-bit little-endian bit sets) and
//! `LoaderInfo` / `StubInfo` (UTF-16 strings) under its vendor GUID. Read only.

use crate::efivars::{EfiVars, GLOBAL_GUID, LOADER_GUID};
use crate::Result;

/// `LoaderFeatures` bits with the names `bootctl status` gives them (systemd
/// 252's `EFI_LOADER_FEATURE_*`, and bit 13 from 254).
pub const LOADER_FEATURES: &[(u32, &str)] = &[
    (0, "Menu timeout control"),
    (1, "One-shot menu timeout control"),
    (2, "Default entry control"),
    (3, "One-shot entry control"),
    (4, "Boot counting"),
    (5, "Support for XBOOTLDR partition"),
    (6, "Support for passing random seed to OS"),
    (7, "Load drop-in drivers"),
    (8, "Support Type #1 sort-key field"),
    (9, "Support @saved pseudo-entry"),
    (10, "Support Type #1 devicetree field"),
    (11, "Enroll SecureBoot keys"),
    (12, "Retain SHIM protocols"),
    (13, "Menu can be disabled"),
];

/// `StubFeatures` bits (systemd 252's `EFI_STUB_FEATURE_*`, bits 5–7 from 254).
pub const STUB_FEATURES: &[(u32, &str)] = &[
    (0, "Stub sets ESP information"),
    (1, "Picks up credentials from boot partition"),
    (2, "Picks up system extension images from boot partition"),
    (3, "Measures kernel+command line+sysexts"),
    (4, "Support for passing random seed to OS"),
    (5, "Pick up .cmdline from addons"),
    (6, "Pick up .cmdline from SMBIOS Type 11"),
    (7, "Pick up .dtb from addons"),
];

/// A decoded feature set: the names of the bits set, and the bits no name is
/// known for (as `bit N`).
pub fn feature_names(bits: u64, table: &[(u32, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for b in 0..64u32 {
        if bits & (1u64 << b) == 0 {
            continue;
        }
        match table.iter().find(|(n, _)| *n == b) {
            Some((_, name)) => out.push((*name).to_owned()),
            None => out.push(format!("bit {b}")),
        }
    }
    out
}

/// What the variables say; `None` where a variable is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirmwareState {
    pub secure_boot: Option<bool>,
    pub setup_mode: Option<bool>,
    pub audit_mode: Option<bool>,
    pub deployed_mode: Option<bool>,
    pub loader_features: Option<u64>,
    pub stub_features: Option<u64>,
    pub loader_info: Option<String>,
    pub stub_info: Option<String>,
    /// Variables present but unreadable or malformed, with why: each is
    /// reported as `None` above, and the others still count.
    pub unreadable: Vec<(String, String)>,
}

impl FirmwareState {
    /// Whether the firmware enforces signatures: Secure Boot on and not in setup
    /// (or audit) mode, where nothing is checked.
    pub fn enforcing(&self) -> bool {
        self.secure_boot == Some(true) && self.setup_mode != Some(true) && self.audit_mode != Some(true)
    }
}

/// A one-byte boolean variable; any other size is named as wrong.
fn flag(v: &EfiVars, name: &str) -> Result<Option<bool>> {
    match v.read(name, GLOBAL_GUID)? {
        None => Ok(None),
        Some((_, d)) if d.len() == 1 => Ok(Some(d[0] != 0)),
        Some((_, d)) => Err(crate::Error::EfiVar { name: name.to_owned(), why: format!("{} bytes, not 1", d.len()) }),
    }
}

/// A 64-bit little-endian feature word; any other size is named as wrong.
fn features(v: &EfiVars, name: &str) -> Result<Option<u64>> {
    match v.read(name, LOADER_GUID)? {
        None => Ok(None),
        Some((_, d)) => {
            let a: [u8; 8] = d.as_slice().try_into().map_err(|_| crate::Error::EfiVar {
                name: name.to_owned(),
                why: format!("{} bytes, not 8", d.len()),
            })?;
            Ok(Some(u64::from_le_bytes(a)))
        }
    }
}

/// A variable's value, or `None` with the error noted in `bad`.
fn kept<T>(bad: &mut Vec<(String, String)>, name: &str, r: Result<Option<T>>) -> Option<T> {
    r.unwrap_or_else(|e| {
        bad.push((name.to_owned(), e.to_string()));
        None
    })
}

/// Reads the state. A malformed or unreadable variable is listed in
/// [`FirmwareState::unreadable`] and read as absent: one bad variable (a
/// 0-byte `AuditMode`) does not hide what the others say.
pub fn read(v: &EfiVars) -> Result<FirmwareState> {
    let mut bad = Vec::new();
    let secure_boot = kept(&mut bad, "SecureBoot", flag(v, "SecureBoot"));
    let setup_mode = kept(&mut bad, "SetupMode", flag(v, "SetupMode"));
    let audit_mode = kept(&mut bad, "AuditMode", flag(v, "AuditMode"));
    let deployed_mode = kept(&mut bad, "DeployedMode", flag(v, "DeployedMode"));
    let loader_features = kept(&mut bad, "LoaderFeatures", features(v, "LoaderFeatures"));
    let stub_features = kept(&mut bad, "StubFeatures", features(v, "StubFeatures"));
    let loader_info = kept(&mut bad, "LoaderInfo", v.read_string("LoaderInfo", LOADER_GUID));
    let stub_info = kept(&mut bad, "StubInfo", v.read_string("StubInfo", LOADER_GUID));
    let unreadable = bad;
    Ok(FirmwareState {
        secure_boot,
        setup_mode,
        audit_mode,
        deployed_mode,
        loader_features,
        stub_features,
        loader_info,
        stub_info,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_a_stand_in_efivarfs() {
        let d = std::env::temp_dir().join(format!("lb-sb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let put = |n: &str, g: &str, data: &[u8]| {
            let mut b = vec![6, 0, 0, 0];
            b.extend_from_slice(data);
            fs::write(d.join(format!("{n}-{g}")), b).unwrap();
        };
        put("SecureBoot", GLOBAL_GUID, &[1]);
        put("SetupMode", GLOBAL_GUID, &[0]);
        put("LoaderFeatures", LOADER_GUID, &((1u64 << 4) | (1 << 8) | (1 << 40)).to_le_bytes());
        let v = EfiVars::open(&d).unwrap();
        v.write_string("StubInfo", LOADER_GUID, 6, "systemd-stub 252.39-1~deb12u2").unwrap();
        let s = read(&v).unwrap();
        assert_eq!((s.secure_boot, s.setup_mode, s.audit_mode), (Some(true), Some(false), None));
        assert!(s.enforcing());
        assert_eq!(s.stub_info.as_deref(), Some("systemd-stub 252.39-1~deb12u2"));
        assert_eq!(
            feature_names(s.loader_features.unwrap(), LOADER_FEATURES),
            ["Boot counting", "Support Type #1 sort-key field", "bit 40"]
        );
        put("SetupMode", GLOBAL_GUID, &[1]);
        assert!(!read(&v).unwrap().enforcing(), "setup mode checks nothing");
        put("StubFeatures", LOADER_GUID, &[1, 2, 3]);
        put("AuditMode", GLOBAL_GUID, &[]);
        let s = read(&v).unwrap();
        // The malformed ones are named; the others still read.
        assert_eq!((s.secure_boot, s.setup_mode, s.audit_mode, s.stub_features), (Some(true), Some(true), None, None));
        let names: Vec<_> = s.unreadable.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["AuditMode", "StubFeatures"]);
        assert!(s.unreadable[1].1.contains("3 bytes"), "{:?}", s.unreadable);
        fs::remove_dir_all(&d).unwrap();
    }
}
