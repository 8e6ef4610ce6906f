//! A mounted directory (an ESP mounted by the system, or any directory in tests)
//! behind the [`Volume`] trait. Replacement uses `rename(2)`, which replaces the
//! target in one step on every Linux filesystem, vfat included.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::volume::{components, DirEntry, Space, Volume};
use crate::{Error, Result};

pub struct DirVolume {
    root: PathBuf,
}

impl DirVolume {
    pub fn open(root: &Path) -> Result<Self> {
        let m = fs::metadata(root).map_err(|e| Error::io(root.display().to_string(), e))?;
        if !m.is_dir() {
            return Err(Error::Invalid(format!("{} is not a directory", root.display())));
        }
        Ok(DirVolume { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a volume path, matching each component case-insensitively when the
    /// exact name is absent (as FAT would), and refusing symlinks that leave the root.
    fn resolve(&self, path: &str) -> Result<PathBuf> {
        let mut cur = self.root.clone();
        for c in components(path)? {
            let exact = cur.join(c);
            if fs::symlink_metadata(&exact).is_ok() {
                cur = exact;
                continue;
            }
            let mut found = None;
            if let Ok(rd) = fs::read_dir(&cur) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().eq_ignore_ascii_case(c) {
                        found = Some(e.path());
                        break;
                    }
                }
            }
            cur = found.unwrap_or(exact);
        }
        if let Ok(m) = fs::symlink_metadata(&cur) {
            if m.file_type().is_symlink() {
                return Err(Error::Invalid(format!("{}: symlinks are not followed on a boot volume", cur.display())));
            }
        }
        Ok(cur)
    }

    fn err(&self, p: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound { volume: self.root.display().to_string(), path: p.display().to_string() }
        } else {
            Error::io(p.display().to_string(), e)
        }
    }
}

impl Volume for DirVolume {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&mut self, dir: &str) -> Result<Vec<DirEntry>> {
        let p = self.resolve(dir)?;
        let mut out = Vec::new();
        for e in fs::read_dir(&p).map_err(|e| self.err(&p, e))? {
            let e = e.map_err(|e| self.err(&p, e))?;
            let m = e.metadata().map_err(|e| self.err(&p, e))?;
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                is_dir: m.is_dir(),
                size: if m.is_dir() { 0 } else { m.len() },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Option<DirEntry>> {
        let p = self.resolve(path)?;
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(Some(DirEntry {
                name: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                is_dir: m.is_dir(),
                size: if m.is_dir() { 0 } else { m.len() },
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&p, e)),
        }
    }

    fn read_into(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let p = self.resolve(path)?;
        let mut f = fs::File::open(&p).map_err(|e| self.err(&p, e))?;
        io::copy(&mut f, out).map_err(|e| self.err(&p, e))
    }

    fn create_dir_all(&mut self, path: &str) -> Result<()> {
        let p = self.resolve(path)?;
        fs::create_dir_all(&p).map_err(|e| self.err(&p, e))
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        let p = self.resolve(path)?;
        let mut f = fs::File::create(&p).map_err(|e| self.err(&p, e))?;
        let n = io::copy(data, &mut f).map_err(|e| self.err(&p, e))?;
        f.sync_all().map_err(|e| self.err(&p, e))?;
        Ok(n)
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let p = self.resolve(path)?;
        let m = fs::symlink_metadata(&p).map_err(|e| self.err(&p, e))?;
        if m.is_dir() {
            fs::remove_dir(&p).map_err(|e| self.err(&p, e))
        } else {
            fs::remove_file(&p).map_err(|e| self.err(&p, e))
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let a = self.resolve(from)?;
        let b = self.resolve(to)?;
        if fs::symlink_metadata(&b).is_ok() {
            return Err(Error::Invalid(format!("{} exists", b.display())));
        }
        fs::rename(&a, &b).map_err(|e| self.err(&a, e))
    }

    fn space(&mut self) -> Result<Space> {
        let s = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| Error::io(self.root.display().to_string(), io::Error::from_raw_os_error(e as i32)))?;
        let bs = s.fragment_size().max(1);
        let cluster = fs::metadata(&self.root).map(|m| m.blksize()).unwrap_or(4096).max(512);
        Ok(Space { total: s.blocks() * bs, free: s.blocks_available() * bs, cluster })
    }

    /// The generic checks, and on vfat a name that is another file's 8.3
    /// alias: the kernel resolves it to that file, so a write would replace it.
    fn check_name(&mut self, path: &str) -> Result<()> {
        let (dir, name) = crate::volume::split(path);
        if let Some(why) = crate::volume::replace_name_problem(name) {
            return Err(Error::Invalid(format!("{}: {why}", path.trim_matches('/'))));
        }
        let parent = self.resolve(dir)?;
        let Ok(rd) = fs::read_dir(&parent) else { return Ok(()) };
        let names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Ok(());
        }
        match fs::symlink_metadata(parent.join(name)) {
            Ok(_) => Err(Error::Invalid(format!(
                "{}: {name} is the 8.3 alias of another file in that directory; name the file by its name",
                path.trim_matches('/')
            ))),
            Err(_) => Ok(()),
        }
    }

    fn dir_identity(&mut self, dir: &str) -> Result<Option<(u64, u64)>> {
        let p = self.resolve(dir)?;
        let m = fs::symlink_metadata(&p).map_err(|e| self.err(&p, e))?;
        Ok(Some((m.dev(), m.ino())))
    }

    fn flush(&mut self) -> Result<()> {
        let f = fs::File::open(&self.root).map_err(|e| self.err(&self.root, e))?;
        nix::unistd::syncfs(&f)
            .map_err(|e| Error::io(self.root.display().to_string(), io::Error::from_raw_os_error(e as i32)))
    }

    fn replace(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        self.check_name(path)?;
        let p = self.resolve(path)?;
        // Temporary name, fsync, rename over, fsync of the directory: the one
        // atomic write (its temporary name ends in TMP_SUFFIX, which recovery knows).
        lifeboat_fs::atomic_write_path(&p, None, data).map_err(|e| self.err(&p, e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_atomic_write_leaves_names_recovery_knows() {
        let t = lifeboat_fs::atomic_tmp_name(b"loader.conf");
        assert_eq!(t, format!("loader.conf{}", crate::volume::TMP_SUFFIX).into_bytes());
    }
}
