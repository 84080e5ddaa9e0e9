//! Signatures checked by the real `openssl` CLI, the way AWS tells a guest
//! to check EC2's: keys and certificates are made by openssl in a
//! temporary directory. Without openssl the tests print why they skip,
//! unless `CI` is set, where a missing openssl is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use vmm_sys_util::tempdir::TempDir;

use super::*;

/// An instance identity document as EC2 formats it (pretty-printed JSON,
/// no final newline).
const DOCUMENT: &str = r#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "us-east-1a",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0abcdef1234567890",
  "instanceId" : "i-1234567890abcdef0",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "2024-01-01T00:00:00Z",
  "privateIp" : "10.0.0.5",
  "ramdiskId" : null,
  "region" : "us-east-1",
  "version" : "2017-09-30"
}"#;

/// Whether openssl can be run; without it a test skips, except under CI.
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
        eprintln!("skipping: openssl not found (install openssl)");
    }
    ok
}

fn run(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

/// Runs openssl and insists that it succeeds.
fn openssl(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(TempDir::new_with_prefix("/tmp/stratus-identity-").unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.as_path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A fresh key made as `-newkey key_alg` says (`rsa:2048`: PKCS#8)
    /// and a self-signed certificate for it, as `<name>.key` and
    /// `<name>.crt`.
    fn key_and_cert(&self, name: &str, key_alg: &str) {
        let key = self.path(&format!("{name}.key"));
        let cert = self.path(&format!("{name}.crt"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            key_alg,
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
            "-subj",
            "/C=US/O=Stratus test/CN=instance identity",
            "-days",
            "2",
        ]);
    }

    fn signer(&self, name: &str) -> IdentitySigner {
        IdentitySigner::from_pem(
            &self.read(&format!("{name}.key")),
            &self.read(&format!("{name}.crt")),
        )
        .unwrap()
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn unbase64(text: &str) -> Vec<u8> {
    let flat: String = text.split('\n').collect();
    base64::engine::general_purpose::STANDARD
        .decode(flat)
        .unwrap()
}

/// The `pkcs7` file of AWS's instructions: the served text between PEM
/// armour lines (`echo` adds the newline the text lacks).
fn pkcs7_file(served: &str) -> String {
    format!("-----BEGIN PKCS7-----\n{served}\n-----END PKCS7-----\n")
}

/// `openssl dgst -sha256 -verify key -signature signature document`, with
/// the key taken from the certificate as AWS says.
fn dgst_verify(dir: &Dir, cert: &str, signature: &str, document: &[u8]) -> Output {
    let key = dir.path("pubkey.pem");
    openssl(&["x509", "-pubkey", "-noout", "-in", cert, "-out", s(&key)]);
    let sig = dir.write("signature", unbase64(signature));
    let doc = dir.write("document", document);
    run(&[
        "dgst",
        "-sha256",
        "-verify",
        s(&key),
        "-signature",
        s(&sig),
        s(&doc),
    ])
}

/// `openssl smime -verify -in pkcs7 -inform PEM -certfile certificate -noverify`.
fn smime_verify(dir: &Dir, cert: &str, served: &str) -> Output {
    let p7 = dir.write("pkcs7", pkcs7_file(served));
    run(&[
        "smime",
        "-verify",
        "-in",
        s(&p7),
        "-inform",
        "PEM",
        "-certfile",
        cert,
        "-noverify",
    ])
}

#[test]
fn signature_verifies_with_openssl_dgst() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:2048");
    let signer = dir.signer("host");
    let sigs = signer.sign(DOCUMENT.as_bytes()).unwrap();
    let cert = dir.path("host.crt");

    let out = dgst_verify(&dir, s(&cert), &sigs.signature, DOCUMENT.as_bytes());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");

    // One byte changed in the document.
    let tampered = DOCUMENT.replace("10.0.0.5", "10.0.0.6");
    let out = dgst_verify(&dir, s(&cert), &sigs.signature, tampered.as_bytes());
    assert!(!out.status.success(), "tampered document verified: {out:?}");

    // PKCS#1 v1.5 is deterministic, so the blinded signature is still
    // exactly what openssl itself makes.
    let doc = dir.write("document", DOCUMENT);
    let theirs = openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        s(&dir.path("host.key")),
        s(&doc),
    ]);
    assert_eq!(unbase64(&sigs.signature), theirs.stdout);
}

#[test]
fn rsa2048_verifies_with_openssl_smime_and_carries_the_document() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:2048");
    let signer = dir.signer("host");
    let sigs = signer.sign(DOCUMENT.as_bytes()).unwrap();
    let cert = dir.path("host.crt");

    let out = smime_verify(&dir, s(&cert), &sigs.rsa2048);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Verification successful"));
    // `| tee document`: what openssl prints is the document, byte for byte.
    assert_eq!(out.stdout, DOCUMENT.as_bytes());

    // The brief's shape: the document given again with -content.
    let doc = dir.write("document", DOCUMENT);
    let p7 = dir.write("pkcs7", pkcs7_file(&sigs.rsa2048));
    let out = run(&[
        "smime",
        "-verify",
        "-in",
        s(&p7),
        "-inform",
        "PEM",
        "-content",
        s(&doc),
        "-certfile",
        s(&cert),
        "-noverify",
    ]);
    assert!(out.status.success(), "{out:?}");

    // And openssl cms, with the DER as served after base64 -d.
    let der = dir.write("rsa2048.der", unbase64(&sigs.rsa2048));
    let out = run(&[
        "cms",
        "-verify",
        "-in",
        s(&der),
        "-inform",
        "DER",
        "-certfile",
        s(&cert),
        "-noverify",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, DOCUMENT.as_bytes());

    // pkcs7 is the same structure and passes the same command.
    assert_eq!(sigs.pkcs7, sigs.rsa2048);
}

#[test]
fn tampered_rsa2048_fails() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:2048");
    let sigs = dir.signer("host").sign(DOCUMENT.as_bytes()).unwrap();
    let cert = dir.path("host.crt");

    // The document inside the SignedData changed.
    let mut der = unbase64(&sigs.rsa2048);
    let at = der
        .windows(8)
        .position(|w| w == b"10.0.0.5")
        .expect("the document is attached");
    der[at + 7] = b'6';
    let tampered = base64::engine::general_purpose::STANDARD.encode(&der);
    let out = smime_verify(&dir, s(&cert), &tampered);
    assert!(
        !out.status.success(),
        "tampered SignedData verified: {out:?}"
    );

    // Another document given with -content.
    let other = dir.write("document", DOCUMENT.replace("t3.micro", "t3.large"));
    let p7 = dir.write("pkcs7", pkcs7_file(&sigs.rsa2048));
    let out = run(&[
        "smime",
        "-verify",
        "-in",
        s(&p7),
        "-inform",
        "PEM",
        "-content",
        s(&other),
        "-certfile",
        s(&cert),
        "-noverify",
    ]);
    assert!(!out.status.success(), "other document verified: {out:?}");

    // Someone else's certificate.
    dir.key_and_cert("other", "rsa:2048");
    let out = smime_verify(&dir, s(&dir.path("other.crt")), &sigs.rsa2048);
    assert!(!out.status.success(), "verified with another cert: {out:?}");
}

#[test]
fn base64_is_in_pem_lines() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:2048");
    let sigs = dir.signer("host").sign(DOCUMENT.as_bytes()).unwrap();
    for text in [&sigs.signature, &sigs.rsa2048] {
        assert!(!text.ends_with('\n'));
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines.len() > 1);
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 64));
        assert!(lines.last().unwrap().len() <= 64);
    }
    // 2048 bits: 256 bytes of signature.
    assert_eq!(unbase64(&sigs.signature).len(), 256);
}

#[test]
fn pkcs1_and_larger_keys_are_taken() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:3072");
    let pkcs1 = dir.path("host.pkcs1");
    openssl(&[
        "rsa",
        "-in",
        s(&dir.path("host.key")),
        "-traditional",
        "-out",
        s(&pkcs1),
    ]);
    let key = dir.read("host.pkcs1");
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let signer = IdentitySigner::from_pem(&key, &dir.read("host.crt")).unwrap();
    let sigs = signer.sign(b"{}").unwrap();
    let cert = dir.path("host.crt");
    let out = dgst_verify(&dir, s(&cert), &sigs.signature, b"{}");
    assert!(out.status.success(), "{out:?}");
    let out = smime_verify(&dir, s(&cert), &sigs.rsa2048);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"{}");
    // The Debug form names the key's size, never its parts.
    let debug = format!("{signer:?}");
    assert!(debug.contains("key_bits: 3072"), "{debug}");
    assert!(debug.contains("instance identity"), "{debug}");
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("a", "rsa:2048");
    dir.key_and_cert("b", "rsa:2048");
    let err = IdentitySigner::from_pem(&dir.read("a.key"), &dir.read("b.crt")).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch), "{err}");
    // A chain whose first certificate is the signer's is fine.
    let chain = dir.read("a.crt") + &dir.read("b.crt");
    IdentitySigner::from_pem(&dir.read("a.key"), &chain).unwrap();
}

#[test]
fn short_and_non_rsa_keys_are_refused() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("short", "rsa:1024");
    let err = IdentitySigner::from_pem(&dir.read("short.key"), &dir.read("short.crt")).unwrap_err();
    assert!(matches!(err, IdentityError::KeyTooShort(1024)), "{err}");

    // `-newkey ec` needs its curve in a parameter file.
    let params = dir.path("ec.params");
    openssl(&["ecparam", "-name", "prime256v1", "-out", s(&params)]);
    dir.key_and_cert("ec", &format!("ec:{}", s(&params)));
    let err = IdentitySigner::from_pem(&dir.read("ec.key"), &dir.read("ec.crt")).unwrap_err();
    assert!(matches!(err, IdentityError::Key), "{err}");

    // An RSA key with an EC certificate.
    dir.key_and_cert("rsa", "rsa:2048");
    let err = IdentitySigner::from_pem(&dir.read("rsa.key"), &dir.read("ec.crt")).unwrap_err();
    assert!(matches!(err, IdentityError::CertificateKey), "{err}");
}

#[test]
fn garbage_is_refused() {
    assert!(matches!(
        IdentitySigner::from_pem("not a key", "not a cert"),
        Err(IdentityError::Key)
    ));
}

#[test]
fn encrypted_keys_are_refused() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new();
    dir.key_and_cert("host", "rsa:2048");
    let encrypted = dir.path("host.enc");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        s(&dir.path("host.key")),
        "-passout",
        "pass:secret",
        "-out",
        s(&encrypted),
    ]);
    let err = IdentitySigner::from_pem(&dir.read("host.enc"), &dir.read("host.crt")).unwrap_err();
    assert!(matches!(err, IdentityError::Key), "{err}");
    // A certificate that is not one.
    let err = IdentitySigner::from_pem(&dir.read("host.key"), "").unwrap_err();
    assert!(matches!(err, IdentityError::Certificate(_)), "{err}");
}
