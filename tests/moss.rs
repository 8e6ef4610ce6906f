//! lifeboat on a root the real moss made (`../shared/fixtures/moss-root.tar.gz`):
//! it reads moss's states, checks and repairs `/usr` from moss's store, rolls back
//! with moss's own swap, refuses what is moss's to do, and leaves everything of
//! moss's as it was — judged by the real moss (`moss state verify`) and by a
//! snapshot of every path, mode and content hash under `.moss/` and `usr/`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails, ok, run, run_env, Scratch};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The fixture, unpacked as moss made it (hard links and modes matter).
fn fixture(s: &Scratch) -> PathBuf {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&root).unwrap();
    let tar = shared().join("fixtures/moss-root.tar.gz");
    assert!(tar.is_file(), "the moss fixture {} is missing", tar.display());
    let st =
        Command::new("tar").args(["--numeric-owner", "-xzpf"]).arg(&tar).arg("-C").arg(&root).status().expect("tar");
    assert!(st.success());
    root
}

/// The prebuilt moss, unpacked once per test binary run: the oracle. A test that
/// needs it fails when it cannot be had.
fn moss() -> PathBuf {
    // Once per test process: the tests run on several threads.
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moss");
    if !out.is_file() {
        let src = shared().join("moss/bin/moss.zst");
        let tmp = out.with_extension(format!("{}", std::process::id()));
        let st = Command::new("zstd").args(["-d", "-q", "-f"]).arg(&src).arg("-o").arg(&tmp).status().expect("zstd");
        assert!(st.success(), "cannot unpack {}", src.display());
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &out).unwrap();
    }
    out
}

fn moss_verify(root: &Path) {
    let o = Command::new(moss()).arg("-D").arg(root).args(["state", "verify"]).output().expect("moss");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && text.contains("No issues found"), "moss state verify on {}:\n{text}", root.display());
}

/// Every path under `.moss/` (lifeboat's own directory aside) and `usr/`: kind,
/// mode, owner, link count and content.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == ".moss/lifeboat" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("l {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "d".into()
            } else {
                format!("f {:x}", xxhash_rust::xxh3::xxh3_128(&fs::read(&p).unwrap()))
            };
            out.insert(rel, format!("{what} {:o} {}:{} n{}", m.mode(), m.uid(), m.gid(), m.nlink()));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    for top in [".moss", "usr"] {
        walk(root, &root.join(top), &mut out);
    }
    out
}

fn r(root: &Path) -> String {
    root.display().to_string()
}

#[test]
fn states_are_read_and_nothing_of_moss_changes() {
    let s = Scratch::new("moss-read");
    let root = fixture(&s);
    let before = snapshot(&root);
    let rt = r(&root);
    let list = ok(&["--root", &rt, "state", "list"]);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows[0].split_whitespace().take(4).collect::<Vec<_>>().contains(&"active") && rows[0].trim().starts_with('3')
    );
    assert!(rows[1].trim().starts_with('2') && rows[1].contains("archived") && rows[1].contains("Sync"));
    assert!(rows[2].trim().starts_with('1') && rows[2].contains("6.1.0-demo") && rows[2].contains("Install"));
    assert!(ok(&["--root", &rt, "verify"]).contains("no differences"));
    assert!(ok(&["--root", &rt, "verify", "--full", "--store"]).contains("no differences"));
    for id in ["1", "2"] {
        assert!(ok(&["--root", &rt, "verify", "--state", id, "--full"]).contains("no differences"));
    }
    ok(&["--root", &rt, "state", "show", "2", "--files"]);
    ok(&["--root", &rt, "repair"]);
    // Refused, naming moss.
    let e = fails(&["--root", &rt, "state", "commit", "--from", &format!("{rt}/usr")]);
    assert!(e.contains("managed by moss") && e.contains("moss install"), "{e}");
    let e = fails(&["--root", &rt, "state", "prune", "--keep", "1"]);
    assert!(e.contains("managed by moss") && e.contains("moss state prune"), "{e}");
    assert_eq!(snapshot(&root), before, "a lifeboat command changed something of moss's");
    moss_verify(&root);
}

#[test]
fn a_deleted_file_is_named_and_restored_byte_for_byte() {
    let s = Scratch::new("moss-repair");
    let root = fixture(&s);
    let rt = r(&root);
    let before = snapshot(&root);
    let lib = root.join("usr/lib/libdemo.so.1");
    let content = fs::read(&lib).unwrap();
    fs::remove_file(&lib).unwrap();
    fs::remove_file(root.join("usr/bin/hello")).unwrap();
    let o = run(&["--root", &rt, "verify"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("missing") && out.contains("lib/libdemo.so.1") && out.contains("bin/hello"), "{out}");
    ok(&["--root", &rt, "repair"]);
    assert_eq!(fs::read(&lib).unwrap(), content);
    assert!(ok(&["--root", &rt, "verify", "--full"]).contains("no differences"));
    // Restored as moss placed it: the store's inode, read-only.
    assert_eq!(snapshot(&root), before);
    moss_verify(&root);
}

#[test]
fn activation_is_moss_state_activate() {
    let s = Scratch::new("moss-activate");
    let ours = fixture(&s);
    let theirs = s.join("theirs");
    fs::create_dir_all(&theirs).unwrap();
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", ours.display())).arg(&theirs).status().unwrap();
    assert!(st.success());
    let o = ok(&["--root", &r(&ours), "state", "activate", "1"]);
    assert!(o.contains('1'), "{o}");
    let st = Command::new(moss())
        .arg("-D")
        .arg(&theirs)
        .args(["state", "activate", "-y", "--skip-triggers", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read_to_string(ours.join("usr/.stateID")).unwrap().trim(), "1");
    assert!(ours.join(".moss/root/3/usr").is_dir());
    assert!(!ours.join(".moss/root/1").exists());
    // The same tree moss's own command leaves, inode links and all.
    let strip = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter().map(|(k, v)| (k, v.rsplit_once(" n").map(|x| x.0.to_owned()).unwrap_or(v))).collect()
    };
    assert_eq!(strip(snapshot(&ours)), strip(snapshot(&theirs)));
    moss_verify(&ours);
    // lifeboat sees it, and goes back.
    assert!(ok(&["--root", &r(&ours), "verify"]).contains("transaction 1"));
    ok(&["--root", &r(&ours), "state", "activate", "3"]);
    assert_eq!(fs::read_to_string(ours.join("usr/.stateID")).unwrap().trim(), "3");
    moss_verify(&ours);
}

#[test]
fn an_interrupted_swap_is_finished_where_moss_expects_the_trees() {
    let s = Scratch::new("moss-resume");
    let root = fixture(&s);
    let rt = r(&root);
    // A crash after the exchange, before the archive: the old tree sits in staging.
    let o = run_env(&["--root", &rt, "state", "activate", "1"], &[("LIFEBOAT_FAILPOINT", "moss-activate-archive")]);
    assert_eq!(o.status.code(), Some(99));
    assert!(root.join(".moss/root/staging/usr/.stateID").is_file());
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "1");
    // Asking for the state that is now active files the old one away.
    let o = ok(&["--root", &rt, "state", "activate", "1"]);
    assert!(!root.join(".moss/root/staging/usr").exists(), "{o}");
    assert!(root.join(".moss/root/3/usr").is_dir());
    moss_verify(&root);
    // A crash after the move to staging, before the exchange: resumed.
    let o = run_env(&["--root", &rt, "state", "activate", "2"], &[("LIFEBOAT_FAILPOINT", "moss-activate-exchange")]);
    assert_eq!(o.status.code(), Some(99));
    ok(&["--root", &rt, "state", "activate", "2"]);
    assert_eq!(fs::read_to_string(root.join("usr/.stateID")).unwrap().trim(), "2");
    assert!(root.join(".moss/root/1/usr").is_dir() && root.join(".moss/root/3/usr").is_dir());
    moss_verify(&root);
}

#[test]
fn the_index_follows_moss_and_a_held_lock_is_waited_for_then_refused() {
    let s = Scratch::new("moss-follow");
    let root = fixture(&s);
    let rt = r(&root);
    let o = run(&["--root", &rt, "state", "list"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("imported moss's states 1, 2, 3"));
    // Nothing changed: no import.
    let o = run(&["--root", &rt, "state", "list"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("imported"));
    // moss activates a state: the set of trees is the same, the index still holds.
    // moss changes its database: re-imported.
    let st = Command::new("sqlite3")
        .arg(root.join(".moss/db/state"))
        .arg("UPDATE state SET summary = 'Remove kernel' WHERE id = 3")
        .status()
        .unwrap();
    assert!(st.success());
    let o = run(&["--root", &rt, "state", "list"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("imported"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Remove kernel"));
    // moss is running (holds its lock): lifeboat waits, then says so.
    fs::write(s.join("hold.sh"), "exec flock -x -o \"$1\" sleep 30\n").unwrap();
    let mut holder = Command::new("sh").arg(s.join("hold.sh")).arg(root.join(".moss/.moss-lockfile")).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let st = Command::new("sqlite3")
        .arg(root.join(".moss/db/state"))
        .arg("UPDATE state SET summary = 'x' WHERE id = 3")
        .status()
        .unwrap();
    assert!(st.success());
    let o = run_env(&["--root", &rt, "state", "list"], &[("LIFEBOAT_MOSS_WAIT", "1")]);
    let _ = holder.kill();
    let _ = holder.wait();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("moss is running"), "{e}");
    let o = run_env(&["--root", &rt, "state", "activate", "1"], &[("LIFEBOAT_MOSS_WAIT", "0")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs an SQL statement on one of the fixture's databases.
fn sql(db: &Path, q: &str) {
    let o = Command::new("sqlite3").arg(db).arg(q).output().unwrap();
    assert!(o.status.success(), "{q}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn hostile_databases_are_named_and_the_previous_index_kept() {
    let s = Scratch::new("moss-hostile");
    let root = fixture(&s);
    let rt = r(&root);
    ok(&["--root", &rt, "state", "list"]);
    let index = fs::read(root.join(".moss/lifeboat/state.idx")).unwrap();
    let layout = root.join(".moss/db/layout");
    let pristine = fs::read(&layout).unwrap();
    let cases: [(&str, &str); 6] = [
        ("UPDATE layout SET entry_value2 = '../../etc/passwd' WHERE id = 12", "row 12"),
        ("UPDATE layout SET entry_value2 = '/etc/shadow' WHERE id = 12", "absolute"),
        ("UPDATE layout SET entry_value1 = 'deadbeef' WHERE id = 13", "not a decimal u128"),
        ("UPDATE layout SET entry_value2 = 'lib/a' || char(0) || 'b' WHERE id = 12", "row 12"),
        ("UPDATE layout SET mode = 16877 WHERE id = 12", "is not a regular"),
        ("PRAGMA user_version = 7", "user_version 7"),
    ];
    for (q, want) in cases {
        fs::write(&layout, &pristine).unwrap();
        sql(&layout, q);
        let before = snapshot(&root);
        let o = run(&["--root", &rt, "state", "list"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{q}: accepted");
        assert!(e.contains(".moss/db/layout") && e.contains(want), "{q}: {e}");
        assert_eq!(fs::read(root.join(".moss/lifeboat/state.idx")).unwrap(), index, "{q}: the index changed");
        assert_eq!(snapshot(&root), before, "{q}: moss's files changed");
    }
    // Truncated, and missing.
    fs::write(&layout, &pristine[..pristine.len() / 3]).unwrap();
    let e = fails(&["--root", &rt, "state", "list"]);
    assert!(e.contains(".moss/db/layout"), "{e}");
    fs::remove_file(&layout).unwrap();
    let e = fails(&["--root", &rt, "state", "list"]);
    assert!(e.contains(".moss/db/layout") && e.contains("missing"), "{e}");
    assert_eq!(fs::read(root.join(".moss/lifeboat/state.idx")).unwrap(), index);
}

#[test]
fn boot_entries_carry_moss_fstx_and_moss_s_own_entries_are_adopted() {
    let s = Scratch::new("moss-boot");
    let root = fixture(&s);
    let rt = r(&root);
    let img = s.join("disk.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "64M", "--esp-size", "32M"]);
    let before = snapshot(&root);
    ok(&["--root", &rt, "boot", "sync", "--esp", &img]);
    let listing = ok(&["disk", "ls", &format!("{img}:esp:loader/entries")]);
    let names: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| n.ends_with(".conf"))
        .map(|n| n.rsplit('/').next().unwrap_or(n).to_owned())
        .collect();
    assert_eq!(names.len(), 2, "states 1 and 2 carry the kernel: {listing}");
    for n in &names {
        let text = ok(&["disk", "cat", &format!("{img}:esp:loader/entries/{n}")]);
        let id = if n.contains("-1-") { 1 } else { 2 };
        assert!(text.contains(&format!("moss.fstx={id}")) && text.contains(&format!("lifeboat.tx={id}")), "{text}");
        let summary = if id == 1 { "Install" } else { "Sync" };
        assert!(text.contains(&format!("state {id}: {summary}")), "{text}");
    }
    // moss's boot sync (blsforme) wrote its own entry for state 2: adopted, kept.
    let theirs = s.join("unbranded-os-6.1.0-demo-2.conf");
    let moss_entry =
        "title Unbranded OS (6.1.0-demo)\nlinux /EFI/unbranded-os/6.1.0-demo/vmlinuz\noptions moss.fstx=2 rw\n";
    fs::write(&theirs, moss_entry).unwrap();
    ok(&[
        "disk",
        "put",
        &theirs.display().to_string(),
        &format!("{img}:esp:loader/entries/unbranded-os-6.1.0-demo-2.conf"),
    ]);
    let o = run(&["--root", &rt, "boot", "sync", "--esp", &img]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("moss's own entry"), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = ok(&["disk", "ls", &format!("{img}:esp:loader/entries")]);
    let with2: Vec<&str> = listing.lines().filter(|l| l.contains("-2")).collect();
    assert_eq!(with2.len(), 1, "state 2 shows once: {listing}");
    assert!(with2[0].contains("unbranded-os-6.1.0-demo-2.conf"));
    assert_eq!(ok(&["disk", "cat", &format!("{img}:esp:loader/entries/unbranded-os-6.1.0-demo-2.conf")]), moss_entry);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn moss_s_os_release_written_through_the_hard_link_is_named_not_fought() {
    let s = Scratch::new("moss-osrel");
    let root = fixture(&s);
    let rt = r(&root);
    // What moss 0.26.8 does when a package ships usr/lib/os-release: the package's
    // asset is linked into the tree, then moss writes its generated text through
    // the link, so the asset no longer holds what its name says.
    let shipped = b"ID=base\nNAME=\"Base\"\n";
    let h = xxhash_rust::xxh3::xxh3_128(shipped);
    let hex = format!("{h:02x}");
    let asset = root.join(format!(".moss/assets/v2/{}/{}/{}/{hex}", &hex[0..2], &hex[2..4], &hex[4..6]));
    fs::create_dir_all(asset.parent().unwrap()).unwrap();
    fs::remove_file(root.join("usr/lib/os-release")).unwrap();
    fs::write(&asset, b"NAME=\"Unbranded OS\"\nID=unbranded-os\n").unwrap();
    fs::set_permissions(&asset, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    fs::hard_link(&asset, root.join("usr/lib/os-release")).unwrap();
    let pkg = "da437db79364b5f6b396ce4666c32f3d15c9a0cb58f6ce9f808e5f3f3329c0bd";
    sql(
        &root.join(".moss/db/layout"),
        &format!(
            "INSERT INTO layout (package_id, uid, gid, mode, tag, entry_type, entry_value1, entry_value2) \
             VALUES ('{pkg}', 0, 0, 33188, 0, 'regular', '{h}', 'lib/os-release')"
        ),
    );
    // Quick mode trusts the store's inode; a full check with the store names it.
    assert!(ok(&["--root", &rt, "verify"]).contains("no differences"));
    let o = run(&["--root", &rt, "verify", "--full", "--store"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("lib/os-release") && text.contains(&hex), "{text}");
    let before = snapshot(&root);
    let o = run(&["--root", &rt, "repair", "--full"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("lifeboat does not write moss's store"), "{text}");
    // Nothing of moss's was touched, the generated text included.
    assert_eq!(snapshot(&root), before);
}
