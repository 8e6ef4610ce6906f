//! Before handing over, PID 1 checks that the real init can run: the file exists
//! inside the new root (symlinks resolved as if chrooted there), and its ELF
//! interpreter (the dynamic loader) or `#!` interpreter exists too. mkinitcpio's init
//! execs regardless, and a system without glibc ends in a kernel panic; lifeboat
//! explains and opens the rescue shell instead.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Resolves `path` inside `root` as the kernel would after `chroot(root)`:
/// absolute symlink targets are relative to `root`, `..` never leaves it.
pub fn resolve_in(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let mut cur = root.to_path_buf();
        cur.extend(&parts);
        cur.push(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("{}: too many levels of symbolic links", path.display()));
                }
                let t = fs::read_link(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
                if t.is_absolute() {
                    parts.clear();
                }
                for comp in t.components().rev() {
                    match comp {
                        Component::Normal(n) => todo.push(n.to_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => parts.push(c),
            Err(_) => {
                let mut shown = PathBuf::from("/");
                shown.extend(&parts);
                shown.push(&c);
                return Err(format!("{} does not exist", shown.display()));
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    Ok(out)
}

/// The `PT_INTERP` of an ELF file, if it has one.
pub fn elf_interp(data: &[u8]) -> Option<String> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return None;
    }
    let u16at = |o: usize| Some(u16::from_le_bytes([*data.get(o)?, *data.get(o + 1)?]) as usize);
    let u64at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?) as usize);
    let phoff = u64at(0x20)?;
    let phentsize = u16at(0x36)?;
    let phnum = u16at(0x38)?;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let ty = u32::from_le_bytes(data.get(ph..ph + 4)?.try_into().ok()?);
        if ty == 3 {
            let off = u64at(ph + 8)?;
            let size = u64at(ph + 32)?;
            let s = data.get(off..off.checked_add(size)?)?;
            let s = s.split(|&b| b == 0).next()?;
            return std::str::from_utf8(s).ok().map(str::to_owned);
        }
    }
    None
}

/// The `DT_NEEDED` libraries and `DT_RUNPATH`/`DT_RPATH` of an ELF file.
pub fn elf_needed(data: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return None;
    }
    let u16at = |o: usize| Some(u16::from_le_bytes([*data.get(o)?, *data.get(o + 1)?]) as usize);
    let u64at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64at(0x20)? as usize;
    let phentsize = u16at(0x36)?;
    let phnum = u16at(0x38)?;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let ty = u32::from_le_bytes(data.get(ph..ph + 4)?.try_into().ok()?);
        let off = u64at(ph + 8)?;
        let vaddr = u64at(ph + 16)?;
        let filesz = u64at(ph + 32)?;
        match ty {
            1 => loads.push((vaddr, off, filesz)),
            2 => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let (doff, dsize) = dynamic?;
    let to_off =
        |va: u64| loads.iter().find(|(v, _, sz)| va >= *v && va < v + sz).map(|(v, o, _)| (va - v + o) as usize);
    let (mut strtab, mut needed, mut paths) = (None, Vec::new(), Vec::new());
    let mut k = 0u64;
    while k + 16 <= dsize.min(1 << 20) {
        let at = (doff + k) as usize;
        let tag = u64at(at)?;
        let val = u64at(at + 8)?;
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => strtab = to_off(val),
            15 | 29 => paths.push(val),
            _ => {}
        }
        k += 16;
    }
    let strtab = strtab?;
    let s = |o: u64| -> Option<String> {
        let start = strtab.checked_add(o as usize)?;
        let bytes = data.get(start..)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
    };
    let needed = needed.into_iter().filter_map(s).collect();
    let runpath =
        paths.into_iter().filter_map(s).flat_map(|p| p.split(':').map(str::to_owned).collect::<Vec<_>>()).collect();
    Some((needed, runpath))
}

/// Library directories of a root: the standard ones and those of `etc/ld.so.conf`.
fn lib_dirs(root: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut confs = vec![root.join("etc/ld.so.conf")];
    if let Ok(rd) = fs::read_dir(root.join("etc/ld.so.conf.d")) {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        confs.extend(v);
    }
    for c in confs {
        for line in fs::read_to_string(c).unwrap_or_default().lines() {
            let l = line.trim();
            if l.starts_with('/') {
                dirs.push(l.to_owned());
            }
        }
    }
    dirs
}

/// Checks that every library `data` needs (recursively, a few levels) resolves.
fn check_libs(root: &Path, data: &[u8], who: &str, depth: usize) -> Result<(), String> {
    let Some((needed, runpath)) = elf_needed(data) else {
        return Ok(());
    };
    let dirs: Vec<String> = runpath.into_iter().filter(|p| !p.contains('$')).chain(lib_dirs(root)).collect();
    for lib in needed {
        let found = dirs.iter().find_map(|d| resolve_in(root, &Path::new(d).join(&lib)).ok());
        match found {
            Some(p) if depth < 3 => {
                if let Ok(d) = fs::read(&p) {
                    check_libs(root, &d, &lib, depth + 1)?;
                }
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "{who} needs {lib}, which is in none of {} (the C library is damaged: try `repair`)",
                    dirs.join(", ")
                ))
            }
        }
    }
    Ok(())
}

/// Checks that `init` can be executed in `root`; returns a description of what it
/// found (`static`, `dynamic via ...`, `script via ...`).
pub fn check_init(root: &Path, init: &Path) -> Result<String, String> {
    let real = resolve_in(root, init).map_err(|e| format!("init {}: {e}", init.display()))?;
    let mut head = vec![0u8; 64 * 1024];
    let n = fs::File::open(&real)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("init {}: {e}", init.display()))?;
    head.truncate(n);
    if head.starts_with(b"#!") {
        let line = head[2..].split(|&b| b == b'\n').next().unwrap_or(&[]);
        let interp = String::from_utf8_lossy(line).split_whitespace().next().unwrap_or("").to_owned();
        resolve_in(root, Path::new(&interp))
            .map_err(|e| format!("init {} is a script for {interp}, but {e}", init.display()))?;
        return Ok(format!("script run by {interp}"));
    }
    if !head.starts_with(b"\x7fELF") {
        return Err(format!("init {} is neither an ELF program nor a script", init.display()));
    }
    // The interpreter may sit beyond the first 64 KiB only in odd files: read all.
    let data = if elf_interp(&head).is_none() && n == head.capacity() { fs::read(&real).unwrap_or(head) } else { head };
    match elf_interp(&data) {
        None => Ok("static program".into()),
        Some(interp) => {
            resolve_in(root, Path::new(&interp)).map_err(|e| {
                format!(
                    "init {} needs the dynamic loader {interp}, but {e} (the C library is damaged: try `repair`)",
                    init.display()
                )
            })?;
            check_libs(root, &data, &format!("init {}", init.display()), 0)?;
            Ok(format!("dynamic program, loader {interp}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_chroot() {
        let r = std::env::temp_dir().join(format!("lb-res-{}", std::process::id()));
        let _ = fs::remove_dir_all(&r);
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("lib64")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", r.join("usr/lib/escape")).unwrap();
        fs::write(r.join("usr/bin/init"), b"#!/bin/sh\n").unwrap();
        fs::write(r.join("usr/lib/ld.so"), b"x").unwrap();
        assert_eq!(resolve_in(&r, Path::new("/bin/init")).unwrap(), r.join("usr/bin/init"));
        assert_eq!(resolve_in(&r, Path::new("/lib64/ld.so")).unwrap(), r.join("usr/lib/ld.so"));
        // `..` stops at the root, so the escape resolves inside it (and is absent).
        assert_eq!(resolve_in(&r, Path::new("/usr/lib/escape")).unwrap_err(), "/etc does not exist");
        assert!(check_init(&r, Path::new("/bin/init")).unwrap_err().contains("/bin/sh"));
        fs::write(r.join("usr/bin/sh"), b"\x7fELF").unwrap();
        assert!(check_init(&r, Path::new("/bin/init")).is_ok());
        fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn reads_pt_interp_of_a_real_binary() {
        let ls = fs::read("/bin/ls").unwrap();
        let i = elf_interp(&ls).unwrap();
        assert!(i.contains("ld-linux"), "{i}");
        let (needed, _) = elf_needed(&ls).unwrap();
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
        // The host's own root satisfies /bin/ls.
        assert!(check_init(Path::new("/"), Path::new("/bin/ls")).is_ok());
        assert_eq!(elf_interp(b"\x7fELF\x02\x01garbage"), None);
    }
}
