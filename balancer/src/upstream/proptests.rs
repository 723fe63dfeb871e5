//! Property tests of the backend client's reading side (head parser, body-length rules,
//! chunked decoder) on generated and mutated responses: it never panics, takes a head
//! exactly where httparse does, ends a body exactly where the message ends whatever the
//! read boundaries, so a response never swallows the next one nor leaves part of itself
//! to be read as another.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::mutations::{mutate, mutation};

use super::chunked::{Decoded, Decoder, parse_chunk_size};
use super::response::{BodyLength, body_length, parse};

/// A second response after the generated one: it must be found intact.
const NEXT: &[u8] = b"HTTP/1.1 299 NEXT\r\ncontent-length: 0\r\n\r\n";

/// What reading one response from a stream gave: where its head and body ended, and the
/// body's bytes; or that the stream was refused or ended first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Message {
        head: usize,
        end: usize,
        body: Vec<u8>,
    },
    Refused,
    Incomplete,
}

/// Reads one response from `stream`, handed over in pieces of the sizes in `pieces`
/// (cycled), as the client would from a socket.
fn read_one(stream: &[u8], pieces: &[usize]) -> Read {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut turn = 0;
    let mut feed = |buf: &mut BytesMut| -> Option<usize> {
        if fed == stream.len() {
            return None;
        }
        let size = pieces[turn % pieces.len()].max(1);
        turn += 1;
        let end = fed.saturating_add(size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        Some(fed)
    };
    let mut spans = Vec::new();
    let mut total = 0;
    let head = loop {
        match parse(&mut buf, &mut spans) {
            Ok(Some(head)) => break head,
            Ok(None) => match feed(&mut buf) {
                Some(fed) => total = fed,
                None => return Read::Incomplete,
            },
            Err(_) => return Read::Refused,
        }
    };
    let head_end = total - buf.len();
    let mut body = Vec::new();
    match body_length(&head, false) {
        Err(_) => return Read::Refused,
        Ok((BodyLength::Exact(n), _)) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            while buf.len() < n {
                match feed(&mut buf) {
                    Some(fed) => total = fed,
                    None => return Read::Incomplete,
                }
            }
            body.extend_from_slice(&buf.split_to(n));
        }
        Ok((BodyLength::Chunked, _)) => {
            let mut decoder = Decoder::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
                    Ok(Decoded::Done) => break,
                    Ok(Decoded::NeedMore) => match feed(&mut buf) {
                        Some(fed) => total = fed,
                        None => return Read::Incomplete,
                    },
                    Err(_) => return Read::Refused,
                }
            }
        }
        Ok((BodyLength::UntilClose, _)) => {
            while let Some(fed) = feed(&mut buf) {
                total = fed;
            }
            body.extend_from_slice(&buf.split());
        }
    }
    Read::Message {
        head: head_end,
        end: total - buf.len(),
        body,
    }
}

/// Where a chunked body starting at `bytes[0]` ends, read in one piece with the plain
/// rules of RFC 9112 7.1 (sizes by httparse): the reference for the incremental decoder.
fn chunked_end(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let mut pos = 0;
    loop {
        let size = match parse_chunk_size(&bytes[pos..]) {
            Ok(httparse::Status::Complete((length, size))) => {
                pos += length;
                size
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        if size == 0 {
            loop {
                let Some(end) = bytes[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        let data_end = usize::try_from(size)
            .map_err(|_| ())?
            .checked_add(pos)
            .ok_or(())?;
        if bytes.len() < data_end + 2 {
            return Ok(None);
        }
        if &bytes[data_end..data_end + 2] != b"\r\n" {
            return Err(());
        }
        pos = data_end + 2;
    }
}

prop_compose! {
    /// A valid response (its bytes and its body), framed by Content-Length or chunked.
    fn response()(
        status in prop::sample::select(vec![200u16, 201, 206, 299, 404, 500, 503]),
        extra in vec(("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..5),
        body in vec(any::<u8>(), 0..200),
        chunked in any::<bool>(),
        cuts in vec(1usize..64, 0..8),
        upper in any::<bool>(),
        zeros in 0usize..3,
        extension in any::<bool>(),
        trailer in any::<bool>(),
    ) -> (Vec<u8>, Vec<u8>) {
        let mut out = format!("HTTP/1.1 {status} Reason\r\n").into_bytes();
        for (name, value) in &extra {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            let mut cuts = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap_or(&usize::MAX)).min(rest.len());
                let size = if upper { format!("{n:X}") } else { format!("{n:x}") };
                out.extend_from_slice("0".repeat(zeros).as_bytes());
                out.extend_from_slice(size.as_bytes());
                if extension {
                    out.extend_from_slice(b";name=value");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            if trailer {
                out.extend_from_slice(b"X-Trailer: 1\r\n");
            }
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
        }
        (out, body)
    }
}

/// Text that often matters to framing, inserted by mutations.
const RESPONSE_EDITS: &[&str] = &[
    "+",
    "-",
    "0x",
    " ",
    "\t",
    ";",
    "\r",
    "\n",
    "\r\n",
    "0",
    "f",
    "ffffffffffffffff1",
    "\r\n\r\n",
    "Content-Length: 5\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Content-Length: +3\r\n",
    "Transfer-Encoding: gzip\r\n",
];

fn httparse_head(stream: &[u8]) -> Result<httparse::Status<usize>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    httparse::Response::new(&mut headers).parse(stream)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_response_is_read_whole_and_alone(
        (message, body) in response(),
        pieces in vec(1usize..50, 1..6),
    ) {
        let stream = [&message[..], NEXT].concat();
        let read = read_one(&stream, &pieces);
        let Read::Message { head, end, body: read_body } = read else {
            panic!("refused a valid response: {read:?}");
        };
        prop_assert_eq!(Ok(httparse::Status::Complete(head)), httparse_head(&stream));
        prop_assert_eq!(end, message.len(), "the body ended elsewhere than the message");
        prop_assert_eq!(read_body, body);
        // The next response is still there, whole.
        prop_assert_eq!(&stream[end..], NEXT);
    }

    #[test]
    fn a_mutated_response_is_framed_as_httparse_frames_it_whatever_the_reads(
        (message, _) in response(),
        mutations in vec(mutation(RESPONSE_EDITS), 1..4),
        pieces in vec(1usize..50, 1..6),
    ) {
        let mut message = message;
        mutate(&mut message, &mutations);
        let stream = [&message[..], NEXT].concat();
        let whole = read_one(&stream, &[usize::MAX]);
        let split = read_one(&stream, &pieces);
        prop_assert_eq!(&whole, &split, "the read boundaries changed the framing");
        let reference = httparse_head(&stream);
        match &whole {
            Read::Message { head, end, .. } => {
                prop_assert_eq!(reference, Ok(httparse::Status::Complete(*head)));
                prop_assert!(*end <= stream.len());
                // A chunked body ends where the one-piece reference says it does.
                let mut buf = BytesMut::from(&stream[..]);
                let parsed = parse(&mut buf, &mut Vec::new()).unwrap().unwrap();
                if let Ok((BodyLength::Chunked, _)) = body_length(&parsed, false) {
                    prop_assert_eq!(chunked_end(&stream[*head..]), Ok(Some(*end - *head)));
                }
            }
            Read::Refused => {}
            Read::Incomplete => prop_assert!(reference.is_ok()),
        }
        if reference.is_err() {
            prop_assert_eq!(&whole, &Read::Refused);
        }
    }
}
