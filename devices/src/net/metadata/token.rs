//! IMDSv2 session tokens.
//!
//! A token is `base64url(expiry ‖ HMAC-SHA256(key, "imds-v2" ‖ expiry ‖
//! instance id))`, no padding: 40 bytes, 54 characters. `expiry` is the
//! caller's millisecond clock (the `now_ms` of every call) at which the
//! token stops working, big-endian. The key is 32 random bytes drawn when
//! the service is made and never leaves it, so a token cannot be forged,
//! works only for the instance it was issued to (a replaced document with
//! another instance id refuses it), and dies with the VMM. Nothing is
//! stored per token: issuing and checking allocate nothing.

use std::io::Read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a decoded token.
const TOKEN_BYTES: usize = 8 + 32;
/// Characters of a token.
pub(crate) const TOKEN_LEN: usize = 54;
/// Separates tokens from any other use of the key.
const DOMAIN: &[u8] = b"imds-v2";

/// Longest lifetime a token may ask for, in seconds (EC2's six hours).
pub(crate) const MAX_TTL_SECS: u32 = 21_600;

/// What a presented token is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Issued here, for this instance, and not expired.
    Valid,
    /// Issued here for this instance, but expired.
    Expired,
    /// Not a token issued here for this instance.
    Forged,
}

/// Issues and checks tokens with one random key.
pub(crate) struct Tokens {
    key: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { key: <secret> }")
    }
}

impl Tokens {
    /// Draws a key from the kernel's random source.
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Self { key })
    }

    fn mac(&self, expiry: u64, instance_id: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(DOMAIN);
        mac.update(&expiry.to_be_bytes());
        mac.update(instance_id.as_bytes());
        mac
    }

    /// A token for `instance_id` that expires at `expiry_ms`.
    pub(crate) fn issue(&self, instance_id: &str, expiry_ms: u64) -> [u8; TOKEN_LEN] {
        let mut raw = [0u8; TOKEN_BYTES];
        raw[..8].copy_from_slice(&expiry_ms.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(expiry_ms, instance_id).finalize().into_bytes());
        let mut out = [0u8; TOKEN_LEN];
        // 40 bytes are exactly 54 characters unpadded.
        let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
        out
    }

    /// Judges `token` (as sent, surrounding spaces allowed) at `now_ms`.
    pub(crate) fn check(&self, instance_id: &str, token: &[u8], now_ms: u64) -> Verdict {
        let token = token.trim_ascii();
        if token.len() != TOKEN_LEN {
            return Verdict::Forged;
        }
        let mut raw = [0u8; TOKEN_BYTES + 2];
        match URL_SAFE_NO_PAD.decode_slice(token, &mut raw) {
            Ok(TOKEN_BYTES) => {}
            _ => return Verdict::Forged,
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&raw[..8]);
        let expiry = u64::from_be_bytes(expiry);
        if self
            .mac(expiry, instance_id)
            .verify_slice(&raw[8..TOKEN_BYTES])
            .is_err()
        {
            return Verdict::Forged;
        }
        if now_ms >= expiry {
            Verdict::Expired
        } else {
            Verdict::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_expire_and_bind_to_the_instance() {
        let tokens = Tokens::new().unwrap();
        let t = tokens.issue("i-1", 1_000);
        assert!(t
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_'));
        assert_eq!(tokens.check("i-1", &t, 999), Verdict::Valid);
        assert_eq!(tokens.check("i-1", &t, 1_000), Verdict::Expired);
        assert_eq!(tokens.check("i-2", &t, 0), Verdict::Forged);
        let other = Tokens::new().unwrap();
        assert_eq!(other.check("i-1", &t, 0), Verdict::Forged);
        for i in 0..TOKEN_LEN {
            let mut bad = t;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_ne!(tokens.check("i-1", &bad, 0), Verdict::Valid, "{i}");
        }
        assert_eq!(tokens.check("i-1", b"", 0), Verdict::Forged);
        assert_eq!(tokens.check("i-1", &[0xff; TOKEN_LEN], 0), Verdict::Forged);
    }
}
