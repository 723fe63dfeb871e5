//! The live dashboard on the admin listener: `GET /` serves one page (its script and
//! stylesheet are embedded in the binary, nothing comes from elsewhere, so it works
//! offline), and `GET /events` streams the sampler's figures ([`super::sampler`]) as
//! server-sent events.
//!
//! With a token configured, the page asks for it once in a small form (`POST /login`) and
//! keeps a session cookie derived from it ([`super::auth`]): `HttpOnly`, so no script can
//! read it, and `SameSite=Strict`, so no other site's page sends it; `Secure` too with
//! `admin.cookie_secure`, for a dashboard reached through an HTTPS proxy (the listener
//! itself speaks plain HTTP, over which a browser keeps no `Secure` cookie, so it is not
//! the default). The cookie opens the
//! dashboard's read-only routes only; the JSON API and `/metrics` still want the bearer
//! token (which the dashboard routes accept too).
//!
//! Event streams live long, so they are capped apart from the listener's connections
//! ([`MAX_EVENT_STREAMS`] of [`super::MAX_CONNECTIONS`]), and each ends after
//! [`EVENT_STREAM_LIFETIME`], before the connection's own lifetime cuts it; the browser's
//! `EventSource` reconnects by itself and first receives the history again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::auth::{COOKIE_LIFETIME_SECS, COOKIE_NAME};
use super::{AdminState, BODY_TIMEOUT, CONNECTION_LIFETIME, MAX_BODY_BYTES};

/// The admin listener's response body: a whole one, or an event stream.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// Event streams open at once (each holds one of the listener's connections).
pub const MAX_EVENT_STREAMS: usize = 4;
/// How long one event stream lasts before the browser is made to reconnect.
pub const EVENT_STREAM_LIFETIME: Duration = Duration::from_secs(50);
/// What the browser waits before reconnecting an ended stream.
const RECONNECT_MS: u64 = 1000;

const _: () = assert!(EVENT_STREAM_LIFETIME.as_secs() < CONNECTION_LIFETIME.as_secs());

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const LOGIN_HTML: &str = include_str!("dashboard/login.html");

/// Everything the page needs comes from here; nothing may be framed elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's (the rest is the JSON API's).
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/" | "/login"
            | "/logout"
            | "/events"
            | "/dashboard/scaling-events"
            | "/favicon.ico"
            | "/dashboard/app.js"
            | "/dashboard/style.css"
    )
}

pub async fn handle(
    state: &AdminState,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<AdminBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let readable = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        // The assets hold nothing secret: the login form needs its stylesheet.
        "/dashboard/app.js" if readable => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/dashboard/style.css" if readable => asset(STYLE_CSS, "text/css; charset=utf-8"),
        "/favicon.ico" if readable => {
            let mut response = whole(StatusCode::NO_CONTENT, "", None);
            cache(&mut response, "max-age=86400");
            response
        }
        "/" if readable => {
            if allowed(state, &request) {
                let page = INDEX_HTML.replace(
                    "<!--logout-->",
                    if state.verifier.is_some() {
                        r#"<form method="post" action="/logout"><button type="submit">Log out</button></form>"#
                    } else {
                        ""
                    },
                );
                whole(StatusCode::OK, page, Some("text/html; charset=utf-8"))
            } else {
                login_form(StatusCode::OK, "")
            }
        }
        // GET only: a HEAD would hold a stream slot for an answer without a body.
        "/events" if method == Method::GET => {
            if allowed(state, &request) {
                events(state)
            } else {
                tracing::info!(%peer, "dashboard events refused: no session");
                whole(
                    StatusCode::UNAUTHORIZED,
                    "log in first\n",
                    Some("text/plain"),
                )
            }
        }
        // The scaling events read-only, for the page's script (which has the cookie, not
        // the token).
        "/dashboard/scaling-events" if readable => {
            if allowed(state, &request) {
                let after = super::scaling::after_of(request.uri().query());
                whole(
                    StatusCode::OK,
                    state.scaling.list(after).to_string(),
                    Some("application/json"),
                )
            } else {
                whole(
                    StatusCode::UNAUTHORIZED,
                    "log in first\n",
                    Some("text/plain"),
                )
            }
        }
        "/login" if method == Method::POST => login(state, peer, request).await,
        "/logout" if method == Method::POST => {
            let mut response = see_other();
            let expired = format!("{COOKIE_NAME}=; Max-Age=0{}", cookie_attributes(state));
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&expired).expect("fixed text"),
            );
            response
        }
        "/login" | "/logout" => not_allowed("POST"),
        _ => not_allowed("GET"),
    }
}

/// No token configured (loopback only), the bearer token, or a valid session cookie.
fn allowed(state: &AdminState, request: &Request<Incoming>) -> bool {
    let Some(verifier) = &state.verifier else {
        return true;
    };
    let headers = request.headers();
    verifier.allows(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        || verifier.allows_cookie(
            headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
            unix_seconds(),
        )
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn login(
    state: &AdminState,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<AdminBody> {
    let Some(verifier) = &state.verifier else {
        // Nothing to log in to.
        return see_other();
    };
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return login_form(StatusCode::BAD_REQUEST, "The form could not be read."),
        Err(_) => {
            return login_form(
                StatusCode::REQUEST_TIMEOUT,
                "The form took too long to arrive.",
            );
        }
    };
    let presented = form_field(&bytes, b"token").unwrap_or_default();
    if !verifier.is_token(&presented) {
        tracing::warn!(%peer, "dashboard login refused: wrong token");
        return login_form(StatusCode::UNAUTHORIZED, "Wrong token.");
    }
    tracing::info!(%peer, "dashboard login");
    let expires = unix_seconds() + COOKIE_LIFETIME_SECS;
    let cookie = format!(
        "{COOKIE_NAME}={}; Max-Age={COOKIE_LIFETIME_SECS}{}",
        verifier.session_cookie(expires),
        cookie_attributes(state)
    );
    let mut response = see_other();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("digits, hex and fixed text"),
    );
    response
}

/// The session cookie's attributes after its value and `Max-Age`, the same on the login's
/// cookie and the logout's (a browser replaces a cookie only by one of the same name, path
/// and security). `Secure` follows `admin.cookie_secure` in force, which a reload changes.
fn cookie_attributes(state: &AdminState) -> &'static str {
    if state.config.borrow().admin.cookie_secure {
        "; HttpOnly; SameSite=Strict; Path=/; Secure"
    } else {
        "; HttpOnly; SameSite=Strict; Path=/"
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let at = pair.iter().position(|&b| b == b'=')?;
        (&pair[..at] == name).then(|| percent_decode(&pair[at + 1..]))
    })
}

fn percent_decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < text.len() => match (hex(text[i + 1]), hex(text[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn login_form(status: StatusCode, error: &'static str) -> Response<AdminBody> {
    let message = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert">{error}</p>"#)
    };
    let page = LOGIN_HTML.replace("<!--error-->", &message);
    whole(status, page, Some("text/html; charset=utf-8"))
}

fn see_other() -> Response<AdminBody> {
    let mut response = whole(StatusCode::SEE_OTHER, "", None);
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    response
}

fn not_allowed(allowed: &'static str) -> Response<AdminBody> {
    let mut response = whole(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed\n",
        Some("text/plain"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response<AdminBody> {
    whole(StatusCode::OK, text, Some(content_type))
}

fn cache(response: &mut Response<AdminBody>, policy: &'static str) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
}

fn whole(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: Option<&'static str>,
) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The event stream: the history first, then each tick, until the stream's lifetime ends,
/// the viewer leaves, or the sampler stops.
fn events(state: &AdminState) -> Response<AdminBody> {
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        let mut response = whole(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many dashboards open (at most {MAX_EVENT_STREAMS})\n"),
            Some("text/plain"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let (mut ticks, history) = state.feed.subscribe();
    let first = Bytes::from(format!("retry: {RECONNECT_MS}\n\n"));
    let (sender, receiver) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let _permit: OwnedSemaphorePermit = permit;
        let end = tokio::time::sleep(EVENT_STREAM_LIFETIME);
        tokio::pin!(end);
        loop {
            tokio::select! {
                () = &mut end => break,
                () = sender.closed() => break,
                changed = ticks.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let frame = ticks.borrow_and_update().clone();
                    if let Some(frame) = frame {
                        tokio::select! {
                            () = &mut end => break,
                            sent = sender.send(frame) => if sent.is_err() { break },
                        }
                    }
                }
            }
        }
    });
    let body = EventBody {
        pending: [Some(first), Some(history)],
        receiver,
    };
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A response body fed by the stream's task, one event per frame.
struct EventBody {
    pending: [Option<Bytes>; 2],
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(first) = this.pending.iter_mut().find_map(Option::take) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        this.receiver
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_field_is_found_and_decoded() {
        assert_eq!(
            form_field(b"token=abc%2Bd+e", b"token"),
            Some(b"abc+d e".to_vec())
        );
        assert_eq!(
            form_field(b"x=1&token=%41%4a%", b"token"),
            Some(b"AJ%".to_vec())
        );
        assert_eq!(form_field(b"tokens=1", b"token"), None);
        assert_eq!(form_field(b"token=%zz", b"token"), Some(b"%zz".to_vec()));
    }

    #[test]
    fn dashboard_paths_are_its_own() {
        assert!(serves("/") && serves("/events") && serves("/login"));
        assert!(!serves("/api/backends") && !serves("/metrics"));
    }
}
