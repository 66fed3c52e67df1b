//! What an administrator or the retention timer asks of the database:
//! resetting agents, acknowledging alarms, deleting what is too old.

use rusqlite::{params, Connection};

/// Forgets one agent's state, topology and streaks and resolves its active
/// alarms (`None`: every agent's). Returns the number of agents reset: 0
/// for an unknown agent.
pub fn reset(conn: &Connection, agent: Option<&str>) -> rusqlite::Result<usize> {
    let n = match agent {
        Some(id) => {
            for sql in [
                "DELETE FROM interfaces WHERE agent_id = ?1",
                "DELETE FROM routes WHERE agent_id = ?1",
                "DELETE FROM wg_devices WHERE agent_id = ?1",
                "DELETE FROM wg_peers WHERE agent_id = ?1",
                "DELETE FROM topology_edges WHERE a_agent = ?1 OR b_agent = ?1",
                "DELETE FROM alarm_streaks WHERE agent_id = ?1",
                "UPDATE alarms SET state = 'resolved', resolved_at = unixepoch() WHERE agent_id = ?1 AND state = 'active'",
            ] {
                conn.execute(sql, [id])?;
            }
            conn.query_row("SELECT count(*) FROM agents WHERE agent_id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })? as usize
        }
        None => {
            conn.execute_batch(
                "DELETE FROM interfaces; DELETE FROM routes; DELETE FROM wg_devices; DELETE FROM wg_peers;
                 DELETE FROM topology_edges; DELETE FROM alarm_streaks;
                 UPDATE alarms SET state = 'resolved', resolved_at = unixepoch() WHERE state = 'active';",
            )?;
            conn.query_row("SELECT count(*) FROM agents", [], |r| r.get::<_, i64>(0))? as usize
        }
    };
    Ok(n)
}

/// Acknowledges an alarm (acknowledging does not resolve); false when
/// there is no such alarm.
pub fn ack(conn: &Connection, alarm_id: i64, now: i64) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE alarms SET acked_at = coalesce(acked_at, ?2) WHERE id = ?1",
        params![alarm_id, now],
    )?;
    Ok(n > 0)
}

/// Acknowledges an active or resolved incident; false when there is no
/// such incident.
pub fn ack_incident(conn: &Connection, incident_id: i64, now: i64) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE incidents SET acked_at = coalesce(acked_at, ?2) WHERE id = ?1",
        params![incident_id, now],
    )?;
    Ok(n > 0)
}

/// How long things are kept, as cutoffs in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub now: i64,
    /// Audit rows received before this are deleted.
    pub reports_before: i64,
    /// Relay edges last used before this are deleted.
    pub relay_edges_before: i64,
    /// History samples before this are deleted (older than a day: rolled up).
    pub history_before: i64,
}

/// Deletes what `retention` says is too old.
pub fn retain(conn: &Connection, retention: &Retention) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM reports WHERE received_at < ?1")?
        .execute([retention.reports_before])?;
    crate::topology::expire_relay_edges(conn, retention.relay_edges_before)?;
    crate::history::roll_up(conn, retention.now, retention.history_before)
}
