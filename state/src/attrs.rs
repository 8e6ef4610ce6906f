//! Extended attributes a transaction keeps: which ones, read from a tree, set on
//! one, compared with one.
//!
//! A distribution's `/usr` carries more than content and mode: file capabilities
//! (`security.capability`, on `gst-ptp-helper` here, `newuidmap` on Fedora),
//! SELinux labels and IMA signatures (`security.*`), `trusted.*` and `user.*`
//! attributes, and POSIX ACLs (`system.posix_acl_access` / `_default`). Every
//! one of those is recorded per entry as an [`AttrSet`] (sorted by name, shared
//! between entries and transactions as paths are) and set again by every blit
//! and repair — after the owner and mode, because `chown` clears a capability and
//! setting an access ACL sets the group bits the mode shows. Other `system.*`
//! names are filesystem internals (an NFSv4 ACL, ext4's inline data) and are not
//! kept.
//!
//! A file with attributes is never its store blob's inode: attributes set on a
//! link would be set on the blob, and so on every tree linking it. The blit makes
//! such a file a copy (one per set of identical entries, linked among themselves).

use std::fmt;
use std::io;
use std::sync::Arc;

use lifeboat_fs::xattr::{self, Target};

/// Longest attribute name the kernel accepts (`XATTR_NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Largest attribute value (`XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = xattr::XATTR_SIZE_MAX;
/// Most attributes one entry may carry in an index (a hostile index is refused).
pub const MAX_PER_ENTRY: usize = 1024;

pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
pub const CAPABILITY: &[u8] = b"security.capability";

/// Whether attribute `name` is one a transaction keeps.
pub fn recorded(name: &[u8]) -> bool {
    name.starts_with(b"security.")
        || name.starts_with(b"trusted.")
        || name.starts_with(b"user.")
        || name == ACL_ACCESS
        || name == ACL_DEFAULT
}

/// One extended attribute.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Xattr {
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
}

/// The kept attributes of one entry: at least one, sorted by name, names unique.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AttrSet(Box<[Xattr]>);

/// Why a set of attributes was refused (from an index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError(pub String);

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AttrSet {
    /// A set from attributes in any order; `None` for none. Refuses names that
    /// are not kept, too long, empty or repeated, values too large, too many.
    pub fn new(mut items: Vec<Xattr>) -> Result<Option<Arc<AttrSet>>, AttrError> {
        if items.is_empty() {
            return Ok(None);
        }
        if items.len() > MAX_PER_ENTRY {
            return Err(AttrError(format!("{} attributes on one entry", items.len())));
        }
        items.sort();
        for (i, x) in items.iter().enumerate() {
            let shown = String::from_utf8_lossy(&x.name);
            if x.name.is_empty() || x.name.len() > MAX_NAME || x.name.contains(&0) {
                return Err(AttrError(format!("attribute name {shown:?} invalid")));
            }
            if !recorded(&x.name) {
                return Err(AttrError(format!("attribute {shown:?} is not one a transaction keeps")));
            }
            if x.value.len() > MAX_VALUE {
                return Err(AttrError(format!("attribute {shown} holds {} bytes", x.value.len())));
            }
            if i > 0 && items[i - 1].name == x.name {
                return Err(AttrError(format!("attribute {shown} twice")));
            }
        }
        Ok(Some(Arc::new(AttrSet(items.into_boxed_slice()))))
    }

    pub fn items(&self) -> &[Xattr] {
        &self.0
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.0.iter().find(|x| &*x.name == name).map(|x| &*x.value)
    }

    /// Names, for messages: `security.capability,user.origin`.
    pub fn names(&self) -> String {
        self.0.iter().map(|x| String::from_utf8_lossy(&x.name).into_owned()).collect::<Vec<_>>().join(",")
    }

    /// Whether it has a default ACL: entries made in such a directory inherit it.
    pub fn has_default_acl(&self) -> bool {
        self.get(ACL_DEFAULT).is_some()
    }
}

/// The kept attributes `t` has now.
pub fn read(t: Target) -> io::Result<Option<Arc<AttrSet>>> {
    let mut items = Vec::new();
    for name in xattr::list(t)? {
        if !recorded(&name) {
            continue;
        }
        // Removed between the listing and the read: it is not there.
        if let Some(value) = xattr::get(t, &name)? {
            items.push(Xattr { name: name.into(), value: value.into() });
        }
    }
    AttrSet::new(items).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))
}

/// Gives `t` exactly the kept attributes `want`: sets each one, and with
/// `exact` first removes kept attributes it has that `want` has not (an entry
/// made in a directory with a default ACL inherited one). Other attributes are
/// left alone.
pub fn apply(t: Target, want: Option<&AttrSet>, exact: bool) -> io::Result<()> {
    if exact {
        for name in xattr::list(t)? {
            if recorded(&name) && want.is_none_or(|w| w.get(&name).is_none()) {
                xattr::remove(t, &name)?;
            }
        }
    }
    for x in want.map(|w| w.items()).unwrap_or_default() {
        xattr::set(t, &x.name, &x.value).map_err(|e| {
            io::Error::new(e.kind(), format!("set attribute {}: {e}", String::from_utf8_lossy(&x.name)))
        })?;
    }
    Ok(())
}

/// How the attributes found differ from those recorded: one phrase per name
/// (`security.capability missing`, `user.x differs`, `user.y added`), empty
/// when they agree.
pub fn differences(want: Option<&AttrSet>, have: Option<&AttrSet>) -> Vec<String> {
    let (w, h) = (want.map(|s| s.items()).unwrap_or_default(), have.map(|s| s.items()).unwrap_or_default());
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let name = |x: &Xattr| String::from_utf8_lossy(&x.name).into_owned();
    while i < w.len() || j < h.len() {
        match (w.get(i), h.get(j)) {
            (Some(a), Some(b)) if a.name == b.name => {
                if a.value != b.value {
                    out.push(format!("{} differs", name(a)));
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.name < b.name => {
                out.push(format!("{} missing", name(a)));
                i += 1;
            }
            (Some(a), None) => {
                out.push(format!("{} missing", name(a)));
                i += 1;
            }
            (_, Some(b)) => {
                out.push(format!("{} added", name(b)));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(n: &str, v: &str) -> Xattr {
        Xattr { name: n.as_bytes().into(), value: v.as_bytes().into() }
    }

    #[test]
    fn sets_are_sorted_checked_and_compared() {
        let s =
            AttrSet::new(vec![x("user.b", "2"), x(std::str::from_utf8(CAPABILITY).unwrap(), "c")]).unwrap().unwrap();
        assert_eq!(s.names(), "security.capability,user.b");
        assert!(AttrSet::new(vec![]).unwrap().is_none());
        assert!(AttrSet::new(vec![x("system.nfs4_acl", "")]).is_err());
        assert!(AttrSet::new(vec![x("user.a", ""), x("user.a", "")]).is_err());
        assert!(AttrSet::new(vec![x("", "")]).is_err());
        let t = AttrSet::new(vec![x("user.b", "3"), x("user.c", "")]).unwrap().unwrap();
        assert_eq!(differences(Some(&s), Some(&t)), ["security.capability missing", "user.b differs", "user.c added"]);
        assert!(differences(Some(&s), Some(&s)).is_empty());
        assert_eq!(differences(None, Some(&t)), ["user.b added", "user.c added"]);
    }
}
