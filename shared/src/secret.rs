//! Secret handling: comparisons that do not leak timing, and the webhook
//! secret every replica derives identically from the token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Constant-time equality. Lengths are compared in the open: the length of
/// the expected secret is not what an attacker needs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Deterministic so that every ingress replica accepts the secret another
/// replica registered, without coordination; hashed with a domain tag so the
/// secret reveals nothing about the token. Telegram allows 1-256 characters
/// from `A-Za-z0-9_-`; hex fits.
pub fn derive_webhook_secret(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tgbot webhook secret v1\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Whether a secret is acceptable to setWebhook.
pub fn is_valid_webhook_secret(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_secret_is_stable_valid_and_token_specific() {
        let a = derive_webhook_secret("123:abc");
        assert_eq!(a, derive_webhook_secret("123:abc"));
        assert_ne!(a, derive_webhook_secret("123:abd"));
        assert!(is_valid_webhook_secret(&a));
        assert!(!a.contains("abc"));
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn secret_charset() {
        assert!(is_valid_webhook_secret("a-Z_9"));
        assert!(!is_valid_webhook_secret("a b"));
        assert!(!is_valid_webhook_secret(""));
        assert!(!is_valid_webhook_secret(&"a".repeat(257)));
    }
}
