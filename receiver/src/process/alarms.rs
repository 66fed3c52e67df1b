//! The alarm lifecycle. A *condition* (interface down, peer stale, …) must
//! hold for `alarm_threshold` consecutive observations before its alarm is
//! raised, and be clear as many times before it resolves (flap suppression).
//! *Events* (new interface, endpoint changed) raise at once and resolve when
//! they are older than the event TTL. Acknowledging does not resolve.
//!
//! Streaks are kept in memory and in `alarm_streaks`, so a restart neither
//! forgets a streak nor raises twice.

use foldhash::HashMap;
use rusqlite::{params, Connection};

use super::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    InterfaceDown,
    InterfaceGone,
    InterfaceNew,
    PeerStale,
    EndpointChanged,
    AgentSilent,
    RelayOnly,
    IdentityConflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 8] = [
        AlarmKind::InterfaceDown,
        AlarmKind::InterfaceGone,
        AlarmKind::InterfaceNew,
        AlarmKind::PeerStale,
        AlarmKind::EndpointChanged,
        AlarmKind::AgentSilent,
        AlarmKind::RelayOnly,
        AlarmKind::IdentityConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::InterfaceDown => "interface_down",
            AlarmKind::InterfaceGone => "interface_gone",
            AlarmKind::InterfaceNew => "interface_new",
            AlarmKind::PeerStale => "peer_stale",
            AlarmKind::EndpointChanged => "endpoint_changed",
            AlarmKind::AgentSilent => "agent_silent",
            AlarmKind::RelayOnly => "relay_only",
            AlarmKind::IdentityConflict => "identity_conflict",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            AlarmKind::AgentSilent | AlarmKind::IdentityConflict => Severity::Critical,
            AlarmKind::InterfaceDown
            | AlarmKind::InterfaceGone
            | AlarmKind::PeerStale
            | AlarmKind::RelayOnly => Severity::Warning,
            AlarmKind::InterfaceNew | AlarmKind::EndpointChanged => Severity::Info,
        }
    }

    fn is_event(self) -> bool {
        matches!(self, AlarmKind::InterfaceNew | AlarmKind::EndpointChanged)
    }

    /// Observations needed to raise or resolve. A report ends silence at once.
    fn threshold(self, s: &Settings) -> i64 {
        match self {
            AlarmKind::AgentSilent => 1,
            _ => s.alarm_threshold.max(1),
        }
    }
}

/// A condition of one agent: its kind and subject.
type Key = (AlarmKind, String);

#[derive(Debug, Default, Clone, Copy)]
struct Tracked {
    /// > 0: consecutive observations holding; < 0: consecutive clear ones.
    streak: i64,
    /// The active alarm, if raised.
    alarm: Option<i64>,
}

/// Every condition currently streaking or alarmed, by agent: most agents
/// have none, and a clear observation for them costs one lookup.
#[derive(Debug, Default)]
pub struct Conditions {
    tracked: HashMap<String, HashMap<Key, Tracked>>,
    /// Alarms raised, refreshed by events, or resolved since start.
    pub transitions: u64,
}

impl Conditions {
    pub fn load(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.tracked.clear();
        let mut stmt = conn.prepare("SELECT kind, agent_id, subject, streak FROM alarm_streaks")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        for row in rows {
            let (kind, agent, subject, streak) = row?;
            if let Some(kind) = AlarmKind::parse(&kind) {
                self.entry(agent, (kind, subject)).streak = streak;
            }
        }
        let mut stmt =
            conn.prepare("SELECT kind, agent_id, subject, id FROM alarms WHERE state = 'active'")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        for row in rows {
            let (kind, agent, subject, id) = row?;
            if let Some(kind) = AlarmKind::parse(&kind) {
                self.entry(agent, (kind, subject)).alarm = Some(id);
            }
        }
        Ok(())
    }

    fn entry(&mut self, agent: String, key: Key) -> &mut Tracked {
        self.tracked.entry(agent).or_default().entry(key).or_default()
    }

    fn get(&self, agent: &str, key: &Key) -> Option<Tracked> {
        self.tracked.get(agent).and_then(|m| m.get(key)).copied()
    }

    /// Whether any condition of `agent` is streaking or alarmed; when not,
    /// observations that a condition is clear change nothing.
    pub fn tracks(&self, agent: &str) -> bool {
        self.tracked.contains_key(agent)
    }

    /// Records one observation of a condition.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        conn: &Connection,
        s: &Settings,
        kind: AlarmKind,
        agent: &str,
        subject: &str,
        holds: bool,
        now: i64,
        message: &str,
    ) -> rusqlite::Result<()> {
        if !holds && !self.tracks(agent) {
            return Ok(()); // clear and not tracked: the common case, no I/O
        }
        let key = (kind, subject.to_string());
        let Some(mut t) = self.get(agent, &key).or(holds.then(Tracked::default)) else {
            return Ok(());
        };
        let threshold = kind.threshold(s);
        if holds {
            t.streak = t.streak.max(0) + 1;
            match t.alarm {
                Some(id) => touch(conn, id, now, message)?,
                None if t.streak >= threshold => {
                    t.alarm = Some(insert(conn, kind, agent, subject, now, message)?);
                    self.transitions += 1;
                }
                None => {}
            }
        } else {
            t.streak = t.streak.min(0) - 1;
            if let Some(id) = t.alarm {
                if -t.streak >= threshold {
                    resolve(conn, id, now)?;
                    t.alarm = None;
                    self.transitions += 1;
                }
            }
        }
        self.store(conn, agent, key, t)
    }

    /// Raises (or refreshes) an alarm without waiting for a streak.
    pub fn raise_now(
        &mut self,
        conn: &Connection,
        kind: AlarmKind,
        agent: &str,
        subject: &str,
        now: i64,
        message: &str,
    ) -> rusqlite::Result<()> {
        let key = (kind, subject.to_string());
        let mut t = self.raise_or_touch(conn, agent, &key, now, message)?;
        t.streak = t.streak.max(1);
        self.store(conn, agent, key, t)
    }

    /// An event: raised at once, refreshed if it happens again. Events have
    /// no streak to persist; they expire instead.
    pub fn event(
        &mut self,
        conn: &Connection,
        kind: AlarmKind,
        agent: &str,
        subject: &str,
        now: i64,
        message: &str,
    ) -> rusqlite::Result<()> {
        debug_assert!(kind.is_event());
        let key = (kind, subject.to_string());
        let t = self.raise_or_touch(conn, agent, &key, now, message)?;
        *self.entry(agent.to_string(), key) = t;
        Ok(())
    }

    /// The condition's state after raising its alarm, or refreshing it if
    /// it is already active.
    fn raise_or_touch(
        &mut self,
        conn: &Connection,
        agent: &str,
        key: &Key,
        now: i64,
        message: &str,
    ) -> rusqlite::Result<Tracked> {
        let mut t = self.get(agent, key).unwrap_or_default();
        match t.alarm {
            Some(id) => touch(conn, id, now, message)?,
            None => {
                t.alarm = Some(insert(conn, key.0, agent, &key.1, now, message)?);
                self.transitions += 1;
            }
        }
        Ok(t)
    }

    /// Resolves events not seen again within `ttl` seconds.
    pub fn expire_events(&mut self, conn: &Connection, now: i64, ttl: i64) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "UPDATE alarms SET state = 'resolved', resolved_at = ?1
             WHERE state = 'active' AND kind IN ('interface_new', 'endpoint_changed') AND last_seen < ?2
             RETURNING id",
        )?;
        let expired: Vec<i64> =
            stmt.query_map(params![now, now - ttl], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if !expired.is_empty() {
            for conditions in self.tracked.values_mut() {
                conditions.retain(|_, t| !t.alarm.is_some_and(|id| expired.contains(&id)));
            }
            self.tracked.retain(|_, conditions| !conditions.is_empty());
        }
        Ok(())
    }

    fn store(
        &mut self,
        conn: &Connection,
        agent: &str,
        key: Key,
        t: Tracked,
    ) -> rusqlite::Result<()> {
        let (kind, subject) = (&key.0, &key.1);
        if t.alarm.is_none() && t.streak <= 0 {
            conn.prepare_cached(
                "DELETE FROM alarm_streaks WHERE kind = ?1 AND agent_id = ?2 AND subject = ?3",
            )?
            .execute(params![kind.as_str(), agent, subject])?;
            if let Some(conditions) = self.tracked.get_mut(agent) {
                conditions.remove(&key);
                if conditions.is_empty() {
                    self.tracked.remove(agent);
                }
            }
        } else {
            conn.prepare_cached(
                "INSERT INTO alarm_streaks (kind, agent_id, subject, streak) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, agent_id, subject) DO UPDATE SET streak = excluded.streak",
            )?
            .execute(params![kind.as_str(), agent, subject, t.streak])?;
            *self.entry(agent.to_string(), key) = t;
        }
        Ok(())
    }
}

fn insert(
    conn: &Connection,
    kind: AlarmKind,
    agent: &str,
    subject: &str,
    now: i64,
    message: &str,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO alarms (kind, severity, agent_id, subject, message, state, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?6)",
    )?
    .execute(params![kind.as_str(), kind.severity().as_str(), agent, subject, message, now])?;
    tracing::info!(kind = kind.as_str(), agent, subject, "alarm raised");
    Ok(conn.last_insert_rowid())
}

fn touch(conn: &Connection, id: i64, now: i64, message: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE alarms SET last_seen = ?2, message = ?3 WHERE id = ?1")?
        .execute(params![id, now, message])?;
    Ok(())
}

fn resolve(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE alarms SET state = 'resolved', resolved_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    tracing::info!(alarm = id, "alarm resolved");
    Ok(())
}
