//! Key pairs: public keys imported by name, handed to instances through
//! their metadata (`public-keys/0/openssh-key`).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key types EC2 imports.
const TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

/// An imported key pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    pub key_pair_id: String,
    pub key_name: String,
    /// `rsa`, `ed25519` or `ecdsa`.
    pub key_type: String,
    /// `SHA256:` and the unpadded base64 of the key blob's SHA-256, as
    /// `ssh-keygen -l` prints it.
    pub key_fingerprint: String,
    pub public_key: String,
    pub created_at: String,
}

/// A checked public key: its OpenSSH text (type, base64 blob, comment),
/// type and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub text: String,
    pub key_type: String,
    pub fingerprint: String,
}

/// Checks a key name as EC2 does: 1-255 ASCII characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("key_name must be 1-255 printable ASCII characters".into());
    }
    Ok(())
}

/// Parses an OpenSSH public key line (`TYPE BASE64 [COMMENT]`).
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let line = text.trim();
    if line.contains('\n') {
        return Err("public_key_material must be one OpenSSH public key line".into());
    }
    let mut words = line.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Err("public_key_material is not `TYPE BASE64 [COMMENT]`".into());
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "key type `{kind}` is not one of {}",
            TYPES.join(", ")
        ));
    }
    let bytes = STANDARD
        .decode(blob)
        .map_err(|_| "the key's base64 does not decode".to_string())?;
    // The blob starts with its own type as an SSH string (u32 length, bytes).
    let inner = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| bytes.get(4..4 + len));
    if inner != Some(kind.as_bytes()) {
        return Err(format!("the key's data is not a {kind} key"));
    }
    let fingerprint = format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&bytes)));
    let key_type = match kind {
        "ssh-rsa" => "rsa",
        "ssh-ed25519" => "ed25519",
        _ => "ecdsa",
    };
    Ok(PublicKey {
        text: line.to_string(),
        key_type: key_type.into(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-test-key";

    #[test]
    fn parses_openssh_keys_and_refuses_others() {
        let k = parse_public_key(KEY).unwrap();
        assert_eq!(k.key_type, "ed25519");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert_eq!(k.fingerprint.len(), 7 + 43);
        assert!(parse_public_key(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW"
        )
        .is_err());
        assert!(parse_public_key("ssh-dss AAAA").is_err());
        assert!(parse_public_key("ssh-ed25519 !!!").is_err());
        assert!(parse_public_key("").is_err());
        assert!(check_name("my-key").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("tab\tkey").is_err());
    }
}
