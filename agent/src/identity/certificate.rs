//! A new host signing identity: an RSA-2048 key and a self-signed X.509
//! certificate for it, both in PEM.
//!
//! Made with the RustCrypto crates the devices crate already verifies and
//! signs with (`rsa`, `x509-cert`, `der`, `sha2`), so the agent brings in
//! no new TLS or certificate stack. The certificate is built field by
//! field rather than with `x509-cert`'s `builder` feature, which would add
//! `sha1` to the build for nothing else.
//!
//! What the certificate says, and why:
//! - subject = issuer = `CN=Stratus instance identity, O=Stratus`: it is
//!   its own root, as a guest is meant to trust it directly (EC2 publishes
//!   its per-Region certificates the same way).
//! - a random positive 128-bit serial: two hosts' certificates never share
//!   issuer and serial, which is how a CMS `SignerInfo` names its signer.
//! - valid from an hour before it was made (guest clocks that lag still
//!   accept it) to 9999-12-31 (RFC 5280's "no well-defined expiration"):
//!   the key is never rotated behind the operator's back, so a
//!   certificate that expired would silently break every guest's check.
//! - `basicConstraints` CA (critical), `keyUsage` digitalSignature and
//!   keyCertSign (critical), `subjectKeyIdentifier` (RFC 7093 method 1:
//!   the first 160 bits of SHA-256 of the public key): what OpenSSL wants
//!   to take a self-signed certificate as a trust anchor (`-CAfile`) and
//!   as the signer of S/MIME data.

use std::str::FromStr as _;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, OctetString, UtcTime};
use der::{Decode as _, Encode as _, EncodePem as _};
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::rand_core::OsRng;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest as _, Sha256};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::AsExtension as _;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// Bits of the key the agent makes (EC2's `rsa2048` names the size).
pub const KEY_BITS: usize = 2048;

/// The certificate's subject and issuer.
pub const SUBJECT: &str = "CN=Stratus instance identity,O=Stratus";

/// `sha256WithRSAEncryption` (RFC 4055).
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// How far before its making the certificate is valid from.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why a key or certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error("generating an RSA-{KEY_BITS} key: {0}")]
    Generate(#[source] rsa::Error),
    #[error("reading random bytes for the serial number: {0}")]
    Random(getrandom::Error),
    #[error("encoding the key: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    #[error("encoding the public key: {0}")]
    Spki(#[from] rsa::pkcs8::spki::Error),
    #[error("encoding the certificate: {0}")]
    Der(#[from] der::Error),
    #[error("signing the certificate: {0}")]
    Sign(#[source] rsa::Error),
    #[error("the system clock is before 1970")]
    Clock,
}

/// A fresh RSA key of [`KEY_BITS`] bits from the OS's generator.
pub fn generate_key() -> Result<RsaPrivateKey, MakeError> {
    RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(MakeError::Generate)
}

/// `key` as an unencrypted PKCS#8 PEM (`PRIVATE KEY`), the form
/// `IdentitySigner::from_pem` and `openssl` read.
pub fn key_pem(key: &RsaPrivateKey) -> Result<String, MakeError> {
    Ok(key.to_pkcs8_pem(LineEnding::LF)?.to_string())
}

/// A self-signed certificate for `key`, made `now`, in PEM.
pub fn self_signed(key: &RsaPrivateKey, now: SystemTime) -> Result<String, MakeError> {
    let spki_der = key.to_public_key().to_public_key_der()?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())?;
    let name = Name::from_str(SUBJECT)?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| MakeError::Clock)?;
    let not_before = UtcTime::from_unix_duration(since_epoch.saturating_sub(BACKDATE))?;
    let key_id = Sha256::digest(spki.subject_public_key.raw_bytes());
    let extensions = vec![
        BasicConstraints {
            ca: true,
            path_len_constraint: None,
        }
        .to_extension(&name, &[])?,
        KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign).to_extension(&name, &[])?,
        SubjectKeyIdentifier(OctetString::new(&key_id[..20])?).to_extension(&name, &[])?,
    ];
    let algorithm = AlgorithmIdentifierOwned {
        oid: SHA256_WITH_RSA,
        parameters: Some(der::Any::null()),
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial()?)?,
        signature: algorithm.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: Time::UtcTime(not_before),
            not_after: Time::INFINITY,
        },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let digest = Sha256::digest(tbs.to_der()?);
    let signature = key
        .sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha256>(), &digest)
        .map_err(MakeError::Sign)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_pem(LineEnding::LF)?)
}

/// 16 random bytes that encode a positive, non-zero INTEGER of 16 octets
/// (top bit clear, next bit set).
fn serial() -> Result<[u8; 16], MakeError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(MakeError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}
