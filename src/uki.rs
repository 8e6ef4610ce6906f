//! Secure Boot for boot sync and install: whether a sync makes signed unified
//! kernel images (UKIs) instead of Type #1 entries, the machine's db key and
//! certificate (found, checked, never copied or printed), each transaction's
//! UKI built from its own tree and signed, and the signed loader.
//!
//! A UKI is the tree's systemd-stub with the kernel, one initrd (the
//! transaction's own initrds, then lifeboat's rescue initrd, concatenated as
//! systemd-boot would hand them over), the tree's os-release, the kernel
//! release and the entry's command line with `lifeboat.tx=N`. With Secure Boot
//! on, systemd-stub ignores a command line given from the menu when the image
//! has a `.cmdline` section: the signature covers every byte that chooses what
//! boots.
//!
//! STOP-GAP (until the `lifeboat-pe` crate lands): the image is assembled by
//! binutils' `objcopy` and signed by `sbsign` (sbsigntool). Both are found on
//! `PATH`; a missing one fails the sync naming the tool. The inputs and the
//! outputs pass through a private (0700) temporary directory; the key is only
//! named to `sbsign` by its path, never copied.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;
use crate::error::{Error, Result};

/// Where the db key and certificate are by default, below the root.
pub const DEFAULT_KEY: &str = "etc/lifeboat/secureboot/db.key";
pub const DEFAULT_CERT: &str = "etc/lifeboat/secureboot/db.crt";
/// The distribution's systemd-stub in a tree (relative to `/usr`).
pub const STUB_REL: &str = "lib/systemd/boot/efi/linuxx64.efi.stub";
/// A key or certificate file is a few KiB.
const PEM_MAX: u64 = 64 * 1024;

/// Why Secure Boot was chosen (or not), for the notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `--secure-boot` on the command line.
    Asked,
    /// `secure-boot = yes` or `no` in lifeboat.conf.
    Config(bool),
    /// Not set anywhere: the running firmware's `SecureBoot` variable.
    Firmware(bool),
    /// Not set, and no firmware state to read (a `--root` that is not the
    /// running system, or no efivarfs).
    Off,
}

impl Choice {
    pub fn on(self) -> bool {
        matches!(self, Choice::Asked | Choice::Config(true) | Choice::Firmware(true))
    }
}

/// Whether a sync or install signs: the flag, else the configuration, else
/// (on the running system only) whether the firmware enforces Secure Boot.
pub fn choose(flag: bool, cfg: &Config, live_firmware: Option<bool>) -> Choice {
    if flag {
        Choice::Asked
    } else if let Some(c) = cfg.secure_boot {
        Choice::Config(c)
    } else if let Some(f) = live_firmware {
        Choice::Firmware(f)
    } else {
        Choice::Off
    }
}

/// The firmware's `SecureBoot` variable (EFI global GUID), `None` when it
/// cannot be read.
pub fn firmware_secure_boot(efivars_dir: &Path) -> Option<bool> {
    let v = lifeboat_boot::efivars::EfiVars::open(efivars_dir).ok()?;
    let (_, data) = v.read("SecureBoot", "8be4df61-93ca-11d2-aa0d-00e098032b8c").ok()??;
    data.first().map(|b| *b == 1)
}

/// The machine's db key and certificate: paths checked, the key never read
/// into lifeboat (the signer reads it).
#[derive(Clone)]
pub struct Keys {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's path only: its content is never printed.
        write!(f, "Keys {{ key: {}, cert: {} }}", self.key.display(), self.cert.display())
    }
}

fn resolve(root: &Path, given: Option<&str>, default: &str) -> PathBuf {
    match given {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => root.join(p),
        None => root.join(default),
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::SecureBoot { path: path.to_path_buf(), problem: problem.into() }
}

/// A PEM file's text, after checking it is a regular file (a symlink, FIFO
/// or device is refused, so a read never blocks or leaves the place named).
fn read_pem(path: &Path, what: &str) -> Result<(fs::Metadata, String)> {
    let md = fs::symlink_metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(
            path,
            format!(
                "no {what} here: put the machine's db {what} there (PEM), or name it in lifeboat.conf \
                 (secure-boot-key / secure-boot-cert)"
            ),
        ),
        _ => Error::io("inspect", path, e),
    })?;
    if !md.file_type().is_file() {
        return Err(bad(path, format!("the {what} is not a regular file")));
    }
    if md.len() > PEM_MAX {
        return Err(bad(path, format!("{} bytes is too large for a PEM {what}", md.len())));
    }
    let f = lifeboat_fs::foreign::open_named(path).map_err(|e| Error::io("read", path, e))?;
    let b = lifeboat_fs::foreign::read_capped(f, PEM_MAX).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8(b).map_err(|_| bad(path, format!("the {what} is not PEM text")))?;
    Ok((md, text))
}

/// Finds and checks the db key and certificate of `root` (or the paths
/// lifeboat.conf gives): both PEM regular files; the key readable by its owner
/// only (a key that group or others can read is refused: it may have been
/// copied already, and signing with it would hide that).
pub fn load_keys(root: &Path, cfg: &Config) -> Result<Keys> {
    let key = resolve(root, cfg.secure_boot_key.as_deref(), DEFAULT_KEY);
    let cert = resolve(root, cfg.secure_boot_cert.as_deref(), DEFAULT_CERT);
    let (md, text) = read_pem(&key, "key")?;
    if md.mode() & 0o077 != 0 {
        return Err(bad(
            &key,
            format!(
                "the private key is readable or writable by group or others (mode {:04o}); `chmod 600` it \
                 (and replace it if others could have copied it)",
                md.mode() & 0o7777
            ),
        ));
    }
    if !text.contains("-----BEGIN") || !text.contains("PRIVATE KEY-----") {
        return Err(bad(&key, "not a PEM private key (no BEGIN ... PRIVATE KEY line)"));
    }
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(bad(
            &key,
            "the private key is encrypted: lifeboat signs unattended; decrypt it into a file of mode 0600 \
             (`openssl pkey -in KEY -out db.key`)",
        ));
    }
    drop(text);
    let (_, ctext) = read_pem(&cert, "certificate")?;
    if !ctext.contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(&cert, "not a PEM certificate (no BEGIN CERTIFICATE line)"));
    }
    Ok(Keys { key, cert })
}

/// What one UKI is made of.
pub struct UkiParts<'a> {
    pub stub: &'a [u8],
    pub osrel: &'a [u8],
    pub cmdline: &'a [u8],
    pub uname: &'a [u8],
    pub linux: &'a [u8],
    pub initrd: &'a [u8],
}

/// A private directory for the tools' inputs and outputs, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("lifeboat-uki-{}-{n}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(Scratch(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", p, e)),
            }
        }
        Err(Error::io("create", base, std::io::Error::other("no free name for a scratch directory")))
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.0.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::io("create", &p, e))?;
        f.write_all(bytes).map_err(|e| Error::io("write", &p, e))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run_tool(tool: &'static str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        let hint = match tool {
            "sbsign" => " (install sbsigntool)",
            _ => " (install binutils)",
        };
        Error::io("run", format!("{tool}{hint}"), e)
    })?;
    if !out.status.success() {
        return Err(Error::SecureBoot {
            path: PathBuf::from(tool),
            problem: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// The end of the stub's image (the highest section end, page-aligned): the
/// added sections go above it. Read from the PE headers with bounds checked.
fn stub_image_end(stub: &[u8]) -> Option<u64> {
    let mut r = lifeboat_codec::Reader::new(stub);
    r.seek(0x3c, "PE header").ok()?;
    let pe = r.u32_le("PE header").ok()? as usize;
    r.seek(pe, "PE header").ok()?;
    if r.take(4, "PE signature").ok()? != b"PE\0\0" {
        return None;
    }
    r.skip(2, "PE header").ok()?;
    let nsec = r.u16_le("PE header").ok()? as usize;
    r.skip(12, "PE header").ok()?;
    let opt = r.u16_le("PE header").ok()? as usize;
    r.skip(2, "PE header").ok()?;
    r.skip(opt, "PE header").ok()?;
    let mut end = 0u64;
    for _ in 0..nsec {
        r.skip(8, "PE header").ok()?;
        let vsize = r.u32_le("PE header").ok()? as u64;
        let va = r.u32_le("PE header").ok()? as u64;
        r.skip(24, "PE header").ok()?;
        end = end.max(va + vsize);
    }
    Some(end.div_ceil(0x1000) * 0x1000)
}

/// Builds an unsigned UKI (objcopy, stop-gap; see the module comment).
pub fn build(parts: &UkiParts) -> Result<Vec<u8>> {
    let stub_end = stub_image_end(parts.stub)
        .ok_or_else(|| bad(Path::new(STUB_REL), "the systemd-stub is not a PE image lifeboat can read"))?;
    let s = Scratch::new()?;
    let stub = s.put("stub.efi", parts.stub)?;
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut at = stub_end;
    // .linux last of the small ones and .initrd last of all, as ukify orders
    // them: the stub reads each by its section header, wherever it is.
    let sections: [(&str, &[u8]); 5] = [
        (".osrel", parts.osrel),
        (".cmdline", parts.cmdline),
        (".uname", parts.uname),
        (".linux", parts.linux),
        (".initrd", parts.initrd),
    ];
    for (name, data) in sections {
        let file = s.put(&name[1..], data)?;
        args.push("--add-section".into());
        let mut a = std::ffi::OsString::from(format!("{name}="));
        a.push(&file);
        args.push(a);
        args.push("--change-section-vma".into());
        args.push(format!("{name}=0x{at:x}").into());
        at += (data.len() as u64).max(1).div_ceil(0x1000) * 0x1000;
    }
    let out = s.0.join("uki.efi");
    args.push(stub.into_os_string());
    args.push(out.clone().into_os_string());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_tool("objcopy", &refs)?;
    fs::read(&out).map_err(|e| Error::io("read", out, e))
}

/// Signs a PE image with the db key (sbsign, stop-gap): Authenticode over
/// the image, the certificate embedded.
pub fn sign(image: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    let s = Scratch::new()?;
    let input = s.put("unsigned.efi", image)?;
    let out = s.0.join("signed.efi");
    run_tool(
        "sbsign",
        &[
            "--key".as_ref(),
            keys.key.as_os_str(),
            "--cert".as_ref(),
            keys.cert.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            input.as_os_str(),
        ],
    )?;
    fs::read(&out).map_err(|e| Error::io("read", out, e))
}

/// Whether a PE image carries an Authenticode signature (a non-empty
/// certificate table, data directory 4).
pub fn is_signed(image: &[u8]) -> bool {
    let f = || -> Option<bool> {
        let mut r = lifeboat_codec::Reader::new(image);
        r.seek(0x3c, "PE header").ok()?;
        let pe = r.u32_le("PE header").ok()? as usize;
        r.seek(pe + 24, "PE header").ok()?;
        let magic = r.u16_le("PE header").ok()?;
        // Data directories start 96 (PE32) or 112 (PE32+) bytes into the optional header.
        let dirs = pe + 24 + if magic == 0x20b { 112 } else { 96 };
        r.seek(dirs + 4 * 8, "PE header").ok()?;
        let _addr = r.u32_le("PE header").ok()?;
        Some(r.u32_le("PE header").ok()? > 0)
    };
    f().unwrap_or(false)
}

/// The initrds of an entry as one `.initrd` section: each padded to 4 bytes,
/// in order (the kernel unpacks concatenated archives; the last one's
/// `/init`, lifeboat's, wins).
pub fn concat_initrds(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 3).sum());
    for p in parts {
        out.extend_from_slice(p);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}
