//! Reads behind the receiver's JSON API (`/status/agents`,
//! `/status/alarms`, `/metrics`): typed rows, serialised by the API as
//! they are. Each request opens its own read-only connection.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use serde::Serialize;

/// One link as seen from one of its agents.
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

/// One agent with its state and links.
#[derive(Debug, Serialize)]
pub struct AgentState {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_observed_at: Option<i64>,
    /// 'up' | 'relay' | 'silent', as the receiver decided
    /// (kattila_fleet::AgentStatus); the API's historic name is `state`.
    pub state: String,
    pub reachability: String,
    pub relay_hops: i64,
    pub via_agent: Option<String>,
    pub reports: i64,
    pub active_alarms: i64,
    pub links: Vec<Link>,
}

/// One alarm, as the dashboard reads it too.
pub use crate::snapshot::Alarm;

/// The fleet: every agent with its state and links, by hostname.
pub fn agents(conn: &Connection) -> rusqlite::Result<Vec<AgentState>> {
    let mut links: HashMap<String, Vec<Link>> = HashMap::new();
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
                a.status, a.reachability, a.relay_hops, a.via_agent, a.reports,
                (SELECT count(*) FROM alarms al WHERE al.agent_id = a.agent_id AND al.state = 'active')
         FROM agents a ORDER BY a.hostname, a.agent_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AgentState {
            agent_id: r.get(0)?,
            hostname: r.get(1)?,
            agent_version: r.get(2)?,
            first_seen: r.get(3)?,
            last_seen: r.get(4)?,
            last_observed_at: r.get(5)?,
            state: r.get(6)?,
            reachability: r.get(7)?,
            relay_hops: r.get(8)?,
            via_agent: r.get(9)?,
            reports: r.get(10)?,
            active_alarms: r.get(11)?,
            links: Vec::new(),
        })
    })?;
    let mut agents = Vec::new();
    for row in rows {
        let mut agent = row?;
        agent.links = links.remove(&agent.agent_id).unwrap_or_default();
        agents.push(agent);
    }
    Ok(agents)
}

/// Alarms by state: "active", "resolved" or "all"; active first, then by
/// severity, newest first.
pub fn alarms(conn: &Connection, state: &str, limit: i64) -> rusqlite::Result<Vec<Alarm>> {
    let filter = match state {
        "active" | "resolved" => "WHERE state = ?1",
        _ => "WHERE ?1 = ?1",
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT id, kind, severity, agent_id, subject, message, state, first_seen, last_seen, resolved_at, acked_at,
                notified_at, muted
         FROM alarms {filter}
         ORDER BY state = 'active' DESC,
                  CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, last_seen DESC, id DESC
         LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![state, limit], |r| {
        Ok(Alarm {
            id: r.get(0)?,
            kind: r.get(1)?,
            severity: r.get(2)?,
            agent_id: r.get(3)?,
            subject: r.get(4)?,
            message: r.get(5)?,
            state: r.get(6)?,
            first_seen: r.get(7)?,
            last_seen: r.get(8)?,
            resolved_at: r.get(9)?,
            acked_at: r.get(10)?,
            notified_at: r.get(11)?,
            muted: r.get(12)?,
        })
    })?;
    rows.collect()
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
