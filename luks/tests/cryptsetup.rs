//! lifeboat-luks against the real cryptsetup: every volume here is made by
//! `cryptsetup luksFormat` on a plain file at test time (small KDF costs, except one
//! test with cryptsetup's defaults), then opened by this crate and checked against
//! what cryptsetup says: the volume key from `luksDump --dump-volume-key`, the data
//! offset, sector size, UUID and label from `luksDump`. The host has no dm-crypt, so
//! data is checked by encrypting known sectors with Python's `cryptography` under the
//! dumped key and decrypting them here. Without cryptsetup (or Python's
//! `cryptography`) these tests fail, saying what to install.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use lifeboat_luks::{decrypt_sectors, probe, Header, KdfLimits, LuksError, UnlockOptions, Unlocked};
use sha2::{Digest, Sha256};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "lbtest-luks-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn cryptsetup_path() -> &'static str {
    ["/usr/sbin/cryptsetup", "/sbin/cryptsetup", "/usr/bin/cryptsetup"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("cryptsetup is not installed: these tests build their LUKS volumes with it (scripts/setup.sh installs cryptsetup-bin)")
        })
}

/// Runs cryptsetup, which must succeed; its standard output.
fn cryptsetup(args: &[&str]) -> String {
    let out = Command::new(cryptsetup_path()).args(args).output().expect("run cryptsetup");
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Small costs: the tests prove the formats, not the KDFs' strength.
const PBKDF2_FAST: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const LUKS2_SMALL: &[&str] = &["--type", "luks2", "--luks2-keyslots-size", "1M"];

/// A LUKS volume in a 4 MiB file with passphrase `pass` in keyslot 0.
struct Volume {
    _dir: Scratch,
    dir: PathBuf,
    img: PathBuf,
    key: PathBuf,
}

impl Volume {
    fn format(tag: &str, pass: &[u8], args: &[&str]) -> Volume {
        let dir = Scratch::new(tag);
        let img = dir.0.join("disk.img");
        let key = dir.0.join("pass");
        File::create(&img).unwrap().set_len(4 << 20).unwrap();
        fs::write(&key, pass).unwrap();
        let mut a = vec!["luksFormat", "--batch-mode", "--key-file", key.to_str().unwrap()];
        a.extend_from_slice(args);
        a.push(img.to_str().unwrap());
        cryptsetup(&a);
        Volume { dir: dir.0.clone(), _dir: dir, img, key }
    }

    fn path(&self) -> &str {
        self.img.to_str().unwrap()
    }

    /// A passphrase file in the volume's directory.
    fn key_file(&self, name: &str, pass: &[u8]) -> String {
        let p = self.dir.join(name);
        fs::write(&p, pass).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn dump(&self) -> String {
        cryptsetup(&["luksDump", self.path()])
    }

    /// cryptsetup's view of the volume key.
    fn dumped_key(&self) -> Vec<u8> {
        let out = cryptsetup(&[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            self.key.to_str().unwrap(),
            self.path(),
        ]);
        let start = out.find("MK dump:").expect("MK dump in luksDump output") + "MK dump:".len();
        let hex: String = out[start..]
            .lines()
            .take_while(|l| l.trim().chars().all(|c| c.is_ascii_hexdigit() || c == ' ') && !l.trim().is_empty())
            .flat_map(|l| l.split_whitespace())
            .collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    fn header(&self) -> Header {
        Header::read(self.path(), &mut File::open(&self.img).unwrap()).unwrap()
    }

    fn unlock(&self, pass: &[u8], options: &UnlockOptions) -> Result<Unlocked, LuksError> {
        let mut f = File::open(&self.img).unwrap();
        Header::read(self.path(), &mut f)?.unlock(&mut f, pass, options)
    }

    fn overwrite(&self, at: u64, bytes: &[u8]) {
        let mut f = OpenOptions::new().write(true).open(&self.img).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut f = File::open(&self.img).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut b = vec![0; len];
        f.read_exact(&mut b).unwrap();
        b
    }
}

/// The value after `name` on the first line (of `section`, if given) that has it.
fn dump_value<'a>(dump: &'a str, section: Option<&str>, name: &str) -> &'a str {
    let from = section.map(|s| dump.find(s).unwrap_or_else(|| panic!("{s} in {dump}"))).unwrap_or(0);
    let line =
        dump[from..].lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name} in {dump}"));
    line.trim_start()[name.len()..].split_whitespace().next().unwrap()
}

fn default_options() -> UnlockOptions {
    UnlockOptions::default()
}

/// Opens the volume and checks everything against cryptsetup's dump.
fn check_against_cryptsetup(v: &Volume, pass: &[u8]) -> Unlocked {
    let u = v.unlock(pass, &default_options()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(u.volume_key.as_bytes(), v.dumped_key().as_slice(), "volume key");
    let dump = v.dump();
    let h = v.header();
    assert_eq!(h.uuid, dump_value(&dump, None, "UUID:"));
    if h.version == 2 {
        assert_eq!(u.data_offset_bytes.to_string(), dump_value(&dump, Some("Data segments:"), "offset:"));
        assert_eq!(u.sector_size.to_string(), dump_value(&dump, Some("Data segments:"), "sector:"));
        assert_eq!(u.cipher, dump_value(&dump, Some("Data segments:"), "cipher:"));
    } else {
        assert_eq!((u.data_offset_bytes / 512).to_string(), dump_value(&dump, None, "Payload offset:"));
        let cipher = format!("{}-{}", dump_value(&dump, None, "Cipher name:"), dump_value(&dump, None, "Cipher mode:"));
        assert_eq!(u.cipher, cipher);
        assert_eq!(u.sector_size, 512);
    }
    assert_eq!(
        u.key_bytes * 8,
        dump_value(&dump, None, if h.version == 2 { "Key:" } else { "MK bits:" }).parse::<usize>().unwrap()
    );
    let mut first = vec![0u8; 64 << 10];
    let n = File::open(&v.img).unwrap().read(&mut first).unwrap();
    assert_eq!(probe(&first[..n]), Some(h.version));
    u
}

#[test]
fn luks2_argon2id_xts_512() {
    let args = [
        LUKS2_SMALL,
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "8192",
            "--pbkdf-parallel",
            "2",
            "--key-size",
            "512",
            "--label",
            "rootfs",
        ],
    ]
    .concat();
    let v = Volume::format("a2id", b"correct horse", &args);
    let u = check_against_cryptsetup(&v, b"correct horse");
    assert_eq!((u.key_bytes, u.keyslot, u.cipher.as_str()), (64, 0, "aes-xts-plain64"));
    let h = v.header();
    assert_eq!((h.version, h.label.as_str(), h.notes.len()), (2, "rootfs", 0));
    let ks = h.keyslots();
    assert_eq!(ks[0].kdf.as_deref(), Some("argon2id, time 4, memory 8192 KiB, 2 lanes"));
    // The cost caps are checked before any work.
    let tight =
        UnlockOptions { keyslot: None, limits: KdfLimits { max_argon2_memory_kib: 4096, ..KdfLimits::default() } };
    let e = v.unlock(b"correct horse", &tight).unwrap_err();
    assert!(matches!(e, LuksError::KdfLimit { keyslot: 0, .. }), "{e}");
    assert!(e.to_string().contains("8192 KiB of Argon2 memory (limit 4096)"), "{e}");
}

#[test]
fn luks2_argon2i_xts_256() {
    let args = [
        LUKS2_SMALL,
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "8192",
            "--pbkdf-parallel",
            "1",
            "--key-size",
            "256",
        ],
    ]
    .concat();
    let v = Volume::format("a2i", b"pass", &args);
    let u = check_against_cryptsetup(&v, b"pass");
    assert_eq!(u.key_bytes, 32);
    assert!(v.header().keyslots()[0].kdf.as_deref().unwrap().starts_with("argon2i,"));
}

#[test]
fn luks2_pbkdf2_every_hash() {
    for hash in ["sha256", "sha512", "sha1"] {
        let args = [LUKS2_SMALL, PBKDF2_FAST, &["--hash", hash]].concat();
        let v = Volume::format(hash, hash.as_bytes(), &args);
        check_against_cryptsetup(&v, hash.as_bytes());
        assert_eq!(v.header().keyslots()[0].kdf.as_deref(), Some(format!("pbkdf2-{hash}, 1000 iterations").as_str()));
    }
}

#[test]
fn luks1_pbkdf2_xts_and_cbc_essiv() {
    for (hash, cipher, bits) in [
        ("sha1", "aes-xts-plain64", "512"),
        ("sha256", "aes-xts-plain64", "256"),
        ("sha256", "aes-cbc-essiv:sha256", "256"),
    ] {
        let args = [
            "--type",
            "luks1",
            "--pbkdf-force-iterations",
            "1000",
            "--hash",
            hash,
            "--cipher",
            cipher,
            "--key-size",
            bits,
        ];
        let v = Volume::format("luks1", b"old school", &args);
        let u = check_against_cryptsetup(&v, b"old school");
        assert_eq!(u.cipher, cipher);
        assert_eq!(u.iv_tweak, 0);
        assert_eq!(v.header().version, 1);
        let e = v.unlock(b"new school", &default_options()).unwrap_err();
        assert!(matches!(&e, LuksError::WrongPassphrase { tried, .. } if tried == &[0]), "{e}");
    }
}

#[test]
fn cryptsetup_default_luks2_argon2id() {
    // cryptsetup's own defaults: Argon2id with the memory and time its benchmark
    // picks for this machine (hundreds of MiB), 4000 stripes, a 512-bit key. The
    // digest check proves the key; a dump would cost another Argon2 run.
    let v = Volume::format("default", b"default costs", &[]);
    let h = v.header();
    let kdf = h.keyslots()[0].kdf.clone().unwrap();
    assert!(kdf.starts_with("argon2id,"), "{kdf}");
    let u = v.unlock(b"default costs", &default_options()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((u.key_bytes, u.keyslot), (64, 0));
    assert_eq!(u.data_offset_bytes.to_string(), dump_value(&v.dump(), Some("Data segments:"), "offset:"));
}

#[test]
fn keyslot_priorities_a_killed_keyslot_and_naming_one() {
    let args = [LUKS2_SMALL, PBKDF2_FAST].concat();
    let v = Volume::format("slots", b"first", &args);
    let second = v.key_file("second", b"second");
    let mut add = vec!["luksAddKey", "--batch-mode", "--key-file", v.key.to_str().unwrap()];
    add.extend_from_slice(PBKDF2_FAST);
    add.extend_from_slice(&[v.path(), second.as_str()]);
    cryptsetup(&add);
    assert_eq!(v.unlock(b"second", &default_options()).unwrap().keyslot, 1);

    // Priority "ignore": not tried unless named.
    cryptsetup(&["config", "--key-slot", "0", "--priority", "ignore", v.path()]);
    let e = v.unlock(b"first", &default_options()).unwrap_err();
    assert!(matches!(&e, LuksError::WrongPassphrase { tried, .. } if tried == &[1]), "{e}");
    let named = UnlockOptions { keyslot: Some(0), ..default_options() };
    assert_eq!(v.unlock(b"first", &named).unwrap().keyslot, 0);

    cryptsetup(&["luksKillSlot", "--batch-mode", "--key-file", second.as_str(), v.path(), "0"]);
    let u = v.unlock(b"second", &default_options()).unwrap();
    assert_eq!(u.keyslot, 1);
    assert_eq!(u.volume_key.as_bytes(), {
        let mut f = File::open(&v.img).unwrap();
        let h = Header::read("x", &mut f).unwrap();
        h.unlock(&mut f, b"second", &UnlockOptions { keyslot: Some(1), ..default_options() })
            .unwrap()
            .volume_key
            .as_bytes()
            .to_vec()
    });
    let e = v.unlock(b"first", &named).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: keyslot 0: not in the header", v.path()));
    let e = v.unlock(b"first", &default_options()).unwrap_err();
    assert!(e.is_wrong_passphrase(), "{e}");
    assert_eq!(e.to_string(), format!("{}: wrong passphrase (no match in keyslot 1)", v.path()));
}

#[test]
fn luks1_killed_keyslot_and_disabled_name() {
    let v = Volume::format("l1slots", b"first", &["--type", "luks1", "--pbkdf-force-iterations", "1000"]);
    let second = v.key_file("second", b"second");
    cryptsetup(&[
        "luksAddKey",
        "--batch-mode",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        v.key.to_str().unwrap(),
        v.path(),
        second.as_str(),
    ]);
    cryptsetup(&["luksKillSlot", "--batch-mode", "--key-file", second.as_str(), v.path(), "0"]);
    assert_eq!(v.unlock(b"second", &default_options()).unwrap().keyslot, 1);
    let e = v.unlock(b"first", &UnlockOptions { keyslot: Some(0), ..default_options() }).unwrap_err();
    assert!(matches!(e, LuksError::NoKeyslot { keyslot: Some(0), .. }), "{e}");
    assert_eq!(v.header().keyslots().iter().map(|k| k.index).collect::<Vec<_>>(), [1]);
}

#[test]
fn damaged_primary_opens_through_the_secondary_and_both_damaged_is_an_error() {
    let args = [LUKS2_SMALL, PBKDF2_FAST].concat();
    let v = Volume::format("damage", b"pass", &args);
    let key = v.dumped_key();
    // Bytes inside the primary's JSON area.
    v.overwrite(4096 + 20, b"\"garbage\"");
    let h = v.header();
    assert_eq!(h.notes, ["primary header at 0: checksum mismatch; the secondary header is used"]);
    assert_eq!(v.unlock(b"pass", &default_options()).unwrap().volume_key.as_bytes(), key.as_slice());

    // And the secondary's (at hdr_size, 16 KiB here).
    v.overwrite(16384 + 4096 + 20, b"\"garbage\"");
    let e = Header::read(v.path(), &mut File::open(&v.img).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: no usable LUKS2 header: primary header at 0: checksum mismatch; secondary header at 16384: checksum mismatch",
            v.path()
        )
    );

    // A wiped start is not LUKS at all, unless the secondary survives.
    v.overwrite(0, &[0; 16384 * 2]);
    assert!(matches!(Header::read(v.path(), &mut File::open(&v.img).unwrap()), Err(LuksError::NotLuks { .. })));
}

#[test]
fn wiped_primary_binary_header_is_found_by_probing() {
    let args = [LUKS2_SMALL, PBKDF2_FAST, &["--luks2-metadata-size", "64k"]].concat();
    let v = Volume::format("probe", b"pass", &args);
    let key = v.dumped_key();
    v.overwrite(0, &[0; 4096]);
    let first = v.read(0, 128 << 10);
    assert_eq!(probe(&first), Some(2));
    let h = v.header();
    assert_eq!(h.header_size, 65536);
    assert_eq!(h.notes, ["primary header at 0: no LUKS2 magic; the secondary header is used"]);
    assert_eq!(v.unlock(b"pass", &default_options()).unwrap().volume_key.as_bytes(), key.as_slice());
}

#[test]
fn the_copy_with_the_higher_seqid_wins() {
    let args = [LUKS2_SMALL, PBKDF2_FAST].concat();
    let v = Volume::format("seqid", b"first", &args);
    let old_primary = v.read(0, 16384);
    let second = v.key_file("second", b"second");
    let mut add = vec!["luksAddKey", "--batch-mode", "--key-file", v.key.to_str().unwrap()];
    add.extend_from_slice(PBKDF2_FAST);
    add.extend_from_slice(&[v.path(), second.as_str()]);
    cryptsetup(&add);
    // An interrupted update: the primary still the old one (valid, lower seqid).
    v.overwrite(0, &old_primary);
    let h = v.header();
    assert_eq!(h.notes.len(), 1, "{:?}", h.notes);
    assert!(h.notes[0].starts_with("the primary header is older (seqid"), "{:?}", h.notes);
    assert_eq!(v.unlock(b"second", &default_options()).unwrap().keyslot, 1);
}

#[test]
fn sector_size_4096_and_the_dm_table() {
    let args = [LUKS2_SMALL, PBKDF2_FAST, &["--sector-size", "4096"]].concat();
    let v = Volume::format("s4k", b"pass", &args);
    let u = check_against_cryptsetup(&v, b"pass");
    assert_eq!(u.sector_size, 4096);
    let key: String = v.dumped_key().iter().map(|b| format!("{b:02x}")).collect();
    let off = u.data_offset_bytes;
    let table = u.dm_table("/dev/vda2", 4 << 20, false).unwrap();
    assert_eq!(
        table.as_str(),
        format!(
            "0 {} crypt aes-xts-plain64 {key} 0 /dev/vda2 {} 1 sector_size:4096",
            ((4 << 20) - off) / 512,
            off / 512
        )
    );
    let table = u.dm_table("8:2", (4 << 20) + 1000, true).unwrap();
    assert!(table.ends_with(&format!(" 8:2 {} 2 allow_discards sector_size:4096", off / 512)), "{}", table.as_str());
    assert!(u.dm_table("/dev/vda2", off, false).is_err());
    assert!(u.dm_table("/dev/vda 2", 4 << 20, false).is_err());
    // Nothing else shows the key.
    for shown in [format!("{u}"), format!("{u:?}")] {
        assert!(!shown.contains(&key[..16]), "{shown}");
    }
}

#[test]
fn luks2_512_byte_sectors_table_has_no_options() {
    let args = [LUKS2_SMALL, PBKDF2_FAST, &["--sector-size", "512"]].concat();
    let v = Volume::format("s512", b"pass", &args);
    let u = check_against_cryptsetup(&v, b"pass");
    assert_eq!(u.sector_size, 512);
    let table = u.dm_table("/dev/vda2", 4 << 20, false).unwrap();
    assert!(table.ends_with(&format!(" 0 /dev/vda2 {}", u.data_offset_bytes / 512)), "{}", table.as_str());
}

/// Encrypts `plain` into the data area with Python's `cryptography`, as dm-crypt
/// would write sectors `first..` of the segment: XTS with the sector's IV (512-byte
/// units, little-endian, 16 bytes) as tweak, or CBC with the ESSIV IV.
fn python_encrypt(v: &Volume, u: &Unlocked, first: u64, plain: &[u8]) {
    let script = r#"
import hashlib, sys
try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:
    sys.exit("Python's cryptography is not installed (scripts/setup.sh installs python3-cryptography)")
key = bytes.fromhex(sys.argv[1]); img = sys.argv[2]; off = int(sys.argv[3]); ss = int(sys.argv[4])
first = int(sys.argv[5]); cipher = sys.argv[6]; plain = open(sys.argv[7], 'rb').read()
with open(img, 'r+b') as f:
    for k in range(len(plain) // ss):
        sector = first + k
        iv = (sector * ss // 512).to_bytes(16, 'little')
        if cipher == 'aes-xts-plain64':
            mode, aes_key = modes.XTS(iv), key
        else:
            essiv = Cipher(algorithms.AES(hashlib.sha256(key).digest()), modes.ECB()).encryptor().update(iv)
            mode, aes_key = modes.CBC(essiv), key
        e = Cipher(algorithms.AES(aes_key), mode).encryptor()
        f.seek(off + sector * ss)
        f.write(e.update(plain[k * ss:(k + 1) * ss]) + e.finalize())
"#;
    let plain_file = v.dir.join("plain");
    fs::write(&plain_file, plain).unwrap();
    let key: String = u.volume_key.to_hex().to_string();
    let out = Command::new("python3")
        .args(["-c", script, &key, v.path(), &u.data_offset_bytes.to_string(), &u.sector_size.to_string()])
        .args([&first.to_string(), &u.cipher, plain_file.to_str().unwrap()])
        .output()
        .expect("python3 is not installed (scripts/setup.sh installs it)");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn decrypt_sectors_reads_what_an_independent_xts_and_essiv_wrote() {
    for (tag, args, first) in [
        ("dec4k", [LUKS2_SMALL, PBKDF2_FAST, &["--sector-size", "4096"]].concat(), 3u64),
        ("dec512", [LUKS2_SMALL, PBKDF2_FAST, &["--sector-size", "512"]].concat(), 5),
        (
            "decl1",
            vec![
                "--type",
                "luks1",
                "--pbkdf-force-iterations",
                "1000",
                "--cipher",
                "aes-cbc-essiv:sha256",
                "--key-size",
                "256",
                "--align-payload",
                "2048",
            ],
            7,
        ),
    ] {
        let v = Volume::format(tag, b"pass", &args);
        let u = v.unlock(b"pass", &default_options()).unwrap();
        assert_eq!(u.volume_key.as_bytes(), v.dumped_key().as_slice());
        let ss = u.sector_size as usize;
        let plain: Vec<u8> = (0..4 * ss).map(|i| (i * 7 + i / 256) as u8).collect();
        python_encrypt(&v, &u, first, &plain);
        let mut data = v.read(u.data_offset_bytes + first * ss as u64, plain.len());
        assert_ne!(data, plain);
        let mut again = data.clone();
        u.decrypt_sectors(first, &mut data).unwrap();
        assert!(data == plain, "{tag}: decrypted sectors differ");
        // The free function, with the IV counted in 512-byte units.
        decrypt_sectors(&u.cipher, u.volume_key.as_bytes(), u.sector_size, first * (ss as u64 / 512), &mut again)
            .unwrap();
        assert!(again == plain, "{tag}: decrypt_sectors differs");
    }
}

/// Rewrites the JSON of both LUKS2 header copies (16 KiB headers) and fixes their
/// checksums: metadata cryptsetup itself would write for features these tests cannot
/// make it use on this host.
fn rewrite_json(v: &Volume, edit: impl Fn(&mut serde_json::Value)) {
    for at in [0u64, 16384] {
        let mut hdr = v.read(at, 16384);
        let end = hdr[4096..].iter().position(|&b| b == 0).unwrap() + 4096;
        let mut json: serde_json::Value = serde_json::from_slice(&hdr[4096..end]).unwrap();
        edit(&mut json);
        let text = serde_json::to_vec(&json).unwrap();
        hdr[4096..].fill(0);
        hdr[4096..4096 + text.len()].copy_from_slice(&text);
        hdr[448..512].fill(0);
        let sum = Sha256::digest(&hdr);
        hdr[448..480].copy_from_slice(&sum);
        v.overwrite(at, &hdr);
    }
}

#[test]
fn requirements_flags_and_unsupported_ciphers_from_edited_metadata() {
    let args = [LUKS2_SMALL, PBKDF2_FAST].concat();
    let v = Volume::format("edit", b"pass", &args);

    rewrite_json(&v, |j| j["config"]["flags"] = serde_json::json!(["allow-discards", "no-read-workqueue"]));
    // cryptsetup accepts the edit, and so does the unlock.
    assert!(v.dump().contains("allow-discards"));
    let u = v.unlock(b"pass", &default_options()).unwrap();
    assert!(u.allow_discards_in_header);
    assert_eq!(u.performance_flags, ["no_read_workqueue"]);
    let table = u.dm_table("/dev/vda2", 4 << 20, u.allow_discards_in_header).unwrap();
    assert!(table.ends_with(" 3 allow_discards no_read_workqueue sector_size:4096"), "{}", table.as_str());

    rewrite_json(&v, |j| j["config"]["requirements"] = serde_json::json!({"mandatory": ["online-reencrypt-v2"]}));
    let h = v.header();
    assert_eq!(h.requirements(), ["online-reencrypt-v2"]);
    let e = v.unlock(b"pass", &default_options()).unwrap_err();
    assert!(matches!(&e, LuksError::Requirement { requirement, .. } if requirement == "online-reencrypt-v2"), "{e}");
    assert!(e.to_string().contains("mandatory requirement \"online-reencrypt-v2\""), "{e}");

    rewrite_json(&v, |j| {
        j["config"].as_object_mut().unwrap().remove("requirements");
        j["segments"]["0"]["encryption"] = "serpent-xts-plain64".into();
    });
    let e = v.unlock(b"pass", &default_options()).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: unsupported: data cipher \"serpent-xts-plain64\"", v.path()));

    rewrite_json(&v, |j| {
        j["segments"]["0"]["encryption"] = "aes-xts-plain64".into();
        j["keyslots"]["0"]["area"]["encryption"] = "twofish-xts-plain64".into();
    });
    let e = v.unlock(b"pass", &default_options()).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: unsupported: keyslot 0 area cipher \"twofish-xts-plain64\"", v.path()));
    assert!(!e.is_wrong_passphrase());
}

#[test]
fn truncated_headers_fail_cleanly() {
    let args = [LUKS2_SMALL, PBKDF2_FAST].concat();
    let v = Volume::format("trunc", b"pass", &args);
    let all = v.read(0, 4 << 20);
    // Header copies intact, keyslot area cut: an I/O error naming the area.
    let h = Header::from_bytes("cut", &all[..40 << 10]).unwrap();
    let e = h.unlock(&mut std::io::Cursor::new(&all[..40 << 10]), b"pass", &default_options()).unwrap_err();
    assert!(matches!(&e, LuksError::Io { what, .. } if what.starts_with("keyslot 0's area")), "{e}");
    for n in [0, 5, 8, 600, 4095, 4096, 10000] {
        assert!(Header::from_bytes("cut", &all[..n]).is_err(), "{n}");
    }
    // The primary alone is enough, with a note about the secondary.
    let h = Header::from_bytes("cut", &all[..16384]).unwrap();
    assert_eq!(h.notes, ["secondary header at 16384: no LUKS2 magic; the primary header is used"]);
    let h = Header::from_bytes("cut", &all[..20000]).unwrap();
    assert_eq!(
        h.notes,
        ["secondary header at 16384: only 3616 of its 16384 bytes could be read; the primary header is used"]
    );
}
