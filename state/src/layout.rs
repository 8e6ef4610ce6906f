//! The layout of one transaction: every directory, file and symlink of its `/usr`.
//!
//! A [`Layout`] is the materialised, validated form that the blit, verify and repair
//! work from. Entries are in depth-first order (a directory before its contents,
//! siblings by name), paths are relative to `/usr`, normalised, and free of `..`; the
//! constructor refuses anything else so that no consumer can be steered outside the
//! tree it works on.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::attrs::AttrSet;
use crate::hash::Hash128;

/// Longest name of one path component, as on Linux filesystems.
pub const MAX_NAME: usize = 255;
/// Deepest nesting accepted below `/usr`.
pub const MAX_DEPTH: usize = 255;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// The hash an empty file's entry carries when it is one name of a hard-link
/// group of empty files: not of its content (empty files have no blob, and
/// moss's convention is that they are made, never linked), but naming the
/// group by its first path, so that the blit makes one empty file and links
/// the group's other names to it. Any other empty file has the hash of no bytes.
pub fn empty_group(first_path: &[u8]) -> Hash128 {
    let mut b = b"lifeboat: a hard-link group of empty files, first named ".to_vec();
    b.extend_from_slice(first_path);
    Hash128::of(&b)
}

/// What a path holds.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum EntryData {
    Dir,
    /// A regular file; for an empty one in a hard-link group, `hash` names the
    /// group ([`empty_group`]).
    File {
        hash: Hash128,
        size: u64,
    },
    Symlink {
        target: Box<[u8]>,
    },
}

impl EntryData {
    pub fn kind_name(&self) -> &'static str {
        match self {
            EntryData::Dir => "directory",
            EntryData::File { .. } => "file",
            EntryData::Symlink { .. } => "symlink",
        }
    }

    pub fn type_bits(&self) -> u32 {
        match self {
            EntryData::Dir => S_IFDIR,
            EntryData::File { .. } => S_IFREG,
            EntryData::Symlink { .. } => S_IFLNK,
        }
    }
}

/// One path of a transaction's `/usr`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LayoutEntry {
    /// Relative to `/usr`, components joined by `/`.
    pub path: Box<[u8]>,
    /// Permission bits only (`0o7777`); the type is in `data`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: EntryData,
    /// Kept extended attributes ([`crate::attrs`]); `None` for none.
    pub attrs: Option<Arc<AttrSet>>,
}

impl LayoutEntry {
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// Number of `/` in the path: 0 for a direct child of `/usr`. Walks over
    /// a whole layout read [`Layout::shapes`] instead.
    pub fn depth(&self) -> usize {
        PathShape::of(&self.path).depth()
    }

    /// The last component.
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }

    /// Everything before the last component (empty for a child of `/usr`).
    pub fn parent(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[..i],
            None => &[],
        }
    }
}

/// Why a path or a layout was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LayoutError {
    EmptyPath,
    Absolute,
    BadComponent(&'static str),
    TooLong,
    TooDeep,
    Duplicate,
    OutOfOrder,
    ParentMissing,
    ParentNotDirectory,
    BadMode(u32),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::EmptyPath => write!(f, "empty path"),
            LayoutError::Absolute => write!(f, "absolute path"),
            LayoutError::BadComponent(why) => write!(f, "bad path component ({why})"),
            LayoutError::TooLong => write!(f, "path component longer than {MAX_NAME} bytes"),
            LayoutError::TooDeep => write!(f, "path deeper than {MAX_DEPTH} levels"),
            LayoutError::Duplicate => write!(f, "duplicate path"),
            LayoutError::OutOfOrder => write!(f, "entries out of depth-first order"),
            LayoutError::ParentMissing => write!(f, "parent directory not in the layout"),
            LayoutError::ParentNotDirectory => write!(f, "parent is not a directory"),
            LayoutError::BadMode(m) => write!(f, "mode {m:o} has bits outside 0o7777"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Checks one component: not empty, not `.` or `..`, no `/` or NUL, not too long.
pub fn check_name(name: &[u8]) -> Result<(), LayoutError> {
    if name.is_empty() {
        return Err(LayoutError::BadComponent("empty"));
    }
    if name == b"." || name == b".." {
        return Err(LayoutError::BadComponent("`.` or `..`"));
    }
    if name.contains(&b'/') {
        return Err(LayoutError::BadComponent("contains `/`"));
    }
    if name.contains(&0) {
        return Err(LayoutError::BadComponent("contains NUL"));
    }
    if name.len() > MAX_NAME {
        return Err(LayoutError::TooLong);
    }
    Ok(())
}

/// Checks a whole relative path: every component valid, not absolute, not too deep.
pub fn check_path(path: &[u8]) -> Result<(), LayoutError> {
    if path.is_empty() {
        return Err(LayoutError::EmptyPath);
    }
    if path[0] == b'/' {
        return Err(LayoutError::Absolute);
    }
    let mut depth = 0;
    for c in path.split(|&b| b == b'/') {
        check_name(c)?;
        depth += 1;
    }
    if depth > MAX_DEPTH + 1 {
        return Err(LayoutError::TooDeep);
    }
    Ok(())
}

/// Splits entries in depth-first order into about `parts` runs of similar length
/// for parallel walks. A run starts only at an entry at most `max_depth` levels
/// down, so a worker needs to open at most that many of its ancestors before
/// walking its run.
pub fn subtree_runs(shapes: &[PathShape], parts: usize, max_depth: usize) -> Vec<(usize, usize)> {
    let target = shapes.len().div_ceil(parts.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in shapes.iter().enumerate().skip(1) {
        if i - start >= target && s.depth() <= max_depth {
            out.push((start, i));
            start = i;
        }
    }
    if start < shapes.len() {
        out.push((start, shapes.len()));
    }
    out
}

/// Depth-first order of relative paths: component by component, so `a/b` < `a-c`.
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |x: u8| if x == b'/' { 0 } else { x };
    let n = a.len().min(b.len());
    for i in 0..n {
        match key(a[i]).cmp(&key(b[i])) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Where an entry sits: how deep, and where its last component starts in its
/// path. Kept beside the entries because every walk asks both of every entry,
/// and working them out again means reading a quarter of a million paths, one
/// allocation each, before any worker can start.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct PathShape {
    /// Byte offset of the last component in the path.
    pub name_at: u32,
    /// Number of `/` in the path: 0 for a direct child of `/usr`.
    pub depth: u16,
}

impl PathShape {
    /// The shape of a checked path (at most [`MAX_DEPTH`] levels below `/usr`).
    pub fn of(path: &[u8]) -> Self {
        let (mut depth, mut name_at) = (0usize, 0usize);
        for (j, &b) in path.iter().enumerate() {
            if b == b'/' {
                depth += 1;
                name_at = j + 1;
            }
        }
        PathShape { name_at: name_at as u32, depth: depth.min(u16::MAX as usize) as u16 }
    }

    pub fn depth(self) -> usize {
        usize::from(self.depth)
    }
}

/// A validated transaction layout in depth-first order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Layout {
    entries: Vec<LayoutEntry>,
    /// `shapes[i]` is `entries[i]`'s.
    shapes: Vec<PathShape>,
    /// The entries' extended attributes were read when the layout was made
    /// (a scan), so an entry without any has none. False for a layout from
    /// moss's database or an index written before attributes were kept: there
    /// nothing is known about attributes, and nothing is compared.
    attrs_recorded: bool,
    /// The tree's own top directory (what becomes `/usr` itself): its mode,
    /// owner and attributes. `None` where they were not recorded (moss's
    /// layout, an older index): a blit makes it 0755 root, and nothing is compared.
    top: Option<TopMeta>,
}

/// The metadata of a tree's top directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TopMeta {
    /// Permission bits only (`0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub attrs: Option<Arc<AttrSet>>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { entries: Vec::new(), shapes: Vec::new(), attrs_recorded: true, top: None }
    }
}

impl Layout {
    /// Validates and orders entries: every path valid and unique, every parent present
    /// as a directory. Entries may come in any order.
    pub fn new(mut entries: Vec<LayoutEntry>) -> Result<Self, (LayoutError, Box<[u8]>)> {
        entries.sort_by(|a, b| path_order(&a.path, &b.path));
        Self::from_sorted(entries)
    }

    /// Like [`Layout::new`] for entries already in depth-first order; refuses any
    /// other order instead of sorting.
    pub fn from_sorted(entries: Vec<LayoutEntry>) -> Result<Self, (LayoutError, Box<[u8]>)> {
        // Directories enclosing the previous entry, outermost first; after truncating
        // to the new entry's depth, the top must be its parent.
        let mut dirs: Vec<&[u8]> = Vec::new();
        let mut prev: Option<&[u8]> = None;
        let mut shapes = Vec::with_capacity(entries.len());
        for e in &entries {
            let fail = |err| (err, e.path.clone());
            check_path(&e.path).map_err(fail)?;
            if e.perm & !0o7777 != 0 {
                return Err(fail(LayoutError::BadMode(e.perm)));
            }
            if let Some(p) = prev {
                match path_order(p, &e.path) {
                    Ordering::Less => {}
                    Ordering::Equal => return Err(fail(LayoutError::Duplicate)),
                    Ordering::Greater => return Err(fail(LayoutError::OutOfOrder)),
                }
            }
            let shape = PathShape::of(&e.path);
            shapes.push(shape);
            let depth = shape.depth();
            let parent = e.parent();
            // Pop directories that do not enclose this entry.
            dirs.truncate(depth);
            if depth > 0 {
                match dirs.last() {
                    Some(d) if *d == parent => {}
                    _ => {
                        // The parent may exist as a non-directory just before.
                        let is_nondir_parent = prev.is_some_and(|p| p == parent);
                        return Err(fail(if is_nondir_parent {
                            LayoutError::ParentNotDirectory
                        } else {
                            LayoutError::ParentMissing
                        }));
                    }
                }
            }
            if matches!(e.data, EntryData::Dir) {
                dirs.push(&e.path);
            }
            prev = Some(&e.path);
        }
        Ok(Layout { entries, shapes, attrs_recorded: true, top: None })
    }

    /// With the top directory's metadata (see [`TopMeta`]).
    pub fn with_top(mut self, top: Option<TopMeta>) -> Self {
        self.top = top.map(|t| TopMeta { perm: t.perm & 0o7777, ..t });
        self
    }

    /// The top directory's metadata, where it was recorded.
    pub fn top(&self) -> Option<&TopMeta> {
        self.top.as_ref()
    }

    /// Marks whether the entries' attributes were recorded (see the field).
    pub fn with_attrs_recorded(mut self, recorded: bool) -> Self {
        self.attrs_recorded = recorded;
        self
    }

    /// Whether the entries' attributes were recorded: only then are they compared.
    pub fn attrs_recorded(&self) -> bool {
        self.attrs_recorded
    }

    /// For entries whose validity the caller has already established (the index
    /// decoder checks every rule of [`Layout::from_sorted`] on its own tables),
    /// with their shapes (`shapes[i]` is `entries[i]`'s).
    pub(crate) fn from_trusted(
        entries: Vec<LayoutEntry>,
        shapes: Vec<PathShape>,
        attrs_recorded: bool,
        top: Option<TopMeta>,
    ) -> Self {
        debug_assert!(shapes.len() == entries.len());
        debug_assert!(entries.iter().zip(&shapes).all(|(e, s)| PathShape::of(&e.path) == *s));
        Layout { entries, shapes, attrs_recorded, top }
    }

    pub fn entries(&self) -> &[LayoutEntry] {
        &self.entries
    }

    /// Each entry's depth and where its name starts, in entry order.
    pub fn shapes(&self) -> &[PathShape] {
        &self.shapes
    }

    /// The last component of entry `i`'s path (empty past the end).
    pub fn name(&self, i: usize) -> &[u8] {
        match (self.entries.get(i), self.shapes.get(i)) {
            (Some(e), Some(s)) => e.path.get(s.name_at as usize..).unwrap_or_default(),
            _ => &[],
        }
    }

    pub fn into_entries(self) -> Vec<LayoutEntry> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Binary search by path.
    pub fn find(&self, path: &[u8]) -> Option<&LayoutEntry> {
        self.entries.binary_search_by(|e| path_order(&e.path, path)).ok().map(|i| &self.entries[i])
    }

    /// Kernel versions this layout carries: `lib/kernel/<kver>/vmlinuz` files.
    pub fn kernels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            if let (Some(rest), EntryData::File { .. }) = (e.path.strip_prefix(b"lib/kernel/".as_slice()), &e.data) {
                if let Some(kver) = rest.strip_suffix(b"/vmlinuz".as_slice()) {
                    if !kver.contains(&b'/') {
                        out.push(String::from_utf8_lossy(kver).into_owned());
                    }
                }
            }
        }
        out
    }

    /// Totals for `state show`.
    pub fn stats(&self) -> LayoutStats {
        let mut s = LayoutStats::default();
        for e in &self.entries {
            match &e.data {
                EntryData::Dir => s.dirs += 1,
                EntryData::File { size, .. } => {
                    s.files += 1;
                    s.bytes += size;
                }
                EntryData::Symlink { .. } => s.symlinks += 1,
            }
        }
        s
    }
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LayoutStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn dir(p: &str) -> LayoutEntry {
        LayoutEntry { path: p.as_bytes().into(), perm: 0o755, uid: 0, gid: 0, data: EntryData::Dir, attrs: None }
    }
    pub fn file(p: &str, content: &[u8]) -> LayoutEntry {
        LayoutEntry {
            path: p.as_bytes().into(),
            perm: 0o644,
            uid: 0,
            gid: 0,
            data: EntryData::File { hash: Hash128::of(content), size: content.len() as u64 },
            attrs: None,
        }
    }
    pub fn link(p: &str, t: &str) -> LayoutEntry {
        LayoutEntry {
            path: p.as_bytes().into(),
            perm: 0o777,
            uid: 0,
            gid: 0,
            data: EntryData::Symlink { target: t.as_bytes().into() },
            attrs: None,
        }
    }

    #[test]
    fn order_is_component_wise() {
        let l = Layout::new(vec![dir("a-c"), file("a/b", b"x"), dir("a")]).unwrap();
        let paths: Vec<_> = l.entries().iter().map(|e| e.path_lossy()).collect();
        assert_eq!(paths, ["a", "a/b", "a-c"]);
    }

    #[test]
    fn refuses_bad_paths() {
        for p in ["", "/a", "a/../b", "a//b", "./a", "a/.", "a\0b"] {
            assert!(Layout::new(vec![file(p, b"")]).is_err(), "{p:?}");
        }
        assert_eq!(Layout::new(vec![file("a/b", b"")]).unwrap_err().0, LayoutError::ParentMissing);
        assert_eq!(Layout::new(vec![file("a", b""), file("a/b", b"")]).unwrap_err().0, LayoutError::ParentNotDirectory);
        assert_eq!(Layout::new(vec![link("a", "x"), link("a", "x")]).unwrap_err().0, LayoutError::Duplicate);
        assert_eq!(Layout::from_sorted(vec![dir("b"), dir("a")]).unwrap_err().0, LayoutError::OutOfOrder);
    }

    #[test]
    fn deep_parents_are_tracked() {
        let l = Layout::new(vec![
            dir("a"),
            dir("a/b"),
            dir("a/b/c"),
            file("a/b/c/f", b"1"),
            file("a/g", b"2"),
            dir("b"),
            file("b/h", b"3"),
        ]);
        assert!(l.is_ok());
    }

    #[test]
    fn shapes_are_each_paths_depth_and_name() {
        let l =
            Layout::new(vec![dir("a"), dir("a/bc"), file("a/bc/def", b"1"), link("a/x", "y"), file("z", b"")]).unwrap();
        let got: Vec<(u16, u32)> = l.shapes().iter().map(|s| (s.depth, s.name_at)).collect();
        assert_eq!(got, [(0, 0), (1, 2), (2, 5), (1, 2), (0, 0)]);
        for (i, (e, s)) in l.entries().iter().zip(l.shapes()).enumerate() {
            assert_eq!(l.name(i), e.name());
            assert_eq!(s.depth(), e.depth());
        }
        assert_eq!(l.name(l.len()), b"");
    }

    #[test]
    fn kernels_found() {
        let l = Layout::new(vec![
            dir("lib"),
            dir("lib/kernel"),
            dir("lib/kernel/6.1.0-1"),
            file("lib/kernel/6.1.0-1/vmlinuz", b"k"),
            dir("lib/kernel/6.2.0"),
        ])
        .unwrap();
        assert_eq!(l.kernels(), ["6.1.0-1"]);
    }
}
