//! HTTP routes and handlers. Ingest handlers verify, hand the message to the
//! writer and answer only after it committed; errors map to HTTP in
//! [`crate::error`].

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use kattila_keysource::KeyRing;
use kattila_proto::{verify, Kind, VerifyError, VerifyOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::config::AdminToken;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::writer::{AdminCommand, Outcome, WriterHandle};

#[derive(Clone)]
pub struct AppState {
    pub keys: KeyRing,
    pub writer: WriterHandle,
    pub max_body: usize,
    pub db_path: PathBuf,
    pub admin_token: Option<AdminToken>,
    pub metrics: Arc<Metrics>,
    /// An agent is silent after this many seconds without a report.
    pub silent_after: i64,
    /// Ingest requests being handled; beyond its capacity they are shed.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body;
    let ingest = Router::new()
        .route("/status/updates", post(updates))
        .route("/status/register", post(register))
        .layer(axum::middleware::from_fn_with_state(state.clone(), shed_load));
    Router::new()
        .merge(ingest)
        .route("/status/healthcheck", get(healthcheck))
        .route("/status/agents", get(agents))
        .route("/status/alarms", get(alarms))
        .route("/status/admin/reset", post(admin_reset))
        .route("/status/admin/alarms/{id}/ack", post(admin_ack))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Refuses ingest requests beyond the in-flight limit with 503 before
/// their bodies are read, so an overload costs neither memory nor latency
/// for the requests already admitted. Agents retry later or spool.
async fn shed_load(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            state.metrics.rejected(ApiError::Overloaded.code());
            ApiError::Overloaded.into_response()
        }
    }
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
    match &result {
        Ok(_) => state.metrics.accepted(),
        Err(e) => {
            state.metrics.rejected(e.code());
            tracing::info!(endpoint, error = e.code(), detail = %e, "message refused");
        }
    }
    result
}

async fn accept_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    expected: Kind,
    endpoint: &'static str,
) -> Result<Json<Value>, ApiError> {
    // No key yet (DNS has not answered since start): nothing can verify, so
    // refuse everything rather than accept anything unsigned.
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
    let verified = state.keys.with(|keys| verify(&body, keys, opts)).inspect_err(|e| {
        // The agent may already sign with a key rotated in DNS that this
        // receiver has not fetched yet: look again soon (rate-limited).
        if *e == VerifyError::BadMac {
            state.keys.request_refresh();
        }
    })?;
    let kind = verified.message.kind();
    if kind != expected {
        let endpoint = if kind == Kind::Register { "/status/register" } else { "/status/updates" };
        return Err(ApiError::WrongKind { kind: kind.as_str(), endpoint });
    }
    let agent_id = verified.origin().agent_id.clone();
    let tick = verified.origin().tick;
    let relay_hops = verified.relay_hops();
    match state.writer.submit(verified, body, now).await {
        Some(Outcome::Committed) => {
            tracing::debug!(endpoint, %agent_id, tick, relay_hops, "committed");
            Ok(Json(
                json!({ "status": "ok", "agent_id": agent_id, "tick": tick, "relay_hops": relay_hops }),
            ))
        }
        Some(Outcome::Replay { agent_id, reason }) => Err(ApiError::Replay { agent_id, reason }),
        Some(Outcome::Failed) => Err(ApiError::Storage),
        None => Err(ApiError::ShuttingDown),
    }
}

async fn healthcheck(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.keys.status();
    let db_path = state.db_path.clone();
    let db_ok = tokio::task::spawn_blocking(move || {
        crate::read::open(&db_path)
            .and_then(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
    })
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let mut reasons = Vec::new();
    if keys.keys == 0 {
        reasons.push("no fleet key yet: every report is refused with 503".to_string());
    } else if let Some(err) = &keys.last_error {
        reasons.push(format!(
            "key refresh failing, verifying with the {} known key(s): {err}",
            keys.keys
        ));
    }
    if !db_ok {
        reasons.push("database not readable".to_string());
    }
    tracing::debug!(degraded = !reasons.is_empty(), "health check");
    Json(json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "version": env!("CARGO_PKG_VERSION"),
        "keys": { "source": keys.source, "count": keys.keys, "last_success": keys.last_success },
    }))
}

/// Runs a read-only query on a blocking thread.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let path = state.db_path.clone();
    tokio::task::spawn_blocking(move || crate::read::open(&path).and_then(|c| f(&c)))
        .await
        .map_err(|_| ApiError::Read)?
        .map_err(|e| {
            tracing::error!(error = %e, "read query failed");
            ApiError::Read
        })
}

async fn agents(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let silent_after = state.silent_after;
    let now = crate::unix_now();
    Ok(Json(read(&state, move |c| crate::read::agents(c, now, silent_after)).await?))
}

#[derive(Debug, Deserialize)]
struct AlarmQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn alarms(
    State(state): State<AppState>,
    query: Result<Query<AlarmQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let which = q.state.unwrap_or_else(|| "active".into());
    if !matches!(which.as_str(), "active" | "resolved" | "all") {
        return Err(ApiError::BadRequest(format!(
            "state must be active, resolved or all, not {which:?}"
        )));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    Ok(Json(read(&state, move |c| crate::read::alarms(c, &which, limit)).await?))
}

/// Checks the bearer token in constant time. No token configured: 403.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(AdminToken(expected)) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    agent_id: Option<String>,
}

async fn admin_reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let request: ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetRequest { agent_id: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected {{\"agent_id\": \"…\"}} or {{}}: {e}"))
        })?
    };
    if let Some(id) = request.agent_id.clone() {
        let exists = read(&state, move |c| crate::read::agent_exists(c, &id)).await?;
        if !exists {
            return Err(ApiError::NotFound(format!(
                "no agent {:?}",
                request.agent_id.unwrap_or_default()
            )));
        }
    }
    let scope = request.agent_id.clone().unwrap_or_else(|| "all agents".into());
    let n = state
        .writer
        .admin(AdminCommand::Reset { agent: request.agent_id }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    tracing::info!(scope = %scope, "topology state reset by admin");
    Ok(Json(json!({ "status": "ok", "reset": n })))
}

async fn admin_ack(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let alarm_id: i64 =
        id.parse().map_err(|_| ApiError::BadRequest(format!("alarm id {id:?} is not a number")))?;
    let n = state
        .writer
        .admin(AdminCommand::Ack { alarm_id }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no alarm {alarm_id}")));
    }
    Ok(Json(json!({ "status": "ok", "acked": alarm_id })))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (alarms, agents) = read(&state, crate::read::gauges).await?;
    let text = state.metrics.render(&state.keys.status(), &alarms, agents);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
