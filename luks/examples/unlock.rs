//! `unlock HEADERFILE [KEYSLOT]`: opens a LUKS header (or device) with the passphrase
//! on standard input — all of it, byte for byte, as `cryptsetup --key-file=-` reads
//! it — and prints what opened (never the key). Exit status 0 when it opened, 2 for
//! a wrong passphrase, 1 for anything else. bench/luks_unlock.py times it against
//! `cryptsetup open --test-passphrase`.

use std::io::Read;
use std::process::ExitCode;

use lifeboat_luks::{Header, UnlockOptions};
use zeroize::Zeroizing;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: unlock HEADERFILE [KEYSLOT] < passphrase");
        return ExitCode::from(1);
    };
    let keyslot = match args.get(1).map(|s| s.parse::<u32>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            eprintln!("unlock: KEYSLOT must be a number");
            return ExitCode::from(1);
        }
    };
    let mut passphrase = Zeroizing::new(Vec::new());
    if let Err(e) = std::io::stdin().read_to_end(&mut passphrase) {
        eprintln!("unlock: reading the passphrase: {e}");
        return ExitCode::from(1);
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unlock: {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let result = Header::read(path, &mut file).and_then(|h| {
        for note in &h.notes {
            eprintln!("unlock: note: {note}");
        }
        h.unlock(&mut file, &passphrase, &UnlockOptions { keyslot, ..UnlockOptions::default() })
    });
    match result {
        Ok(u) => {
            println!("ok {u}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unlock: {e}");
            ExitCode::from(if e.is_wrong_passphrase() { 2 } else { 1 })
        }
    }
}
