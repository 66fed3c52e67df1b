//! The agent's HTTP API (default port 5087): health, peer info for
//! discovery, relaying for other agents, and signed resets. The handlers'
//! work is in [`crate::node::serve`]; refusals map to HTTP in
//! [`crate::error`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kattila_proto::reply::{AgentHealth, ResetDone};
use kattila_proto::PeerInfo;

use crate::error::ApiError;
use crate::node::Node;

/// Bodies above this are cut off before verification (a relay adds a layer
/// around envelopes of up to 1 MiB).
const BODY_LIMIT: usize = 2 << 20;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/status/healthcheck", get(health))
        .route("/status/peer", get(peer))
        .route("/status/relay", post(relay))
        .route("/status/reset", post(reset))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(node)
}

/// Serves the API on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, node: Arc<Node>) -> anyhow::Result<()> {
    axum::serve(listener, router(node)).await?;
    Ok(())
}

async fn health(State(node): State<Arc<Node>>) -> Json<AgentHealth> {
    tracing::debug!("healthcheck");
    Json(node.health())
}

async fn peer(State(node): State<Arc<Node>>) -> Json<PeerInfo> {
    Json(node.peer_info())
}

/// The answer that came back through this relay is passed on unchanged.
async fn relay(State(node): State<Arc<Node>>, body: Bytes) -> Result<Response, ApiError> {
    let (status, body) = node.handle_relay(&body).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn reset(State(node): State<Arc<Node>>, body: Bytes) -> Result<Json<ResetDone>, ApiError> {
    Ok(Json(node.handle_reset(&body)?))
}
