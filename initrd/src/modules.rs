//! Kernel modules: resolving names through `modules.dep` (dashes and underscores
//! are the same, as modprobe treats them) and ordering each module after its
//! dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Error, Result};

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/fs/fat/vfat.ko.xz`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    norm(stem)
}

/// Parses `modules.dep`: path -> dependency paths.
pub fn parse_dep(text: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (m, deps) =
            line.split_once(':').ok_or_else(|| Error::Module(format!("modules.dep line {}: no ':'", n + 1)))?;
        let m = m.trim();
        if m.contains("..") || m.starts_with('/') {
            return Err(Error::Module(format!("modules.dep line {}: bad path {m:?}", n + 1)));
        }
        out.insert(m.to_owned(), deps.split_whitespace().map(str::to_owned).collect());
    }
    Ok(out)
}

/// The module paths (relative to `dir`) to load for `names`, dependencies first.
pub fn closure(dir: &Path, names: &[String]) -> Result<Vec<String>> {
    let dep_file = dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file).map_err(|e| Error::Module(format!("{}: {e}", dep_file.display())))?;
    let deps = parse_dep(&text)?;
    let by_name: BTreeMap<String, &String> = deps.keys().map(|p| (module_name(p), p)).collect();
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        p: &str,
        deps: &BTreeMap<String, Vec<String>>,
        order: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(p) {
            return Ok(());
        }
        if stack.iter().any(|s| s == p) {
            return Err(Error::Module(format!("dependency cycle through {p}")));
        }
        stack.push(p.to_owned());
        for d in deps.get(p).into_iter().flatten() {
            visit(d, deps, order, done, stack)?;
        }
        stack.pop();
        done.insert(p.to_owned());
        order.push(p.to_owned());
        Ok(())
    }
    for n in names {
        let p = by_name.get(&norm(n)).ok_or_else(|| {
            Error::Module(format!("module {n} is not in {} (built in, or not built?)", dep_file.display()))
        })?;
        visit(p, &deps, &mut order, &mut done, &mut Vec::new())?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_orders_dependencies_first() {
        let d = std::env::temp_dir().join(format!("lb-mod-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("modules.dep"),
            "kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko kernel/fs/nls/nls_base.ko\nkernel/fs/fat/fat.ko: kernel/fs/nls/nls_base.ko\nkernel/fs/nls/nls_base.ko:\nkernel/drivers/virtio_blk.ko.xz:\n",
        )
        .unwrap();
        let c = closure(&d, &["vfat".into(), "virtio-blk".into()]).unwrap();
        assert_eq!(
            c,
            [
                "kernel/fs/nls/nls_base.ko",
                "kernel/fs/fat/fat.ko",
                "kernel/fs/fat/vfat.ko",
                "kernel/drivers/virtio_blk.ko.xz"
            ]
        );
        assert!(closure(&d, &["nope".into()]).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
