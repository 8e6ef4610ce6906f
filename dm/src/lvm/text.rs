//! lvm2's configuration-text syntax, which its on-disk metadata uses: nested
//! sections `name { ... }`, assignments `key = value`, values that are strings in
//! double quotes (with `\"` and `\\` escapes), integers, floats, or lists
//! `[ v, v, ... ]` of those, and `#` comments to the end of a line. The parser is a
//! depth-limited recursive descent over bytes: the tree it builds is never larger
//! than the input, nesting is capped, and any malformed input is an error with its
//! line number.

use super::LvmError;

/// The largest metadata text accepted. lvm's metadata areas are 1 MiB by
/// default; this leaves room for huge VGs while keeping PID 1's memory bounded.
pub const MAX_TEXT: usize = 16 * 1024 * 1024;
/// Deepest section nesting accepted (lvm metadata uses four levels).
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    /// Kept as written: metadata has no floats lifeboat needs.
    Float(String),
    List(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Value(Value),
    Section(Section),
}

/// A section's entries in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    pub entries: Vec<(String, Node)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key) {
            Some(Node::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key) {
            Some(Node::Section(s)) => Some(s),
            _ => None,
        }
    }

    /// The subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, n)| match n {
            Node::Section(s) => Some((k.as_str(), s)),
            Node::Value(_) => None,
        })
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// A list of strings (`status`, `flags`, `tags`); `None` if absent or not one.
    pub fn str_list(&self, key: &str) -> Option<Vec<String>> {
        match self.value(key) {
            Some(Value::List(l)) => l
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
    line: usize,
}

/// Parses a whole text into its top-level section. A trailing NUL (as stored on
/// disk) ends the text.
pub fn parse(text: &[u8]) -> Result<Section, LvmError> {
    if text.len() > MAX_TEXT {
        return Err(LvmError::Text {
            line: 0,
            why: format!("{} bytes, more than the {MAX_TEXT} accepted", text.len()),
        });
    }
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    let mut p = Parser { b: &text[..end], at: 0, line: 1 };
    p.section_body(0, true)
}

fn is_word(c: u8) -> bool {
    !c.is_ascii_whitespace() && !matches!(c, b'{' | b'}' | b'[' | b']' | b'=' | b',' | b'#' | b'"' | b'\'') && c != 0
}

impl Parser<'_> {
    fn err<T>(&self, why: impl Into<String>) -> Result<T, LvmError> {
        Err(LvmError::Text { line: self.line, why: why.into() })
    }

    /// Skips whitespace and comments.
    fn skip(&mut self) {
        while let Some(&c) = self.b.get(self.at) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b'#' => {
                    while self.b.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                c if c.is_ascii_whitespace() => self.at += 1,
                _ => return,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.b.get(self.at).copied()
    }

    fn word(&mut self) -> Result<String, LvmError> {
        let start = self.at;
        while self.b.get(self.at).is_some_and(|&c| is_word(c)) {
            self.at += 1;
        }
        if start == self.at {
            return self.err(format!("expected a name, found {:?}", self.b.get(self.at).map(|&c| c as char)));
        }
        match std::str::from_utf8(&self.b[start..self.at]) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("a name that is not UTF-8"),
        }
    }

    /// Entries up to the closing `}` (or the end of input at the top level).
    fn section_body(&mut self, depth: usize, top: bool) -> Result<Section, LvmError> {
        let mut s = Section::default();
        loop {
            match self.peek() {
                None if top => return Ok(s),
                None => return self.err("end of text inside a section"),
                Some(b'}') if !top => {
                    self.at += 1;
                    return Ok(s);
                }
                Some(_) => {}
            }
            let key = self.word()?;
            match self.peek() {
                Some(b'{') => {
                    if depth + 1 >= MAX_DEPTH {
                        return self.err(format!("sections nested deeper than {MAX_DEPTH}"));
                    }
                    self.at += 1;
                    let sub = self.section_body(depth + 1, false)?;
                    s.entries.push((key, Node::Section(sub)));
                }
                Some(b'=') => {
                    self.at += 1;
                    let v = self.value(true)?;
                    s.entries.push((key, Node::Value(v)));
                }
                _ => return self.err(format!("expected '=' or '{{' after {key:?}")),
            }
        }
    }

    fn value(&mut self, list_ok: bool) -> Result<Value, LvmError> {
        match self.peek() {
            Some(b'[') if list_ok => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::List(items));
                        }
                        None => return self.err("end of text inside a list"),
                        _ => {}
                    }
                    items.push(self.value(false)?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {}
                        _ => return self.err("expected ',' or ']' in a list"),
                    }
                }
            }
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::Str),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            other => self.err(format!("expected a value, found {:?}", other.map(|c| c as char))),
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, LvmError> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.b.get(self.at) {
                None => return self.err("end of text inside a string"),
                Some(&c) if c == quote => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    // `\x` is x: lvm escapes only quotes and backslashes.
                    match self.b.get(self.at + 1) {
                        Some(&c) => out.push(c),
                        None => return self.err("end of text inside a string"),
                    }
                    self.at += 2;
                }
                Some(&c) => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(out).or_else(|_| self.err("a string that is not UTF-8"))
    }

    fn number(&mut self) -> Result<Value, LvmError> {
        let start = self.at;
        while self.b.get(self.at).is_some_and(|&c| is_word(c)) {
            self.at += 1;
        }
        let t = std::str::from_utf8(&self.b[start..self.at]).unwrap_or("");
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t),
        };
        let parsed = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            i64::from_str_radix(h, 16).ok()
        } else if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse::<i64>().ok()
        } else if !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && digits.bytes().filter(|&c| c == b'.').count() == 1
        {
            return Ok(Value::Float(t.to_string()));
        } else {
            None
        };
        match parsed {
            Some(v) => Ok(Value::Int(if neg { -v } else { v })),
            None => self.err(format!("{t:?} is not a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_metadata_shapes() {
        let t = b"vg0 {\n id = \"a-b\" # comment\n seqno = 12\n flags = []\n status = [\"READ\", 'WRITE']\n\
                  logical_volumes {\n lv-1 {\n stripes = [\n \"pv0\", 0,\n \"pv1\", 0x10\n ]\n } }\n}\n\
                  contents = \"Text \\\"Format\\\" \\\\ VG\"\nversion = 1\nf = -1.5\n\0garbage";
        let top = parse(t).unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.str("id"), Some("a-b"));
        assert_eq!(vg.int("seqno"), Some(12));
        assert_eq!(vg.str_list("flags"), Some(vec![]));
        assert_eq!(vg.str_list("status"), Some(vec!["READ".into(), "WRITE".into()]));
        let lv = vg.section("logical_volumes").unwrap().section("lv-1").unwrap();
        assert_eq!(
            lv.value("stripes"),
            Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0), Value::Str("pv1".into()), Value::Int(16)]))
        );
        assert_eq!(top.str("contents"), Some("Text \"Format\" \\ VG"));
        assert_eq!(top.int("version"), Some(1));
        assert_eq!(top.value("f"), Some(&Value::Float("-1.5".into())));
        assert_eq!(top.sections().count(), 1);
    }

    #[test]
    fn malformed_text_is_an_error_with_its_line() {
        for (t, line) in [
            (&b"a {\n b = \n}"[..], 3),
            (b"a {\n b = 1\n", 3),
            (b"a = [1, 2", 1),
            (b"a = \"open", 1),
            (b"a b", 1),
            (b"a = 12x", 1),
            (b"a = [[1]]", 1),
            (b"}", 1),
            (b"a = 99999999999999999999", 1),
        ] {
            match parse(t) {
                Err(LvmError::Text { line: l, .. }) => assert_eq!(l, line, "{:?}", String::from_utf8_lossy(t)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(t)),
            }
        }
    }

    #[test]
    fn nesting_is_capped() {
        let deep = "a {".repeat(10_000);
        assert!(matches!(parse(deep.as_bytes()), Err(LvmError::Text { .. })));
        let ok = format!("{}{}", "a {".repeat(20), "}".repeat(20));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn real_metadata_parses() {
        let t = include_bytes!("../../tests/fixtures/tvg-thinpool.txt");
        let top = parse(t).unwrap();
        assert_eq!(top.str("contents"), Some("Text Format Volume Group"));
        assert!(top.section("tvg").is_some());
    }
}
