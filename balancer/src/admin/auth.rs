//! The admin API's bearer token: held as a secret, never printed, and checked in constant
//! time, so neither the logs nor response timing tell anything about it.

use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

/// The shortest token accepted: 128 bits of an `openssl rand -hex 16` output.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The configured admin token. Its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct AdminToken(SecretSlice<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([REDACTED])")
    }
}

impl AdminToken {
    /// A token from its text; surrounding whitespace (a file's final newline) is dropped.
    /// Its length is checked by `Config::validate`, which knows where it came from.
    pub fn from_text(text: &str) -> Self {
        Self(SecretSlice::from(text.trim().as_bytes().to_vec()))
    }

    /// Its length in bytes (the only thing about it that may be told).
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text to send in `Authorization` (the CLI's side).
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// What a request's `Authorization` header is checked against: the digest of the token,
/// so every comparison runs over 32 bytes whatever length was presented.
#[derive(Clone)]
pub struct Verifier {
    digest: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier([REDACTED])")
    }
}

impl Verifier {
    pub fn new(token: &AdminToken) -> Self {
        Self {
            digest: Sha256::digest(token.expose()).into(),
        }
    }

    /// Whether `header` (the `Authorization` value) is `Bearer <the token>`.
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        constant_time_eq(&presented, &self.digest)
    }
}

/// Equality of two equal-length byte strings in a time that does not depend on where they
/// differ: every byte is looked at, and the differences are folded together.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let verifier = Verifier::new(&AdminToken::from_text("0123456789abcdef-secret\n"));
        assert!(verifier.allows(Some(b"Bearer 0123456789abcdef-secret")));
        assert!(!verifier.allows(Some(b"Bearer 0123456789abcdef-secreT")));
        assert!(!verifier.allows(Some(b"Bearer 0123456789abcdef")));
        assert!(!verifier.allows(Some(b"Basic 0123456789abcdef-secret")));
        assert!(!verifier.allows(Some(b"0123456789abcdef-secret")));
        assert!(!verifier.allows(None));
        assert_eq!(
            format!("{:?}", AdminToken::from_text("visible?")),
            "AdminToken([REDACTED])"
        );
    }
}
