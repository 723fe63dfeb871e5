//! The one mapping from failures to HTTP answers. Details go to the log; clients get a short
//! reason in the format of the route they called.

use crate::recorder::RecordError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// How the failing route answers.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    Html,
    Json,
}

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    reason: String,
    format: Format,
}

impl AppError {
    pub fn unavailable(reason: impl Into<String>, format: Format) -> AppError {
        AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
            format,
        }
    }

    pub fn from_store(error: StoreError, format: Format) -> AppError {
        tracing::error!(%error, "database request failed");
        let reason = match error {
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                "the database is unreachable or overloaded"
            }
            _ => "the database is unavailable",
        };
        AppError::unavailable(reason, format)
    }

    pub fn from_record(error: RecordError, format: Format) -> AppError {
        tracing::warn!(%error, "hit not recorded");
        AppError::unavailable(format!("the hit was not recorded: {error}"), format)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = match self.format {
            Format::Json => (
                self.status,
                axum::Json(serde_json::json!({ "error": self.reason })),
            )
                .into_response(),
            Format::Html => (
                self.status,
                Html(crate::routes::page::unavailable_page(&self.reason)),
            )
                .into_response(),
        };
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
