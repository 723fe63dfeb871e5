//! Our HTTP/1.1 client for backends, driven inside the task of the client request it serves.
//!
//! A general-purpose client (hyper's) runs every backend connection as a task of its own and
//! hands requests to it over a channel: two task switches and a channel round trip per
//! proxied request. Here the request's own task writes the request and reads the response,
//! and the response body hands the connection back to the pool when its last byte has been
//! read. Per request that is one write and one read on the backend socket.
//!
//! What it supports is what a reverse proxy needs: request bodies streamed with their
//! `Content-Length` or re-chunked; responses framed by `Content-Length`, chunked coding or
//! the connection's close; bodiless answers (HEAD, 1xx, 204, 304); interim 1xx answers
//! skipped; `101 Switching Protocols` handing over the raw connection; keep-alive unless
//! either side said otherwise. Chunk extensions and trailers of responses are dropped.
//!
//! Every wait has its bound, from [`crate::guards::BackendGuards`]: the response head
//! (from the request's last byte), each write of the request body to the backend and each
//! read of the response body from it (idle), and each read of the client's body.

mod body;
pub(crate) mod chunked;
mod connection;
mod exchange;
#[cfg(test)]
mod proptests;
mod request;
mod response;
pub(crate) use response::content_length_value;

pub use body::{BodyError, ResponseBody};
pub use connection::{ConnectError, Connection};
pub use exchange::{Answered, ExchangeError, Outcome, RequestHead, send};
pub use request::RequestBody;
