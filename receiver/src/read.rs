//! Read-only queries behind the JSON API. Each request opens its own
//! read-only connection: WAL lets it read while the writer commits.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;
use serde_json::{json, Value};

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub kind: String,
    /// The agent at the other end, when it is a known agent.
    pub peer_agent_id: Option<String>,
    /// The other end's public key, for external WireGuard peers.
    pub external_key: Option<String>,
    pub both_ends: bool,
    pub health: String,
    pub handshake_age: Option<i64>,
}

/// The fleet: every agent with its state and links.
pub fn agents(conn: &Connection, now: i64, silent_after: i64) -> rusqlite::Result<Value> {
    let mut links: std::collections::HashMap<String, Vec<Link>> = std::collections::HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT kind, a_agent, b_agent, b_external, both_ends, health, handshake_age FROM topology_edges ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    for row in rows {
        let (kind, a, b, ext, both_ends, health, age) = row?;
        let link = |peer: Option<String>, external: Option<String>| Link {
            kind: kind.clone(),
            peer_agent_id: peer,
            external_key: external,
            both_ends,
            health: health.clone(),
            handshake_age: age,
        };
        if b.is_empty() {
            links.entry(a.clone()).or_default().push(link(None, Some(ext.clone())));
        } else {
            links.entry(a.clone()).or_default().push(link(Some(b.clone()), None));
            links.entry(b.clone()).or_default().push(link(Some(a.clone()), None));
        }
    }
    let mut stmt = conn.prepare(
        "SELECT a.agent_id, a.hostname, a.agent_version, a.first_seen, a.last_seen, a.last_observed_at,
                a.reachability, a.relay_hops, a.via_agent, a.reports,
                (SELECT count(*) FROM alarms al WHERE al.agent_id = a.agent_id AND al.state = 'active')
         FROM agents a ORDER BY a.hostname, a.agent_id",
    )?;
    let rows = stmt.query_map([], |r| {
        let agent_id: String = r.get(0)?;
        let last_seen: i64 = r.get(4)?;
        Ok(json!({
            "agent_id": agent_id,
            "hostname": r.get::<_, String>(1)?,
            "agent_version": r.get::<_, String>(2)?,
            "first_seen": r.get::<_, i64>(3)?,
            "last_seen": last_seen,
            "last_observed_at": r.get::<_, Option<i64>>(5)?,
            "state": if now - last_seen > silent_after { "silent" } else { "up" },
            "reachability": r.get::<_, String>(6)?,
            "relay_hops": r.get::<_, i64>(7)?,
            "via_agent": r.get::<_, Option<String>>(8)?,
            "reports": r.get::<_, i64>(9)?,
            "active_alarms": r.get::<_, i64>(10)?,
        }))
    })?;
    let mut agents = Vec::new();
    for row in rows {
        let mut agent = row?;
        let id = agent["agent_id"].as_str().unwrap_or_default().to_string();
        agent["links"] =
            serde_json::to_value(links.remove(&id).unwrap_or_default()).unwrap_or_default();
        agents.push(agent);
    }
    Ok(json!({ "generated_at": now, "agents": agents }))
}

/// Alarms by state: "active", "resolved" or "all"; active first, newest first.
pub fn alarms(conn: &Connection, state: &str, limit: i64) -> rusqlite::Result<Value> {
    let filter = match state {
        "active" | "resolved" => "WHERE state = ?1",
        _ => "WHERE ?1 = ?1",
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT id, kind, severity, agent_id, subject, message, state, first_seen, last_seen, resolved_at, acked_at
         FROM alarms {filter}
         ORDER BY state = 'active' DESC,
                  CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, last_seen DESC, id DESC
         LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![state, limit], |r| {
        Ok(json!({
            "id": r.get::<_, i64>(0)?,
            "kind": r.get::<_, String>(1)?,
            "severity": r.get::<_, String>(2)?,
            "agent_id": r.get::<_, String>(3)?,
            "subject": r.get::<_, String>(4)?,
            "message": r.get::<_, String>(5)?,
            "state": r.get::<_, String>(6)?,
            "first_seen": r.get::<_, i64>(7)?,
            "last_seen": r.get::<_, i64>(8)?,
            "resolved_at": r.get::<_, Option<i64>>(9)?,
            "acked_at": r.get::<_, Option<i64>>(10)?,
        }))
    })?;
    Ok(json!({ "alarms": rows.collect::<Result<Vec<_>, _>>()? }))
}

/// Active alarms by kind, and the number of agents, for metrics.
pub fn gauges(conn: &Connection) -> rusqlite::Result<(Vec<(String, i64)>, i64)> {
    let mut stmt = conn.prepare(
        "SELECT kind, count(*) FROM alarms WHERE state = 'active' GROUP BY kind ORDER BY kind",
    )?;
    let alarms = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let agents = conn.query_row("SELECT count(*) FROM agents", [], |r| r.get(0))?;
    Ok((alarms, agents))
}

pub fn agent_exists(conn: &Connection, agent_id: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM agents WHERE agent_id = ?1", [agent_id], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}
