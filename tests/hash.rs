//! lifeboat's xxh3-128 against `xxhsum -H2` on real files: the hashes a commit
//! records (and `state show --files` prints) are the ones the reference tool
//! computes, for every size class the hashing code treats differently.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use common::*;

#[test]
fn commit_hashes_match_xxhsum() {
    let s = Scratch::new("xxhsum");
    let tree = s.join("tree");
    fs::create_dir_all(&tree).unwrap();
    // Sizes around the algorithm's internal boundaries, and real binaries.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for n in [0usize, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 4096, 65536, 1 << 20, (1 << 20) + 7] {
        let data: Vec<u8> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        write(&tree.join(format!("gen/f{n}")), &data, 0o644);
    }
    for b in ["ls", "sh", "cp", "tar"] {
        let src = std::path::Path::new("/bin").join(b);
        write(&tree.join(format!("bin/{b}")), &fs::read(&src).unwrap(), 0o755);
    }
    let root = s.join("root");
    std::fs::create_dir_all(&root).unwrap();
    ok(&["--root", root.to_str().unwrap(), "state", "commit", "--from", tree.to_str().unwrap()]);
    let show = ok(&["--root", root.to_str().unwrap(), "state", "show", "1", "--files"]);
    let ours: BTreeMap<String, String> = show
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 6 && f[0] == "f").then(|| (f[5].to_owned(), f[4].to_owned()))
        })
        .collect();
    assert_eq!(ours.len(), 21, "{show}");
    let mut cmd = Command::new("xxhsum");
    cmd.arg("-H2").current_dir(&tree);
    for p in ours.keys() {
        cmd.arg(p);
    }
    let o = cmd.output().expect("xxhsum is missing: scripts/setup.sh installs the xxhash package");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: BTreeMap<String, String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(h, p)| (p.trim().to_owned(), h.to_owned())))
        .collect();
    assert_eq!(ours, theirs);
}
