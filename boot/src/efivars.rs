//! EFI variables through efivarfs (`/sys/firmware/efi/efivars`): a 4-byte
//! little-endian attribute word, then the data, written in one `write(2)`.
//! efivarfs marks variables immutable; writes and deletes clear the flag first and
//! restore it after, as systemd does. The directory is a parameter so tests use a
//! plain directory standing in for efivarfs.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// systemd-boot's vendor GUID for `Loader*` variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The UEFI global variable GUID (`Boot####`, `BootOrder`, ...).
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
pub const NV_BS_RT: u32 = 0x7;
/// BOOTSERVICE_ACCESS | RUNTIME_ACCESS (volatile).
pub const BS_RT: u32 = 0x6;

pub const DEFAULT_DIR: &str = "/sys/firmware/efi/efivars";

const FS_IOC_GETFLAGS: u64 = 0x8008_6601;
const FS_IOC_SETFLAGS: u64 = 0x4008_6602;
const FS_IMMUTABLE_FL: i32 = 0x10;

/// An efivarfs directory.
#[derive(Clone, Debug)]
pub struct EfiVars {
    dir: PathBuf,
}

fn var_err(name: &str, why: impl Into<String>) -> Error {
    Error::EfiVar { name: name.to_owned(), why: why.into() }
}

fn explain(name: &str, e: io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(nix::libc::EROFS) => "efivarfs is mounted read-only (remount it read-write)".to_owned(),
        Some(nix::libc::EPERM) | Some(nix::libc::EACCES) => {
            format!("permission denied ({e}); root is needed")
        }
        Some(nix::libc::ENOSPC) => "the firmware has no space for it".to_owned(),
        Some(nix::libc::EINVAL) => format!("the firmware rejected it ({e})"),
        _ => e.to_string(),
    };
    var_err(name, why)
}

/// Sets or clears the immutable flag; filesystems without the ioctl are fine.
fn set_immutable(f: &fs::File, on: bool) -> io::Result<bool> {
    let mut flags: i32 = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer we pass.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags as *mut i32) };
    if r < 0 {
        return Ok(false);
    }
    let new = if on { flags | FS_IMMUTABLE_FL } else { flags & !FS_IMMUTABLE_FL };
    if new == flags {
        return Ok(flags & FS_IMMUTABLE_FL != 0);
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer we pass.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &new as *const i32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & FS_IMMUTABLE_FL != 0)
}

/// Encodes a string as EFI wants it: UTF-16LE with a NUL terminator.
pub fn utf16_nul(s: &str) -> Vec<u8> {
    s.encode_utf16().chain(std::iter::once(0)).flat_map(u16::to_le_bytes).collect()
}

/// Decodes UTF-16LE up to the first NUL.
pub fn from_utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// Decodes a list of UTF-16LE strings, each ended by a NUL (systemd-boot's
/// `LoaderEntries`); a last one without its NUL is kept.
pub fn from_utf16_list(b: &[u8]) -> Vec<String> {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut out: Vec<String> = units.split(|&u| u == 0).map(String::from_utf16_lossy).collect();
    if out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

impl EfiVars {
    /// Uses `dir` (efivarfs, or a stand-in directory in tests).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(var_err(
                "*",
                format!(
                    "{} does not exist: not booted with UEFI, or efivarfs is not mounted (module efivarfs)",
                    dir.display()
                ),
            ));
        }
        Ok(EfiVars { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str, guid: &str) -> PathBuf {
        self.dir.join(format!("{name}-{guid}"))
    }

    /// Attributes and data, or `None` if the variable does not exist.
    pub fn read(&self, name: &str, guid: &str) -> Result<Option<(u32, Vec<u8>)>> {
        let p = self.path(name, guid);
        let mut f = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(explain(name, e)),
        };
        let mut b = Vec::new();
        loop {
            match f.read_to_end(&mut b) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(explain(name, e)),
            }
        }
        if b.len() < 4 {
            return Err(var_err(name, format!("{} bytes: too short for the attribute word", b.len())));
        }
        let attrs = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Ok(Some((attrs, b[4..].to_vec())))
    }

    /// Writes a variable (one `write` of attributes and data).
    pub fn write(&self, name: &str, guid: &str, attrs: u32, data: &[u8]) -> Result<()> {
        let p = self.path(name, guid);
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&attrs.to_le_bytes());
        buf.extend_from_slice(data);
        // An immutable file cannot even be opened for writing: clear the flag through
        // a read-only descriptor first.
        let was_immutable = match fs::File::open(&p) {
            Ok(r) => set_immutable(&r, false).map_err(|e| explain(name, e))?,
            Err(_) => false,
        };
        let f = fs::OpenOptions::new().write(true).create(true).truncate(!is_efivarfs(&self.dir)).open(&p);
        let mut f = f.map_err(|e| explain(name, e))?;
        let r = loop {
            match f.write(&buf) {
                Ok(n) if n == buf.len() => break Ok(()),
                Ok(n) => break Err(var_err(name, format!("short write ({n} of {} bytes)", buf.len()))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(explain(name, e)),
            }
        };
        if was_immutable {
            let _ = set_immutable(&f, true);
        }
        r
    }

    /// Deletes a variable (absent is fine).
    pub fn delete(&self, name: &str, guid: &str) -> Result<()> {
        let p = self.path(name, guid);
        match fs::File::open(&p) {
            Ok(f) => {
                set_immutable(&f, false).map_err(|e| explain(name, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(explain(name, e)),
        }
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(explain(name, e)),
        }
    }

    /// Variable names with a GUID, e.g. all `Boot####` of the global GUID.
    pub fn list(&self, guid: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let suffix = format!("-{guid}");
        for e in fs::read_dir(&self.dir).map_err(|e| explain("*", e))?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(&suffix) {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn read_string(&self, name: &str, guid: &str) -> Result<Option<String>> {
        Ok(self.read(name, guid)?.map(|(_, d)| from_utf16(&d)))
    }

    pub fn write_string(&self, name: &str, guid: &str, attrs: u32, s: &str) -> Result<()> {
        self.write(name, guid, attrs, &utf16_nul(s))
    }
}

/// efivarfs rejects O_TRUNC; a stand-in directory needs it.
fn is_efivarfs(dir: &Path) -> bool {
    const EFIVARFS_MAGIC: u64 = 0xde5e_81e4;
    nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type().0 as u64 == EFIVARFS_MAGIC).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_a_stand_in_directory() {
        let d = std::env::temp_dir().join(format!("lb-efi-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let v = EfiVars::open(&d).unwrap();
        v.write_string("LoaderEntryOneShot", LOADER_GUID, NV_BS_RT, "lb-5-6.1.conf").unwrap();
        let raw = fs::read(d.join(format!("LoaderEntryOneShot-{LOADER_GUID}"))).unwrap();
        assert_eq!(&raw[..4], &[7, 0, 0, 0]);
        assert_eq!(&raw[4..8], &[b'l', 0, b'b', 0]);
        assert_eq!(&raw[raw.len() - 2..], &[0, 0]);
        assert_eq!(v.read_string("LoaderEntryOneShot", LOADER_GUID).unwrap().as_deref(), Some("lb-5-6.1.conf"));
        v.write_string("LoaderEntryOneShot", LOADER_GUID, NV_BS_RT, "x").unwrap();
        assert_eq!(v.read_string("LoaderEntryOneShot", LOADER_GUID).unwrap().as_deref(), Some("x"));
        assert_eq!(v.list(LOADER_GUID).unwrap(), ["LoaderEntryOneShot"]);
        v.delete("LoaderEntryOneShot", LOADER_GUID).unwrap();
        assert!(v.read("LoaderEntryOneShot", LOADER_GUID).unwrap().is_none());
        fs::write(d.join(format!("Short-{LOADER_GUID}")), [1u8]).unwrap();
        assert!(v.read("Short", LOADER_GUID).is_err());
        fs::remove_dir_all(&d).unwrap();
        assert!(EfiVars::open(&d).is_err());
    }

    #[test]
    fn string_lists() {
        let b: Vec<u8> = "a.conf\0b.efi\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(from_utf16_list(&b), ["a.conf", "b.efi"]);
        assert_eq!(from_utf16_list(&b[..b.len() - 2]), ["a.conf", "b.efi"]);
        assert!(from_utf16_list(&[]).is_empty());
    }
}
