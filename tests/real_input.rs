//! Boot sync and the listings on real, unfriendly input, through the binary on
//! disk images, reading back what it wrote: names with control characters, empty
//! and non-regular files where kernels, initrds and cmdline files are expected,
//! and the rescue initrd, which every later sync keeps.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry file of ours on the image's ESP: (name, text).
fn entries(img: &str) -> Vec<(String, String)> {
    let ls = ok(&["disk", "ls", "-r", &format!("{img}:esp")]);
    ls.lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| p.starts_with("loader/entries/") && p.ends_with(".conf"))
        .map(|p| (p.to_owned(), ok(&["disk", "cat", &format!("{img}:esp:{p}")])))
        .collect()
}

/// A root with one transaction made from `t`, and an empty 64 MiB disk image.
fn root_and_disk(s: &Scratch, t: &Path) -> (PathBuf, String) {
    let root = s.join("root");
    ok(&["--root", r(&root), "state", "commit", "--from", r(t)]);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp", "40M", "--root", "0"]);
    (root, img)
}

#[test]
fn control_characters_never_reach_an_entry_or_a_listing_raw() {
    let s = Scratch::new("names");
    let t = s.join("t");
    tree(&t, 1);
    // A kernel version directory that would write an `options` line of its own,
    // sorting newer than the real kernel; an os-release field with a carriage
    // return (the loader ends lines there too); a file named with a newline.
    write(&t.join("lib/kernel/6.9\noptions evil=1/vmlinuz"), b"hostile kernel", 0o644);
    write(&t.join("lib/os-release"), b"NAME=Evil\nPRETTY_NAME=\"Evil\roptions injected=1\"\nID=evil\n", 0o644);
    write(&t.join("share/doc/two\nlines"), b"x", 0o644);
    let (root, img) = root_and_disk(&s, &t);
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("lib/kernel/6.9\\noptions evil=1/vmlinuz left out"), "the kernel is named, escaped: {err}");
    let es = entries(&img);
    assert_eq!(es.len(), 1, "{es:?}");
    for (name, text) in &es {
        assert!(!name.contains("evil=1"), "{name}");
        let keys: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(keys, ["title", "version", "sort-key", "linux", "options"], "{text:?}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("title Evil\\roptions injected=1, transaction 1"), "{text}");
        assert!(text.contains("version 1-6.1.0-test\n") && text.contains("\noptions lifeboat.tx=1\n"), "{text}");
    }
    let list = ok(&["--root", r(&root), "--esp", &img, "boot", "list"]);
    assert_eq!(list.lines().count(), 1, "{list}");

    // The listings: one name, one line, escaped as `ls -b` would.
    let files = ok(&["--root", r(&root), "state", "show", "1", "--files"]);
    assert!(files.lines().any(|l| l.ends_with("\tshare/doc/two\\nlines")), "{files}");
    assert!(files.lines().any(|l| l.ends_with("\tlib/kernel/6.9\\noptions evil=1/vmlinuz")), "{files}");
    assert!(!files.lines().any(|l| l.starts_with("lines") || l.starts_with("options")), "{files}");
    fs::remove_file(root.join("usr/share/doc/two\nlines")).unwrap();
    write(&root.join("usr/share/x\ny\rz"), b"", 0o644);
    let o = run(&["--root", r(&root), "verify"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"missing        share/doc/two\\nlines"), "{out}");
    assert!(lines.contains(&"extra          share/x\\ny\\rz"), "{out}");
    assert_eq!(lines.len(), 3, "two differences and the summary: {out}");
    let o = run(&["--root", r(&root), "repair", "--prune-extra"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.lines().any(|l| l == "fixed   missing        share/doc/two\\nlines"), "{out}");
    assert!(out.lines().any(|l| l == "removed share/x\\ny\\rz"), "{out}");
    assert_eq!(fs::read(root.join("usr/share/doc/two\nlines")).unwrap(), b"x");
}
