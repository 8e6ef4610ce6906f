//! The key of a rescue initrd built for a kernel: an xxh3-128 over everything
//! the build reads or decides by, so that an initrd is rebuilt exactly when
//! one of them changes. The state index already records the xxh3-128 of every
//! file of a transaction, so the key is computed from the layout alone — no
//! module is read or hashed again to find that nothing changed.
//!
//! What it covers: the builder's format ([`FORMAT`], raised whenever the same
//! inputs would give other bytes), the kernel version, every path below the
//! kernel's module directory and below `lib/firmware` with its content hash (a
//! symlink by its target and what it resolves to), the kernel configuration
//! the build consults, the rescue binary's hash, the module set (and for a
//! host-only set, the facts of the devices it is chosen from), and
//! [`Inputs::extra`]: named inputs still to come (a keymap, key files), each by
//! its hash, so that adding one is adding a pair, not a new key scheme.

use lifeboat_state::hash::Hash128;
use lifeboat_state::layout::{EntryData, Layout};

use super::tree::resolve;

/// The builder's output format. Raise it when the same inputs make other
/// bytes (a new file in every initrd, another compression level, ...): every
/// initrd is then rebuilt once.
pub const FORMAT: u32 = 1;

/// What one build reads or decides by.
pub struct Inputs<'a> {
    pub kver: &'a str,
    pub layout: &'a Layout,
    /// The kernel's module directory, resolved (`lib/modules/<kver>`); `None`
    /// when the transaction has none (a kernel with every driver built in).
    pub modules: Option<&'a [u8]>,
    /// `lib/firmware`, resolved, when there is one.
    pub firmware: Option<&'a [u8]>,
    /// The kernel configuration's content hash, when one is found.
    pub config: Option<Hash128>,
    pub binary: Hash128,
    /// `generic` or `host-only`.
    pub set: &'a str,
    /// For a host-only set: the facts it is chosen from.
    pub host_facts: &'a [String],
    /// Inputs to come (a keymap, key files): (name, content hash), in a fixed order.
    pub extra: &'a [(&'a str, Hash128)],
}

/// Feeds length-prefixed fields, so that no two inputs read alike.
struct Feed(xxhash_rust::xxh3::Xxh3);

impl Feed {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn tag(&mut self, t: &str) {
        self.bytes(t.as_bytes());
    }
    fn hash(&mut self, h: Hash128) {
        self.0.update(&h.to_be_bytes());
    }
}

/// Every entry below `dir` (a resolved directory path) with its content.
fn subtree(f: &mut Feed, layout: &Layout, dir: &[u8]) {
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    for e in layout.entries() {
        let Some(rel) = e.path.strip_prefix(prefix.as_slice()) else { continue };
        f.bytes(rel);
        match &e.data {
            EntryData::Dir => f.tag("d"),
            EntryData::File { hash, .. } => {
                f.tag("f");
                f.hash(*hash);
            }
            EntryData::Symlink { target } => {
                f.tag("l");
                f.bytes(target);
                // What it leads to, which may be outside the subtree.
                match resolve(layout, &e.path).map(|(_, t)| &t.data) {
                    Some(EntryData::File { hash, .. }) => f.hash(*hash),
                    Some(EntryData::Dir) => f.tag("dir"),
                    _ => f.tag("-"),
                }
            }
        }
    }
}

/// The key of `i`, as 32 lowercase hex digits.
pub fn key(i: &Inputs) -> String {
    let mut f = Feed(xxhash_rust::xxh3::Xxh3::new());
    f.tag("lifeboat rescue initrd for a kernel");
    f.0.update(&FORMAT.to_le_bytes());
    f.tag(i.kver);
    f.tag("binary");
    f.hash(i.binary);
    f.tag("set");
    f.tag(i.set);
    for h in i.host_facts {
        f.tag(h);
    }
    f.tag("config");
    match i.config {
        Some(h) => f.hash(h),
        None => f.tag("-"),
    }
    for (what, dir) in [("modules", i.modules), ("firmware", i.firmware)] {
        f.tag(what);
        match dir {
            Some(d) => subtree(&mut f, i.layout, d),
            None => f.tag("-"),
        }
        f.tag("end");
    }
    for (name, h) in i.extra {
        f.tag(name);
        f.hash(*h);
    }
    format!("{:032x}", f.0.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_state::layout::LayoutEntry;

    fn e(path: &str, data: EntryData) -> LayoutEntry {
        LayoutEntry { path: path.as_bytes().into(), perm: 0o644, uid: 0, gid: 0, data, attrs: None }
    }

    fn layout(module: u128, other: u128) -> Layout {
        Layout::new(vec![
            e("lib", EntryData::Dir),
            e("lib/modules", EntryData::Dir),
            e("lib/modules/6.1", EntryData::Dir),
            e("lib/modules/6.1/a.ko", EntryData::File { hash: Hash128(module), size: 1 }),
            e("lib/modules/6.1/build", EntryData::Symlink { target: b"/usr/src/linux".as_slice().into() }),
            e("share", EntryData::Dir),
            e("share/x", EntryData::File { hash: Hash128(other), size: 1 }),
        ])
        .unwrap()
    }

    fn k(l: &Layout, binary: u128, set: &str) -> String {
        key(&Inputs {
            kver: "6.1",
            layout: l,
            modules: Some(b"lib/modules/6.1"),
            firmware: None,
            config: None,
            binary: Hash128(binary),
            set,
            host_facts: &[],
            extra: &[],
        })
    }

    #[test]
    fn changes_exactly_with_what_the_build_reads() {
        let base = k(&layout(1, 1), 7, "generic");
        assert_eq!(base.len(), 32);
        assert_eq!(k(&layout(1, 2), 7, "generic"), base, "a file outside the module tree is not an input");
        assert_ne!(k(&layout(2, 1), 7, "generic"), base, "a module changed");
        assert_ne!(k(&layout(1, 1), 8, "generic"), base, "the rescue binary changed");
        assert_ne!(k(&layout(1, 1), 7, "host-only"), base, "the module set changed");
    }
}
