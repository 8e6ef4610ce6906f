//! A transaction's files as its layout records them, read from the content
//! store by hash: what a rescue initrd for one of its kernels is built from.
//! Paths are resolved in the layout the way the kernel resolves them in the
//! tree — symlinks followed, `..` never above `/usr` — and a symlink to
//! `/usr/...` (or, on a `/usr`-merged system, to `/lib/...`, `/lib64/...`,
//! `/bin/...`, `/sbin/...`) stays in the layout; one to anything else leads
//! nowhere: lifeboat's transactions are `/usr` only. Every blob read is checked
//! against its hash, so a build holds exactly the bytes its cache key names.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_fs::foreign;
use lifeboat_initrd::files::Files;
use lifeboat_state::hash::Hash128;
use lifeboat_state::layout::{EntryData, Layout, LayoutEntry};

/// How many symlinks one resolution follows, as the kernel's limit.
const MAX_HOPS: usize = 40;

/// Resolves `path` (relative to `/usr`) in `layout`: the final path and its
/// entry, or `None` when it does not resolve to an entry.
pub fn resolve<'l>(layout: &'l Layout, path: &[u8]) -> Option<(Vec<u8>, &'l LayoutEntry)> {
    // Components still to walk, last first.
    let mut todo: Vec<Vec<u8>> = path.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    let mut last: Option<&LayoutEntry> = None;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                cur.pop();
                last = None;
                continue;
            }
            _ => {}
        }
        if let Some(e) = last {
            // Only a directory has children.
            if !matches!(e.data, EntryData::Dir) {
                return None;
            }
        }
        cur.push(c);
        let e = layout.find(&cur.join(&b'/'))?;
        if let EntryData::Symlink { target } = &e.data {
            hops += 1;
            if hops > MAX_HOPS {
                return None;
            }
            cur.pop();
            let mut t: &[u8] = target;
            if let Some(abs) = t.strip_prefix(b"/") {
                cur.clear();
                let first = abs.split(|&b| b == b'/').next().unwrap_or_default();
                t = match first {
                    b"usr" => abs.get(3..).unwrap_or_default(),
                    b"lib" | b"lib64" | b"bin" | b"sbin" => abs,
                    _ => return None,
                };
            }
            todo.extend(t.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            // Resolution continues from the symlink's directory.
            last = if cur.is_empty() { None } else { Some(layout.find(&cur.join(&b'/'))?) };
            continue;
        }
        last = Some(e);
    }
    let e = last?;
    Some((cur.join(&b'/'), e))
}

/// The files below one directory of a transaction's layout.
pub struct TreeFiles {
    pub layout: Arc<Layout>,
    /// The directory, relative to `/usr` (as given; resolved at each read).
    pub base: String,
    /// The content store.
    pub store: PathBuf,
    /// Where the tree is on disk, for messages (`.../usr`).
    pub shown_tree: PathBuf,
}

impl TreeFiles {
    fn path_of(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{rel}", self.base)
        }
    }
}

/// Reads the blob of `(hash, size)` from `store`, refusing more than `max`
/// bytes and bytes that are not the ones named.
pub fn read_blob(store: &std::path::Path, hash: Hash128, size: u64, max: u64) -> io::Result<Vec<u8>> {
    if size > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("is larger than {max} bytes")));
    }
    if size == 0 {
        return Ok(Vec::new());
    }
    let path = store.join(hash.store_path());
    let bytes = foreign::read_file(&path, max).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(io::ErrorKind::NotFound, format!("its blob {hash} is missing from the store"))
        } else {
            io::Error::new(e.kind(), format!("its blob {}: {e}", path.display()))
        }
    })?;
    if Hash128::of(&bytes) != hash {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "its blob {} is damaged (it does not hash to its name); `lifeboat verify --store` says more",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

impl Files for TreeFiles {
    fn read(&self, rel: &str, max: u64) -> io::Result<Vec<u8>> {
        let not_found = || io::Error::from(io::ErrorKind::NotFound);
        let (_, e) = resolve(&self.layout, self.path_of(rel).as_bytes()).ok_or_else(not_found)?;
        match e.data {
            EntryData::File { hash, size } => read_blob(&self.store, hash, size, max),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")),
        }
    }

    fn is_file(&self, rel: &str) -> bool {
        resolve(&self.layout, self.path_of(rel).as_bytes())
            .is_some_and(|(_, e)| matches!(e.data, EntryData::File { .. }))
    }

    fn shown(&self, rel: &str) -> PathBuf {
        self.shown_tree.join(self.path_of(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_state::layout::LayoutEntry;

    fn entry(path: &str, data: EntryData) -> LayoutEntry {
        LayoutEntry { path: path.as_bytes().into(), perm: 0o755, uid: 0, gid: 0, data, attrs: None }
    }

    fn file(path: &str, tag: u128) -> LayoutEntry {
        entry(path, EntryData::File { hash: Hash128(tag), size: 1 })
    }

    fn link(path: &str, target: &str) -> LayoutEntry {
        entry(path, EntryData::Symlink { target: target.as_bytes().into() })
    }

    fn dir(path: &str) -> LayoutEntry {
        entry(path, EntryData::Dir)
    }

    #[test]
    fn resolves_like_the_kernel_inside_usr() {
        let l = Layout::new(vec![
            dir("lib"),
            dir("lib/firmware"),
            dir("lib/firmware/vendor"),
            file("lib/firmware/vendor/a.bin", 1),
            link("lib/firmware/b.bin", "vendor/a.bin"),
            link("lib/firmware/c.bin", "/usr/lib/firmware/b.bin"),
            link("lib/firmware/d.bin", "/lib/firmware/vendor/a.bin"),
            link("lib/firmware/e.bin", "/etc/passwd"),
            link("lib/firmware/up", "../../../../../lib/firmware/vendor"),
            link("lib/firmware/loop", "loop"),
            link("lib/firmware/v2", "vendor"),
            file("lib/plain", 2),
        ])
        .unwrap();
        let got = |p: &str| resolve(&l, p.as_bytes()).map(|(p, _)| String::from_utf8(p).unwrap());
        for p in [
            "lib/firmware/vendor/a.bin",
            "lib/firmware/b.bin",
            "lib/firmware/c.bin",
            "lib/firmware/d.bin",
            "lib/firmware/up/a.bin",
            "lib/firmware/v2/a.bin",
            "lib/firmware/./vendor/../vendor/a.bin",
        ] {
            assert_eq!(got(p).as_deref(), Some("lib/firmware/vendor/a.bin"), "{p}");
        }
        assert_eq!(got("lib/firmware/v2").as_deref(), Some("lib/firmware/vendor"));
        for p in ["lib/firmware/e.bin", "lib/firmware/loop", "lib/firmware/none", "lib/plain/x", "lib/firmware/b.bin/x"]
        {
            assert_eq!(got(p), None, "{p}");
        }
    }
}
