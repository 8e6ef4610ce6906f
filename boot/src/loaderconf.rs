//! `loader.conf` on the ESP: lifeboat owns the `default` and `timeout` keys and
//! keeps every other line, comment and blank exactly as it was (clr-boot-manager
//! rewrote the whole file and lost users' settings).

/// Sets `key` to `value` (or removes it for `None`): the first occurrence is
/// rewritten in place, later duplicates removed, a missing key appended. Returns the
/// new text; identical input and output mean nothing needs writing.
pub fn set_key(text: &str, key: &str, value: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let is_key = t.split([' ', '\t']).next() == Some(key) && !t.starts_with('#');
        if is_key {
            if !done {
                if let Some(v) = value {
                    out.push_str(key);
                    out.push(' ');
                    out.push_str(v);
                    out.push('\n');
                }
                done = true;
            }
            continue;
        }
        out.push_str(line);
    }
    if !done {
        if let Some(v) = value {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(key);
            out.push(' ');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

/// Sets `key` in `loader/loader.conf` on `esp` (crash-safe replace), keeping
/// every other line; writes nothing when the value is already there. A file that
/// cannot be read is an error, never treated as empty — that would lose the
/// user's settings.
pub fn set_on(esp: &mut dyn lifeboat_esp::Volume, key: &str, value: Option<&str>) -> crate::Result<bool> {
    recover_esp(esp)?;
    let old = match esp.read("loader/loader.conf") {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(lifeboat_esp::Error::NotFound { .. }) => String::new(),
        Err(e) => return Err(e.into()),
    };
    let new = set_key(&old, key, value);
    if new == old {
        return Ok(false);
    }
    esp.create_dir_all("loader")?;
    esp.replace("loader/loader.conf", &mut new.as_bytes())?;
    Ok(true)
}

/// Finishes or discards the replacements a crash interrupted in every ESP
/// directory lifeboat writes (`loader/`, `loader/entries/`, `EFI/systemd/`,
/// `EFI/BOOT/`), so a complete `.lbnew` of `loader.conf` or the loader takes its
/// name before anything reads it. Returns what was done.
pub fn recover_esp(esp: &mut dyn lifeboat_esp::Volume) -> crate::Result<Vec<String>> {
    let mut done = Vec::new();
    for d in ["loader", "loader/entries", "EFI/systemd", "EFI/BOOT"] {
        done.extend(esp.recover(d)?);
    }
    Ok(done)
}

/// The value of `key`, if set.
pub fn get_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let t = l.trim();
        if t.starts_with('#') {
            return None;
        }
        let (k, v) = t.split_once([' ', '\t'])?;
        (k == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_else() {
        let t = "# my settings\ntimeout 3\nconsole-mode max\n#default foo\ndefault old\neditor no\ndefault again\n";
        let n = set_key(t, "default", Some("lb-*"));
        assert_eq!(n, "# my settings\ntimeout 3\nconsole-mode max\n#default foo\ndefault lb-*\neditor no\n");
        assert_eq!(set_key(&n, "default", Some("lb-*")), n);
        assert_eq!(set_key("editor no", "timeout", Some("5")), "editor no\ntimeout 5\n");
        assert_eq!(set_key("timeout 5\n", "timeout", None), "");
        assert_eq!(get_key(&n, "default"), Some("lb-*"));
        assert_eq!(get_key(&n, "beep"), None);
    }
}
