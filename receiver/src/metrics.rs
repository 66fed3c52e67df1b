//! Counters for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kattila_keysource::KeyStatus;

const LATENCY_BUCKETS_MS: [f64; 10] = [0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];
const DELIVERY_BUCKETS_S: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0, 3600.0];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if value <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micro.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ =
                writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// Process-wide counters, shared by handlers and the writer.
#[derive(Debug)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    batch_size: Histogram,
    commit_ms: Histogram,
    connections: AtomicU64,
    head_timeouts: AtomicU64,
    send_timeouts: AtomicU64,
    /// Notification messages by channel: queued, sent, failed attempts,
    /// dead-lettered.
    notify: Mutex<BTreeMap<String, [u64; 4]>>,
    /// From the outbox write to the channel's acceptance.
    delivery_seconds: Histogram,
}

/// What happened to a notification message.
#[derive(Debug, Clone, Copy)]
pub enum Delivered {
    Sent,
    Failed,
    Dead,
}

/// Where a connection timed out.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// No complete request head in time (idle keep-alive included).
    Head,
    /// The client did not read its answer in time.
    Send,
}

/// Counts one open connection until dropped.
pub struct OpenConnection<'a>(&'a Metrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            commit_ms: Histogram::new(&LATENCY_BUCKETS_MS),
            connections: AtomicU64::new(0),
            head_timeouts: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
            notify: Mutex::new(BTreeMap::new()),
            delivery_seconds: Histogram::new(&DELIVERY_BUCKETS_S),
        }
    }
}

impl Metrics {
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, code: &'static str) {
        *self.rejected.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
    }

    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// A connection closed by a transport timeout.
    pub fn timeout(&self, phase: Phase) {
        match phase {
            Phase::Head => &self.head_timeouts,
            Phase::Send => &self.send_timeouts,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A notification message written to the outbox for `channel`.
    pub fn notify_queued(&self, channel: &str) {
        self.notify_count(channel, 0);
    }

    /// An attempt at a message for `channel`; `latency` from its outbox
    /// write to its delivery, when sent.
    pub fn notify_attempt(&self, channel: &str, what: Delivered, latency: Option<Duration>) {
        match what {
            Delivered::Sent => self.notify_count(channel, 1),
            Delivered::Failed => self.notify_count(channel, 2),
            Delivered::Dead => {
                self.notify_count(channel, 2);
                self.notify_count(channel, 3);
            }
        }
        if let Some(l) = latency {
            self.delivery_seconds.observe(l.as_secs_f64());
        }
    }

    fn notify_count(&self, channel: &str, which: usize) {
        let mut map = self.notify.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.to_string()).or_default()[which] += 1;
    }

    pub fn record_batch(&self, size: usize, elapsed: Duration) {
        self.batch_size.observe(size as f64);
        self.commit_ms.observe(elapsed.as_secs_f64() * 1000.0);
    }

    /// The exposition text; `alarms` are active alarm counts by kind,
    /// `body_bytes` the memory held by request bodies being received.
    pub fn render(
        &self,
        keys: &KeyStatus,
        alarms: &[(String, i64)],
        agents: i64,
        body_bytes: usize,
        outbox: &[(String, String, i64)],
    ) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "# HELP kattila_reports_accepted_total Messages verified and committed.");
        let _ = writeln!(out, "# TYPE kattila_reports_accepted_total counter");
        let _ = writeln!(
            out,
            "kattila_reports_accepted_total {}",
            self.accepted.load(Ordering::Relaxed)
        );
        let _ =
            writeln!(out, "# HELP kattila_reports_rejected_total Messages refused, by error code.");
        let _ = writeln!(out, "# TYPE kattila_reports_rejected_total counter");
        for (code, n) in self.rejected.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "kattila_reports_rejected_total{{reason=\"{code}\"}} {n}");
        }
        self.batch_size.render(&mut out, "kattila_batch_size", "Jobs per committed transaction.");
        self.commit_ms.render(
            &mut out,
            "kattila_commit_milliseconds",
            "Time to apply and commit one batch.",
        );
        let _ = writeln!(out, "# HELP kattila_http_connections Open HTTP connections.\n# TYPE kattila_http_connections gauge");
        let _ =
            writeln!(out, "kattila_http_connections {}", self.connections.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP kattila_http_timeouts_total Connections closed by a timeout: no complete request head in time (idle keep-alive connections included), or an answer left unread.\n# TYPE kattila_http_timeouts_total counter");
        let _ = writeln!(
            out,
            "kattila_http_timeouts_total{{phase=\"head\"}} {}",
            self.head_timeouts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "kattila_http_timeouts_total{{phase=\"send\"}} {}",
            self.send_timeouts.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP kattila_body_budget_bytes Memory held by request bodies being received or handled.\n# TYPE kattila_body_budget_bytes gauge\nkattila_body_budget_bytes {body_bytes}");
        let _ = writeln!(out, "# HELP kattila_alarms_active Active alarms by kind.\n# TYPE kattila_alarms_active gauge");
        for (kind, n) in alarms {
            let _ = writeln!(out, "kattila_alarms_active{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP kattila_agents Agents known.\n# TYPE kattila_agents gauge\nkattila_agents {agents}");
        let _ = writeln!(out, "# HELP kattila_keys Fleet keys accepted (current + previous).\n# TYPE kattila_keys gauge");
        let _ = writeln!(out, "kattila_keys{{source=\"{}\"}} {}", keys.source, keys.keys);
        let _ = writeln!(out, "# HELP kattila_key_refresh_ok 1 when the last key lookup succeeded.\n# TYPE kattila_key_refresh_ok gauge");
        let _ = writeln!(out, "kattila_key_refresh_ok {}", u8::from(!keys.degraded()));
        let _ = writeln!(out, "# HELP kattila_key_refresh_failures_total Failed key lookups.\n# TYPE kattila_key_refresh_failures_total counter");
        let _ = writeln!(out, "kattila_key_refresh_failures_total {}", keys.failures);
        let _ = writeln!(out, "# HELP kattila_key_rotations_total Key changes seen.\n# TYPE kattila_key_rotations_total counter");
        let _ = writeln!(out, "kattila_key_rotations_total {}", keys.rotations);
        let _ = writeln!(out, "# HELP kattila_notifications_total Notification messages by channel: queued (written to the outbox), sent, failed (attempts), dead (given up after the last try).\n# TYPE kattila_notifications_total counter");
        for (channel, n) in self.notify.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (what, v) in ["queued", "sent", "failed", "dead"].iter().zip(n) {
                let _ = writeln!(
                    out,
                    "kattila_notifications_total{{channel=\"{channel}\",outcome=\"{what}\"}} {v}"
                );
            }
        }
        let _ = writeln!(out, "# HELP kattila_notifications_outbox Messages in the outbox by channel and state.\n# TYPE kattila_notifications_outbox gauge");
        for (channel, state, n) in outbox {
            let _ = writeln!(
                out,
                "kattila_notifications_outbox{{channel=\"{channel}\",state=\"{state}\"}} {n}"
            );
        }
        self.delivery_seconds.render(
            &mut out,
            "kattila_notification_delivery_seconds",
            "From a message's outbox write to its channel accepting it.",
        );
        if let Some(t) = keys.last_success {
            let _ = writeln!(out, "# HELP kattila_key_last_success_timestamp_seconds Last successful key lookup.\n# TYPE kattila_key_last_success_timestamp_seconds gauge");
            let _ = writeln!(out, "kattila_key_last_success_timestamp_seconds {t}");
        }
        out
    }
}
