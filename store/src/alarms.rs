//! Stored alarms and their streaks: what the receiver's alarm lifecycle is
//! loaded from, and the writes it decides. An active alarm is named by its
//! condition (kind, agent, subject): the schema allows one active alarm per
//! condition, so no row id has to travel back to processing.

use std::borrow::Cow;

use kattila_fleet::Severity;
use rusqlite::{params, Connection};

/// A condition of one agent: alarm kind, agent, subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition<'a> {
    pub kind: Cow<'a, str>,
    pub agent_id: Cow<'a, str>,
    pub subject: Cow<'a, str>,
}

/// Everything the alarm lifecycle starts from.
#[derive(Debug, Default)]
pub struct AlarmRows {
    /// Conditions with a streak, and the streak: > 0 holding, < 0 clear.
    pub streaks: Vec<(Condition<'static>, i64)>,
    /// Conditions with an active alarm.
    pub active: Vec<Condition<'static>>,
}

/// One write to the alarms.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmChange<'a> {
    Raise {
        condition: Condition<'a>,
        severity: Severity,
        message: String,
        now: i64,
    },
    /// The active alarm is still seen, with this message.
    Touch {
        condition: Condition<'a>,
        message: String,
        now: i64,
    },
    Resolve {
        condition: Condition<'a>,
        now: i64,
    },
    Streak {
        condition: Condition<'a>,
        streak: i64,
    },
    StreakCleared {
        condition: Condition<'a>,
    },
}

pub fn load(conn: &Connection) -> rusqlite::Result<AlarmRows> {
    let mut stmt = conn.prepare("SELECT kind, agent_id, subject, streak FROM alarm_streaks")?;
    let streaks =
        stmt.query_map([], |r| Ok((condition(r)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare("SELECT kind, agent_id, subject FROM alarms WHERE state = 'active'")?;
    let active = stmt.query_map([], condition)?.collect::<Result<_, _>>()?;
    Ok(AlarmRows { streaks, active })
}

/// Writes alarm changes in order.
pub fn apply(conn: &Connection, changes: &[AlarmChange<'_>]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            AlarmChange::Raise { condition: c, severity, message, now } => {
                conn.prepare_cached(
                    "INSERT INTO alarms (kind, severity, agent_id, subject, message, state, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?6)",
                )?
                .execute(params![c.kind, severity.as_str(), c.agent_id, c.subject, message, now])?;
            }
            AlarmChange::Touch { condition: c, message, now } => {
                conn.prepare_cached(
                    "UPDATE alarms SET last_seen = ?4, message = ?5
                     WHERE kind = ?1 AND agent_id = ?2 AND subject = ?3 AND state = 'active'",
                )?
                .execute(params![c.kind, c.agent_id, c.subject, now, message])?;
            }
            AlarmChange::Resolve { condition: c, now } => {
                conn.prepare_cached(
                    "UPDATE alarms SET state = 'resolved', resolved_at = ?4
                     WHERE kind = ?1 AND agent_id = ?2 AND subject = ?3 AND state = 'active'",
                )?
                .execute(params![c.kind, c.agent_id, c.subject, now])?;
            }
            AlarmChange::Streak { condition: c, streak } => {
                conn.prepare_cached(
                    "INSERT INTO alarm_streaks (kind, agent_id, subject, streak) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(kind, agent_id, subject) DO UPDATE SET streak = excluded.streak",
                )?
                .execute(params![c.kind, c.agent_id, c.subject, streak])?;
            }
            AlarmChange::StreakCleared { condition: c } => {
                conn.prepare_cached(
                    "DELETE FROM alarm_streaks WHERE kind = ?1 AND agent_id = ?2 AND subject = ?3",
                )?
                .execute(params![c.kind, c.agent_id, c.subject])?;
            }
        }
    }
    Ok(())
}

/// Resolves active alarms of the given kinds not seen since `seen_before`;
/// returns their conditions.
pub fn expire(
    conn: &Connection,
    kinds: &[&str],
    seen_before: i64,
    now: i64,
) -> rusqlite::Result<Vec<Condition<'static>>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE alarms SET state = 'resolved', resolved_at = ?1
         WHERE state = 'active' AND kind = ?2 AND last_seen < ?3
         RETURNING kind, agent_id, subject",
    )?;
    let mut expired = Vec::new();
    for kind in kinds {
        for row in stmt.query_map(params![now, kind, seen_before], condition)? {
            expired.push(row?);
        }
    }
    Ok(expired)
}

/// A condition from its row's first three columns (kind, agent, subject).
fn condition(r: &rusqlite::Row<'_>) -> rusqlite::Result<Condition<'static>> {
    Ok(Condition {
        kind: Cow::Owned(r.get(0)?),
        agent_id: Cow::Owned(r.get(1)?),
        subject: Cow::Owned(r.get(2)?),
    })
}
