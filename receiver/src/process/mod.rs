//! What the receiver makes of a verified report: the agent's current state
//! (interfaces, routes, WireGuard devices and peers), the topology, the alarm
//! lifecycle and compact history. Runs on the writer thread inside the batch
//! transaction, so everything a report changes commits with it or not at all.
//!
//! Per-agent state is cached in memory (loaded from the database on first
//! use) so that a report which changes nothing but counters writes little:
//! the disk, not the CPU, limits ingest.

mod alarms;
mod history;
mod topology;

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use kattila_proto::model::{Interface, Route, WgPeer};
use kattila_proto::{Message, Report, Verified};
use rusqlite::{params, Connection, OptionalExtension};

pub use alarms::{AlarmKind, Severity};

/// Tunables of processing; see `kattila-receiver --help`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Expected seconds between two reports of one agent.
    pub interval_secs: i64,
    /// Consecutive observations before an alarm is raised or resolved.
    pub alarm_threshold: i64,
    /// A WireGuard peer whose newest handshake is older than this, and whose
    /// received bytes stopped growing, is stale.
    pub stale_after_secs: i64,
    /// At most one history sample and one counter update per agent per this.
    pub sample_secs: i64,
    /// Event alarms (new interface, endpoint changed) resolve after this.
    pub event_ttl_secs: i64,
    /// Raw reports older than this are deleted from the audit table.
    pub audit_retention_secs: i64,
    /// History samples are kept this long (rolled up hourly after a day).
    pub history_retention_secs: i64,
    /// Keep the raw copy of every report, not only of reports that changed
    /// something and one per `audit_interval_secs` per agent.
    pub audit_every_report: bool,
    pub audit_interval_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval_secs: 30,
            alarm_threshold: 2,
            stale_after_secs: 180,
            sample_secs: 60,
            event_ttl_secs: 3600,
            audit_retention_secs: 86_400,
            history_retention_secs: 7 * 86_400,
            audit_every_report: false,
            audit_interval_secs: 300,
        }
    }
}

/// What the receiver remembers of one agent between reports.
#[derive(Debug, Default)]
struct AgentCache {
    hostnames: VecDeque<String>,
    interfaces: HashMap<String, CachedInterface>,
    /// device → peer public key → peer.
    peers: HashMap<String, HashMap<String, CachedPeer>>,
    device_keys: Vec<String>,
    /// Unix seconds when counters were last written to the snapshot tables.
    counters_written: i64,
    /// Totals of the last history sample: (ts, rx, tx).
    last_sample: Option<(i64, u64, u64)>,
    /// Fingerprint of the routes as last stored (None: not known yet). A
    /// hash, not a copy: a fleet's route tables would cost megabytes.
    routes: Option<u64>,
    /// Unix seconds when a raw copy of this agent's report was last kept.
    raw_kept_at: i64,
    /// Reports processed since the cache was loaded.
    reports: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct CachedInterface {
    kind: String,
    state: String,
    mtu: u32,
    mac: Option<String>,
    addresses: Vec<String>,
    gone: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct CachedPeer {
    /// The agent's report count when the peer was last reported; peers
    /// with an older mark have been removed.
    reported_in: u64,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    latest_handshake: Option<i64>,
    rx_bytes: u64,
    rx_grew_at: Option<i64>,
    health: &'static str,
    peer_agent_id: Option<String>,
}

/// The processing state owned by the writer thread.
#[derive(Debug, Default)]
pub struct Processor {
    pub settings: Settings,
    agents: HashMap<String, AgentCache>,
    conditions: alarms::Conditions,
    topology: topology::Topology,
    loaded: bool,
}

impl Processor {
    pub fn new(settings: Settings) -> Self {
        Processor { settings, ..Processor::default() }
    }

    /// Forgets every cache; they are reloaded from the database on next use.
    /// Called after a failed transaction so memory never disagrees with disk.
    pub fn invalidate(&mut self) {
        let settings = self.settings.clone();
        *self = Processor::new(settings);
    }

    fn ensure_loaded(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if !self.loaded {
            self.topology.load(conn)?;
            self.conditions.load(conn)?;
            self.loaded = true;
        }
        Ok(())
    }

    /// Applies an accepted message (its `agents` row is already written).
    /// Returns whether the raw copy of this message should be kept for the
    /// audit: always for registers, relayed messages and reports that changed
    /// something (state, topology, alarms); otherwise once per audit interval.
    pub fn apply(
        &mut self,
        conn: &Connection,
        verified: &Verified,
        now: i64,
    ) -> rusqlite::Result<bool> {
        self.ensure_loaded(conn)?;
        let origin = &verified.origin().agent_id;
        // A report proves the agent is alive, however it arrived.
        self.conditions.observe(
            conn,
            &self.settings,
            AlarmKind::AgentSilent,
            origin,
            "",
            false,
            now,
            "",
        )?;
        topology::record_relays(conn, verified, now)?;
        let hops = verified.relay_hops();
        let relay_msg = format!("reachable only through {hops} relay(s)");
        self.conditions.observe(
            conn,
            &self.settings,
            AlarmKind::RelayOnly,
            origin,
            "",
            hops > 0,
            now,
            &relay_msg,
        )?;
        let transitions = self.conditions.transitions;
        let changed = match &verified.message {
            Message::Report(report) => self.apply_report(conn, report, now)?,
            Message::Register(_) => true,
        };
        let changed = changed || hops > 0 || self.conditions.transitions != transitions;
        let cache = Self::cache(&mut self.agents, conn, origin)?;
        let keep = changed
            || self.settings.audit_every_report
            || now - cache.raw_kept_at >= self.settings.audit_interval_secs;
        if keep {
            cache.raw_kept_at = now;
        }
        Ok(keep)
    }

    fn cache<'a>(
        agents: &'a mut HashMap<String, AgentCache>,
        conn: &Connection,
        agent_id: &str,
    ) -> rusqlite::Result<&'a mut AgentCache> {
        if !agents.contains_key(agent_id) {
            let cache = load_agent_cache(conn, agent_id)?;
            agents.insert(agent_id.to_string(), cache);
        }
        Ok(agents.get_mut(agent_id).expect("inserted above"))
    }

    /// Returns whether the report changed any stored state (not counting counters).
    fn apply_report(&mut self, conn: &Connection, r: &Report, now: i64) -> rusqlite::Result<bool> {
        let s = self.settings.clone();
        let id = r.agent_id.as_str();
        let observe_clear = self.conditions.tracks(id);
        let cache = Self::cache(&mut self.agents, conn, id)?;
        let first_report = cache.interfaces.is_empty() && cache.peers.is_empty();
        let write_counters = now - cache.counters_written >= s.sample_secs;
        if write_counters {
            cache.counters_written = now;
        }

        // Identity conflict: the hostname flips back and forth between values.
        cache.hostnames.push_back(r.hostname.clone());
        while cache.hostnames.len() > 4 {
            cache.hostnames.pop_front();
        }
        let conflict = hostname_flips(&cache.hostnames);
        let conflict_msg = if conflict {
            format!("agent id used by more than one host ({})", distinct(&cache.hostnames))
        } else {
            String::new()
        };

        let (iface_events, ifaces_changed) =
            update_interfaces(conn, id, cache, &r.interfaces, now, write_counters, observe_clear)?;
        let routes_changed = update_routes_if_changed(conn, id, cache, r)?;
        let mut device_keys: Vec<String> =
            r.wireguard.iter().map(|d| d.public_key.clone()).collect();
        device_keys.sort();
        let devices_changed = device_keys != cache.device_keys;
        if devices_changed {
            conn.prepare_cached("DELETE FROM wg_devices WHERE agent_id = ?1")?.execute([id])?;
            for d in &r.wireguard {
                conn.prepare_cached(
                    "INSERT INTO wg_devices (agent_id, name, public_key, listen_port) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, d.name, d.public_key, d.listen_port])?;
            }
            cache.device_keys = device_keys.clone();
        }
        let (peer_events, peers_changed) = update_peers(
            conn,
            id,
            cache,
            r,
            &self.topology,
            &s,
            now,
            write_counters,
            observe_clear,
        )?;
        history::maybe_sample(conn, id, cache, r, &s, now)?;
        let changed = ifaces_changed || routes_changed || devices_changed || peers_changed;

        // Topology.
        if devices_changed {
            self.topology.set_device_keys(conn, id, &device_keys, now)?;
        }
        let cache = Self::cache(&mut self.agents, conn, id)?;
        let facts: Vec<topology::PeerFact<'_>> = cache
            .peers
            .values()
            .flatten()
            .map(|(key, p)| topology::PeerFact {
                public_key: key,
                peer_agent_id: p.peer_agent_id.as_deref(),
                health: p.health,
                latest_handshake: p.latest_handshake,
            })
            .collect();
        self.topology.update_wireguard_edges(conn, id, &facts, now, &s)?;
        let wg_names: Vec<&str> = r.wireguard.iter().map(|d| d.name.as_str()).collect();
        let networks = topology::physical_networks(&r.interfaces, &wg_names);
        self.topology.update_physical(conn, id, networks, now)?;

        // Alarms.
        let c = &mut self.conditions;
        c.observe(conn, &s, AlarmKind::IdentityConflict, id, "", conflict, now, &conflict_msg)?;
        for e in iface_events {
            match e {
                IfaceObservation::Down { name, down } => {
                    let msg = format!("interface {name} is down");
                    c.observe(conn, &s, AlarmKind::InterfaceDown, id, &name, down, now, &msg)?;
                }
                IfaceObservation::Gone { name, gone } => {
                    let msg = format!("interface {name} disappeared");
                    c.observe(conn, &s, AlarmKind::InterfaceGone, id, &name, gone, now, &msg)?;
                }
                IfaceObservation::New { name } if !first_report => {
                    let msg = format!("new interface {name}");
                    c.event(conn, AlarmKind::InterfaceNew, id, &name, now, &msg)?;
                }
                IfaceObservation::New { .. } => {}
            }
        }
        for e in peer_events {
            match e {
                PeerObservation::Stale { subject, stale, message } => {
                    c.observe(conn, &s, AlarmKind::PeerStale, id, &subject, stale, now, &message)?;
                }
                PeerObservation::EndpointChanged { subject, message } => {
                    c.event(conn, AlarmKind::EndpointChanged, id, &subject, now, &message)?;
                }
            }
        }
        Ok(changed)
    }

    /// Timer work: silent agents, expiring events, retention. Runs on the
    /// writer thread like any batch.
    pub fn sweep(&mut self, conn: &Connection, now: i64) -> rusqlite::Result<()> {
        self.ensure_loaded(conn)?;
        let s = self.settings.clone();
        let silent = kattila_store::audit::mark_silent(
            conn,
            now - kattila_fleet::silent_after(s.interval_secs),
        )?;
        for (agent, last_seen) in silent {
            let msg = format!("no report for {} s", now - last_seen);
            // Silence is unambiguous: raise at once, no streak needed.
            self.conditions.raise_now(conn, AlarmKind::AgentSilent, &agent, "", now, &msg)?;
        }
        self.conditions.expire_events(conn, now, s.event_ttl_secs)?;
        conn.prepare_cached("DELETE FROM reports WHERE received_at < ?1")?
            .execute([now - s.audit_retention_secs])?;
        topology::expire_relay_edges(conn, now - 6 * s.interval_secs.max(10))?;
        history::roll_up(conn, now, s.history_retention_secs)?;
        Ok(())
    }

    /// Forgets one agent's (or every agent's) topology state and alarms, as
    /// asked by an administrator. Returns the number of agents reset.
    pub fn reset(&mut self, conn: &Connection, agent: Option<&str>) -> rusqlite::Result<usize> {
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
                conn.execute("SELECT 1 FROM agents WHERE agent_id = ?1", [id]).map(|_| ()).ok();
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
        self.invalidate();
        Ok(n)
    }

    /// Acknowledges an alarm; returns false when there is no such alarm.
    pub fn ack(&mut self, conn: &Connection, alarm_id: i64, now: i64) -> rusqlite::Result<bool> {
        let n = conn.execute(
            "UPDATE alarms SET acked_at = coalesce(acked_at, ?2) WHERE id = ?1",
            params![alarm_id, now],
        )?;
        Ok(n > 0)
    }
}

fn hostname_flips(names: &VecDeque<String>) -> bool {
    // A, B, A: two hosts take turns with one agent id. A single rename (A, B, B) is not a conflict.
    names
        .iter()
        .zip(names.iter().skip(2))
        .zip(names.iter().skip(1))
        .any(|((a, c), b)| a == c && a != b)
}

fn distinct(names: &VecDeque<String>) -> String {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

fn load_agent_cache(conn: &Connection, agent_id: &str) -> rusqlite::Result<AgentCache> {
    let mut cache = AgentCache::default();
    if let Some(h) = conn
        .query_row(
            "SELECT hostname FROM agents WHERE agent_id = ?1 AND reports > 0",
            [agent_id],
            |r| r.get(0),
        )
        .optional()?
    {
        cache.hostnames.push_back(h);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT name, kind, state, mtu, mac, addresses FROM interfaces WHERE agent_id = ?1",
    )?;
    let rows = stmt.query_map([agent_id], |r| {
        let state: String = r.get(2)?;
        let addresses: String = r.get(5)?;
        Ok((
            r.get::<_, String>(0)?,
            CachedInterface {
                kind: r.get(1)?,
                gone: state == "gone",
                state,
                mtu: r.get(3)?,
                mac: r.get(4)?,
                addresses: serde_json::from_str(&addresses).unwrap_or_default(),
            },
        ))
    })?;
    for row in rows {
        let (name, iface) = row?;
        cache.interfaces.insert(name, iface);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT device, public_key, endpoint, allowed_ips, latest_handshake, rx_bytes, rx_grew_at, health, peer_agent_id
         FROM wg_peers WHERE agent_id = ?1",
    )?;
    let rows = stmt.query_map([agent_id], |r| {
        let allowed: String = r.get(3)?;
        let health: String = r.get(7)?;
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            CachedPeer {
                reported_in: 0,
                endpoint: r.get(2)?,
                allowed_ips: serde_json::from_str(&allowed).unwrap_or_default(),
                latest_handshake: r.get(4)?,
                rx_bytes: r.get::<_, i64>(5)? as u64,
                rx_grew_at: r.get(6)?,
                health: peer_health_name(&health),
                peer_agent_id: r.get(8)?,
            },
        ))
    })?;
    for row in rows {
        let ((device, key), p) = row?;
        cache.peers.entry(device).or_default().insert(key, p);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT public_key FROM wg_devices WHERE agent_id = ?1 ORDER BY public_key",
    )?;
    cache.device_keys = stmt.query_map([agent_id], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(cache)
}

fn peer_health_name(s: &str) -> &'static str {
    match s {
        "healthy" => "healthy",
        "stale" => "stale",
        _ => "never",
    }
}

enum IfaceObservation {
    Down { name: String, down: bool },
    Gone { name: String, gone: bool },
    New { name: String },
}

fn is_down(state: &str) -> bool {
    matches!(state, "down" | "lowerlayerdown" | "notpresent")
}

/// `observe_clear`: whether observations that a condition is clear matter
/// (the agent has a condition streaking or alarmed); without, only the
/// conditions that hold are reported back.
fn update_interfaces(
    conn: &Connection,
    agent_id: &str,
    cache: &mut AgentCache,
    interfaces: &[Interface],
    now: i64,
    write_counters: bool,
    observe_clear: bool,
) -> rusqlite::Result<(Vec<IfaceObservation>, bool)> {
    let mut events = Vec::new();
    let mut any_changed = false;
    for i in interfaces {
        let previous = cache.interfaces.get_mut(&i.name);
        let changed = previous.as_ref().is_none_or(|c| {
            c.gone
                || c.kind != i.kind
                || c.state != i.state
                || c.mtu != i.mtu
                || c.mac != i.mac
                || c.addresses != i.addresses
        });
        any_changed |= changed;
        if previous.is_none() {
            events.push(IfaceObservation::New { name: i.name.clone() });
        }
        if changed {
            let cached = CachedInterface {
                kind: i.kind.clone(),
                state: i.state.clone(),
                mtu: i.mtu,
                mac: i.mac.clone(),
                addresses: i.addresses.clone(),
                gone: false,
            };
            match previous {
                Some(c) => *c = cached,
                None => {
                    cache.interfaces.insert(i.name.clone(), cached);
                }
            }
        }
        if changed || write_counters {
            conn.prepare_cached(
                "INSERT INTO interfaces (agent_id, name, kind, state, mtu, mac, addresses, rx_bytes, tx_bytes,
                                         rx_errors, tx_errors, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
                 ON CONFLICT(agent_id, name) DO UPDATE SET kind = excluded.kind, state = excluded.state,
                     mtu = excluded.mtu, mac = excluded.mac, addresses = excluded.addresses,
                     rx_bytes = excluded.rx_bytes, tx_bytes = excluded.tx_bytes, rx_errors = excluded.rx_errors,
                     tx_errors = excluded.tx_errors, last_seen = excluded.last_seen",
            )?
            .execute(params![
                agent_id,
                i.name,
                i.kind,
                i.state,
                i.mtu,
                i.mac,
                serde_json::to_string(&i.addresses).unwrap_or_else(|_| "[]".into()),
                i.rx_bytes as i64,
                i.tx_bytes as i64,
                i.rx_errors as i64,
                i.tx_errors as i64,
                now,
            ])?;
        }
        // Observed every time (when they can matter): the clear
        // observations resolve the alarms. Present clears 'gone'.
        let down = is_down(&i.state);
        if observe_clear {
            events.push(IfaceObservation::Gone { name: i.name.clone(), gone: false });
        }
        if down || observe_clear {
            events.push(IfaceObservation::Down { name: i.name.clone(), down });
        }
    }
    // Interfaces that were reported before and are missing now stay in the
    // snapshot as 'gone' until they return or an administrator resets the agent.
    let present: HashSet<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    for (name, iface) in cache.interfaces.iter_mut() {
        if present.contains(name.as_str()) {
            continue;
        }
        if !iface.gone {
            any_changed = true;
            iface.gone = true;
            iface.state = "gone".into();
            conn.prepare_cached("UPDATE interfaces SET state = 'gone', last_seen = ?3 WHERE agent_id = ?1 AND name = ?2")?
                .execute(params![agent_id, name, now])?;
        }
        events.push(IfaceObservation::Gone { name: name.clone(), gone: true });
    }
    Ok((events, any_changed))
}

fn update_routes_if_changed(
    conn: &Connection,
    agent_id: &str,
    cache: &mut AgentCache,
    r: &Report,
) -> rusqlite::Result<bool> {
    if cache.routes.is_none() {
        let mut stmt = conn.prepare_cached(
            "SELECT dst, gateway, dev, metric, table_id FROM routes WHERE agent_id = ?1 ORDER BY rowid",
        )?;
        let stored: Vec<Route> = stmt
            .query_map([agent_id], |row| {
                Ok(Route {
                    dst: row.get(0)?,
                    gateway: row.get(1)?,
                    dev: row.get(2)?,
                    metric: row.get(3)?,
                    table: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        cache.routes = Some(routes_fingerprint(&stored));
    }
    let fingerprint = routes_fingerprint(&r.routes);
    if cache.routes == Some(fingerprint) {
        return Ok(false);
    }
    conn.prepare_cached("DELETE FROM routes WHERE agent_id = ?1")?.execute([agent_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO routes (agent_id, dst, gateway, dev, metric, table_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for route in &r.routes {
        insert.execute(params![
            agent_id,
            route.dst,
            route.gateway,
            route.dev,
            route.metric,
            route.table
        ])?;
    }
    cache.routes = Some(fingerprint);
    Ok(true)
}

fn routes_fingerprint(routes: &[Route]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    for r in routes {
        (&r.dst, &r.gateway, &r.dev, r.metric, r.table).hash(&mut h);
    }
    routes.len().hash(&mut h);
    h.finish()
}

enum PeerObservation {
    Stale { subject: String, stale: bool, message: String },
    EndpointChanged { subject: String, message: String },
}

/// Health of one end's view of a peer: a recent handshake, or received bytes
/// still growing, mean the link works; handshake age alone flaps on idle links.
fn judge_peer(p: &WgPeer, rx_grew: bool, now: i64, stale_after: i64) -> &'static str {
    match p.latest_handshake {
        None | Some(0) => "never",
        Some(hs) if now - hs <= stale_after || rx_grew => "healthy",
        Some(_) => "stale",
    }
}

/// Compares the report's peers with the cached ones, writes what changed
/// (and the counters once per sample interval), and returns the peer
/// conditions to observe (clear ones only when `observe_clear`, as in
/// [`update_interfaces`]). An unchanged peer is updated in place: this runs
/// for every peer of every report.
#[allow(clippy::too_many_arguments)]
fn update_peers(
    conn: &Connection,
    agent_id: &str,
    cache: &mut AgentCache,
    r: &Report,
    topology: &topology::Topology,
    s: &Settings,
    now: i64,
    write_counters: bool,
    observe_clear: bool,
) -> rusqlite::Result<(Vec<PeerObservation>, bool)> {
    let mut any_changed = false;
    let mut events = Vec::new();
    cache.reports += 1;
    let this_report = cache.reports;
    for d in &r.wireguard {
        let device = match cache.peers.get_mut(&d.name) {
            Some(device) => device,
            None => cache.peers.entry(d.name.clone()).or_default(),
        };
        for p in &d.peers {
            let previous = device.get_mut(&p.public_key);
            let rx_grew = previous.as_ref().is_some_and(|prev| p.rx_bytes > prev.rx_bytes);
            let rx_grew_at = if rx_grew {
                Some(now)
            } else {
                previous.as_ref().and_then(|prev| prev.rx_grew_at)
            };
            let health = judge_peer(p, rx_grew, now, s.stale_after_secs);
            let peer_agent_id = topology.owner_of(&p.public_key);
            let structural = previous.as_ref().is_none_or(|prev| {
                prev.endpoint != p.endpoint
                    || prev.allowed_ips != p.allowed_ips
                    || prev.health != health
                    || prev.peer_agent_id.as_deref() != peer_agent_id
            });
            any_changed |= structural;
            let endpoint_change = previous
                .as_ref()
                .and_then(|prev| prev.endpoint.as_ref())
                .zip(p.endpoint.as_ref())
                .is_some_and(|(old, new)| old != new);
            match previous {
                Some(prev) if !structural => {
                    prev.reported_in = this_report;
                    prev.latest_handshake = p.latest_handshake;
                    prev.rx_bytes = p.rx_bytes;
                    prev.rx_grew_at = rx_grew_at;
                }
                _ => {
                    let cached = CachedPeer {
                        reported_in: this_report,
                        endpoint: p.endpoint.clone(),
                        allowed_ips: p.allowed_ips.clone(),
                        latest_handshake: p.latest_handshake,
                        rx_bytes: p.rx_bytes,
                        rx_grew_at,
                        health,
                        peer_agent_id: peer_agent_id.map(str::to_string),
                    };
                    device.insert(p.public_key.clone(), cached);
                }
            }
            if structural || write_counters {
                conn.prepare_cached(
                    "INSERT INTO wg_peers (agent_id, device, public_key, peer_agent_id, endpoint, allowed_ips,
                         latest_handshake, rx_bytes, tx_bytes, persistent_keepalive, rx_grew_at, health, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
                     ON CONFLICT(agent_id, device, public_key) DO UPDATE SET peer_agent_id = excluded.peer_agent_id,
                         endpoint = excluded.endpoint, allowed_ips = excluded.allowed_ips,
                         latest_handshake = excluded.latest_handshake, rx_bytes = excluded.rx_bytes,
                         tx_bytes = excluded.tx_bytes, persistent_keepalive = excluded.persistent_keepalive,
                         rx_grew_at = excluded.rx_grew_at, health = excluded.health, last_seen = excluded.last_seen",
                )?
                .execute(params![
                    agent_id,
                    d.name,
                    p.public_key,
                    peer_agent_id,
                    p.endpoint,
                    serde_json::to_string(&p.allowed_ips).unwrap_or_else(|_| "[]".into()),
                    p.latest_handshake,
                    p.rx_bytes as i64,
                    p.tx_bytes as i64,
                    p.persistent_keepalive,
                    rx_grew_at,
                    health,
                    now,
                ])?;
            }
            let stale = health != "healthy";
            if !(stale || observe_clear || endpoint_change) {
                continue;
            }
            let subject = format!("{}:{}", d.name, p.public_key);
            let name = peer_agent_id.unwrap_or(&p.public_key[..8]);
            if stale || observe_clear {
                let message = if stale {
                    let age = p
                        .latest_handshake
                        .map_or("never".to_string(), |hs| format!("{} s ago", now - hs));
                    format!("WireGuard peer {name} on {}: last handshake {age}", d.name)
                } else {
                    String::new()
                };
                events.push(PeerObservation::Stale { subject: subject.clone(), stale, message });
            }
            if endpoint_change {
                let message = format!("WireGuard peer {name} on {} changed endpoint", d.name);
                events.push(PeerObservation::EndpointChanged { subject, message });
            }
        }
    }
    // Peers removed from the configuration (or whose device went) leave
    // the snapshot; their conditions clear.
    let removed: Vec<(String, String)> = cache
        .peers
        .iter()
        .flat_map(|(device, peers)| peers.iter().map(move |(key, p)| (device, key, p)))
        .filter(|(_, _, p)| p.reported_in != this_report)
        .map(|(device, key, _)| (device.clone(), key.clone()))
        .collect();
    for (device, key) in removed {
        conn.prepare_cached(
            "DELETE FROM wg_peers WHERE agent_id = ?1 AND device = ?2 AND public_key = ?3",
        )?
        .execute(params![agent_id, device, key])?;
        events.push(PeerObservation::Stale {
            subject: format!("{device}:{key}"),
            stale: false,
            message: String::new(),
        });
        if let Some(peers) = cache.peers.get_mut(&device) {
            peers.remove(&key);
        }
        any_changed = true;
    }
    cache.peers.retain(|_, peers| !peers.is_empty());
    Ok((events, any_changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_flip_detection() {
        let q = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<VecDeque<_>>();
        assert!(!hostname_flips(&q(&["a", "a", "a"])));
        assert!(!hostname_flips(&q(&["a", "b", "b"])), "a rename is not a conflict");
        assert!(hostname_flips(&q(&["a", "b", "a"])));
        assert!(hostname_flips(&q(&["b", "a", "b", "a"])));
    }
}
