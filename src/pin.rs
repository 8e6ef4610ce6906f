//! The boot default the user chose with `boot set-default`, recorded in
//! `.moss/lifeboat/default` so that later syncs keep it: a sync otherwise points
//! loader.conf's `default` at the active transaction, and the next commit's
//! auto-sync undid the choice. It stands until the user changes what boots:
//! another `set-default`, or a commit or activate (which make another
//! transaction the active one; they say so). A pin on a transaction whose
//! entry is gone (pruned) is dropped with a note.

use std::os::fd::AsFd;

use lifeboat_fs::foreign;
use lifeboat_fs::shown::shown_path;
use lifeboat_state::root::SystemRoot;

use crate::error::{Error, Result};

const NAME: &str = "default";
const REL: &str = ".moss/lifeboat/default";

/// The chosen default: loader.conf's pattern, and the transaction it names
/// when it is one of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub pattern: String,
    pub tx: Option<u64>,
}

impl Pin {
    fn render(&self) -> String {
        format!("pattern = {}\ntx = {}\n", self.pattern, self.tx.map(|t| t.to_string()).unwrap_or_else(|| "-".into()))
    }

    fn parse(text: &str) -> Option<Pin> {
        let mut pattern = None;
        let mut tx = None;
        for l in text.lines() {
            match l.split_once(" = ") {
                Some(("pattern", p)) if !p.is_empty() => pattern = Some(p.to_owned()),
                Some(("tx", "-")) => tx = Some(None),
                Some(("tx", n)) => tx = Some(Some(n.parse().ok()?)),
                _ => return None,
            }
        }
        Some(Pin { pattern: pattern?, tx: tx? })
    }
}

/// The pin, if one is recorded; one that cannot be read is said and not used.
pub fn read(root: &SystemRoot) -> std::result::Result<Option<Pin>, String> {
    let shown = shown_path(&root.path.join(REL));
    match foreign::open_file_beneath(root.fd(), REL.as_bytes()).and_then(|f| foreign::read_capped(f, 4096)) {
        Ok(b) => String::from_utf8(b).ok().and_then(|t| Pin::parse(&t)).map(Some).ok_or_else(|| {
            format!("{shown} cannot be read as lifeboat writes it; the default follows the active transaction")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{shown}: {e}; the default follows the active transaction")),
    }
}

pub fn write(root: &SystemRoot, pin: &Pin) -> Result<()> {
    let at = root.path.join(REL);
    let dir = lifeboat_fs::open_dir_beneath(root.fd(), b".moss/lifeboat").map_err(|e| Error::io("open", &at, e))?;
    lifeboat_fs::atomic_write_at(dir.as_fd(), NAME.as_bytes(), pin.render().as_bytes(), 0o644)
        .map_err(|e| Error::io("write", &at, e))?;
    Ok(())
}

/// Records the user's choice for the root at `root`; what kept it from being
/// recorded (then the next sync points the default at the active transaction).
pub fn record(root: &std::path::Path, pattern: &str, tx: Option<u64>) -> std::result::Result<(), String> {
    let r = SystemRoot::open(root)
        .map_err(|e| e.to_string())
        .and_then(|sr| write(&sr, &Pin { pattern: pattern.to_owned(), tx }).map_err(|e| e.to_string()));
    r.map_err(|e| format!("{e}: later syncs point the default at the active transaction again"))
}

/// Drops the pin; whether there was one.
pub fn clear(root: &SystemRoot) -> Result<bool> {
    let at = root.path.join(REL);
    let dir = match lifeboat_fs::open_dir_beneath(root.fd(), b".moss/lifeboat") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", &at, e)),
    };
    if lifeboat_fs::lstat_at(dir.as_fd(), NAME.as_bytes()).map_err(|e| Error::io("stat", &at, e))?.is_none() {
        return Ok(false);
    }
    lifeboat_fs::remove_tree_at(dir.as_fd(), NAME.as_bytes()).map_err(|e| Error::io("remove", &at, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in [Pin { pattern: "tok-2-*".into(), tx: Some(2) }, Pin { pattern: "arch-*".into(), tx: None }] {
            assert_eq!(Pin::parse(&p.render()), Some(p));
        }
        assert_eq!(Pin::parse("pattern = x\n"), None);
    }
}
