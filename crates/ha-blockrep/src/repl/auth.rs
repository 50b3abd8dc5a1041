//! Shared-secret challenge-response (HMAC-SHA256).
//!
//! Each side sends a random nonce in its `Hello`; the other answers with
//! `HMAC(secret, "ha-blockrep-auth" | nonce | responder name)`. Binding the responder's name
//! stops a reflected challenge from being answered with the victim's own MAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Compute the response to `nonce` for a node called `responder`.
pub fn response(secret: &[u8], nonce: &[u8; 32], responder: &str) -> [u8; 32] {
    // new_from_slice only fails for fixed-size-key MACs; HMAC accepts any key length.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(b"ha-blockrep-auth");
    mac.update(nonce);
    mac.update(responder.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Check the peer's response in constant time.
pub fn verify(secret: &[u8], nonce: &[u8; 32], responder: &str, got: &[u8; 32]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(b"ha-blockrep-auth");
    mac.update(nonce);
    mac.update(responder.as_bytes());
    mac.verify_slice(got).is_ok()
}

/// A fresh random nonce.
pub fn nonce() -> [u8; 32] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_response() {
        let n = nonce();
        let r = response(b"s3cret", &n, "alice");
        assert!(verify(b"s3cret", &n, "alice", &r));
        assert!(!verify(b"wrong", &n, "alice", &r));
        assert!(!verify(b"s3cret", &n, "bob", &r));
        assert!(!verify(b"s3cret", &nonce(), "alice", &r));
    }
}
