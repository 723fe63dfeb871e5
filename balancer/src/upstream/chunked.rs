//! An incremental decoder of the chunked transfer coding (RFC 9112 section 7.1). It yields
//! chunk data as slices of the read buffer, without copying; extensions and trailers are
//! read and dropped. [`parse_chunk_size`] is the one chunk-size rule of the balancer, used
//! by the client-side framing tap as well.

use bytes::{Buf, Bytes, BytesMut};

/// The longest size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size")]
    Size,
    #[error("chunk data not followed by CRLF")]
    Terminator,
    #[error("chunk line or trailers too long")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next step: read more.
    NeedMore,
    /// The last chunk and the trailers have been read.
    Done,
}

impl Decoder {
    pub(super) fn new() -> Self {
        Self { state: State::Size }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        self.settle(buf)?;
        match self.state {
            State::Done => Ok(Decoded::Done),
            State::Data(remaining) if !buf.is_empty() => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            _ => Ok(Decoded::NeedMore),
        }
    }

    /// Reads past framing (chunk terminators, size lines, trailers) up to the next chunk
    /// data or the end, as far as `buf` allows; never consumes data.
    pub(super) fn settle(&mut self, buf: &mut BytesMut) -> Result<(), ChunkError> {
        loop {
            match self.state {
                State::Done | State::Data(_) => return Ok(()),
                State::Size => {
                    let size = match parse_chunk_size(buf)? {
                        httparse::Status::Complete((length, _)) if length > MAX_LINE + 2 => {
                            return Err(ChunkError::TooLong);
                        }
                        httparse::Status::Complete((length, size)) => {
                            buf.advance(length);
                            size
                        }
                        httparse::Status::Partial if buf.len() > MAX_LINE => {
                            return Err(ChunkError::TooLong);
                        }
                        httparse::Status::Partial => return Ok(()),
                    };
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::Terminator);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        let seen = seen + line.len() + 2;
                        if seen > MAX_TRAILERS {
                            return Err(ChunkError::TooLong);
                        }
                        self.state = State::Trailers(seen);
                    }
                }
            }
        }
    }
}

/// Removes one CRLF-terminated line from the front of `buf` and returns it without the CRLF.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ChunkError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > MAX_LINE => Err(ChunkError::TooLong),
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(ChunkError::TooLong),
        None => Ok(None),
    }
}

/// The one chunk-size rule (RFC 9112 section 7.1), for the client side (the framing tap)
/// and the backend side alike: httparse's parser, which refuses signs (`+5`), `0x`,
/// sizes of more than 16 digits and stray bytes, with one more demand: at least one digit
/// (httparse reads an empty size line as 0, which would end a body early). On success:
/// the length of the line with its CRLF, and the size.
pub(crate) fn parse_chunk_size(buf: &[u8]) -> Result<httparse::Status<(usize, u64)>, ChunkError> {
    match buf.first() {
        None => Ok(httparse::Status::Partial),
        Some(b) if !b.is_ascii_hexdigit() => Err(ChunkError::Size),
        Some(_) => httparse::parse_chunk_size(buf).map_err(|_| ChunkError::Size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the data.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::Done => return Ok((out, true)),
                Decoded::NeedMore if fed >= input.len() => return Ok((out, false)),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\nB;name=value\r\n, world and\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, done) = decode_in_steps(input, step).unwrap();
            assert_eq!(data, b"hello, world and", "step {step}");
            assert!(done, "step {step}");
        }
    }

    #[test]
    fn leaves_the_bytes_after_the_body_in_the_buffer() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"hi"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn refuses_malformed_sizes_terminators_and_endless_lines() {
        assert_eq!(decode_in_steps(b"zz\r\n", 4).unwrap_err(), ChunkError::Size);
        assert_eq!(decode_in_steps(b"\r\n", 4).unwrap_err(), ChunkError::Size);
        assert_eq!(
            decode_in_steps(b"11111111111111111\r\n", 64).unwrap_err(),
            ChunkError::Size
        );
        assert_eq!(
            decode_in_steps(b"2\r\nhiXX", 8).unwrap_err(),
            ChunkError::Terminator
        );
        let mut endless = b"1;".to_vec();
        endless.resize(MAX_LINE + 2, b'x');
        assert_eq!(
            decode_in_steps(&endless, 1024).unwrap_err(),
            ChunkError::TooLong
        );
    }

    #[test]
    fn sizes_follow_the_one_rule() {
        use httparse::Status::{Complete, Partial};
        assert_eq!(parse_chunk_size(b"5\r\n"), Ok(Complete((3, 5))));
        assert_eq!(parse_chunk_size(b"fF;a=b\r\n"), Ok(Complete((8, 255))));
        assert_eq!(parse_chunk_size(b"5 ;ext\r\n"), Ok(Complete((8, 5))));
        assert_eq!(parse_chunk_size(b"10"), Ok(Partial));
        assert_eq!(parse_chunk_size(b""), Ok(Partial));
        for bad in [
            &b"+5\r\n"[..],
            b"-5\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b"\r\n",
            b";ext\r\n",
            b"5 5\r\n",
            b"5\n",
            b"5\rx",
            b"g\r\n",
            b"12345678901234567\r\n",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                Err(ChunkError::Size),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decode_in_steps(b"+5\r\nhello\r\n0\r\n\r\n", 64).unwrap_err(),
            ChunkError::Size
        );
    }

    #[test]
    fn settling_reaches_the_end_without_taking_data() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"2\r\nhi\r\n3\r\nabc\r\n0\r\n\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"hi"))
        );
        decoder.settle(&mut buf).unwrap();
        assert!(!decoder.is_done());
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        decoder.settle(&mut buf).unwrap();
        assert!(decoder.is_done());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_truncated_body_is_not_done() {
        let (data, done) = decode_in_steps(b"5\r\nhel", 100).unwrap();
        assert_eq!(data, b"hel");
        assert!(!done);
    }
}
