//! Every parser of untrusted bytes, fed thousands of deterministic mutations of valid
//! inputs: none may panic (the fuzz/ targets run the same entry points under
//! libFuzzer). A parser error is fine; a panic fails the test, and in PID 1 would be
//! a crash.

mod common;

use common::*;
use lifeboat_state::layout::{EntryData, Layout, LayoutEntry};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation: flip bits, overwrite with interesting values, cut, or duplicate.
fn mutate(seed: &[u8], r: &mut Rng, hot: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = seed.to_vec();
    let hot = hot.start.min(v.len())..hot.end.min(v.len()).max(hot.start.min(v.len()) + 1);
    for _ in 0..1 + r.below(4) {
        if v.is_empty() {
            break;
        }
        let at = hot.start + r.below(hot.end - hot.start).min(v.len() - 1 - hot.start.min(v.len() - 1));
        let at = at.min(v.len() - 1);
        match r.below(6) {
            0 => v[at] ^= 1 << r.below(8),
            1 => v[at] = [0, 0xff, 0x7f, 0x80, 1, 2][r.below(6)],
            2 => {
                let n = [2usize, 4, 8][r.below(3)].min(v.len() - at);
                for b in &mut v[at..at + n] {
                    *b = 0xff;
                }
            }
            3 => v.truncate(at),
            4 => {
                let n = (r.below(16) + 1).min(v.len() - at);
                let chunk = v[at..at + n].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v[at] = r.next() as u8,
        }
    }
    v
}

#[test]
fn state_index_decoder() {
    let attr = |n: &str, v: &[u8]| lifeboat_state::attrs::Xattr { name: n.as_bytes().into(), value: v.into() };
    let acl = lifeboat_state::attrs::AttrSet::new(vec![attr("system.posix_acl_default", b"\x02\0\0\0")]).unwrap();
    let mut es =
        vec![LayoutEntry { path: b"a".to_vec().into(), perm: 0o755, uid: 0, gid: 0, data: EntryData::Dir, attrs: acl }];
    for i in 0..20 {
        es.push(LayoutEntry {
            path: format!("a/f{i}").into_bytes().into(),
            perm: 0o644,
            uid: 0,
            gid: 0,
            data: if i % 5 == 0 {
                EntryData::Symlink { target: b"f1".to_vec().into() }
            } else {
                EntryData::File { hash: lifeboat_state::hash::Hash128(i as u128 * 977), size: i }
            },
            // Attributes too, shared and not, so that their tables are mutated.
            attrs: match i % 4 {
                1 => lifeboat_state::attrs::AttrSet::new(vec![attr("security.capability", b"\x01\0\0\x02")]).unwrap(),
                2 => lifeboat_state::attrs::AttrSet::new(vec![attr("user.n", format!("{i}").as_bytes())]).unwrap(),
                _ => None,
            },
        });
    }
    let l = Layout::new(es).unwrap();
    let m = |id| lifeboat_state::index::TxMeta { id, created: 1, summary: "s".into(), parent: None, kernels: vec![] };
    let wire = lifeboat_state::index::StateIndex::build(3, &[(m(1), &l), (m(2), &l)]);
    let seed = lifeboat_state::index::file::encode(&wire);
    // Mutating compressed bytes mostly trips the checksum; also mutate the raw
    // postcard payload behind a correct header.
    let raw = postcard::to_allocvec(&wire).unwrap();
    let mut r = Rng(0x9e3779b97f4a7c15);
    for i in 0..4000 {
        let bytes = if i % 2 == 0 {
            mutate(&seed, &mut r, 0..seed.len())
        } else {
            let p = mutate(&raw, &mut r, 0..raw.len());
            let z = zstd::bulk::compress(&p, 1).unwrap();
            let mut f = seed[..40].to_vec();
            f[16..24].copy_from_slice(&(z.len() as u64).to_le_bytes());
            f[24..32].copy_from_slice(&(p.len() as u64).to_le_bytes());
            f[32..40].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(&z).to_le_bytes());
            f.extend_from_slice(&z);
            f
        };
        if let Ok(idx) = lifeboat_state::index::file::decode(&bytes) {
            for t in idx.transactions().map(|t| t.id).collect::<Vec<_>>() {
                let _ = idx.layout(t);
            }
        }
    }
}

#[test]
fn known_blobs_decoder() {
    use lifeboat_state::verify::{BlobStamp, KnownBlobs};
    let mut k = KnownBlobs::empty(0x1234, 40);
    let stamps: Vec<(u32, BlobStamp)> =
        (0..40).step_by(3).map(|i| (i, BlobStamp { ino: i as u64 + 10, ctime: (5, i), btime: None })).collect();
    k.set(&stamps);
    let seed = k.encode().to_vec();
    let mut r = Rng(0x2545f4914f6cdd1d);
    let mut decoded = 0;
    for _ in 0..4000 {
        let bytes = mutate(&seed, &mut r, 0..seed.len());
        if let Ok(k) = KnownBlobs::decode(bytes.clone()) {
            decoded += 1;
            assert_eq!(k.encode(), &bytes[..]);
            for i in [0, 3, 39, 40, usize::MAX] {
                let _ = k.has(i);
            }
        }
    }
    // Only a mutation that left the bytes a valid file (the same one, or one
    // with a changed digest in the header) may decode: the checksum catches
    // the rest.
    assert!(decoded < 4000 / 4, "{decoded} of 4000 mutations decoded");
}

#[test]
fn cpio_bls_and_load_options() {
    let mut a = lifeboat_initrd::Archive::new();
    a.dir("dev", 0o755);
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, vec![7; 300]);
    a.symlink("bin", "usr/bin");
    let cpio = a.to_bytes();
    let entry =
        b"# c\ntitle T\nversion 1.2~rc1\nsort-key s\nlinux /a\ninitrd /b\ninitrd /c\noptions x=1\noptions y\n".to_vec();
    let opt = lifeboat_boot::loadopt::LoadOption {
        attributes: 1,
        description: "Linux Boot Manager".into(),
        path: vec![
            lifeboat_boot::loadopt::Node::HardDrive {
                number: 1,
                start: 2048,
                size: 9999,
                guid: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".into(),
            },
            lifeboat_boot::loadopt::Node::File("\\EFI\\systemd\\systemd-bootx64.efi".into()),
        ],
        optional: vec![1, 2, 3],
    }
    .encode();
    let mut r = Rng(0x1234_5678);
    for _ in 0..5000 {
        let _ = lifeboat_initrd::Archive::parse(&mutate(&cpio, &mut r, 0..cpio.len()));
        let t = mutate(&entry, &mut r, 0..entry.len());
        let text = String::from_utf8_lossy(&t);
        let e = lifeboat_boot::bls::Entry::parse(&text);
        let _ = lifeboat_boot::bls::SortInfo::of(&text, &e);
        let _ = lifeboat_boot::bls::split_counter(&text, ".conf");
        let _ = lifeboat_boot::version::compare(&text, "1.2");
        let _ = lifeboat_boot::loaderconf::set_key(&text, "default", Some("x"));
        if let Ok(o) = lifeboat_boot::loadopt::LoadOption::decode(&mutate(&opt, &mut r, 0..opt.len())) {
            let _ = lifeboat_boot::loadopt::path_string(&o.path);
        }
    }
}

#[test]
fn gpt_and_fat_of_damaged_images() {
    let s = Scratch::new("mut-disk");
    let img = s.join("d.img");
    ok(&["disk", "create", img.to_str().unwrap(), "--size", "48M", "--esp-size", "40M", "--root-size", "0"]);
    write(&s.join("x"), &[5u8; 9000], 0o644);
    ok(&["disk", "put", s.join("x").to_str().unwrap(), &format!("{}:esp:EFI/some/dir/file.efi", img.display())]);
    let seed = std::fs::read(&img).unwrap();
    let esp = 1 << 20;
    let mut r = Rng(0xdead_beef);
    let m = s.join("m.img");
    for i in 0..300 {
        // GPT headers and array; the FAT boot sector, FSInfo, FATs and root directory.
        let hot = match i % 3 {
            0 => 0..34 * 512,
            1 => esp..esp + 64 * 512,
            _ => esp..esp + (2 << 20),
        };
        let data = mutate(&seed, &mut r, hot);
        std::fs::write(&m, &data).unwrap();
        if let Ok(d) = lifeboat_esp::Disk::open(&m, true) {
            for part in d.partitions.clone() {
                if let Ok(mut v) = lifeboat_esp::fat::FatVolume::open(d.window(&part), "m") {
                    use lifeboat_esp::Volume;
                    let _ = v.list("EFI/some/dir");
                    let _ = v.read("EFI/some/dir/file.efi");
                    let _ = v.space();
                    let _ = v.replace("EFI/new", &mut &b"new content"[..]);
                    let _ = v.remove("EFI/some/dir/file.efi");
                }
            }
        }
    }
}
