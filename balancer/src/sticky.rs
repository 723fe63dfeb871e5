//! Cookie sticky sessions (insert mode): the balancer sets a cookie naming the backend that
//! served the client, and routes later requests with that cookie to the same backend while
//! it stays available.
//!
//! The value is a keyed SipHash of the backend address: opaque to clients, yet the same
//! across restarts and across balancer instances that share the key and backends.

use std::hash::Hasher;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use siphasher::sip::SipHasher13;

use crate::config::StickyConfig;

#[derive(Debug, Clone)]
pub struct Sticky {
    cookie: String,
    max_age: Option<u64>,
    forward_cookie: bool,
    keys: (u64, u64),
}

/// Derives the two SipHash keys from the configured key text.
fn keys_from(text: &str) -> (u64, u64) {
    let mut a = SipHasher13::new_with_keys(0x7374_6963_6b79, 1);
    a.write(text.as_bytes());
    let mut b = SipHasher13::new_with_keys(0x7374_6963_6b79, 2);
    b.write(text.as_bytes());
    (a.finish(), b.finish())
}

impl Sticky {
    pub fn new(config: &StickyConfig) -> Self {
        Self {
            cookie: config.cookie.clone(),
            max_age: config.max_age.map(|d| d.as_secs()),
            forward_cookie: config.forward_cookie,
            keys: keys_from(&config.key),
        }
    }

    /// The opaque cookie value for a backend.
    pub fn id_for(&self, addr: SocketAddr) -> String {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        hasher.write(addr.to_string().as_bytes());
        format!("{:016x}", hasher.finish())
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

    #[test]
    fn ids_are_stable_opaque_and_keyed() {
        let config = Config::default().sticky;
        let a = Sticky::new(&config);
        let addr: SocketAddr = "10.0.0.2:8000".parse().unwrap();
        assert_eq!(a.id_for(addr), Sticky::new(&config).id_for(addr));
        assert!(!a.id_for(addr).contains("10.0.0.2"));
        let other = Sticky::new(&StickyConfig {
            key: "another".into(),
            ..config
        });
        assert_ne!(a.id_for(addr), other.id_for(addr));
    }

    #[test]
    fn the_cookie_is_read_and_stripped_leaving_others() {
        let s = Sticky::new(&Config::default().sticky);
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
