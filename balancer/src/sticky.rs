//! Cookie sticky sessions (insert mode): the balancer sets a cookie naming the backend that
//! served the client, and routes later requests with that cookie to the same backend while
//! it stays available.
//!
//! The value is an HMAC-SHA256 of the backend address under a secret key, truncated to
//! 128 bits: without the key it can be neither computed nor reversed, so a client can
//! neither learn backend addresses from it nor aim at a backend of its choice. Balancers
//! that share the key (`sticky.key`) agree on values and keep them across restarts; with
//! no key configured, each process draws its own at start-up.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use http::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use crate::config::StickyConfig;

/// The shortest key accepted: 128 bits, the strength of the truncated MAC.
pub const MIN_KEY_BYTES: usize = 16;
/// Bytes of the MAC kept in the cookie (128 bits).
const ID_BYTES: usize = 16;

/// The secret that turns backend addresses into cookie values. Never printed.
#[derive(Clone)]
pub struct StickyKey(SecretSlice<u8>);

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey([REDACTED])")
    }
}

impl StickyKey {
    /// A configured key: the bytes of its text. Its length is checked by
    /// `Config::validate`, which knows where it came from.
    pub fn from_text(text: String) -> Self {
        Self(SecretSlice::from(text.into_bytes()))
    }

    /// A fresh 256-bit key from the operating system's random source.
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self(SecretSlice::from(bytes)))
    }

    /// Whether `other` is the same key (a reload may not change it).
    pub fn same_as(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }

    /// Its length in bytes (the only thing about it that may be told).
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone)]
pub struct Sticky {
    cookie: String,
    max_age: Option<u64>,
    forward_cookie: bool,
    /// The MAC keyed once; each id starts from a copy.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .field("max_age", &self.max_age)
            .field("forward_cookie", &self.forward_cookie)
            .finish_non_exhaustive()
    }
}

impl Sticky {
    /// The cookie settings of `config` with `key` (the configured one, or one drawn at
    /// start-up when none is: see `Balancer::build`).
    pub fn new(config: &StickyConfig, key: &StickyKey) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(key.0.expose_secret())
            .expect("HMAC takes keys of any length");
        Self {
            cookie: config.cookie.clone(),
            max_age: config.max_age.map(|d| d.as_secs()),
            forward_cookie: config.forward_cookie,
            mac,
        }
    }

    /// The opaque cookie value for a backend: 128 bits of its address's MAC, in hex.
    pub fn id_for(&self, addr: SocketAddr) -> String {
        let mut mac = self.mac.clone();
        // A domain label, so the same key could serve another purpose without collisions.
        mac.update(b"hitscale sticky backend\0");
        mac.update(addr.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut id = String::with_capacity(ID_BYTES * 2);
        for byte in &digest[..ID_BYTES] {
            id.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            id.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        id
    }

    /// Our cookie's value in the request, if present.
    pub fn requested(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value.trim_matches('"').to_owned())
    }

    /// Removes our cookie from the request unless configured to forward it, keeping the
    /// application's own cookies intact.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if self.forward_cookie || !headers.contains_key(header::COOKIE) {
            return;
        }
        let kept: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| {
                !pair.is_empty()
                    && pair.split_once('=').map(|(n, _)| n) != Some(self.cookie.as_str())
            })
            .map(str::to_owned)
            .collect();
        headers.remove(header::COOKIE);
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.insert(header::COOKIE, v);
        }
    }

    pub fn set_cookie(&self, id: &str) -> HeaderValue {
        let mut cookie = format!("{}={id}; Path=/; HttpOnly; SameSite=Lax", self.cookie);
        if let Some(age) = self.max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        HeaderValue::from_str(&cookie).expect("cookie name is validated, value is hex")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn key(text: &str) -> StickyKey {
        StickyKey::from_text(text.to_owned())
    }

    #[test]
    fn ids_depend_on_the_key_and_the_address_only() {
        let config = Config::default().sticky;
        let addr: SocketAddr = "127.0.0.2:8000".parse().unwrap();
        let k = key("0123456789abcdef0123");
        let a = Sticky::new(&config, &k);
        assert_eq!(
            a.id_for(addr),
            Sticky::new(&config, &k.clone()).id_for(addr)
        );
        assert_eq!(a.id_for(addr).len(), 32, "128 bits in hex");
        assert_ne!(a.id_for(addr), a.id_for("127.0.0.2:8001".parse().unwrap()));
        let other = Sticky::new(&config, &key("0123456789abcdef0124"));
        assert_ne!(a.id_for(addr), other.id_for(addr));
        let r1 = Sticky::new(&config, &StickyKey::random().unwrap());
        let r2 = Sticky::new(&config, &StickyKey::random().unwrap());
        assert_ne!(r1.id_for(addr), r2.id_for(addr));
    }

    #[test]
    fn keys_are_never_printed() {
        let k = key("a-long-enough-secret-key");
        let sticky = Sticky::new(&Config::default().sticky, &k);
        for printed in [format!("{k:?}"), format!("{sticky:?}")] {
            assert!(!printed.contains("a-long-enough"), "{printed}");
        }
    }

    #[test]
    fn the_cookie_is_read_and_stripped_leaving_others() {
        let s = Sticky::new(&Config::default().sticky, &StickyKey::random().unwrap());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hitscale_backend=abc; b=2"),
        );
        assert_eq!(s.requested(&h).as_deref(), Some("abc"));
        s.strip(&mut h);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let c = s.set_cookie("abc");
        assert_eq!(c, "hitscale_backend=abc; Path=/; HttpOnly; SameSite=Lax");
    }
}
