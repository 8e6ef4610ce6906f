//! Authenticode signing and verification against sbsigntool: `sbverify` accepts
//! lifeboat's signatures on systemd-boot and on a UKI, `sbsign` of the same input
//! carries the same image hash, `verify` accepts sbsign's signatures, and a
//! one-byte change after signing is rejected by both. The key is OVMF's snakeoil
//! key, decrypted with openssl.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use lifeboat_pe::{
    authenticode_sha256, build_uki, sign, sign_replacing, signed_digest, verify, Error, PeImage, SigningKey, UkiParts,
    Verdict,
};

const GOOD: Verdict = Verdict::SignedBy { matches_cert: true, digest_ok: true };

struct Keys {
    dir: TempDir,
    key: PathBuf,
}

/// The snakeoil key decrypted (mode 0600) next to scratch files.
fn keys(name: &str) -> Keys {
    let dir = TempDir::new(name);
    let key = dir.path("key.pem");
    run(Command::new("openssl").args(["pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out"]).arg(&key));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Keys { dir, key }
}

fn snakeoil_cert_der() -> Vec<u8> {
    let out = run(Command::new("openssl").args(["x509", "-in", SNAKEOIL_CERT, "-outform", "DER"]));
    out.stdout
}

/// sbverify's verdict on a file: true when it says the signature is good.
fn sbverify(path: &std::path::Path) -> bool {
    let out = Command::new("sbverify")
        .args(["--cert", SNAKEOIL_CERT])
        .arg(path)
        .output()
        .expect("sbverify is missing: scripts/setup.sh installs sbsigntool");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Signature verification OK")
}

fn sbsign(k: &Keys, input: &[u8], name: &str) -> Vec<u8> {
    let inp = k.dir.write(&format!("{name}.in"), input);
    let out = k.dir.path(&format!("{name}.sbsign"));
    run(Command::new("sbsign")
        .arg("--key")
        .arg(&k.key)
        .args(["--cert", SNAKEOIL_CERT, "--output"])
        .arg(&out)
        .arg(&inp));
    read(out)
}

fn uki() -> Vec<u8> {
    let stub = read(STUB);
    let linux: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7) as u8).collect();
    build_uki(&UkiParts {
        stub: &stub,
        osrel: b"ID=lifeboat\n",
        cmdline: b"quiet",
        uname: Some(b"6.1.0"),
        initrd: b"initrd",
        linux: &linux,
    })
    .unwrap()
}

#[test]
fn sbverify_accepts_lifeboat_signatures_and_sbsign_agrees_on_the_hash() {
    let k = keys("sign-sbverify");
    let key = SigningKey::load(&k.key, SNAKEOIL_CERT.as_ref()).unwrap();
    let cert = snakeoil_cert_der();
    assert_eq!(key.certificate_der(), cert.as_slice());
    for (name, image) in [("systemd-boot", read(SYSTEMD_BOOT)), ("uki", uki())] {
        let signed = sign(&image, &key).unwrap();
        assert_eq!(sign(&image, &key).unwrap(), signed, "{name}: deterministic");
        let pe = PeImage::parse(&signed).unwrap();
        assert!(pe.is_signed());
        let (off, size) = pe.certificate_table().unwrap();
        assert_eq!((off % 8, size % 8, off as usize + size as usize), (0, 0, signed.len()));
        assert_eq!(pe.stored_checksum(), lifeboat_pe::pe_checksum(&signed, pe.checksum_offset()));
        // Everything before the table is the image (but its CheckSum and certificate
        // entry), zero-padded to 8 bytes.
        let mut head = signed[..off as usize].to_vec();
        let dir = pe.cert_dir_offset().unwrap();
        head[dir..dir + 8].copy_from_slice(&image[dir..dir + 8]);
        head[pe.checksum_offset()..pe.checksum_offset() + 4]
            .copy_from_slice(&image[pe.checksum_offset()..pe.checksum_offset() + 4]);
        assert!(head[..image.len()] == image[..] && head[image.len()..].iter().all(|&b| b == 0), "{name}");
        assert!(head.len() - image.len() < 8);
        let path = k.dir.write(&format!("{name}.signed"), &signed);
        assert!(sbverify(&path), "sbverify rejects lifeboat's signature on {name}");
        assert_eq!(verify(&signed, &cert).unwrap(), GOOD, "{name}");

        // sbsign signs the same bytes with the same image hash, and verify accepts it.
        let theirs = sbsign(&k, &image, name);
        let ours_digest = signed_digest(&signed).unwrap().unwrap();
        assert_eq!(signed_digest(&theirs).unwrap().unwrap(), ours_digest, "{name}: image hash differs from sbsign's");
        assert_eq!(authenticode_sha256(&signed).unwrap().as_slice(), ours_digest.as_slice());
        assert_eq!(authenticode_sha256(&theirs).unwrap().as_slice(), ours_digest.as_slice());
        assert_eq!(verify(&theirs, &cert).unwrap(), GOOD, "{name}: verify rejects sbsign's signature");
        // Byte for byte the SpcIndirectDataContent sbsign signs.
        let idc = lifeboat_pe::indirect_data_content(&authenticode_sha256(&signed).unwrap()).unwrap();
        let their_sig = lifeboat_pe::signature_der(&PeImage::parse(&theirs).unwrap()).unwrap().unwrap();
        assert!(their_sig.windows(idc.len()).any(|w| w == idc), "{name}: sbsign's SpcIndirectDataContent differs");
        assert_eq!(verify(&image, &cert).unwrap(), Verdict::Unsigned);

        // One byte changed after signing: both reject it.
        let mut tampered = signed.clone();
        let text = pe.sections().iter().find(|s| s.name == ".text").unwrap().raw_offset as usize;
        tampered[text + 100] ^= 1;
        let tpath = k.dir.write(&format!("{name}.tampered"), &tampered);
        assert!(!sbverify(&tpath), "sbverify accepts a changed {name}");
        assert_eq!(verify(&tampered, &cert).unwrap(), Verdict::SignedBy { matches_cert: true, digest_ok: false });
        let mut tampered = signed.clone();
        let last = tampered.len() - 20;
        tampered[(off as usize + size as usize).min(last) - 300] ^= 0x10;
        let tpath = k.dir.write(&format!("{name}.tampered-sig"), &tampered);
        assert!(!sbverify(&tpath), "sbverify accepts a changed signature on {name}");
        assert!(!matches!(verify(&tampered, &cert), Ok(GOOD)), "verify accepts a changed signature on {name}");

        // Already signed: refused, unless replacing.
        assert!(matches!(sign(&signed, &key), Err(Error::AlreadySigned)));
        assert_eq!(sign_replacing(&signed, &key).unwrap(), signed);
        assert_eq!(sign_replacing(&theirs, &key).unwrap(), signed);
    }
}

#[test]
fn another_certificate_does_not_verify() {
    let k = keys("sign-othercert");
    let other_key = k.dir.path("other.key");
    let other_cert = k.dir.path("other.pem");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(&other_key)
        .arg("-out")
        .arg(&other_cert));
    std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = SigningKey::load(&other_key, &other_cert).unwrap();
    let image = read(SYSTEMD_BOOT);
    let signed = sign(&image, &other).unwrap();
    let path = k.dir.write("other.signed", &signed);
    assert!(!sbverify(&path), "sbverify accepts another key's signature under the snakeoil cert");
    assert_eq!(
        verify(&signed, &snakeoil_cert_der()).unwrap(),
        Verdict::SignedBy { matches_cert: false, digest_ok: true }
    );
    assert_eq!(verify(&signed, other.certificate_der()).unwrap(), GOOD);
}

#[test]
fn keys_are_checked_and_never_shown() {
    let k = keys("sign-keys");
    let cert = std::path::Path::new(SNAKEOIL_CERT);
    let pkcs8 = SigningKey::load(&k.key, cert).unwrap();
    let dbg = format!("{pkcs8:?}");
    assert!(dbg.contains("redacted") && dbg.contains("RSA-2048"), "{dbg}");
    let pem = std::fs::read_to_string(&k.key).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!dbg.contains(&line[..16]), "Debug shows key material: {dbg}");
    }

    // PKCS#1 gives the same key, so the same (deterministic) signature.
    let pkcs1 = k.dir.path("pkcs1.pem");
    run(Command::new("openssl").arg("rsa").arg("-in").arg(&k.key).args(["-traditional", "-out"]).arg(&pkcs1));
    std::fs::set_permissions(&pkcs1, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(&pkcs1).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let image = read(SYSTEMD_BOOT);
    assert_eq!(sign(&image, &SigningKey::load(&pkcs1, cert).unwrap()).unwrap(), sign(&image, &pkcs8).unwrap());

    let err = |p: &std::path::Path, c: &std::path::Path| SigningKey::load(p, c).unwrap_err().to_string();
    std::fs::set_permissions(&pkcs1, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = err(&pkcs1, cert);
    assert!(e.contains("mode 640") && e.contains("pkcs1.pem"), "{e}");
    assert!(err(&k.dir.0, cert).contains("not a regular file"));
    // The snakeoil key as shipped is encrypted.
    let enc = k.dir.write("enc.key", &read(SNAKEOIL_KEY));
    std::fs::set_permissions(&enc, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(err(&enc, cert).contains("encrypted"));
    // A certificate for another key.
    let other_key = k.dir.path("other.key");
    let other_cert = k.dir.path("other.pem");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(&other_key)
        .arg("-out")
        .arg(&other_cert));
    assert!(err(&k.key, &other_cert).contains("not for the key"));
    // Too small a key.
    let small = k.dir.path("small.key");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out"])
        .arg(&small));
    std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(err(&small, cert).contains("1024 bits"));
    // Not a key; not a certificate.
    assert!(err(cert, cert).contains("mode 644"));
    let junk = k.dir.write("junk.pem", b"hello");
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(err(&junk, cert).contains("no PEM RSA private key"));
    assert!(err(&k.key, &junk).contains("not a PEM X.509 certificate"));
    // A DER certificate is taken as well.
    let der = k.dir.write("cert.der", &snakeoil_cert_der());
    assert_eq!(SigningKey::load(&k.key, &der).unwrap().certificate_der(), snakeoil_cert_der().as_slice());
}

#[test]
fn a_signed_stub_gives_the_same_unsigned_uki() {
    let k = keys("sign-stub");
    let key = SigningKey::load(&k.key, SNAKEOIL_CERT.as_ref()).unwrap();
    let stub = read(STUB);
    let signed_stub = sign(&stub, &key).unwrap();
    let path = k.dir.write("stub.signed", &signed_stub);
    assert!(sbverify(&path));
    let parts =
        |stub| UkiParts { stub, osrel: b"ID=x\n", cmdline: b"quiet", uname: None, initrd: b"i", linux: b"KERNEL" };
    let from_signed = build_uki(&parts(&signed_stub)).unwrap();
    assert!(!PeImage::parse(&from_signed).unwrap().is_signed());
    assert!(from_signed == build_uki(&parts(&stub)).unwrap(), "the stub's signature leaked into the UKI");
    let upath = k.dir.write("uki", &from_signed);
    let out = Command::new("sbverify").args(["--cert", SNAKEOIL_CERT]).arg(&upath).output().unwrap();
    assert!(!out.status.success(), "sbverify accepts an unsigned UKI");
}

/// Where `needle` is in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("not found")
}

#[test]
fn a_changed_embedded_certificate_is_not_our_signature() {
    let k = keys("sign-certflip");
    let key = SigningKey::load(&k.key, SNAKEOIL_CERT.as_ref()).unwrap();
    let cert = snakeoil_cert_der();
    let signed = sign(&read(SYSTEMD_BOOT), &key).unwrap();
    assert_eq!(verify(&signed, &cert).unwrap(), GOOD);
    // One byte of the public key inside the embedded certificate: the RSA
    // signature still verifies under the configured key, but the firmware
    // (and sbverify) check it with the embedded certificate's key.
    let at = find(&signed, &cert);
    let spki = openssl_spki(&k);
    let key_at = at + find(&cert, &spki) + spki.len() / 2;
    let mut flipped = signed.clone();
    flipped[key_at] ^= 0x01;
    let path = k.dir.write("certflip.efi", &flipped);
    assert!(!sbverify(&path), "sbverify accepts a changed embedded certificate: the test does not test");
    assert_eq!(verify(&flipped, &cert).unwrap(), Verdict::SignedBy { matches_cert: false, digest_ok: true });

    // Every byte of the certificate table changed in turn: whatever sbverify
    // refuses, verify does not call good.
    let (off, size) = PeImage::parse(&signed).unwrap().certificate_table().unwrap();
    let mut checked = 0;
    for i in off as usize..(off + size) as usize {
        let mut m = signed.clone();
        m[i] ^= 0x80;
        let ours = matches!(verify(&m, &cert), Ok(GOOD));
        if !ours {
            continue;
        }
        // verify calls it good: sbverify must agree.
        let p = k.dir.write("mut.efi", &m);
        assert!(
            sbverify(&p),
            "byte {} of the certificate table (at {i}) changed: verify accepts, sbverify refuses",
            i - off as usize
        );
        checked += 1;
    }
    // Only the table's padding after the SignedData may change unnoticed.
    assert!(checked < 8, "{checked} changed bytes still verify");
}

/// The snakeoil certificate's SubjectPublicKeyInfo (DER), by openssl.
fn openssl_spki(k: &Keys) -> Vec<u8> {
    let pem = k.dir.path("pub.pem");
    run(Command::new("openssl").args(["x509", "-in", SNAKEOIL_CERT, "-noout", "-pubkey", "-out"]).arg(&pem));
    run(Command::new("openssl").args(["pkey", "-pubin", "-outform", "DER", "-in"]).arg(&pem)).stdout
}
