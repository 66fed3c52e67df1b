//! The single database writer. Request handlers hand verified messages to
//! it; it checks anti-replay, stores and processes them, and commits them in
//! batches (group commit: one fsync for many messages). Each request is
//! answered only after the batch holding it committed, so a 200 always means
//! "on disk". Timer sweeps and admin commands go through the same queue, so
//! nothing else ever writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::body::Bytes;
use kattila_proto::{ReplayError, ReplayWindow, Verified};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, store};
use crate::metrics::Metrics;
use crate::process::{Processor, Settings};

/// What the writer reports back for one message.
#[derive(Debug)]
pub enum Outcome {
    Committed,
    Replay { agent_id: String, reason: ReplayError },
    Failed,
}

/// An administrator's request.
#[derive(Debug)]
pub enum AdminCommand {
    /// Forget topology state and alarms of one agent (or all).
    Reset { agent: Option<String> },
    /// Acknowledge one alarm.
    Ack { alarm_id: i64 },
}

enum Job {
    Message { verified: Verified, raw: Bytes, received_at: i64, reply: oneshot::Sender<Outcome> },
    Sweep { now: i64 },
    Admin { command: AdminCommand, now: i64, reply: oneshot::Sender<Option<usize>> },
}

/// Handle used by request handlers and timers. Cloning is cheap.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Queues a message and waits until its batch is committed (or refused).
    pub async fn submit(
        &self,
        verified: Verified,
        raw: Bytes,
        received_at: i64,
    ) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job::Message { verified, raw, received_at, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Queues timer work (silent agents, retention).
    pub async fn sweep(&self, now: i64) -> bool {
        self.tx.send(Job::Sweep { now }).await.is_ok()
    }

    /// Runs an admin command after everything queued before it. `None` when
    /// the writer is gone or the commit failed; else the count it affected
    /// (agents reset, alarms acknowledged).
    pub async fn admin(&self, command: AdminCommand, now: i64) -> Option<usize> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job::Admin { command, now, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
}

/// The running writer thread; joining it drains and commits what is queued.
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Opens the database and starts the writer thread.
    pub fn start(
        db_path: &Path,
        max_batch: usize,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Writer, WriterHandle)> {
        let conn = db::open(db_path)?;
        // Bounded: when the disk falls behind, handlers wait instead of
        // piling up memory.
        let (tx, rx) = mpsc::channel(max_batch * 8);
        let state =
            WriterState { windows: HashMap::new(), processor: Processor::new(settings), metrics };
        let thread = std::thread::Builder::new()
            .name("kattila-writer".into())
            .spawn(move || run(conn, rx, max_batch, state))?;
        Ok((Writer { thread }, WriterHandle { tx }))
    }

    /// Waits for the writer to finish; it does once every handle is dropped
    /// and the queue is empty.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

struct WriterState {
    /// Replay windows of agents seen since start; loaded from the database
    /// on first use so the persisted state is the authority.
    windows: HashMap<String, ReplayWindow>,
    processor: Processor,
    metrics: Arc<Metrics>,
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    mut state: WriterState,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcomes = commit_batch(&mut conn, &mut state, &batch);
        state.metrics.record_batch(batch.len(), started.elapsed());
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            match (job, outcome) {
                (Job::Message { reply, .. }, JobOutcome::Message(o)) => {
                    let _ = reply.send(o);
                }
                (Job::Admin { reply, .. }, JobOutcome::Admin(n)) => {
                    let _ = reply.send(n);
                }
                _ => {}
            }
        }
    }
}

enum JobOutcome {
    Message(Outcome),
    Admin(Option<usize>),
    Sweep,
}

fn failed(job: &Job) -> JobOutcome {
    match job {
        Job::Message { .. } => JobOutcome::Message(Outcome::Failed),
        Job::Admin { .. } => JobOutcome::Admin(None),
        Job::Sweep { .. } => JobOutcome::Sweep,
    }
}

/// Commits one batch; returns one outcome per job, in order.
fn commit_batch(conn: &mut Connection, state: &mut WriterState, batch: &[Job]) -> Vec<JobOutcome> {
    // Windows changed by this batch; merged into the cache only after the
    // commit succeeded, so a failed commit leaves the cache truthful.
    let mut touched: HashMap<String, ReplayWindow> = HashMap::new();
    let mut any_failed = false;
    let result = (|| -> rusqlite::Result<Vec<JobOutcome>> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            let sp = tx.savepoint()?;
            let outcome = apply(&sp, state, &mut touched, job);
            match outcome {
                Ok(
                    o @ (JobOutcome::Message(Outcome::Committed)
                    | JobOutcome::Admin(_)
                    | JobOutcome::Sweep),
                ) => {
                    sp.commit()?;
                    outcomes.push(o);
                }
                Ok(other) => outcomes.push(other),
                Err(e) => {
                    tracing::error!(error = %e, "writing to the database failed; the job is refused");
                    any_failed = true;
                    outcomes.push(failed(job));
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    if any_failed {
        // A rolled-back savepoint may have left processing caches ahead of the
        // database; they reload from disk on next use.
        state.processor.invalidate();
    }
    match result {
        Ok(outcomes) => {
            state.windows.extend(touched);
            outcomes
        }
        Err(e) => {
            tracing::error!(error = %e, batch = batch.len(), "committing a batch failed");
            state.processor.invalidate();
            batch.iter().map(failed).collect()
        }
    }
}

fn apply(
    conn: &Connection,
    state: &mut WriterState,
    touched: &mut HashMap<String, ReplayWindow>,
    job: &Job,
) -> rusqlite::Result<JobOutcome> {
    match job {
        Job::Message { verified, raw, received_at, .. } => {
            apply_message(conn, state, touched, verified, raw, *received_at)
                .map(JobOutcome::Message)
        }
        Job::Sweep { now } => state.processor.sweep(conn, *now).map(|_| JobOutcome::Sweep),
        Job::Admin { command, now, .. } => {
            let n = match command {
                AdminCommand::Reset { agent } => state.processor.reset(conn, agent.as_deref())?,
                AdminCommand::Ack { alarm_id } => {
                    state.processor.ack(conn, *alarm_id, *now)? as usize
                }
            };
            Ok(JobOutcome::Admin(Some(n)))
        }
    }
}

/// Checks anti-replay for every layer, then stores and processes the
/// message. Window changes go to `touched` only when every layer passed.
fn apply_message(
    conn: &Connection,
    state: &mut WriterState,
    touched: &mut HashMap<String, ReplayWindow>,
    verified: &Verified,
    raw: &[u8],
    received_at: i64,
) -> rusqlite::Result<Outcome> {
    let mut updated = Vec::with_capacity(verified.layers.len());
    for layer in &verified.layers {
        let cached = touched.get(&layer.agent_id).or_else(|| state.windows.get(&layer.agent_id));
        let mut window = match cached {
            Some(w) => w.clone(),
            None => store::load_replay_window(conn, &layer.agent_id)?,
        };
        if let Err(reason) = window.check(layer.tick, &layer.nonce) {
            return Ok(Outcome::Replay { agent_id: layer.agent_id.clone(), reason });
        }
        let dropped = window.record(layer.tick, layer.nonce);
        store::record_replay(conn, layer, &window, &dropped)?;
        updated.push((layer.agent_id.clone(), window));
    }
    store::upsert_agent(conn, verified, received_at)?;
    let keep_raw = state.processor.apply(conn, verified, received_at)?;
    store::insert_report(conn, verified, raw, keep_raw, received_at)?;
    touched.extend(updated);
    Ok(Outcome::Committed)
}
