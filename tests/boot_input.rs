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
    std::fs::create_dir_all(&root).unwrap();
    ok(&["--root", r(&root), "state", "commit", "--from", r(t)]);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp-size", "40M", "--root-size", "0"]);
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

/// A tree with a kernel and os-release (the entry token comes from its ID).
fn kernel_tree(s: &Scratch, name: &str, v: u32) -> PathBuf {
    let t = s.join(name);
    tree(&t, v);
    write(&t.join("lib/kernel/6.1.0-test/vmlinuz"), format!("kernel {v}").as_bytes(), 0o644);
    write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    t
}

/// The `initrd` lines of every entry of ours, per entry file.
fn initrds(img: &str) -> Vec<(String, Vec<String>)> {
    entries(img)
        .into_iter()
        .map(|(name, text)| {
            let i = text.lines().filter_map(|l| l.strip_prefix("initrd ").map(str::to_owned)).collect();
            (name, i)
        })
        .collect()
}

#[test]
fn the_rescue_initrd_stays_through_commit_activate_and_prune_until_dropped() {
    let s = Scratch::new("rescue");
    let (root, img) = root_and_disk(&s, &kernel_tree(&s, "t1", 1));
    let rescue = s.join("lifeboat.initrd");
    write(&rescue, b"the rescue initrd", 0o644);
    let name = format!("/testos/lifeboat-{}.initrd", lifeboat_state::hash::Hash128::of(b"the rescue initrd"));
    let esp = |extra: &[&str]| -> std::process::Output {
        let mut a = vec!["--root", r(&root), "--esp", img.as_str()];
        a.extend_from_slice(extra);
        run(&a)
    };
    let okk = |extra: &[&str]| {
        let o = esp(extra);
        assert!(o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let all_carry = |when: &str, n: usize| {
        let got = initrds(&img);
        assert_eq!(got.len(), n, "{when}: {got:?}");
        for (e, i) in &got {
            assert_eq!(i, std::slice::from_ref(&name), "{when}: {e} lost the rescue initrd");
        }
        assert_eq!(
            run(&["disk", "cat", &format!("{img}:esp:{}", &name[1..])]).stdout,
            b"the rescue initrd",
            "{when}: the file on $BOOT"
        );
    };
    okk(&["boot", "sync", "--initrd", r(&rescue)]);
    all_carry("boot sync --initrd", 1);
    // The file it came from goes: the copy on $BOOT is all there is.
    fs::remove_file(&rescue).unwrap();
    okk(&["state", "commit", "--from", r(&kernel_tree(&s, "t2", 2))]);
    all_carry("the sync after a commit", 2);
    okk(&["state", "activate", "1"]);
    all_carry("the sync after an activation", 2);
    okk(&["state", "commit", "--from", r(&kernel_tree(&s, "t3", 3))]);
    okk(&["state", "prune", "--keep", "2"]);
    all_carry("the sync after a prune", 2);
    okk(&["boot", "sync"]);
    all_carry("a plain boot sync", 2);

    // Gone from $BOOT and from where it came from: refused, nothing changed,
    // and the message says how to go on.
    ok(&["disk", "rm", &format!("{img}:esp:{}", &name[1..])]);
    let before = initrds(&img);
    let o = esp(&["boot", "sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("--initrd FILE") && err.contains("--no-initrd") && err.contains(&name[8..]), "{err}");
    assert_eq!(initrds(&img), before);
    // Where it came from holds it again: the sync puts it back on $BOOT.
    write(&rescue, b"the rescue initrd", 0o644);
    okk(&["boot", "sync"]);
    all_carry("a sync that found it where it came from", 2);

    let err =
        String::from_utf8_lossy(&esp(&["boot", "sync", "--initrd", r(&rescue), "--no-initrd"]).stderr).into_owned();
    assert!(err.contains("cannot go with --initrd"), "{err}");
    okk(&["boot", "sync", "--no-initrd"]);
    let after = |when: &str| {
        for (e, i) in initrds(&img) {
            assert!(i.is_empty(), "{when}: {e} still names {i:?}");
        }
        let ls = ok(&["disk", "ls", "-r", &format!("{img}:esp")]);
        assert!(!ls.contains("lifeboat-"), "{when}: {ls}");
    };
    after("--no-initrd");
    okk(&["state", "commit", "--from", r(&kernel_tree(&s, "t4", 4))]);
    after("the commit after --no-initrd");
}

#[test]
fn entries_made_before_the_record_keep_their_rescue_initrd_and_lifeboat_conf_names_one() {
    let s = Scratch::new("rescue-old");
    let (root, img) = root_and_disk(&s, &kernel_tree(&s, "t1", 1));
    let rescue = s.join("r.initrd");
    write(&rescue, b"rescue one", 0o644);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--initrd", r(&rescue)]);
    // As an older lifeboat left it: entries with the initrd, no record.
    fs::remove_file(root.join(".moss/lifeboat/rescue-initrd")).unwrap();
    fs::remove_file(&rescue).unwrap();
    let o = run(&["--root", r(&root), "--esp", &img, "state", "commit", "--from", r(&kernel_tree(&s, "t2", 2))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("the entries carry the rescue initrd"), "{err}");
    let one = format!("/testos/lifeboat-{}.initrd", lifeboat_state::hash::Hash128::of(b"rescue one"));
    assert_eq!(initrds(&img).into_iter().map(|(_, i)| i).collect::<Vec<_>>(), [[one.clone()], [one.clone()]]);
    assert!(fs::read_to_string(root.join(".moss/lifeboat/rescue-initrd")).unwrap().contains(&one[8..]));

    // lifeboat.conf's initrd = (inside the root) wins, is recorded, and stays
    // when the line goes.
    write(&root.join("usr/lib/lifeboat/lifeboat.initrd"), b"rescue two", 0o644);
    write(
        &root.join("etc/lifeboat/lifeboat.conf"),
        format!("esp = {img}\ninitrd = /usr/lib/lifeboat/lifeboat.initrd\n").as_bytes(),
        0o644,
    );
    ok(&["--root", r(&root), "boot", "sync"]);
    let two = format!("/testos/lifeboat-{}.initrd", lifeboat_state::hash::Hash128::of(b"rescue two"));
    assert_eq!(initrds(&img).into_iter().map(|(_, i)| i).collect::<Vec<_>>(), [[two.clone()], [two.clone()]]);
    write(&root.join("etc/lifeboat/lifeboat.conf"), format!("esp = {img}\n").as_bytes(), 0o644);
    fs::remove_file(root.join("usr/lib/lifeboat/lifeboat.initrd")).unwrap();
    ok(&["--root", r(&root), "state", "activate", "1"]);
    assert_eq!(initrds(&img).into_iter().map(|(_, i)| i).collect::<Vec<_>>(), [[two.clone()], [two]]);
}

#[test]
fn an_empty_initrd_or_cmdline_in_a_transaction_breaks_no_sync() {
    let s = Scratch::new("empty");
    let t = kernel_tree(&s, "t", 1);
    write(&t.join("lib/kernel/6.1.0-test/00-empty.initrd"), b"", 0o644);
    write(&t.join("lib/kernel/6.1.0-test/10-real.initrd"), b"a real initrd", 0o644);
    write(&t.join("lib/kernel/6.1.0-test/20-empty.cmdline"), b"", 0o644);
    write(&t.join("lib/kernel/6.1.0-test/30-k.cmdline"), b"quiet\n", 0o644);
    let (root, img) = root_and_disk(&s, &t);
    for round in 0..2 {
        let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "round {round}: {err}");
        assert!(err.contains("initrd lib/kernel/6.1.0-test/00-empty.initrd is empty"), "{err}");
    }
    let es = entries(&img);
    assert_eq!(es.len(), 1);
    let text = &es[0].1;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("initrd ")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("/10-real-"), "{text}");
    assert!(text.contains("options quiet lifeboat.tx=1\n"), "{text}");
}

#[test]
fn a_fifo_where_a_file_is_expected_is_named_never_waited_on() {
    let s = Scratch::new("fifo");
    let t = kernel_tree(&s, "t", 1);
    write(&t.join("lib/kernel/6.1.0-test/10-real.initrd"), b"a real initrd", 0o644);
    write(&t.join("lib/kernel/6.1.0-test/30-k.cmdline"), b"quiet\n", 0o644);
    let (root, img) = root_and_disk(&s, &t);
    let blob = |data: &[u8]| root.join(".moss/assets/v2").join(lifeboat_state::hash::Hash128::of(data).store_path());
    let fifo = |p: &Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let sync = |extra: &[&str]| -> (bool, String) {
        let mut a = vec!["--root", r(&root), "--esp", img.as_str(), "boot", "sync"];
        a.extend_from_slice(extra);
        let start = std::time::Instant::now();
        let o = run_within(&a, 20).unwrap_or_else(|| panic!("boot sync {extra:?} hung (killed after 20 s)"));
        assert!(start.elapsed().as_secs() < 5, "boot sync {extra:?} took {:?}", start.elapsed());
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // A store blob the transaction's kernel, initrd or cmdline fragment is read
    // from, replaced by a FIFO: the transaction gets no entry, and the file is
    // named with what it is.
    for (what, data) in [("kernel", &b"kernel 1"[..]), ("initrd", b"a real initrd"), ("cmdline", b"quiet\n")] {
        let p = blob(data);
        let kept = s.join("kept-blob");
        fs::rename(&p, &kept).unwrap();
        fifo(&p);
        let (ok, err) = sync(&[]);
        assert!(!ok, "{what}: {err}");
        assert!(err.contains(&p.display().to_string()) && err.contains("FIFO"), "{what}: {err}");
        assert!(entries(&img).is_empty(), "{what}");
        fs::remove_file(&p).unwrap();
        fs::rename(&kept, &p).unwrap();
    }
    // The machine's own cmdline fragment, a rescue initrd given, lifeboat.conf.
    let local = root.join("etc/kernel/cmdline.d/50-local.cmdline");
    fs::create_dir_all(local.parent().unwrap()).unwrap();
    fifo(&local);
    let (ok, err) = sync(&[]);
    assert!(!ok && err.contains(&local.display().to_string()) && err.contains("FIFO"), "{err}");
    fs::remove_file(&local).unwrap();
    let given = s.join("rescue.fifo");
    fifo(&given);
    let (ok, err) = sync(&["--initrd", r(&given)]);
    assert!(!ok && err.contains(&given.display().to_string()) && err.contains("FIFO"), "{err}");
    let conf = root.join("etc/lifeboat/lifeboat.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fifo(&conf);
    let (ok, err) = sync(&[]);
    assert!(ok && err.contains("lifeboat.conf") && err.contains("FIFO"), "{err}");
    assert_eq!(entries(&img).len(), 1);
    fs::remove_file(&conf).unwrap();

    // The other files lifeboat reads but did not make: the loader `boot install`
    // copies (the tree's, or one named), the binary and base initrd of
    // `initrd build`.
    let quick_failure = |args: &[&str], named: &Path| {
        let o = run_within(args, 20).unwrap_or_else(|| panic!("{args:?} hung (killed after 20 s)"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(&named.display().to_string()) && err.contains("FIFO"),
            "{args:?}: {err}"
        );
    };
    let loader = root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    fs::create_dir_all(loader.parent().unwrap()).unwrap();
    fifo(&loader);
    quick_failure(&["--root", r(&root), "--esp", &img, "boot", "install"], &loader);
    quick_failure(&["--root", r(&root), "--esp", &img, "boot", "install", "--loader", r(&given)], &given);
    let out = s.join("out.initrd");
    quick_failure(&["initrd", "build", "--out", r(&out), "--no-modules", "--binary", r(&given)], &given);
    quick_failure(
        &["initrd", "build", "--binary", bin(), "--out", r(&out), "--no-modules", "--append-to", r(&given)],
        &given,
    );
    assert!(!out.exists());
}

/// A kernel version FAT cannot name (a trailing dot) or no kernel release can
/// be (over 64 bytes) is left out with a note; every other transaction and
/// kernel still gets its entry, sync after sync.
#[test]
fn a_kernel_version_fat_cannot_name_blocks_no_sync() {
    let s = Scratch::new("kvername");
    let t = s.join("t");
    tree(&t, 1);
    write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    write(&t.join("lib/kernel/7.0./vmlinuz"), b"trailing dot", 0o644);
    write(&t.join(format!("lib/kernel/{}/vmlinuz", "9".repeat(100))), b"too long", 0o644);
    let (root, img) = root_and_disk(&s, &t);
    for _ in 0..2 {
        let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("lib/kernel/7.0./vmlinuz left out") && err.contains("trailing dot"), "{err}");
        assert!(err.contains("longer than a kernel release can be"), "{err}");
    }
    let es = entries(&img);
    assert_eq!(es.len(), 1, "{es:?}");
    assert!(es[0].1.contains("version 1-6.1.0-test"), "{es:?}");
}

/// A store blob whose bytes are not the content it is named by is never copied
/// to the ESP under that name: the sync fails naming it, and nothing of it is there.
#[test]
fn a_damaged_kernel_blob_is_never_copied_under_its_name() {
    let s = Scratch::new("badkernel");
    let t = s.join("t");
    tree(&t, 1);
    write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    let (root, img) = root_and_disk(&s, &t);
    let kernel = vec![b'k'; 50_000];
    let blob = root.join(".moss/assets/v2").join(lifeboat_state::hash::Hash128::of(&kernel).store_path());
    let mut bad = kernel.clone();
    bad[1000] = b'K';
    fs::write(&blob, &bad).unwrap();
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("damaged, not copied"), "{err}");
    let ls = ok(&["disk", "ls", "-r", &format!("{img}:esp")]);
    assert!(!ls.contains("vmlinuz"), "{ls}");
    ok(&["disk", "check", &format!("{img}:esp")]);
}

/// `boot install` never replaces a newer systemd-boot with an older one unless asked.
#[test]
fn boot_install_never_downgrades_unless_asked() {
    let s = Scratch::new("downgrade");
    let t = s.join("t");
    tree(&t, 1);
    let (root, img) = root_and_disk(&s, &t);
    let loader = |v: &str| format!("MZ fake loader #### LoaderInfo: systemd-boot {v} ####\0").into_bytes();
    write(&s.join("new.efi"), &loader("259.1-1"), 0o644);
    write(&s.join("old.efi"), &loader("252.39-1~deb12u2"), 0o644);
    ok(&["--root", r(&root), "--esp", &img, "boot", "install", "--loader", r(&s.join("new.efi"))]);
    let out = ok(&["--root", r(&root), "--esp", &img, "boot", "install", "--loader", r(&s.join("old.efi"))]);
    assert!(out.contains("259.1-1 is newer than 252.39-1~deb12u2; left alone"), "{out}");
    let on = ok(&["disk", "cat", &format!("{img}:esp:EFI/systemd/systemd-bootx64.efi")]);
    assert!(on.contains("259.1-1"), "{on}");
    let out = ok(&[
        "--root",
        r(&root),
        "--esp",
        &img,
        "boot",
        "install",
        "--allow-downgrade",
        "--loader",
        r(&s.join("old.efi")),
    ]);
    assert!(out.contains("259.1-1 -> 252.39-1~deb12u2"), "{out}");
}
