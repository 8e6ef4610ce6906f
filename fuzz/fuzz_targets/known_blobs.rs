#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat_state::verify::{BlobStamp, KnownBlobs};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut k) = KnownBlobs::decode(data.to_vec()) {
        // A file that decodes reads back byte for byte, answers for any entry
        // without panicking, and stays valid after stamps are set.
        assert_eq!(k.encode(), data);
        for i in [0, 1, k.len() / 2, k.len(), usize::MAX] {
            let _ = k.has(i);
        }
        let s = BlobStamp { ino: 7, ctime: (1, 2), btime: None };
        k.set(&[(0, s), (u32::MAX, s)]);
        let again = KnownBlobs::decode(k.encode().to_vec()).expect("a file set by lifeboat decodes");
        assert_eq!(again.len(), k.len());
    }
});
