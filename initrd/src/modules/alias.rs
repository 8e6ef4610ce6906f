//! Matching a device's `modalias` against the patterns of `modules.alias`, as
//! modprobe does: shell-style globs with `*`, `?` and `[...]` classes (`[!...]`
//! negated), nothing else special.

/// Whether `text` matches the glob `pat`.
pub fn matches(pat: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear in practice and
    // never recursive, whatever a hostile pattern holds.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&pat[p..], text[t]) {
                        if ok {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unclosed `[` is a literal.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pat`: (matches `c`, length of the class), or
/// `None` when it is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&b) = pat.get(i) {
        if b == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&e| e != b']') {
            let e = pat[i + 2];
            hit |= b <= c && c <= e;
            i += 3;
        } else {
            hit |= b == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn modprobe_globs() {
        let ahci = b"pci:v00008086d*sv*sd*bc01sc06i01*";
        assert!(matches(ahci, b"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"));
        assert!(!matches(ahci, b"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i00"));
        assert!(matches(b"virtio:d00000002v*", b"virtio:d00000002v00001AF4"));
        assert!(matches(b"scsi:t-0x00*", b"scsi:t-0x00"));
        assert!(matches(b"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", b"usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"));
        assert!(matches(b"a[0-9]b", b"a5b") && !matches(b"a[!0-9]b", b"a5b") && matches(b"a[!0-9]b", b"axb"));
        assert!(matches(b"a?c", b"abc") && !matches(b"a?c", b"ac"));
        assert!(matches(b"[x", b"[x"));
        assert!(matches(b"**", b"") && !matches(b"", b"x"));
        // A hostile pattern stays fast.
        let p = [b'*', b'a'].repeat(50);
        assert!(matches(&p, &[b'a'; 60]) && !matches(&p, &[b'a'; 49]));
    }
}
