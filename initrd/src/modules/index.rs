//! A kernel's module directory as depmod describes it: `modules.dep` (each
//! module's path and hard dependencies), `modules.alias` (device and feature
//! aliases), `modules.softdep` (soft dependencies, from module info and depmod
//! configuration) and `modules.builtin` (what is built into the kernel). Names
//! compare with dashes and underscores alike, as modprobe compares them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::files::Files;
use crate::{Error, Result};

/// A module name in modprobe's normal form (`-` as `_`).
pub fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/fs/fat/vfat.ko.xz`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    norm(stem)
}

/// Soft dependencies of one module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoftDeps {
    /// Loaded before it (names or aliases).
    pub pre: Vec<String>,
    /// Loaded after it.
    pub post: Vec<String>,
}

/// The parsed module directory.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// The directory, as messages name it.
    pub dir: PathBuf,
    /// Module name -> path relative to `dir`.
    pub path: BTreeMap<String, String>,
    /// Module name -> names of its hard dependencies.
    pub deps: BTreeMap<String, Vec<String>>,
    /// (pattern, module name), in file order.
    pub aliases: Vec<(String, String)>,
    /// Exact aliases (no glob characters) -> module names, for quick lookups.
    exact: HashMap<String, Vec<String>>,
    pub softdeps: BTreeMap<String, SoftDeps>,
    pub builtin: BTreeSet<String>,
}

/// One of depmod's files in a kernel's module directory, read through the
/// tree's [`Files`] (a regular file only, never waiting on a FIFO).
fn read(files: &dyn Files, name: &str, required: bool) -> Result<Option<String>> {
    let p = files.shown(name);
    match files.read(name, 256 << 20) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kver = files.shown("").file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Err(Error::Module(format!(
                "{} is missing: run `depmod -b ROOT {kver}` (or `depmod {kver}`) to make it",
                p.display()
            )))
        }
        Err(e) => Err(Error::Io { at: p, source: e }),
    }
}

fn is_glob(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

impl ModuleIndex {
    /// Reads the module directory of one kernel (`/lib/modules/<kver>`).
    pub fn load(files: &dyn Files) -> Result<ModuleIndex> {
        let mut ix = ModuleIndex { dir: files.shown(""), ..Default::default() };
        let dep = read(files, "modules.dep", true)?.unwrap_or_default();
        ix.parse_dep(&dep)?;
        if let Some(t) = read(files, "modules.alias", false)? {
            ix.parse_alias(&t);
        }
        if let Some(t) = read(files, "modules.softdep", false)? {
            ix.parse_softdep(&t);
        }
        if let Some(t) = read(files, "modules.builtin", false)? {
            ix.builtin = t.lines().filter(|l| !l.trim().is_empty()).map(module_name).collect();
        }
        Ok(ix)
    }

    /// `modules.dep`: `path: dep-path ...` per line.
    pub fn parse_dep(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (m, deps) =
                line.split_once(':').ok_or_else(|| Error::Module(format!("modules.dep line {}: no ':'", n + 1)))?;
            let m = m.trim();
            for p in std::iter::once(m).chain(deps.split_whitespace()) {
                if p.split('/').any(|c| c == "..") || p.starts_with('/') || p.is_empty() {
                    return Err(Error::Module(format!("modules.dep line {}: bad path {p:?}", n + 1)));
                }
            }
            let name = module_name(m);
            self.path.insert(name.clone(), m.to_owned());
            self.deps.insert(name, deps.split_whitespace().map(module_name).collect());
        }
        Ok(())
    }

    /// `modules.alias`: `alias PATTERN MODULE` per line.
    pub fn parse_alias(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                let m = norm(m);
                if !is_glob(pat) {
                    self.exact.entry(norm(pat)).or_default().push(m.clone());
                }
                self.aliases.push((pat.to_owned(), m));
            }
        }
    }

    /// `modules.softdep`: `softdep MODULE [pre:] NAME... [post: NAME...]` per line
    /// (names before any `pre:`/`post:` count as `pre`).
    pub fn parse_softdep(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some("softdep"), Some(m)) = (w.next(), w.next()) else {
                continue;
            };
            let e = self.softdeps.entry(norm(m)).or_default();
            let mut post = false;
            for t in w {
                match t {
                    "pre:" => post = false,
                    "post:" => post = true,
                    name if post => e.post.push(name.to_owned()),
                    name => e.pre.push(name.to_owned()),
                }
            }
        }
    }

    /// The modules a name stands for: the module itself when there is one,
    /// else every module that gives it as an exact alias (`crypto-crc32c` ->
    /// `crc32c_generic`, `crc32c_intel`). Empty when it is built in or unknown.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let n = norm(name);
        if self.path.contains_key(&n) {
            return vec![n];
        }
        let mut out: Vec<String> = self.exact.get(&n).cloned().unwrap_or_default();
        if out.is_empty() {
            // Glob aliases (rare for names, common for devices).
            out = self
                .aliases
                .iter()
                .filter(|(p, _)| super::alias::matches(p.as_bytes(), name.as_bytes()))
                .map(|(_, m)| m.clone())
                .collect();
        }
        out.retain(|m| self.path.contains_key(m));
        out.sort();
        out.dedup();
        out
    }

    /// Whether `name` (a module or an alias of one) is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        let n = norm(name);
        self.builtin.contains(&n) || self.exact.get(&n).is_some_and(|ms| ms.iter().any(|m| self.builtin.contains(m)))
    }

    /// Modules whose device aliases match `modalias`.
    pub fn for_modalias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .filter(|(p, m)| self.path.contains_key(m) && super::alias::matches(p.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Names close to `name`, for an error about a module that does not exist.
    pub fn near(&self, name: &str) -> Vec<String> {
        let n = norm(name);
        let mut scored: Vec<(usize, &String)> = self
            .path
            .keys()
            .filter_map(|k| {
                let d = distance(&n, k);
                (d <= 2.max(n.len() / 4) || k.contains(&n) || n.contains(k.as_str()) && k.len() > 3).then_some((d, k))
            })
            .collect();
        scored.sort();
        scored.into_iter().take(5).map(|(_, k)| k.clone()).collect()
    }
}

/// Edit distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 8 {
        return usize::MAX / 2;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> ModuleIndex {
        let mut ix = ModuleIndex::default();
        ix.parse_dep(
            "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
             kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n\
             kernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko.zst:\n\
             kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\nkernel/drivers/ata/libahci.ko:\n",
        )
        .unwrap();
        ix.parse_alias(
            "alias crypto-crc32c crc32c_generic\nalias crypto-crc32c crc32c_intel\nalias fs-ext4 ext4\n\
             alias pci:v*d*sv*sd*bc01sc06i01* ahci\n",
        );
        ix.parse_softdep("# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep cifs gcm\n");
        ix.builtin = ["efivarfs".to_owned()].into();
        ix
    }

    #[test]
    fn names_aliases_softdeps_builtins() {
        let ix = sample();
        assert_eq!(ix.resolve("crypto-crc32c"), ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(ix.resolve("crc32c-intel"), ["crc32c_intel"]);
        assert_eq!(ix.resolve("fs-ext4"), ["ext4"]);
        assert_eq!(ix.softdeps["ext4"].pre, ["crypto-crc32c"]);
        assert_eq!(ix.softdeps["cifs"].pre, ["gcm"]);
        assert!(ix.is_builtin("efivarfs") && !ix.is_builtin("ext4"));
        assert_eq!(ix.for_modalias("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"), ["ahci"]);
        assert_eq!(ix.near("ext5"), ["ext4"]);
        assert_eq!(ix.deps["ext4"], ["jbd2", "mbcache", "crc16"]);
    }

    #[test]
    fn bad_modules_dep_is_an_error_naming_the_line() {
        let mut ix = ModuleIndex::default();
        let e = ix.parse_dep("kernel/a.ko:\nbroken line\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = ix.parse_dep("kernel/a.ko: ../../etc/x.ko\n").unwrap_err().to_string();
        assert!(e.contains("bad path"), "{e}");
        let d = std::env::temp_dir().join(format!("lb-nodep-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = ModuleIndex::load(&crate::files::Dir::open(&d).unwrap()).unwrap_err().to_string();
        assert!(e.contains("modules.dep is missing") && e.contains("depmod"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
