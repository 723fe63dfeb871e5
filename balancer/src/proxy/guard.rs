//! Requests the balancer refuses before choosing a backend: it is a reverse proxy for its
//! own site, never a forward (open) proxy, and it never forwards a request whose target it
//! cannot state unambiguously.

use http::{Method, Request, Uri, Version, header};

use super::error::ProxyError;

/// Checks the request line and Host, and returns the origin-form target to forward.
pub fn check<B>(request: &Request<B>, server_names: &[String]) -> Result<Uri, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT is refused: this is a reverse proxy, not a forward proxy",
        ));
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if host.is_none() && request.version() == Version::HTTP_11 {
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
    }
    let uri = request.uri();
    if request.version() == Version::HTTP_2 {
        // HTTP/2 names the host in `:authority` (the URI's authority here), not in an
        // absolute-form target: it is the Host of HTTP/1.1, not a forward-proxy request.
        // A Host field beside it must name the same (RFC 9113 8.3.1), so the backend, which
        // is given one of them, and the balancer agree.
        if let (Some(authority), Some(host)) = (uri.authority(), host)
            && !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return Err(ProxyError::BadRequest("Host differs from :authority"));
        }
    } else if let Some(authority) = uri.authority() {
        // Absolute-form is legal, but only for this site: one naming any other host is a
        // forward-proxy request. Host must agree, so the backend sees one consistent name.
        let same_host = uri.scheme_str() == Some("http")
            && server_names
                .iter()
                .any(|name| name.eq_ignore_ascii_case(authority.host()))
            && host.is_some_and(|h| {
                h.as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
            });
        if !same_host {
            return Err(ProxyError::BadRequest(
                "absolute-form target for another host: this is not a forward proxy",
            ));
        }
    }
    let path = match uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') || pq.as_str() == "*" => pq.clone(),
        Some(_) => return Err(ProxyError::BadRequest("request target must start with '/'")),
        None => http::uri::PathAndQuery::from_static("/"),
    };
    Ok(Uri::from(path))
}
