#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_luks::{Header, KdfLimits, UnlockOptions};
use sha2::{Digest, Sha256};

// The start of a LUKS device (or a header file), as PID 1 reads one to unlock the
// root: the header must parse or fail cleanly, and when it parses, an unlock with a
// fixed passphrase must too, under KDF caps small enough that no input costs more
// than milliseconds. The seeds (made by cryptsetup with passphrase "fuzz") open.
//
// LUKS2 header copies carry a SHA-256, which random mutations almost never keep
// valid, so each input is also tried with the checksums of both copies recomputed:
// that is how mutations reach the JSON metadata and the keyslots behind it.
fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_luks::probe(data);
    try_unlock(data);
    let mut fixed = data.to_vec();
    if fix_luks2_checksums(&mut fixed) {
        try_unlock(&fixed);
    }
});

const LIMITS: KdfLimits =
    KdfLimits { max_pbkdf2_iterations: 2000, max_argon2_time: 4, max_argon2_memory_kib: 256, max_argon2_lanes: 4 };

fn try_unlock(data: &[u8]) {
    let mut dev = std::io::Cursor::new(data);
    let Ok(h) = Header::read("fuzz", &mut dev) else { return };
    let _ = h.keyslots();
    let _ = h.data_segment();
    let options = UnlockOptions { keyslot: None, limits: LIMITS };
    match h.unlock(&mut dev, b"fuzz", &options) {
        Ok(u) => {
            let _ = u.to_string();
            let _ = u.dm_table("/dev/fuzz", data.len() as u64, true);
            let mut sector = vec![0u8; u.sector_size as usize];
            let _ = u.decrypt_sectors(u64::MAX, &mut sector);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Rewrites the checksum of each LUKS2 header copy in `b` (at 0 and at the primary's
/// hdr_size) to match its contents; false when there is no copy to fix.
fn fix_luks2_checksums(b: &mut [u8]) -> bool {
    let hdr_size = match b.get(8..16) {
        Some(s) => u64::from_be_bytes(s.try_into().unwrap_or_default()),
        None => return false,
    };
    if !(0x4000..=0x40_0000).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return false;
    }
    let n = hdr_size as usize;
    let mut fixed = false;
    for at in [0, n] {
        let Some(copy) = b.get_mut(at..at + n) else { continue };
        copy[448..512].fill(0);
        let sum = Sha256::digest(&*copy);
        copy[448..480].copy_from_slice(&sum);
        fixed = true;
    }
    fixed
}
