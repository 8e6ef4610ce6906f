//! Authenticode signing and verification of PE images with an RSA key: the
//! signature is a PKCS#7 SignedData over an SpcIndirectDataContent carrying the
//! image's SHA-256 ([`authenticode_sha256`]), laid out as sbsign (sbsigntool) makes
//! it — authenticated attributes contentType, messageDigest and an empty
//! SpcSpOpusInfo, RSA PKCS#1 v1.5 with SHA-256, the signer's certificate included —
//! and appended to the image as a WIN_CERTIFICATE the certificate-table directory
//! entry points at. No signing time is added, so signing is deterministic.
//!
//! [`SigningKey::load`] is the crate's only I/O: it reads the key and certificate
//! files, refusing a key file that is not a regular file or that group or others
//! may read.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cms::cert::x509::Certificate;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, DecodePem, Encode, Sequence, Tag};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use zeroize::Zeroizing;

use crate::authenticode::image_hash;
use crate::image::{store_checksum, CERT_DIR};
use crate::{Error, PeImage};

const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
const OID_SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
const OID_SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");

/// WIN_CERTIFICATE's wRevision for Authenticode.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERTIFICATE's wCertificateType for a PKCS#7 SignedData.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// SpcPeImageData as sbsign writes it: no flags, and the "file" link an obsolete
/// placeholder — `SEQUENCE { BIT STRING '', [0] { [2] { [0] "<<<Obsolete>>>" } } }`
/// with the string in UCS-2 big-endian (BMPString).
fn spc_pe_image_data() -> Vec<u8> {
    let text: Vec<u8> = "<<<Obsolete>>>".encode_utf16().flat_map(|c| c.to_be_bytes()).collect();
    let mut bmp = vec![0x80, text.len() as u8];
    bmp.extend_from_slice(&text);
    let mut file = vec![0xa2, bmp.len() as u8];
    file.extend_from_slice(&bmp);
    let mut link = vec![0xa0, file.len() as u8];
    link.extend_from_slice(&file);
    let mut body = vec![0x03, 0x01, 0x00];
    body.extend_from_slice(&link);
    let mut seq = vec![0x30, body.len() as u8];
    seq.extend_from_slice(&body);
    seq
}

/// `SpcAttributeTypeAndOptionalValue`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: ObjectIdentifier,
    #[asn1(optional = "true")]
    value: Option<Any>,
}

/// PKCS#1's `DigestInfo`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// `SpcIndirectDataContent`: what an Authenticode signature signs.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

fn alg(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    // NULL parameters, as OpenSSL (and so sbsign) writes them.
    AlgorithmIdentifierOwned { oid, parameters: Some(Any::null()) }
}

fn crypto(what: &str) -> impl Fn(der::Error) -> Error + '_ {
    move |e| Error::Crypto { why: format!("{what}: {e}") }
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadSignature { why: why.into() }
}

/// An RSA private key and its X.509 certificate. `Debug` shows the certificate's
/// subject and the key's size, never the key.
pub struct SigningKey {
    key: RsaPrivateKey,
    cert: Certificate,
    cert_der: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key", &format_args!("<RSA-{} redacted>", self.key.size() * 8))
            .field("subject", &self.cert.tbs_certificate.subject.to_string())
            .finish()
    }
}

/// Smallest and largest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

impl SigningKey {
    /// Loads an unencrypted PEM RSA key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE
    /// KEY`, 2048 to 4096 bits) and the PEM certificate for it. The key file must be
    /// a regular file no one but its owner may read or write (mode & 0o077 == 0).
    pub fn load(key_pem: &Path, cert_pem: &Path) -> Result<SigningKey, Error> {
        let key_err = |why: String| Error::Key { path: key_pem.to_path_buf(), why };
        let mut f = std::fs::File::open(key_pem).map_err(|e| key_err(format!("cannot open the key: {e}")))?;
        let meta = f.metadata().map_err(|e| key_err(format!("cannot stat the key: {e}")))?;
        if !meta.is_file() {
            return Err(key_err("the key is not a regular file".into()));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(key_err(format!(
                "the key file's mode {:o} lets group or others use it; chmod 600 it",
                mode & 0o7777
            )));
        }
        if meta.len() > 64 * 1024 {
            return Err(key_err(format!("{} bytes is too big for a PEM RSA key", meta.len())));
        }
        let mut text = Zeroizing::new(String::new());
        f.read_to_string(&mut text).map_err(|e| key_err(format!("cannot read the key as text: {e}")))?;
        let cert = std::fs::read(cert_pem).map_err(|e| Error::Key {
            path: cert_pem.to_path_buf(),
            why: format!("cannot read the certificate: {e}"),
        })?;
        SigningKey::from_pem(&text, &cert, key_pem, cert_pem)
    }

    /// Parses a key and its certificate already read (by a caller that opened
    /// and checked the files itself): an unencrypted PEM RSA key (PKCS#8 or
    /// PKCS#1, 2048 to 4096 bits) and a PEM or DER certificate for it. The
    /// paths only name the files in errors.
    pub fn from_pem(text: &str, pem: &[u8], key_pem: &Path, cert_pem: &Path) -> Result<SigningKey, Error> {
        let key_err = |why: String| Error::Key { path: key_pem.to_path_buf(), why };
        let key = if text.contains("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(text)
                .map_err(|e| key_err(not_rsa_pkcs8(text).unwrap_or_else(|| format!("not a PKCS#8 RSA key: {e}"))))?
        } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            if text.contains("Proc-Type: 4,ENCRYPTED") {
                return Err(key_err("the key is encrypted; decrypt it (openssl pkey) first".into()));
            }
            RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| key_err(format!("not a PKCS#1 RSA key: {e}")))?
        } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(key_err("the key is encrypted; decrypt it (openssl pkey) first".into()));
        } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            return Err(key_err("an EC key: only RSA keys sign here".into()));
        } else {
            return Err(key_err("no PEM RSA private key (PRIVATE KEY or RSA PRIVATE KEY) in the file".into()));
        };
        let bits = key.size() * 8;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(key_err(format!("an RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted")));
        }

        let cert_err = |why: String| Error::Key { path: cert_pem.to_path_buf(), why };
        // PEM as asked for; a DER file (a `.crt` often is one) is taken too.
        let cert = match Certificate::from_pem(pem) {
            Ok(c) => c,
            Err(e) if pem.first() == Some(&0x30) => Certificate::from_der(pem)
                .map_err(|d| cert_err(format!("neither a PEM ({e}) nor a DER ({d}) X.509 certificate")))?,
            Err(e) => return Err(cert_err(format!("not a PEM X.509 certificate: {e}"))),
        };
        let cert_der = cert.to_der().map_err(|e| cert_err(format!("cannot encode the certificate: {e}")))?;
        let cert_key = cert_public_key(&cert).map_err(|e| cert_err(e.to_string()))?;
        if cert_key != key.to_public_key() {
            return Err(cert_err(format!("the certificate is not for the key {}", key_pem.display())));
        }
        Ok(SigningKey { key, cert, cert_der })
    }

    /// The certificate, DER-encoded.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// A certificate file's bytes (PEM, or DER) as DER, the form [`verify`] takes.
pub fn certificate_der(pem: &[u8]) -> Result<Vec<u8>, Error> {
    let cert = match Certificate::from_pem(pem) {
        Ok(c) => c,
        Err(e) if pem.first() == Some(&0x30) => {
            Certificate::from_der(pem).map_err(|d| bad(format!("neither a PEM ({e}) nor a DER ({d}) certificate")))?
        }
        Err(e) => return Err(bad(format!("not a PEM X.509 certificate: {e}"))),
    };
    cert.to_der().map_err(crypto("certificate"))
}

/// What a PKCS#8 key that is not an RSA key is, by its algorithm: `None` when
/// it is rsaEncryption (or unreadable), so the parser's own error stands.
fn not_rsa_pkcs8(text: &str) -> Option<String> {
    let (_, doc) = rsa::pkcs8::SecretDocument::from_pem(text).ok()?;
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(doc.as_bytes()).ok()?;
    let oid = info.algorithm.oid.to_string();
    let what = match oid.as_str() {
        "1.2.840.113549.1.1.1" => return None,
        "1.2.840.10045.2.1" => "an EC key".to_owned(),
        "1.3.101.112" => "an Ed25519 key".to_owned(),
        "1.3.101.113" => "an Ed448 key".to_owned(),
        "1.2.840.113549.1.1.10" => {
            "an RSA-PSS key (restricted to PSS signatures; Authenticode needs PKCS#1 v1.5)".to_owned()
        }
        other => format!("a key of algorithm {other}"),
    };
    Some(format!("{what}: only RSA keys (rsaEncryption) sign here"))
}

fn cert_public_key(cert: &Certificate) -> Result<RsaPublicKey, Error> {
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(crypto("certificate public key"))?;
    RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| bad(format!("the certificate's public key is not an RSA key: {e}")))
}

/// Signs `image` (Authenticode, SHA-256), returning the signed image. Refuses an
/// image that is already signed (see [`sign_replacing`]). The image is padded with
/// zeros to a multiple of 8 bytes first, as sbsign does, since the certificate
/// table must start 8-byte aligned; the padding is part of the signed hash.
pub fn sign(image: &[u8], key: &SigningKey) -> Result<Vec<u8>, Error> {
    if PeImage::parse(image)?.is_signed() {
        return Err(Error::AlreadySigned);
    }
    sign_replacing(image, key)
}

/// Like [`sign`], but an existing signature (a certificate table ending the file)
/// is removed first and replaced by this one.
pub fn sign_replacing(image: &[u8], key: &SigningKey) -> Result<Vec<u8>, Error> {
    let pe = PeImage::parse(image)?;
    let dir = pe.cert_dir_offset().ok_or(Error::BadField {
        what: "NumberOfRvaAndSizes",
        at: pe.checksum_offset(),
        value: CERT_DIR as u64,
        why: "no certificate-table directory entry to point at a signature",
    })?;
    let mut out = match pe.certificate_table() {
        Some((off, size)) => {
            if off as usize + size as usize != image.len() {
                return Err(Error::BadCertTable {
                    offset: off.into(),
                    size: size.into(),
                    why: "does not end the file, so it cannot be replaced".into(),
                });
            }
            image[..off as usize].to_vec()
        }
        None => image.to_vec(),
    };
    out[dir..dir + 8].fill(0);
    out.resize(out.len().next_multiple_of(8), 0);
    let digest = image_hash(&PeImage::parse(&out)?)?;
    let pkcs7 = signed_data(&digest, key)?;

    let length = 8 + pkcs7.len();
    let table_at = out.len();
    let table_size = length.next_multiple_of(8);
    let (Ok(at32), Ok(size32), Ok(len32)) = (u32::try_from(table_at), u32::try_from(table_size), u32::try_from(length))
    else {
        return Err(Error::Crypto { why: "the signed image would exceed 4 GiB".into() });
    };
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(&pkcs7);
    out.resize(table_at + table_size, 0);
    out[dir..dir + 4].copy_from_slice(&at32.to_le_bytes());
    out[dir + 4..dir + 8].copy_from_slice(&size32.to_le_bytes());
    store_checksum(&mut out, pe.checksum_offset());
    Ok(out)
}

/// The DER SpcIndirectDataContent an Authenticode signature of an image with this
/// SHA-256 image hash carries (sbsign's encoding: SpcPeImageData with no flags and
/// the obsolete file link, DigestInfo with SHA-256 and NULL parameters).
pub fn indirect_data_content(digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let idc = SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: OID_SPC_PE_IMAGE_DATA,
            value: Some(Any::from_der(&spc_pe_image_data()).map_err(crypto("SpcPeImageData"))?),
        },
        message_digest: DigestInfo {
            digest_algorithm: alg(OID_SHA256),
            digest: OctetString::new(digest.to_vec()).map_err(crypto("digest"))?,
        },
    };
    idc.to_der().map_err(crypto("SpcIndirectDataContent"))
}

/// The DER of the SignedData ContentInfo for an image hash.
fn signed_data(digest: &[u8; 32], key: &SigningKey) -> Result<Vec<u8>, Error> {
    let idc_der = indirect_data_content(digest)?;
    let econtent = Any::from_der(&idc_der).map_err(crypto("SpcIndirectDataContent"))?;
    // messageDigest is over the content's value, without its tag and length.
    let content_digest = Sha256::digest(econtent.value());

    let attr = |oid, value: Any| -> Result<Attribute, Error> {
        Ok(Attribute { oid, values: SetOfVec::try_from(vec![value]).map_err(crypto("attribute"))? })
    };
    let attrs = SetOfVec::try_from(vec![
        attr(OID_CONTENT_TYPE, Any::encode_from(&OID_SPC_INDIRECT_DATA).map_err(crypto("contentType"))?)?,
        attr(
            OID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(content_digest.to_vec()).map_err(crypto("messageDigest"))?)
                .map_err(crypto("messageDigest"))?,
        )?,
        attr(OID_SPC_SP_OPUS_INFO, Any::new(Tag::Sequence, Vec::new()).map_err(crypto("SpcSpOpusInfo"))?)?,
    ])
    .map_err(crypto("signed attributes"))?;
    // The signature covers the attributes encoded as a SET OF (tag 0x31).
    let signed = attrs.to_der().map_err(crypto("signed attributes"))?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.key.clone());
    let signature = signer.try_sign(&signed).map_err(|e| Error::Crypto { why: format!("RSA: {e}") })?.to_vec();

    let tbs = &key.cert.tbs_certificate;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: alg(OID_SHA256),
        signed_attrs: Some(attrs),
        signature_algorithm: alg(OID_RSA_ENCRYPTION),
        signature: OctetString::new(signature).map_err(crypto("signature"))?,
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg(OID_SHA256)]).map_err(crypto("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo { econtent_type: OID_SPC_INDIRECT_DATA, econtent: Some(econtent) },
        certificates: Some(
            CertificateSet::try_from(vec![CertificateChoices::Certificate(key.cert.clone())])
                .map_err(crypto("certificates"))?,
        ),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(crypto("signer infos"))?,
    };
    let ci =
        ContentInfo { content_type: OID_SIGNED_DATA, content: Any::encode_from(&sd).map_err(crypto("SignedData"))? };
    ci.to_der().map_err(crypto("ContentInfo"))
}

/// What [`verify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No certificate table.
    Unsigned,
    /// A signature: whether it is valid under the given certificate (signer
    /// attributes and RSA signature), and whether the image hash it carries is this
    /// image's.
    SignedBy { matches_cert: bool, digest_ok: bool },
}

/// The PKCS#7 SignedData of the first WIN_CERT_TYPE_PKCS_SIGNED_DATA entry of the
/// image's certificate table, if any.
pub fn signature_der<'a>(pe: &PeImage<'a>) -> Result<Option<&'a [u8]>, Error> {
    let Some((off, size)) = pe.certificate_table() else { return Ok(None) };
    let table = &pe.bytes[off as usize..off as usize + size as usize];
    let mut r = lifeboat_codec::Reader::new(table);
    while r.left() >= 8 {
        let at = r.position();
        let length = r.u32_le("WIN_CERTIFICATE dwLength")? as usize;
        let revision = r.u16_le("WIN_CERTIFICATE wRevision")?;
        let kind = r.u16_le("WIN_CERTIFICATE wCertificateType")?;
        let body_len = length.checked_sub(8).ok_or_else(|| Error::BadCertTable {
            offset: off.into(),
            size: size.into(),
            why: format!("WIN_CERTIFICATE at {at} has dwLength {length}, less than its header"),
        })?;
        let body = r.take(body_len, "WIN_CERTIFICATE bCertificate")?;
        if revision == WIN_CERT_REVISION_2_0 && kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            return Ok(Some(body));
        }
        // Entries are 8-byte aligned.
        let next = (at + length).next_multiple_of(8).min(table.len());
        r.seek(next, "WIN_CERTIFICATE")?;
    }
    Err(Error::BadCertTable {
        offset: off.into(),
        size: size.into(),
        why: "no PKCS#7 SignedData (revision 0x0200, type 2) entry".into(),
    })
}

/// The image hash a signature (DER PKCS#7 SignedData) carries, and the parsed
/// pieces verification needs.
struct Parsed {
    digest: Vec<u8>,
    econtent_value: Vec<u8>,
    signer: SignerInfo,
    /// The certificates the SignedData carries, DER-encoded.
    certs: Vec<Vec<u8>>,
    /// The SignedData's digestAlgorithms.
    digest_algs: Vec<ObjectIdentifier>,
}

fn parse_signature(der_bytes: &[u8]) -> Result<Parsed, Error> {
    let ci = ContentInfo::from_der(der_bytes).map_err(|e| bad(format!("not a PKCS#7 ContentInfo: {e}")))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(bad(format!("content type {} is not signedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| bad(format!("malformed SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type != OID_SPC_INDIRECT_DATA {
        return Err(bad(format!("content {} is not SpcIndirectDataContent", sd.encap_content_info.econtent_type)));
    }
    let econtent = sd.encap_content_info.econtent.ok_or_else(|| bad("no SpcIndirectDataContent"))?;
    let idc: SpcIndirectDataContent =
        econtent.decode_as().map_err(|e| bad(format!("malformed SpcIndirectDataContent: {e}")))?;
    if idc.message_digest.digest_algorithm.oid != OID_SHA256 {
        return Err(bad(format!("image digest algorithm {} is not SHA-256", idc.message_digest.digest_algorithm.oid)));
    }
    let mut signers = sd.signer_infos.0.into_vec();
    if signers.len() != 1 {
        return Err(bad(format!("{} signer infos; one is supported", signers.len())));
    }
    let mut certs = Vec::new();
    for c in sd.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(c) = c {
            certs.push(c.to_der().map_err(|e| bad(format!("an embedded certificate: {e}")))?);
        }
    }
    Ok(Parsed {
        digest: idc.message_digest.digest.as_bytes().to_vec(),
        econtent_value: econtent.value().to_vec(),
        signer: signers.remove(0),
        certs,
        digest_algs: sd.digest_algorithms.iter().map(|a| a.oid).collect(),
    })
}

/// The SHA-256 image hash inside `image`'s signature, if it is signed.
pub fn signed_digest(image: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let pe = PeImage::parse(image)?;
    Ok(match signature_der(&pe)? {
        Some(d) => Some(parse_signature(d)?.digest),
        None => None,
    })
}

/// Checks `image`'s signature against the certificate `cert_der` (DER X.509):
/// the image hash the signature carries against the image's own
/// ([`authenticode_sha256`]), and the signer's attributes and RSA signature against
/// the certificate's key. A malformed signature is an error; a valid one by
/// another key is `matches_cert: false`.
///
/// `matches_cert` also needs the signer's certificate the signature carries
/// (found by the SignerInfo's issuer and serial number, as the firmware and
/// sbverify find it) to be `cert_der` byte for byte: the firmware checks the
/// signature with the embedded certificate's key and chains that certificate
/// to db, so a signature that verifies under the configured key but carries a
/// changed certificate is one the firmware refuses.
pub fn verify(image: &[u8], cert_der: &[u8]) -> Result<Verdict, Error> {
    let pe = PeImage::parse(image)?;
    let Some(sig) = signature_der(&pe)? else { return Ok(Verdict::Unsigned) };
    let p = parse_signature(sig)?;
    let digest_ok = p.digest.as_slice() == image_hash(&pe)?.as_slice();

    let cert = Certificate::from_der(cert_der).map_err(|e| bad(format!("the given certificate: {e}")))?;
    if !embeds_signer_cert(&p, &cert, cert_der) {
        return Ok(Verdict::SignedBy { matches_cert: false, digest_ok });
    }
    let public = cert_public_key(&cert)?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public);
    let signature = match rsa::pkcs1v15::Signature::try_from(p.signer.signature.as_bytes()) {
        Ok(s) => s,
        Err(_) => return Ok(Verdict::SignedBy { matches_cert: false, digest_ok }),
    };
    if p.signer.digest_alg.oid != OID_SHA256 {
        return Err(bad(format!("signer digest algorithm {} is not SHA-256", p.signer.digest_alg.oid)));
    }
    let matches_cert = match &p.signer.signed_attrs {
        Some(attrs) => {
            let value = |oid| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.get(0));
            let content_type_ok = value(OID_CONTENT_TYPE)
                .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
                .is_some_and(|o| o == OID_SPC_INDIRECT_DATA);
            let md_ok = value(OID_MESSAGE_DIGEST)
                .and_then(|v| v.decode_as::<OctetString>().ok())
                .is_some_and(|o| o.as_bytes() == Sha256::digest(&p.econtent_value).as_slice());
            let signed = attrs.to_der().map_err(|e| bad(format!("signed attributes: {e}")))?;
            content_type_ok && md_ok && verifier.verify(&signed, &signature).is_ok()
        }
        None => verifier.verify(&p.econtent_value, &signature).is_ok(),
    };
    Ok(Verdict::SignedBy { matches_cert, digest_ok })
}

/// Whether the signature names `cert` as its signer (issuer and serial number),
/// carries exactly one certificate with that name, and that certificate is
/// `cert_der` byte for byte; and its algorithms are the ones the firmware takes
/// (SHA-256, RSA).
fn embeds_signer_cert(p: &Parsed, cert: &Certificate, cert_der: &[u8]) -> bool {
    let SignerIdentifier::IssuerAndSerialNumber(sid) = &p.signer.sid else { return false };
    let tbs = &cert.tbs_certificate;
    if sid.issuer != tbs.issuer || sid.serial_number != tbs.serial_number {
        return false;
    }
    let named: Vec<&Vec<u8>> = p
        .certs
        .iter()
        .filter(|d| {
            Certificate::from_der(d).is_ok_and(|c| {
                c.tbs_certificate.issuer == sid.issuer && c.tbs_certificate.serial_number == sid.serial_number
            })
        })
        .collect();
    let algs_ok = !p.digest_algs.is_empty() && p.digest_algs.iter().all(|o| *o == OID_SHA256);
    let sig_alg_ok = [OID_RSA_ENCRYPTION, OID_SHA256_WITH_RSA].contains(&p.signer.signature_algorithm.oid);
    named.len() == 1 && named[0].as_slice() == cert_der && algs_ok && sig_alg_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spc_structures_are_pinned() {
        // SEQUENCE { BIT STRING '', [0] { [2] { [0] BMPString "<<<Obsolete>>>" } } }
        let mut want = vec![0x30, 0x25, 0x03, 0x01, 0x00, 0xa0, 0x20, 0xa2, 0x1e, 0x80, 0x1c];
        for c in b"<<<Obsolete>>>" {
            want.extend_from_slice(&[0, *c]);
        }
        assert_eq!(spc_pe_image_data(), want);
        let idc = indirect_data_content(&[0xab; 32]).unwrap();
        let mut head =
            vec![0x30, 0x68, 0x30, 0x33, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0f];
        head.extend_from_slice(&want);
        // DigestInfo: SEQUENCE { SEQUENCE { OID sha256, NULL }, OCTET STRING }
        head.extend_from_slice(&[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ]);
        head.extend_from_slice(&[0x05, 0x00, 0x04, 0x20]);
        head.extend_from_slice(&[0xab; 32]);
        assert_eq!(idc, head);
    }
}
