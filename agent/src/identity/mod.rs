//! The host's instance-identity signing identity: the RSA key that signs
//! every instance's identity document (EC2's
//! `dynamic/instance-identity/{signature,rsa2048,pkcs7}`) and the
//! certificate a guest checks those signatures with
//! (`GET /v1/identity-certificate`).
//!
//! Both live in the state directory, `identity-key.pem` (PKCS#8, mode
//! 0600) and `identity-cert.pem`. They are made on the first start and
//! never again: a guest, or whatever it reports to, may have pinned the
//! certificate, so a new one would silently turn every later document
//! into a forgery in its eyes. A file that is there but unreadable or
//! unusable stops the agent at startup instead (an operator's problem to
//! look at, not something to paper over).
//!
//! The agent signs, not the VMM: the key never leaves the agent, so a VMM
//! (the process that talks to the guest) cannot sign a document for
//! another instance, and the signatures are already in the metadata file
//! the VMM is given (see `supervisor`).

pub mod certificate;

use std::path::Path;
use std::time::SystemTime;

use stratus_devices::net::identity::{IdentityError as SignerError, IdentitySigner};
use stratus_devices::net::metadata::MetadataDocument;

use crate::host::atomic_file;

/// The key's file name in the state directory.
pub const KEY_FILE: &str = "identity-key.pem";
/// The certificate's file name in the state directory.
pub const CERT_FILE: &str = "identity-cert.pem";

/// Why the host identity could not be loaded, made or used. (The
/// crypto crates' errors are boxed: they are large, and this error rides
/// in every `Result` of the agent's startup.)
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{key} and {cert} do not make a signing identity: {source}")]
    Unusable {
        key: String,
        cert: String,
        source: Box<SignerError>,
    },
    #[error(
        "{cert} exists without its key {key}: the agent will not replace a certificate \
         guests may trust; restore the key, or remove both files for a new identity"
    )]
    KeyMissing { key: String, cert: String },
    #[error("making the identity: {0}")]
    Make(#[source] Box<certificate::MakeError>),
    #[error("signing the identity document: {0}")]
    Sign(#[source] Box<SignerError>),
}

impl From<certificate::MakeError> for IdentityError {
    fn from(e: certificate::MakeError) -> Self {
        IdentityError::Make(Box::new(e))
    }
}

/// The loaded identity: what signs, and the certificate to publish.
#[derive(Debug)]
pub struct HostIdentity {
    signer: IdentitySigner,
    certificate_pem: String,
}

impl HostIdentity {
    /// Loads the identity from `state_dir`, making it first if neither
    /// file is there. A key without its certificate (a crash between the
    /// two writes, as the key is written first) gets a certificate made
    /// for it; a certificate without its key is an error.
    pub fn load_or_create(state_dir: &Path) -> Result<HostIdentity, IdentityError> {
        let key_path = state_dir.join(KEY_FILE);
        let cert_path = state_dir.join(CERT_FILE);
        let key_text = read_if_present(&key_path)?;
        let cert_text = read_if_present(&cert_path)?;
        let (key_pem, cert_pem) = match (key_text, cert_text) {
            (Some(key), Some(cert)) => (key, cert),
            (None, Some(_)) => {
                return Err(IdentityError::KeyMissing {
                    key: key_path.display().to_string(),
                    cert: cert_path.display().to_string(),
                })
            }
            (None, None) => {
                let key = certificate::generate_key()?;
                let key_pem = certificate::key_pem(&key)?;
                write(&key_path, &key_pem, 0o600)?;
                let cert_pem = certificate::self_signed(&key, SystemTime::now())?;
                write(&cert_path, &cert_pem, 0o644)?;
                tracing::info!(key = %key_path.display(), certificate = %cert_path.display(),
                    "made the host's instance-identity key and certificate");
                (key_pem, cert_pem)
            }
            (Some(key_pem), None) => {
                let key = parse_key(&key_pem, &key_path, &cert_path)?;
                let cert_pem = certificate::self_signed(&key, SystemTime::now())?;
                write(&cert_path, &cert_pem, 0o644)?;
                tracing::warn!(certificate = %cert_path.display(),
                    "the identity key had no certificate (an interrupted first start): made one");
                (key_pem, cert_pem)
            }
        };
        warn_if_exposed(&key_path);
        let signer = IdentitySigner::from_pem(&key_pem, &cert_pem).map_err(|source| {
            IdentityError::Unusable {
                key: key_path.display().to_string(),
                cert: cert_path.display().to_string(),
                source: Box::new(source),
            }
        })?;
        Ok(HostIdentity {
            signer,
            certificate_pem: cert_pem,
        })
    }

    /// The certificate in PEM (public: what guests verify against).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Signs `doc`'s identity document, in place: the exact bytes the
    /// metadata service serves as `instance-identity/document` get
    /// `signature`, `rsa2048` and `pkcs7`.
    pub fn sign(&self, doc: &mut MetadataDocument) -> Result<(), IdentityError> {
        let sigs = self
            .signer
            .sign(doc.identity_document().as_bytes())
            .map_err(|e| IdentityError::Sign(Box::new(e)))?;
        doc.identity = sigs.into();
        Ok(())
    }
}

/// The file's text, `None` if it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>, IdentityError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io(path, source)),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), IdentityError> {
    atomic_file::write(path, text.as_bytes(), mode).map_err(|e| io(path, e))
}

fn io(path: &Path, source: std::io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The key in `key_pem`, for a certificate to be made for it.
fn parse_key(
    key_pem: &str,
    key_path: &Path,
    cert_path: &Path,
) -> Result<rsa::RsaPrivateKey, IdentityError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    rsa::RsaPrivateKey::from_pkcs8_pem(key_pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(key_pem))
        .map_err(|_| IdentityError::Unusable {
            key: key_path.display().to_string(),
            cert: cert_path.display().to_string(),
            source: Box::new(SignerError::Key),
        })
}

/// Says so when others than the owner may read the key (it is used
/// anyway: refusing would take every instance's metadata down over a
/// mode an operator may have set on purpose).
fn warn_if_exposed(key_path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(key_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(key = %key_path.display(),
                "the identity key is readable by others than its owner (chmod 600 it)");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
