//! `hits healthcheck`: the container health check, without curl in the image.
//!
//! Sends `GET /healthz` to the app on 127.0.0.1:$PORT and exits 0 on a 200, 1 otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub fn check(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status_line = status_line.lines().next().unwrap_or("");
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("unexpected answer: {status_line:?}"))
    }
}
