//! An in-memory volume with FAT's case-insensitive names and cluster accounting, so
//! planner tests can fill it up, count writes, and inspect every byte.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::volume::{components, DirEntry, Space, Volume};
use crate::{Error, Result};

#[derive(Clone, Debug)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// A volume held in memory.
#[derive(Clone, Debug)]
pub struct MemVolume {
    /// Lowercased path -> (name as written, node).
    nodes: BTreeMap<String, (String, Node)>,
    pub total: u64,
    pub cluster: u64,
    /// Mutating calls so far (writes, removes, renames, mkdirs).
    pub mutations: u64,
}

impl MemVolume {
    pub fn new(total: u64, cluster: u64) -> Self {
        MemVolume { nodes: BTreeMap::new(), total, cluster, mutations: 0 }
    }

    fn key(path: &str) -> Result<String> {
        Ok(components(path)?.join("/").to_lowercase())
    }

    fn used(&self) -> u64 {
        self.nodes
            .values()
            .map(|(_, n)| match n {
                Node::Dir => self.cluster,
                Node::File(d) => (d.len() as u64).div_ceil(self.cluster) * self.cluster,
            })
            .sum()
    }

    fn parent_exists(&self, key: &str) -> bool {
        match key.rfind('/') {
            None => true,
            Some(i) => matches!(self.nodes.get(&key[..i]), Some((_, Node::Dir))),
        }
    }

    /// Every file with its content (paths as written), for byte-exact comparisons.
    pub fn snapshot(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for (k, (_, n)) in &self.nodes {
            // Rebuild the written path from each component's written name.
            let mut written = Vec::new();
            let mut acc = String::new();
            for c in k.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(c);
                written.push(self.nodes.get(&acc).map(|(n, _)| n.clone()).unwrap_or_default());
            }
            out.insert(
                written.join("/"),
                match n {
                    Node::Dir => None,
                    Node::File(d) => Some(d.clone()),
                },
            );
        }
        out
    }
}

impl Volume for MemVolume {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn list(&mut self, dir: &str) -> Result<Vec<DirEntry>> {
        let k = Self::key(dir)?;
        if !k.is_empty() && !matches!(self.nodes.get(&k), Some((_, Node::Dir))) {
            return Err(Error::NotFound { volume: "memory".into(), path: dir.into() });
        }
        let prefix = if k.is_empty() { String::new() } else { format!("{k}/") };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/'))
            .map(|(_, (name, n))| DirEntry {
                name: name.clone(),
                is_dir: matches!(n, Node::Dir),
                size: match n {
                    Node::Dir => 0,
                    Node::File(d) => d.len() as u64,
                },
            })
            .collect())
    }

    fn stat(&mut self, path: &str) -> Result<Option<DirEntry>> {
        let k = Self::key(path)?;
        if k.is_empty() {
            return Ok(Some(DirEntry { name: String::new(), is_dir: true, size: 0 }));
        }
        Ok(self.nodes.get(&k).map(|(name, n)| DirEntry {
            name: name.clone(),
            is_dir: matches!(n, Node::Dir),
            size: match n {
                Node::Dir => 0,
                Node::File(d) => d.len() as u64,
            },
        }))
    }

    fn read_into(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let k = Self::key(path)?;
        match self.nodes.get(&k) {
            Some((_, Node::File(d))) => {
                out.write_all(d).map_err(|e| Error::io(path, e))?;
                Ok(d.len() as u64)
            }
            _ => Err(Error::NotFound { volume: "memory".into(), path: path.into() }),
        }
    }

    fn create_dir_all(&mut self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let mut acc = String::new();
        for c in comps {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(&c.to_lowercase());
            match self.nodes.get(&acc) {
                Some((_, Node::Dir)) => {}
                Some(_) => return Err(Error::Invalid(format!("{acc} is a file"))),
                None => {
                    self.nodes.insert(acc.clone(), (c.to_owned(), Node::Dir));
                    self.mutations += 1;
                }
            }
        }
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<u64> {
        let k = Self::key(path)?;
        if !self.parent_exists(&k) {
            return Err(Error::NotFound { volume: "memory".into(), path: path.into() });
        }
        let mut buf = Vec::new();
        data.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        let old = match self.nodes.get(&k) {
            Some((_, Node::File(d))) => d.len().div_ceil(self.cluster as usize) as u64 * self.cluster,
            _ => 0,
        };
        let need = (buf.len() as u64).div_ceil(self.cluster) * self.cluster;
        let free = self.total.saturating_sub(self.used()) + old;
        if need > free {
            return Err(Error::NoSpace { volume: "memory".into(), need, free });
        }
        let name = components(path)?.last().map(|s| s.to_string()).unwrap_or_default();
        let n = buf.len() as u64;
        self.nodes.insert(k, (name, Node::File(buf)));
        self.mutations += 1;
        Ok(n)
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let k = Self::key(path)?;
        let prefix = format!("{k}/");
        if self.nodes.keys().any(|p| p.starts_with(&prefix)) {
            return Err(Error::Invalid(format!("{path}: directory not empty")));
        }
        self.nodes.remove(&k).ok_or_else(|| Error::NotFound { volume: "memory".into(), path: path.into() })?;
        self.mutations += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (Self::key(from)?, Self::key(to)?);
        if self.nodes.contains_key(&b) {
            return Err(Error::Invalid(format!("{to} exists")));
        }
        if !self.parent_exists(&b) {
            return Err(Error::NotFound { volume: "memory".into(), path: to.into() });
        }
        let (_, node) =
            self.nodes.remove(&a).ok_or_else(|| Error::NotFound { volume: "memory".into(), path: from.into() })?;
        let name = components(to)?.last().map(|s| s.to_string()).unwrap_or_default();
        self.nodes.insert(b, (name, node));
        self.mutations += 1;
        Ok(())
    }

    /// A directory here is one cluster that never grows.
    fn room_needed(&mut self, _dir: &str, _names: &[String]) -> Result<u64> {
        Ok(0)
    }

    fn space(&mut self) -> Result<Space> {
        Ok(Space { total: self.total, free: self.total.saturating_sub(self.used()), cluster: self.cluster })
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
