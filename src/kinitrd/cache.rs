//! Which rescue initrd each input key made: the root's
//! `.moss/lifeboat/initrd-cache`, one line per key — the key, the content
//! hash that names the initrd on `$BOOT`, its size and its kernel version. It
//! holds no bytes: the copy on `$BOOT` is the cache, and this file only says
//! which name to look for, so a sync whose inputs did not change builds
//! nothing. It is only ever a shortcut: lost or unreadable, the next sync
//! builds again, and the same inputs give the same bytes and so the same name.

use std::collections::BTreeMap;

use lifeboat_fs::foreign;
use lifeboat_state::root::SystemRoot;

use crate::error::{Error, Result};

pub const CACHE_REL: &str = ".moss/lifeboat/initrd-cache";
const CACHE_NAME: &[u8] = b"initrd-cache";

/// What a key made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// xxh3-128 of the initrd, 32 lowercase hex digits.
    pub hash: String,
    pub size: u64,
    pub kver: String,
}

/// Key -> what it made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache(pub BTreeMap<String, Made>);

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Cache {
    /// Parses the file; a line that is not one lifeboat writes is skipped (a
    /// missing line costs a build, nothing else).
    pub fn parse(text: &str) -> Cache {
        let mut c = Cache::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = line.split(' ').collect();
            if let [key, hash, size, kver] = w[..] {
                if let (true, true, Ok(size), None) =
                    (is_hex32(key), is_hex32(hash), size.parse::<u64>(), lifeboat_boot::plan::kver_problem(kver))
                {
                    c.0.insert(key.to_owned(), Made { hash: hash.to_owned(), size, kver: kver.to_owned() });
                }
            }
        }
        c
    }

    pub fn render(&self) -> String {
        let mut s = String::from(
            "# lifeboat: the rescue initrd each input key made (key, xxh3-128, size, kernel); boot sync rebuilds only for a new key\n",
        );
        for (k, m) in &self.0 {
            s.push_str(&format!("{k} {} {} {}\n", m.hash, m.size, m.kver));
        }
        s
    }

    /// The root's cache; empty when there is none or it cannot be read.
    pub fn load(root: &SystemRoot) -> Cache {
        foreign::open_file_beneath(root.fd(), CACHE_REL.as_bytes())
            .and_then(|f| foreign::read_capped(f, 1 << 20))
            .map(|b| Cache::parse(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// Writes the cache when it says something new; returns whether it did.
    pub fn store(&self, root: &SystemRoot) -> Result<bool> {
        if &Cache::load(root) == self {
            return Ok(false);
        }
        let at = root.path.join(CACHE_REL);
        root.ensure_own_dir()?;
        let dir = lifeboat_fs::open_dir_beneath(root.fd(), b".moss/lifeboat").map_err(|e| Error::io("open", &at, e))?;
        lifeboat_fs::atomic_write_at(std::os::fd::AsFd::as_fd(&dir), CACHE_NAME, self.render().as_bytes(), 0o644)
            .map_err(|e| Error::io("write", &at, e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes_and_skips_what_it_never_writes() {
        let mut c = Cache::default();
        let h = "0123456789abcdef0123456789abcdef";
        c.0.insert(h.to_owned(), Made { hash: h.to_owned(), size: 12, kver: "6.1.0-57-amd64".into() });
        assert_eq!(Cache::parse(&c.render()), c);
        let odd = format!("{h} {h} 12\n{h} XYZ 1 6.1\n{h} {h} x 6.1\n{h} {h} 1 6.1 extra\n{h} {h} 1 a/b\n");
        assert_eq!(Cache::parse(&odd), Cache::default());
    }
}
