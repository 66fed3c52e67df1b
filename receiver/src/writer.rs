//! The single database writer. Request handlers hand verified messages to
//! it; it checks anti-replay, stores and processes them, and commits them in
//! batches (group commit: one fsync for many messages). Each request is
//! answered only after the batch holding it committed, so a 200 always means
//! "on disk". Timer sweeps and admin commands go through the same queue, so
//! nothing else ever writes. When notifications are configured, a batch
//! that moved an alarm (and every sweep) also decides its messages
//! (`notify::decide`) and writes them to the outbox before it commits; the
//! delivery worker records its attempts through this queue too.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::body::Bytes;
use foldhash::{HashMap, HashMapExt};
use kattila_proto::{ReplayError, ReplayWindow, Verified};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::notify::Live;
use crate::process::{AlarmKind, Processor, Settings};
use kattila_store::audit as store;
use kattila_store::checkpoint::{self, Checkpointer};

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
    Reset {
        agent: Option<String>,
    },
    /// Acknowledge one alarm.
    Ack {
        alarm_id: i64,
    },
    /// Acknowledge one incident.
    AckIncident {
        incident_id: i64,
    },
    /// Add a silence; the count is its id.
    AddSilence {
        silence: kattila_store::notify::SilenceRow,
    },
    /// End a silence now.
    ExpireSilence {
        id: i64,
    },
    /// Add a maintenance window (its JSON form); the count is its id.
    AddWindow {
        spec: serde_json::Value,
    },
    DeleteWindow {
        id: i64,
    },
    /// Queue a test message for one channel; the count is its outbox id.
    TestMessage {
        channel: String,
        event_key: String,
        payload: String,
    },
}

enum Job {
    Message {
        verified: Verified,
        raw: Bytes,
        received_at: i64,
        /// Gets the message back with the outcome: a report is hundreds of
        /// small allocations, and freeing them on the handler's thread
        /// keeps that work off the writer, the one thread that limits ingest.
        reply: oneshot::Sender<(Outcome, Verified)>,
    },
    Sweep {
        now: i64,
    },
    Admin {
        command: AdminCommand,
        now: i64,
        reply: oneshot::Sender<Option<usize>>,
    },
    /// The delivery worker's attempt at one outbox message.
    Delivery {
        id: i64,
        attempt: kattila_store::notify::Attempt,
        reply: oneshot::Sender<bool>,
    },
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
        answer.await.ok().map(|(outcome, _message)| outcome)
    }

    /// False once the writer thread has stopped (it then accepts nothing).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
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

    /// Records a delivery attempt; false when it was not committed (the
    /// message stays queued and is tried again: at least once).
    pub async fn record_delivery(&self, id: i64, attempt: kattila_store::notify::Attempt) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Job::Delivery { id, attempt, reply }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// What the writer needs for notifications: the configuration in use and
/// the delivery worker's wake-up.
#[derive(Clone, Default)]
pub struct Notifications {
    pub live: Live,
    pub wake: Arc<tokio::sync::Notify>,
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
        Self::start_with(db_path, max_batch, settings, metrics, Notifications::default())
    }

    /// [`Writer::start`] with notifications.
    pub fn start_with(
        db_path: &Path,
        max_batch: usize,
        settings: Settings,
        metrics: Arc<Metrics>,
        notifications: Notifications,
    ) -> anyhow::Result<(Writer, WriterHandle)> {
        let conn = kattila_store::open(db_path)?;
        checkpoint::disable_automatic(&conn)?;
        let checkpointer = Checkpointer::start(db_path)?;
        // Bounded: when the disk falls behind, handlers wait instead of
        // piling up memory.
        let (tx, rx) = mpsc::channel(max_batch * 8);
        let mut state = WriterState {
            windows: HashMap::new(),
            processor: Processor::new(settings),
            metrics,
            fleet_changed: false,
            notifications,
            notify_wanted: false,
            queued: Vec::new(),
        };
        // The fleet-wide state (topology, alarms) before the first request,
        // not inside its batch: after a restart with thousands of agents it
        // takes a few hundred milliseconds, which the first batch's
        // requests would otherwise wait. A failure here is retried on first
        // use, as after any failed batch.
        let started = Instant::now();
        match load_known(&conn, &mut state.processor, None)
            .and_then(|()| load_agents(&conn, &mut state))
        {
            Ok(()) => tracing::info!(
                agents = state.windows.len(),
                seconds = started.elapsed().as_secs_f64(),
                "fleet state loaded"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "loading the fleet's state failed; retried on first use");
                state.processor.invalidate();
                state.windows.clear();
            }
        }
        let thread = std::thread::Builder::new()
            .name("kattila-writer".into())
            .spawn(move || run(conn, rx, max_batch, state, checkpointer))?;
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
    /// on first use so the persisted state is the authority, changed in
    /// place, and all dropped when a batch fails to commit.
    windows: HashMap<String, ReplayWindow>,
    processor: Processor,
    metrics: Arc<Metrics>,
    /// A job of the current batch changed what the dashboard shows.
    fleet_changed: bool,
    notifications: Notifications,
    /// A job of the current batch moved an alarm, or was a sweep or an
    /// admin command: notifications are decided before the commit.
    notify_wanted: bool,
    /// Channels of the messages the current batch queued.
    queued: Vec<String>,
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    mut state: WriterState,
    checkpointer: Checkpointer,
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
                (Job::Message { reply, verified, .. }, JobOutcome::Message(o)) => {
                    let _ = reply.send((o, verified));
                }
                (Job::Admin { reply, .. }, JobOutcome::Admin(n)) => {
                    let _ = reply.send(n);
                }
                (Job::Delivery { reply, .. }, JobOutcome::Delivery(ok)) => {
                    let _ = reply.send(ok);
                }
                _ => {}
            }
        }
        // Answers are out; the next batch waits for this copy, which is
        // short because the checkpointer has copied all but the newest frames.
        checkpoint::help(&conn, &checkpointer.rewind_wanted);
    }
    // The checkpointer's connection closes first; closing the writer's, the
    // last one, checkpoints the rest and removes the WAL.
    drop(checkpointer);
}

enum JobOutcome {
    Message(Outcome),
    Admin(Option<usize>),
    Sweep,
    Delivery(bool),
}

fn failed(job: &Job) -> JobOutcome {
    match job {
        Job::Message { .. } => JobOutcome::Message(Outcome::Failed),
        Job::Admin { .. } => JobOutcome::Admin(None),
        Job::Sweep { .. } => JobOutcome::Sweep,
        Job::Delivery { .. } => JobOutcome::Delivery(false),
    }
}

/// Commits one batch; returns one outcome per job, in order.
///
/// The batch runs in one transaction without a savepoint per job (the
/// savepoints' page copies cost more than the statements of a report that
/// changed nothing). A refused message writes nothing, so no rollback is
/// needed for it. A database error is rare; then the whole batch is rolled
/// back and every job is retried in a transaction of its own, so one bad job
/// cannot cost the others their commit.
fn commit_batch(conn: &mut Connection, state: &mut WriterState, batch: &[Job]) -> Vec<JobOutcome> {
    match try_commit(conn, state, batch) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, batch = batch.len(), "a batch failed; retrying its jobs one by one");
            batch
                .iter()
                .map(|job| {
                    try_commit(conn, state, std::slice::from_ref(job))
                        .map(|mut o| o.pop().expect("one outcome per job"))
                        .unwrap_or_else(|e| {
                            tracing::error!(error = %e, "writing to the database failed; the job is refused");
                            failed(job)
                        })
                })
                .collect()
        }
    }
}

/// Applies `batch` in one transaction and commits it; on any error nothing
/// is committed and every cache that may have run ahead of the database is
/// dropped (they reload from disk on next use).
fn try_commit(
    conn: &mut Connection,
    state: &mut WriterState,
    batch: &[Job],
) -> rusqlite::Result<Vec<JobOutcome>> {
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        state.fleet_changed = false;
        state.notify_wanted = false;
        state.queued.clear();
        let outcomes =
            batch.iter().map(|job| apply(&tx, state, job)).collect::<rusqlite::Result<Vec<_>>>()?;
        if state.notify_wanted {
            notify(&tx, state)?;
        }
        // Once per batch, so readers (sitegen --watch) can tell a change
        // of the fleet from counters moving.
        if state.fleet_changed {
            store::fleet_changed(&tx)?;
        }
        tx.commit()?;
        if !state.queued.is_empty() {
            for channel in &state.queued {
                state.metrics.notify_queued(channel);
            }
            state.notifications.wake.notify_one();
        }
        Ok(outcomes)
    })();
    if result.is_err() {
        // Rare; everything reloads from the committed state on next use.
        state.windows.clear();
        state.processor.invalidate();
    }
    result
}

fn apply(conn: &Connection, state: &mut WriterState, job: &Job) -> rusqlite::Result<JobOutcome> {
    match job {
        Job::Message { verified, raw, received_at, .. } => {
            apply_message(conn, state, verified, raw, *received_at).map(JobOutcome::Message)
        }
        Job::Sweep { now } => {
            state.fleet_changed |= sweep(conn, &mut state.processor, *now)?;
            state.notify_wanted = true;
            Ok(JobOutcome::Sweep)
        }
        Job::Delivery { id, attempt, .. } => {
            kattila_store::notify::record(conn, *id, attempt)?;
            Ok(JobOutcome::Delivery(true))
        }
        Job::Admin { command, now, .. } => {
            let n = match command {
                AdminCommand::Reset { agent } => {
                    let n = kattila_store::admin::reset(conn, agent.as_deref())?;
                    // What processing knew of the agents is gone from disk.
                    state.processor.invalidate();
                    n
                }
                AdminCommand::Ack { alarm_id } => {
                    kattila_store::admin::ack(conn, *alarm_id, *now)? as usize
                }
                AdminCommand::AckIncident { incident_id } => {
                    kattila_store::admin::ack_incident(conn, *incident_id, *now)? as usize
                }
                AdminCommand::AddSilence { silence } => {
                    kattila_store::notify::add_silence(conn, silence)? as usize
                }
                AdminCommand::ExpireSilence { id } => {
                    kattila_store::notify::expire_silence(conn, *id, *now)? as usize
                }
                AdminCommand::AddWindow { spec } => {
                    kattila_store::notify::add_window(conn, spec, *now)? as usize
                }
                AdminCommand::DeleteWindow { id } => {
                    kattila_store::notify::delete_window(conn, *id)? as usize
                }
                AdminCommand::TestMessage { channel, event_key, payload } => {
                    state.queued.push(channel.clone());
                    kattila_store::notify::enqueue_test(conn, event_key, channel, payload, *now)?
                        as usize
                }
            };
            state.fleet_changed = true;
            state.notify_wanted = true;
            Ok(JobOutcome::Admin(Some(n)))
        }
    }
}

/// Agents heard from within this long before a start are loaded with it;
/// others load at their first report, as after a failed batch.
const LOAD_AT_START_SECS: i64 = 86_400;

/// The state and replay window of every agent heard from lately, before
/// the first request: after a restart the first report of each agent
/// would otherwise wait for its eight lookups, and the first seconds'
/// batches for all of them (10,000 agents: a third of the steady rate in
/// the first second).
fn load_agents(conn: &Connection, state: &mut WriterState) -> rusqlite::Result<()> {
    let since = crate::unix_now() - LOAD_AT_START_SECS;
    let processor = &mut state.processor;
    kattila_store::state::for_each_agent(conn, since, |id, rows| processor.know(&id, rows))?;
    let windows = &mut state.windows;
    kattila_store::audit::load_replay_windows(conn, since, |id, window| {
        windows.insert(id, window);
    })
}

/// How many reports of the message's agent are stored, this one included
/// (`kattila_store::audit::upsert_agent`).
#[derive(Clone, Copy)]
struct ReportCount(i64);

/// Loads what processing needs to know before it can take `verified`: the
/// fleet-wide state once, the message's agent on first sight.
fn load_known(
    conn: &Connection,
    processor: &mut Processor,
    verified: Option<(&Verified, ReportCount)>,
) -> rusqlite::Result<()> {
    if !processor.is_loaded() {
        let mut topology = crate::process::topology::TopologyLoader::default();
        kattila_store::topology::load(conn, &mut topology)?;
        let alarms = kattila_store::alarms::load(conn)?;
        processor.load(topology.finish(), alarms);
    }
    if let Some((verified, ReportCount(reports))) = verified {
        let origin = verified.origin().agent_id.as_str();
        if !processor.knows(origin) {
            let rows = if reports <= 1 {
                // Its first report (or a registration): state is written
                // only by processing a report, so there is none to read.
                // A new fleet's agents each save five lookups.
                kattila_store::state::AgentRows {
                    hostname: (reports == 1).then(|| verified.message.hostname().to_string()),
                    ..Default::default()
                }
            } else {
                kattila_store::state::load_agent(conn, origin)?
            };
            processor.know(origin, rows);
        }
    }
    Ok(())
}

/// Processes an accepted message and writes what it changed. Returns
/// whether its raw copy is kept for the audit, whether it changed what
/// the dashboard shows, and whether it raised or resolved an alarm.
fn process(
    conn: &Connection,
    processor: &mut Processor,
    verified: &Verified,
    reports: ReportCount,
    now: i64,
) -> rusqlite::Result<(bool, bool, bool)> {
    load_known(conn, processor, Some((verified, reports)))?;
    let moved = processor.moved_keys(verified);
    let listings = if moved.is_empty() {
        Vec::new()
    } else {
        kattila_store::topology::peers_listing(conn, &moved)?
    };
    let processed = processor.apply(verified, &listings, now);
    kattila_store::apply(conn, &processed.changes)?;
    let moved = processed.changes.alarms.iter().any(crate::process::alarms::is_transition);
    Ok((processed.keep_raw, processed.visible, moved))
}

/// Decides the messages of what this batch changed (and of what time did:
/// holds passed, windows closed, silences expired) and writes them to the
/// outbox, in the batch's transaction.
fn notify(conn: &Connection, state: &mut WriterState) -> rusqlite::Result<()> {
    let Some(config) = state.notifications.live.get() else { return Ok(()) };
    let now = crate::unix_now();
    let inputs = kattila_store::notify::load(conn, now)?;
    let changes = crate::notify::decide::decide(&config, &inputs, now);
    for change in &changes {
        if let kattila_store::notify::NotifyChange::Enqueue { channel, .. } = change {
            state.queued.push(channel.clone());
        }
    }
    kattila_store::notify::apply(conn, &changes)?;
    // A subject's told state outlives its resolve by the minimum gap (and
    // a day, for the dashboard's "notified" column to find nothing stale).
    let keep = config.noise.longest() + 86_400;
    kattila_store::notify::forget_told(conn, now - keep)?;
    Ok(())
}

/// Timer work: silent agents, expiring events, incidents, retention.
/// Returns whether what the dashboard shows changed.
fn sweep(conn: &Connection, processor: &mut Processor, now: i64) -> rusqlite::Result<bool> {
    load_known(conn, processor, None)?;
    let silent = store::mark_silent(conn, processor.settings.silent_before(now))?;
    let changes = processor.silent(&silent, now);
    kattila_store::apply(conn, &changes)?;
    let visible = !changes.silenced.is_empty()
        || changes.alarms.iter().any(crate::process::alarms::is_transition);
    let events = AlarmKind::EVENTS.map(AlarmKind::as_str);
    let seen_before = now - processor.settings.event_ttl_secs;
    let expired = kattila_store::alarms::expire(conn, &events, seen_before, now)?;
    processor.expired(&expired);
    // After the statuses above, so incidents group what holds now.
    let inputs = kattila_store::incidents::load(conn)?;
    let found = crate::process::incidents::find(&inputs);
    let (incidents, incidents_changed) =
        crate::process::incidents::changes(found, &inputs.active, now);
    kattila_store::incidents::apply(conn, &incidents)?;
    kattila_store::admin::retain(conn, &processor.settings.retention(now))?;
    Ok(visible || !expired.is_empty() || incidents_changed)
}

/// Checks anti-replay for every layer, then stores and processes the
/// message. Nothing is written, and no window changed, unless every layer
/// passed.
fn apply_message(
    conn: &Connection,
    state: &mut WriterState,
    verified: &Verified,
    raw: &[u8],
    received_at: i64,
) -> rusqlite::Result<Outcome> {
    for layer in &verified.layers {
        if !state.windows.contains_key(&layer.agent_id) {
            let window = store::load_replay_window(conn, &layer.agent_id)?;
            state.windows.insert(layer.agent_id.clone(), window);
        }
        if let Err(reason) = state.windows[&layer.agent_id].check(layer.tick, &layer.nonce) {
            return Ok(Outcome::Replay { agent_id: layer.agent_id.clone(), reason });
        }
    }
    let origin = verified.origin();
    for layer in &verified.layers {
        let window = state.windows.get_mut(&layer.agent_id).expect("loaded above");
        let dropped = window.record(layer.tick, layer.nonce);
        // The origin's pair is persisted by its audit row (insert_report).
        if !std::ptr::eq(layer, origin) {
            store::record_relay_layer(conn, layer, window, &dropped)?;
        }
    }
    let reports = ReportCount(store::upsert_agent(conn, verified, received_at)?);
    let (keep_raw, visible, moved) =
        process(conn, &mut state.processor, verified, reports, received_at)?;
    state.notify_wanted |= moved;
    state.fleet_changed |= visible;
    store::insert_report(conn, verified, raw, keep_raw, received_at)?;
    Ok(Outcome::Committed)
}
