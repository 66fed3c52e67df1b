//! Topology inference. WireGuard edges join two agents when one lists the
//! other's device key as a peer (`both_ends` when each lists the other);
//! peers whose key belongs to no agent are external and kept as such. Relay
//! edges come from relay chains, physical edges from subnets two agents share.
//!
//! Edge rows are rewritten only when something visible changed (ends,
//! health) or, for handshake ages, at most once per sample interval.

use std::collections::BTreeSet;
use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};
use kattila_proto::limits::parse_cidr;
use kattila_proto::model::Interface;
use kattila_proto::Verified;
use rusqlite::{params, Connection};

use super::Settings;

/// Subnets with more agents than this get no physical edges: a flat /16 of
/// a thousand hosts would otherwise produce half a million edges.
pub const PHYSICAL_SUBNET_CAP: usize = 32;

type EdgeKey = (String, String, String); // (a_agent, b_agent, b_external)

#[derive(Debug, Clone, PartialEq)]
struct EdgeState {
    both_ends: bool,
    health: &'static str,
    written_at: i64,
}

/// How one agent sees another over WireGuard: best health and newest
/// handshake over its peers that are devices of the other agent.
pub type View = (&'static str, Option<i64>);

/// One peer as the processor reports it to the topology.
pub struct PeerFact<'a> {
    pub public_key: &'a str,
    pub peer_agent_id: Option<&'a str>,
    pub health: &'static str,
    pub latest_handshake: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Topology {
    /// WireGuard public key → agent id.
    owner: HashMap<String, String>,
    /// Agent id → its device keys.
    devices: HashMap<String, Vec<String>>,
    /// from agent → to agent → how `from` sees `to`.
    views: HashMap<String, HashMap<String, View>>,
    /// Subnet → agents with an address in it.
    subnets: HashMap<String, BTreeSet<String>>,
    agent_subnets: HashMap<String, BTreeSet<String>>,
    /// WireGuard edges as last written, and each agent's edges.
    wg_edges: HashMap<EdgeKey, EdgeState>,
    edges_of: HashMap<String, BTreeSet<EdgeKey>>,
    /// Agent → fingerprint of its peers' structure (key, owner, health) and
    /// when its edges were last brought up to date from them.
    peer_structure: HashMap<String, (u64, i64)>,
}

impl Topology {
    pub fn load(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare("SELECT agent_id, public_key FROM wg_devices")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (agent, key) = row?;
            self.owner.insert(key.clone(), agent.clone());
            self.devices.entry(agent).or_default().push(key);
        }
        let mut stmt = conn.prepare(
            "SELECT agent_id, peer_agent_id, health, latest_handshake FROM wg_peers WHERE peer_agent_id IS NOT NULL",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })? {
            let (from, to, health, hs) = row?;
            let view = self.views.entry(from).or_default().entry(to).or_insert(("down", None));
            *view = merge(*view, (health_name(&health), hs));
        }
        let mut stmt = conn.prepare(
            "SELECT agent_id, kind, addresses, name FROM interfaces WHERE state != 'gone'",
        )?;
        let mut per_agent: HashMap<String, Vec<Interface>> = HashMap::new();
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })? {
            let (agent, kind, addresses, name) = row?;
            per_agent.entry(agent).or_default().push(Interface {
                name,
                kind,
                state: String::new(),
                mtu: 0,
                mac: None,
                addresses: serde_json::from_str(&addresses).unwrap_or_default(),
                rx_bytes: 0,
                tx_bytes: 0,
                rx_errors: 0,
                tx_errors: 0,
            });
        }
        let mut stmt = conn.prepare("SELECT agent_id, name FROM wg_devices")?;
        let mut wg_names: HashMap<String, Vec<String>> = HashMap::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (agent, name) = row?;
            wg_names.entry(agent).or_default().push(name);
        }
        for (agent, ifaces) in per_agent {
            let names: Vec<&str> = wg_names
                .get(&agent)
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let nets = physical_networks(&ifaces, &names);
            for n in &nets {
                self.subnets.entry(n.clone()).or_default().insert(agent.clone());
            }
            self.agent_subnets.insert(agent, nets);
        }
        let mut stmt = conn.prepare(
            "SELECT a_agent, b_agent, b_external, both_ends, health, last_seen
             FROM topology_edges WHERE kind = 'wireguard'",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                r.get::<_, bool>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })? {
            let (key, both_ends, health, last_seen) = row?;
            let state =
                EdgeState { both_ends, health: health_name(&health), written_at: last_seen };
            self.index_edge(&key);
            self.wg_edges.insert(key, state);
        }
        Ok(())
    }

    pub fn owner_of(&self, key: &str) -> Option<&str> {
        self.owner.get(key).map(String::as_str)
    }

    fn index_edge(&mut self, key: &EdgeKey) {
        self.edges_of.entry(key.0.clone()).or_default().insert(key.clone());
        if !key.1.is_empty() {
            self.edges_of.entry(key.1.clone()).or_default().insert(key.clone());
        }
    }

    /// Records an agent's device keys. Peers elsewhere that pointed at one of
    /// the new keys stop being external and get agent-to-agent edges.
    pub fn set_device_keys(
        &mut self,
        conn: &Connection,
        agent: &str,
        keys: &[String],
        now: i64,
    ) -> rusqlite::Result<()> {
        self.peer_structure.remove(agent);
        if let Some(old) = self.devices.remove(agent) {
            for k in old {
                if self.owner.get(&k).is_some_and(|a| a == agent) {
                    self.owner.remove(&k);
                }
            }
        }
        let mut listers = BTreeSet::new();
        for k in keys {
            self.owner.insert(k.clone(), agent.to_string());
            conn.prepare_cached("UPDATE wg_peers SET peer_agent_id = ?2 WHERE public_key = ?1")?
                .execute(params![k, agent])?;
            let mut stmt = conn.prepare_cached(
                "SELECT agent_id, health, latest_handshake FROM wg_peers WHERE public_key = ?1",
            )?;
            let rows: Vec<(String, String, Option<i64>)> = stmt
                .query_map([k], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (lister, health, hs) in rows {
                if lister == agent {
                    continue;
                }
                let view = self
                    .views
                    .entry(lister.clone())
                    .or_default()
                    .entry(agent.to_string())
                    .or_insert(("down", None));
                *view = merge(*view, (health_name(&health), hs));
                self.delete_edge(conn, (lister.clone(), String::new(), k.clone()))?;
                // The lister's edges changed outside its own reports.
                self.peer_structure.remove(&lister);
                listers.insert(lister);
            }
        }
        self.devices.insert(agent.to_string(), keys.to_vec());
        for other in listers {
            self.write_pair(conn, agent, &other, now, i64::MAX)?;
        }
        Ok(())
    }

    /// Refreshes every WireGuard edge that `agent` is an end of, from its
    /// current peers.
    pub fn update_wireguard_edges(
        &mut self,
        conn: &Connection,
        agent: &str,
        peers: &[PeerFact<'_>],
        now: i64,
        s: &Settings,
    ) -> rusqlite::Result<()> {
        // Most reports change no peer's owner or health. Then the edges stay
        // as they are, and only the handshakes behind them move; the edges
        // are rewritten (handshake age, last_seen) once per sample interval.
        let fingerprint = peer_fingerprint(peers);
        if let Some(&(known, refreshed_at)) = self.peer_structure.get(agent) {
            if known == fingerprint && now - refreshed_at < s.sample_secs {
                self.refresh_handshakes(agent, peers);
                return Ok(());
            }
        }
        self.peer_structure.insert(agent.to_string(), (fingerprint, now));
        let mut views: HashMap<String, View> = HashMap::new();
        let mut current: BTreeSet<EdgeKey> = BTreeSet::new();
        for p in peers {
            match p.peer_agent_id {
                Some(other) if other != agent => {
                    let v = views.entry(other.to_string()).or_insert(("down", None));
                    *v = merge(*v, (p.health, p.latest_handshake));
                }
                Some(_) => {} // a device peering with another device of the same agent
                None => {
                    let edge = (agent.to_string(), String::new(), p.public_key.to_string());
                    let state = EdgeState {
                        both_ends: false,
                        health: health_name(p.health),
                        written_at: now,
                    };
                    current.insert(edge.clone());
                    self.write_edge(conn, edge, state, None, now, s.sample_secs)?;
                }
            }
        }
        let others: Vec<String> = views.keys().cloned().collect();
        self.views.insert(agent.to_string(), views);
        for other in &others {
            let (a, b) = ordered(agent, other);
            current.insert((a.to_string(), b.to_string(), String::new()));
            self.write_pair(conn, agent, other, now, s.sample_secs)?;
        }
        // Edges this agent no longer has a peer for: keep them only if the
        // other end still lists this agent.
        let gone: Vec<EdgeKey> = self
            .edges_of
            .get(agent)
            .map(|edges| edges.iter().filter(|k| !current.contains(*k)).cloned().collect())
            .unwrap_or_default();
        for (a, b, ext) in gone {
            if b.is_empty() {
                self.delete_edge(conn, (a, b, ext))?;
            } else {
                let other = if a == agent { b.clone() } else { a.clone() };
                self.write_pair(conn, agent, &other, now, s.sample_secs)?;
            }
        }
        Ok(())
    }

    /// Newest handshakes of `agent`'s views of other agents, when the views
    /// are otherwise unchanged.
    fn refresh_handshakes(&mut self, agent: &str, peers: &[PeerFact<'_>]) {
        let Some(views) = self.views.get_mut(agent) else { return };
        for view in views.values_mut() {
            view.1 = None;
        }
        for p in peers {
            if let Some(view) = p.peer_agent_id.and_then(|other| views.get_mut(other)) {
                view.1 = view.1.max(p.latest_handshake);
            }
        }
    }

    /// Writes the edge between two agents from both ends' current views.
    fn write_pair(
        &mut self,
        conn: &Connection,
        x: &str,
        y: &str,
        now: i64,
        min_gap: i64,
    ) -> rusqlite::Result<()> {
        let view = |from: &str, to: &str| self.views.get(from).and_then(|m| m.get(to)).copied();
        let (view_xy, view_yx) = (view(x, y), view(y, x));
        let (a, b) = ordered(x, y);
        let edge = (a.to_string(), b.to_string(), String::new());
        let (health, handshake) = match (view_xy, view_yx) {
            (None, None) => return self.delete_edge(conn, edge),
            (Some(v), None) | (None, Some(v)) => v,
            (Some(v), Some(w)) => merge(v, w),
        };
        let state = EdgeState {
            both_ends: view_xy.is_some() && view_yx.is_some(),
            health,
            written_at: now,
        };
        let age = handshake.map(|hs| (now - hs).max(0));
        self.write_edge(conn, edge, state, age, now, min_gap)
    }

    fn write_edge(
        &mut self,
        conn: &Connection,
        key: EdgeKey,
        state: EdgeState,
        handshake_age: Option<i64>,
        now: i64,
        min_gap: i64,
    ) -> rusqlite::Result<()> {
        if let Some(old) = self.wg_edges.get(&key) {
            let same = old.both_ends == state.both_ends && old.health == state.health;
            if same && now.saturating_sub(old.written_at) < min_gap {
                return Ok(());
            }
        }
        conn.prepare_cached(
            "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, handshake_age,
                                         first_seen, last_seen)
             VALUES ('wireguard', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET both_ends = excluded.both_ends,
                 health = excluded.health, handshake_age = excluded.handshake_age, last_seen = excluded.last_seen",
        )?
        .execute(params![key.0, key.1, key.2, state.both_ends, state.health, handshake_age, now])?;
        self.index_edge(&key);
        self.wg_edges.insert(key, state);
        Ok(())
    }

    fn delete_edge(&mut self, conn: &Connection, key: EdgeKey) -> rusqlite::Result<()> {
        if self.wg_edges.remove(&key).is_some() {
            for end in [&key.0, &key.1] {
                if let Some(set) = self.edges_of.get_mut(end) {
                    set.remove(&key);
                }
            }
            conn.prepare_cached(
                "DELETE FROM topology_edges
                 WHERE kind = 'wireguard' AND a_agent = ?1 AND b_agent = ?2 AND b_external = ?3",
            )?
            .execute(params![key.0, key.1, key.2])?;
        }
        Ok(())
    }

    /// Updates the subnets `agent` is in and its physical edges, when they changed.
    pub fn update_physical(
        &mut self,
        conn: &Connection,
        agent: &str,
        nets: BTreeSet<String>,
        now: i64,
    ) -> rusqlite::Result<()> {
        if self.agent_subnets.get(agent) == Some(&nets) {
            return Ok(());
        }
        if let Some(old) = self.agent_subnets.remove(agent) {
            for n in old {
                if let Some(members) = self.subnets.get_mut(&n) {
                    members.remove(agent);
                }
            }
        }
        for n in &nets {
            self.subnets.entry(n.clone()).or_default().insert(agent.to_string());
        }
        // Two statements, so each uses an index (an OR would scan every
        // physical edge of the fleet; `+kind` keeps the planner on edges_by_b).
        for sql in [
            "DELETE FROM topology_edges WHERE kind = 'physical' AND a_agent = ?1",
            "DELETE FROM topology_edges WHERE b_agent = ?1 AND +kind = 'physical'",
        ] {
            conn.prepare_cached(sql)?.execute([agent])?;
        }
        for n in &nets {
            let members = &self.subnets[n];
            if members.len() > PHYSICAL_SUBNET_CAP {
                continue;
            }
            for other in members.iter().filter(|m| m.as_str() != agent) {
                let (a, b) = ordered(agent, other);
                conn.prepare_cached(
                    "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, detail, first_seen, last_seen)
                     VALUES ('physical', ?1, ?2, '', 1, 'unknown', ?3, ?4, ?4)
                     ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET last_seen = excluded.last_seen",
                )?
                .execute(params![a, b, n, now])?;
            }
        }
        self.agent_subnets.insert(agent.to_string(), nets);
        Ok(())
    }
}

/// Relay edges of a chain: each relay delivered for the layer inside it.
pub fn record_relays(conn: &Connection, verified: &Verified, now: i64) -> rusqlite::Result<()> {
    for pair in verified.layers.windows(2) {
        let (relay, inner) = (&pair[0].agent_id, &pair[1].agent_id);
        conn.prepare_cached(
            "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, first_seen, last_seen)
             VALUES ('relay', ?1, ?2, '', 0, 'healthy', ?3, ?3)
             ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET last_seen = excluded.last_seen, health = 'healthy'",
        )?
        .execute(params![relay, inner, now])?;
    }
    Ok(())
}

/// Relay edges unused since `cutoff` are dropped: the path is no longer in use.
pub fn expire_relay_edges(conn: &Connection, cutoff: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM topology_edges WHERE kind = 'relay' AND last_seen < ?1")?
        .execute([cutoff])?;
    Ok(())
}

/// Subnets of an agent's underlay addresses: not loopback, link-local,
/// host-only (/32, /128) or on WireGuard interfaces (those are the overlay:
/// kind "wireguard" for the kernel module, or named in `wg_devices` for
/// userspace implementations, whose devices are plain "tun" links).
pub fn physical_networks(interfaces: &[Interface], wg_devices: &[&str]) -> BTreeSet<String> {
    let mut nets = BTreeSet::new();
    let underlay = |i: &&Interface| {
        i.kind != "wireguard" && i.kind != "loopback" && !wg_devices.contains(&i.name.as_str())
    };
    for i in interfaces.iter().filter(underlay) {
        for a in &i.addresses {
            let Some((addr, prefix)) = parse_cidr(a) else { continue };
            let usable = match addr {
                IpAddr::V4(v4) => prefix < 32 && !v4.is_loopback() && !v4.is_link_local(),
                IpAddr::V6(v6) => {
                    prefix < 128 && !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80
                }
            };
            if usable {
                nets.insert(network(addr, prefix));
            }
        }
    }
    nets
}

fn network(addr: IpAddr, prefix: u8) -> String {
    match addr {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            format!("{}/{prefix}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn ordered<'a>(x: &'a str, y: &'a str) -> (&'a str, &'a str) {
    if x <= y {
        (x, y)
    } else {
        (y, x)
    }
}

fn health_name(s: &str) -> &'static str {
    match s {
        "healthy" => "healthy",
        "stale" => "stale",
        "never" | "down" => "down",
        _ => "unknown",
    }
}

/// Two views of one link combined: the better health, the newer handshake.
/// Order-independent fingerprint of the peers' structure.
fn peer_fingerprint(peers: &[PeerFact<'_>]) -> u64 {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::FixedState::default();
    peers.iter().fold(0u64, |sum, p| {
        sum.wrapping_add(hasher.hash_one((p.public_key, p.peer_agent_id, p.health)))
    })
}

fn merge(a: View, b: View) -> View {
    (better(a.0, b.0), a.1.max(b.1))
}

fn better(a: &'static str, b: &'static str) -> &'static str {
    let rank = |h| match h {
        "healthy" => 3,
        "stale" => 2,
        "unknown" => 1,
        _ => 0,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(kind: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: "x".into(),
            kind: kind.into(),
            state: "up".into(),
            mtu: 1500,
            mac: None,
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            rx_bytes: 0,
            tx_bytes: 0,
            rx_errors: 0,
            tx_errors: 0,
        }
    }

    #[test]
    fn physical_networks_skip_overlay_loopback_and_link_local() {
        let nets = physical_networks(
            &[
                iface(
                    "ether",
                    &[
                        "10.1.2.3/24",
                        "2001:db8:1::5/64",
                        "fe80::1/64",
                        "169.254.1.1/16",
                        "192.0.2.9/32",
                    ],
                ),
                iface("loopback", &["127.0.0.1/8"]),
                iface("wireguard", &["10.99.0.1/16"]),
            ],
            &[],
        );
        assert_eq!(nets.into_iter().collect::<Vec<_>>(), ["10.1.2.0/24", "2001:db8:1::/64"]);
        // A userspace WireGuard device is a plain tun link: known by its name.
        let mut tun = iface("tun", &["10.99.0.1/16"]);
        tun.name = "wg0".into();
        assert!(physical_networks(&[tun.clone()], &["wg0"]).is_empty());
        assert_eq!(physical_networks(&[tun], &[]).len(), 1);
    }
}
