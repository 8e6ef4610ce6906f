//! What lifeboat's index of a moss root was made from: the content of moss's
//! state database (every transaction writes it; it is small), the size and
//! modification second of its layout database (which only grows or shrinks with
//! a state), their write-ahead logs, and the set of states with a tree. When nothing of it changed since the import, the index is current
//! and a host command need not open SQLite at all; PID 1 uses the same comparison
//! to say when the index it boots with is older than moss's last transaction.
//!
//! Stored as `.moss/lifeboat/moss.stamp`, one `key value` line each.

use std::os::fd::BorrowedFd;

use lifeboat_fs as fsutil;

/// The stamp file, relative to the root.
pub const STAMP_REL: &str = ".moss/lifeboat/moss.stamp";

/// A state database larger than this is fingerprinted by size and time only.
const HASH_MAX: u64 = 64 << 20;

const FILES: [&str; 4] = [".moss/db/state", ".moss/db/state-wal", ".moss/db/layout", ".moss/db/layout-wal"];

/// A fingerprint of moss's state on a root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Per database file: `size:xxh3` of the state database's content,
    /// `size:mtime` (seconds) of the layout database, or `-` when absent. Not the
    /// inode, change time or nanoseconds: a root copied into an image (`mke2fs
    /// -d`, `cp -a`, a backup restore) keeps its index current.
    files: Vec<String>,
    /// Ids of every state with a tree (active and archived), ascending.
    states: Vec<u64>,
}

impl Stamp {
    /// The fingerprint of the root now.
    pub fn of(root: BorrowedFd) -> Stamp {
        let files = FILES
            .iter()
            .map(|f| match fsutil::lstat_at(root, f.as_bytes()) {
                Ok(Some(st)) if f.contains("/state") && (st.st_size as u64) <= HASH_MAX => {
                    match fsutil::read_small_at(root, f.as_bytes(), HASH_MAX as usize) {
                        Ok(b) => format!("{}:{:016x}", b.len(), xxhash_rust::xxh3::xxh3_64(&b)),
                        Err(_) => "?".into(),
                    }
                }
                Ok(Some(st)) => format!("{}:{}", st.st_size, st.st_mtime),
                _ => "-".into(),
            })
            .collect();
        let (active, mut states) = super::retained(root);
        states.extend(active);
        states.sort_unstable();
        Stamp { files, states }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, v) in FILES.iter().zip(&self.files) {
            s.push_str(&format!("{name} {v}\n"));
        }
        let ids: Vec<String> = self.states.iter().map(u64::to_string).collect();
        s.push_str(&format!("states {}\n", ids.join(",")));
        s
    }

    /// Parses a stored stamp; `None` when it is not one (then the index is
    /// treated as stale).
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut st = Stamp::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            if k == "states" {
                st.states = if v.is_empty() {
                    Vec::new()
                } else {
                    v.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?
                };
            } else if FILES.contains(&k) {
                st.files.push(v.to_owned());
            } else {
                return None;
            }
        }
        (st.files.len() == FILES.len()).then_some(st)
    }

    /// The stamp saved with the last import, if any.
    pub fn saved(root: BorrowedFd) -> Option<Stamp> {
        let b = fsutil::read_small_at(root, STAMP_REL.as_bytes(), 4096).ok()?;
        Stamp::parse(std::str::from_utf8(&b).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let s = Stamp { files: vec!["3:4".into(), "-".into(), "x".into(), "-".into()], states: vec![1, 3] };
        assert_eq!(Stamp::parse(&s.render()), Some(s));
        assert_eq!(Stamp::parse("states 1,x\n"), None);
        assert_eq!(Stamp::parse("bogus 1\n"), None);
        assert_eq!(Stamp::parse(""), None);
    }
}
