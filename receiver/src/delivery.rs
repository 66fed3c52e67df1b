//! The delivery worker: sends what the notification outbox holds, on its
//! own task, apart from ingest. It reads due messages with a read-only
//! connection (WAL readers never block the writer), sends each with a
//! timeout — a few at once per channel, so a channel that hangs holds up
//! only itself — and records every attempt through the writer's queue:
//! sent, retried later (exponential backoff with jitter) or, after the last
//! try, dead-lettered.
//!
//! At least once: a message is marked sent only after its channel accepted
//! it, so a crash between the two sends it again with the same idempotency
//! key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kattila_store::notify::{Attempt, OutboxItem};
use rand::Rng;
use tokio::sync::mpsc;

use crate::metrics::{Delivered, Metrics};
use crate::notify::config::Delivery;
use crate::notify::message::Message;
use crate::notify::{channels, Live};
use crate::writer::WriterHandle;

/// How often due messages are looked for when nothing wakes the worker.
const POLL: Duration = Duration::from_millis(500);
/// The outbox is read at most this often: under load the writer wakes the
/// worker after nearly every batch, and reading the queue each time took
/// CPU from ingest (about 10 % of the committed rate with a channel that
/// hangs and hundreds of messages queued behind it).
const MIN_READ_GAP: Duration = Duration::from_millis(100);

/// Runs until the writer stops.
pub async fn run(
    db_path: PathBuf,
    live: Live,
    writer: WriterHandle,
    wake: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notifications: no HTTP client; nothing is delivered");
            return;
        }
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i64, String)>();
    let mut in_flight: BTreeSet<i64> = BTreeSet::new();
    let mut per_channel: BTreeMap<String, usize> = BTreeMap::new();
    // When each rate-limited channel may send next.
    let mut next_slot: BTreeMap<String, Instant> = BTreeMap::new();
    // One read connection for the worker's life, not one per wake-up: the
    // writer wakes it after every batch that queued a message.
    let mut reader: Option<rusqlite::Connection> = None;
    let mut last_read = Instant::now() - MIN_READ_GAP;
    loop {
        if !writer.is_running() {
            return;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            Some((id, channel)) = done_rx.recv() => {
                in_flight.remove(&id);
                if let Some(n) = per_channel.get_mut(&channel) { *n = n.saturating_sub(1); }
                while let Ok((id, channel)) = done_rx.try_recv() {
                    in_flight.remove(&id);
                    if let Some(n) = per_channel.get_mut(&channel) { *n = n.saturating_sub(1); }
                }
            }
        }
        let Some(config) = live.get() else { continue };
        let since = last_read.elapsed();
        if since < MIN_READ_GAP {
            tokio::time::sleep(MIN_READ_GAP - since).await;
        }
        last_read = Instant::now();
        let due_at = now_ms();
        let path = db_path.clone();
        let open = reader.take();
        let due = tokio::task::spawn_blocking(move || {
            let conn = match open {
                Some(conn) => conn,
                None => kattila_store::open_read_only(&path)?,
            };
            let due = kattila_store::notify::due(&conn, due_at, 500)?;
            anyhow::Ok((conn, due))
        })
        .await;
        let due = match due {
            Ok(Ok((conn, d))) => {
                reader = Some(conn);
                d
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "notifications: reading the outbox failed"
                );
                continue;
            }
            Err(_) => continue,
        };
        for item in due {
            if in_flight.contains(&item.id) {
                continue;
            }
            let busy = per_channel.get(&item.channel).copied().unwrap_or(0);
            if busy >= config.delivery.concurrency {
                continue;
            }
            let Some(channel) = config.channels.get(&item.channel).cloned() else {
                // Removed from the configuration: nothing can send it.
                let writer = writer.clone();
                let attempt = Attempt::Dead {
                    error: format!("channel {:?} is not configured", item.channel),
                };
                metrics.notify_attempt(&item.channel, Delivered::Dead, None);
                in_flight.insert(item.id);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    writer.record_delivery(item.id, attempt).await;
                    let _ = done.send((item.id, item.channel));
                });
                continue;
            };
            if let Some(limit) = channel.rate_limit {
                let now = Instant::now();
                let slot = next_slot.entry(item.channel.clone()).or_insert(now);
                if *slot > now {
                    continue;
                }
                *slot = now.max(*slot) + limit.spacing();
            }
            in_flight.insert(item.id);
            *per_channel.entry(item.channel.clone()).or_default() += 1;
            let (writer, metrics, client, done) =
                (writer.clone(), metrics.clone(), client.clone(), done_tx.clone());
            let public_url = config.public_url.clone();
            let policy = config.delivery.clone();
            tokio::spawn(async move {
                let id = item.id;
                let name = item.channel.clone();
                let attempt =
                    attempt(&client, &channel, &item, public_url.as_deref(), &policy).await;
                let outcome = match &attempt {
                    Attempt::Sent { .. } => Delivered::Sent,
                    Attempt::Retry { .. } => Delivered::Failed,
                    Attempt::Dead { .. } => Delivered::Dead,
                };
                let latency = matches!(outcome, Delivered::Sent).then(|| {
                    Duration::from_millis((now_ms() - item.created_at * 1000).max(0) as u64)
                });
                metrics.notify_attempt(&name, outcome, latency);
                if let Attempt::Retry { error, .. } | Attempt::Dead { error } = &attempt {
                    tracing::warn!(channel = %name, key = %item.event_key, tries = item.tries + 1, error = %error, "notification not delivered");
                }
                writer.record_delivery(id, attempt).await;
                let _ = done.send((id, name));
            });
        }
    }
}

/// One attempt at `item`, and what to record of it.
async fn attempt(
    client: &reqwest::Client,
    channel: &crate::notify::config::Channel,
    item: &OutboxItem,
    public_url: Option<&str>,
    policy: &Delivery,
) -> Attempt {
    let message: Message = match serde_json::from_str(&item.payload) {
        Ok(m) => m,
        Err(e) => return Attempt::Dead { error: format!("unreadable payload: {e}") },
    };
    let message = message.for_channel(channel.private, public_url);
    // The channel's own timeout, and a little more for the whole attempt
    // (connection set-up, an SMTP dialogue).
    let limit = channel.timeout + Duration::from_secs(1);
    let result = match tokio::time::timeout(limit, channels::send(client, channel, &message)).await
    {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("timed out after {} s", limit.as_secs())),
    };
    match result {
        Ok(()) => Attempt::Sent { at: crate::unix_now() },
        Err(e) => {
            let error = format!("{e:#}");
            let tries = item.tries + 1;
            if tries >= i64::from(policy.max_tries) {
                Attempt::Dead { error }
            } else {
                Attempt::Retry {
                    next_try_ms: now_ms() + backoff(policy, tries).as_millis() as i64,
                    error,
                }
            }
        }
    }
}

/// Unix milliseconds: due times are finer than seconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wait before try `tries + 1`: `retry_base` doubled per try up to
/// `retry_max`, then between 75 % and 125 % of that so that messages that
/// failed together do not retry together.
pub fn backoff(policy: &Delivery, tries: i64) -> Duration {
    let base = policy.retry_base.0.as_secs_f64().max(0.01);
    let exp = base * 2f64.powi((tries - 1).clamp(0, 30) as i32);
    let capped = exp.min(policy.retry_max.0.as_secs_f64().max(base));
    Duration::from_secs_f64(capped * rand::rng().random_range(0.75..1.25))
}
