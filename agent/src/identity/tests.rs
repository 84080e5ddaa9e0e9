//! The identity as a guest would check it: signatures verified by the
//! real `openssl` CLI against the certificate the agent made (both the
//! plain RSA-SHA256 signature and the PKCS#7, the latter also with the
//! certificate as the trust anchor). Without openssl these tests say so
//! and skip, unless `CI` is set.
//!
//! An RSA key takes seconds to make in a debug build, so one identity is
//! made once and copied where a test needs one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;

use super::*;

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required when CI is set"
        );
        eprintln!("skipping: openssl not found");
    }
    ok
}

/// Runs openssl in `dir` and insists that it succeeds; its stdout.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh, empty directory for `name`.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "stratus-agent-identity-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (key PEM, certificate PEM) of one identity made by
/// [`HostIdentity::load_or_create`] in an empty directory.
fn made() -> &'static (String, String) {
    static MADE: OnceLock<(String, String)> = OnceLock::new();
    MADE.get_or_init(|| {
        let d = dir("made");
        HostIdentity::load_or_create(&d).unwrap();
        let files = (
            std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
            std::fs::read_to_string(d.join(CERT_FILE)).unwrap(),
        );
        std::fs::remove_dir_all(&d).unwrap();
        files
    })
}

/// The identity of [`made`], loaded (for other modules' tests).
pub(crate) fn shared() -> std::sync::Arc<HostIdentity> {
    static SHARED: OnceLock<std::sync::Arc<HostIdentity>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let (key, cert) = made();
            let d = dir("shared");
            std::fs::write(d.join(KEY_FILE), key).unwrap();
            std::fs::write(d.join(CERT_FILE), cert).unwrap();
            let identity = HostIdentity::load_or_create(&d).unwrap();
            std::fs::remove_dir_all(&d).unwrap();
            std::sync::Arc::new(identity)
        })
        .clone()
}

fn document() -> MetadataDocument {
    serde_json::from_value(serde_json::json!({
        "instance_id": "i-0123456789abcdef0", "ami_id": "ami-0123456789abcdef0",
        "instance_type": "t3.nano", "account_id": "000000000000",
        "region": "stratus-1", "availability_zone": "stratus-1a",
        "local_ipv4": "10.0.0.5", "local_hostname": "ip-10-0-0-5", "hostname": "ip-10-0-0-5",
        "mac": "02:00:0a:00:00:05", "pending_time": "2024-05-01T12:00:00Z"
    }))
    .unwrap()
}

#[test]
fn made_on_first_start_and_the_same_ever_after() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = dir("reuse");
    let first = HostIdentity::load_or_create(&d).unwrap();
    let key = std::fs::read_to_string(d.join(KEY_FILE)).unwrap();
    let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(KEY_FILE), 0o600);
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    assert!(first
        .certificate_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        std::fs::read_to_string(d.join(CERT_FILE)).unwrap(),
        first.certificate_pem()
    );
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let again = HostIdentity::load_or_create(&d).unwrap();
    assert_eq!(again.certificate_pem(), first.certificate_pem());
    assert_eq!(std::fs::read_to_string(d.join(KEY_FILE)).unwrap(), key);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn signatures_verify_against_the_certificate_with_openssl() {
    if !have_openssl() {
        return;
    }
    let (key, cert) = made();
    let d = dir("verify");
    std::fs::write(d.join(KEY_FILE), key).unwrap();
    std::fs::write(d.join(CERT_FILE), cert).unwrap();
    let identity = HostIdentity::load_or_create(&d).unwrap();
    let mut doc = document();
    identity.sign(&mut doc).unwrap();
    let text = doc.identity_document();
    std::fs::write(d.join("document"), &text).unwrap();

    // `signature`: RSA-SHA256 of the document, with the certificate's key.
    let signature = doc.identity.signature.as_deref().unwrap().replace('\n', "");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .unwrap();
    std::fs::write(d.join("signature.bin"), raw).unwrap();
    let public = openssl(&d, &["x509", "-pubkey", "-noout", "-in", CERT_FILE]);
    std::fs::write(d.join("public.pem"), public).unwrap();
    openssl(
        &d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "public.pem",
            "-signature",
            "signature.bin",
            "document",
        ],
    );

    // `rsa2048` and `pkcs7`: the SignedData carries the document.
    for (name, sig) in [
        ("rsa2048", &doc.identity.rsa2048),
        ("pkcs7", &doc.identity.pkcs7),
    ] {
        let pem = format!(
            "-----BEGIN PKCS7-----\n{}\n-----END PKCS7-----\n",
            sig.as_deref().unwrap()
        );
        std::fs::write(d.join(name), pem).unwrap();
        let shown = openssl(
            &d,
            &[
                "smime",
                "-verify",
                "-in",
                name,
                "-inform",
                "PEM",
                "-certfile",
                CERT_FILE,
                "-noverify",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&shown), text, "{name}");
        // The self-signed certificate is also a trust anchor openssl takes.
        let shown = openssl(
            &d,
            &[
                "smime",
                "-verify",
                "-in",
                name,
                "-inform",
                "PEM",
                "-certfile",
                CERT_FILE,
                "-CAfile",
                CERT_FILE,
            ],
        );
        assert_eq!(String::from_utf8_lossy(&shown), text, "{name}");
    }
    openssl(&d, &["verify", "-CAfile", CERT_FILE, CERT_FILE]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unusable_files_stop_the_agent_and_are_left_as_they_are() {
    let (key, cert) = made();
    let d = dir("broken");

    // A corrupt key: an error, nothing rewritten.
    std::fs::write(d.join(KEY_FILE), "-----BEGIN PRIVATE KEY-----\nnope\n").unwrap();
    std::fs::write(d.join(CERT_FILE), cert).unwrap();
    let e = HostIdentity::load_or_create(&d).unwrap_err();
    assert!(matches!(e, IdentityError::Unusable { .. }), "{e}");
    assert!(e.to_string().contains(KEY_FILE), "{e}");
    assert_eq!(
        std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
        "-----BEGIN PRIVATE KEY-----\nnope\n"
    );

    // A corrupt certificate beside a good key.
    std::fs::write(d.join(KEY_FILE), key).unwrap();
    std::fs::write(d.join(CERT_FILE), "garbage").unwrap();
    let e = HostIdentity::load_or_create(&d).unwrap_err();
    assert!(matches!(e, IdentityError::Unusable { .. }), "{e}");
    assert_eq!(
        std::fs::read_to_string(d.join(CERT_FILE)).unwrap(),
        "garbage"
    );

    // A certificate whose key is gone: not replaced.
    std::fs::remove_file(d.join(KEY_FILE)).unwrap();
    std::fs::write(d.join(CERT_FILE), cert).unwrap();
    let e = HostIdentity::load_or_create(&d).unwrap_err();
    assert!(matches!(e, IdentityError::KeyMissing { .. }), "{e}");
    assert!(!d.join(KEY_FILE).exists());

    // A key whose certificate was never written (a crash between the
    // two): the key is kept and gets a certificate.
    std::fs::write(d.join(KEY_FILE), key).unwrap();
    std::fs::remove_file(d.join(CERT_FILE)).unwrap();
    let healed = HostIdentity::load_or_create(&d).unwrap();
    assert_eq!(&std::fs::read_to_string(d.join(KEY_FILE)).unwrap(), key);
    assert_ne!(healed.certificate_pem(), cert.as_str());
    let mut doc = document();
    healed.sign(&mut doc).unwrap();
    assert!(doc.identity.signature.is_some());

    // A directory where the key should be: an I/O error naming it.
    std::fs::remove_file(d.join(KEY_FILE)).unwrap();
    std::fs::create_dir(d.join(KEY_FILE)).unwrap();
    let e = HostIdentity::load_or_create(&d).unwrap_err();
    assert!(matches!(e, IdentityError::Io { .. }), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
