//! Runs the receiver: key refresh, the writer thread, the timer sweeps and
//! the HTTP server, with a graceful shutdown that commits everything
//! already accepted.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kattila_keysource::{refresh_forever, KeyRing};
use tokio::net::TcpListener;

use crate::api::{router, AppState};
use crate::body::{BodyBudget, BodyLimits};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Live;
use crate::transport::TransportLimits;
use crate::writer::{Notifications, Writer};

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// finishes in-flight requests and lets the writer commit its queue.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let notifications =
        Notifications { live: config.notify.clone(), wake: Arc::new(tokio::sync::Notify::new()) };
    let (writer, handle) = Writer::start_with(
        &config.db_path,
        config.max_batch,
        config.settings.clone(),
        metrics.clone(),
        notifications.clone(),
    )?;
    // Delivery runs whatever the configuration: an outbox left by an
    // earlier run is sent once a configuration names its channels.
    let delivery = tokio::spawn(crate::delivery::run(
        config.db_path.clone(),
        notifications.live.clone(),
        handle.clone(),
        notifications.wake.clone(),
        metrics.clone(),
    ));
    let reloader = tokio::spawn(reload_on_hangup(notifications.live.clone()));
    let keys = KeyRing::open(&config.keys, config.key_state.as_deref());
    let refresher = tokio::spawn(refresh_forever(keys.clone(), config.keys.clone()));
    let sweeper = {
        let handle = handle.clone();
        let period = Duration::from_secs_f64(config.sweep_secs.max(0.05));
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                if !handle.sweep(crate::unix_now()).await {
                    break;
                }
            }
        })
    };
    let shutting_down = Arc::new(AtomicBool::new(false));
    let state = AppState {
        keys,
        writer: handle,
        body_limits: BodyLimits {
            max_bytes: config.max_body,
            timeout: config.body_timeout,
            min_rate: config.body_min_rate,
        },
        body_budget: BodyBudget::new(config.body_budget),
        db_path: config.db_path.clone(),
        admin_token: config.admin_token.clone(),
        notify: notifications.live.clone(),
        metrics: metrics.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        shutting_down: shutting_down.clone(),
    };
    let app = router(state);
    let limits = TransportLimits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
    };
    crate::transport::serve(listener, app, limits, metrics, async move {
        shutdown.await;
        shutting_down.store(true, Ordering::Release);
    })
    .await;
    // The router (and its writer handles) is gone; stop the timers so the
    // last handle drops, then the writer drains its queue, commits and exits.
    sweeper.abort();
    refresher.abort();
    delivery.abort();
    reloader.abort();
    let _ = sweeper.await;
    let _ = delivery.await;
    tokio::task::spawn_blocking(move || writer.join()).await.ok();
    Ok(())
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))
}

/// Reads the notification configuration again on SIGHUP; a bad file is
/// logged and the configuration in use kept.
async fn reload_on_hangup(live: Live) {
    let Some(path) = live.path.clone() else { return };
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: the notification configuration is not reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match live.reload() {
            Ok(()) => tracing::info!(file = %path.display(), "notification configuration reloaded"),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "notification configuration not reloaded; the one in use stays"
            ),
        }
    }
}
