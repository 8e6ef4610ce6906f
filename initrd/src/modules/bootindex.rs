//! The module index the rescue initrd carries (`lib/modules/lifeboat.index`):
//! for the modules in it only, what PID 1 needs to load them the way udev and
//! modprobe would — each module's file and whether the kernel decompresses it,
//! its hard dependencies, its soft dependencies already resolved to modules in
//! the initrd, the device aliases that ask for it, and the modules to load at
//! every boot. A small text file, so PID 1 needs no depmod binary formats.
//!
//! ```text
//! module NAME PATH [compressed]
//! dep NAME DEP...
//! pre NAME MOD...            post NAME MOD...
//! alias PATTERN NAME
//! always NAME
//! ```

use std::collections::BTreeMap;

use super::alias;

/// Where the index lives in the initrd.
pub const BOOT_INDEX: &str = "lib/modules/lifeboat.index";

/// One module of the initrd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootModule {
    /// Path inside the initrd (relative to `/`).
    pub path: String,
    /// Load with `MODULE_INIT_COMPRESSED_FILE` (the kernel decompresses it).
    pub compressed: bool,
    pub deps: Vec<String>,
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootIndex {
    pub modules: BTreeMap<String, BootModule>,
    pub aliases: Vec<(String, String)>,
    pub always: Vec<String>,
}

impl BootIndex {
    pub fn render(&self) -> String {
        let mut s = String::from("# lifeboat module index 1\n");
        for (n, m) in &self.modules {
            s.push_str(&format!("module {n} {}{}\n", m.path, if m.compressed { " compressed" } else { "" }));
            for (k, v) in [("dep", &m.deps), ("pre", &m.pre), ("post", &m.post)] {
                if !v.is_empty() {
                    s.push_str(&format!("{k} {n} {}\n", v.join(" ")));
                }
            }
        }
        for (p, n) in &self.aliases {
            s.push_str(&format!("alias {p} {n}\n"));
        }
        for n in &self.always {
            s.push_str(&format!("always {n}\n"));
        }
        s
    }

    /// Parses an index; lines it does not understand are skipped (an index from
    /// a newer lifeboat still loads what this one knows).
    pub fn parse(text: &str) -> BootIndex {
        let mut ix = BootIndex::default();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["module", n, p, rest @ ..] => {
                    let m = ix.modules.entry(n.to_string()).or_default();
                    m.path = p.to_string();
                    m.compressed = rest.contains(&"compressed");
                }
                ["dep", n, ds @ ..] => ix.modules.entry(n.to_string()).or_default().deps = words(ds),
                ["pre", n, ds @ ..] => ix.modules.entry(n.to_string()).or_default().pre = words(ds),
                ["post", n, ds @ ..] => ix.modules.entry(n.to_string()).or_default().post = words(ds),
                ["alias", p, n] => ix.aliases.push((p.to_string(), n.to_string())),
                ["always", n] => ix.always.push(n.to_string()),
                _ => {}
            }
        }
        ix.modules.retain(|_, m| !m.path.is_empty());
        ix
    }

    /// Modules whose aliases match a device's `modalias`.
    pub fn for_modalias(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(p, _)| alias::matches(p.as_bytes(), modalias.as_bytes()))
            .map(|(_, n)| n.as_str())
            .filter(|n| self.modules.contains_key(*n))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The order to load `name` in: pre-softdeps and dependencies first, then
    /// the module, then post-softdeps; each once, cycles cut.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        self.order_into(name, &mut out, &mut seen);
        out
    }

    fn order_into(&self, name: &str, out: &mut Vec<String>, seen: &mut Vec<String>) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_owned());
        let Some(m) = self.modules.get(name) else { return };
        for d in m.pre.iter().chain(&m.deps) {
            self.order_into(d, out, seen);
        }
        out.push(name.to_owned());
        for d in &m.post {
            self.order_into(d, out, seen);
        }
    }
}

fn words(ds: &[&str]) -> Vec<String> {
    ds.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let mut ix = BootIndex::default();
        let m = |p: &str, deps: &[&str], pre: &[&str]| BootModule {
            path: p.into(),
            compressed: p.ends_with(".zst"),
            deps: words(deps),
            pre: words(pre),
            post: vec![],
        };
        ix.modules.insert("ext4".into(), m("lib/modules/k/ext4.ko", &["jbd2"], &["crc32c_generic"]));
        ix.modules.insert("jbd2".into(), m("lib/modules/k/jbd2.ko.zst", &[], &[]));
        ix.modules.insert("crc32c_generic".into(), m("lib/modules/k/crc32c_generic.ko", &[], &["ext4"]));
        ix.aliases.push(("fs-ext4".into(), "ext4".into()));
        ix.always.push("ext4".into());
        let back = BootIndex::parse(&ix.render());
        assert_eq!(back, ix);
        assert_eq!(back.load_order("ext4"), ["crc32c_generic", "jbd2", "ext4"]);
        assert_eq!(back.for_modalias("fs-ext4"), ["ext4"]);
        assert!(BootIndex::parse("module x\ngarbage\n").modules.is_empty());
    }
}
