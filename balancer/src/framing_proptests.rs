//! Property tests of the framing tap on generated and mutated request streams: it never
//! panics, follows message boundaries as httparse draws them whatever the read
//! boundaries, and never takes a body (even one that spells a request) for a message of
//! its own, so it flags exactly the request that carries both Content-Length and
//! Transfer-Encoding.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::mutations::{mutate, mutation};
use tokio::io::{AsyncRead, ReadBuf};

use crate::framing::{Findings, FramingTap};
use crate::guards::ClientGuards;
use crate::upstream::chunked::parse_chunk_size;

const MAX_HEAD: usize = 8192;
const GUARDS: ClientGuards = ClientGuards {
    header: Duration::from_secs(60),
    keep_alive_idle: Duration::from_secs(60),
    body: Duration::from_secs(60),
    write: Duration::from_secs(60),
    max_header_bytes: MAX_HEAD,
    max_headers: 128,
};
/// Indices of requests checked for a flag.
const LOOKED_AT: u64 = 24;

/// A reader that hands out `stream` in pieces of the given sizes (cycled).
struct Pieces<'a> {
    stream: &'a [u8],
    sizes: &'a [usize],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.turn % self.sizes.len()]
            .max(1)
            .min(buf.remaining())
            .min(self.stream.len());
        self.turn += 1;
        let (piece, rest) = self.stream.split_at(size);
        buf.put_slice(piece);
        self.stream = rest;
        Poll::Ready(Ok(()))
    }
}

/// Reads `stream` through a tap in pieces; returns the index it flagged, if any.
fn flagged(stream: &[u8], sizes: &[usize]) -> Option<u64> {
    let findings = Findings::new();
    let reader = Pieces {
        stream,
        sizes,
        turn: 0,
    };
    let mut tap = FramingTap::new(reader, Arc::clone(&findings), GUARDS);
    let mut cx = Context::from_waker(Waker::noop());
    let mut space = [0u8; 4096];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut tap).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => {}
            other => panic!("an in-memory read ended with {other:?}"),
        }
    }
    (0..LOOKED_AT).find(|&i| findings.is_conflicting(i))
}

/// The reference: the same rules applied to the whole stream at once, with httparse
/// drawing heads and chunk sizes. The index of the first request with both headers.
fn reference(stream: &[u8]) -> Option<u64> {
    let mut pos = 0;
    let mut index = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        let length = match request.parse(&stream[pos..]) {
            Ok(httparse::Status::Complete(length)) => length,
            _ => return None,
        };
        // Content-Length as hyper reads it: every element of every such header, 1*DIGIT,
        // all equal; anything else is refused, and the tap follows nothing after it.
        let mut content_length = None;
        let mut lengths_agree = true;
        for header in request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        {
            for part in header.value.split(|&b| b == b',') {
                let digits = part.trim_ascii();
                let value = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                    .flatten();
                match (value, content_length) {
                    (Some(v), Some(previous)) if v != previous => lengths_agree = false,
                    (Some(v), _) => content_length = Some(v),
                    (None, _) => lengths_agree = false,
                }
            }
        }
        let transfer_encoding = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
        let chunked = transfer_encoding.is_some();
        if chunked && (content_length.is_some() || !lengths_agree) {
            return Some(index);
        }
        // A body in another coding than chunked (last): refused, nothing followed after it.
        if let Some(te) = transfer_encoding
            && !te
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        {
            return None;
        }
        let upgrade = request.method == Some("CONNECT")
            || request
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        if upgrade || !lengths_agree {
            return None;
        }
        index += 1;
        pos += length;
        if chunked {
            // Lines end at LF; a size line must be exactly one httparse size line.
            let line = |pos: usize| -> Option<usize> {
                stream[pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|n| pos + n + 1)
            };
            loop {
                let end = line(pos)?;
                let size = match parse_chunk_size(&stream[pos..end]) {
                    Ok(httparse::Status::Complete((n, size))) if n == end - pos => size,
                    _ => return None,
                };
                pos = end;
                if size == 0 {
                    loop {
                        let end = line(pos)?;
                        let empty = matches!(&stream[pos..end], b"\r\n" | b"\n");
                        pos = end;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                pos = pos.checked_add(usize::try_from(size).ok()?)?;
                if pos > stream.len() {
                    return None;
                }
                pos = line(pos)?;
            }
        } else if let Some(n) = content_length {
            pos = pos.checked_add(usize::try_from(n).ok()?)?;
            if pos > stream.len() {
                return None;
            }
        }
    }
}

/// A request that carries both headers: what the tap must flag.
const CONFLICT: &[u8] =
    b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunk data and the sizes to cut it at.
    Chunked(Vec<u8>, Vec<usize>),
}

fn body() -> impl Strategy<Value = Body> {
    // Bodies often spell a conflicting request: the tap must not read it as one.
    let data = prop_oneof![
        vec(any::<u8>(), 0..100),
        Just(CONFLICT.to_vec()),
        Just([b"xx".as_slice(), CONFLICT].concat()),
    ];
    prop_oneof![
        Just(Body::None),
        data.clone().prop_map(Body::Length),
        (data, vec(1usize..40, 1..5)).prop_map(|(d, cuts)| Body::Chunked(d, cuts)),
    ]
}

fn request(body: &Body, extra: &[(String, String)]) -> Vec<u8> {
    let method = if matches!(body, Body::None) {
        "GET"
    } else {
        "POST"
    };
    let mut out = format!("{method} /path HTTP/1.1\r\nHost: app.test\r\n").into_bytes();
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match body {
        Body::None => out.extend_from_slice(b"\r\n"),
        Body::Length(data) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes());
            out.extend_from_slice(data);
        }
        Body::Chunked(data, cuts) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &data[..];
            let mut cuts = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap_or(&usize::MAX)).min(rest.len());
                out.extend_from_slice(format!("{n:x};e=1\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    out
}

prop_compose! {
    /// A stream of requests, with a conflicting one at `Some(index)` or none; returns the
    /// bytes and the index.
    fn stream()(
        bodies in vec(body(), 1..5),
        extra in vec(("x-[a-z]{1,8}", "[!-~]{1,16}"), 0..3),
        conflict in any::<Option<prop::sample::Index>>(),
    ) -> (Vec<u8>, Option<u64>) {
        let at = conflict.map(|i| i.index(bodies.len() + 1));
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if at == Some(i) {
                out.extend_from_slice(CONFLICT);
            }
            out.extend_from_slice(&request(body, &extra));
        }
        if at == Some(bodies.len()) {
            out.extend_from_slice(CONFLICT);
        }
        (out, at.map(|i| i as u64))
    }
}

/// Text that often matters to framing, inserted by mutations.
const REQUEST_EDITS: &[&str] = &[
    "+",
    "-",
    "0x",
    " ",
    ";",
    "\r",
    "\n",
    "\r\n",
    "0",
    "f",
    "\r\n\r\n",
    "Content-Length: 5\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Content-Length: +3\r\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn exactly_the_conflicting_request_is_flagged_whatever_the_reads(
        (stream, conflict) in stream(),
        sizes in vec(1usize..64, 1..6),
    ) {
        prop_assert_eq!(reference(&stream), conflict);
        prop_assert_eq!(flagged(&stream, &sizes), conflict);
        prop_assert_eq!(flagged(&stream, &[usize::MAX]), conflict);
    }

    #[test]
    fn a_mutated_stream_is_framed_as_httparse_frames_it_whatever_the_reads(
        (stream, _) in stream(),
        mutations in vec(mutation(REQUEST_EDITS), 1..4),
        sizes in vec(1usize..64, 1..6),
    ) {
        let mut stream = stream;
        mutate(&mut stream, &mutations);
        let whole = flagged(&stream, &[usize::MAX]);
        prop_assert_eq!(flagged(&stream, &sizes), whole, "read boundaries changed the framing");
        prop_assert_eq!(reference(&stream), whole);
    }
}

/// The case the properties found: a head whose last line ends in a bare LF, read a byte at
/// a time, used to swallow the next request into its own head.
#[test]
fn a_head_ending_in_lf_crlf_ends_there_whatever_the_reads() {
    let stream = [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\n\r\n".as_slice(),
        CONFLICT,
    ]
    .concat();
    assert_eq!(reference(&stream), Some(1));
    assert_eq!(flagged(&stream, &[usize::MAX]), Some(1));
    assert_eq!(flagged(&stream, &[1]), Some(1));
}
