//! Type #2 entries (unified kernel images in `EFI/Linux`) next to lifeboat's Type #1
//! entries on a FAT image, judged by independent tools: UKIs built with the real
//! `objcopy` recipe from Debian's systemd-stub (one with a boot counter in its name,
//! one signed by `sbsign`), their order against `bootctl list` over the extracted
//! ESP, their bytes after every lifeboat operation, `set-default` / `set-oneshot` on
//! a UKI id, and `boot status`'s Secure Boot state and warnings from a stand-in
//! efivarfs; UKIs on XBOOTLDR, their names in any case.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SDBOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const TOKEN: &str = "00112233445566778899aabbccddeeff";
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The oracles are never skipped: without one this test fails.
fn need(tools: &[&str]) {
    for t in tools {
        assert!(have(t), "{t} is missing: scripts/setup.sh installs it");
    }
    assert!(Path::new(STUB).is_file(), "{STUB} is missing: scripts/setup.sh installs systemd-boot-efi");
}

/// A root with three transactions that carry a kernel (ID=testos), and a disk image.
fn setup(s: &Scratch) -> (PathBuf, String) {
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    write(&root.join("etc/machine-id"), format!("{TOKEN}\n").as_bytes(), 0o444);
    write(&root.join("etc/kernel/cmdline"), b"root=PARTUUID=abcd console=ttyS0\n", 0o644);
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "96M", "--esp-size", "64M", "--root-size", "0"]);
    (root, img)
}

/// A kernel to wrap: Debian's from the QEMU cache when it is there, else any bytes
/// (the stub is never run here; only the sections are read).
fn kernel(s: &Scratch) -> PathBuf {
    let cached = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu/cache/vmlinuz");
    if cached.is_file() {
        return cached;
    }
    let p = s.join("vmlinuz");
    write(&p, &vec![0x4du8; 300_000], 0o644);
    p
}

/// systemd-stub's documented recipe: sections added with `objcopy` at VMAs above
/// the stub's own image.
fn objcopy_uki(s: &Scratch, out: &Path, osrel: &str, cmdline: Option<&str>, uname: Option<&str>) {
    let dir = s.join("parts");
    fs::create_dir_all(&dir).unwrap();
    write(&dir.join("osrel"), osrel.as_bytes(), 0o644);
    write(&dir.join("initrd"), &vec![7u8; 4096], 0o644);
    let mut args: Vec<String> = vec![
        "--add-section".into(),
        format!(".osrel={}", r(&dir.join("osrel"))),
        "--change-section-vma".into(),
        ".osrel=0x20000".into(),
    ];
    if let Some(c) = cmdline {
        write(&dir.join("cmdline"), c.as_bytes(), 0o644);
        args.extend([
            "--add-section".into(),
            format!(".cmdline={}", r(&dir.join("cmdline"))),
            "--change-section-vma".into(),
            ".cmdline=0x30000".into(),
        ]);
    }
    if let Some(u) = uname {
        write(&dir.join("uname"), u.as_bytes(), 0o644);
        args.extend([
            "--add-section".into(),
            format!(".uname={}", r(&dir.join("uname"))),
            "--change-section-vma".into(),
            ".uname=0x40000".into(),
        ]);
    }
    args.extend([
        "--add-section".into(),
        format!(".linux={}", r(&kernel(s))),
        "--change-section-vma".into(),
        ".linux=0x2000000".into(),
        "--add-section".into(),
        format!(".initrd={}", r(&dir.join("initrd"))),
        "--change-section-vma".into(),
        ".initrd=0x3000000".into(),
        STUB.into(),
        r(out).into(),
    ]);
    let o = Command::new("objcopy").args(&args).output().unwrap();
    assert!(o.status.success(), "objcopy: {}", String::from_utf8_lossy(&o.stderr));
}

/// Signs with `sbsign` and a fresh self-signed key (the independent signer).
fn sbsign(s: &Scratch, input: &Path, out: &Path) {
    let key = s.join("db.key");
    let crt = s.join("db.crt");
    if !key.exists() {
        let o = Command::new("openssl")
            .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=test db/"])
            .args(["-keyout", r(&key), "-out", r(&crt)])
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new("sbsign")
        .args(["--key", r(&key), "--cert", r(&crt), "--output", r(out), r(input)])
        .output()
        .unwrap();
    assert!(o.status.success(), "sbsign: {}", String::from_utf8_lossy(&o.stderr));
}

fn put(img: &str, local: &Path, at: &str) {
    ok(&["disk", "put", r(local), &format!("{img}:esp:{at}")]);
}

fn esp_extract(img: &str, dir: &Path) {
    let st = Command::new("mcopy").args(["-s", "-n", "-i", &format!("{img}@@1M"), "::/", r(dir)]).status().unwrap();
    assert!(st.success(), "mcopy");
}

/// A tmpfs for bootctl (it refuses a directory that is not a mount), unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn new(at: PathBuf) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        nix::mount::mount(Some("tmpfs"), &at, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
        Tmpfs(at)
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

/// The values of `"key":"..."` in JSON text, in order.
fn strings_of(json: &str, key: &str) -> Vec<String> {
    let k = format!("\"{key}\":\"");
    json.split(&k).skip(1).map(|x| x.split('"').next().unwrap().to_owned()).collect()
}

fn base(p: &str) -> String {
    p.rsplit('/').next().unwrap().to_owned()
}

#[test]
fn foreign_ukis_are_listed_in_bootctl_order_and_never_changed() {
    assert!(is_root(), "this test mounts a tmpfs for bootctl: run it as root");
    need(&["bootctl", "objcopy", "mcopy", "sbsign", "openssl"]);
    let s = Scratch::new("uki");
    let (root, img) = setup(&s);
    // 1: Debian's stub with os-release, command line and uname, its own sort key.
    let a = s.join("foreign-6.1.efi");
    objcopy_uki(
        &s,
        &a,
        "PRETTY_NAME=\"Foreign Linux 12 (bookworm)\"\nNAME=\"Foreign Linux\"\nID=foreign\nVERSION_ID=12\n",
        Some("root=/dev/vda2 quiet\n"),
        Some("6.1.0-18-amd64\n"),
    );
    // 2: a boot counter in its name, and the same sort key as lifeboat's entries
    // (ID=testos): it sorts among them (no machine id sorts first).
    let b = s.join("other+2-1.efi");
    objcopy_uki(&s, &b, "NAME=Other\nID=testos\nIMAGE_VERSION=9\n", None, None);
    // 3: signed by sbsign; 4: not a PE image at all.
    let c0 = s.join("c0.efi");
    objcopy_uki(&s, &c0, "IMAGE_ID=zsigned\nIMAGE_VERSION=1.2\n", Some("x=1"), None);
    let c = s.join("zsigned-1.2.efi");
    sbsign(&s, &c0, &c);
    let d = s.join("junk.efi");
    write(&d, b"MZ but nothing else of a PE image", 0o644);
    let foreign: Vec<(String, Vec<u8>)> = [
        (&a, "EFI/Linux/foreign-6.1.efi"),
        (&b, "EFI/Linux/other+2-1.efi"),
        (&c, "EFI/Linux/zsigned-1.2.efi"),
        (&d, "EFI/Linux/junk.efi"),
    ]
    .into_iter()
    .map(|(p, at)| {
        put(&img, p, at);
        (at.to_owned(), fs::read(p).unwrap())
    })
    .collect();
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    let lb = |extra: &[&str]| -> String {
        let mut v = vec!["--root", r(&root), "--esp", img.as_str(), "--efivars", r(&vars)];
        v.extend_from_slice(extra);
        ok(&v)
    };
    let check = |when: &str| {
        for (p, bytes) in &foreign {
            let o = run(&["disk", "cat", &format!("{img}:esp:{p}")]);
            assert!(o.status.success(), "{p} is gone after {when}");
            assert!(&o.stdout == bytes, "{p} changed after {when}");
        }
    };
    lb(&["boot", "install", "--loader", SDBOOT]);
    check("install");
    lb(&["boot", "sync", "--tries", "3"]);
    check("sync");

    // The listing: every UKI with what the loader reads of it.
    let list = lb(&["--json", "boot", "list"]);
    assert!(
        list.contains(
            "\"id\":\"foreign-6.1.efi\",\"kind\":\"type2\",\"path\":\"EFI/Linux/foreign-6.1.efi\",\"title\":\"Foreign Linux 12 (bookworm)\",\"version\":\"12\",\"sort_key\":\"foreign\",\"transaction\":null,\"owner\":\"foreign\""
        ),
        "{list}"
    );
    assert!(list.contains("\"uname\":\"6.1.0-18-amd64\""), "{list}");
    assert!(list.contains("\"options\":\"root=/dev/vda2 quiet\""), "{list}");
    assert!(list.contains("\"id\":\"other+2-1.efi\""), "{list}");
    assert!(list.contains("\"tries_left\":2,\"tries_done\":1"), "{list}");
    assert!(
        list.contains("\"file\":\"junk.efi\",\"kind\":\"type2\",\"path\":\"EFI/Linux/junk.efi\",\"broken\":"),
        "{list}"
    );
    let text = lb(&["boot", "list"]);
    assert!(text.contains("junk.efi") && text.contains("broken"), "{text}");
    assert!(text.contains("Foreign Linux 12 (bookworm) [UKI 12]  (not lifeboat's)"), "{text}");

    // The order is bootctl's (the paths, as bootctl names a counted UKI's id
    // without its counter, where systemd-boot keeps it).
    let tmp = Tmpfs::new(s.join("mnt"));
    esp_extract(&img, &tmp.0);
    let o = Command::new("bootctl")
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .args(["--esp-path", r(&tmp.0), "--no-pager", "--json=short", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "bootctl: {}", String::from_utf8_lossy(&o.stderr));
    let theirs_json = String::from_utf8_lossy(&o.stdout).into_owned();
    let theirs: Vec<String> = strings_of(&theirs_json, "path").iter().map(|p| base(p)).collect();
    let ours: Vec<String> = strings_of(&list, "path").iter().map(|p| base(p)).filter(|p| p != "junk.efi").collect();
    assert_eq!(ours, theirs, "order differs:\nbootctl: {theirs_json}\nlifeboat: {list}");
    assert_eq!(
        ours,
        [
            "foreign-6.1.efi".to_owned(),
            "other+2-1.efi".into(),
            format!("{TOKEN}-3-6.1.0-test+3-0.conf"),
            format!("{TOKEN}-2-6.1.0-test+3-0.conf"),
            format!("{TOKEN}-1-6.1.0-test+3-0.conf"),
            "zsigned-1.2.efi".into(),
        ]
    );
    drop(tmp);

    // Default and one-shot accept a UKI's id and globs of it.
    let out = lb(&["boot", "set-default", "Foreign-6.1.efi"]);
    assert!(out.contains("now foreign-6.1.efi"), "{out}");
    check("set-default");
    let lc = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    assert!(lc.contains("default foreign-6.1.efi\n"), "{lc}");
    let list = lb(&["--json", "boot", "list"]);
    assert!(list.contains("\"id\":\"foreign-6.1.efi\"") && list.contains("\"default\":true"), "{list}");
    let def: Vec<&str> = list.split("{\"id\":").filter(|e| e.contains("\"default\":true")).collect();
    assert!(def.len() == 1 && def[0].starts_with("\"foreign-6.1.efi\""), "{list}");
    lb(&["boot", "set-oneshot", "other*"]);
    check("set-oneshot");
    let raw = fs::read(vars.join(format!("LoaderEntryOneShot-{LOADER_GUID}"))).unwrap();
    let mut want = vec![7u8, 0, 0, 0];
    for u in "other+2-1.efi".encode_utf16().chain([0]) {
        want.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(raw, want, "LoaderEntryOneShot names the UKI with its counter, as systemd-boot 252 ids it");
    lb(&["boot", "set-default", "3"]);
    check("set-default of a transaction");
    lb(&["boot", "bless", "--entry", &format!("{TOKEN}-3-6.1.0-test+3-0.conf")]);
    check("bless");
    let out = lb(&["boot", "bless", "--entry", "other+2-1.efi"]);
    assert!(out.contains("not lifeboat's UKI; left as it is"), "{out}");
    check("bless of a foreign UKI");
    lb(&["state", "prune", "--keep", "1"]);
    check("prune (with its sync)");
    lb(&["boot", "sync"]);
    check("sync after prune");
}

#[test]
fn secure_boot_state_and_what_the_firmware_would_refuse() {
    need(&["objcopy", "sbsign", "openssl"]);
    let s = Scratch::new("uki-sb");
    let (root, img) = setup(&s);
    let a = s.join("a.efi");
    objcopy_uki(&s, &a, "ID=plain\n", None, None);
    put(&img, &a, "EFI/Linux/plain.efi");
    let signed = s.join("signed.efi");
    sbsign(&s, &a, &signed);
    put(&img, &signed, "EFI/Linux/signed.efi");
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    let var = |name: &str, guid: &str, data: &[u8]| {
        let mut b = vec![6u8, 0, 0, 0];
        b.extend_from_slice(data);
        fs::write(vars.join(format!("{name}-{guid}")), b).unwrap();
    };
    let lb = |extra: &[&str]| -> String {
        let mut v = vec!["--root", r(&root), "--esp", img.as_str(), "--efivars", r(&vars)];
        v.extend_from_slice(extra);
        ok(&v)
    };
    lb(&["boot", "install", "--loader", SDBOOT]);
    lb(&["boot", "sync"]);
    // Secure Boot off: the state is shown, nothing is judged.
    var("SecureBoot", GLOBAL_GUID, &[0]);
    var("SetupMode", GLOBAL_GUID, &[1]);
    let o = run(&["--root", r(&root), "--esp", &img, "--efivars", r(&vars), "boot", "status"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("secure boot: off") && out.contains("setup mode:  on"), "{out}");
    assert!(!err.contains("warning"), "{err}");
    // On, in user mode, with the loader's and the stub's features.
    var("SecureBoot", GLOBAL_GUID, &[1]);
    var("SetupMode", GLOBAL_GUID, &[0]);
    var("DeployedMode", GLOBAL_GUID, &[0]);
    var("LoaderFeatures", LOADER_GUID, &((1u64 << 0) | (1 << 4) | (1 << 8)).to_le_bytes());
    var("StubFeatures", LOADER_GUID, &((1u64 << 0) | (1 << 3)).to_le_bytes());
    let mut info = Vec::new();
    for u in "systemd-stub 252.39-1~deb12u2".encode_utf16().chain([0]) {
        info.extend_from_slice(&u.to_le_bytes());
    }
    var("StubInfo", LOADER_GUID, &info);
    let o = run(&["--root", r(&root), "--esp", &img, "--efivars", r(&vars), "boot", "status"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("secure boot: on\n") && out.contains("setup mode:  off"), "{out}");
    assert!(out.contains("audit mode:  absent; deployed mode: off"), "{out}");
    assert!(
        out.contains("loader features: Menu timeout control, Boot counting, Support Type #1 sort-key field"),
        "{out}"
    );
    assert!(out.contains("stub features: Stub sets ESP information, Measures kernel+command line+sysexts"), "{out}");
    assert!(out.contains("stub info: systemd-stub 252.39-1~deb12u2"), "{out}");
    // Debian's systemd-boot is unsigned (shim's signature is on the signed
    // package); the test kernels are not PE images; one UKI is unsigned.
    assert!(err.contains("the loader EFI/systemd/systemd-bootx64.efi is unsigned"), "{err}");
    assert!(err.contains("the loader EFI/BOOT/BOOTX64.EFI is unsigned"), "{err}");
    assert!(err.contains("the UKI EFI/Linux/plain.efi is unsigned"), "{err}");
    assert!(!err.contains("signed.efi is"), "the sbsign-ed UKI is signed: {err}");
    assert!(err.contains(&format!("of entry {TOKEN}-3-6.1.0-test.conf is not a PE image")), "{err}");
    let j = lb(&["--json", "boot", "status"]);
    assert!(
        j.contains(
            "\"secure_boot\":true,\"setup_mode\":false,\"audit_mode\":null,\"deployed_mode\":false,\"enforcing\":true"
        ),
        "{j}"
    );
    assert!(j.contains("\"id\":\"signed.efi\"") && j.contains("\"signed\":true"), "{j}");
    assert!(
        j.contains("\"feature_names\":[\"Stub sets ESP information\",\"Measures kernel+command line+sysexts\"]"),
        "{j}"
    );
    // A UKI lifeboat made (the entry token's name, `lifeboat.tx=` of that name):
    // listed as the transaction's, and blessed by renaming it.
    let ours = s.join("ours.efi");
    objcopy_uki(&s, &ours, "ID=testos\nVERSION_ID=3\n", Some("root=x lifeboat.tx=3\n"), None);
    let counted = format!("{TOKEN}-3-6.1.0-test+1-0.efi");
    put(&img, &ours, &format!("EFI/Linux/{counted}"));
    let j = lb(&["--json", "boot", "list"]);
    assert!(j.contains(&format!("\"id\":\"{counted}\",\"kind\":\"type2\"")), "{j}");
    let at = j.find(&counted).unwrap();
    assert!(j[at..].contains("\"transaction\":3,\"owner\":\"lifeboat\""), "{j}");
    let out = lb(&["boot", "bless", "--entry", &counted]);
    assert!(out.contains(&format!("blessed: {counted} -> {TOKEN}-3-6.1.0-test.efi")), "{out}");
    let o = run(&["disk", "cat", &format!("{img}:esp:EFI/Linux/{TOKEN}-3-6.1.0-test.efi")]);
    assert!(o.status.success() && o.stdout == fs::read(&ours).unwrap(), "the blessed UKI is the same bytes");
    // A malformed variable is named as unreadable; the others and the rest of
    // the status still show.
    var("StubFeatures", LOADER_GUID, &[1, 2, 3]);
    let out = lb(&["boot", "status"]);
    assert!(out.contains("StubFeatures: unreadable") && out.contains("entries:"), "{out}");
    assert!(!out.contains("secure boot: unknown"), "{out}");
}

#[test]
fn ukis_on_xbootldr_are_entries_too_whatever_the_case_of_their_names() {
    need(&["objcopy"]);
    let s = Scratch::new("uki-xb");
    let (root, _) = setup(&s);
    let img = s.join("x.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "128M", "--esp-size", "40M", "--xbootldr-size", "64M", "--root-size", "0"]);
    let u = s.join("u.efi");
    objcopy_uki(&s, &u, "PRETTY_NAME=\"On XBOOTLDR\"\nID=aaa\n", Some("x=1\n"), Some("6.9.0\n"));
    // FAT ignores case: the loader takes EFI/LINUX/*.EFI as it takes EFI/Linux/*.efi.
    ok(&["disk", "put", r(&u), &format!("{img}:xbootldr:EFI/LINUX/XB-Kernel.EFI")]);
    ok(&["disk", "put", r(&u), &format!("{img}:esp:EFI/Linux/esp-kernel.efi")]);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let j = ok(&["--root", r(&root), "--esp", &img, "--json", "boot", "list"]);
    let ids = strings_of(&j, "id");
    assert_eq!(ids[..2], ["xb-kernel.efi".to_owned(), "esp-kernel.efi".into()], "{j}");
    let at = j.find("\"id\":\"xb-kernel.efi\"").unwrap();
    assert!(j[at..].split('}').next().unwrap().contains("\"on_esp\":false"), "{j}");
    let at = j.find("\"id\":\"esp-kernel.efi\"").unwrap();
    assert!(j[at..].split('}').next().unwrap().contains("\"on_esp\":true"), "{j}");
    ok(&["--root", r(&root), "--esp", &img, "boot", "set-default", "xb-*"]);
    let lc = ok(&["disk", "cat", &format!("{img}:esp:loader/loader.conf")]);
    assert!(lc.contains("default xb-*\n"), "{lc}");
    let o = run(&["disk", "cat", &format!("{img}:xbootldr:EFI/Linux/XB-Kernel.EFI")]);
    assert!(o.status.success() && o.stdout == fs::read(&u).unwrap(), "the UKI on XBOOTLDR is unchanged");
}
