//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`): recognised by name and
//! magic, decompressed when the initrd is built for a kernel that cannot
//! decompress them itself, and checked whole either way, so a corrupt module is
//! an error at build time, not a failed load at boot.

use crate::{Error, Result};

/// How a module file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl Format {
    /// By the file name (as depmod lists it).
    pub fn of_path(path: &str) -> Format {
        if path.ends_with(".ko.xz") {
            Format::Xz
        } else if path.ends_with(".ko.zst") {
            Format::Zstd
        } else if path.ends_with(".ko.gz") {
            Format::Gzip
        } else {
            Format::None
        }
    }

    /// The `CONFIG_MODULE_COMPRESS_*` option of a kernel that decompresses this.
    pub fn kconfig(self) -> Option<&'static str> {
        match self {
            Format::Xz => Some("CONFIG_MODULE_COMPRESS_XZ"),
            Format::Zstd => Some("CONFIG_MODULE_COMPRESS_ZSTD"),
            Format::Gzip => Some("CONFIG_MODULE_COMPRESS_GZIP"),
            Format::None => None,
        }
    }

    /// The path without its compression suffix.
    pub fn strip(self, path: &str) -> &str {
        match self {
            Format::Xz => path.strip_suffix(".xz").unwrap_or(path),
            Format::Zstd => path.strip_suffix(".zst").unwrap_or(path),
            Format::Gzip => path.strip_suffix(".gz").unwrap_or(path),
            Format::None => path,
        }
    }
}

/// No module is near this size; a stream that decompresses beyond it is refused.
const MAX_MODULE: u64 = 256 << 20;

/// A writer that refuses to grow past [`MAX_MODULE`] (a hostile stream cannot
/// make the build allocate without bound).
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + b.len() as u64 > MAX_MODULE {
            return Err(std::io::Error::other("decompresses beyond the largest module lifeboat accepts"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The uncompressed module, checked to be an ELF object.
pub fn decompress(format: Format, name: &str, data: &[u8]) -> Result<Vec<u8>> {
    let bad = |why: String| Error::Module(format!("{name}: {why}"));
    let out = match format {
        Format::None => data.to_vec(),
        Format::Zstd => {
            let mut out = Vec::new();
            let dec = zstd::stream::read::Decoder::new(data).map_err(|e| bad(format!("not zstd: {e}")))?;
            std::io::Read::read_to_end(&mut std::io::Read::take(dec, MAX_MODULE + 1), &mut out)
                .map_err(|e| bad(format!("corrupt zstd stream: {e}")))?;
            out
        }
        Format::Xz => {
            if !data.starts_with(b"\xfd7zXZ\0") {
                return Err(bad("not an xz stream (bad magic)".into()));
            }
            let mut out = Capped(Vec::new());
            lzma_rs::xz_decompress(&mut &data[..], &mut out).map_err(|e| bad(format!("corrupt xz stream: {e}")))?;
            out.0
        }
        Format::Gzip => {
            return Err(
                bad("gzip-compressed modules are not supported: decompress them (gunzip) or use xz/zstd".into()),
            )
        }
    };
    if out.len() as u64 > MAX_MODULE {
        return Err(bad(format!("decompresses beyond {MAX_MODULE} bytes")));
    }
    if !out.starts_with(b"\x7fELF") {
        return Err(bad("is not an ELF kernel module".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name_and_checked_content() {
        assert_eq!(Format::of_path("kernel/fs/ext4/ext4.ko.xz"), Format::Xz);
        assert_eq!(Format::Zstd.strip("a.ko.zst"), "a.ko");
        let elf = b"\x7fELF\x02\x01 module".to_vec();
        let z = zstd::bulk::compress(&elf, 3).unwrap();
        assert_eq!(decompress(Format::Zstd, "m", &z).unwrap(), elf);
        let mut bad = z.clone();
        let n = bad.len();
        bad.truncate(n - 3);
        assert!(decompress(Format::Zstd, "m", &bad).unwrap_err().to_string().contains("m: corrupt"));
        assert!(decompress(Format::Xz, "m", b"garbage").unwrap_err().to_string().contains("bad magic"));
        assert!(decompress(Format::None, "m", b"text").unwrap_err().to_string().contains("not an ELF"));
    }
}
