//! Every error a request can end in, and its one mapping to an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kattila_proto::{Refusal, ReplayError, VerifyError};

use crate::body::BodyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{kind} messages belong on {endpoint}")]
    WrongKind { kind: &'static str, endpoint: &'static str },
    #[error("replayed message from {agent_id}: {reason}")]
    Replay { agent_id: String, reason: ReplayError },
    #[error("the database could not commit the message")]
    Storage,
    #[error("the receiver is shutting down")]
    ShuttingDown,
    #[error("the admin API is disabled: no admin token is configured")]
    AdminDisabled,
    #[error("missing or wrong bearer token")]
    AdminUnauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("reading the database failed")]
    Read,
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("{method} is not allowed here")]
    MethodNotAllowed { method: String },
    #[error("not ready: {0}")]
    NotReady(String),
}

impl ApiError {
    /// Stable machine-readable code, documented in docs/protocol.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Verify(e) => e.code(),
            ApiError::Body(BodyError::TooLarge { .. }) => "too_large",
            ApiError::Body(BodyError::Timeout { .. }) => "timeout",
            ApiError::Body(BodyError::OverBudget) => "overloaded",
            ApiError::Body(BodyError::Read(_)) => "bad_request",
            ApiError::WrongKind { .. } => "wrong_kind",
            ApiError::Replay { .. } => "replay",
            ApiError::Storage => "storage",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::AdminUnauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Read => "storage",
            ApiError::Overloaded => "overloaded",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::NotReady(_) => "not_ready",
        }
    }
}

impl From<&ApiError> for StatusCode {
    fn from(e: &ApiError) -> StatusCode {
        match e {
            ApiError::Verify(v) => {
                StatusCode::from_u16(v.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Body(BodyError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(BodyError::Timeout { .. }) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Body(BodyError::OverBudget) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Body(BodyError::Read(_)) => StatusCode::BAD_REQUEST,
            ApiError::WrongKind { .. } => StatusCode::BAD_REQUEST,
            ApiError::Replay { .. } => StatusCode::CONFLICT,
            ApiError::Storage
            | ApiError::ShuttingDown
            | ApiError::Read
            | ApiError::Overloaded
            | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from(&self);
        let mut response =
            (status, Json(Refusal::new(self.code(), self.to_string()))).into_response();
        // Load that passes: agents come back a second later. (An answer that
        // leaves the body unread also says `Connection: close`; the
        // transport adds that, whatever the route.)
        if matches!(self, ApiError::Overloaded | ApiError::Body(BodyError::OverBudget)) {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
