//! Identity of an installation on a shared ESP: the entry token (kernel-install's
//! rules), the machine id, and os-release fields for titles and sort keys.

use std::os::fd::AsFd;
use std::path::Path;

/// Reads a small file of the root `root` as the root sees it (symlinks
/// resolved inside it, a regular file only, never waiting on a FIFO): these are
/// the machine's files, not lifeboat's.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let dir = lifeboat_fs::open_dir(root).ok()?;
    let f = lifeboat_fs::foreign::open_file_in_root(dir.as_fd(), rel.as_bytes()).ok()?;
    let b = lifeboat_fs::foreign::read_capped(f, 64 * 1024).ok()?;
    String::from_utf8(b).ok()
}

/// Key/value pairs of an os-release file (quotes and escapes removed).
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        let mut s = String::new();
        let mut esc = false;
        for c in v.chars() {
            if esc {
                s.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                s.push(c);
            }
        }
        out.push((k.trim().to_owned(), s));
    }
    out
}

/// The os-release of a system root: `etc/os-release`, else `usr/lib/os-release`.
pub fn os_release(root: &Path) -> Vec<(String, String)> {
    for p in ["etc/os-release", "usr/lib/os-release"] {
        if let Some(t) = read_in_root(root, p) {
            return parse_os_release(&t);
        }
    }
    Vec::new()
}

pub fn field<'a>(os: &'a [(String, String)], key: &str) -> Option<&'a str> {
    os.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// A valid machine id: 32 lowercase hex digits, not all zero.
pub fn machine_id(root: &Path) -> Option<String> {
    let t = read_in_root(root, "etc/machine-id")?;
    let t = t.trim().to_ascii_lowercase();
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) && t.bytes().any(|b| b != b'0')).then_some(t)
}

/// Characters an entry token may hold (it becomes part of file names on FAT).
fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !t.starts_with('.')
}

/// The entry token, by kernel-install's rules: `/etc/kernel/entry-token`, else the
/// machine id, else os-release `IMAGE_ID`, else `ID`. Lowercased, since
/// systemd-boot lowercases entry ids before matching.
pub fn entry_token(root: &Path) -> Option<String> {
    if let Some(t) = read_in_root(root, "etc/kernel/entry-token") {
        let t = t.lines().next().unwrap_or("").trim().to_ascii_lowercase();
        if token_ok(&t) {
            return Some(t);
        }
    }
    if let Some(m) = machine_id(root) {
        return Some(m);
    }
    let os = os_release(root);
    for k in ["IMAGE_ID", "ID"] {
        if let Some(v) = field(&os, k) {
            let v = v.to_ascii_lowercase();
            if token_ok(&v) {
                return Some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn os_release_quoting() {
        let os = parse_os_release("NAME=\"Aeryn OS\"\nID=aerynos\n# c\nPRETTY_NAME='A \\\"q\\\"'\nBAD\n");
        assert_eq!(field(&os, "NAME"), Some("Aeryn OS"));
        assert_eq!(field(&os, "ID"), Some("aerynos"));
        assert_eq!(field(&os, "PRETTY_NAME"), Some("A \"q\""));
    }

    #[test]
    fn token_rules() {
        let d = std::env::temp_dir().join(format!("lb-tok-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("etc/kernel")).unwrap();
        fs::create_dir_all(d.join("usr/lib")).unwrap();
        fs::write(d.join("usr/lib/os-release"), "ID=demo\nIMAGE_ID=demoimg\n").unwrap();
        assert_eq!(entry_token(&d).as_deref(), Some("demoimg"));
        fs::write(d.join("etc/machine-id"), "0123456789ABCDEF0123456789abcdef\n").unwrap();
        assert_eq!(entry_token(&d).as_deref(), Some("0123456789abcdef0123456789abcdef"));
        fs::write(d.join("etc/kernel/entry-token"), "MyToken\n").unwrap();
        assert_eq!(entry_token(&d).as_deref(), Some("mytoken"));
        fs::write(d.join("etc/kernel/entry-token"), "../evil\n").unwrap();
        assert_eq!(entry_token(&d).as_deref(), Some("0123456789abcdef0123456789abcdef"));
        // A FIFO where a file is expected is passed over, not waited on; a
        // symlink is resolved inside the root.
        fs::remove_file(d.join("etc/kernel/entry-token")).unwrap();
        nix::unistd::mkfifo(&d.join("etc/kernel/entry-token"), nix::sys::stat::Mode::from_bits_truncate(0o644))
            .unwrap();
        fs::remove_file(d.join("etc/machine-id")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/os-release", d.join("etc/os-release")).unwrap();
        fs::write(d.join("usr/lib/os-release"), "ID=inside\n").unwrap();
        assert_eq!(entry_token(&d).as_deref(), Some("inside"));
        fs::remove_dir_all(&d).unwrap();
    }
}
