//! The one interface boot management writes through, whatever holds the files: a
//! FAT volume on a partition window, a mounted directory, or memory.
//!
//! Paths are `/`-separated and relative to the volume root. [`Volume::replace`] is
//! the crash-safe write on a filesystem without atomic rename-over (FAT): the new
//! content goes to `<name>.lbtmp`; once flushed it is renamed `<name>.lbnew`, which
//! marks it complete; then the old file is removed and `.lbnew` takes the final
//! name. [`Volume::recover`] deletes any `.lbtmp` (maybe incomplete) and finishes any
//! `.lbnew`, so after a crash a file is always its old or its new content; a
//! replacement that fails (no space, a refused write) settles what it began
//! before it returns the error, so nothing of it stays behind. Names are checked
//! before anything is written ([`Volume::check_name`]): a name FAT cannot hold,
//! one too long to carry the temporary suffixes, or another file's 8.3 alias
//! would leave a `.lbnew` that can never take its name.
//!
//! Interrupted replacements anywhere on a volume are completed by the next
//! writable open ([`crate::fat::FatVolume::open`]; [`Volume::complete_interrupted`]
//! for a mounted one), before anything reads the volume to plan a change.
//! [`walk`] is the one recursive listing, bounded in depth and stopped at a
//! directory met twice (a directory cycle on a damaged FAT never ends otherwise).

use std::io::{Read, Write};

use crate::{Error, Result};

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// Capacity of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub free: u64,
    /// Allocation unit: a file occupies a multiple of it.
    pub cluster: u64,
}

impl Space {
    /// Bytes a file of `len` bytes occupies.
    pub fn alloc(&self, len: u64) -> u64 {
        let c = self.cluster.max(1);
        len.div_ceil(c) * c
    }
}

/// Suffix of a file being written (possibly incomplete).
pub const TMP_SUFFIX: &str = ".lbtmp";
/// Suffix of a written and flushed file waiting to take its final name.
pub const NEW_SUFFIX: &str = ".lbnew";

/// The longest name FAT holds, in UTF-16 units.
pub const MAX_NAME: usize = 255;

/// Why `name` cannot be a file's name on FAT, if it cannot: 1 to 255
/// characters, none of `"*/:<>?\|` or a control character, not ending with a
/// dot or a space (Windows and Linux's vfat drop those, so the name written
/// would not be the name asked for).
pub fn name_problem(name: &str) -> Option<String> {
    let units = name.encode_utf16().count();
    let bad = name.chars().find(|&c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c));
    if name.is_empty() || units > MAX_NAME {
        Some(format!("a FAT name is 1 to {MAX_NAME} characters, this one is {units}"))
    } else if let Some(c) = bad {
        Some(format!("{c:?} is not allowed in a FAT name"))
    } else if name == "." || name == ".." || name.ends_with('.') || name.ends_with(' ') {
        Some("a FAT name cannot end with a dot or a space".to_owned())
    } else {
        None
    }
}

/// Why `name` cannot be replaced crash-safely, if it cannot: [`name_problem`],
/// or no room left for the temporary suffixes ([`TMP_SUFFIX`], [`NEW_SUFFIX`])
/// within FAT's 255 characters.
pub fn replace_name_problem(name: &str) -> Option<String> {
    if let Some(p) = name_problem(name) {
        return Some(p);
    }
    let units = name.encode_utf16().count();
    let room = MAX_NAME - TMP_SUFFIX.len();
    (units > room).then(|| {
        format!(
            "a name of {units} characters leaves no room for lifeboat's temporary suffix {TMP_SUFFIX} \
             (crash-safe writes take at most {room})"
        )
    })
}

/// Splits and checks a volume path: no empty, `.` or `..` components.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" => continue,
            "." | ".." => return Err(Error::Invalid(format!("{path:?}: `.` and `..` are not allowed"))),
            c if c.contains('\0') || c.contains('\\') => {
                return Err(Error::Invalid(format!("{path:?}: bad character in a name")))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Joins a directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    let d = dir.trim_matches('/');
    if d.is_empty() {
        name.to_owned()
    } else {
        format!("{d}/{name}")
    }
}

/// Splits a path into its parent directory and last component.
pub fn split(path: &str) -> (&str, &str) {
    let p = path.trim_matches('/');
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

pub trait Volume {
    /// Where this volume is, for messages (`disk.img:1`, `/boot/efi`, ...).
    fn describe(&self) -> String;
    /// Entries of a directory (without `.` and `..`).
    fn list(&mut self, dir: &str) -> Result<Vec<DirEntry>>;
    /// The entry at `path`, or `None`. Name matching follows the volume's rules
    /// (case-insensitive on FAT).
    fn stat(&mut self, path: &str) -> Result<Option<DirEntry>>;
    /// Streams a file's content into `out`.
    fn read_into(&mut self, path: &str, out: &mut dyn Write) -> Result<u64>;
    /// Creates a directory and its parents.
    fn create_dir_all(&mut self, path: &str) -> Result<()>;
    /// Creates or truncates a file and writes `data` to it (not crash-safe; see
    /// [`Volume::replace`]).
    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<u64>;
    /// Removes a file or an empty directory.
    fn remove(&mut self, path: &str) -> Result<()>;
    /// Renames within the volume; the target must not exist.
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    fn space(&mut self) -> Result<Space>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<()>;
    /// The error every write would give, when the volume refuses writes (a FAT
    /// volume whose check at open found damage); `None` when writes may go.
    fn write_refusal(&self) -> Option<Error> {
        None
    }

    /// Refuses, naming why, a file path [`Volume::replace`] could not give its
    /// content: a last component FAT cannot hold or that leaves no room for the
    /// temporary suffixes ([`replace_name_problem`]). Volumes that know more
    /// add to it (a FAT volume: a name that is another file's 8.3 alias).
    fn check_name(&mut self, path: &str) -> Result<()> {
        let (_, name) = split(path);
        match replace_name_problem(name) {
            Some(why) => Err(Error::Invalid(format!("{path}: {why}"))),
            None => Ok(()),
        }
    }

    /// Bytes directory `dir` may have to grow by to take entries named
    /// `names` beside what it holds (a replacement's temporary names, while
    /// the old files stay): for a space check that must count every byte a
    /// write takes. Here an estimate a FAT writer keeps within: every name's
    /// long-name slots and short entry, in whole clusters. A FAT volume places
    /// them as its writer would.
    fn room_needed(&mut self, _dir: &str, names: &[String]) -> Result<u64> {
        let slots: u64 = names.iter().map(|n| n.encode_utf16().count().div_ceil(13) as u64 + 1).sum();
        Ok(if slots == 0 { 0 } else { self.space()?.alloc(slots * 32) })
    }

    /// What two paths to one directory share (a FAT directory's first
    /// cluster; a mounted directory's device and inode), so a [`walk`] knows a
    /// directory it met before; `None` where the volume has none (memory).
    fn dir_identity(&mut self, _dir: &str) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }

    /// Files interrupted replacements left anywhere on the volume (`.lbtmp`,
    /// `.lbnew`), as paths. A FAT volume knows them from its check at open;
    /// others are walked.
    fn interrupted(&mut self) -> Result<Vec<String>> {
        Ok(walk(self, "")?.into_iter().filter(|(p, e)| !e.is_dir && is_interrupted(p)).map(|(p, _)| p).collect())
    }

    /// Completes every interrupted replacement on the volume (see
    /// [`Volume::recover`]); returns what was done. A writable FAT volume has
    /// done it at open.
    fn complete_interrupted(&mut self) -> Result<Vec<String>> {
        let paths = self.interrupted()?;
        complete_in(self, &paths)
    }

    fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_into(path, &mut v)?;
        Ok(v)
    }

    fn exists(&mut self, path: &str) -> Result<bool> {
        Ok(self.stat(path)?.is_some())
    }

    /// Crash-safe replacement of `path` with `data`. On failure nothing of it
    /// is left behind (see [`Volume::replace_all`]).
    fn replace(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        let p = path.trim_matches('/').to_owned();
        // Before anything is written: a name the last rename could not give
        // would leave its `.lbnew` behind.
        self.check_name(&p)?;
        let r = replace_one(self, &p, data);
        if r.is_err() {
            undo_replacements(self, std::slice::from_ref(&p));
        }
        r
    }

    /// [`Volume::replace`] for several files with three flushes in all instead of
    /// three each: every `.lbtmp` is written, a flush; each becomes `.lbnew`, a
    /// flush; each takes its final name, a flush. When any step fails, what the
    /// call began is settled before the error returns, so no `.lbtmp` or
    /// `.lbnew` of it stays behind: a `.lbtmp` is removed; a `.lbnew` whose old
    /// file is still there is removed (the old content stays), and one whose old
    /// file is gone takes its name (the new content is complete).
    fn replace_all(&mut self, items: &mut [(String, Box<dyn Read + '_>)]) -> Result<Vec<u64>> {
        // Before anything is written: every name must be one the last rename
        // can give, and no two items the same file (FAT names ignore case).
        for (k, (p, _)) in items.iter().enumerate() {
            let p = p.trim_matches('/');
            self.check_name(p)?;
            if items[..k].iter().any(|(q, _)| q.trim_matches('/').eq_ignore_ascii_case(p)) {
                return Err(Error::Invalid(format!("{p}: named twice among the files to write")));
            }
        }
        let mut started = 0;
        let r = replace_all_steps(self, items, &mut started);
        if r.is_err() {
            let paths: Vec<String> = items[..started].iter().map(|(p, _)| p.trim_matches('/').to_owned()).collect();
            undo_replacements(self, &paths);
        }
        r
    }

    /// Completes replacements in `dir` that a crash interrupted: a `.lbtmp` may be
    /// incomplete and is deleted; a `.lbnew` is complete and takes its final name.
    /// A `.lbnew` that cannot take it — the name is one FAT cannot hold, another
    /// file's 8.3 alias, or a directory's (what a failed write of older versions
    /// left) — is deleted, named in what is returned: it would otherwise fail
    /// every later write, and the write that made it failed.
    fn recover(&mut self, dir: &str) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let entries = match self.list(dir) {
            Ok(e) => e,
            Err(Error::NotFound { .. }) => return Ok(done),
            Err(e) => return Err(e),
        };
        for e in entries.iter().filter(|e| !e.is_dir) {
            if has_suffix(&e.name, TMP_SUFFIX) {
                let tmp = join(dir, &e.name);
                self.remove(&tmp)?;
                done.push(format!("discarded unfinished {tmp}"));
            }
        }
        for e in entries.iter().filter(|e| !e.is_dir) {
            if !has_suffix(&e.name, NEW_SUFFIX) {
                continue;
            }
            let base = &e.name[..e.name.len() - NEW_SUFFIX.len()];
            let new = join(dir, &e.name);
            let fin = join(dir, base);
            let unfit = match name_problem(base) {
                Some(why) => Some(why),
                None => match self.check_name(&fin) {
                    Err(Error::Invalid(why)) => Some(why),
                    Err(e) => return Err(e),
                    Ok(()) => match self.stat(&fin)? {
                        Some(st) if st.is_dir => Some(format!("{fin} is a directory")),
                        _ => None,
                    },
                },
            };
            if let Some(why) = unfit {
                self.remove(&new)?;
                done.push(format!("discarded {new}: it cannot take its name ({why})"));
                continue;
            }
            self.remove_if_exists(&fin)?;
            self.rename(&new, &fin)?;
            done.push(format!("completed interrupted replacement of {fin}"));
        }
        if !done.is_empty() {
            self.flush()?;
        }
        Ok(done)
    }

    /// Removes a file if present; true if it was there.
    fn remove_if_exists(&mut self, path: &str) -> Result<bool> {
        if self.exists(path)? {
            self.remove(path)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Whether `name` ends with `suffix` (case as FAT ignores it) and has a name before it.
fn has_suffix(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len()
        && name.is_char_boundary(name.len() - suffix.len())
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// [`Volume::recover`] in every directory that holds one of `paths`.
pub fn complete_in<V: Volume + ?Sized>(v: &mut V, paths: &[String]) -> Result<Vec<String>> {
    let mut dirs: Vec<&str> = Vec::new();
    for p in paths {
        let (d, _) = split(p);
        if !dirs.iter().any(|x| x.eq_ignore_ascii_case(d)) {
            dirs.push(d);
        }
    }
    let mut done = Vec::new();
    for d in dirs {
        done.extend(v.recover(d)?);
    }
    Ok(done)
}

/// Whether the file at `path` is one an interrupted replacement left.
pub fn is_interrupted(path: &str) -> bool {
    let (_, name) = split(path);
    has_suffix(name, TMP_SUFFIX) || has_suffix(name, NEW_SUFFIX)
}

/// Directories nested deeper than this below a walk's start are not followed:
/// a walk ends with an error instead (FAT paths are at most 260 characters,
/// so no real tree comes near).
pub const MAX_WALK_DEPTH: usize = 64;

/// Every entry below `dir`, depth first, each directory's entries sorted by
/// name (case ignored), as (path, entry). A directory met a second time (a
/// directory cycle, or two entries naming one directory: damage on FAT) or a
/// nesting deeper than [`MAX_WALK_DEPTH`] ends the walk with an error naming it:
/// walking on would never end.
pub fn walk<V: Volume + ?Sized>(v: &mut V, dir: &str) -> Result<Vec<(String, DirEntry)>> {
    let mut out = Vec::new();
    let mut seen: Vec<((u64, u64), String)> = Vec::new();
    let top = dir.trim_matches('/').to_owned();
    if let Some(id) = v.dir_identity(&top)? {
        seen.push((id, top.clone()));
    }
    walk_into(v, &top, 0, &mut seen, &mut out)?;
    Ok(out)
}

fn walk_into<V: Volume + ?Sized>(
    v: &mut V,
    dir: &str,
    depth: usize,
    seen: &mut Vec<((u64, u64), String)>,
    out: &mut Vec<(String, DirEntry)>,
) -> Result<()> {
    let mut entries = v.list(dir)?;
    entries.sort_by_key(|e| e.name.to_lowercase());
    for e in entries {
        let p = join(dir, &e.name);
        let is_dir = e.is_dir;
        out.push((p.clone(), e));
        if !is_dir {
            continue;
        }
        if depth + 1 >= MAX_WALK_DEPTH {
            return Err(Error::Fat {
                volume: v.describe(),
                why: format!("{p}: nested deeper than {MAX_WALK_DEPTH} directories (a directory cycle?); not followed"),
            });
        }
        if let Some(id) = v.dir_identity(&p)? {
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == id) {
                let first = if first.is_empty() { "/".to_owned() } else { first.clone() };
                return Err(Error::Fat {
                    volume: v.describe(),
                    why: format!(
                        "{p}: the directory {first} again (a directory cycle or a cross-link: the volume is damaged; \
                         `lifeboat disk check` names it); not followed"
                    ),
                });
            }
            seen.push((id, p.clone()));
        }
        walk_into(v, &p, depth + 1, seen, out)?;
    }
    Ok(())
}

fn replace_one<V: Volume + ?Sized>(v: &mut V, p: &str, data: &mut dyn Read) -> Result<u64> {
    let (tmp, new) = (format!("{p}{TMP_SUFFIX}"), format!("{p}{NEW_SUFFIX}"));
    v.remove_if_exists(&tmp)?;
    v.remove_if_exists(&new)?;
    let n = v.write_file(&tmp, data)?;
    v.flush()?;
    v.rename(&tmp, &new)?;
    // The complete `.lbnew` is durable before the old file goes: a crash
    // between the two never leaves only an incomplete `.lbtmp`.
    v.flush()?;
    v.remove_if_exists(p)?;
    v.rename(&new, p)?;
    v.flush()?;
    Ok(n)
}

/// The steps of [`Volume::replace_all`]; `started` counts the items it began.
fn replace_all_steps<V: Volume + ?Sized>(
    v: &mut V,
    items: &mut [(String, Box<dyn Read + '_>)],
    started: &mut usize,
) -> Result<Vec<u64>> {
    let mut sizes = Vec::with_capacity(items.len());
    for (path, data) in items.iter_mut() {
        let p = path.trim_matches('/');
        *started += 1;
        v.remove_if_exists(&format!("{p}{TMP_SUFFIX}"))?;
        v.remove_if_exists(&format!("{p}{NEW_SUFFIX}"))?;
        sizes.push(v.write_file(&format!("{p}{TMP_SUFFIX}"), data)?);
    }
    v.flush()?;
    for (path, _) in items.iter() {
        let p = path.trim_matches('/');
        v.rename(&format!("{p}{TMP_SUFFIX}"), &format!("{p}{NEW_SUFFIX}"))?;
    }
    v.flush()?;
    for (path, _) in items.iter() {
        let p = path.trim_matches('/');
        v.remove_if_exists(p)?;
        v.rename(&format!("{p}{NEW_SUFFIX}"), p)?;
    }
    v.flush()?;
    Ok(sizes)
}

/// Settles replacements that failed midway (best effort: the error that
/// stopped them is what the caller reports).
fn undo_replacements<V: Volume + ?Sized>(v: &mut V, paths: &[String]) {
    if v.write_refusal().is_some() {
        return;
    }
    for p in paths {
        let (tmp, new) = (format!("{p}{TMP_SUFFIX}"), format!("{p}{NEW_SUFFIX}"));
        let _ = v.remove_if_exists(&tmp);
        if v.exists(&new).unwrap_or(false) {
            match v.stat(p) {
                Ok(Some(_)) => {
                    let _ = v.remove(&new);
                }
                Ok(None) => {
                    let _ = v.rename(&new, p);
                }
                Err(_) => {}
            }
        }
    }
    let _ = v.flush();
}

impl<V: Volume + ?Sized> Volume for Box<V> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn list(&mut self, dir: &str) -> Result<Vec<DirEntry>> {
        (**self).list(dir)
    }
    fn stat(&mut self, path: &str) -> Result<Option<DirEntry>> {
        (**self).stat(path)
    }
    fn read_into(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        (**self).read_into(path, out)
    }
    fn create_dir_all(&mut self, path: &str) -> Result<()> {
        (**self).create_dir_all(path)
    }
    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        (**self).write_file(path, data)
    }
    fn remove(&mut self, path: &str) -> Result<()> {
        (**self).remove(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        (**self).rename(from, to)
    }
    fn space(&mut self) -> Result<Space> {
        (**self).space()
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn write_refusal(&self) -> Option<Error> {
        (**self).write_refusal()
    }
    fn check_name(&mut self, path: &str) -> Result<()> {
        (**self).check_name(path)
    }
    fn dir_identity(&mut self, dir: &str) -> Result<Option<(u64, u64)>> {
        (**self).dir_identity(dir)
    }
    fn room_needed(&mut self, dir: &str, names: &[String]) -> Result<u64> {
        (**self).room_needed(dir, names)
    }
    fn interrupted(&mut self) -> Result<Vec<String>> {
        (**self).interrupted()
    }
    fn complete_interrupted(&mut self) -> Result<Vec<String>> {
        (**self).complete_interrupted()
    }
    fn recover(&mut self, dir: &str) -> Result<Vec<String>> {
        (**self).recover(dir)
    }
    fn replace(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        (**self).replace(path, data)
    }
    fn replace_all(&mut self, items: &mut [(String, Box<dyn Read + '_>)]) -> Result<Vec<u64>> {
        (**self).replace_all(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemVolume;

    #[test]
    fn a_replacement_needs_room_for_its_suffixes() {
        assert_eq!(replace_name_problem(&"n".repeat(MAX_NAME - TMP_SUFFIX.len())), None);
        let why = replace_name_problem(&"n".repeat(MAX_NAME - TMP_SUFFIX.len() + 1)).unwrap();
        assert!(why.contains("250 characters leaves no room for lifeboat's temporary suffix .lbtmp"), "{why}");
        assert!(replace_name_problem("loader.conf ").unwrap().contains("dot or a space"));
        assert!(is_interrupted("EFI/x.efi.LBNEW") && is_interrupted("a.lbtmp") && !is_interrupted(".lbnew"));
    }

    #[test]
    fn a_walk_is_bounded_in_depth() {
        let mut v = MemVolume::new(64 << 20, 512);
        let deep: Vec<String> = (0..MAX_WALK_DEPTH + 2).map(|i| format!("d{i}")).collect();
        v.create_dir_all(&deep.join("/")).unwrap();
        let e = walk(&mut v, "").unwrap_err().to_string();
        assert!(e.contains(&format!("nested deeper than {MAX_WALK_DEPTH}")), "{e}");
        let shallow: Vec<String> = (0..MAX_WALK_DEPTH - 1).map(|i| format!("s{i}")).collect();
        let mut v = MemVolume::new(64 << 20, 512);
        v.create_dir_all(&shallow.join("/")).unwrap();
        assert_eq!(walk(&mut v, "").unwrap().len(), MAX_WALK_DEPTH - 1);
    }
}
