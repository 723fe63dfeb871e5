//! `balancer admin ...`: a small blocking HTTP/1.1 client for the admin API, meant for
//! loopback. One request per connection (`Connection: close`), every step under a timeout,
//! the answer read up to a cap.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use super::auth::AdminToken;
use crate::cli::AdminAction;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a list of the most backends the set may hold fits easily).
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// What went wrong, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the admin API at {addr} sent an unreadable answer")]
    Garbled { addr: SocketAddr },
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
}

/// Runs `action` against the API at `addr` and returns what to print.
pub fn run(
    addr: SocketAddr,
    token: Option<&AdminToken>,
    action: &AdminAction,
) -> Result<String, ClientError> {
    // `[` and `]` (of an IPv6 address) are not allowed raw in a request target.
    let encoded =
        |address: &SocketAddr| address.to_string().replace('[', "%5B").replace(']', "%5D");
    let (method, path, body) = match action {
        AdminAction::List => ("GET", "/api/backends".to_owned(), None),
        AdminAction::Drain { address } => (
            "POST",
            format!("/api/backends/{}/drain", encoded(address)),
            None,
        ),
        AdminAction::Resume { address } => (
            "POST",
            format!("/api/backends/{}/resume", encoded(address)),
            None,
        ),
        AdminAction::Weight { address, weight } => (
            "PUT",
            format!("/api/backends/{}/weight", encoded(address)),
            Some(json!({ "weight": weight })),
        ),
        AdminAction::Add { address, weight } => (
            "POST",
            "/api/backends".to_owned(),
            Some(json!({ "address": address.to_string(), "weight": weight })),
        ),
        AdminAction::Remove { address } => (
            "DELETE",
            format!("/api/backends/{}", encoded(address)),
            None,
        ),
    };
    let (status, answer) = call(addr, token, method, &path, body.as_ref())?;
    if !(200..300).contains(&status) {
        let message = answer["error"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned);
        let message = match answer["field"].as_str() {
            Some(field) => format!("{message} (field {field})"),
            None => message,
        };
        return Err(ClientError::Refused { status, message });
    }
    Ok(match action {
        AdminAction::List => table(&answer),
        _ => table(&json!({ "backends": [answer] })),
    })
}

/// One request; returns the status and the JSON body.
pub fn call(
    addr: SocketAddr,
    token: Option<&AdminToken>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(token) = token {
        request.extend_from_slice(b"Authorization: Bearer ");
        request.extend_from_slice(token.expose());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.as_bytes());
    stream.write_all(&request).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let garbled = || ClientError::Garbled { addr };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(garbled)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| garbled())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(garbled)?;
    // The server always sends a Content-Length body (never chunked), read to its close.
    let json = serde_json::from_slice(&answer[split + 4..]).map_err(|_| garbled())?;
    Ok((status, json))
}

/// The backends as an aligned text table.
pub fn table(answer: &Value) -> String {
    let header = [
        "ADDRESS",
        "WEIGHT",
        "STATE",
        "IN-FLIGHT",
        "REQUESTS",
        "FAILURES",
        "REASON",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for backend in answer["backends"].as_array().into_iter().flatten() {
        let text = |key: &str| match &backend[key] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        let mut address = text("address");
        if backend["added_by_api"] == Value::Bool(true) {
            address.push_str(" (api)");
        }
        rows.push(vec![
            address,
            text("weight"),
            text("state"),
            text("in_flight"),
            text("requests"),
            text("failures"),
            text("reason"),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
