//! HTTP routes and handlers. Handlers verify, hand the message to the
//! writer and answer only after it committed; errors map to HTTP in
//! [`crate::error`].

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kattila_proto::{verify, Kind, VerifyError, VerifyOptions};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::keys::SharedKeys;
use crate::writer::{Outcome, WriterHandle};

#[derive(Clone)]
pub struct AppState {
    pub keys: SharedKeys,
    pub writer: WriterHandle,
    pub max_body: usize,
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body;
    Router::new()
        .route("/status/updates", post(updates))
        .route("/status/register", post(register))
        .route("/status/healthcheck", get(healthcheck))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn updates(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    accept(&state, body, Kind::Report, "/status/updates").await
}

async fn register(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    accept(&state, body, Kind::Register, "/status/register").await
}

/// The whole acceptance path of docs/protocol.md for one endpoint.
async fn accept(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    expected: Kind,
    endpoint: &'static str,
) -> Result<Json<Value>, ApiError> {
    let result = accept_inner(state, body, expected, endpoint).await;
    if let Err(e) = &result {
        tracing::info!(endpoint, error = e.code(), detail = %e, "message refused");
    }
    result
}

async fn accept_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    expected: Kind,
    endpoint: &'static str,
) -> Result<Json<Value>, ApiError> {
    if state.keys.with(|k| k.is_empty()) {
        return Err(VerifyError::NoKey.into());
    }
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::from(VerifyError::TooLarge {
                size: state.max_body + 1,
                limit: state.max_body,
            })
        }
        other => ApiError::from(VerifyError::BadJson(other.body_text())),
    })?;
    let now = crate::unix_now();
    let opts = VerifyOptions { now, max_body: state.max_body };
    let verified = state.keys.with(|keys| verify(&body, keys, opts))?;
    let kind = verified.message.kind();
    if kind != expected {
        return Err(ApiError::WrongKind { kind: kind.as_str(), endpoint: endpoint_for(kind) });
    }
    let agent_id = verified.origin().agent_id.clone();
    let tick = verified.origin().tick;
    let relay_hops = verified.relay_hops();
    match state.writer.submit(verified, body, now).await {
        Some(Outcome::Committed) => {
            tracing::debug!(endpoint, %agent_id, tick, relay_hops, "committed");
            Ok(Json(json!({
                "status": "ok",
                "agent_id": agent_id,
                "tick": tick,
                "relay_hops": relay_hops,
            })))
        }
        Some(Outcome::Replay { agent_id, reason }) => Err(ApiError::Replay { agent_id, reason }),
        Some(Outcome::Failed) => Err(ApiError::Storage),
        None => Err(ApiError::ShuttingDown),
    }
}

fn endpoint_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "/status/register",
        Kind::Report | Kind::Relay => "/status/updates",
    }
}

async fn healthcheck(State(state): State<AppState>) -> Json<Value> {
    let keys = state.keys.with(|k| k.len());
    Json(json!({
        "status": if keys > 0 { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "keys": keys,
    }))
}
