//! The admin API's bearer token: held as a secret, never printed, and checked in constant
//! time, so neither the logs nor response timing tell anything about it.
//!
//! The dashboard's browser session is a cookie derived from the token, so the browser never
//! stores the token itself: `<expiry>.<HMAC-SHA256(key, expiry)>`, the key itself a digest
//! of the token. It expires on the server's side too (the MAC covers the expiry), and a new
//! token invalidates every cookie made with the old one.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

/// The dashboard's session cookie name.
pub const COOKIE_NAME: &str = "hitscale_admin";
/// How long a dashboard session cookie is honoured after the login.
pub const COOKIE_LIFETIME_SECS: u64 = 12 * 60 * 60;
/// Domain separation: the cookie key is no other digest of the token.
const COOKIE_KEY_CONTEXT: &[u8] = b"hitscale admin dashboard cookie v1\0";

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
    /// The key of the dashboard cookies' MAC, derived from the token.
    cookie_key: [u8; 32],
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
            cookie_key: Sha256::new()
                .chain_update(COOKIE_KEY_CONTEXT)
                .chain_update(token.expose())
                .finalize()
                .into(),
        }
    }

    /// Whether `presented` (a login form's field) is the token, in constant time.
    pub fn is_token(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        constant_time_eq(&presented, &self.digest)
    }

    /// The cookie value of a session that ends at `expires` (seconds since the Unix epoch).
    pub fn session_cookie(&self, expires: u64) -> String {
        let tag = self.tag(expires);
        let mut value = format!("{expires}.");
        for byte in tag {
            value.push_str(&format!("{byte:02x}"));
        }
        value
    }

    fn tag(&self, expires: u64) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cookie_key)
            .expect("HMAC takes a key of any length");
        mac.update(expires.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether one of the `Cookie` header values carries an unexpired session cookie made
    /// with this token, `now` being seconds since the Unix epoch.
    pub fn allows_cookie<'a>(&self, cookies: impl Iterator<Item = &'a [u8]>, now: u64) -> bool {
        let mut allowed = false;
        for header in cookies {
            for pair in header.split(|&b| b == b';') {
                let Some((name, value)) = split_once(pair.trim_ascii(), b'=') else {
                    continue;
                };
                if name != COOKIE_NAME.as_bytes() {
                    continue;
                }
                allowed |= self.session_valid(value, now);
            }
        }
        allowed
    }

    fn session_valid(&self, value: &[u8], now: u64) -> bool {
        let Some((expires, tag)) = split_once(value, b'.') else {
            return false;
        };
        let Some(expires) = std::str::from_utf8(expires)
            .ok()
            .filter(|e| e.len() <= 20 && e.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|e| e.parse::<u64>().ok())
        else {
            return false;
        };
        let Some(presented) = decode_hex_32(tag) else {
            return false;
        };
        // The expiry is not secret; the MAC is compared in constant time before it matters.
        let genuine = constant_time_eq(&presented, &self.tag(expires));
        genuine && expires > now && expires <= now.saturating_add(COOKIE_LIFETIME_SECS)
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

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// 64 hex digits as 32 bytes.
fn decode_hex_32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
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

    #[test]
    fn a_session_cookie_passes_until_it_expires_and_only_for_its_token() {
        let verifier = Verifier::new(&AdminToken::from_text("0123456789abcdef-secret"));
        let other = Verifier::new(&AdminToken::from_text("0123456789abcdef-secreT"));
        let now = 1_800_000_000;
        let value = verifier.session_cookie(now + 60);
        assert!(!value.contains("secret"), "{value}");
        let header = format!("theme=dark; {COOKIE_NAME}={value}; other=1");
        let allows =
            |v: &Verifier, header: &str, now| v.allows_cookie([header.as_bytes()].into_iter(), now);
        assert!(allows(&verifier, &header, now));
        assert!(!allows(&verifier, &header, now + 60), "expired");
        assert!(!allows(&other, &header, now), "made with another token");
        // A forged expiry, a cut or altered MAC, another cookie name: all refused.
        let (_, tag) = value.split_once('.').unwrap();
        assert!(!allows(
            &verifier,
            &format!("{COOKIE_NAME}={}.{tag}", now + 120),
            now
        ));
        assert!(!allows(
            &verifier,
            &format!("{COOKIE_NAME}={}", &value[..value.len() - 2]),
            now
        ));
        let flipped = format!(
            "{}{}",
            &value[..value.len() - 1],
            if value.ends_with('0') { '1' } else { '0' }
        );
        assert!(!allows(&verifier, &format!("{COOKIE_NAME}={flipped}"), now));
        assert!(!allows(&verifier, &format!("x{COOKIE_NAME}={value}"), now));
        // An expiry beyond what a login hands out was not made by this server.
        let far = verifier.session_cookie(now + COOKIE_LIFETIME_SECS + 10);
        assert!(!allows(&verifier, &format!("{COOKIE_NAME}={far}"), now));
        assert!(verifier.is_token(b"0123456789abcdef-secret"));
        assert!(!verifier.is_token(b"0123456789abcdef-secre"));
    }
}
