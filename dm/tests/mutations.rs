//! The fuzz targets' entry points (`lifeboat_dm::fuzzing`) fed thousands of
//! deterministic mutations of their seed corpora (fuzz/corpus/lvm_metadata,
//! fuzz/corpus/dm_reply): nothing may panic. A parse error is fine; a panic fails
//! the test, and in PID 1 would be a crash.

use std::path::PathBuf;

use lifeboat_dm::fuzzing;

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

/// Flips bits, writes boundary values and text tokens, cuts, or duplicates.
fn mutate(seed: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        if v.is_empty() {
            break;
        }
        let at = r.below(v.len());
        match r.below(7) {
            0 => v[at] ^= 1 << r.below(8),
            1 => v[at] = [0, 0xff, 0x7f, 0x80, 1, 2][r.below(6)],
            2 => {
                let n = [2usize, 4, 8][r.below(3)].min(v.len() - at);
                v[at..at + n].fill(0xff);
            }
            3 => v.truncate(at),
            4 => {
                let n = (r.below(16) + 1).min(v.len() - at);
                let chunk = v[at..at + n].to_vec();
                v.splice(at..at, chunk);
            }
            5 => {
                let tok: &[u8] =
                    [&b"{"[..], b"}", b"[", b"]", b"\"", b"=", b"-1", b"99999999999", b"#", b"\\"][r.below(10)];
                v.splice(at..at, tok.iter().copied());
            }
            _ => v[at] = r.next() as u8,
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

#[test]
fn lvm_metadata_mutations() {
    let seeds = corpus("lvm_metadata");
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        fuzzing::lvm_metadata(seed);
        for _ in 0..1500 {
            fuzzing::lvm_metadata(&mutate(seed, &mut r));
        }
    }
}

#[test]
fn dm_reply_mutations() {
    let seeds = corpus("dm_reply");
    // The seeds are real layouts: the list decodes to its three mappings.
    let list = seeds.iter().find(|s| s.len() == 448).expect("the list seed");
    let reply = lifeboat_dm::ioctl::decode_reply(list).unwrap();
    let data = lifeboat_dm::ioctl::reply_data(list, &reply).unwrap();
    let names = lifeboat_dm::ioctl::decode_name_list(data).unwrap();
    assert_eq!(names.len(), 3);
    assert_eq!(names[0].uuid.as_deref(), Some("CRYPT-LUKS2-1234-luks-1234"));
    assert_eq!(names[2].dev, lifeboat_dm::DevNo::new(253, 300));
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for seed in &seeds {
        for _ in 0..5000 {
            fuzzing::dm_reply(&mutate(seed, &mut r));
        }
    }
}
