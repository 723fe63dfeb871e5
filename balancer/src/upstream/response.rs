//! Reading a response head and deciding how its body is delimited (RFC 9112 section 6.3).

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};

use crate::guards::{BACKEND_MAX_HEAD_BYTES as MAX_HEAD_BYTES, BACKEND_MAX_HEADERS as MAX_HEADERS};

#[derive(Debug)]
pub(super) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A response the proxy must not pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("malformed response head")]
    Malformed,
    #[error("response head too large")]
    TooLarge,
    #[error("conflicting Content-Length")]
    ContentLength,
}

/// Where one header's name and value lie in the head: name start, length, value start,
/// length.
pub(super) type Span = [usize; 4];

/// Parses one complete head from the front of `buf` and removes it, or returns `None` when
/// more bytes are needed. `spans` is scratch space.
pub(super) fn parse(buf: &mut BytesMut, spans: &mut Vec<Span>) -> Result<Option<Head>, Invalid> {
    // Uninitialised slots: zeroing 128 of them would cost as much as the parse itself.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Invalid::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid::TooLarge),
        Err(_) => return Err(Invalid::Malformed),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Invalid::Malformed)?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Names and values are slices of the head's own bytes, shared rather than copied: a
    // reference count instead of an allocation per header. Their places in the buffer come
    // from the addresses httparse hands back, noted in `spans` (reused between heads).
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(response.headers.iter().map(|h| {
        [
            h.name.as_ptr() as usize - base,
            h.name.len(),
            h.value.as_ptr() as usize - base,
            h.value.len(),
        ]
    }));
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &[name, name_len, value, value_len] in spans.iter() {
        let name =
            HeaderName::from_bytes(&head[name..name + name_len]).map_err(|_| Invalid::Malformed)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| Invalid::Malformed)?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
    }))
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyLength {
    /// Exactly this many bytes (0 for bodiless answers).
    Exact(u64),
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// The body's delimitation, and whether the connection must close after it.
pub(super) fn body_length(
    head: &Head,
    request_was_head: bool,
) -> Result<(BodyLength, bool), Invalid> {
    let status = head.status;
    if request_was_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyLength::Exact(0), false));
    }
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked = head
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        // With both headers the message is suspect: decode by Transfer-Encoding, then close.
        let suspect = head.headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (BodyLength::Chunked, suspect)
        } else {
            (BodyLength::UntilClose, true)
        });
    }
    let mut length = None;
    for value in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = content_length_value(part).ok_or(Invalid::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Invalid::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (BodyLength::Exact(n), false),
        None => (BodyLength::UntilClose, true),
    })
}

/// One element of a Content-Length value: 1*DIGIT (RFC 9110 8.6), blanks around it allowed.
/// The one rule for both sides, the backend client and the client connections' framing tap;
/// `str::parse` alone would also take a sign (`+5`), which hyper refuses.
pub(crate) fn content_length_value(part: &[u8]) -> Option<u64> {
    let digits = part.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether the backend lets the connection carry another request.
pub(super) fn keeps_alive(head: &Head) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in head.headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (head.version == Version::HTTP_11 || keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Invalid> {
        parse(&mut BytesMut::from(text), &mut Vec::new())
    }

    fn length(text: &str, was_head: bool) -> Result<(BodyLength, bool), Invalid> {
        body_length(&head(text).unwrap().unwrap(), was_head)
    }

    #[test]
    fn a_complete_head_is_parsed_and_consumed_leaving_the_body() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi");
        let head = parse(&mut buf, &mut Vec::new()).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hi");
        assert!(keeps_alive(&head));
    }

    #[test]
    fn partial_heads_wait_and_garbage_or_huge_heads_are_refused() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert_eq!(head("NOT HTTP\r\n\r\n").unwrap_err(), Invalid::Malformed);
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(head(&huge).unwrap_err(), Invalid::TooLarge);
    }

    #[test]
    fn body_length_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            length(&format!("{ok}Content-Length: 5\r\n\r\n"), false).unwrap(),
            (BodyLength::Exact(5), false)
        );
        assert_eq!(
            length(&format!("{ok}Content-Length: 5\r\n\r\n"), true).unwrap(),
            (BodyLength::Exact(0), false)
        );
        assert_eq!(
            length("HTTP/1.1 204 No Content\r\n\r\n", false).unwrap(),
            (BodyLength::Exact(0), false)
        );
        assert_eq!(
            length(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .unwrap(),
            (BodyLength::Exact(0), false)
        );
        assert_eq!(
            length(
                &format!("{ok}Transfer-Encoding: gzip, chunked\r\n\r\n"),
                false
            )
            .unwrap(),
            (BodyLength::Chunked, false)
        );
        assert_eq!(
            length(
                &format!("{ok}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
                false
            )
            .unwrap(),
            (BodyLength::Chunked, true)
        );
        assert_eq!(
            length(&format!("{ok}Transfer-Encoding: gzip\r\n\r\n"), false).unwrap(),
            (BodyLength::UntilClose, true)
        );
        assert_eq!(
            length(&format!("{ok}\r\n"), false).unwrap(),
            (BodyLength::UntilClose, true)
        );
        assert_eq!(
            length(&format!("{ok}Content-Length: 5, 5\r\n\r\n"), false).unwrap(),
            (BodyLength::Exact(5), false)
        );
        assert_eq!(
            length(
                &format!("{ok}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"),
                false
            )
            .unwrap_err(),
            Invalid::ContentLength
        );
        for signed in ["+5", "-1", "", "5 5", "0x5"] {
            assert_eq!(
                length(&format!("{ok}Content-Length: {signed}\r\n\r\n"), false).unwrap_err(),
                Invalid::ContentLength,
                "{signed:?}"
            );
        }
        assert_eq!(
            length(&format!("{ok}Content-Length: -1\r\n\r\n"), false).unwrap_err(),
            Invalid::ContentLength
        );
    }

    #[test]
    fn keep_alive_depends_on_version_and_connection() {
        let close = head("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!keeps_alive(&close));
        let old = head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!keeps_alive(&old));
        let old_kept = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(keeps_alive(&old_kept));
    }
}
