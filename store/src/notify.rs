//! Notifications: the outbox of messages decided and not yet delivered,
//! what each subject was last told, and the silences and maintenance
//! windows made through the admin API. The receiver's writer decides
//! messages in the transaction of the change that causes them
//! ([`load`], [`apply`]); its delivery worker reads what is due ([`due`])
//! and records each attempt through the writer ([`record`]).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// An active alarm as notifications see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSubject {
    pub id: i64,
    pub kind: String,
    pub severity: String,
    pub agent_id: String,
    pub hostname: String,
    /// The agent's site label, "" when it reports none.
    pub site: String,
    pub subject: String,
    pub message: String,
    pub first_seen: i64,
    pub acked: bool,
    pub muted: Option<String>,
}

/// An active incident as notifications see it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSubject {
    pub id: i64,
    pub kind: String,
    pub site: String,
    pub severity: String,
    pub summary: String,
    pub agents: Vec<String>,
    /// Hostnames of `agents`, same order.
    pub hostnames: Vec<String>,
    pub first_seen: i64,
    pub acked: bool,
    pub muted: Option<String>,
}

/// What a subject was last told.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    pub subject: String,
    pub row_id: i64,
    /// 'raised' (its resolve is still to tell) or 'resolved'.
    pub state: String,
    pub told_at: i64,
    pub last_sent: i64,
    /// JSON of the raise message.
    pub payload: String,
    /// When the alarm or incident told of resolved; `None` while active.
    /// A row deleted since reads as resolved at `last_sent`.
    pub row_resolved_at: Option<i64>,
}

/// A silence made through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceRow {
    pub id: i64,
    pub matchers: Vec<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A maintenance window made through the admin API; `spec` is the
/// receiver's JSON form of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRow {
    pub id: i64,
    pub spec: serde_json::Value,
    pub created_at: i64,
}

/// Everything notifications are decided from.
#[derive(Debug, Default)]
pub struct NotifyInputs {
    pub alarms: Vec<AlarmSubject>,
    pub incidents: Vec<IncidentSubject>,
    pub told: Vec<Told>,
    pub silences: Vec<SilenceRow>,
    pub windows: Vec<WindowRow>,
}

/// One write decided by notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyChange {
    /// A message for one channel, due at once.
    Enqueue {
        event_key: String,
        channel: String,
        subject: String,
        event: &'static str,
        payload: String,
        now: i64,
    },
    /// What `subject` was told now.
    Told {
        subject: String,
        row_id: i64,
        state: &'static str,
        told_at: i64,
        last_sent: i64,
        payload: String,
    },
    AlarmNotified {
        id: i64,
        at: i64,
    },
    IncidentNotified {
        id: i64,
        at: i64,
    },
    AlarmMuted {
        id: i64,
        muted: Option<String>,
    },
    IncidentMuted {
        id: i64,
        muted: Option<String>,
    },
}

/// Loads what notifications are decided from: active alarms and
/// incidents, what each subject was told, the API's silences and windows.
pub fn load(conn: &Connection, now: i64) -> rusqlite::Result<NotifyInputs> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.id, l.kind, l.severity, l.agent_id, coalesce(a.hostname, l.agent_id), coalesce(a.site, ''),
                l.subject, l.message, l.first_seen, l.acked_at IS NOT NULL, l.muted
         FROM alarms l LEFT JOIN agents a USING (agent_id)
         WHERE l.state = 'active' ORDER BY l.id",
    )?;
    let alarms = stmt
        .query_map([], |r| {
            Ok(AlarmSubject {
                id: r.get(0)?,
                kind: r.get(1)?,
                severity: r.get(2)?,
                agent_id: r.get(3)?,
                hostname: r.get(4)?,
                site: r.get(5)?,
                subject: r.get(6)?,
                message: r.get(7)?,
                first_seen: r.get(8)?,
                acked: r.get(9)?,
                muted: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, site, severity, summary, agents, first_seen, muted, acked_at IS NOT NULL
         FROM incidents WHERE state = 'active' ORDER BY id",
    )?;
    let mut incidents = stmt
        .query_map([], |r| {
            Ok(IncidentSubject {
                id: r.get(0)?,
                kind: r.get(1)?,
                site: r.get(2)?,
                severity: r.get(3)?,
                summary: r.get(4)?,
                agents: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                hostnames: Vec::new(),
                first_seen: r.get(6)?,
                muted: r.get(7)?,
                acked: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut host = conn.prepare_cached("SELECT hostname FROM agents WHERE agent_id = ?1")?;
    for incident in &mut incidents {
        for id in &incident.agents {
            let name: Option<String> = host.query_row([id], |r| r.get(0)).optional()?;
            incident.hostnames.push(name.unwrap_or_else(|| id.clone()));
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT s.subject, s.row_id, s.state, s.told_at, s.last_sent, s.payload,
                CASE WHEN s.subject LIKE 'incident:%'
                     THEN (SELECT CASE state WHEN 'active' THEN NULL ELSE coalesce(resolved_at, s.last_sent) END
                           FROM incidents WHERE id = s.row_id)
                     ELSE (SELECT CASE state WHEN 'active' THEN NULL ELSE coalesce(resolved_at, s.last_sent) END
                           FROM alarms WHERE id = s.row_id) END,
                CASE WHEN s.subject LIKE 'incident:%'
                     THEN (SELECT count(*) FROM incidents WHERE id = s.row_id)
                     ELSE (SELECT count(*) FROM alarms WHERE id = s.row_id) END
         FROM notify_subjects s ORDER BY s.subject",
    )?;
    let told = stmt
        .query_map([], |r| {
            let last_sent: i64 = r.get(4)?;
            let exists: i64 = r.get(7)?;
            let resolved: Option<i64> = r.get(6)?;
            Ok(Told {
                subject: r.get(0)?,
                row_id: r.get(1)?,
                state: r.get(2)?,
                told_at: r.get(3)?,
                last_sent,
                payload: r.get(5)?,
                row_resolved_at: if exists == 0 { Some(last_sent) } else { resolved },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NotifyInputs {
        alarms,
        incidents,
        told,
        silences: silences(conn, Some(now))?,
        windows: windows(conn)?,
    })
}

/// Writes notification changes in order.
pub fn apply(conn: &Connection, changes: &[NotifyChange]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            NotifyChange::Enqueue { event_key, channel, subject, event, payload, now } => {
                // The key is unique per channel: deciding the same event
                // twice (never expected) enqueues it once.
                conn.prepare_cached(
                    "INSERT INTO notify_outbox (event_key, channel, subject, event, payload, state, created_at, next_try)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6 * 1000)
                     ON CONFLICT (event_key, channel) DO NOTHING",
                )?
                .execute(params![event_key, channel, subject, event, payload, now])?;
            }
            NotifyChange::Told { subject, row_id, state, told_at, last_sent, payload } => {
                conn.prepare_cached(
                    "INSERT INTO notify_subjects (subject, row_id, state, told_at, last_sent, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (subject) DO UPDATE SET row_id = excluded.row_id, state = excluded.state,
                        told_at = excluded.told_at, last_sent = excluded.last_sent, payload = excluded.payload",
                )?
                .execute(params![subject, row_id, state, told_at, last_sent, payload])?;
            }
            NotifyChange::AlarmNotified { id, at } => {
                conn.prepare_cached(
                    "UPDATE alarms SET notified_at = coalesce(notified_at, ?2) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
            }
            NotifyChange::IncidentNotified { id, at } => {
                conn.prepare_cached(
                    "UPDATE incidents SET notified_at = coalesce(notified_at, ?2) WHERE id = ?1",
                )?
                .execute(params![id, at])?;
            }
            NotifyChange::AlarmMuted { id, muted } => {
                conn.prepare_cached("UPDATE alarms SET muted = ?2 WHERE id = ?1")?
                    .execute(params![id, muted])?;
            }
            NotifyChange::IncidentMuted { id, muted } => {
                conn.prepare_cached("UPDATE incidents SET muted = ?2 WHERE id = ?1")?
                    .execute(params![id, muted])?;
            }
        }
    }
    Ok(())
}

/// Forgets subjects whose resolve was told before `before` (their minimum
/// gap is long over).
pub fn forget_told(conn: &Connection, before: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM notify_subjects WHERE state = 'resolved' AND last_sent < ?1")?
        .execute([before])
}

/// One message of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub event_key: String,
    pub channel: String,
    pub subject: String,
    pub event: String,
    pub payload: String,
    pub state: String,
    pub tries: i64,
    pub created_at: i64,
    /// Unix milliseconds.
    pub next_try: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

const OUTBOX_COLUMNS: &str = "id, event_key, channel, subject, event, payload, state, tries, created_at, next_try, last_error, sent_at";

fn outbox_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        event_key: r.get(1)?,
        channel: r.get(2)?,
        subject: r.get(3)?,
        event: r.get(4)?,
        payload: r.get(5)?,
        state: r.get(6)?,
        tries: r.get(7)?,
        created_at: r.get(8)?,
        next_try: r.get(9)?,
        last_error: r.get(10)?,
        sent_at: r.get(11)?,
    })
}

/// Queued messages due at `now_ms`, oldest first.
pub fn due(conn: &Connection, now_ms: i64, limit: i64) -> rusqlite::Result<Vec<OutboxItem>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM notify_outbox WHERE state = 'queued' AND next_try <= ?1
         ORDER BY next_try, id LIMIT ?2"
    ))?;
    let items = stmt.query_map(params![now_ms, limit], outbox_item)?.collect();
    items
}

/// The outbox, newest first; `state` filters ('queued', 'sent', 'dead').
pub fn list(
    conn: &Connection,
    state: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<OutboxItem>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM notify_outbox WHERE ?1 IS NULL OR state = ?1
         ORDER BY id DESC LIMIT ?2"
    ))?;
    let items = stmt.query_map(params![state, limit], outbox_item)?.collect();
    items
}

/// Messages in the outbox by (channel, state).
pub fn counts(conn: &Connection) -> rusqlite::Result<Vec<(String, String, i64)>> {
    if crate::schema_version(conn)? < crate::migrations::NOTIFICATIONS {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT channel, state, count(*) FROM notify_outbox GROUP BY channel, state ORDER BY 1, 2",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect();
    rows
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent {
        at: i64,
    },
    /// Failed; try again at `next_try_ms`.
    Retry {
        next_try_ms: i64,
        error: String,
    },
    /// Failed for the last time: dead-lettered.
    Dead {
        error: String,
    },
}

/// Records an attempt at message `id`. A message already sent stays sent.
pub fn record(conn: &Connection, id: i64, attempt: &Attempt) -> rusqlite::Result<()> {
    match attempt {
        Attempt::Sent { at } => conn
            .prepare_cached(
                "UPDATE notify_outbox SET state = 'sent', tries = tries + 1, sent_at = ?2, last_error = NULL
                 WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id, at])?,
        Attempt::Retry { next_try_ms, error } => conn
            .prepare_cached(
                "UPDATE notify_outbox SET tries = tries + 1, next_try = ?2, last_error = ?3
                 WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id, next_try_ms, error])?,
        Attempt::Dead { error } => conn
            .prepare_cached(
                "UPDATE notify_outbox SET state = 'dead', tries = tries + 1, last_error = ?2
                 WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id, error])?,
    };
    Ok(())
}

/// Queues a test message for one channel; returns its id.
pub fn enqueue_test(
    conn: &Connection,
    event_key: &str,
    channel: &str,
    payload: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    apply(
        conn,
        &[NotifyChange::Enqueue {
            event_key: event_key.into(),
            channel: channel.into(),
            subject: "test".into(),
            event: "test",
            payload: payload.into(),
            now,
        }],
    )?;
    conn.query_row(
        "SELECT id FROM notify_outbox WHERE event_key = ?1 AND channel = ?2",
        params![event_key, channel],
        |r| r.get(0),
    )
}

/// Silences made through the API; with `now`, only those not yet ended.
pub fn silences(conn: &Connection, now: Option<i64>) -> rusqlite::Result<Vec<SilenceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, matchers, starts_at, ends_at, comment, created_by, created_at FROM silences
         WHERE ?1 IS NULL OR ends_at > ?1 - 86400 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([now], |r| {
            Ok(SilenceRow {
                id: r.get(0)?,
                matchers: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
                starts_at: r.get(2)?,
                ends_at: r.get(3)?,
                comment: r.get(4)?,
                created_by: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?
        .collect();
    rows
}

/// Adds a silence; returns its id.
pub fn add_silence(conn: &Connection, s: &SilenceRow) -> rusqlite::Result<i64> {
    let matchers = serde_json::to_string(&s.matchers).expect("strings serialise");
    conn.prepare_cached(
        "INSERT INTO silences (matchers, starts_at, ends_at, comment, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        matchers,
        s.starts_at,
        s.ends_at,
        s.comment,
        s.created_by,
        s.created_at
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Ends a silence now; false when there is no such silence.
pub fn expire_silence(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE silences SET ends_at = min(ends_at, ?2) WHERE id = ?1",
        params![id, now],
    )?;
    Ok(n > 0)
}

/// Maintenance windows made through the API.
pub fn windows(conn: &Connection) -> rusqlite::Result<Vec<WindowRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, spec, created_at FROM maintenance_windows ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(WindowRow {
                id: r.get(0)?,
                spec: serde_json::from_str(&r.get::<_, String>(1)?)
                    .unwrap_or(serde_json::Value::Null),
                created_at: r.get(2)?,
            })
        })?
        .collect();
    rows
}

/// Adds a window; returns its id.
pub fn add_window(conn: &Connection, spec: &serde_json::Value, now: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO maintenance_windows (spec, created_at) VALUES (?1, ?2)")?
        .execute(params![spec.to_string(), now])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes a window; false when there is no such window.
pub fn delete_window(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM maintenance_windows WHERE id = ?1", [id])? > 0)
}
