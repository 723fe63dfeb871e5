//! A minimal HTTP/1.1 client connection for the plain-HTTP closed and open models.
//!
//! A load generator sends the same request over and over and only needs the status, one
//! header (`--group-by`) and the end of the body. So the request is serialized once per URL
//! and written with one call, the response is read into one reusable buffer and parsed in
//! place with `httparse`, and the body is skipped, never copied or allocated. There is no
//! connection task and no channel between the worker and its connection, which is where a
//! general-purpose client spends most of its time per request.
//!
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; chunked when
//! the last transfer coding is `chunked`; otherwise `Content-Length`; otherwise the body
//! runs until the server closes. Interim (1xx) responses are skipped.

use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;

use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::outcome::ErrorKind;

/// Response headers accepted in one head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Bytes a response head may take; a larger one is a protocol error.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Initial read buffer; it grows only for a head that does not fit.
const READ_BUFFER: usize = 16 * 1024;
/// Bytes a chunk-size or trailer line may take.
const MAX_CHUNK_LINE: usize = 4096;

/// The request bytes for one URL, built once.
pub fn serialize_request(
    method: &Method,
    target: &str,
    host: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(64 + target.len() + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    // A Host the user gave (to reach a virtual host by address) wins over the URL's.
    let host = headers
        .get(HOST)
        .map_or(host.as_bytes(), |value| value.as_bytes());
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == HOST {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Like hyper: a length for any body, and an explicit zero where a body is expected.
    let body_expected = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if !headers.contains_key(CONTENT_LENGTH) && (!body.is_empty() || body_expected) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the worker needs from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// Bytes the head took, blank line included.
    pub length: usize,
    /// Where the `--group-by` value is, within the parsed bytes.
    pub group: Option<Range<usize>>,
}

/// Parses a response head at the start of `bytes`; `Ok(None)` when more bytes are needed.
pub fn parse_head(
    bytes: &[u8],
    group_by: &HeaderName,
    head_request: bool,
) -> Result<Option<Head>, ErrorKind> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrorKind::Protocol),
    };
    let status = response.code.ok_or(ErrorKind::Protocol)?;
    let http11 = response.version == Some(1);
    let mut keep_alive = http11;
    let mut content_length: Option<u64> = None;
    let mut chunked = None;
    let mut group = None;
    let group_name = group_by.as_str();
    for header in response.headers.iter() {
        let name = header.name;
        // Lengths first: most headers are none of these, and that settles it cheaply.
        match name.len() {
            14 if name.eq_ignore_ascii_case("content-length") => {
                let value = parse_content_length(header.value).ok_or(ErrorKind::Protocol)?;
                if content_length.is_some_and(|known| known != value) {
                    return Err(ErrorKind::Protocol);
                }
                content_length = Some(value);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                // Only the last coding says how the message ends.
                let last = tokens(header.value).last();
                chunked = Some(last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")));
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in tokens(header.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                        keep_alive = true;
                    }
                }
            }
            _ => {}
        }
        if group.is_none()
            && name.len() == group_name.len()
            && name.eq_ignore_ascii_case(group_name)
        {
            let start = header.value.as_ptr() as usize - bytes.as_ptr() as usize;
            group = Some(start..start + header.value.len());
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else {
        match (chunked, content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose || status == 101 {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        length,
        group,
    }))
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |total, digit| {
        total.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// httparse's chunk-size parser (the balancer uses the same one), which refuses signs,
/// `0x` and over-long sizes, with one more demand: at least one digit, since httparse reads
/// an empty size line as 0.
fn chunk_size(buf: &[u8]) -> Result<httparse::Status<(usize, u64)>, httparse::InvalidChunkSize> {
    match buf.first() {
        Some(b) if !b.is_ascii_hexdigit() => Err(httparse::InvalidChunkSize),
        _ => httparse::parse_chunk_size(buf),
    }
}

/// Skips a chunked body, fed whatever bytes have arrived.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedDecoder {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Consumes what it can of `input` and says how much; `Err` on a malformed body.
    pub fn decode(&mut self, input: &[u8]) -> Result<usize, ErrorKind> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match *self {
                ChunkedDecoder::Done => return Ok(used),
                ChunkedDecoder::Size => match chunk_size(rest) {
                    Ok(httparse::Status::Complete((length, 0))) => {
                        used += length;
                        *self = ChunkedDecoder::Trailer;
                    }
                    Ok(httparse::Status::Complete((length, size))) => {
                        used += length;
                        *self = ChunkedDecoder::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => {
                        return Ok(used);
                    }
                    _ => return Err(ErrorKind::Body),
                },
                ChunkedDecoder::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = remaining.min(rest.len() as u64);
                    used += take as usize;
                    *self = if take == remaining {
                        ChunkedDecoder::DataEnd
                    } else {
                        ChunkedDecoder::Data(remaining - take)
                    };
                }
                ChunkedDecoder::DataEnd => match rest {
                    [] | [b'\r'] => return Ok(used),
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        *self = ChunkedDecoder::Size;
                    }
                    _ => return Err(ErrorKind::Body),
                },
                ChunkedDecoder::Trailer => match rest.iter().position(|&byte| byte == b'\n') {
                    Some(end) => {
                        let line = &rest[..end];
                        if line.last() != Some(&b'\r') {
                            return Err(ErrorKind::Body);
                        }
                        used += end + 1;
                        if line.len() == 1 {
                            *self = ChunkedDecoder::Done;
                        }
                    }
                    None if rest.len() < MAX_CHUNK_LINE => return Ok(used),
                    None => return Err(ErrorKind::Body),
                },
            }
        }
    }

    pub fn is_done(self) -> bool {
        self == ChunkedDecoder::Done
    }
}

/// Why an exchange gave no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    /// No byte of a response had arrived: on a reused connection this is the server
    /// having closed it while idle, and the request may be sent again on a new one.
    pub before_response: bool,
}

/// The parts of a complete response the worker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub group: u16,
    pub keep_alive: bool,
}

fn io_failure(error: &io::Error, fallback: ErrorKind, before_response: bool) -> Failure {
    Failure {
        kind: ErrorKind::from_chain(error).unwrap_or(fallback),
        before_response,
    }
}

/// One open connection and its read buffer.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Connection {
    pub async fn open(authority: &str) -> Result<Self, ErrorKind> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|error| ErrorKind::from_chain(&error).unwrap_or(ErrorKind::Connect))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buffer: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        })
    }

    /// Reads more bytes after the unread ones; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() {
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Only a long head gets here; `MAX_HEAD_BYTES` bounds it.
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
        }
        let read = self.stream.read(&mut self.buffer[self.end..]).await?;
        self.end += read;
        Ok(read)
    }

    /// Sends `request` and reads the whole response; `group_of` names the `--group-by`
    /// value (or its absence) while the head is still in the buffer.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        group_by: &HeaderName,
        mut group_of: impl FnMut(Option<&[u8]>) -> u16,
    ) -> Result<Response, Failure> {
        self.stream
            .write_all(request)
            .await
            .map_err(|error| io_failure(&error, ErrorKind::Other, true))?;
        let mut received = false;
        let (head, group) = loop {
            let unread = &self.buffer[self.start..self.end];
            if let Some(head) =
                parse_head(unread, group_by, head_request).map_err(|kind| Failure {
                    kind,
                    before_response: false,
                })?
            {
                if (100..200).contains(&head.status) && head.status != 101 {
                    self.start += head.length;
                    continue;
                }
                let group = group_of(head.group.clone().map(|range| &unread[range]));
                self.start += head.length;
                break (head, group);
            }
            if unread.len() >= MAX_HEAD_BYTES {
                return Err(Failure {
                    kind: ErrorKind::Protocol,
                    before_response: false,
                });
            }
            match self.fill().await {
                Ok(0) => {
                    return Err(Failure {
                        kind: ErrorKind::Closed,
                        before_response: !received,
                    });
                }
                Ok(_) => received = true,
                Err(error) => return Err(io_failure(&error, ErrorKind::Other, !received)),
            }
        };
        let mut keep_alive = head.keep_alive;
        match head.framing {
            Framing::Empty => {}
            Framing::Length(mut remaining) => loop {
                let take = remaining.min((self.end - self.start) as u64);
                self.start += take as usize;
                remaining -= take;
                if remaining == 0 {
                    break;
                }
                self.fill_body().await?;
            },
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    let used =
                        decoder
                            .decode(&self.buffer[self.start..self.end])
                            .map_err(|kind| Failure {
                                kind,
                                before_response: false,
                            })?;
                    self.start += used;
                    if decoder.is_done() {
                        break;
                    }
                    self.fill_body().await?;
                }
            }
            Framing::UntilClose => {
                keep_alive = false;
                self.start = self.end;
                loop {
                    match self.fill().await {
                        Ok(0) => break,
                        Ok(_) => self.start = self.end,
                        Err(error) => return Err(io_failure(&error, ErrorKind::Body, false)),
                    }
                }
            }
        }
        Ok(Response {
            status: head.status,
            group,
            keep_alive,
        })
    }

    /// Reads more of a body that must go on.
    async fn fill_body(&mut self) -> Result<(), Failure> {
        match self.fill().await {
            Ok(0) => Err(Failure {
                kind: ErrorKind::Closed,
                before_response: false,
            }),
            Ok(_) => Ok(()),
            Err(error) => Err(io_failure(&error, ErrorKind::Body, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_by() -> HeaderName {
        HeaderName::from_static("x-instance-id")
    }

    fn head(bytes: &[u8]) -> Result<Option<Head>, ErrorKind> {
        parse_head(bytes, &group_by(), false)
    }

    #[test]
    fn content_length_head_with_group() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Instance-ID: a1\r\n\r\nok";
        let parsed = head(bytes).unwrap().unwrap();
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.framing, Framing::Length(2));
        assert!(parsed.keep_alive);
        assert_eq!(parsed.length, bytes.len() - 2);
        assert_eq!(&bytes[parsed.group.unwrap()], b"a1");
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nContent-Len").unwrap(), None);
        assert_eq!(head(b"").unwrap(), None);
    }

    #[test]
    fn malformed_heads_are_protocol_errors() {
        assert_eq!(head(b"HTTP/9 200 OK\r\n\r\n"), Err(ErrorKind::Protocol));
        assert_eq!(head(b"garbage\r\n\r\n"), Err(ErrorKind::Protocol));
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n"),
            Err(ErrorKind::Protocol)
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(ErrorKind::Protocol)
        );
    }

    #[test]
    fn framing_rules() {
        let framing = |bytes: &[u8], head_request| {
            parse_head(bytes, &group_by(), head_request)
                .unwrap()
                .unwrap()
        };
        let chunked = framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(chunked.keep_alive);
        let until_close = framing(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Empty
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                false
            )
            .framing,
            Framing::Empty
        );
        let head_response = framing(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true);
        assert_eq!(head_response.framing, Framing::Empty);
        assert!(head_response.keep_alive);
        assert!(
            !framing(
                b"HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert!(!framing(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false).keep_alive);
        assert!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
                false
            )
            .keep_alive
        );
    }

    fn decode_all(body: &[u8], step: usize) -> Result<usize, ErrorKind> {
        // Feeds the body `step` bytes at a time, as reads might deliver it.
        let mut decoder = ChunkedDecoder::default();
        let mut available = 0;
        let mut used = 0;
        while !decoder.is_done() {
            if available == body.len() {
                return Err(ErrorKind::Closed);
            }
            available = (available + step).min(body.len());
            used += decoder.decode(&body[used..available])?;
        }
        Ok(used)
    }

    #[test]
    fn chunked_bodies_end_where_they_should() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(decode_all(body, step), Ok(body.len() - 4), "step {step}");
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1), Ok(5));
    }

    #[test]
    fn malformed_chunked_bodies_are_body_errors() {
        assert_eq!(decode_all(b"zz\r\n", 4), Err(ErrorKind::Body));
        for size in [
            "+5",
            "-5",
            "0x5",
            " 5",
            "",
            ";ext",
            "5 5",
            "12345678901234567",
        ] {
            let body = format!("{size}\r\nhello\r\n0\r\n\r\n");
            assert_eq!(
                decode_all(body.as_bytes(), 64),
                Err(ErrorKind::Body),
                "{size:?}"
            );
        }
        assert_eq!(decode_all(b"2\r\nokXX", 8), Err(ErrorKind::Body));
        assert_eq!(decode_all(b"0\r\nbad\n", 8), Err(ErrorKind::Body));
        let mut endless_size_line = b"1;".to_vec();
        endless_size_line.resize(MAX_CHUNK_LINE + 1, b'x');
        assert_eq!(decode_all(&endless_size_line, 64), Err(ErrorKind::Body));
        // Cut short: the caller sees the end of the stream first.
        assert_eq!(decode_all(b"5\r\nab", 8), Err(ErrorKind::Closed));
    }

    #[test]
    fn requests_are_serialized_once_with_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("x-test", "1".parse().unwrap());
        let get = serialize_request(&Method::GET, "/a?b=1", "h:8", &headers, None);
        assert_eq!(
            get,
            b"GET /a?b=1 HTTP/1.1\r\nhost: h:8\r\nx-test: 1\r\n\r\n"
        );
        let post = serialize_request(&Method::POST, "/", "h", &HeaderMap::new(), Some(b"hi"));
        assert_eq!(
            post,
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\nhi"
        );
        let empty_post = serialize_request(&Method::POST, "/", "h", &HeaderMap::new(), None);
        assert!(empty_post.ends_with(b"content-length: 0\r\n\r\n"));
        let mut virtual_host = HeaderMap::new();
        virtual_host.insert(HOST, "example.test".parse().unwrap());
        let get = serialize_request(&Method::GET, "/", "127.0.0.1:8", &virtual_host, None);
        assert_eq!(get, b"GET / HTTP/1.1\r\nhost: example.test\r\n\r\n");
    }
}
