//! Hibernation images in swap: recognising the signature the kernel (or
//! uswsusp) writes over a swap area's own when it saves a hibernated system
//! there, and discarding such an image the way the kernel does after a resume —
//! by putting the swap signature it kept back. PID 1 reads this before it mounts
//! anything: a filesystem written while a hibernation image of it exists is
//! corrupted when that image is restored.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The page size of the kernels lifeboat boots (x86-64): the swap header and a
/// hibernation image's header are one page, the signature its last 10 bytes.
pub const PAGE: u64 = 4096;
const SIG_AT: usize = PAGE as usize - 10;
const ORIG_SIG_AT: usize = PAGE as usize - 20;

/// Which hibernation image a swap header's last 10 bytes name, if any: the
/// kernel's own (`S1SUSPEND`, and `S2SUSPEND` of older kernels), uswsusp's
/// (`ULSUSPEND`) and `LINHIB0001`.
pub fn image_signature(sig: &[u8]) -> Option<&'static str> {
    for (magic, name) in [
        (&b"S1SUSPEND"[..], "the kernel's (S1SUSPEND)"),
        (b"S2SUSPEND", "the kernel's (S2SUSPEND)"),
        (b"ULSUSPEND", "uswsusp's (ULSUSPEND)"),
        (b"LINHIB0001", "LINHIB0001"),
    ] {
        if sig.starts_with(magic) {
            return Some(name);
        }
    }
    None
}

/// A hibernation image found on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Who wrote it (see [`image_signature`]).
    pub kind: &'static str,
    /// Byte offset of its header page (a swap file's `resume_offset=` pages).
    pub offset: u64,
}

fn read_page(dev: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: whatever sits at a path given on the command line, opening it
    // never waits (a FIFO would).
    let mut f = OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(dev)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut b = vec![0u8; PAGE as usize];
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..])? {
            0 => break,
            k => n += k,
        }
    }
    b.truncate(n);
    Ok(b)
}

/// The hibernation image whose header page is at `offset` of `dev` (0 for a
/// swap partition), if there is one. A device too short to hold a page has none.
pub fn find_image(dev: &Path, offset: u64) -> std::io::Result<Option<Image>> {
    let page = read_page(dev, offset)?;
    Ok(page.get(SIG_AT..).and_then(image_signature).map(|kind| Image { kind, offset }))
}

/// Discards the hibernation image at `offset` of `dev`: its header's signature
/// becomes the swap signature the kernel kept beside it (`SWAPSPACE2` when that
/// is not a swap signature), written through and synced. Only those 10 bytes
/// change; the swap area is usable again and the image can no longer be restored.
pub fn discard_image(dev: &Path, offset: u64) -> std::io::Result<()> {
    let page = read_page(dev, offset)?;
    let Some(sig) = page.get(SIG_AT..SIG_AT + 10) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "shorter than one page: no swap header"));
    };
    if image_signature(sig).is_none() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no hibernation image there"));
    }
    let orig = &page[ORIG_SIG_AT..SIG_AT];
    let restore: &[u8] = if orig == b"SWAPSPACE2" || orig == b"SWAP-SPACE" { orig } else { b"SWAPSPACE2" };
    let mut f = OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(dev)?;
    f.seek(SeekFrom::Start(offset + SIG_AT as u64))?;
    f.write_all(restore)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sig: &[u8], orig: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; PAGE as usize * 2];
        b[ORIG_SIG_AT..ORIG_SIG_AT + orig.len()].copy_from_slice(orig);
        b[SIG_AT..SIG_AT + sig.len()].copy_from_slice(sig);
        b
    }

    #[test]
    fn finds_and_discards_an_image_keeping_everything_else() {
        let dir = std::env::temp_dir().join(format!("lb-hib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dev = dir.join("swap");
        let mut b = header(b"S1SUSPEND\0", b"SWAPSPACE2");
        b[1036] = 0xAB; // the swap's UUID stays
        std::fs::write(&dev, &b).unwrap();
        let img = find_image(&dev, 0).unwrap().unwrap();
        assert_eq!(img, Image { kind: "the kernel's (S1SUSPEND)", offset: 0 });
        discard_image(&dev, 0).unwrap();
        let after = std::fs::read(&dev).unwrap();
        assert_eq!(&after[SIG_AT..SIG_AT + 10], b"SWAPSPACE2");
        let mut want = b.clone();
        want[SIG_AT..SIG_AT + 10].copy_from_slice(b"SWAPSPACE2");
        assert!(after == want, "only the signature changes");
        assert_eq!(find_image(&dev, 0).unwrap(), None);
        assert!(discard_image(&dev, 0).is_err(), "no image: nothing written");
        // A swap file's image (resume_offset=1): the header is the second page.
        std::fs::write(&dev, [vec![0u8; PAGE as usize], header(b"ULSUSPEND", b"garbage!!!")].concat()).unwrap();
        assert_eq!(find_image(&dev, 0).unwrap(), None);
        assert_eq!(find_image(&dev, PAGE).unwrap().unwrap().kind, "uswsusp's (ULSUSPEND)");
        discard_image(&dev, PAGE).unwrap();
        assert_eq!(&std::fs::read(&dev).unwrap()[PAGE as usize + SIG_AT..][..10], b"SWAPSPACE2");
        std::fs::write(&dev, b"short").unwrap();
        assert_eq!(find_image(&dev, 0).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_mkswap_is_swap_not_an_image() {
        let dir = std::env::temp_dir().join(format!("lb-hib2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("swap");
        std::fs::write(&f, vec![0u8; 1 << 20]).unwrap();
        let out = std::process::Command::new("mkswap")
            .args(["-L", "lbswap", "-U", "3b8c4c8e-4b4a-4f4e-9d4d-2a2a2a2a2a2a"])
            .arg(&f)
            .output()
            .expect("mkswap (util-linux) is needed by this test");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let b = std::fs::read(&f).unwrap();
        let fs = crate::blockdev::probe_fs_bytes(&b).unwrap();
        assert_eq!(fs.fstype, "swap");
        assert_eq!(fs.uuid.as_deref(), Some("3b8c4c8e-4b4a-4f4e-9d4d-2a2a2a2a2a2a"));
        assert_eq!(fs.label.as_deref(), Some("lbswap"));
        assert_eq!(find_image(&f, 0).unwrap(), None);
        // What the kernel writes when it hibernates there: blkid's name for it.
        let mut h = b.clone();
        h[ORIG_SIG_AT..SIG_AT].copy_from_slice(b"SWAPSPACE2");
        h[SIG_AT..SIG_AT + 10].copy_from_slice(b"S1SUSPEND\0");
        std::fs::write(&f, &h).unwrap();
        assert_eq!(crate::blockdev::probe_fs_bytes(&h).unwrap().fstype, "swsuspend");
        let blkid = std::process::Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(&f).output();
        let blkid = blkid.expect("blkid (util-linux) is needed by this test");
        assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "swsuspend", "blkid agrees");
        discard_image(&f, 0).unwrap();
        // As after the kernel's own resume: the signature is the swap's again
        // (the copy it kept beside it stays), and the swap is swap to blkid.
        let mut want = h.clone();
        want[SIG_AT..SIG_AT + 10].copy_from_slice(b"SWAPSPACE2");
        assert!(std::fs::read(&f).unwrap() == want, "only the signature changed");
        let blkid = std::process::Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(&f).output();
        assert_eq!(String::from_utf8_lossy(&blkid.unwrap().stdout).trim(), "swap");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
