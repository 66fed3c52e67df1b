//! Incidents: related alarms of one site that the receiver groups into one
//! (a whole site silent, a gateway down with its site relayed, many links
//! stale at once). What the receiver's sweep decides them from, and the
//! writes it decides. An active incident is named by (kind, site): the
//! schema allows one active incident per pair, so no row id travels back
//! to processing.

use kattila_fleet::{AgentStatus, Severity};
use rusqlite::{params, Connection, OptionalExtension};

/// An agent as incidents see it: its status and what its site is known by.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteAgent {
    pub agent_id: String,
    pub hostname: String,
    pub status: AgentStatus,
    /// The site label it reports, if any.
    pub site_label: Option<String>,
    /// (kind, addresses) of its interfaces by name; loaded only for agents
    /// without a site label, the others do not need them.
    pub interfaces: Vec<(String, Vec<String>)>,
}

/// A stored active incident, as the sweep compares it with what it finds.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveIncident {
    pub kind: String,
    pub site: String,
    pub severity: String,
    pub summary: String,
    pub agents: Vec<String>,
}

/// Everything incidents are decided from.
#[derive(Debug, Default)]
pub struct IncidentInputs {
    pub agents: Vec<SiteAgent>,
    /// WireGuard links between two agents that are stale or down: (a, b).
    pub links_not_healthy: Vec<(String, String)>,
    pub active: Vec<ActiveIncident>,
}

/// An incident as found now, for raising or refreshing.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentFound {
    pub kind: String,
    pub site: String,
    pub severity: Severity,
    pub summary: String,
    pub agents: Vec<String>,
}

/// One write to the incidents.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    Raise {
        incident: IncidentFound,
        now: i64,
    },
    /// The active incident is still found, as it is now.
    Refresh {
        incident: IncidentFound,
        now: i64,
    },
    Resolve {
        kind: String,
        site: String,
        now: i64,
    },
}

/// Loads what incidents are decided from. When no agent is silent or
/// relayed, no WireGuard link is stale or down and no incident is active
/// (a healthy fleet, the common case) it reads nothing more and returns
/// empty inputs, so a sweep every few seconds stays cheap.
pub fn load(conn: &Connection) -> rusqlite::Result<IncidentInputs> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, site, severity, summary, agents FROM incidents WHERE state = 'active'
         ORDER BY kind, site",
    )?;
    let active: Vec<ActiveIncident> = stmt
        .query_map([], |r| {
            Ok(ActiveIncident {
                kind: r.get(0)?,
                site: r.get(1)?,
                severity: r.get(2)?,
                summary: r.get(3)?,
                agents: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT a_agent, b_agent FROM topology_edges
         WHERE kind = 'wireguard' AND b_agent != '' AND health IN ('stale', 'down')
         ORDER BY a_agent, b_agent",
    )?;
    let links_not_healthy: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let troubled = conn
        .prepare_cached("SELECT 1 FROM agents WHERE status != 'up' LIMIT 1")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some();
    if active.is_empty() && links_not_healthy.is_empty() && !troubled {
        return Ok(IncidentInputs::default());
    }
    let mut stmt = conn
        .prepare_cached("SELECT agent_id, hostname, status, site FROM agents ORDER BY agent_id")?;
    let mut agents: Vec<SiteAgent> = stmt
        .query_map([], |r| {
            Ok(SiteAgent {
                agent_id: r.get(0)?,
                hostname: r.get(1)?,
                status: AgentStatus::parse(&r.get::<_, String>(2)?),
                site_label: r.get::<_, Option<String>>(3)?.filter(|s| !s.is_empty()),
                interfaces: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT i.agent_id, i.kind, i.addresses FROM interfaces i JOIN agents a USING (agent_id)
         WHERE a.site IS NULL OR a.site = '' ORDER BY i.agent_id, i.name",
    )?;
    let mut rows = stmt.query([])?;
    // Both lists are ordered by agent id: walk them together.
    let mut k = 0;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        while k < agents.len() && agents[k].agent_id < id {
            k += 1;
        }
        if let Some(agent) = agents.get_mut(k).filter(|a| a.agent_id == id) {
            let addresses = serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default();
            agent.interfaces.push((r.get(1)?, addresses));
        }
    }
    Ok(IncidentInputs { agents, links_not_healthy, active })
}

/// Writes incident changes in order.
pub fn apply(conn: &Connection, changes: &[IncidentChange]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            IncidentChange::Raise { incident: i, now } => {
                conn.prepare_cached(
                    "INSERT INTO incidents (kind, site, severity, summary, agents, state, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?6)",
                )?
                .execute(params![i.kind, i.site, i.severity.as_str(), i.summary, agents_json(&i.agents), now])?;
            }
            IncidentChange::Refresh { incident: i, now } => {
                conn.prepare_cached(
                    "UPDATE incidents SET severity = ?3, summary = ?4, agents = ?5, last_seen = ?6
                     WHERE kind = ?1 AND site = ?2 AND state = 'active'",
                )?
                .execute(params![
                    i.kind,
                    i.site,
                    i.severity.as_str(),
                    i.summary,
                    agents_json(&i.agents),
                    now
                ])?;
            }
            IncidentChange::Resolve { kind, site, now } => {
                conn.prepare_cached(
                    "UPDATE incidents SET state = 'resolved', resolved_at = ?3
                     WHERE kind = ?1 AND site = ?2 AND state = 'active'",
                )?
                .execute(params![kind, site, now])?;
            }
        }
    }
    Ok(())
}

fn agents_json(agents: &[String]) -> String {
    serde_json::to_string(agents).expect("a list of strings serialises")
}
