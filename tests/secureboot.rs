//! Secure Boot end to end on FAT images, judged by independent tools: `sbverify`
//! (sbsigntool) checks every signature lifeboat made against the certificate,
//! `objdump`/`objcopy` read the images' sections, `fsck.fat` the volume; keys
//! are made by `openssl`, enrollment lists by efitools. Every oracle is required:
//! a missing one fails the test (scripts/setup.sh installs them).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const TOKEN: &str = "00112233445566778899aabbccddeeff";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn r(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn need(tool: &str) {
    assert!(have(tool), "{tool} is missing: scripts/setup.sh installs it");
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A root with three transactions (each with the real systemd-stub), the db
/// key and certificate made by openssl, and a disk image.
fn setup(s: &Scratch) -> (PathBuf, String) {
    for t in ["openssl", "sbverify", "objdump", "objcopy", "fsck.fat"] {
        need(t);
    }
    assert!(Path::new(STUB).exists(), "{STUB} is missing: scripts/setup.sh installs systemd-boot-efi");
    let root = s.join("root");
    fs::create_dir_all(&root).unwrap();
    for v in 1..=3 {
        let t = s.join(&format!("t{v}"));
        tree(&t, v);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\nPRETTY_NAME=\"Test OS 1\"\n", 0o644);
        write(&t.join("lib/kernel/cmdline.d/10-base.cmdline"), b"quiet\n", 0o644);
        write(&t.join("lib/kernel/6.1.0-test/00-early.initrd"), b"early initrd", 0o644);
        fs::create_dir_all(t.join("lib/systemd/boot/efi")).unwrap();
        fs::copy(STUB, t.join("lib/systemd/boot/efi/linuxx64.efi.stub")).unwrap();
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    write(&root.join("etc/machine-id"), format!("{TOKEN}\n").as_bytes(), 0o444);
    let sb = root.join("etc/lifeboat/secureboot");
    fs::create_dir_all(&sb).unwrap();
    tool(
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=lifeboat test db/",
            "-keyout",
            r(&sb.join("db.key")),
            "-out",
            r(&sb.join("db.crt")),
        ],
    );
    fs::set_permissions(sb.join("db.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let img = s.join("d.img").display().to_string();
    ok(&["disk", "create", &img, "--size", "96M", "--esp-size", "64M", "--root-size", "0"]);
    write(&s.join("rescue.initrd"), b"070701 pretend rescue initrd", 0o644);
    (root, img)
}

/// Whether sbverify accepts `file` under the certificate `cert`.
fn sbverifies(cert: &Path, file: &Path) -> bool {
    let o = Command::new("sbverify").args(["--cert", r(cert), r(file)]).output().expect("sbverify is missing");
    o.status.success()
}

/// `image` with one byte flipped in the middle of the public key of the
/// certificate (`cert`, PEM) its signature embeds; the RSA signature itself
/// is untouched.
fn flip_embedded_key(image: &[u8], cert: &Path, s: &Scratch) -> Vec<u8> {
    let der = Command::new("openssl").args(["x509", "-in", r(cert), "-outform", "DER"]).output().unwrap().stdout;
    let pubpem = s.join("pub.pem");
    tool("openssl", &["x509", "-in", r(cert), "-noout", "-pubkey", "-out", r(&pubpem)]);
    let spki =
        Command::new("openssl").args(["pkey", "-pubin", "-outform", "DER", "-in", r(&pubpem)]).output().unwrap().stdout;
    let find = |hay: &[u8], n: &[u8]| hay.windows(n.len()).position(|w| w == n).expect("certificate not embedded");
    let at = find(image, &der) + find(&der, &spki) + spki.len() / 2;
    let mut out = image.to_vec();
    out[at] ^= 0x01;
    out
}

fn cat(img: &str, path: &str) -> Vec<u8> {
    let o = run(&["disk", "cat", &format!("{img}:esp:{path}")]);
    assert!(o.status.success(), "disk cat {path}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn ls(img: &str, dir: &str) -> String {
    let o = run(&["disk", "ls", &format!("{img}:esp:{dir}")]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fsck(img: &str, s: &Scratch) {
    let data = fs::read(img).unwrap();
    let p = s.join("esp.part");
    fs::write(&p, &data[1 << 20..65 << 20]).unwrap();
    let o = Command::new("fsck.fat").args(["-n", r(&p)]).output().unwrap();
    assert!(o.status.success(), "fsck.fat:\n{}", String::from_utf8_lossy(&o.stdout));
}

/// sbverify against the root's certificate, and the image's `.cmdline`.
fn verified_cmdline(s: &Scratch, root: &Path, bytes: &[u8], name: &str) -> String {
    let f = s.join(name);
    fs::write(&f, bytes).unwrap();
    tool("sbverify", &["--cert", r(&root.join("etc/lifeboat/secureboot/db.crt")), r(&f)]);
    let secs = tool("objdump", &["-h", r(&f)]);
    for sec in [".osrel", ".cmdline", ".uname", ".linux", ".initrd"] {
        assert!(secs.contains(sec), "{name} has no {sec}:\n{secs}");
    }
    let c = s.join(&format!("{name}.cmdline"));
    tool("objcopy", &["-O", "binary", "--only-section=.cmdline", r(&f), r(&c)]);
    String::from_utf8(fs::read(&c).unwrap()).unwrap()
}

#[test]
fn signed_ukis_per_transaction_synced_and_collected() {
    let s = Scratch::new("sb-sync");
    let (root, img) = setup(&s);
    let initrd = s.join("rescue.initrd");
    // Something else's images in EFI/Linux, one even named in our namespace:
    // neither carries lifeboat.tx=9, so neither is ours.
    let foreign = s.join("foreign.efi");
    fs::write(&foreign, b"MZ not ours").unwrap();
    ok(&["disk", "put", r(&foreign), &format!("{img}:esp:EFI/Linux/other-os.efi")]);
    ok(&["disk", "put", r(&foreign), &format!("{img}:esp:EFI/Linux/{TOKEN}-9-6.1.0-test.efi")]);

    let out = ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--initrd", r(&initrd)]);
    assert!(out.contains("synced 3 entries"), "{out}");
    let entries = ls(&img, "EFI/Linux");
    for tx in 1..=3 {
        let name = format!("{TOKEN}-{tx}-6.1.0-test.efi");
        assert!(entries.contains(&name), "no {name}:\n{entries}");
        let cmd = verified_cmdline(&s, &root, &cat(&img, &format!("EFI/Linux/{name}")), &name);
        assert!(cmd.split_whitespace().any(|w| w == format!("lifeboat.tx={tx}")), "{name}: {cmd:?}");
        assert!(cmd.split_whitespace().any(|w| w == "quiet"), "{name}: {cmd:?}");
    }
    // No Type #1 entry, no kernel copy beside the images.
    assert!(!ls(&img, "loader/entries").contains(".conf"));
    assert!(!ls(&img, "").contains(TOKEN), "{}", ls(&img, ""));
    fsck(&img, &s);

    // The same inputs sign to the same bytes: nothing to do.
    let again = ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot"]);
    assert!(again.contains("up to date"), "{again}");

    // One byte of the public key in the certificate the signature carries:
    // the firmware (sbverify) refuses the image, so sync rewrites it.
    let cert = root.join("etc/lifeboat/secureboot/db.crt");
    let name = format!("{TOKEN}-3-6.1.0-test.efi");
    let flipped = s.join("certflip.efi");
    fs::write(&flipped, flip_embedded_key(&cat(&img, &format!("EFI/Linux/{name}")), &cert, &s)).unwrap();
    assert!(!sbverifies(&cert, &flipped), "sbverify accepts a changed embedded certificate: the test tests nothing");
    ok(&["disk", "put", r(&flipped), &format!("{img}:esp:EFI/Linux/{name}")]);
    let again = ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot"]);
    assert!(!again.contains("up to date"), "{again}");
    verified_cmdline(&s, &root, &cat(&img, &format!("EFI/Linux/{name}")), &name);

    // Fewer kept: the oldest image goes, the foreign ones stay.
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--keep", "2"]);
    let entries = ls(&img, "EFI/Linux");
    assert!(!entries.contains(&format!("{TOKEN}-1-")), "{entries}");
    assert_eq!(cat(&img, "EFI/Linux/other-os.efi"), b"MZ not ours");
    assert_eq!(cat(&img, &format!("EFI/Linux/{TOKEN}-9-6.1.0-test.efi")), b"MZ not ours");

    // Secure Boot off again: Type #1 entries replace the images.
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync"]);
    let entries = ls(&img, "EFI/Linux");
    assert!(!entries.contains(&format!("{TOKEN}-2-")) && !entries.contains(&format!("{TOKEN}-3-")), "{entries}");
    assert!(ls(&img, "loader/entries").contains(&format!("{TOKEN}-3-6.1.0-test.conf")));
    assert_eq!(cat(&img, "EFI/Linux/other-os.efi"), b"MZ not ours");
    fsck(&img, &s);
}

#[test]
fn config_and_boot_counting_name_the_image() {
    let s = Scratch::new("sb-conf");
    let (root, img) = setup(&s);
    write(&root.join("etc/lifeboat/lifeboat.conf"), b"secure-boot = yes\ntries = 3\n", 0o644);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--no-initrd"]);
    let entries = ls(&img, "EFI/Linux");
    assert!(entries.contains(&format!("{TOKEN}-3-6.1.0-test+3-0.efi")), "{entries}");
    let lc = String::from_utf8(cat(&img, "loader/loader.conf")).unwrap();
    // The active entry is being tried: the loader's own order decides.
    assert!(lc.contains(&format!("default {TOKEN}-*")), "{lc}");

    // A value that is no yes or no refuses to sync at all: guessing "off"
    // would delete every signed image. Any case of the accepted words is taken.
    let conf = root.join("etc/lifeboat/lifeboat.conf");
    for bad in ["maybe", "", "enabled"] {
        write(&conf, format!("tries = 3\nsecure-boot = {bad}\n").as_bytes(), 0o644);
        let e = fails(&["--root", r(&root), "--esp", &img, "boot", "sync", "--no-initrd"]);
        assert!(e.contains("lifeboat.conf") && e.contains("line 2") && e.contains("secure-boot"), "{e}");
        assert_eq!(ls(&img, "EFI/Linux"), entries, "{bad:?}: the images changed");
    }
    for good in ["YES", "On", "True"] {
        write(&conf, format!("tries = 3\nsecure-boot = {good}\n").as_bytes(), 0o644);
        ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--no-initrd"]);
        assert_eq!(ls(&img, "EFI/Linux"), entries, "{good}");
    }
}

#[test]
fn keys_are_checked_before_anything_is_written() {
    let s = Scratch::new("sb-keys");
    let (root, img) = setup(&s);
    let key = root.join("etc/lifeboat/secureboot/db.key");
    let before = ls(&img, "");
    let sync = ["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--no-initrd"];

    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let e = fails(&sync);
    assert!(e.contains("db.key") && e.contains("group or others") && e.contains("0640"), "{e}");
    let e = fails(&["--root", r(&root), "--esp", &img, "boot", "install", "--secure-boot"]);
    assert!(e.contains("group or others"), "{e}");

    // An encrypted key cannot sign unattended: refused by name.
    let enc = s.join("enc.key");
    tool("openssl", &["pkey", "-in", r(&key), "-aes256", "-passout", "pass:x", "-out", r(&enc)]);
    fs::set_permissions(&enc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    write(&root.join("etc/lifeboat/lifeboat.conf"), format!("secure-boot-key = {}\n", r(&enc)).as_bytes(), 0o644);
    let e = fails(&sync);
    assert!(e.contains("encrypted"), "{e}");

    // A key that is not a regular file (here a symlink) is refused.
    fs::remove_file(root.join("etc/lifeboat/lifeboat.conf")).unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let moved = s.join("real.key");
    fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    let e = fails(&sync);
    assert!(e.contains("not a regular file"), "{e}");
    fs::remove_file(&key).unwrap();
    let e = fails(&sync);
    assert!(e.contains("no key here"), "{e}");
    assert_eq!(ls(&img, ""), before, "a refused key must leave the ESP as it was");
    // The key's content is never printed.
    let secret = fs::read_to_string(&moved).unwrap();
    let line = secret.lines().nth(2).unwrap();
    assert!(!e.contains(line));

    // Who may swap the key: a directory anyone may write, a key owned by
    // someone else. Both refused before anything is written.
    use std::os::unix::fs::PermissionsExt;
    fs::rename(&moved, &key).unwrap();
    let sb = root.join("etc/lifeboat/secureboot");
    fs::set_permissions(&sb, fs::Permissions::from_mode(0o777)).unwrap();
    let e = fails(&sync);
    assert!(e.contains("secureboot") && e.contains("writable by group or others") && e.contains("0777"), "{e}");
    fs::set_permissions(&sb, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o775)).unwrap();
    let e = fails(&sync);
    assert!(e.contains("writable by group or others") && e.contains("0775"), "{e}");
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(nix_like_root(), "this part needs root (chown): the tests run as root in CI");
    std::os::unix::fs::chown(&key, Some(4242), None).unwrap();
    let e = fails(&sync);
    assert!(e.contains("db.key") && e.contains("owned by uid 4242"), "{e}");
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();

    // The key's directory a symlink out of the root (absolute, so resolved on
    // the host): not followed. A relative path with `..` leaving the root: refused.
    let outside = s.join("outside-sb");
    fs::rename(&sb, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &sb).unwrap();
    let e = fails(&sync);
    assert!(e.contains("secureboot") && e.contains("without following symlinks"), "{e}");
    fs::remove_file(&sb).unwrap();
    fs::rename(&outside, &sb).unwrap();
    let conf = root.join("etc/lifeboat/lifeboat.conf");
    write(&conf, b"secure-boot-key = ../outside-sb/db.key\n", 0o644);
    let e = fails(&sync);
    assert!(e.contains("leaves the root"), "{e}");
    assert_eq!(ls(&img, ""), before, "a refused key must leave the ESP as it was");

    // Not an RSA key: said so, the path once.
    let ec = s.join("ec.key");
    tool("openssl", &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", r(&ec)]);
    fs::set_permissions(&ec, fs::Permissions::from_mode(0o600)).unwrap();
    write(&conf, format!("secure-boot-key = {}\n", r(&ec)).as_bytes(), 0o644);
    let e = fails(&sync);
    assert!(e.contains("an EC key: only RSA keys") && e.matches("ec.key").count() == 1, "{e}");
    let ed = s.join("ed.key");
    tool("openssl", &["genpkey", "-algorithm", "ED25519", "-out", r(&ed)]);
    fs::set_permissions(&ed, fs::Permissions::from_mode(0o600)).unwrap();
    write(&conf, format!("secure-boot-key = {}\n", r(&ed)).as_bytes(), 0o644);
    let e = fails(&sync);
    assert!(e.contains("an Ed25519 key: only RSA keys") && !e.contains("OID"), "{e}");
    let pss = s.join("pss.key");
    tool("openssl", &["genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", r(&pss)]);
    fs::set_permissions(&pss, fs::Permissions::from_mode(0o600)).unwrap();
    write(&conf, format!("secure-boot-key = {}\n", r(&pss)).as_bytes(), 0o644);
    let e = fails(&sync);
    assert!(e.contains("an RSA-PSS key") && !e.contains("OID"), "{e}");

    // An absolute path in lifeboat.conf is taken as written (outside the root).
    let abs = s.join("abs");
    fs::create_dir_all(&abs).unwrap();
    fs::set_permissions(&abs, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(&key, abs.join("db.key")).unwrap();
    fs::set_permissions(abs.join("db.key"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&conf, format!("secure-boot-key = {}\n", r(&abs.join("db.key"))).as_bytes(), 0o644);
    ok(&sync);
}

fn nix_like_root() -> bool {
    String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0"
}

#[test]
fn install_signs_the_loader_and_places_enrollment_keys() {
    let s = Scratch::new("sb-install");
    let (root, img) = setup(&s);
    for t in ["cert-to-efi-sig-list", "sign-efi-sig-list"] {
        need(t);
    }
    // The tree's systemd-boot, as boot install takes it.
    let t = s.join("t4");
    tree(&t, 4);
    fs::create_dir_all(t.join("lib/systemd/boot/efi")).unwrap();
    fs::copy("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", t.join("lib/systemd/boot/efi/systemd-bootx64.efi"))
        .unwrap();
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    // PK, KEK and db lists signed as efitools makes them, all from the test key.
    let keys = s.join("mykeys");
    fs::create_dir_all(&keys).unwrap();
    let (k, c) = (root.join("etc/lifeboat/secureboot/db.key"), root.join("etc/lifeboat/secureboot/db.crt"));
    let esl = s.join("db.esl");
    tool("cert-to-efi-sig-list", &["-g", "11111111-2222-3333-4444-555555555555", r(&c), r(&esl)]);
    for (var, out) in [("PK", "PK.auth"), ("KEK", "KEK.auth"), ("db", "db.auth")] {
        tool("sign-efi-sig-list", &["-k", r(&k), "-c", r(&c), var, r(&esl), r(&keys.join(out))]);
    }
    let out = ok(&["--root", r(&root), "--esp", &img, "boot", "install", "--secure-boot", "--enroll-keys", r(&keys)]);
    assert!(out.contains("loader/keys/mykeys"), "{out}");
    for p in ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"] {
        let f = s.join("loader.efi");
        fs::write(&f, cat(&img, p)).unwrap();
        tool("sbverify", &["--cert", r(&c), r(&f)]);
    }
    for f in ["PK.auth", "KEK.auth", "db.auth"] {
        assert_eq!(cat(&img, &format!("loader/keys/mykeys/{f}")), fs::read(keys.join(f)).unwrap());
    }
    let lc = String::from_utf8(cat(&img, "loader/loader.conf")).unwrap();
    assert!(lc.lines().any(|l| l.trim() == "secure-boot-enroll manual"), "{lc}");
    // Nothing private on the ESP.
    let key_text = fs::read(&k).unwrap();
    let esp = fs::read(&img).unwrap();
    assert!(!esp.windows(64).any(|w| w == &key_text[64..128]), "the private key is on the disk");
    // Again: the signed loader is up to date.
    let again = ok(&["--root", r(&root), "--esp", &img, "boot", "install", "--secure-boot"]);
    assert!(again.contains("already installed"), "{again}");
    // A changed certificate inside the loader's signature: the firmware
    // refuses it, so install writes the loader again.
    let flipped = s.join("Lflip.efi");
    fs::write(&flipped, flip_embedded_key(&cat(&img, "EFI/systemd/systemd-bootx64.efi"), &c, &s)).unwrap();
    assert!(!sbverifies(&c, &flipped), "sbverify accepts a changed embedded certificate: the test tests nothing");
    ok(&["disk", "put", r(&flipped), &format!("{img}:esp:EFI/systemd/systemd-bootx64.efi")]);
    let again = ok(&["--root", r(&root), "--esp", &img, "boot", "install", "--secure-boot"]);
    let line = again.lines().find(|l| l.starts_with("EFI/systemd/systemd-bootx64.efi:")).unwrap_or("");
    assert!(line.contains("->") && !line.contains("already installed"), "{again}");
    let f = s.join("loader.efi");
    fs::write(&f, cat(&img, "EFI/systemd/systemd-bootx64.efi")).unwrap();
    tool("sbverify", &["--cert", r(&c), r(&f)]);
    // A loader signed already is refused by name, in one readable sentence.
    let e = fails(&["--root", r(&root), "--esp", &img, "boot", "install", "--secure-boot", "--loader", r(&f)]);
    assert!(e.contains("is signed already") && !e.contains("  "), "{e}");
    fsck(&img, &s);
    // A file that is not a signed list is refused before anything is written.
    fs::write(keys.join("db.auth"), b"plain bytes, not an authenticated variable").unwrap();
    let e = fails(&["--root", r(&root), "--esp", &img, "boot", "install", "--enroll-keys", r(&keys)]);
    assert!(e.contains("db.auth"), "{e}");
}

#[test]
fn images_that_do_not_all_fit_drop_the_oldest_transaction() {
    let s = Scratch::new("sb-space");
    let (root, img) = setup(&s);
    // Each transaction a kernel of its own, 24 MB: three images do not fit the
    // 64 MiB ESP, two do.
    for v in 4..=6u8 {
        let t = s.join(&format!("big{v}"));
        tree(&t, v as u32);
        write(&t.join("lib/kernel/6.1.0-test/vmlinuz"), &vec![v; 24 << 20], 0o644);
        write(&t.join("lib/os-release"), b"NAME=\"Test OS\"\nID=testos\n", 0o644);
        fs::create_dir_all(t.join("lib/systemd/boot/efi")).unwrap();
        fs::copy(STUB, t.join("lib/systemd/boot/efi/linuxx64.efi.stub")).unwrap();
        ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    }
    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--no-initrd", "--keep", "3"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(format!("{out}{err}").contains("transactions [4] get none"), "{out}\n{err}");
    let entries = ls(&img, "EFI/Linux");
    assert!(entries.contains(&format!("{TOKEN}-6-")) && entries.contains(&format!("{TOKEN}-5-")), "{entries}");
    assert!(!entries.contains(&format!("{TOKEN}-4-")), "{entries}");
    fsck(&img, &s);
}

/// The file offset and size of a section, as objdump reads it.
fn section(file: &Path, name: &str) -> (usize, usize) {
    let h = tool("objdump", &["-h", r(file)]);
    let l = h.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap_or_else(|| panic!("no {name}:\n{h}"));
    let f: Vec<&str> = l.split_whitespace().collect();
    (usize::from_str_radix(f[5], 16).unwrap(), usize::from_str_radix(f[2], 16).unwrap())
}

#[test]
fn status_tells_a_tampered_image_from_a_signed_one() {
    let s = Scratch::new("sb-status");
    let (root, img) = setup(&s);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--no-initrd"]);
    // Firmware enforcing Secure Boot, with a malformed (0-byte) AuditMode.
    let vars = s.join("efivars");
    fs::create_dir_all(&vars).unwrap();
    let global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    for (n, d) in [("SecureBoot", &[1u8][..]), ("SetupMode", &[0]), ("AuditMode", &[])] {
        let mut b = vec![6, 0, 0, 0];
        b.extend_from_slice(d);
        fs::write(vars.join(format!("{n}-{global}")), b).unwrap();
    }
    let status = |json: bool| {
        let mut a = vec!["--root", r(&root), "--esp", &img, "--efivars", r(&vars)];
        if json {
            a.push("--json");
        }
        a.extend(["boot", "status"]);
        let o = run(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (out, err) = status(false);
    assert!(out.contains("secure boot: on") && out.contains("setup mode:  off"), "{out}");
    assert!(out.contains("AuditMode: unreadable"), "{out}");
    assert!(!err.contains("warning"), "{err}");
    let name = format!("{TOKEN}-3-6.1.0-test.efi");
    assert!(out.lines().any(|l| l.contains(&name) && l.ends_with(" signed (by the root's db certificate)")), "{out}");
    // A signature over the image but carrying another certificate: signed,
    // not by the root's db certificate.
    let cert = root.join("etc/lifeboat/secureboot/db.crt");
    let two = format!("{TOKEN}-2-6.1.0-test.efi");
    let f2 = s.join("two.efi");
    fs::write(&f2, flip_embedded_key(&cat(&img, &format!("EFI/Linux/{two}")), &cert, &s)).unwrap();
    ok(&["disk", "put", r(&f2), &format!("{img}:esp:EFI/Linux/{two}")]);
    let (out, _) = status(false);
    assert!(
        out.lines().any(|l| l.contains(&two) && l.ends_with(" signed (not by the root's db certificate)")),
        "{out}"
    );
    let (j, _) = status(true);
    assert!(j.contains("\"signed_by_root_db\":false") && j.contains("\"signed_by_root_db\":true"), "{j}");

    // One byte of .linux changed after signing.
    let f = s.join("t.efi");
    fs::write(&f, cat(&img, &format!("EFI/Linux/{name}"))).unwrap();
    let (at, len) = section(&f, ".linux");
    let mut b = fs::read(&f).unwrap();
    b[at + len / 2] ^= 0x01;
    fs::write(&f, &b).unwrap();
    assert!(
        !sbverifies(&root.join("etc/lifeboat/secureboot/db.crt"), &f),
        "sbverify accepts it: the test tests nothing"
    );
    ok(&["disk", "put", r(&f), &format!("{img}:esp:EFI/Linux/{name}")]);
    let (out, err) = status(false);
    let line = out.lines().find(|l| l.contains(&name)).unwrap_or("");
    assert!(line.contains("signature does not match the image (tampered)"), "{out}");
    assert!(err.contains("warning") && err.contains(&name) && err.contains("tampered"), "{err}");
    let (j, _) = status(true);
    let at = j.find(&format!("\"id\":\"{}\"", name.to_lowercase())).expect("entry in the JSON");
    let entry = &j[at..at + j[at..].find('}').unwrap()];
    assert!(entry.contains("\"signed\": false") || entry.contains("\"signed\":false"), "{j}");
    assert!(entry.contains("tampered"), "{j}");
}

#[test]
fn an_active_transaction_without_a_stub_is_not_the_default_under_secure_boot() {
    let s = Scratch::new("sb-nostub");
    let (root, img) = setup(&s);
    // Transaction 4: no systemd-stub in its tree.
    let t = s.join("t4");
    tree(&t, 4);
    ok(&["--root", r(&root), "state", "commit", "--from", r(&t)]);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--no-initrd"]);
    let lc = String::from_utf8(cat(&img, "loader/loader.conf")).unwrap();
    assert!(lc.contains(&format!("default {TOKEN}-4-*")), "{lc}");

    let o = run(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--no-initrd"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains("warning") && err.contains("active transaction 4") && err.contains("no systemd-stub"),
        "{err}"
    );
    let lc = String::from_utf8(cat(&img, "loader/loader.conf")).unwrap();
    assert!(lc.contains(&format!("default {TOKEN}-3-*")), "{lc}");
    let entries = ls(&img, "EFI/Linux");
    assert!(entries.contains(&format!("{TOKEN}-3-6.1.0-test.efi")), "{entries}");
    fsck(&img, &s);
}

#[test]
fn the_tries_note_counts_the_images_written() {
    let s = Scratch::new("sb-tries");
    let (root, img) = setup(&s);
    ok(&["--root", r(&root), "--esp", &img, "boot", "sync", "--secure-boot", "--no-initrd", "--keep", "2"]);
    let o = run(&[
        "--root",
        r(&root),
        "--esp",
        &img,
        "boot",
        "sync",
        "--secure-boot",
        "--no-initrd",
        "--keep",
        "3",
        "--tries",
        "3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(ls(&img, "EFI/Linux").contains(&format!("{TOKEN}-1-6.1.0-test+3-0.efi")), "{}", ls(&img, "EFI/Linux"));
    assert!(err.contains("the entries this sync writes (transactions [1]); the 2 entries already"), "{err}");
}
