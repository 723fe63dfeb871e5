//! The plain listener when HTTPS is on: every request is answered `308 Permanent Redirect`
//! to the same host and target over HTTPS (308 keeps the method and body, unlike 301),
//! except the ACME HTTP-01 challenge path, which a certificate authority fetches over plain
//! HTTP: a token of the balancer's own pending ACME order (`tls::acme`) is answered here,
//! any other is proxied to the backends like any request (so an app's own ACME client
//! behind the balancer keeps working).
//!
//! The request passes the proxy's own checks first (`proxy::guard`: no CONNECT, one Host,
//! absolute-form only for this site's names), so the redirect never points anywhere the
//! proxy would not have served. The host in `Location` comes from `Host` and is checked
//! again: a DNS name, an IPv4 address or a bracketed IPv6 address, nothing else. A request
//! naming something else (user info, a path, spaces) is refused with 400 rather than
//! echoed into a redirect.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::proxy::body::ClientBody;
use crate::proxy::error::ProxyError;
use crate::proxy::guard;
use crate::tls::acme::Challenges;

/// Requests under this path are not redirected.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Redirects to HTTPS on `port`.
#[derive(Debug, Clone)]
pub struct Redirect {
    port: u16,
    /// `forwarding.server_names`: the names an absolute-form target may carry.
    server_names: Arc<[String]>,
    /// The balancer's own pending HTTP-01 challenges, with ACME on.
    challenges: Option<Arc<Challenges>>,
}

impl Redirect {
    pub fn new(port: u16, server_names: &[String]) -> Self {
        Self {
            port,
            server_names: server_names.into(),
            challenges: None,
        }
    }

    /// Answers the tokens of `challenges` under [`ACME_CHALLENGE_PREFIX`].
    pub fn with_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        self.challenges = Some(challenges);
        self
    }

    /// The answer for `request`, or `None` when it must be proxied (the ACME path, unless
    /// it names one of the balancer's own challenge tokens).
    pub fn answer<B>(&self, request: &Request<B>) -> Option<Response<ClientBody>> {
        if let Some(token) = request.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
            return self
                .challenges
                .as_ref()
                .and_then(|challenges| challenges.answer(token));
        }
        Some(match self.location(request) {
            Ok(location) => {
                let mut response = Response::new(ClientBody::empty());
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response.headers_mut().insert(header::LOCATION, location);
                response
            }
            Err(error) => error.into_response(),
        })
    }

    fn location<B>(&self, request: &Request<B>) -> Result<HeaderValue, ProxyError> {
        let origin = guard::check(request, &self.server_names)?;
        // One Host at most (the guard saw to it); an HTTP/1.0 absolute-form request may
        // have none, and then its target names this site.
        let authority = match request.headers().get(header::HOST) {
            Some(host) => host
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Host is not a valid host name"))?,
            None => request
                .uri()
                .authority()
                .map(|a| a.as_str())
                .ok_or(ProxyError::BadRequest("no Host to redirect to"))?,
        };
        let host =
            valid_host(authority).ok_or(ProxyError::BadRequest("Host is not a valid host name"))?;
        // `OPTIONS *` has no path to keep: the site's root stands for it.
        let target = match origin.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.as_str(),
            _ => "/",
        };
        let location = if self.port == 443 {
            format!("https://{host}{target}")
        } else {
            format!("https://{host}:{}{target}", self.port)
        };
        HeaderValue::from_str(&location)
            .map_err(|_| ProxyError::BadRequest("request target cannot be redirected"))
    }
}

/// The host part of a `Host` value (`name[:port]`), lower-cased, if it is a DNS name, an
/// IPv4 address or a bracketed IPv6 address with at most a numeric port after it.
pub fn valid_host(authority: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (&authority[..inside.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return Some(host.to_ascii_lowercase());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok))
        .then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(redirect: Redirect, target: &str, host: Option<&str>) -> Response<ClientBody> {
        let mut builder = Request::get(target);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        redirect.answer(&builder.body(()).unwrap()).unwrap()
    }

    #[test]
    fn hosts_are_names_or_addresses_and_nothing_else() {
        assert_eq!(
            valid_host("App.Example.com:8080").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(valid_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(valid_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(valid_host("localhost.").as_deref(), Some("localhost"));
        for bad in [
            "",
            "evil.com/path",
            "user@evil.com",
            "a b",
            "evil.com:80:80",
            "evil.com:",
            "evil.com:x",
            "-bad.com",
            "bad-.com",
            "a..b",
            "[::1",
            "[::1]x",
            "[evil.com]",
            "evil.com\\@good",
            "%65vil.com",
        ] {
            assert_eq!(valid_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn redirects_keep_host_and_target_on_the_https_port() {
        let answer = location(
            Redirect::new(8443, &[]),
            "/a/b?c=d&e",
            Some("app.test:8080"),
        );
        assert_eq!(answer.status(), 308);
        assert_eq!(
            answer.headers()[header::LOCATION],
            "https://app.test:8443/a/b?c=d&e"
        );
        let answer = location(Redirect::new(443, &[]), "/", Some("App.Test"));
        assert_eq!(answer.headers()[header::LOCATION], "https://app.test/");
        assert_eq!(
            location(Redirect::new(443, &[]), "/", Some("evil.com/x")).status(),
            400
        );
        assert_eq!(location(Redirect::new(443, &[]), "/", None).status(), 400);
        let acme = Request::get("/.well-known/acme-challenge/token")
            .header("host", "app.test")
            .body(())
            .unwrap();
        assert!(Redirect::new(443, &[]).answer(&acme).is_none());
        // What the proxy refuses is not redirected either.
        let connect = Request::connect("evil.test:443")
            .header("host", "evil.test:443")
            .body(())
            .unwrap();
        assert_eq!(
            Redirect::new(443, &[]).answer(&connect).unwrap().status(),
            405
        );
        let elsewhere = Request::get("http://evil.test/x")
            .header("host", "app.test")
            .body(())
            .unwrap();
        assert_eq!(
            Redirect::new(443, &[]).answer(&elsewhere).unwrap().status(),
            400
        );
    }
}
