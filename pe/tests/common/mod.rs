//! Shared by the integration tests: the real inputs (Debian's systemd-boot-efi,
//! OVMF's snakeoil key) and the real tools as oracles. A missing tool or file
//! fails the test: a test whose oracle is absent proves nothing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", path.display()))
}

/// Runs a tool, panicking with its output when it is missing or fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory under the target directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `objdump -h`'s sections as (name, VMA, size).
pub fn objdump_sections(path: &Path) -> Vec<(String, u32, u32)> {
    let out = run(Command::new("objdump").arg("-h").arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 7 && f[0].parse::<u32>().is_ok() {
                Some((f[1].to_string(), u32::from_str_radix(f[3], 16).ok()?, u32::from_str_radix(f[2], 16).ok()?))
            } else {
                None
            }
        })
        .collect()
}

/// A UKI by the recipe of systemd 252's documentation (systemd-stub(7)):
/// `objcopy --add-section .osrel=… --change-section-vma .osrel=0x20000 …`.
pub fn objcopy_uki(dir: &TempDir, osrel: &[u8], cmdline: &[u8], linux: &[u8], initrd: &[u8]) -> Vec<u8> {
    let o = dir.write("osrel", osrel);
    let c = dir.write("cmdline", cmdline);
    let l = dir.write("linux", linux);
    let i = dir.write("initrd", initrd);
    let out = dir.path("objcopy.efi");
    run(Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".osrel={}", o.display()))
        .args(["--change-section-vma", ".osrel=0x20000"])
        .arg("--add-section")
        .arg(format!(".cmdline={}", c.display()))
        .args(["--change-section-vma", ".cmdline=0x30000"])
        .arg("--add-section")
        .arg(format!(".linux={}", l.display()))
        .args(["--change-section-vma", ".linux=0x2000000"])
        .arg("--add-section")
        .arg(format!(".initrd={}", i.display()))
        .args(["--change-section-vma", ".initrd=0x3000000"])
        .arg(STUB)
        .arg(&out));
    read(out)
}
