//! Which rescue initrd lifeboat's boot entries carry, kept from one sync to the
//! next. By default each entry gets one built for its kernel from its own
//! transaction ([`crate::kinitrd`]; `--host-only` or `initrd-modules =
//! host-only` for the host-only module set). `boot sync --initrd FILE` (or
//! `initrd =` in lifeboat.conf) puts one given initrd on every entry instead;
//! every later sync — the one after a commit, an activation or a prune
//! included — keeps that choice, until `boot sync --no-initrd` drops the rescue
//! initrd or `--kernel-initrds` goes back to building them. Without that, the
//! sync after the next update would take the rescue path away right when it
//! may be needed.
//!
//! The choice is recorded in the root's `.moss/lifeboat/rescue-initrd` (for a
//! given initrd: the content-named file, its size, and where it came from; for
//! built ones: their module set). A given initrd's content comes from `$BOOT`,
//! where the entries' copy already is, else from where it came from, if that
//! still holds the same bytes. Entries made before the record existed are read
//! back: the given initrd the active transaction's entry names is kept. An
//! initrd that can be found nowhere is an error that says how to go on, never a
//! silent drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_boot::bls::Entry;
use lifeboat_boot::plan::{self, Blob, Source};
use lifeboat_esp::volume::join;
use lifeboat_esp::Volume;
use lifeboat_fs::foreign;
use lifeboat_fs::shown::shown_path;
use lifeboat_state::hash::Hash128;
use lifeboat_state::root::SystemRoot;

use crate::config::{Config, ModuleSet};
use crate::error::{Error, Result};

/// The record, relative to the root.
pub const RECORD_REL: &str = ".moss/lifeboat/rescue-initrd";
const RECORD_NAME: &[u8] = b"rescue-initrd";

/// A rescue initrd is read whole (it is copied from memory); none is near this.
const MAX_INITRD: u64 = 1 << 30;

/// What the command line asks of the rescue initrd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Neither `--initrd` nor `--no-initrd`: lifeboat.conf's `initrd =`, else
    /// what the entries carry now.
    Keep,
    /// `--initrd FILE`.
    Use(PathBuf),
    /// `--no-initrd`.
    Drop,
    /// `--kernel-initrds` / `--host-only`: build each kernel's, with this
    /// module set (`None`: lifeboat.conf's `initrd-modules`, else generic).
    Build(Option<ModuleSet>),
}

/// What the record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Dropped on purpose (`--no-initrd`).
    None,
    /// The entries carry `lifeboat-<hash>.initrd` of `size` bytes, made from `from`.
    Initrd { hash: String, size: u64, from: Option<PathBuf> },
    /// Each entry carries the one built for its kernel, with this module set.
    PerKernel(ModuleSet),
}

impl Record {
    fn render(&self) -> String {
        let mut s = String::from(
            "# lifeboat: the rescue initrd every boot entry carries (`lifeboat boot sync --no-initrd` drops it)\n",
        );
        match self {
            Record::None => s.push_str("initrd none\n"),
            Record::PerKernel(m) => s.push_str(&format!("initrd per-kernel\nmodules {}\n", m.as_str())),
            Record::Initrd { hash, size, from } => {
                s.push_str(&format!("initrd lifeboat-{hash}.initrd\nsize {size}\n"));
                // A path that is not one line of text is not worth a record: the
                // copy on $BOOT is the first source anyway.
                if let Some(f) = from.as_ref().and_then(|f| f.to_str()).filter(|f| !f.chars().any(char::is_control)) {
                    s.push_str(&format!("from {f}\n"));
                }
            }
        }
        s
    }

    fn parse(text: &str) -> Option<Record> {
        let (mut name, mut size, mut from, mut modules) = (None, None, None, None);
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (k, v) = line.split_once(' ')?;
            match k {
                "initrd" => name = Some(v.to_owned()),
                "size" => size = Some(v.parse::<u64>().ok()?),
                "from" => from = Some(PathBuf::from(v)),
                "modules" => modules = Some(ModuleSet::parse(v)?),
                _ => return None,
            }
        }
        match name?.as_str() {
            "none" => Some(Record::None),
            "per-kernel" => Some(Record::PerKernel(modules?)),
            n => Some(Record::Initrd { hash: hash_of_name(n)?, size: size?, from }),
        }
    }
}

/// The hash in `lifeboat-<hash>.initrd` (lowercase), if that is the name.
fn hash_of_name(name: &str) -> Option<String> {
    let n = name.to_ascii_lowercase();
    let h = n.strip_prefix("lifeboat-")?.strip_suffix(".initrd")?;
    (h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_owned())
}

/// What the entries of a sync carry.
#[derive(Debug)]
pub enum Choice {
    /// No rescue initrd.
    None,
    /// This one on every entry.
    Shared(Blob),
    /// Each entry the one built for its kernel, with this module set.
    PerKernel(ModuleSet),
}

/// The rescue initrd of a sync.
#[derive(Debug)]
pub struct Rescue {
    pub choice: Choice,
    /// What to record once the sync is done (`None`: leave the record alone).
    pub record: Option<Record>,
    pub notes: Vec<String>,
}

impl Rescue {
    /// The file name on `$BOOT` of a given initrd, for output.
    pub fn name(&self) -> Option<String> {
        match &self.choice {
            Choice::Shared(b) => Some(format!("lifeboat-{}.initrd", b.hash)),
            _ => None,
        }
    }

    fn shared(blob: Blob, record: Record, notes: Vec<String>) -> Rescue {
        Rescue { choice: Choice::Shared(blob), record: Some(record), notes }
    }
}

fn read_record(root: &SystemRoot) -> std::result::Result<Option<Record>, String> {
    match foreign::open_file_beneath(root.fd(), RECORD_REL.as_bytes()).and_then(|f| foreign::read_capped(f, 4096)) {
        Ok(b) => {
            String::from_utf8(b).ok().and_then(|t| Record::parse(&t)).map(Some).ok_or_else(|| {
                format!("{} cannot be read as lifeboat writes it", shown_path(&root.path.join(RECORD_REL)))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", shown_path(&root.path.join(RECORD_REL)))),
    }
}

/// Writes the record when it says something new; returns whether it did.
pub fn write_record(root: &SystemRoot, r: &Record) -> Result<bool> {
    if read_record(root).ok().flatten().as_ref() == Some(r) {
        return Ok(false);
    }
    let at = root.path.join(RECORD_REL);
    let dir = lifeboat_fs::open_dir_beneath(root.fd(), b".moss/lifeboat").map_err(|e| Error::io("open", &at, e))?;
    lifeboat_fs::atomic_write_at(std::os::fd::AsFd::as_fd(&dir), RECORD_NAME, r.render().as_bytes(), 0o644)
        .map_err(|e| Error::io("write", &at, e))?;
    Ok(true)
}

/// A blob of `bytes`, named by their hash.
fn blob_of(bytes: Vec<u8>) -> Blob {
    Blob { hash: Hash128::of(&bytes).to_string(), len: bytes.len() as u64, source: Source::Bytes(Arc::from(bytes)) }
}

/// Reads a rescue initrd from a file named by a person or a setting.
fn read_named(path: &Path) -> Result<Vec<u8>> {
    foreign::open_named(path)
        .and_then(|f| foreign::read_capped(f, MAX_INITRD))
        .map_err(|e| Error::io("read rescue initrd", path, e))
}

/// lifeboat.conf's `initrd =`: an absolute path is the root's (resolved inside
/// it), a relative one is taken from the working directory.
fn from_config(root: &SystemRoot, p: &str) -> Result<(Vec<u8>, PathBuf)> {
    let path = Path::new(p);
    if path.is_absolute() {
        let shown = root.path.join(path.strip_prefix("/").unwrap_or(path));
        let bytes = foreign::open_file_in_root(root.fd(), p.as_bytes())
            .and_then(|f| foreign::read_capped(f, MAX_INITRD))
            .map_err(|e| Error::io("read rescue initrd (lifeboat.conf initrd =)", &shown, e))?;
        Ok((bytes, shown))
    } else {
        Ok((read_named(path)?, std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())))
    }
}

/// The copy of `lifeboat-<hash>.initrd` on `$BOOT`, if it is there and whole.
fn on_boot(boot: &mut dyn Volume, token: &str, hash: &str) -> Option<Vec<u8>> {
    let bytes = boot.read(&join(token, &format!("lifeboat-{hash}.initrd"))).ok()?;
    (Hash128::of(&bytes).to_string() == hash).then_some(bytes)
}

/// The rescue initrd lifeboat's entries on `$BOOT` carry now: the one the
/// active transaction's entry names, else the newest entry's.
fn named_by_entries(boot: &mut dyn Volume, token: &str, active: Option<u64>) -> Result<Option<String>> {
    let mut ours = plan::our_entries(boot, token)?;
    ours.sort_by_key(|e| (Some(e.tx) == active, e.tx));
    let prefix = format!("{token}/");
    for e in ours.iter().rev() {
        for i in Entry::parse(&e.text).all("initrd") {
            let i = i.trim_start_matches('/');
            let Some(rest) =
                i.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(&prefix)).map(|_| &i[prefix.len()..])
            else {
                continue;
            };
            if let Some(h) = hash_of_name(rest) {
                return Ok(Some(h));
            }
        }
    }
    Ok(None)
}

/// Decides the rescue initrd of this sync (see the module doc).
pub fn resolve(root: &SystemRoot, cfg: &Config, ask: &Ask, boot: &mut dyn Volume, token: &str) -> Result<Rescue> {
    let mut notes = Vec::new();
    let record_of = |b: &Blob, from: Option<PathBuf>| Record::Initrd { hash: b.hash.clone(), size: b.len, from };
    match ask {
        Ask::Use(p) => {
            let blob = blob_of(read_named(p)?);
            if let Some(c) = cfg.initrd.as_deref() {
                notes.push(format!(
                    "lifeboat.conf sets initrd = {c}: the next sync without --initrd puts that one back"
                ));
            }
            let from = std::fs::canonicalize(p).ok();
            Ok(Rescue::shared(blob.clone(), record_of(&blob, from), notes))
        }
        Ask::Build(asked) => {
            if let Some(c) = cfg.initrd.as_deref() {
                notes.push(format!(
                    "lifeboat.conf sets initrd = {c}: the next sync without --kernel-initrds puts that one back"
                ));
            }
            if let (Some(a), Some(c)) = (asked, cfg.initrd_modules) {
                if *a != c {
                    notes.push(format!(
                        "lifeboat.conf sets initrd-modules = {}: the next sync without --host-only goes back to it",
                        c.as_str()
                    ));
                }
            }
            let set = asked.or(cfg.initrd_modules).unwrap_or_default();
            Ok(Rescue { choice: Choice::PerKernel(set), record: Some(Record::PerKernel(set)), notes })
        }
        Ask::Drop => {
            if let Some(c) = cfg.initrd.as_deref() {
                notes.push(format!(
                    "lifeboat.conf sets initrd = {c}: the next sync without --no-initrd puts it back; remove that line to drop it for good"
                ));
            }
            Ok(Rescue { choice: Choice::None, record: Some(Record::None), notes })
        }
        Ask::Keep => {
            if let Some(c) = cfg.initrd.as_deref() {
                let (bytes, from) = from_config(root, c)?;
                let blob = blob_of(bytes);
                return Ok(Rescue::shared(blob.clone(), record_of(&blob, Some(from)), notes));
            }
            let built = |m: Option<ModuleSet>, notes| Rescue {
                choice: Choice::PerKernel(cfg.initrd_modules.or(m).unwrap_or_default()),
                record: None,
                notes,
            };
            let recorded = match read_record(root) {
                Ok(r) => r,
                Err(why) => {
                    notes.push(format!("{why}; reading the rescue initrd back from the entries instead"));
                    None
                }
            };
            let (hash, from) = match recorded {
                Some(Record::None) => return Ok(Rescue { choice: Choice::None, record: None, notes }),
                Some(Record::PerKernel(m)) => return Ok(built(Some(m), notes)),
                Some(Record::Initrd { hash, from, .. }) => (hash, from),
                None => match named_by_entries(boot, token, root.active_id())? {
                    Some(h) => {
                        notes.push(format!(
                            "the entries carry the rescue initrd lifeboat-{h}.initrd: kept, and recorded in {} (`boot sync --no-initrd` drops it)",
                            shown_path(&root.path.join(RECORD_REL))
                        ));
                        (h, None)
                    }
                    None => return Ok(built(None, notes)),
                },
            };
            if let Some(bytes) = on_boot(boot, token, &hash) {
                let blob = blob_of(bytes);
                return Ok(Rescue::shared(blob.clone(), record_of(&blob, from), notes));
            }
            // Not on $BOOT (a new ESP, a damaged copy): where it came from, if
            // that still holds the same bytes.
            if let Some(f) = &from {
                if let Ok(bytes) = read_named(f) {
                    if Hash128::of(&bytes).to_string() == hash {
                        let blob = blob_of(bytes);
                        return Ok(Rescue::shared(blob.clone(), record_of(&blob, from.clone()), notes));
                    }
                }
            }
            Err(Error::RescueInitrdGone { name: format!("lifeboat-{hash}.initrd"), from: from.map(|f| shown_path(&f)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_odd_ones_are_refused() {
        let h = "0123456789abcdef0123456789abcdef".to_owned();
        for r in [
            Record::None,
            Record::PerKernel(ModuleSet::Generic),
            Record::PerKernel(ModuleSet::HostOnly),
            Record::Initrd { hash: h.clone(), size: 7, from: Some(PathBuf::from("/a b/lifeboat.initrd")) },
            Record::Initrd { hash: h.clone(), size: 0, from: None },
        ] {
            assert_eq!(Record::parse(&r.render()), Some(r.clone()), "{}", r.render());
        }
        let odd = Record::Initrd { hash: h.clone(), size: 1, from: Some(PathBuf::from("/x\ny")) };
        assert_eq!(Record::parse(&odd.render()), Some(Record::Initrd { hash: h, size: 1, from: None }));
        for bad in [
            "",
            "initrd lifeboat-xyz.initrd\nsize 1\n",
            "initrd lifeboat-0123.initrd\n",
            "size 1\n",
            "what 1\n",
            "initrd per-kernel\n",
            "initrd per-kernel\nmodules some\n",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            hash_of_name("LIFEBOAT-0123456789ABCDEF0123456789ABCDEF.INITRD").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }
}
