//! Boot Loader Specification Type #1 entries: parsing and rendering that keep every
//! line (comments, unknown keys, repeated `initrd` and `options`), the boot-counter
//! suffix of entry file names, and the sort order systemd-boot and `bootctl` use.

use std::cmp::Ordering;

use crate::version;

/// One line of an entry file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A key and its value (value with surrounding blanks removed).
    Pair(String, String),
    /// A comment, blank line, or a line without a value, kept verbatim.
    Other(String),
}

/// A parsed entry file. Rendering a parsed file gives back its bytes, except that
/// key/value separators are normalised to one space and a final newline is added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub lines: Vec<Line>,
}

impl Entry {
    pub fn parse(text: &str) -> Entry {
        let mut lines = Vec::new();
        for raw in text.lines() {
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            match t.split_once([' ', '\t']) {
                Some((k, v)) if !v.trim().is_empty() => lines.push(Line::Pair(k.to_owned(), v.trim().to_owned())),
                _ => lines.push(Line::Other(raw.to_owned())),
            }
        }
        Entry { lines }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Pair(k, v) => {
                    s.push_str(k);
                    s.push(' ');
                    s.push_str(v);
                }
                Line::Other(o) => s.push_str(o),
            }
            s.push('\n');
        }
        s
    }

    /// The last value of a single-valued key (the specification's rule for repeats).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Pair(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Every value of a repeatable key, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Pair(k, v) if k == key => Some(v.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Adds `key value`. A control character in the value — a newline in an
    /// os-release field, a moss summary — is written escaped (`\n`), never
    /// raw: raw, it would end the line and start a key of its own (`options`)
    /// for the loader, which also ends lines at `\r`.
    pub fn push(&mut self, key: &str, value: &str) {
        self.lines.push(Line::Pair(key.to_owned(), lifeboat_fs::shown::controls_escaped(value)));
    }

    /// All `options` lines joined, as the loader passes them.
    pub fn options(&self) -> String {
        self.all("options").join(" ")
    }
}

/// A boot counter in a file name: `+LEFT[-DONE]` before the suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    pub left: u32,
    pub done: u32,
}

/// Splits `name+3-1.conf` into (`name`, counter) for the given suffix. Names
/// without a valid counter come back whole (without the suffix).
pub fn split_counter<'a>(file: &'a str, suffix: &str) -> Option<(&'a str, Option<Counter>)> {
    let stem = file.strip_suffix(suffix).or_else(|| {
        let n = file.len().checked_sub(suffix.len())?;
        file.get(n..)?.eq_ignore_ascii_case(suffix).then(|| &file[..n])
    })?;
    let Some(plus) = stem.rfind('+') else {
        return Some((stem, None));
    };
    let tail = &stem[plus + 1..];
    let (l, d) = match tail.split_once('-') {
        Some((l, d)) => (l, Some(d)),
        None => (tail, None),
    };
    let num =
        |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten();
    match (num(l), d.map(num)) {
        (Some(left), None) => Some((&stem[..plus], Some(Counter { left, done: 0 }))),
        (Some(left), Some(Some(done))) => Some((&stem[..plus], Some(Counter { left, done }))),
        _ => Some((stem, None)),
    }
}

/// What the sort order needs of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortInfo {
    /// The entry id: its file name, lowercased (counter included, as systemd-boot
    /// 252 keeps it).
    pub id: String,
    pub sort_key: Option<String>,
    pub machine_id: Option<String>,
    pub version: Option<String>,
    pub counter: Option<Counter>,
}

impl SortInfo {
    pub fn of(file_name: &str, e: &Entry) -> SortInfo {
        SortInfo {
            id: file_name.to_lowercase(),
            sort_key: e.get("sort-key").map(str::to_owned),
            machine_id: e.get("machine-id").map(str::to_owned),
            version: e.get("version").map(str::to_owned),
            counter: split_counter(file_name, ".conf").and_then(|(_, c)| c),
        }
    }
}

/// The Boot Loader Specification order (systemd-boot's `config_entry_compare`):
/// entries out of tries last; entries with a sort key before those without; then
/// sort key, machine id, version (newest first), id (newest first), more tries left
/// first, fewer tries done first.
pub fn compare(a: &SortInfo, b: &SortInfo) -> Ordering {
    let exhausted = |s: &SortInfo| s.counter.is_some_and(|c| c.left == 0);
    let o = exhausted(a).cmp(&exhausted(b));
    if o != Ordering::Equal {
        return o;
    }
    let o = a.sort_key.is_none().cmp(&b.sort_key.is_none());
    if o != Ordering::Equal {
        return o;
    }
    if let (Some(ka), Some(kb)) = (&a.sort_key, &b.sort_key) {
        let o = ka.cmp(kb).then_with(|| a.machine_id.cmp(&b.machine_id)).then_with(|| {
            version::compare(a.version.as_deref().unwrap_or(""), b.version.as_deref().unwrap_or("")).reverse()
        });
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = version::compare(&a.id, &b.id).reverse();
    if o != Ordering::Equal {
        return o;
    }
    match (a.counter, b.counter) {
        (Some(ca), Some(cb)) => cb.left.cmp(&ca.left).then(ca.done.cmp(&cb.done)),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_everything() {
        let text = "# written by someone\ntitle  Fedora Linux\nversion 6.5\ninitrd /a\ninitrd /b\noptions root=x\noptions quiet\nx-unknown-key value\n\n";
        let e = Entry::parse(text);
        assert_eq!(e.all("initrd"), ["/a", "/b"]);
        assert_eq!(e.options(), "root=x quiet");
        assert_eq!(e.get("x-unknown-key"), Some("value"));
        assert_eq!(e.render(), text.replace("title  Fedora", "title Fedora"));
    }

    #[test]
    fn a_value_never_adds_a_line() {
        let mut e = Entry::default();
        e.push("title", "Evil\roptions init=/bin/sh\ntitle x\u{85}\u{1b}[2J");
        e.push("options", "root=LABEL=a\\x20b quiet");
        let text = e.render();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert_eq!(Entry::parse(&text).get("title"), Some("Evil\\roptions init=/bin/sh\\ntitle x\\302\\205\\033[2J"));
        assert_eq!(Entry::parse(&text).options(), "root=LABEL=a\\x20b quiet", "a backslash of the kernel's stays");
    }

    #[test]
    fn counters() {
        assert_eq!(split_counter("a+3-1.conf", ".conf"), Some(("a", Some(Counter { left: 3, done: 1 }))));
        assert_eq!(split_counter("a+3.conf", ".conf"), Some(("a", Some(Counter { left: 3, done: 0 }))));
        assert_eq!(split_counter("a+x.conf", ".conf"), Some(("a+x", None)));
        assert_eq!(split_counter("a-1.conf", ".conf"), Some(("a-1", None)));
        assert_eq!(split_counter("A.CONF", ".conf"), Some(("A", None)));
        assert_eq!(split_counter("a.efi", ".conf"), None);
    }

    #[test]
    fn order() {
        let mk = |id: &str, v: &str, c: Option<(u32, u32)>| SortInfo {
            id: id.into(),
            sort_key: Some("os".into()),
            machine_id: Some("m".into()),
            version: Some(v.into()),
            counter: c.map(|(left, done)| Counter { left, done }),
        };
        let mut v = [mk("t-2.conf", "2", None), mk("t-10.conf", "10", None), mk("t-11.conf", "11", Some((0, 3)))];
        v.sort_by(compare);
        let ids: Vec<_> = v.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["t-10.conf", "t-2.conf", "t-11.conf"]);
    }
}
