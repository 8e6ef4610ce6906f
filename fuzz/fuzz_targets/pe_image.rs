#![no_main]
use libfuzzer_sys::fuzz_target;

// A PE image as lifeboat meets one on an ESP (a UKI to list, a loader to sign or
// check): the reader, the UKI sections, the Authenticode hash, and the signature
// parser and verifier (against OVMF's snakeoil certificate, which signed the
// seeds). Nothing may panic, whatever the headers or the PKCS#7 say.
const CERT: &[u8] = include_bytes!("../data/PkKek-1-snakeoil.der");

fuzz_target!(|data: &[u8]| {
    if let Ok(pe) = lifeboat_pe::PeImage::parse(data) {
        for s in pe.sections() {
            let _ = pe.section(&s.name);
        }
        let _ = (pe.is_signed(), pe.certificate_table(), pe.stored_checksum());
        let _ = lifeboat_pe::pe_checksum(data, pe.checksum_offset());
        let _ = lifeboat_pe::signature_der(&pe);
    }
    let _ = lifeboat_pe::read_uki(data).map(|u| u.osrel);
    let _ = lifeboat_pe::authenticode_sha256(data);
    let _ = lifeboat_pe::signed_digest(data);
    match lifeboat_pe::verify(data, CERT) {
        Ok(v) => {
            let _ = format!("{v:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
