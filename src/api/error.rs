//! The API's one error type and how each variant answers: a status and a JSON body
//! `{"error": "<code>", "message": "<text>"}`. Internal errors are logged here, once, and
//! answered opaquely.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ticket::TicketError;
use crate::auth::AuthError;

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("this progress belongs to another user")]
    Forbidden,
    #[error("only an admin may do this")]
    AdminOnly,
    #[error("no progress found")]
    NotFound,
    #[error("no such route")]
    NoRoute,
    #[error("too many requests; retry after {} s", retry_after_secs(.retry_after))]
    RateLimited { retry_after: Duration },
    #[error("too many live streams open for {scope}; retry after {} s", retry_after_secs(.retry_after))]
    TooManyStreams {
        scope: &'static str,
        retry_after: Duration,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub(crate) fn internal(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(error))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Ticket(TicketError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Ticket(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden | ApiError::AdminOnly => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound | ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooManyStreams { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl std::fmt::Debug for ApiError {
    /// The error and its whole cause chain, for the log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(_) = self {
            tracing::error!(error = ?self, "request failed");
        }
        let body = Json(serde_json::json!({ "error": code, "message": self.to_string() }));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::TooManyStreams { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(&retry_after).into());
            }
            _ if status == StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Whole seconds, rounded up, at least one: `Retry-After` has no finer unit.
fn retry_after_secs(wait: &Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The answer to a handler that panicked: the same opaque 500 as any internal error. The
/// panic itself is logged here, once; the process goes on serving.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "request handler panicked");
    let body = Json(serde_json::json!({ "error": "internal", "message": "internal error" }));
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}
