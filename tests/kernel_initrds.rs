//! The rescue initrd `boot sync` builds for each kernel from its transaction's
//! own modules, judged by real tools: two real Debian kernels of different ABIs
//! (the QEMU cache's `generic` and `generic2`, from `qemu/fetch.sh`), `cpio -t`
//! after `zstd -d` on each entry's initrd, `bootctl list` over the extracted ESP,
//! `fsck.fat -n`; a second sync that builds nothing and changes no byte of the
//! image, a changed module that rebuilds one kernel's initrd only, and prune
//! removing the initrd no entry names.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const TOKEN: &str = "00112233445566778899aabbccddeeff";

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The QEMU cache with both generic kernels; the test fails without it (the
/// oracle kernels are never skipped).
fn cache() -> PathBuf {
    let c = std::env::var_os("LIFEBOAT_QEMU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu/cache"));
    assert!(
        c.join("generic2-kver").exists() && c.join("generic-kver").exists(),
        "no Debian kernels in {}: run qemu/fetch.sh (or set LIFEBOAT_QEMU_CACHE)",
        c.display()
    );
    c
}

/// (version, module directory) of the cache's `generic` or `generic2` kernel.
fn kernel(name: &str) -> (String, PathBuf) {
    let c = cache();
    let kver = fs::read_to_string(c.join(format!("{name}-kver"))).unwrap().trim().to_owned();
    let dir = c.join(format!("{name}/lib/modules/{kver}"));
    (kver, dir)
}

fn cpio_list(bytes: &[u8]) -> Vec<String> {
    let mut c =
        Command::new("cpio").args(["-t", "--quiet"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = bytes.to_vec();
    let feed = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let o = c.wait_with_output().unwrap();
    feed.join().unwrap();
    assert!(o.status.success(), "cpio -t failed");
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

/// `zstd -d` of a file's bytes.
fn unzstd(bytes: &[u8], s: &Scratch) -> Vec<u8> {
    let p = s.join("unzstd.in");
    fs::write(&p, bytes).unwrap();
    let o = Command::new("zstd").args(["-d", "-c", "-q", r(&p)]).output().unwrap();
    assert!(o.status.success(), "zstd -d: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The generic set's module tree of a kernel, as a transaction would carry
/// it: the modules an initrd of the full directory holds (so the test's trees
/// stay small), the kernel's own lists, and depmod run on the result.
fn trimmed_modules(s: &Scratch, name: &str) -> (String, PathBuf) {
    let (kver, full) = kernel(name);
    let plain = s.join(&format!("{name}.cpio"));
    let fake_bin = s.join("bin-for-listing");
    write(&fake_bin, b"a binary", 0o755);
    ok(&["initrd", "build", "--out", r(&plain), "--modules", r(&full), "--compress", "none", "--binary", r(&fake_bin)]);
    let prefix = format!("lib/modules/{kver}/");
    let base = s.join(&format!("{name}-base"));
    let out = base.join(&prefix);
    let mut n = 0;
    for p in cpio_list(&fs::read(&plain).unwrap()) {
        if let Some(rel) = p.strip_prefix(&prefix).filter(|r| r.ends_with(".ko")) {
            let dest = out.join(rel);
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(full.join(rel), &dest).unwrap();
            n += 1;
        }
    }
    assert!(n > 20, "the generic set of {kver} has only {n} modules");
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        fs::copy(full.join(f), out.join(f)).unwrap();
    }
    let st = Command::new("depmod").args(["-b", r(&base), &kver]).status().unwrap();
    assert!(st.success(), "depmod -b {} {kver}", base.display());
    (kver, out)
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").args(["-a", r(from), r(to)]).status().unwrap();
    assert!(st.success());
}

/// A /usr tree booting `kver` with `modules` as its module directory, and the
/// rescue binary `rescue` (none when empty).
fn ktree(at: &Path, v: u32, kver: &str, modules: Option<&Path>, rescue: &[u8]) {
    tree(at, v);
    fs::remove_dir_all(at.join("lib/kernel/6.1.0-test")).unwrap();
    write(&at.join(format!("lib/kernel/{kver}/vmlinuz")), format!("kernel {kver}").as_bytes(), 0o644);
    write(&at.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
    if let Some(m) = modules {
        fs::create_dir_all(at.join("lib/modules")).unwrap();
        copy_dir(m, &at.join(format!("lib/modules/{kver}")));
    }
    if !rescue.is_empty() {
        write(&at.join("lib/lifeboat/lifeboat-rescue"), rescue, 0o755);
    }
}

fn new_root(s: &Scratch) -> (PathBuf, String) {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    write(&root.join("etc/machine-id"), format!("{TOKEN}\n").as_bytes(), 0o444);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "200M", "--esp-size", "160M", "--root-size", "0"]);
    (root, img)
}

fn commit(root: &Path, t: &Path) {
    std::fs::create_dir_all(root).unwrap();
    ok(&["--root", r(root), "state", "commit", "--from", r(t)]);
}

/// Runs a sync; returns (stdout, stderr).
fn sync(root: &Path, img: &str, extra: &[&str]) -> (String, String) {
    let mut a = vec!["--root", r(root), "--esp", img, "boot", "sync"];
    a.extend_from_slice(extra);
    let o = run(&a);
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "boot sync {extra:?} failed:\n{out}\n{err}");
    (out, err)
}

fn builds(err: &str) -> Vec<String> {
    err.lines().filter(|l| l.contains("built the rescue initrd")).map(str::to_owned).collect()
}

/// Our entry files: (transaction, kernel version, initrd paths).
fn entries(img: &str) -> Vec<(u64, String, Vec<String>)> {
    let ls = ok(&["disk", "ls", &format!("{img}:esp:loader/entries")]);
    let mut out = Vec::new();
    for name in ls.split_whitespace().filter_map(|n| n.strip_prefix("loader/entries/")) {
        if !name.starts_with(TOKEN) || !name.ends_with(".conf") {
            continue;
        }
        let text = ok(&["disk", "cat", &format!("{img}:esp:loader/entries/{name}")]);
        let rest = &name[TOKEN.len() + 1..name.len() - 5];
        let (tx, kver) = rest.split_once('-').unwrap();
        let initrds = text.lines().filter_map(|l| l.strip_prefix("initrd ")).map(|p| p.trim().to_owned()).collect();
        out.push((tx.parse().unwrap(), kver.to_owned(), initrds));
    }
    out.sort();
    out
}

/// Every file below the token directory.
fn token_files(img: &str) -> BTreeSet<String> {
    ok(&["disk", "ls", "-r", &format!("{img}:esp:{TOKEN}")])
        .split_whitespace()
        .filter(|w| w.ends_with(".initrd") || w.contains("vmlinuz-"))
        .map(|w| w.trim_start_matches('/').to_owned())
        .collect()
}

/// The `lib/modules/<kver>` directories an initrd on the ESP holds, and its names.
fn initrd_modules(img: &str, path: &str, s: &Scratch) -> (BTreeSet<String>, Vec<String>) {
    let bytes = run(&["disk", "cat", &format!("{img}:esp:{}", path.trim_start_matches('/'))]).stdout;
    let names = cpio_list(&unzstd(&bytes, s));
    let kvers = names
        .iter()
        .filter_map(|n| n.strip_prefix("lib/modules/"))
        .filter_map(|n| n.split_once('/').map(|(k, _)| k.to_owned()))
        .collect();
    (kvers, names)
}

fn fsck(img: &str, s: &Scratch) {
    let data = fs::read(img).unwrap();
    let p = s.join("esp.part");
    fs::write(&p, &data[1 << 20..161 << 20]).unwrap();
    let o = Command::new("fsck.fat").args(["-n", r(&p)]).output().unwrap();
    assert!(o.status.success(), "fsck.fat:\n{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn each_kernel_gets_the_initrd_of_its_own_modules_built_once() {
    assert!(is_root(), "this test mounts a tmpfs for bootctl: run it as root");
    for tool in ["bootctl", "cpio", "zstd", "depmod", "mcopy", "fsck.fat"] {
        assert!(have(tool), "{tool} is missing: scripts/setup.sh installs it");
    }
    let s = Scratch::new("kinitrd");
    let (ka, mods_a) = trimmed_modules(&s, "generic");
    let (kb, mods_b) = trimmed_modules(&s, "generic2");
    assert_ne!(ka, kb, "the cache's two generic kernels must be of different ABIs");
    let (root, img) = new_root(&s);
    // Transactions 1 and 2 carry kernel A (the same modules), 3 carries kernel B.
    for (v, kver, mods) in [(1, &ka, &mods_a), (2, &ka, &mods_a), (3, &kb, &mods_b)] {
        let t = s.join(&format!("t{v}"));
        ktree(&t, v, kver, Some(mods), b"rescue binary v1");
        commit(&root, &t);
    }
    let (_, err) = sync(&root, &img, &[]);
    let built = builds(&err);
    assert_eq!(built.len(), 2, "one build per kernel:\n{err}");
    assert!(built.iter().any(|l| l.contains(&format!("kernel {ka} (transactions 1, 2)"))), "{err}");
    assert!(built.iter().any(|l| l.contains(&format!("kernel {kb} (transaction 3)"))), "{err}");
    fsck(&img, &s);

    // Each entry lists its own kernel's initrd, last; cpio -t finds only that
    // kernel's modules in it, and the rescue binary as /init.
    let es = entries(&img);
    assert_eq!(es.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3], "{es:?}");
    let mut initrd_of = std::collections::BTreeMap::new();
    for (tx, kver, initrds) in &es {
        let last = initrds.last().unwrap_or_else(|| panic!("entry {tx} has no initrd"));
        assert!(last.starts_with(&format!("/{TOKEN}/{kver}/lifeboat-")), "entry {tx}: {last}");
        let (kvers, names) = initrd_modules(&img, last, &s);
        assert_eq!(kvers, BTreeSet::from([kver.clone()]), "entry {tx}'s initrd holds modules of {kvers:?}");
        for want in ["init", "usr/bin/lifeboat", &format!("lib/modules/{kver}/kernel/fs/ext4/ext4.ko")] {
            assert!(names.iter().any(|n| n == want), "entry {tx}: {want} not in its initrd");
        }
        initrd_of.insert(*tx, last.clone());
    }
    assert_eq!(initrd_of[&1], initrd_of[&2], "transactions sharing a kernel and its modules share the file");
    assert_ne!(initrd_of[&1], initrd_of[&3]);

    // A second sync builds nothing and writes nothing.
    let before = fs::read(&img).unwrap();
    let (out, err) = sync(&root, &img, &[]);
    assert!(out.contains("up to date") && builds(&err).is_empty(), "{out}\n{err}");
    assert!(fs::read(&img).unwrap() == before, "a sync with unchanged inputs changed the image");
    let j = ok(&["--root", r(&root), "--esp", &img, "--json", "boot", "sync", "--dry-run"]);
    assert!(j.contains("\"built\":false") && !j.contains("\"built\":true"), "{j}");
    // Without the cache the initrds are built again, to the same bytes: the
    // image does not change either.
    fs::remove_file(root.join(".moss/lifeboat/initrd-cache")).unwrap();
    let (out, err) = sync(&root, &img, &[]);
    assert_eq!(builds(&err).len(), 2, "{err}");
    assert!(out.contains("up to date"), "the same inputs built other bytes:\n{out}\n{err}");
    assert!(fs::read(&img).unwrap() == before);

    // Transaction 4: kernel A with one module changed. Only kernel A's
    // initrd is built, for 4 alone; 1 and 2 keep theirs.
    let t4 = s.join("t4");
    ktree(&t4, 4, &ka, Some(&mods_a), b"rescue binary v1");
    let ext4 = t4.join(format!("lib/modules/{ka}/kernel/fs/ext4/ext4.ko"));
    let mut data = fs::read(&ext4).unwrap();
    data.extend_from_slice(b"\0changed");
    fs::write(&ext4, &data).unwrap();
    commit(&root, &t4);
    let (_, err) = sync(&root, &img, &[]);
    let built = builds(&err);
    assert_eq!(built.len(), 1, "{err}");
    assert!(built[0].contains(&format!("kernel {ka} (transaction 4)")), "{err}");
    let es = entries(&img);
    let i4 = es.iter().find(|e| e.0 == 4).unwrap().2.last().unwrap().clone();
    assert!(i4.starts_with(&format!("/{TOKEN}/{ka}/lifeboat-")) && i4 != initrd_of[&1], "{es:?}");
    assert_eq!(es.iter().find(|e| e.0 == 1).unwrap().2.last().unwrap(), &initrd_of[&1]);
    assert_eq!(es.iter().find(|e| e.0 == 3).unwrap().2.last().unwrap(), &initrd_of[&3]);
    let bytes = run(&["disk", "cat", &format!("{img}:esp:{}", i4.trim_start_matches('/'))]).stdout;
    let archive = lifeboat_initrd::Archive::parse(&unzstd(&bytes, &s)).unwrap();
    let ext4_in = archive.entries.iter().find(|e| e.name == format!("lib/modules/{ka}/kernel/fs/ext4/ext4.ko"));
    assert!(matches!(ext4_in.map(|e| &e.kind), Some(lifeboat_initrd::Kind::File(d)) if *d == data));

    // bootctl reads every entry with its own kernel's initrd.
    let mnt = s.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount(self.0);
        }
    }
    let u = Umount(&mnt);
    let st = Command::new("mcopy").args(["-s", "-n", "-i", &format!("{img}@@1M"), "::/", r(&mnt)]).status().unwrap();
    assert!(st.success());
    let o = Command::new("bootctl")
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .args(["--esp-path", r(&mnt), "--no-pager", "--json=short", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "bootctl: {}", String::from_utf8_lossy(&o.stderr));
    let theirs = String::from_utf8_lossy(&o.stdout).into_owned();
    for (tx, kver, initrds) in entries(&img) {
        let id = format!("\"id\":\"{TOKEN}-{tx}-{kver}.conf\"");
        let at = theirs.find(&id).unwrap_or_else(|| panic!("bootctl does not list {id}: {theirs}"));
        let obj = &theirs[at..theirs[at..].find('}').map_or(theirs.len(), |e| at + e)];
        assert!(obj.contains(&format!("\"initrd\":[\"{}\"]", initrds.last().unwrap())), "{tx}: {obj}");
    }
    let ours = ok(&["--root", r(&root), "--esp", &img, "--json", "boot", "list"]);
    assert!(ours.contains(&format!("\"initrd\":[\"{}\"]", i4)), "{ours}");
    drop(u);

    // Prune 1 and 2: kernel A's first initrd is named by no entry and goes.
    ok(&["--root", r(&root), "--esp", &img, "state", "prune", "--keep", "2"]);
    let files = token_files(&img);
    assert!(!files.iter().any(|f| initrd_of[&1].ends_with(f.as_str())), "{files:?}");
    assert!(
        files.iter().any(|f| i4.ends_with(f.as_str())) && files.iter().any(|f| initrd_of[&3].ends_with(f.as_str()))
    );
    let cache = fs::read_to_string(root.join(".moss/lifeboat/initrd-cache")).unwrap();
    assert_eq!(cache.lines().filter(|l| !l.starts_with('#')).count(), 2, "{cache}");
    fsck(&img, &s);
}

#[test]
fn no_rescue_binary_no_module_directory_and_the_given_initrd() {
    let s = Scratch::new("kinitrd-edge");
    let (root, img) = new_root(&s);
    // No rescue binary anywhere: entries without a lifeboat initrd, said so.
    let t = s.join("t1");
    ktree(&t, 1, "6.1.0-test", None, b"");
    commit(&root, &t);
    let (_, err) = sync(&root, &img, &[]);
    assert!(err.contains("no retained transaction carries usr/lib/lifeboat/lifeboat-rescue"), "{err}");
    assert!(entries(&img)[0].2.is_empty(), "{:?}", entries(&img));

    // Transaction 2 carries the binary and a kernel without module directory
    // (every driver built in): its initrd holds the binary and no modules;
    // transaction 1's entry gets it too, binary from the newest transaction.
    let t = s.join("t2");
    ktree(&t, 2, "6.1.0-test", None, b"rescue binary v2");
    commit(&root, &t);
    let (_, err) = sync(&root, &img, &[]);
    assert_eq!(builds(&err).len(), 1, "{err}");
    let es = entries(&img);
    assert_eq!(es[0].2, es[1].2, "{es:?}");
    let path = es[1].2.last().unwrap().clone();
    let (kvers, names) = initrd_modules(&img, &path, &s);
    assert!(kvers.is_empty() && names.iter().any(|n| n == "init"), "{names:?}");
    let bytes = run(&["disk", "cat", &format!("{img}:esp:{}", path.trim_start_matches('/'))]).stdout;
    let a = lifeboat_initrd::Archive::parse(&unzstd(&bytes, &s)).unwrap();
    let init = a.entries.iter().find(|e| e.name == "init").unwrap();
    assert!(matches!(&init.kind, lifeboat_initrd::Kind::File(d) if d == b"rescue binary v2"));

    // The newest transaction without the binary: the older one's is used, said so.
    let t = s.join("t3");
    ktree(&t, 3, "6.1.0-test", None, b"");
    commit(&root, &t);
    let (_, err) = sync(&root, &img, &[]);
    assert!(err.contains("the newest transaction carries no usr/lib/lifeboat/lifeboat-rescue"), "{err}");
    assert!(builds(&err).is_empty(), "the same inputs: nothing to build:\n{err}");

    // A host-only set describes the machine lifeboat runs on, not a --root.
    let (_, err) = sync(&root, &img, &["--host-only"]);
    assert!(err.contains("host-only initrd describes this machine's disks"), "{err}");
    let rec = fs::read_to_string(root.join(".moss/lifeboat/rescue-initrd")).unwrap();
    assert!(rec.contains("initrd per-kernel\nmodules host-only"), "{rec}");

    // --initrd FILE: one initrd for every entry; the built one goes.
    let given = s.join("given.initrd");
    write(&given, b"a given initrd", 0o644);
    sync(&root, &img, &["--initrd", r(&given)]);
    for (tx, _, initrds) in entries(&img) {
        assert_eq!(initrds.last().map(|i| i.matches('/').count()), Some(2), "entry {tx}: {initrds:?}");
    }
    assert!(!token_files(&img).contains(path.trim_start_matches('/')));
    // Kept by the next sync (the one after a commit too) ...
    let (_, err) = sync(&root, &img, &[]);
    assert!(builds(&err).is_empty(), "{err}");
    // ... until --kernel-initrds builds them again (the cache's key: no build).
    let (_, err) = sync(&root, &img, &["--kernel-initrds"]);
    assert_eq!(builds(&err).len(), 1, "the $BOOT copy was removed, so it is built again:\n{err}");
    assert_eq!(entries(&img)[0].2.last(), Some(&path));
    // --no-initrd drops it; it stays dropped.
    sync(&root, &img, &["--no-initrd"]);
    sync(&root, &img, &[]);
    assert!(entries(&img).iter().all(|e| e.2.is_empty()), "{:?}", entries(&img));
    let e = fails(&["--root", r(&root), "--esp", &img, "boot", "sync", "--no-initrd", "--host-only"]);
    assert!(e.contains("cannot go with --initrd or --no-initrd"), "{e}");
}
