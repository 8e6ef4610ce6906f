//! How lifeboat shows a name it did not choose — a file in a tree, a kernel
//! version directory, an os-release field, a moss summary — so that one name is
//! always one name on one line: a newline in a file name must not print as two
//! listing lines, nor write a second line into a boot entry.
//!
//! [`shown`] escapes as `ls -b` does: `\\` for a backslash, `\n`, `\t`, `\r`,
//! `\a`, `\b`, `\f`, `\v`, and `\ooo` (octal, per byte) for every other control
//! character (C0, DEL, and the C1 range a terminal may act on) and for bytes that
//! are not UTF-8. Unlike `ls -b` a space stays a space (the listings separate
//! their columns otherwise). [`controls_escaped`] is the same for a value that
//! is not a path — a BLS `title` or `options` — where a backslash is the
//! writer's own and stays as it is.

use std::fmt::Write;

/// Whether `c` is a character no printed name or BLS value may carry raw.
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// Whether `s` holds such a character.
pub fn has_control(s: &str) -> bool {
    s.chars().any(is_control)
}

fn push_char(out: &mut String, c: char, backslash: bool) {
    match c {
        '\\' if backslash => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\u{b}' => out.push_str("\\v"),
        c if is_control(c) => {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                let _ = write!(out, "\\{byte:03o}");
            }
        }
        c => out.push(c),
    }
}

/// A name (bytes, as the filesystem has them) as lifeboat prints it.
pub fn shown(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c, true);
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\{byte:03o}");
        }
    }
    out
}

/// [`shown`] of a name already in a `str` (a path made lossy elsewhere).
pub fn shown_str(name: &str) -> String {
    shown(name.as_bytes())
}

/// [`shown`] of a path.
pub fn shown_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    shown(p.as_os_str().as_bytes())
}

/// A value with its control characters escaped and everything else, backslashes
/// included, as it is (BLS values, where a backslash may be the kernel's).
pub fn controls_escaped(value: &str) -> String {
    if !has_control(value) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        push_char(&mut out, c, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_one_line_of_printable_text() {
        assert_eq!(shown(b"plain/name with space"), "plain/name with space");
        assert_eq!(shown(b"6.9\noptions X"), "6.9\\noptions X");
        assert_eq!(shown(b"a\\b"), "a\\\\b", "a backslash is escaped, so escapes cannot be forged");
        assert_eq!(shown(b"t\tr\rbell\x07esc\x1b[2Jdel\x7f"), "t\\tr\\rbell\\aesc\\033[2Jdel\\177");
        assert_eq!(shown(b"bad\xff\xfeutf8"), "bad\\377\\376utf8");
        assert_eq!(shown("c1 \u{9b}".as_bytes()), "c1 \\302\\233", "a C1 control (CSI) too");
        assert_eq!(shown("é ünïcode".as_bytes()), "é ünïcode");
        for b in 0u8..=255 {
            let s = shown(&[b'x', b, b'y']);
            assert!(!s.chars().any(char::is_control), "{b:#x} -> {s:?}");
        }
        assert_eq!(controls_escaped("root=LABEL=a\\x20b"), "root=LABEL=a\\x20b");
        assert_eq!(controls_escaped("Evil\roptions x\ny"), "Evil\\roptions x\\ny");
        assert!(has_control("a\u{85}b") && !has_control("a b"));
    }
}
