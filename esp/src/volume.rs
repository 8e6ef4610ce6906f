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
//! before it returns the error, so nothing of it stays behind.

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
    fn recover(&mut self, dir: &str) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let entries = match self.list(dir) {
            Ok(e) => e,
            Err(Error::NotFound { .. }) => return Ok(done),
            Err(e) => return Err(e),
        };
        for e in entries.iter().filter(|e| !e.is_dir) {
            if e.name.len() > TMP_SUFFIX.len() && e.name.ends_with(TMP_SUFFIX) {
                let tmp = join(dir, &e.name);
                self.remove(&tmp)?;
                done.push(format!("discarded unfinished {tmp}"));
            }
        }
        for e in entries.iter().filter(|e| !e.is_dir) {
            let Some(base) = e.name.strip_suffix(NEW_SUFFIX) else { continue };
            if base.is_empty() {
                continue;
            }
            let new = join(dir, &e.name);
            let fin = join(dir, base);
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
    fn replace(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        (**self).replace(path, data)
    }
    fn replace_all(&mut self, items: &mut [(String, Box<dyn Read + '_>)]) -> Result<Vec<u64>> {
        (**self).replace_all(items)
    }
}
