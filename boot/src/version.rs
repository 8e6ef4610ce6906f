//! Version comparison of the UAPI Version Format Specification (UAPI.10), as
//! systemd's `strverscmp_improved` implements it: the order `bootctl` and
//! systemd-boot sort entries in.

use std::cmp::Ordering;

fn valid(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Compares two version strings (`a < b` means `a` is older).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    loop {
        while i < a.len() && !valid(a[i]) {
            i += 1;
        }
        while j < b.len() && !valid(b[j]) {
            j += 1;
        }
        // '~' marks a pre-release: older than anything else, even the end.
        if at(a, i) == b'~' || at(b, j) == b'~' {
            let o = (at(a, i) != b'~').cmp(&(at(b, j) != b'~'));
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
        if i >= a.len() || j >= b.len() {
            return a[i.min(a.len())..].cmp(&b[j.min(b.len())..]);
        }
        for sep in [b'-', b'^', b'.'] {
            if at(a, i) == sep || at(b, j) == sep {
                let o = (at(a, i) != sep).cmp(&(at(b, j) != sep));
                if o != Ordering::Equal {
                    return o;
                }
                i += 1;
                j += 1;
            }
        }
        if at(a, i).is_ascii_digit() || at(b, j).is_ascii_digit() {
            let ea = i + a[i.min(a.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
            let eb = j + b[j.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
            // A numeric segment is newer than a missing one.
            let o = (ea > i).cmp(&(eb > j));
            if o != Ordering::Equal {
                return o;
            }
            while i < ea && a[i] == b'0' {
                i += 1;
            }
            while j < eb && b[j] == b'0' {
                j += 1;
            }
            let o = (ea - i).cmp(&(eb - j)).then_with(|| a[i..ea].cmp(&b[j..eb]));
            if o != Ordering::Equal {
                return o;
            }
            i = ea;
            j = eb;
        } else {
            let ea = i + a[i.min(a.len())..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let eb = j + b[j.min(b.len())..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let n = (ea - i).min(eb - j);
            let o = a[i..i + n].cmp(&b[j..j + n]).then((ea - i).cmp(&(eb - j)));
            if o != Ordering::Equal {
                return o;
            }
            i = ea;
            j = eb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn specification_examples() {
        for (a, b, o) in [
            ("11", "22", Less),
            ("122", "123", Less),
            ("122.1", "123", Less),
            ("123a", "123", Greater),
            ("123a", "123b", Less),
            ("123~rc1", "123", Less),
            ("123~rc1", "123~rc2", Less),
            ("123^post1", "123", Greater),
            ("123^post1", "123.1", Less),
            ("123-1", "123.1", Less),
            ("00123", "123", Equal),
            ("5.2-1", "5.10-1", Less),
            ("", "0", Less),
            ("a", "", Greater),
            ("1.0", "1.0", Equal),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }
}
