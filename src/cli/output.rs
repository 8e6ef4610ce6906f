//! The one JSON document an invocation prints with `--json`. Commands hand
//! their results to [`crate::cli::Out`] as they go; a command that runs another
//! (a commit's auto-sync) has that one's result nested under a key; the notes
//! and the error the command ended with are added; then [`Doc::finish`] makes the
//! single document a JSON parser reads (two documents one after the other are
//! no JSON at all).

use std::cell::{Cell, RefCell};

use crate::json::Json;

/// What a command gave for its JSON document so far.
#[derive(Default)]
pub struct Doc {
    /// Results in the order given, each with the key it is nested under (none:
    /// the command's own).
    parts: RefCell<Vec<(Option<&'static str>, Json)>>,
    notes: RefCell<Vec<String>>,
    section: Cell<Option<&'static str>>,
}

impl Doc {
    pub fn add(&self, j: Json) {
        self.parts.borrow_mut().push((self.section.get(), j));
    }

    pub fn note(&self, n: &str) {
        self.notes.borrow_mut().push(n.to_owned());
    }

    /// Results given while `f` runs are nested under `key`.
    pub fn nested<T>(&self, key: &'static str, f: impl FnOnce() -> T) -> T {
        let before = self.section.replace(Some(key));
        let r = f();
        self.section.set(before);
        r
    }

    /// The document: the command's own result (an object, or the list a
    /// listing gives), each nested result under its key, the notes under
    /// `notes` (of an object result), and the error with its exit status.
    pub fn finish(&self, error: Option<(&str, u8)>) -> Json {
        let parts = std::mem::take(&mut *self.parts.borrow_mut());
        let notes = std::mem::take(&mut *self.notes.borrow_mut());
        let mut own: Vec<Json> = Vec::new();
        let mut nested: Vec<(&'static str, Vec<Json>)> = Vec::new();
        for (k, j) in parts {
            match k {
                None => own.push(j),
                Some(k) => match nested.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, v)) => v.push(j),
                    None => nested.push((k, vec![j])),
                },
            }
        }
        let one = |mut v: Vec<Json>| if v.len() == 1 { v.remove(0) } else { Json::Arr(v) };
        let mut doc = match own.len() {
            0 => Json::obj(),
            _ => one(own),
        };
        let extra = !nested.is_empty() || error.is_some();
        if extra && !matches!(doc, Json::Obj(_)) {
            doc = Json::obj().with("result", doc);
        }
        if let Json::Obj(ref mut o) = doc {
            for (k, v) in nested {
                o.push((k.to_owned(), one(v)));
            }
            if !notes.is_empty() && !o.iter().any(|(k, _)| k == "notes") {
                o.push(("notes".to_owned(), Json::from(notes)));
            }
            if let Some((msg, status)) = error {
                o.push(("error".to_owned(), Json::from(msg)));
                o.push(("exit".to_owned(), Json::from(status)));
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_with_nested_results_notes_and_the_error() {
        let d = Doc::default();
        d.add(Json::obj().with("id", 3u64));
        d.note("a note");
        d.nested("boot_sync", || d.add(Json::obj().with("kept", vec![3u64])));
        assert_eq!(d.finish(None).to_string(), r#"{"id":3,"boot_sync":{"kept":[3]},"notes":["a note"]}"#);
        let d = Doc::default();
        d.add(Json::Arr(vec![Json::from(1u64)]));
        assert_eq!(d.finish(None).to_string(), "[1]");
        let d = Doc::default();
        assert_eq!(d.finish(Some(("no such thing", 1))).to_string(), r#"{"error":"no such thing","exit":1}"#);
    }
}
