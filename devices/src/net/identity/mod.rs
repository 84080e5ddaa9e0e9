//! Signatures of the instance identity document, as EC2's metadata service
//! serves them under `/latest/dynamic/instance-identity/`:
//!
//! * `signature`: base64 of an RSA-SHA256 PKCS#1 v1.5 signature of the
//!   document's bytes, checked with
//!   `openssl dgst -sha256 -verify key -signature signature document`
//!   after `base64 -d` and `openssl x509 -pubkey -noout -in certificate`.
//! * `rsa2048`: base64 of a DER CMS (PKCS#7) `SignedData` that carries the
//!   document itself (attached, as EC2's is), with SHA-256 and an RSA
//!   key. Put between `-----BEGIN PKCS7-----` and `-----END PKCS7-----`
//!   lines, it is checked with
//!   `openssl smime -verify -in pkcs7 -inform PEM -certfile certificate -noverify`,
//!   which prints the document.
//! * `pkcs7`: on EC2 the same shape of `SignedData` made with a DSA key
//!   and SHA-1. There is no DSA key here, so it is the very `rsa2048`
//!   structure (RSA, SHA-256); the same `openssl smime` command checks it,
//!   with the host's certificate rather than AWS's DSA one.
//!
//! The host's agent hands the VMM the RSA key and its certificate; the
//! certificate is what a guest checks against (AWS publishes theirs per
//! Region). It is not put in the `SignedData`, as EC2 does not either, so
//! a verifier has to bring the one it trusts (`-certfile`).
//!
//! The base64 texts are broken into lines of 64 characters, without a
//! final newline, as a PEM body is: `base64 -d` and OpenSSL's PEM reader
//! take them as they are.
//!
//! The `SignedData` is `version 1`, one `digestAlgorithm` (SHA-256, no
//! parameters), `encapContentInfo` of type `id-data` with the document as
//! its OCTET STRING, no certificates or CRLs, and one `SignerInfo`: the
//! certificate's issuer and serial number, SHA-256, signed attributes
//! `contentType` (`id-data`) and `messageDigest`, `rsaEncryption` and the
//! PKCS#1 v1.5 signature of the attributes' DER. There is no
//! `signingTime`: nothing here reads a clock, and the same document always
//! gets the same signatures.

use std::fmt;

use base64::Engine as _;
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo,
    SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, DecodePem, Encode, Tag};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

#[cfg(test)]
mod tests;

/// The smallest RSA key accepted, in bits (EC2's `rsa2048` says it).
pub const MIN_KEY_BITS: usize = 2048;

/// Length of the lines the base64 texts are broken into.
const BASE64_LINE: usize = 64;

/// `id-data` (RFC 5652).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData` (RFC 5652).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `id-contentType` (RFC 5652).
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// `id-messageDigest` (RFC 5652).
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// `id-sha256` (RFC 5754).
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption` (RFC 8017), the signature algorithm CMS names for
/// PKCS#1 v1.5 signatures (RFC 3370).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a key, a certificate or a signature could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key is neither an unencrypted PKCS#8 (`PRIVATE KEY`) nor a
    /// PKCS#1 (`RSA PRIVATE KEY`) RSA key in PEM.
    #[error("identity signing key is not an unencrypted PKCS#8 or PKCS#1 RSA key in PEM")]
    Key,
    /// The key is not internally consistent.
    #[error("identity signing key is inconsistent: {0}")]
    KeyInvalid(rsa::Error),
    /// The key is shorter than [`MIN_KEY_BITS`].
    #[error("identity signing key has {0} bits, fewer than {MIN_KEY_BITS}")]
    KeyTooShort(usize),
    /// The certificate is not a PEM X.509 certificate.
    #[error("identity certificate is not an X.509 certificate in PEM: {0}")]
    Certificate(der::Error),
    /// The certificate's public key is not an RSA key.
    #[error("identity certificate's public key is not an RSA key")]
    CertificateKey,
    /// The certificate is for another key.
    #[error("identity certificate is for another key than the signing key")]
    KeyMismatch,
    /// Encoding the `SignedData` failed.
    #[error("cannot encode the identity SignedData: {0}")]
    Encode(der::Error),
    /// The RSA operation failed.
    #[error("cannot sign the identity document: {0}")]
    Sign(rsa::Error),
}

/// What EC2 serves beside the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// `instance-identity/signature`: base64 of the RSA-SHA256 PKCS#1 v1.5
    /// signature of the document.
    pub signature: String,
    /// `instance-identity/rsa2048`: base64 of the DER CMS `SignedData`
    /// carrying the document, without PEM armour lines.
    pub rsa2048: String,
    /// `instance-identity/pkcs7`: the same text as `rsa2048` (EC2 uses DSA
    /// and SHA-1 there; this uses the one RSA key it has).
    pub pkcs7: String,
}

/// Signs instance identity documents with the host's key.
pub struct IdentitySigner {
    key: RsaPrivateKey,
    /// Who the signer is in the `SignedData`.
    signer: IssuerAndSerialNumber,
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("IdentitySigner")
            .field("key_bits", &(self.key.size() * 8))
            .field("issuer", &self.signer.issuer.to_string())
            .field("serial", &self.signer.serial_number)
            .finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// Loads an RSA key of at least [`MIN_KEY_BITS`] bits (PKCS#8
    /// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, unencrypted) and its
    /// certificate (the first `CERTIFICATE` block in `cert_pem`, which may
    /// be a chain),
    /// refusing a certificate for another key.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<IdentitySigner, IdentityError> {
        let key = RsaPrivateKey::from_pkcs8_pem(key_pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(key_pem))
            .map_err(|_| IdentityError::Key)?;
        key.validate().map_err(IdentityError::KeyInvalid)?;
        let bits = key.n().bits();
        if bits < MIN_KEY_BITS {
            return Err(IdentityError::KeyTooShort(bits));
        }

        let cert = Certificate::from_pem(first_pem_certificate(cert_pem)?)
            .map_err(IdentityError::Certificate)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(IdentityError::Certificate)?;
        let cert_key =
            RsaPublicKey::from_public_key_der(&spki).map_err(|_| IdentityError::CertificateKey)?;
        if cert_key != key.to_public_key() {
            return Err(IdentityError::KeyMismatch);
        }

        Ok(IdentitySigner {
            key,
            signer: IssuerAndSerialNumber {
                issuer: cert.tbs_certificate.issuer,
                serial_number: cert.tbs_certificate.serial_number,
            },
        })
    }

    /// Signs `document` (the exact bytes served as
    /// `instance-identity/document`) both ways EC2 does.
    ///
    /// The RSA operation is blinded with fresh randomness; still, sign a
    /// document once and serve the result, rather than on every request.
    pub fn sign(&self, document: &[u8]) -> Result<Signatures, IdentityError> {
        let signature = self.rsa_sha256(document)?;
        let signed_data = self.signed_data(document)?;
        let rsa2048 = base64_lines(&signed_data);
        Ok(Signatures {
            signature: base64_lines(&signature),
            pkcs7: rsa2048.clone(),
            rsa2048,
        })
    }

    /// The PKCS#1 v1.5 RSA-SHA256 signature of `message`.
    fn rsa_sha256(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let digest = Sha256::digest(message);
        self.key
            .sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map_err(IdentityError::Sign)
    }

    /// The DER `ContentInfo` holding a `SignedData` of `document`.
    fn signed_data(&self, document: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let sha256 = AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        };
        let digest = Sha256::digest(document);
        let signed_attrs: SignedAttributes = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA))?,
            attribute(
                ID_MESSAGE_DIGEST,
                Any::new(Tag::OctetString, digest.as_slice()),
            )?,
        ])
        .map_err(IdentityError::Encode)?;
        // RFC 5652 5.4: the signature covers the attributes' DER with the
        // SET OF tag, not the [0] they are sent under.
        let signature = self.rsa_sha256(&signed_attrs.to_der().map_err(IdentityError::Encode)?)?;

        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(self.signer.clone()),
            digest_alg: sha256.clone(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            signature: OctetString::new(signature).map_err(IdentityError::Encode)?,
            unsigned_attrs: None,
        };
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(IdentityError::Encode)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: Some(
                    Any::encode_from(&OctetString::new(document).map_err(IdentityError::Encode)?)
                        .map_err(IdentityError::Encode)?,
                ),
            },
            certificates: None,
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer_info])
                .map_err(IdentityError::Encode)?,
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed_data).map_err(IdentityError::Encode)?,
        }
        .to_der()
        .map_err(IdentityError::Encode)
    }
}

/// The first `CERTIFICATE` block of `pem`, armour lines included.
/// (x509-cert's `load_pem_chain` panics on an empty input.)
fn first_pem_certificate(pem: &str) -> Result<&str, IdentityError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let missing = || IdentityError::Certificate(der::pem::Error::PreEncapsulationBoundary.into());
    let start = pem.find(BEGIN).ok_or_else(missing)?;
    let end = pem[start..].find(END).ok_or(IdentityError::Certificate(
        der::pem::Error::PostEncapsulationBoundary.into(),
    ))?;
    Ok(&pem[start..start + end + END.len()])
}

/// An attribute with the one value `value`.
fn attribute(oid: ObjectIdentifier, value: der::Result<Any>) -> Result<Attribute, IdentityError> {
    let value = value.map_err(IdentityError::Encode)?;
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(IdentityError::Encode)?,
    })
}

/// Standard base64 of `bytes` in lines of [`BASE64_LINE`] characters,
/// without a final newline.
fn base64_lines(bytes: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / BASE64_LINE);
    for (i, chunk) in flat.as_bytes().chunks(BASE64_LINE).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Base64 is ASCII, so every chunk is whole characters.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}
