//! Header rules at the proxy boundary: hop-by-hop headers (RFC 9110 7.6.1) stay on their
//! hop, the X-Forwarded-* / X-Real-IP headers tell the backend who the client is, and
//! X-Request-Id ties the balancer's log lines to the app's. Incoming forwarding headers and
//! request ids are believed only from configured trusted proxies: from anyone else every
//! `X-Forwarded-*`, `Forwarded` and `X-Real-IP` is dropped, whatever its suffix, since an
//! app may trust any of them (`X-Forwarded-Port`, `-Prefix`, ...). The client's address
//! found there ([`client_ip`]) is also what ip-hash hashes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Cidr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that only concern one connection and are never forwarded.
fn fixed_hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the sender named in `Connection`. When
/// `keep_upgrade` is set (an upgrade handshake), `Upgrade` and `Connection: upgrade` are
/// kept so the next hop can accept it.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry few of them (a backend's answer typically `Connection:
    // keep-alive` alone): one pass over the few names present finds which are there, so
    // only those pay for a hashed removal. `Connection` is in the list, so headers it names
    // are only looked for when it is there.
    let hop_by_hop = fixed_hop_by_hop();
    let mut present = [false; 8];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Names that are removed below anyway (`keep-alive`, `upgrade`) and the `close` option
    // need no lookup of their own; comparing the text first spares building a header name
    // (an allocation for non-standard names) for the usual `keep-alive` and `close`.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || hop_by_hop
                    .iter()
                    .any(|h| token.eq_ignore_ascii_case(h.as_str()))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named {
        // Never let a client strip what the backend needs to frame or route the request.
        if name != header::HOST && name != header::CONTENT_LENGTH {
            headers.remove(&name);
        }
    }
    for (name, present) in hop_by_hop.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Turns an HTTP/2 request's fields into what an HTTP/1.1 backend expects: `Host` from
/// `:authority` (h2 clients send the one, rarely the other; `proxy::guard` checked that
/// both agree when both came), and the crumbs of `Cookie` that HTTP/2 may send as separate
/// fields joined into one (RFC 9113 8.2.3; HTTP/1.1 allows a single `Cookie` line).
pub fn from_http2(headers: &mut HeaderMap, authority: Option<&http::uri::Authority>) {
    if !headers.contains_key(header::HOST)
        && let Some(authority) = authority
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_some() && cookies.next().is_some() {
        let mut joined = Vec::new();
        for crumb in headers.get_all(header::COOKIE) {
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(crumb.as_bytes());
        }
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// How the client reached the balancer: the X-Forwarded-Proto the backend is told when the
/// peer is not a trusted proxy. The server puts it in the request's extensions for TLS
/// connections; a request without one came over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// Sets X-Forwarded-For/Proto/Host and X-Real-IP for a request from `peer` over plain HTTP.
pub fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, trusted: &[Cidr]) -> IpAddr {
    set_forwarded_as(headers, peer, trusted, Scheme::Http)
}

/// Sets X-Forwarded-For/Proto/Host and X-Real-IP for a request from `peer` that arrived
/// over `scheme`, and returns the client's address (see [`client_ip`]), which X-Real-IP
/// names and ip-hash hashes.
///
/// From a trusted proxy the existing chain is extended; from anyone else incoming values
/// are dropped, since a client could write anything there.
pub fn set_forwarded_as(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    trusted: &[Cidr],
    scheme: Scheme,
) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    let peer_trusted = trusted.iter().any(|c| c.contains(peer_ip));
    let host = headers.get(header::HOST).cloned();
    if !peer_trusted {
        // The common case, kept cheap: the peer is the client. Clients rarely send these
        // headers, so look for them in one pass before removing any.
        if headers.keys().any(is_forwarding) {
            let names: Vec<HeaderName> = headers
                .keys()
                .filter(|n| is_forwarding(n))
                .cloned()
                .collect();
            for name in &names {
                headers.remove(name);
            }
        }
        let client = ip_value(peer_ip);
        headers.insert(&X_FORWARDED_FOR, client.clone());
        headers.insert(&X_REAL_IP, client);
        headers.insert(&X_FORWARDED_PROTO, scheme.header_value());
        if let Some(host) = host {
            headers.insert(&X_FORWARDED_HOST, host);
        }
        return peer_ip;
    }

    let client = client_ip(headers, peer_ip, trusted);
    // Lines that are not text are dropped from the chain (and make `client_ip` stop).
    let mut chain: Vec<&str> = forwarded_for(headers).flatten().collect();
    let peer_text = peer_ip.to_string();
    chain.push(&peer_text);
    let chain = HeaderValue::from_str(&chain.join(", "));

    let proto = headers
        .get(&X_FORWARDED_PROTO)
        .cloned()
        .unwrap_or_else(|| scheme.header_value());
    let forwarded_host = headers.get(&X_FORWARDED_HOST).cloned().or(host);

    headers.remove(&X_FORWARDED_FOR);
    headers.remove(&X_REAL_IP);
    headers.remove(&X_FORWARDED_PROTO);
    headers.remove(&X_FORWARDED_HOST);
    headers.remove(header::FORWARDED);
    if let Ok(v) = chain {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_REAL_IP, ip_value(client));
    headers.insert(&X_FORWARDED_PROTO, proto);
    if let Some(v) = forwarded_host {
        headers.insert(&X_FORWARDED_HOST, v);
    }
    client
}

/// The client's address as nginx's realip module finds it with `set_real_ip_from` for each
/// trusted proxy and `real_ip_recursive on`: a peer that is not a trusted proxy is the
/// client, whatever it wrote in `X-Forwarded-For`. From a trusted proxy, the entries are
/// walked from the right (the nearest hop first), skipping trusted proxies: the first
/// address that is not one is the client; when all are, the left-most is.
///
/// It fails closed: an entry that is not an address (`IP` or `IP:port`) ends the walk at
/// the peer, so no untrusted sender ever picks the address the backend is told or ip-hash
/// hashes (nginx would keep the last trusted hop before it; the peer is as safe and says
/// less). The walk reads what the request head holds, which `limits.max_header_bytes` and
/// `limits.max_headers` bound.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for(headers).rev() {
        let Some(hop) = entry.and_then(parse_hop) else {
            return peer;
        };
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// The entries of every `X-Forwarded-For` line in order (the farthest hop first), empty
/// ones skipped; `None` for a line that is not text.
fn forwarded_for(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = Option<&str>> {
    headers.get_all(&X_FORWARDED_FOR).iter().flat_map(|value| {
        let (text, not_text) = match value.to_str() {
            Ok(text) => (text, None),
            Err(_) => ("", Some(None)),
        };
        not_text.into_iter().chain(
            text.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(Some),
        )
    })
}

/// One `X-Forwarded-For` entry's address: `IP`, or `IP:port` / `[IPv6]:port` as some
/// proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()?;
    Some(canonical(ip))
}

/// Whether a client-sent header claims something about the path the request took: any
/// `x-forwarded-*`, `forwarded` or `x-real-ip`. Names are lower case in a `HeaderMap`.
fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    match name.as_bytes().first() {
        Some(b'x') => name.starts_with("x-forwarded-") || name == "x-real-ip",
        Some(b'f') => name == "forwarded",
        _ => false,
    }
}

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(peer: SocketAddr, trusted: &[Cidr]) -> bool {
    !trusted.is_empty() && trusted.iter().any(|c| c.contains(canonical(peer.ip())))
}

/// Makes request ids: a random per-process prefix and a counter, so ids are unique across
/// balancer instances and restarts without a random draw per request.
#[derive(Debug)]
pub struct RequestIds {
    /// The prefix's 16 hex digits, written once.
    prefix: [u8; 16],
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        let prefix = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            // Without the OS's random source, time and process id still differ per process.
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ (u64::from(std::process::id()) << 32)
            }
        };
        Self {
            prefix: hex16(prefix),
            next: AtomicU64::new(0),
        }
    }

    /// A new id: 32 lower-case hex digits.
    pub fn next(&self) -> [u8; 32] {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 32];
        text[..16].copy_from_slice(&self.prefix);
        text[16..].copy_from_slice(&hex16(count));
        text
    }

    /// Decides the request's X-Request-Id and returns it: a trusted proxy's own is kept if
    /// it is short and printable; anything else is removed, and the new id returned is
    /// written by the backend client as it encodes the head (`RequestId::header`), which
    /// spares building a header value and inserting it into the map on every request.
    pub fn assign(&self, headers: &mut HeaderMap, trusted: bool) -> RequestId {
        if trusted
            && let Some(id) = headers.get(&X_REQUEST_ID)
            && (1..=128).contains(&id.len())
            && id.as_bytes().iter().all(u8::is_ascii_graphic)
        {
            return RequestId::Forwarded(id.clone());
        }
        // Clients rarely send one: a pass over the few names present is cheaper than the
        // hashed lookup of a removal.
        if headers.keys().any(|name| name == X_REQUEST_ID) {
            headers.remove(&X_REQUEST_ID);
        }
        RequestId::Generated(self.next())
    }
}

/// `n` as 16 lower-case hex digits.
fn hex16(n: u64) -> [u8; 16] {
    let mut text = [0u8; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    text
}

/// A request's id as its log lines name it. A generated one is kept on the stack and is
/// not in the request's headers; only a trusted proxy's own is a header value (and stays
/// in the headers).
#[derive(Debug, Clone)]
pub enum RequestId {
    Generated([u8; 32]),
    Forwarded(HeaderValue),
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Generated(text) => std::str::from_utf8(text).unwrap_or_default(),
            RequestId::Forwarded(value) => value.to_str().unwrap_or_default(),
        }
    }

    /// The X-Request-Id value the backend client must add to the request's headers: a
    /// generated id's (a forwarded one is already among them).
    pub fn header(&self) -> Option<&[u8]> {
        match self {
            RequestId::Generated(text) => Some(text),
            RequestId::Forwarded(_) => None,
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The address as a header value, without going through `fmt` for IPv4.
fn ip_value(ip: IpAddr) -> HeaderValue {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            HeaderValue::from_bytes(&text[..len]).expect("digits and dots are a valid value")
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid value"),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn addresses_are_written_as_usual() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "203.0.113.255",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_value(text.parse().unwrap()), text);
        }
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced_and_trusted_ones_extended() {
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        set_forwarded(&mut h, peer, &[]);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-proto"], "http");

        let trusted = ["203.0.113.0/24".parse().unwrap()];
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, peer, &trusted);
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 203.0.113.9");
        assert_eq!(h["x-real-ip"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn client_of(xff: &[&str], peer: &str, trusted: &[Cidr]) -> IpAddr {
        let mut h = HeaderMap::new();
        for line in xff {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        client_ip(&h, peer.parse().unwrap(), trusted)
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        // No trust configured, or an untrusted peer: the peer, whatever it claims.
        assert_eq!(
            client_of(&["198.51.100.7"], "10.0.0.1", &[]),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_of(&["198.51.100.7"], "203.0.113.9", &trusted),
            ip("203.0.113.9")
        );
        // A trusted peer without the header is the client itself.
        assert_eq!(client_of(&[], "10.0.0.1", &trusted), ip("10.0.0.1"));
        assert_eq!(
            client_of(&["198.51.100.7"], "10.0.0.1", &trusted),
            ip("198.51.100.7")
        );
        // Trusted hops are skipped from the right; what the client put left of the first
        // untrusted address (here a forged entry) is never reached.
        assert_eq!(
            client_of(
                &["6.6.6.6, 198.51.100.7, 10.0.0.3, 10.0.0.2"],
                "10.0.0.1",
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order; empty entries are skipped.
        assert_eq!(
            client_of(
                &["6.6.6.6, 198.51.100.7", " , 10.0.0.3,"],
                "10.0.0.1",
                &trusted
            ),
            ip("198.51.100.7")
        );
        // All trusted: the left-most.
        assert_eq!(
            client_of(&["10.0.0.4, 10.0.0.3"], "10.0.0.1", &trusted),
            ip("10.0.0.4")
        );
        // Ports, as some proxies write them, and IPv6 (an IPv4-mapped peer is IPv4).
        assert_eq!(
            client_of(&["198.51.100.7:4711"], "::ffff:10.0.0.1", &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_of(
                &["2001:db8::7, [2001:db8:ffff::2]:443"],
                "2001:db8:ffff::1",
                &trusted
            ),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn an_entry_that_is_not_an_address_leaves_the_peer_as_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        for xff in [
            "garbage",
            "198.51.100.7, unknown",
            "198.51.100.7, garbage, 10.0.0.2",
            "198.51.100.7, 10.0.0.2/8",
            "198.51.100.7, 999.1.1.1",
            "198.51.100.7, _hidden",
        ] {
            assert_eq!(
                client_of(&[xff], "10.0.0.1", &trusted),
                ip("10.0.0.1"),
                "{xff:?}"
            );
        }
        // Garbage left of the client is never reached.
        assert_eq!(
            client_of(&["garbage, 198.51.100.7"], "10.0.0.1", &trusted),
            ip("198.51.100.7")
        );
        // A line that is not text stops the walk too.
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7"));
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(client_ip(&h, ip("10.0.0.1"), &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn a_long_chain_of_trusted_hops_is_walked_to_its_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let hops: Vec<String> = (0..2000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let xff = format!("198.51.100.7, {}", hops.join(", "));
        assert_eq!(client_of(&[&xff], "10.0.0.1", &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn the_real_ip_header_names_the_client_the_balancer_found() {
        let trusted = cidrs(&["203.0.113.0/24"]);
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let mut h = map(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        assert_eq!(set_forwarded(&mut h, peer, &trusted), ip("203.0.113.9"));
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, garbage, 203.0.113.9");
        let mut h = map(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(set_forwarded(&mut h, peer, &trusted), ip("198.51.100.7"));
        assert_eq!(h["x-real-ip"], "198.51.100.7");
        let mut h = map(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(set_forwarded(&mut h, peer, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn every_forwarding_claim_of_an_untrusted_client_is_dropped() {
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-server", "internal"),
            ("x-forwarded-ssl", "on"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded", "kept: not a forwarded- header"),
            ("x-forwardedfor", "kept"),
            ("x-other", "kept"),
        ]);
        set_forwarded(&mut h, peer, &[]);
        for gone in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "forwarded",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        for kept in ["x-forwarded", "x-forwardedfor", "x-other"] {
            assert!(h.contains_key(kept), "{kept} was dropped");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
    }

    #[test]
    fn request_ids_are_unique_and_only_trusted_ones_are_kept() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert!(a.iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_ne!(
            RequestIds::new().next(),
            a,
            "another process has another prefix"
        );

        let mut h = map(&[("x-request-id", "from-the-client")]);
        let id = ids.assign(&mut h, false);
        assert_ne!(id.as_str(), "from-the-client");
        assert_eq!(id.as_str().len(), 32);
        assert!(
            !h.contains_key("x-request-id"),
            "the client's id is removed"
        );
        assert_eq!(id.header(), Some(id.as_str().as_bytes()));
        assert!(
            a[..16] == b[..16] && a[16..] != b[16..],
            "one prefix per process, then the counter: {a:?} {b:?}"
        );

        let mut h = map(&[("x-request-id", "from-a-trusted-proxy")]);
        let id = ids.assign(&mut h, true);
        assert_eq!(id.as_str(), "from-a-trusted-proxy");
        assert_eq!(id.header(), None, "kept in the headers, not added again");
        assert_eq!(h["x-request-id"], "from-a-trusted-proxy");
        let mut h = map(&[("x-request-id", "has spaces")]);
        assert_ne!(ids.assign(&mut h, true).as_str(), "has spaces");
        let mut h = HeaderMap::new();
        assert_eq!(ids.assign(&mut h, true).as_str().len(), 32);
    }
}
