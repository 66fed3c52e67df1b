//! Every error a request can end in, and its one mapping to an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kattila_proto::{ReplayError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
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
}

impl ApiError {
    /// Stable machine-readable code, documented in docs/protocol.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Verify(e) => e.code(),
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
        }
    }
}

impl From<&ApiError> for StatusCode {
    fn from(e: &ApiError) -> StatusCode {
        match e {
            ApiError::Verify(v) => {
                StatusCode::from_u16(v.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::WrongKind { .. } => StatusCode::BAD_REQUEST,
            ApiError::Replay { .. } => StatusCode::CONFLICT,
            ApiError::Storage | ApiError::ShuttingDown | ApiError::Read | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
        let body = serde_json::json!({ "error": self.code(), "detail": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Overloaded) {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
