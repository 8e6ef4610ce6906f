//! The kernel command line as PID 1, the initrd hook and the rescue shell read it:
//! words split on blanks, double quotes grouping (`a="b c"`), and the parameters
//! lifeboat acts on. Bytes that are not UTF-8 never lose the rest of the line.

/// Parsed `/proc/cmdline`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    pub words: Vec<String>,
}

impl KernelCmdline {
    /// `/proc/cmdline`, or an empty line when it cannot be read. Invalid UTF-8 is
    /// replaced, not a reason to drop `root=` and `lifeboat.tx=` with it.
    pub fn from_proc() -> Self {
        Self::parse_bytes(&std::fs::read("/proc/cmdline").unwrap_or_default())
    }

    pub fn parse_bytes(b: &[u8]) -> Self {
        Self::parse(&String::from_utf8_lossy(b))
    }

    pub fn parse(text: &str) -> Self {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut any = false;
        for c in text.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                c if c.is_whitespace() && !quoted => {
                    if any {
                        words.push(std::mem::take(&mut cur));
                        any = false;
                    }
                }
                c => {
                    cur.push(c);
                    any = true;
                }
            }
        }
        if any {
            words.push(cur);
        }
        KernelCmdline { words }
    }

    /// The value of the last `key=value` (later parameters win, as in the kernel).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.iter().rev().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// Whether a bare flag (or `flag=1`/`flag=yes`) is present.
    pub fn flag(&self, key: &str) -> bool {
        self.words.iter().any(|w| {
            w == key
                || w.strip_prefix(key)
                    .and_then(|r| r.strip_prefix('='))
                    .is_some_and(|v| matches!(v, "1" | "yes" | "true" | "on"))
        })
    }

    /// The transaction to boot: `lifeboat.tx=` (or moss's `moss.fstx=`).
    pub fn tx(&self) -> Option<Result<u64, String>> {
        let v = self.get("lifeboat.tx").or_else(|| self.get("moss.fstx"))?;
        Some(v.parse().map_err(|_| v.to_owned()))
    }

    /// A whole number `key=N` no greater than `max`: `default` when the key is
    /// absent; `max` when it is larger (whatever its digits: a number the kernel
    /// passes is never a reason for an overflow in PID 1); `default` when it is
    /// not a whole number. The second value says what was not taken as given,
    /// for the console.
    pub fn number(&self, key: &str, default: u64, max: u64) -> (u64, Option<String>) {
        let Some(v) = self.get(key) else {
            return (default.min(max), None);
        };
        let shown = lifeboat_fs::shown::shown_str(v);
        match v.parse::<u64>() {
            Ok(n) if n <= max => (n, None),
            Ok(_) => (max, Some(format!("{key}={shown} is more than {max}; using {max}"))),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                (max, Some(format!("{key}={shown} is more than {max}; using {max}")))
            }
            Err(_) => (default.min(max), Some(format!("{key}={shown} is not a whole number; using {default}"))),
        }
    }

    /// Read-only root unless `rw` comes after any `ro`.
    pub fn read_only(&self) -> bool {
        self.words.iter().rev().find_map(|w| match w.as_str() {
            "ro" => Some(true),
            "rw" => Some(false),
            _ => None,
        }) == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_and_params() {
        let c = KernelCmdline::parse(
            "BOOT_IMAGE=/v root=PARTUUID=ab-cd ro quiet foo=\"a b\" lifeboat.tx=7 rw lifeboat.repair\n",
        );
        assert_eq!(c.get("root"), Some("PARTUUID=ab-cd"));
        assert_eq!(c.get("foo"), Some("a b"));
        assert_eq!(c.tx(), Some(Ok(7)));
        assert!(c.flag("lifeboat.repair"));
        assert!(!c.flag("lifeboat.shell"));
        assert!(!c.read_only());
        assert_eq!(KernelCmdline::parse("moss.fstx=3 ro").tx(), Some(Ok(3)));
        assert!(KernelCmdline::parse("ro").read_only());
        assert_eq!(KernelCmdline::parse("lifeboat.tx=x").tx(), Some(Err("x".into())));
        assert_eq!(KernelCmdline::parse("").tx(), None);
        let c = KernelCmdline::parse_bytes(b"quiet x=\xff\xfe root=/dev/vda2 lifeboat.tx=4\n");
        assert_eq!((c.get("root"), c.tx()), (Some("/dev/vda2"), Some(Ok(4))));
    }

    #[test]
    fn hostile_numbers_are_bounded_or_refused_with_a_message() {
        let n = |line: &str| KernelCmdline::parse(line).number("lifeboat.rootwait", 30, 86_400);
        assert_eq!(n(""), (30, None));
        assert_eq!(n("lifeboat.rootwait=5"), (5, None));
        assert_eq!(n("lifeboat.rootwait=0"), (0, None));
        assert_eq!(n("lifeboat.rootwait=86400"), (86_400, None));
        for big in ["18446744073709551615", "18446744073709551616", "99999999999999999999999999", "86401"] {
            let (v, note) = n(&format!("lifeboat.rootwait={big}"));
            assert_eq!(v, 86_400, "{big}");
            assert!(note.unwrap().contains("is more than 86400"), "{big}");
        }
        for bad in ["-1", "abc", "", "1e9", "+-3", "0x10", "5s", "\u{1b}[2J"] {
            let (v, note) = n(&format!("lifeboat.rootwait={bad}"));
            assert_eq!(v, 30, "{bad:?}");
            let note = note.unwrap();
            assert!(note.contains("not a whole number") && !note.contains('\u{1b}'), "{note}");
        }
        // Later parameters win, as in the kernel.
        assert_eq!(n("lifeboat.rootwait=x lifeboat.rootwait=7"), (7, None));
        assert_eq!(
            KernelCmdline::parse("lifeboat.tx=18446744073709551616").tx(),
            Some(Err("18446744073709551616".into()))
        );
    }
}
