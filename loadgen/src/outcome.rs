//! What became of one request: an HTTP status, or a transport error sorted by kind.

use std::error::Error as StdError;
use std::io;

/// Why a request got no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Nothing listens on the port (ECONNREFUSED).
    Refused,
    /// The peer reset or aborted the connection (ECONNRESET, EPIPE).
    Reset,
    /// The connection closed before a complete response arrived.
    Closed,
    /// No complete response within `--timeout`.
    Timeout,
    /// Connecting failed for another reason (DNS, unreachable network).
    Connect,
    /// The peer did not speak valid HTTP.
    Protocol,
    /// Reading the response body failed.
    Body,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Protocol,
        ErrorKind::Body,
        ErrorKind::Other,
    ];

    /// The key used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Body => "body",
            ErrorKind::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Sorts a reqwest error by the most specific cause in its source chain.
    pub fn classify(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return ErrorKind::Timeout;
        }
        match Self::from_chain(error) {
            Some(kind) => kind,
            None if error.is_connect() => ErrorKind::Connect,
            None if error.is_body() || error.is_decode() => ErrorKind::Body,
            None => ErrorKind::Other,
        }
    }

    /// The kind named by an error or its sources: the operating system's verdict first,
    /// then hyper's; `None` when neither says anything specific.
    pub fn from_chain(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut hyper_kind = None;
        let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(current) = cause {
            if let Some(io_error) = current.downcast_ref::<io::Error>() {
                match io_error.kind() {
                    io::ErrorKind::ConnectionRefused => return Some(ErrorKind::Refused),
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe => return Some(ErrorKind::Reset),
                    io::ErrorKind::TimedOut => return Some(ErrorKind::Timeout),
                    io::ErrorKind::UnexpectedEof => return Some(ErrorKind::Closed),
                    _ => {}
                }
            }
            if hyper_kind.is_none()
                && let Some(hyper_error) = current.downcast_ref::<hyper::Error>()
            {
                hyper_kind = if hyper_error.is_incomplete_message() || hyper_error.is_closed() {
                    Some(ErrorKind::Closed)
                } else if hyper_error.is_parse() || hyper_error.is_parse_status() {
                    Some(ErrorKind::Protocol)
                } else if hyper_error.is_timeout() {
                    Some(ErrorKind::Timeout)
                } else if hyper_error.is_body_write_aborted() {
                    Some(ErrorKind::Reset)
                } else {
                    None
                };
            }
            cause = current.source();
        }
        hyper_kind
    }
}

/// The result of one request, small enough to copy around by the million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Error(ErrorKind),
}

impl Outcome {
    /// Failed from the user's point of view: no response, or a 4xx/5xx one.
    pub fn is_failure(self) -> bool {
        match self {
            Outcome::Status(code) => code >= 400,
            Outcome::Error(_) => true,
        }
    }
}
