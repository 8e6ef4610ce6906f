//! The reader, `read_uki`, the image hash and the signature verifier fed thousands
//! of deterministic mutations of real images (the fuzz corpus: a UKI built from
//! Debian's stub, signed by lifeboat and by sbsign), concentrated on the headers,
//! the section table and the signature: an error is fine, a panic fails. The
//! `pe_image` fuzz target runs the same entry points under libFuzzer.

use lifeboat_pe::{authenticode_sha256, read_uki, signed_digest, verify, PeImage};

const CERT: &[u8] = include_bytes!("../../fuzz/data/PkKek-1-snakeoil.der");
const SEEDS: [&[u8]; 3] = [
    include_bytes!("../../fuzz/corpus/pe_image/uki.efi"),
    include_bytes!("../../fuzz/corpus/pe_image/uki-signed.efi"),
    include_bytes!("../../fuzz/corpus/pe_image/uki-sbsign.efi"),
];

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

fn exercise(data: &[u8]) {
    if let Ok(pe) = PeImage::parse(data) {
        for s in pe.sections() {
            assert!(s.data.len() <= data.len());
        }
        let _ = lifeboat_pe::signature_der(&pe);
    }
    let _ = read_uki(data);
    let _ = authenticode_sha256(data);
    let _ = signed_digest(data);
    let _ = verify(data, CERT);
}

#[test]
fn seeds_verify() {
    assert_eq!(verify(SEEDS[0], CERT).unwrap(), lifeboat_pe::Verdict::Unsigned);
    for s in &SEEDS[1..] {
        assert_eq!(verify(s, CERT).unwrap(), lifeboat_pe::Verdict::SignedBy { matches_cert: true, digest_ok: true });
    }
}

#[test]
fn mutated_images_never_panic() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in SEEDS {
        let pe = PeImage::parse(seed).unwrap();
        let table_end = pe.section_table_offset() + pe.sections().len() * 40;
        // The hot spots: the headers and section table, and the signature.
        let sig = pe.certificate_table().map(|(o, s)| o as usize..(o + s) as usize);
        for i in 0..1000 {
            let mut v = seed.to_vec();
            let range = match (&sig, i % 3) {
                (Some(s), 0) => s.clone(),
                _ => 0..table_end,
            };
            for _ in 0..1 + r.below(4) {
                let at = range.start + r.below(range.len());
                match r.below(5) {
                    0 => v[at] ^= 1 << r.below(8),
                    1 => v[at] = [0, 0xff, 0x7f, 0x80, 1, 2][r.below(6)],
                    2 => {
                        let n = 4.min(v.len() - at);
                        v[at..at + n].fill(0xff);
                    }
                    3 => v[at] = r.next() as u8,
                    _ => {
                        let cut = at.max(1);
                        v.truncate(cut);
                        break;
                    }
                }
            }
            exercise(&v);
        }
    }
}
