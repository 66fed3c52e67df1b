//! Runs the receiver: the writer thread plus the HTTP server, with a
//! graceful shutdown that commits everything already accepted.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{router, AppState};
use crate::config::Config;
use crate::keys::SharedKeys;
use crate::writer::Writer;

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// finishes in-flight requests and lets the writer commit its queue.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (writer, handle) = Writer::start(&config.db_path, config.max_batch)?;
    let state = AppState {
        keys: SharedKeys::new(config.keys.initial()),
        writer: handle,
        max_body: config.max_body,
    };
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    // `app` (and with it every writer handle) is gone now: the writer drains
    // its queue, commits and exits.
    tokio::task::spawn_blocking(move || writer.join()).await.ok();
    result
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))
}
