//! The agent's HTTP API (default port 5087): health, peer info for
//! discovery, relaying for other agents, and signed resets.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

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

async fn health(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    tracing::debug!("healthcheck");
    Json(node.health())
}

async fn peer(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(node.peer_info())
}

async fn relay(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let (status, body) = node.handle_relay(&body).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn reset(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let (status, json) = node.handle_reset(&body);
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(json))
        .into_response()
}
