//! Reading the fleet from the receiver's database: read-only, one
//! consistent snapshot per build (every table is read inside a single read
//! transaction, so a build never mixes two commits).
//!
//! Text columns are read leniently (invalid UTF-8 becomes U+FFFD): the
//! values come from agents and are untrusted anyway.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::Context;
use kattila_fleet::AgentStatus;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use serde::Serialize;

use crate::migrations;

#[derive(Debug, Clone, Default)]
pub struct Agent {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_observed_at: Option<i64>,
    pub last_tick: i64,
    pub relay_hops: i64,
    pub via_agent: Option<String>,
    pub kernel: Option<String>,
    pub uptime_secs: Option<i64>,
    pub load: Option<[f64; 3]>,
    pub spool_dropped: i64,
    /// JSON array of {source, message}, as stored.
    pub collect_errors: String,
    /// 'direct' | 'relay'.
    pub reachability: String,
    /// As the receiver decided it.
    pub status: AgentStatus,
    /// The site label the agent reports, if any.
    pub site: Option<String>,
    pub reports: i64,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub wg_devices: Vec<WgDevice>,
    pub wg_peers: Vec<WgPeer>,
    pub history: Vec<Sample>,
}

/// An interface as pages and JSON show it (`first_seen` and `last_seen`
/// are not published).
#[derive(Debug, Clone, Default, Serialize, Hash)]
pub struct Interface {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub mtu: i64,
    pub mac: Option<String>,
    /// "addr/prefix" strings.
    pub addresses: Vec<String>,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub rx_errors: i64,
    pub tx_errors: i64,
    #[serde(skip)]
    pub first_seen: i64,
    #[serde(skip)]
    pub last_seen: i64,
}

#[derive(Debug, Clone, Default, Serialize, Hash)]
pub struct Route {
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub metric: Option<i64>,
    /// The routing table (column `table_id`).
    pub table: i64,
}

#[derive(Debug, Clone, Default)]
pub struct WgDevice {
    pub name: String,
    pub public_key: String,
    pub listen_port: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct WgPeer {
    pub device: String,
    pub public_key: String,
    pub peer_agent_id: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake: Option<i64>,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub persistent_keepalive: Option<i64>,
    pub rx_grew_at: Option<i64>,
    /// 'healthy' | 'stale' | 'never'.
    pub health: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub id: i64,
    /// 'wireguard' | 'relay' | 'physical'.
    pub kind: String,
    pub a_agent: String,
    /// '' for an external peer.
    pub b_agent: String,
    /// External peer's public key, else ''.
    pub b_external: String,
    pub both_ends: bool,
    /// 'healthy' | 'stale' | 'down' | 'unknown'.
    pub health: String,
    pub handshake_age: Option<i64>,
    pub detail: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Alarm {
    pub id: i64,
    pub kind: String,
    /// 'critical' | 'warning' | 'info'.
    pub severity: String,
    pub agent_id: String,
    pub subject: String,
    pub message: String,
    /// 'active' | 'resolved'.
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
    pub acked_at: Option<i64>,
    /// When a notification about it was decided; before schema step
    /// `migrations::NOTIFICATIONS`, and for alarms told as their
    /// incident, None.
    pub notified_at: Option<i64>,
    /// Why notifications are held back now ("maintenance: …",
    /// "silenced: …").
    pub muted: Option<String>,
}

/// An incident: related alarms of one site, grouped by the receiver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Incident {
    pub id: i64,
    /// 'site_silent' | 'gateway_down' | 'links_stale'.
    pub kind: String,
    /// The site's label, else its network (`kattila_fleet::site_of`).
    pub site: String,
    /// 'critical' | 'warning' | 'info'.
    pub severity: String,
    /// What is wrong, without the site's name.
    pub summary: String,
    /// The agent ids involved.
    pub agents: Vec<String>,
    /// 'active' | 'resolved'.
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
    /// When a notification about it was decided (None: not told, or
    /// before schema step `migrations::NOTIFICATIONS`).
    pub notified_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub ts: i64,
    pub load1: Option<f64>,
    pub rx_rate: Option<f64>,
    pub tx_rate: Option<f64>,
    pub max_handshake_age: Option<i64>,
    pub peers_healthy: Option<i64>,
    pub peers_total: Option<i64>,
}

/// For page keys (`render::PageKeys`): floats by their bits.
impl std::hash::Hash for Sample {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let Sample { ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total } =
            self;
        let bits = |v: &Option<f64>| v.map(f64::to_bits);
        (ts, bits(load1), bits(rx_rate), bits(tx_rate)).hash(h);
        (max_handshake_age, peers_healthy, peers_total).hash(h);
    }
}

/// Everything one build shows, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct FleetSnapshot {
    pub schema_version: i64,
    /// Agents sorted by hostname, then agent id.
    pub agents: Vec<Agent>,
    pub edges: Vec<Edge>,
    /// Newest first.
    pub alarms: Vec<Alarm>,
    /// Active ones first, then newest first; empty before schema step
    /// `migrations::INCIDENTS`.
    pub incidents: Vec<Incident>,
    /// Silences made through the admin API that have not ended.
    pub silences: Vec<crate::notify::SilenceRow>,
    /// Maintenance windows made through the admin API.
    pub windows: Vec<crate::notify::WindowRow>,
}

/// How much history the agent pages show.
pub const HISTORY_WINDOW_SECS: i64 = 6 * 3600;
/// At most this many samples per agent (the newest).
pub const HISTORY_MAX_SAMPLES: usize = 180;

fn text(r: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(opt_text(r, i)?.unwrap_or_default())
}

fn opt_text(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

/// Calls `f` with the agent's index (in `index`, by agent id) and the row,
/// for every row of `stmt` whose first column is a known agent's id.
/// Rows come ordered by agent id, so the id is compared with the previous
/// row's before it is looked up, and never copied: the history alone has
/// a row per agent every five minutes.
fn for_each_agent_row(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    index: &HashMap<String, usize>,
    mut f: impl FnMut(usize, &Row<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut rows = stmt.query(params)?;
    let mut last: Option<(String, Option<usize>)> = None;
    while let Some(r) = rows.next()? {
        // As `text` reads it.
        let id: Cow<str> = match r.get_ref(0)? {
            ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b),
            _ => Cow::Owned(text(r, 0)?),
        };
        let slot = match &last {
            Some((last_id, slot)) if **last_id == *id => *slot,
            _ => {
                let slot = index.get(id.as_ref()).copied();
                last = Some((id.into_owned(), slot));
                slot
            }
        };
        if let Some(i) = slot {
            f(i, r)?;
        }
    }
    Ok(())
}

/// A JSON array of strings, as stored for addresses; anything else is empty.
fn string_list(json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(json).unwrap_or_default()
}

impl FleetSnapshot {
    /// Reads the whole snapshot inside one read transaction. `now` bounds
    /// the history window.
    pub fn read(conn: &Connection, now: i64) -> anyhow::Result<FleetSnapshot> {
        conn.execute_batch("BEGIN DEFERRED")?;
        let result = Self::read_inner(conn, now);
        // A read transaction has nothing to lose: end it whatever happened.
        let _ = conn.execute_batch("COMMIT");
        result
    }

    fn read_inner(conn: &Connection, now: i64) -> anyhow::Result<FleetSnapshot> {
        let schema_version = crate::schema_version(conn)?;
        let full = schema_version >= migrations::STATE_TABLES;
        let status = if schema_version >= migrations::AGENT_STATUS { "status" } else { "'up'" };
        let site = if schema_version >= migrations::AGENT_SITE { "site" } else { "NULL" };
        let sql = if full {
            &format!(
                "SELECT agent_id, hostname, agent_version, first_seen, last_seen, last_observed_at,
                        last_tick, relay_hops, via_agent, kernel, uptime_secs, load1, load5, load15,
                        spool_dropped, collect_errors, reachability, reports, {status}, {site}
                 FROM agents ORDER BY hostname, agent_id"
            )
        } else {
            "SELECT agent_id, hostname, agent_version, first_seen, last_seen, last_observed_at,
                    last_tick, relay_hops, via_agent
             FROM agents ORDER BY hostname, agent_id"
        };
        let mut stmt = conn.prepare(sql)?;
        let mut agents = stmt
            .query_map([], |r| {
                let mut a = Agent {
                    agent_id: text(r, 0)?,
                    hostname: text(r, 1)?,
                    agent_version: text(r, 2)?,
                    first_seen: r.get(3)?,
                    last_seen: r.get(4)?,
                    last_observed_at: r.get(5)?,
                    last_tick: r.get(6)?,
                    relay_hops: r.get(7)?,
                    via_agent: opt_text(r, 8)?,
                    collect_errors: "[]".into(),
                    reachability: "direct".into(),
                    status: AgentStatus::Up,
                    ..Agent::default()
                };
                if full {
                    a.kernel = opt_text(r, 9)?;
                    a.uptime_secs = r.get(10)?;
                    let (l1, l5, l15): (Option<f64>, Option<f64>, Option<f64>) =
                        (r.get(11)?, r.get(12)?, r.get(13)?);
                    a.load = l1.map(|l1| [l1, l5.unwrap_or(0.0), l15.unwrap_or(0.0)]);
                    a.spool_dropped = r.get(14)?;
                    a.collect_errors = text(r, 15)?;
                    a.reachability = text(r, 16)?;
                    a.reports = r.get(17)?;
                    a.status = AgentStatus::parse(&text(r, 18)?);
                    a.site = opt_text(r, 19)?.filter(|s| !s.is_empty());
                }
                Ok(a)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("reading agents")?;
        let mut snap = FleetSnapshot { schema_version, ..FleetSnapshot::default() };
        if !full {
            snap.agents = agents;
            return Ok(snap);
        }
        let index: HashMap<String, usize> =
            agents.iter().enumerate().map(|(i, a)| (a.agent_id.clone(), i)).collect();

        let mut stmt = conn.prepare(
            "SELECT agent_id, name, kind, state, mtu, mac, addresses, rx_bytes, tx_bytes,
                    rx_errors, tx_errors, first_seen, last_seen
             FROM interfaces ORDER BY agent_id, name",
        )?;
        for_each_agent_row(&mut stmt, [], &index, |i, r| {
            agents[i].interfaces.push(Interface {
                name: text(r, 1)?,
                kind: text(r, 2)?,
                state: text(r, 3)?,
                mtu: r.get(4)?,
                mac: opt_text(r, 5)?,
                addresses: string_list(&text(r, 6)?),
                rx_bytes: r.get(7)?,
                tx_bytes: r.get(8)?,
                rx_errors: r.get(9)?,
                tx_errors: r.get(10)?,
                first_seen: r.get(11)?,
                last_seen: r.get(12)?,
            });
            Ok(())
        })
        .context("reading interfaces")?;

        let mut stmt = conn.prepare(
            "SELECT agent_id, dst, gateway, dev, metric, table_id FROM routes
             ORDER BY agent_id, table_id, dst",
        )?;
        for_each_agent_row(&mut stmt, [], &index, |i, r| {
            agents[i].routes.push(Route {
                dst: text(r, 1)?,
                gateway: opt_text(r, 2)?,
                dev: opt_text(r, 3)?,
                metric: r.get(4)?,
                table: r.get(5)?,
            });
            Ok(())
        })
        .context("reading routes")?;

        let mut stmt = conn.prepare(
            "SELECT agent_id, name, public_key, listen_port FROM wg_devices ORDER BY agent_id, name",
        )?;
        for_each_agent_row(&mut stmt, [], &index, |i, r| {
            agents[i].wg_devices.push(WgDevice {
                name: text(r, 1)?,
                public_key: text(r, 2)?,
                listen_port: r.get(3)?,
            });
            Ok(())
        })
        .context("reading wg_devices")?;

        let mut stmt = conn.prepare(
            "SELECT agent_id, device, public_key, peer_agent_id, endpoint, allowed_ips,
                    latest_handshake, rx_bytes, tx_bytes, persistent_keepalive, rx_grew_at,
                    health, first_seen, last_seen
             FROM wg_peers ORDER BY agent_id, device, public_key",
        )?;
        for_each_agent_row(&mut stmt, [], &index, |i, r| {
            agents[i].wg_peers.push(WgPeer {
                device: text(r, 1)?,
                public_key: text(r, 2)?,
                peer_agent_id: opt_text(r, 3)?.filter(|s| !s.is_empty()),
                endpoint: opt_text(r, 4)?,
                allowed_ips: string_list(&text(r, 5)?),
                latest_handshake: r.get(6)?,
                rx_bytes: r.get(7)?,
                tx_bytes: r.get(8)?,
                persistent_keepalive: r.get(9)?,
                rx_grew_at: r.get(10)?,
                health: text(r, 11)?,
                first_seen: r.get(12)?,
                last_seen: r.get(13)?,
            });
            Ok(())
        })
        .context("reading wg_peers")?;

        let mut stmt = conn.prepare(
            "SELECT agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy,
                    peers_total
             FROM history WHERE ts >= ?1 ORDER BY ts, agent_id",
        )?;
        for_each_agent_row(&mut stmt, [now - HISTORY_WINDOW_SECS], &index, |i, r| {
            agents[i].history.push(Sample {
                ts: r.get(1)?,
                load1: r.get(2)?,
                rx_rate: r.get(3)?,
                tx_rate: r.get(4)?,
                max_handshake_age: r.get(5)?,
                peers_healthy: r.get(6)?,
                peers_total: r.get(7)?,
            });
            Ok(())
        })
        .context("reading history")?;
        for a in &mut agents {
            let excess = a.history.len().saturating_sub(HISTORY_MAX_SAMPLES);
            a.history.drain(..excess);
        }

        let mut stmt = conn.prepare(
            "SELECT id, kind, a_agent, b_agent, b_external, both_ends, health, handshake_age,
                    detail, first_seen, last_seen
             FROM topology_edges ORDER BY id",
        )?;
        snap.edges = stmt
            .query_map([], |r| {
                Ok(Edge {
                    id: r.get(0)?,
                    kind: text(r, 1)?,
                    a_agent: text(r, 2)?,
                    b_agent: text(r, 3)?,
                    b_external: text(r, 4)?,
                    both_ends: r.get::<_, i64>(5)? != 0,
                    health: text(r, 6)?,
                    handshake_age: r.get(7)?,
                    detail: opt_text(r, 8)?,
                    first_seen: r.get(9)?,
                    last_seen: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("reading topology_edges")?;

        let told = if schema_version >= migrations::NOTIFICATIONS {
            "notified_at, muted"
        } else {
            "NULL, NULL"
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT id, kind, severity, agent_id, subject, message, state, first_seen, last_seen,
                    resolved_at, acked_at, {told}
             FROM alarms ORDER BY first_seen DESC, id DESC"
        ))?;
        snap.alarms = stmt
            .query_map([], |r| {
                Ok(Alarm {
                    id: r.get(0)?,
                    kind: text(r, 1)?,
                    severity: text(r, 2)?,
                    agent_id: text(r, 3)?,
                    subject: text(r, 4)?,
                    message: text(r, 5)?,
                    state: text(r, 6)?,
                    first_seen: r.get(7)?,
                    last_seen: r.get(8)?,
                    resolved_at: r.get(9)?,
                    acked_at: r.get(10)?,
                    notified_at: r.get(11)?,
                    muted: r.get(12)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("reading alarms")?;

        if schema_version >= migrations::INCIDENTS {
            let told =
                if schema_version >= migrations::NOTIFICATIONS { "notified_at" } else { "NULL" };
            let mut stmt = conn.prepare(&format!(
                "SELECT id, kind, site, severity, summary, agents, state, first_seen, last_seen,
                        resolved_at, {told}
                 FROM incidents ORDER BY state = 'active' DESC, first_seen DESC, id DESC"
            ))?;
            snap.incidents = stmt
                .query_map([], |r| {
                    Ok(Incident {
                        id: r.get(0)?,
                        kind: text(r, 1)?,
                        site: text(r, 2)?,
                        severity: text(r, 3)?,
                        summary: text(r, 4)?,
                        agents: string_list(&text(r, 5)?),
                        state: text(r, 6)?,
                        first_seen: r.get(7)?,
                        last_seen: r.get(8)?,
                        resolved_at: r.get(9)?,
                        notified_at: r.get(10)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
                .context("reading incidents")?;
        }
        if schema_version >= migrations::NOTIFICATIONS {
            let now = kattila_fleet::unix_now();
            snap.silences = crate::notify::silences(conn, Some(now))
                .context("reading silences")?
                .into_iter()
                .filter(|s| s.ends_at > now)
                .collect();
            snap.windows = crate::notify::windows(conn).context("reading maintenance windows")?;
        }
        snap.agents = agents;
        Ok(snap)
    }
}
