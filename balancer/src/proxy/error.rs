//! The one place where proxy failures become HTTP answers: a status and a short plain-text
//! body naming the reason. Details (addresses, OS errors) go to the log, not the client.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ClientBody;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request body not received in time")]
    ClientTimeout,
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("no healthy backend available")]
    NoBackend,
    #[error("could not connect to a backend")]
    ConnectFailed,
    #[error("timed out connecting to a backend")]
    ConnectTimeout,
    #[error("backend did not answer in time")]
    ResponseTimeout,
    #[error("backend failed while answering")]
    BackendFailed,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectFailed | Self::BackendFailed => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout | Self::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn into_response(self) -> Response<ClientBody> {
        let status = self.status();
        let mut response = Response::new(ClientBody::text(format!("{self}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::BAD_REQUEST || status == StatusCode::REQUEST_TIMEOUT {
            // After a framing error the rest of the stream cannot be trusted; after a body
            // that stopped, the rest of it is still owed.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}
