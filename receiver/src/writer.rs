//! The single database writer. Request handlers hand verified messages to
//! it; it checks anti-replay and commits them in batches (group commit: one
//! fsync for many messages) and answers each request only after the batch
//! holding it committed. A 200 therefore always means "on disk".

use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;

use axum::body::Bytes;
use kattila_proto::{ReplayError, ReplayWindow, Verified};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, store};

/// What the writer reports back for one message.
#[derive(Debug)]
pub enum Outcome {
    Committed,
    Replay { agent_id: String, reason: ReplayError },
    Failed,
}

struct Job {
    verified: Verified,
    /// The request body, kept as received for the audit table.
    raw: Bytes,
    received_at: i64,
    reply: oneshot::Sender<Outcome>,
}

/// Handle used by request handlers. Cloning is cheap.
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
        self.tx.send(Job { verified, raw, received_at, reply }).await.ok()?;
        answer.await.ok()
    }
}

/// The running writer thread; joining it drains and commits what is queued.
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Opens the database and starts the writer thread.
    pub fn start(db_path: &Path, max_batch: usize) -> anyhow::Result<(Writer, WriterHandle)> {
        let conn = db::open(db_path)?;
        // Bounded: when the disk falls behind, handlers wait instead of
        // piling up memory.
        let (tx, rx) = mpsc::channel(max_batch * 8);
        let thread = std::thread::Builder::new()
            .name("kattila-writer".into())
            .spawn(move || run(conn, rx, max_batch))?;
        Ok((Writer { thread }, WriterHandle { tx }))
    }

    /// Waits for the writer to finish; it does once every handle is dropped
    /// and the queue is empty.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    // Replay windows of agents seen since start; loaded from the database on
    // first use so the persisted state is the authority.
    let mut windows: HashMap<String, ReplayWindow> = HashMap::new();
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = commit_batch(&mut conn, &mut windows, &batch);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Commits one batch; returns one outcome per job, in order.
fn commit_batch(
    conn: &mut Connection,
    windows: &mut HashMap<String, ReplayWindow>,
    batch: &[Job],
) -> Vec<Outcome> {
    // Windows changed by this batch; merged into `windows` only after the
    // commit succeeded, so a failed commit leaves the cache truthful.
    let mut touched: HashMap<String, ReplayWindow> = HashMap::new();
    let result = (|| -> rusqlite::Result<Vec<Outcome>> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            let sp = tx.savepoint()?;
            let outcome = apply(&sp, windows, &mut touched, job);
            match outcome {
                Ok(Outcome::Committed) => {
                    sp.commit()?;
                    outcomes.push(Outcome::Committed);
                }
                Ok(other) => outcomes.push(other),
                Err(e) => {
                    tracing::error!(error = %e, "storing a message failed");
                    outcomes.push(Outcome::Failed);
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    match result {
        Ok(outcomes) => {
            windows.extend(touched);
            outcomes
        }
        Err(e) => {
            tracing::error!(error = %e, batch = batch.len(), "committing a batch failed");
            batch.iter().map(|_| Outcome::Failed).collect()
        }
    }
}

/// Checks anti-replay for every layer, then stores the message. Window
/// changes go to `touched` (and persist through the savepoint) only when
/// every layer passed.
fn apply(
    conn: &Connection,
    windows: &HashMap<String, ReplayWindow>,
    touched: &mut HashMap<String, ReplayWindow>,
    job: &Job,
) -> rusqlite::Result<Outcome> {
    let mut updated = Vec::with_capacity(job.verified.layers.len());
    for layer in &job.verified.layers {
        let mut window = match touched.get(&layer.agent_id).or_else(|| windows.get(&layer.agent_id))
        {
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
    store::store_message(conn, &job.verified, &job.raw, job.received_at)?;
    touched.extend(updated);
    Ok(Outcome::Committed)
}
