//! HTTP routes and handlers. Ingest handlers read the body under its
//! limits, verify, hand the message to the writer and answer only after it
//! committed; errors map to HTTP in [`crate::error`]. Every answer, errors
//! included, is JSON (`/metrics` excepted).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use kattila_keysource::KeyRing;
use kattila_proto::reply::{AdminReset, AlarmAcked};
use kattila_proto::{verify, Accepted, Kind, VerifyError, VerifyOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::body::{BodyBudget, BodyLimits};
use crate::config::AdminToken;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::writer::{AdminCommand, Outcome, WriterHandle};

#[derive(Clone)]
pub struct AppState {
    pub keys: KeyRing,
    pub writer: WriterHandle,
    /// Size and time limits of a request body.
    pub body_limits: BodyLimits,
    /// Memory shared by the bodies being received.
    pub body_budget: BodyBudget,
    pub db_path: PathBuf,
    pub admin_token: Option<AdminToken>,
    /// The notification configuration in use (for listing its silences
    /// and windows).
    pub notify: crate::notify::Live,
    pub metrics: Arc<Metrics>,
    /// Ingest requests being handled; beyond its capacity they are shed.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Set when shutdown begins; readiness then answers 503.
    pub shutting_down: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/status/updates", post(updates))
        .route("/status/register", post(register))
        .route("/status/live", get(live))
        .route("/status/ready", get(ready))
        .route("/status/healthcheck", get(healthcheck))
        .route("/status/agents", get(agents))
        .route("/status/alarms", get(alarms))
        .route("/status/admin/reset", post(admin_reset))
        .route("/status/admin/alarms/{id}/ack", post(admin_ack))
        .route("/status/admin/incidents/{id}/ack", post(admin_ack_incident))
        .route("/status/admin/notifications", get(admin_outbox))
        .route("/status/admin/silences", get(admin_silences).post(admin_add_silence))
        .route("/status/admin/silences/{id}", axum::routing::delete(admin_expire_silence))
        .route("/status/admin/windows", get(admin_windows).post(admin_add_window))
        .route("/status/admin/windows/{id}", axum::routing::delete(admin_delete_window))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no endpoint {}", uri.path()))
}

/// axum adds the `Allow` header listing the methods the path has.
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string() }
}

async fn updates(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Accepted>, ApiError> {
    accept(&state, &headers, body, Kind::Report, "/status/updates").await
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Accepted>, ApiError> {
    accept(&state, &headers, body, Kind::Register, "/status/register").await
}

/// The whole acceptance path of docs/protocol.md for one endpoint.
async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    expected: Kind,
    endpoint: &'static str,
) -> Result<Json<Accepted>, ApiError> {
    let result = accept_inner(state, headers, body, expected, endpoint).await;
    match &result {
        Ok(_) => state.metrics.accepted(),
        Err(e) => {
            state.metrics.rejected(e.code());
            if matches!(e, ApiError::Body(_)) {
                // A body that stalls, breaks off or finds the budget full:
                // under a slow-client flood this is every connection, so
                // it is counted in the metrics and logged only at debug.
                tracing::debug!(endpoint, error = e.code(), detail = %e, "body refused");
            } else {
                tracing::info!(endpoint, error = e.code(), detail = %e, "message refused");
            }
        }
    }
    result
}

async fn accept_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    expected: Kind,
    endpoint: &'static str,
) -> Result<Json<Accepted>, ApiError> {
    // The body is read first, so that a refusal below leaves the
    // connection reusable; reading it holds no in-flight slot.
    let body = crate::body::read(body, headers, &state.body_limits, &state.body_budget).await?;
    // No key yet (DNS has not answered since start): nothing can verify, so
    // refuse everything rather than accept anything unsigned.
    if state.keys.with(|k| k.is_empty()) {
        return Err(VerifyError::NoKey.into());
    }
    // Only a request whose whole body is in hand takes an in-flight slot:
    // slow clients cannot hold slots, and the slots bound the verification
    // and commit work queued at once.
    let _slot = state.in_flight.try_acquire().map_err(|_| ApiError::Overloaded)?;
    let now = crate::unix_now();
    let opts = VerifyOptions { now, max_body: state.body_limits.max_bytes };
    let verified = state.keys.with(|keys| verify(&body.bytes, keys, opts)).inspect_err(|e| {
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
    match state.writer.submit(verified, body.bytes.clone(), now).await {
        Some(Outcome::Committed) => {
            tracing::debug!(endpoint, %agent_id, tick, relay_hops, "committed");
            Ok(Json(Accepted::new(agent_id, tick, relay_hops)))
        }
        Some(Outcome::Replay { agent_id, reason }) => Err(ApiError::Replay { agent_id, reason }),
        Some(Outcome::Failed) => Err(ApiError::Storage),
        None => Err(ApiError::ShuttingDown),
    }
}

/// Liveness: the process serves requests. Nothing else is checked, so a
/// supervisor restarts the receiver only when it is really stuck.
async fn live() -> Json<Value> {
    Json(json!({ "status": "live", "version": env!("CARGO_PKG_VERSION") }))
}

/// Readiness: whether a report sent now can be accepted. 503 `not_ready`
/// while there is no fleet key, the database cannot be read, the writer
/// has stopped or the receiver is shutting down.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut reasons = Vec::new();
    if state.shutting_down.load(Ordering::Acquire) {
        reasons.push("shutting down".to_string());
    }
    if state.keys.status().keys == 0 {
        reasons.push("no fleet key yet: every report is refused with 503 no_key".to_string());
    }
    if !state.writer.is_running() {
        reasons.push("the database writer has stopped".to_string());
    }
    if let Err(e) = database_readable(&state).await {
        reasons.push(format!("database not readable: {e}"));
    }
    tracing::debug!(ready = reasons.is_empty(), "readiness check");
    if reasons.is_empty() {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(ApiError::NotReady(reasons.join("; ")))
    }
}

/// Opens the database read-only and runs a query, as every reader does.
async fn database_readable(state: &AppState) -> Result<(), String> {
    let db_path = state.db_path.clone();
    tokio::task::spawn_blocking(move || {
        kattila_store::readable(&db_path).map_err(|e| format!("{e:#}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn healthcheck(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.keys.status();
    let db_ok = database_readable(&state).await.is_ok();
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
    tokio::task::spawn_blocking(move || {
        kattila_store::open_read_only(&path).and_then(|c| f(&c).map_err(anyhow::Error::from))
    })
    .await
    .map_err(|_| ApiError::Read)?
    .map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "read query failed");
        ApiError::Read
    })
}

async fn agents(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = crate::unix_now();
    let agents = read(&state, kattila_store::status::agents).await?;
    Ok(Json(json!({ "generated_at": now, "agents": agents })))
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
    let alarms = read(&state, move |c| kattila_store::status::alarms(c, &which, limit)).await?;
    Ok(Json(json!({ "alarms": alarms })))
}

/// Checks the bearer token in constant time. No token configured: 403.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(AdminToken(expected)) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    agent_id: Option<String>,
}

async fn admin_reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<AdminReset>, ApiError> {
    // Authorised first: a stranger's body is never read.
    authorize(&state, &headers)?;
    let body = crate::body::read(body, &headers, &state.body_limits, &state.body_budget).await?;
    let body = body.bytes;
    let request: ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetRequest { agent_id: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected {{\"agent_id\": \"…\"}} or {{}}: {e}"))
        })?
    };
    if let Some(id) = request.agent_id.clone() {
        let exists = read(&state, move |c| kattila_store::status::agent_exists(c, &id)).await?;
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
    Ok(Json(AdminReset::new(n)))
}

async fn admin_ack(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<AlarmAcked>, ApiError> {
    authorize(&state, &headers)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
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
    Ok(Json(AlarmAcked::new(alarm_id)))
}

async fn admin_ack_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let incident_id = path_id(id)?;
    let n = state
        .writer
        .admin(AdminCommand::AckIncident { incident_id }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no incident {incident_id}")));
    }
    Ok(Json(json!({ "acked": incident_id })))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (alarms, agents, outbox) = read(&state, |c| {
        let (alarms, agents) = kattila_store::status::gauges(c)?;
        Ok((alarms, agents, kattila_store::notify::counts(c)?))
    })
    .await?;
    let text = state.metrics.render(
        &state.keys.status(),
        &alarms,
        agents,
        state.body_budget.in_use(),
        &outbox,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[derive(Debug, Deserialize)]
struct OutboxQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// The notification outbox, newest first (`?state=dead` for dead letters).
async fn admin_outbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<OutboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(s) = &q.state {
        if !matches!(s.as_str(), "queued" | "sent" | "dead") {
            return Err(ApiError::BadRequest(format!(
                "state must be queued, sent or dead, not {s:?}"
            )));
        }
    }
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    let items =
        read(&state, move |c| kattila_store::notify::list(c, q.state.as_deref(), limit)).await?;
    Ok(Json(json!({ "notifications": items })))
}

async fn admin_silences(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let now = crate::unix_now();
    let stored = read(&state, |c| kattila_store::notify::silences(c, None)).await?;
    let from_file: Vec<Value> = state
        .notify
        .get()
        .map(|c| {
            c.silences
                .iter()
                .map(|s| {
                    json!({
                        "source": "file",
                        "matchers": s.matchers.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
                        "starts_at": (s.starts_at != i64::MIN).then_some(s.starts_at),
                        "ends_at": s.ends_at,
                        "comment": s.comment,
                        "active": s.active_at(now),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let stored: Vec<Value> = stored
        .into_iter()
        .map(|s| {
            let active = (s.starts_at..s.ends_at).contains(&now);
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["source"] = json!("api");
            v["active"] = json!(active);
            v
        })
        .collect();
    let all = [stored, from_file].concat();
    Ok(Json(json!({ "silences": all })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    matchers: Vec<String>,
    starts_at: Option<i64>,
    /// Unix seconds; or `duration_secs` from now.
    ends_at: Option<i64>,
    duration_secs: Option<i64>,
    comment: String,
    created_by: Option<String>,
}

async fn admin_add_silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = crate::body::read(body, &headers, &state.body_limits, &state.body_budget).await?;
    let r: SilenceRequest = serde_json::from_slice(&body.bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"matchers\": [\"site=x\"], \"duration_secs\": 3600, \"comment\": \"…\"}}: {e}"
        ))
    })?;
    for m in &r.matchers {
        crate::notify::config::Matcher::parse(m).map_err(ApiError::BadRequest)?;
    }
    let now = crate::unix_now();
    let ends_at = match (r.ends_at, r.duration_secs) {
        (Some(t), None) => t,
        (None, Some(d)) if d > 0 => now + d,
        _ => {
            return Err(ApiError::BadRequest(
                "give ends_at (Unix seconds) or a positive duration_secs".into(),
            ))
        }
    };
    if r.matchers.is_empty() || r.comment.trim().is_empty() {
        return Err(ApiError::BadRequest("a silence needs matchers and a comment".into()));
    }
    let starts_at = r.starts_at.unwrap_or(now);
    if ends_at <= starts_at.max(now) {
        return Err(ApiError::BadRequest(format!(
            "the silence would end ({ends_at}) before it starts ({starts_at}) or now ({now})"
        )));
    }
    let silence = kattila_store::notify::SilenceRow {
        id: 0,
        matchers: r.matchers,
        starts_at,
        ends_at,
        comment: r.comment,
        created_by: r.created_by.unwrap_or_else(|| "admin".into()),
        created_at: now,
    };
    let id = state
        .writer
        .admin(AdminCommand::AddSilence { silence }, now)
        .await
        .ok_or(ApiError::Storage)?;
    Ok(Json(json!({ "id": id, "ends_at": ends_at })))
}

fn path_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<i64, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    id.parse().map_err(|_| ApiError::BadRequest(format!("id {id:?} is not a number")))
}

async fn admin_expire_silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let id = path_id(id)?;
    let n = state
        .writer
        .admin(AdminCommand::ExpireSilence { id }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no silence {id}")));
    }
    Ok(Json(json!({ "expired": id })))
}

async fn admin_windows(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let now = crate::unix_now();
    let stored = read(&state, kattila_store::notify::windows).await?;
    let mut out: Vec<Value> = stored
        .into_iter()
        .map(|w| {
            let open = crate::notify::config::Window::from_json(&w.spec, Some(w.id))
                .map(|x| x.open_at(now))
                .unwrap_or(false);
            json!({ "source": "api", "id": w.id, "spec": w.spec, "open": open })
        })
        .collect();
    if let Some(c) = state.notify.get() {
        out.extend(c.windows.iter().map(|w| {
            json!({ "source": "file", "name": w.name, "agents": w.agents, "sites": w.sites, "open": w.open_at(now) })
        }));
    }
    Ok(Json(json!({ "windows": out })))
}

async fn admin_add_window(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let body = crate::body::read(body, &headers, &state.body_limits, &state.body_budget).await?;
    let spec: Value = serde_json::from_slice(&body.bytes)
        .map_err(|e| ApiError::BadRequest(format!("expected a window as JSON: {e}")))?;
    crate::notify::config::Window::from_json(&spec, None)
        .map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    let id = state
        .writer
        .admin(AdminCommand::AddWindow { spec }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    Ok(Json(json!({ "id": id })))
}

async fn admin_delete_window(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let id = path_id(id)?;
    let n = state
        .writer
        .admin(AdminCommand::DeleteWindow { id }, crate::unix_now())
        .await
        .ok_or(ApiError::Storage)?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no window {id}")));
    }
    Ok(Json(json!({ "deleted": id })))
}
