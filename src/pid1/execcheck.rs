//! Before handing over, PID 1 checks that the real init can run: the file exists
//! inside the new root (symlinks resolved as if chrooted there), and its ELF
//! interpreter (the dynamic loader) or `#!` interpreter exists too. mkinitcpio's init
//! execs regardless, and a system without glibc ends in a kernel panic; lifeboat
//! explains and opens the rescue shell instead.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use lifeboat_fs::foreign;

use super::elf::Elf;

/// ELF files larger than this are not read whole (no library is near it).
const MAX_ELF: u64 = 256 << 20;

/// Reads up to [`MAX_ELF`] bytes of a file of the new root, found by
/// [`resolve_in`] (no symlink left on its last step): through the one door, so
/// a FIFO or a device planted as a library fails the check instead of
/// blocking the boot.
fn read_bounded(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    foreign::open_file(p)?.take(MAX_ELF).read_to_end(&mut out)?;
    Ok(out)
}

/// A small configuration file of the root (`etc/ld.so.conf`), resolved inside
/// it; empty when it cannot be read.
fn read_conf(root: &Path, rel: &[u8]) -> String {
    lifeboat_fs::open_dir(root)
        .and_then(|d| foreign::open_file_in_root(std::os::fd::AsFd::as_fd(&d), rel))
        .and_then(|f| foreign::read_capped(f, 1 << 20))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

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
    let mut confs = vec![b"etc/ld.so.conf".to_vec()];
    if let Ok(rd) = fs::read_dir(root.join("etc/ld.so.conf.d")) {
        use std::os::unix::ffi::OsStrExt;
        let mut v: Vec<Vec<u8>> = rd
            .flatten()
            .map(|e| {
                let mut rel = b"etc/ld.so.conf.d/".to_vec();
                rel.extend_from_slice(e.file_name().as_bytes());
                rel
            })
            .collect();
        v.sort();
        confs.extend(v);
    }
    for c in confs {
        for line in read_conf(root, &c).lines() {
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
    let Some((needed, runpath)) = Elf::parse(data).and_then(|e| e.needed()) else {
        return Ok(());
    };
    let dirs: Vec<String> = runpath.into_iter().filter(|p| !p.contains('$')).chain(lib_dirs(root)).collect();
    for lib in needed {
        let found = dirs.iter().find_map(|d| resolve_in(root, &Path::new(d).join(&lib)).ok());
        match found {
            Some(p) if depth < 3 => {
                if let Ok(d) = read_bounded(&p) {
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
    let n = foreign::open_file(&real)
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
    // The interpreter may sit beyond the first 64 KiB only in odd files: read more.
    let interp_in_head = Elf::parse(&head).is_some_and(|e| e.interp().is_some());
    let data = if !interp_in_head && n == head.capacity() { read_bounded(&real).unwrap_or(head) } else { head };
    let elf = Elf::parse(&data);
    if elf.as_ref().is_some_and(|e| e.has_interp() && e.interp().is_none()) {
        return Err(format!("init {}: its ELF interpreter header cannot be read", init.display()));
    }
    match elf.and_then(|e| e.interp()) {
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
        // A FIFO where the init is: named, never waited on.
        nix::unistd::mkfifo(&r.join("usr/bin/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        let e = check_init(&r, Path::new("/bin/fifo")).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn reads_pt_interp_of_a_real_binary() {
        // The host's own root satisfies /bin/ls, a dynamic program.
        let what = check_init(Path::new("/"), Path::new("/bin/ls")).unwrap();
        assert!(what.contains("ld-linux"), "{what}");
    }
}
