//! The machine's console keymap in the initrd: `initrd build` carries the
//! layout of `/etc/vconsole.conf`'s `KEYMAP=` as kbd's binary keymap
//! (`loadkeys -b`: the magic `bkeymap`, one byte per keymap saying whether it is
//! defined, then 128 little-endian 16-bit entries per defined keymap), and PID 1
//! loads it into the kernel's keyboard tables (`KDSKBENT` on `/dev/tty0`) before
//! anything is asked — a passphrase typed on a German keyboard under the
//! kernel's US table is a different passphrase.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Where the keymap is in the initrd, and the file naming it.
pub const KEYMAP_PATH: &str = "/etc/lifeboat/keymap.bmap";
pub const KEYMAP_NAME_PATH: &str = "/etc/lifeboat/keymap.name";

const MAGIC: &[u8] = b"bkeymap";
const MAX_NR_KEYMAPS: usize = 256;
const NR_KEYS: usize = 128;
/// `KDSKBENT` from `linux/kd.h`.
const KDSKBENT: nix::libc::c_ulong = 0x4B47;

/// One keyboard table entry: (keymap, keycode, value).
pub type Entry = (u8, u8, u16);

/// The entries of a binary keymap, or what is wrong with it.
pub fn parse(b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut r = lifeboat_codec::Reader::new(b);
    let magic = r.take(MAGIC.len(), "magic").map_err(|e| e.to_string())?;
    if magic != MAGIC {
        return Err("not a binary keymap (no bkeymap magic)".into());
    }
    let flags = r.take(MAX_NR_KEYMAPS, "keymap flags").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (map, &flag) in flags.iter().enumerate() {
        match flag {
            0 => continue,
            1 => {}
            f => return Err(format!("keymap {map}: flag {f} is neither 0 nor 1")),
        }
        for key in 0..NR_KEYS {
            let v = r.u16_le("keymap entry").map_err(|e| e.to_string())?;
            // Both indices fit a byte: map < 256, key < 128.
            out.push((map as u8, key as u8, v));
        }
    }
    if !r.is_empty() {
        return Err(format!("{} bytes after the last keymap", r.left()));
    }
    Ok(out)
}

#[repr(C)]
struct KbEntry {
    kb_table: u8,
    kb_index: u8,
    kb_value: u16,
}

/// Loads the initrd's keymap into the console's keyboard tables; `Ok(None)`
/// when the initrd carries none or the machine has no virtual terminal.
pub fn load_initrd_keymap() -> Result<Option<String>, String> {
    let Ok(bytes) = std::fs::read(KEYMAP_PATH) else { return Ok(None) };
    let name = std::fs::read_to_string(KEYMAP_NAME_PATH).unwrap_or_default().trim().to_owned();
    let entries = parse(&bytes).map_err(|e| format!("{KEYMAP_PATH}: {e}"))?;
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_CLOEXEC)
        .open("/dev/tty0")
    else {
        return Ok(None);
    };
    for (map, key, value) in &entries {
        let e = KbEntry { kb_table: *map, kb_index: *key, kb_value: *value };
        // SAFETY: KDSKBENT reads one struct kbentry, which `e` is, from the pointer.
        let rc = unsafe { nix::libc::ioctl(tty.as_raw_fd(), KDSKBENT as _, &e as *const KbEntry) };
        if rc < 0 {
            return Err(format!(
                "loading the keymap {name} into /dev/tty0 (table {map}, key {key}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(Some(format!("console keymap {name} loaded ({} entries)", entries.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbds_own_binary_keymap() {
        // The real loadkeys (kbd) makes it: German, where y and z trade places.
        let out = std::process::Command::new("loadkeys")
            .args(["-b", "-q", "de"])
            .output()
            .expect("loadkeys (kbd, with console-data's keymaps) is needed by this test");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let e = parse(&out.stdout).unwrap();
        assert_eq!(e.len() % NR_KEYS, 0);
        let plain = |key: u8| e.iter().find(|(m, k, _)| *m == 0 && *k == key).map(|x| x.2);
        // Keycode 21 is Y on a US keyboard, 44 is Z; KT_LETTER is 0x0b.
        assert_eq!(plain(21), Some(0x0b00 | u16::from(b'z')));
        assert_eq!(plain(44), Some(0x0b00 | u16::from(b'y')));
        for bad in [&out.stdout[..out.stdout.len() - 1], &out.stdout[..6], b"bkeymaX"] {
            assert!(parse(bad).is_err());
        }
        let mut extra = out.stdout.clone();
        extra.push(0);
        assert!(parse(&extra).unwrap_err().contains("after the last keymap"));
    }
}
