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
//! The image is assembled and signed (Authenticode, SHA-256) by `lifeboat-pe`,
//! in memory: no tool runs, and the key never leaves the process.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// The firmware's `SecureBoot` variable ([`lifeboat_boot::sbstate`]), `None`
/// when it cannot be read.
pub fn firmware_secure_boot(efivars_dir: &Path) -> Option<bool> {
    let v = lifeboat_boot::efivars::EfiVars::open(efivars_dir).ok()?;
    lifeboat_boot::sbstate::read(&v).ok()?.secure_boot
}

/// The machine's db key and certificate: the paths checked, the key loaded
/// (it stays in this process's memory; `lifeboat-pe` wipes it when dropped).
pub struct Keys {
    pub key: PathBuf,
    pub cert: PathBuf,
    signer: Signer,
}

/// The loaded key. The rescue build (`--no-default-features`, what PID 1
/// runs) has no signer: it never signs, and leaving RSA, X.509 and CMS out
/// keeps it small.
#[cfg(feature = "sign")]
type Signer = lifeboat_pe::SigningKey;
#[cfg(not(feature = "sign"))]
type Signer = NoSigner;
#[cfg(not(feature = "sign"))]
pub struct NoSigner;

#[cfg(not(feature = "sign"))]
const NO_SIGNER: &str = "this is lifeboat's rescue build, which does not sign: run the host build";

#[cfg(feature = "sign")]
fn load_signer(key: &Path, key_text: &str, cert: &Path, cert_bytes: &[u8]) -> Result<Signer> {
    lifeboat_pe::SigningKey::from_pem(key_text, cert_bytes, key, cert).map_err(|e| match e {
        // The path once, from the error that names it.
        lifeboat_pe::Error::Key { path, why } => bad(&path, why),
        e => bad(key, e.to_string()),
    })
}

#[cfg(not(feature = "sign"))]
fn load_signer(key: &Path, _: &str, _cert: &Path, _: &[u8]) -> Result<Signer> {
    Err(bad(key, NO_SIGNER))
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's path only: its content is never printed.
        write!(f, "Keys {{ key: {}, cert: {} }}", self.key.display(), self.cert.display())
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::SecureBoot { path: path.to_path_buf(), problem: problem.into() }
}

/// Whether a directory lets group or others replace what is in it (write
/// permission without the sticky bit, which keeps others from renaming or
/// deleting a file they do not own).
fn others_may_swap(mode: u32) -> bool {
    mode & 0o022 != 0 && mode & 0o1000 == 0
}

/// Opens the key or certificate `given` names (else `default`) and checks
/// where it is. A relative path (and the default) is below the root,
/// resolved there without following any symlink and without `..`, and every
/// directory from the root down to the file must be writable by its owner
/// only (else anyone could swap key and certificate). An absolute path in
/// lifeboat.conf is taken as the user wrote it, symlinks followed, and its
/// directory is checked the same way.
fn open_checked(root: &Path, given: Option<&str>, default: &str, what: &str) -> Result<(PathBuf, fs::File)> {
    use std::os::fd::AsFd;
    let missing = |path: &Path| {
        bad(
            path,
            format!(
                "no {what} here: put the machine's db {what} there (PEM), or name it in lifeboat.conf \
                 (secure-boot-key / secure-boot-cert)"
            ),
        )
    };
    let swap = |path: &Path, dir: &Path, mode: u32| {
        bad(
            path,
            format!(
                "its directory {} is writable by group or others (mode {:04o}): anyone could swap the key and \
                 certificate; `chmod go-w` it",
                lifeboat_fs::shown::shown_path(dir),
                mode & 0o7777
            ),
        )
    };
    match given {
        Some(p) if Path::new(p).is_absolute() => {
            let path = PathBuf::from(p);
            let f = lifeboat_fs::foreign::open_named(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(&path),
                _ => Error::io("open", &path, e),
            })?;
            let canon = fs::canonicalize(&path).map_err(|e| Error::io("resolve", &path, e))?;
            if let Some(dir) = canon.parent() {
                let md = fs::metadata(dir).map_err(|e| Error::io("inspect", dir, e))?;
                if others_may_swap(md.mode()) {
                    return Err(swap(&path, dir, md.mode()));
                }
            }
            Ok((path, f))
        }
        _ => {
            let rel = given.unwrap_or(default);
            let path = root.join(rel);
            let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            if comps.contains(&"..") {
                return Err(bad(
                    &path,
                    "`..` leaves the root: a relative path is below the root (give an absolute path to name a \
                     file elsewhere)",
                ));
            }
            let Some((name, dirs)) = comps.split_last() else { return Err(missing(&path)) };
            let mut dir = lifeboat_fs::open_dir(root).map_err(|e| Error::io("open", root, e))?;
            let mut at = root.to_path_buf();
            let check = |dir: &std::os::fd::OwnedFd, at: &Path| {
                let st = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| Error::io("inspect", at, e.into()))?;
                if others_may_swap(st.st_mode) {
                    return Err(swap(&path, at, st.st_mode));
                }
                Ok(())
            };
            check(&dir, &at)?;
            for next in dirs {
                at.push(next);
                dir = lifeboat_fs::open_dir_at(dir.as_fd(), next.as_bytes()).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => missing(&path),
                    _ => bad(
                        &path,
                        format!(
                            "{} is not a directory inside the root ({e}): the key's directories are resolved in \
                             the root without following symlinks",
                            lifeboat_fs::shown::shown_path(&at)
                        ),
                    ),
                })?;
                check(&dir, &at)?;
            }
            let f =
                lifeboat_fs::foreign::open_file_beneath(dir.as_fd(), name.as_bytes()).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => missing(&path),
                    _ => bad(
                        &path,
                        format!("the {what} is not a regular file inside the root (a symlink is not followed): {e}"),
                    ),
                })?;
            Ok((path, f))
        }
    }
}

/// Reads an opened PEM file, at most [`PEM_MAX`] bytes.
fn read_opened(path: &Path, f: fs::File, what: &str) -> Result<(fs::Metadata, Vec<u8>)> {
    let md = f.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if !md.file_type().is_file() {
        return Err(bad(path, format!("the {what} is not a regular file")));
    }
    if md.len() > PEM_MAX {
        return Err(bad(path, format!("{} bytes is too large for a PEM {what}", md.len())));
    }
    let b = lifeboat_fs::foreign::read_capped(f, PEM_MAX).map_err(|e| Error::io("read", path, e))?;
    Ok((md, b))
}

/// Finds and checks the db key and certificate of `root` (or the paths
/// lifeboat.conf gives): where they are ([`open_checked`]); both PEM regular
/// files; the key owned by the user running lifeboat (or root) and readable
/// by its owner only (a key that group or others can read is refused: it may
/// have been copied already, and signing with it would hide that); the
/// certificate writable by its owner only. What is checked is what is used:
/// the files are read once, from the descriptors checked.
pub fn load_keys(root: &Path, cfg: &Config) -> Result<Keys> {
    let (key, kf) = open_checked(root, cfg.secure_boot_key.as_deref(), DEFAULT_KEY, "key")?;
    let (cert, cf) = open_checked(root, cfg.secure_boot_cert.as_deref(), DEFAULT_CERT, "certificate")?;
    let (md, kbytes) = read_opened(&key, kf, "key")?;
    let kbytes = zeroize::Zeroizing::new(kbytes);
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
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 {
        return Err(bad(
            &key,
            format!(
                "the private key is owned by uid {}, not by the user running lifeboat (uid {me}) or root: \
                 whoever owns it could change it; `chown` it",
                md.uid()
            ),
        ));
    }
    let text = std::str::from_utf8(&kbytes).map_err(|_| bad(&key, "the key is not PEM text"))?;
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
    let (cmd, cbytes) = read_opened(&cert, cf, "certificate")?;
    if cmd.mode() & 0o022 != 0 {
        return Err(bad(
            &cert,
            format!(
                "the certificate is writable by group or others (mode {:04o}): anyone could swap it; `chmod go-w` it",
                cmd.mode() & 0o7777
            ),
        ));
    }
    if !String::from_utf8_lossy(&cbytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(&cert, "not a PEM certificate (no BEGIN CERTIFICATE line)"));
    }
    let signer = load_signer(&key, text, &cert, &cbytes)?;
    Ok(Keys { key, cert, signer })
}

/// The root's db certificate (DER) when it can be read (where
/// [`load_keys`] finds it, with the same checks), for `boot status` to say
/// whose signature an image carries; `None` when it cannot, or in the
/// rescue build, which does not verify signatures.
pub fn root_cert_der(root: &Path, cfg: &Config) -> Option<Vec<u8>> {
    let (cert, f) = open_checked(root, cfg.secure_boot_cert.as_deref(), DEFAULT_CERT, "certificate").ok()?;
    let (_, bytes) = read_opened(&cert, f, "certificate").ok()?;
    #[cfg(feature = "sign")]
    return lifeboat_pe::certificate_der(&bytes).ok();
    #[cfg(not(feature = "sign"))]
    {
        let _ = bytes;
        None
    }
}

/// Whether `image` carries a valid signature by the certificate `cert_der`
/// (the one it embeds is that certificate, and it verifies over this image).
pub fn signed_by(image: &[u8], cert_der: &[u8]) -> bool {
    verified(image, cert_der)
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

/// Builds an unsigned UKI with `lifeboat-pe` (deterministic bytes).
pub fn build(parts: &UkiParts) -> Result<Vec<u8>> {
    lifeboat_pe::build_uki(&lifeboat_pe::UkiParts {
        stub: parts.stub,
        osrel: parts.osrel,
        cmdline: parts.cmdline,
        uname: Some(parts.uname),
        initrd: parts.initrd,
        linux: parts.linux,
    })
    .map_err(|e| bad(Path::new(STUB_REL), format!("the image cannot be built: {e}")))
}

/// Signs a PE image with the db key: Authenticode (SHA-256) by `lifeboat-pe`,
/// the certificate embedded. Deterministic: the same image and key give the
/// same bytes.
pub fn sign(image: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    #[cfg(feature = "sign")]
    return lifeboat_pe::sign(image, &keys.signer).map_err(|e| bad(&keys.cert, format!("cannot sign: {e}")));
    #[cfg(not(feature = "sign"))]
    {
        let _ = (image, &keys.signer);
        Err(bad(&keys.key, NO_SIGNER))
    }
}

/// Whether a PE image carries an Authenticode signature (a non-empty
/// certificate table).
pub fn is_signed(image: &[u8]) -> bool {
    lifeboat_pe::PeImage::parse(image).is_ok_and(|p| p.is_signed())
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

/// The `.osrel` of an entry's image: the tree's os-release with `PRETTY_NAME`
/// set to the entry's title and `IMAGE_VERSION` to its version. systemd-boot
/// titles a UKI by `PRETTY_NAME` and orders by `IMAGE_ID`/`ID`, then the
/// version: the menu then reads and sorts as it does for Type #1 entries
/// (distinct titles, newest transaction first).
pub fn entry_osrel(tree: &[u8], title: &str, version: &str) -> Vec<u8> {
    let quote = |v: &str| {
        let mut q = String::from("\"");
        for c in v.chars().filter(|c| !c.is_control()) {
            if matches!(c, '"' | '\\' | '$' | '`') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    let mut out = String::new();
    for line in String::from_utf8_lossy(tree).lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if key == "PRETTY_NAME" || key == "IMAGE_VERSION" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("PRETTY_NAME={}\nIMAGE_VERSION={}\n", quote(title), quote(version)));
    out.into_bytes()
}

/// The certificate's DER bytes.
pub fn cert_der(keys: &Keys) -> Result<Vec<u8>> {
    #[cfg(feature = "sign")]
    return Ok(keys.signer.certificate_der().to_vec());
    #[cfg(not(feature = "sign"))]
    Err(bad(&keys.cert, NO_SIGNER))
}

/// Whether `present` (an image on `$BOOT`) is `unsigned` signed with the
/// certificate `cert_der`: the same bytes up to its certificate table, apart
/// from the CheckSum and the certificate-table entry, then at most the
/// signer's zero padding (to the FileAlignment), and a signature `lifeboat-pe`
/// verifies under the certificate over this very image — the signer's
/// certificate it carries being `cert_der` byte for byte, since the firmware
/// checks the signature with that embedded certificate, not with ours.
/// Such an image is kept as it is: nothing to sign, and an image made by
/// another signer (sbsign puts a signing time into each signature) is not
/// rewritten for a signature that differs only in that.
pub fn is_signed_copy_of(present: &[u8], unsigned: &[u8], cert_der: &[u8]) -> bool {
    let (Ok(p), Ok(u)) = (lifeboat_pe::PeImage::parse(present), lifeboat_pe::PeImage::parse(unsigned)) else {
        return false;
    };
    let (Some((table_at, table_len)), Some(dir_at)) = (p.certificate_table(), p.cert_dir_offset()) else {
        return false;
    };
    if u.cert_dir_offset() != Some(dir_at) || u.checksum_offset() != p.checksum_offset() || u.is_signed() {
        return false;
    }
    let (table_at, table_len) = (table_at as usize, table_len as usize);
    let Some(table) = present.get(table_at..table_at.saturating_add(table_len)) else {
        return false;
    };
    // The signer pads the image to its FileAlignment (and to 8 bytes) before
    // the table.
    let pad_max = (u.file_alignment() as usize).max(8);
    if table_at < unsigned.len() || table_at - unsigned.len() >= pad_max {
        return false;
    }
    if present[unsigned.len()..table_at].iter().any(|b| *b != 0) {
        return false;
    }
    let sum_at = p.checksum_offset();
    let same = |range: std::ops::Range<usize>| present.get(range.clone()) == unsigned.get(range);
    same(0..sum_at)
        && same(sum_at + 4..dir_at)
        && same(dir_at + 8..unsigned.len())
        && !table.is_empty()
        && verified(present, cert_der)
}

#[cfg(feature = "sign")]
fn verified(image: &[u8], cert_der: &[u8]) -> bool {
    matches!(
        lifeboat_pe::verify(image, cert_der),
        Ok(lifeboat_pe::Verdict::SignedBy { matches_cert: true, digest_ok: true })
    )
}

#[cfg(not(feature = "sign"))]
fn verified(_: &[u8], _: &[u8]) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn osrel_titles_the_entry() {
        let o = super::entry_osrel(b"NAME=X\nPRETTY_NAME=\"X 1\"\nID=x\n", "X, transaction 2 \"a\"", "2-6.1");
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "NAME=X\nID=x\nPRETTY_NAME=\"X, transaction 2 \\\"a\\\"\"\nIMAGE_VERSION=\"2-6.1\"\n"
        );
    }

    #[test]
    fn initrds_padded() {
        assert_eq!(super::concat_initrds(&[vec![1, 2, 3], vec![4]]), vec![1, 2, 3, 0, 4, 0, 0, 0]);
    }
}
