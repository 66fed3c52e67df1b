//! Every refusal of the agent's HTTP API (relay and reset), and its one
//! mapping to an HTTP status and error code. The answer body is the
//! protocol's [`Refusal`]; the codes are those of docs/protocol.md.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kattila_proto::limits::{MAX_BODY_BYTES, MAX_RELAYABLE_BYTES};
use kattila_proto::{Refusal, ResetError, VerifyError, MAX_RELAY_LAYERS};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A relay request that fails the checks every message goes through.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A reset request that fails its checks.
    #[error(transparent)]
    Reset(#[from] ResetError),
    /// A relay chain that already passed through this agent.
    #[error("this agent is already in the relay chain")]
    InChain,
    /// A chain with no room for this agent's layer.
    #[error("already {MAX_RELAY_LAYERS} relay layers")]
    NoRoomForLayer,
    /// An envelope that this agent's layer would push over the size limit.
    #[error(
        "with this relay's layer the envelope would be {size} bytes, over the limit of \
         {MAX_BODY_BYTES}; envelopes that may be relayed should stay within \
         {MAX_RELAYABLE_BYTES} bytes"
    )]
    TooLargeWithLayer { size: usize },
    /// Neither the receiver nor any further relay answered.
    #[error("this relay cannot reach the receiver: {0}")]
    NoPath(String),
    /// This agent's own state failed (ticks, agent id on disk).
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// The stable error code of docs/protocol.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Verify(e) => e.code(),
            ApiError::Reset(e) => e.code(),
            ApiError::InChain => "relay_loop",
            ApiError::NoRoomForLayer => "too_many_relays",
            ApiError::TooLargeWithLayer { .. } => "too_large",
            ApiError::NoPath(_) => "no_path",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status of docs/protocol.md.
    pub fn status(&self) -> StatusCode {
        let status = match self {
            ApiError::Verify(e) => e.status(),
            ApiError::Reset(e) => e.status(),
            ApiError::InChain | ApiError::NoRoomForLayer => 400,
            ApiError::TooLargeWithLayer { .. } => 413,
            ApiError::NoPath(_) => 502,
            ApiError::Internal(_) => 500,
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The answer's body.
    pub fn refusal(&self) -> Refusal {
        Refusal::new(self.code(), self.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.refusal())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_protocol_codes() {
        let cases = [
            (ApiError::Verify(VerifyError::BadMac), 401, "bad_mac"),
            (ApiError::Reset(ResetError::WrongAgent), 400, "wrong_agent"),
            (ApiError::Reset(VerifyError::NoKey.into()), 503, "no_key"),
            (ApiError::InChain, 400, "relay_loop"),
            (ApiError::NoRoomForLayer, 400, "too_many_relays"),
            (ApiError::TooLargeWithLayer { size: 1 }, 413, "too_large"),
            (ApiError::NoPath(String::new()), 502, "no_path"),
            (ApiError::Internal(anyhow::anyhow!("disk full")), 500, "internal"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e}");
            assert_eq!(e.refusal(), Refusal::new(code, e.to_string()));
        }
    }
}
