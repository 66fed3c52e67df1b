//! One agent's current state (interfaces, routes, WireGuard devices and
//! peers): loading what is stored of it, and applying what a report
//! changed. The receiver's processing decides the changes; this module only
//! reads and writes them.

use kattila_fleet::PeerHealth;
use kattila_proto::model::{Interface, Route, WgDevice, WgPeer};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::alarms::{self, AlarmChange};
use crate::history::{self, Sample};
use crate::topology::{self, EdgeChange};

/// What is stored of one agent's state, as processing needs it to compare
/// the next report with.
#[derive(Debug, Default, PartialEq)]
pub struct AgentRows {
    /// The hostname of its newest report (None before its first report).
    pub hostname: Option<String>,
    pub interfaces: Vec<InterfaceRow>,
    pub peers: Vec<PeerRow>,
    /// Public keys of its WireGuard devices, sorted.
    pub device_keys: Vec<String>,
    /// Its routes in stored order.
    pub routes: Vec<Route>,
    /// When its counters were last written (the newest `last_seen` of its
    /// interfaces and peers; 0 if none): after a restart the next report
    /// writes them only once the sample interval since then is over, not
    /// at once for every agent.
    pub counters_written: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceRow {
    pub name: String,
    pub kind: String,
    /// Operational state, or "gone" for an interface no longer reported.
    pub state: String,
    pub mtu: u32,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub device: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake: Option<i64>,
    pub rx_bytes: u64,
    pub rx_grew_at: Option<i64>,
    pub health: PeerHealth,
    pub peer_agent_id: Option<String>,
}

/// Loads what is stored of one agent (empty if unknown).
pub fn load_agent(conn: &Connection, agent_id: &str) -> rusqlite::Result<AgentRows> {
    let hostname = conn
        .prepare_cached("SELECT hostname FROM agents WHERE agent_id = ?1 AND reports > 0")?
        .query_row([agent_id], |r| r.get(0))
        .optional()?;
    fn rows<T>(
        conn: &Connection,
        table: Read,
        agent_id: &str,
        read: fn(&Row<'_>) -> rusqlite::Result<(String, T)>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut stmt = conn.prepare_cached(&table.of_one_agent())?;
        let rows = stmt.query_map([agent_id], read)?;
        rows.map(|row| row.map(|(_, value)| value)).collect()
    }
    Ok(agent_rows(
        hostname,
        rows(conn, INTERFACES, agent_id, interface)?,
        rows(conn, PEERS, agent_id, peer)?,
        rows(conn, DEVICE_KEYS, agent_id, device_key)?,
        rows(conn, ROUTES, agent_id, route)?,
    ))
}

/// What both loaders read of a table, the agent id first, and the order
/// of one agent's rows. One agent's rows are read `WHERE agent_id = ?1`,
/// the whole fleet's in the table's key order, which starts with the agent
/// id, so that the fleet's streams merge by agent without sorting.
struct Read {
    select: &'static str,
    order: &'static str,
}

const INTERFACES: Read = Read {
    select: "SELECT agent_id, name, kind, state, mtu, mac, addresses, last_seen FROM interfaces",
    order: "name",
};
const PEERS: Read = Read {
    select:
        "SELECT agent_id, device, public_key, endpoint, allowed_ips, latest_handshake, rx_bytes,
                    rx_grew_at, health, peer_agent_id, last_seen
             FROM wg_peers",
    order: "device, public_key",
};
const DEVICE_KEYS: Read =
    Read { select: "SELECT agent_id, public_key FROM wg_devices", order: "name" };
const ROUTES: Read = Read {
    select: "SELECT agent_id, dst, gateway, dev, metric, table_id FROM routes",
    order: "rowid",
};

impl Read {
    fn of_one_agent(&self) -> String {
        format!("{} WHERE agent_id = ?1 ORDER BY {}", self.select, self.order)
    }

    fn of_the_fleet(&self) -> String {
        format!("{} ORDER BY agent_id, {}", self.select, self.order)
    }
}

/// An interface row and when it was last written.
fn interface(r: &Row<'_>) -> rusqlite::Result<(String, (InterfaceRow, i64))> {
    let row = InterfaceRow {
        name: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        mtu: r.get(4)?,
        mac: r.get(5)?,
        addresses: json_list(&r.get::<_, String>(6)?),
    };
    Ok((r.get(0)?, (row, r.get(7)?)))
}

/// A peer row and when it was last written.
fn peer(r: &Row<'_>) -> rusqlite::Result<(String, (PeerRow, i64))> {
    let row = PeerRow {
        device: r.get(1)?,
        public_key: r.get(2)?,
        endpoint: r.get(3)?,
        allowed_ips: json_list(&r.get::<_, String>(4)?),
        latest_handshake: r.get(5)?,
        rx_bytes: r.get::<_, i64>(6)? as u64,
        rx_grew_at: r.get(7)?,
        health: PeerHealth::parse(&r.get::<_, String>(8)?),
        peer_agent_id: r.get(9)?,
    };
    Ok((r.get(0)?, (row, r.get(10)?)))
}

fn device_key(r: &Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn route(r: &Row<'_>) -> rusqlite::Result<(String, Route)> {
    let route = Route {
        dst: r.get(1)?,
        gateway: r.get(2)?,
        dev: r.get(3)?,
        metric: r.get(4)?,
        table: r.get(5)?,
    };
    Ok((r.get(0)?, route))
}

/// One agent's rows as processing takes them.
fn agent_rows(
    hostname: Option<String>,
    interfaces: Vec<(InterfaceRow, i64)>,
    peers: Vec<(PeerRow, i64)>,
    mut device_keys: Vec<String>,
    routes: Vec<Route>,
) -> AgentRows {
    device_keys.sort();
    let counters_written =
        interfaces.iter().map(|(_, seen)| *seen).chain(peers.iter().map(|(_, seen)| *seen)).max();
    AgentRows {
        hostname,
        counters_written: counters_written.unwrap_or(0),
        interfaces: interfaces.into_iter().map(|(row, _)| row).collect(),
        peers: peers.into_iter().map(|(row, _)| row).collect(),
        device_keys,
        routes,
    }
}

/// Calls `f` with the stored state (as [`load_agent`] loads one) of every
/// agent heard from since `since`, one agent at a time in agent order: the
/// receiver loads the fleet when it starts, with one pass over each table
/// instead of five lookups per agent at its first report, and never holds
/// more than one agent's rows besides what `f` keeps.
pub fn for_each_agent(
    conn: &Connection,
    since: i64,
    mut f: impl FnMut(String, AgentRows),
) -> rusqlite::Result<()> {
    let mut agents = conn.prepare(
        "SELECT agent_id, CASE WHEN reports > 0 THEN hostname END FROM agents
         WHERE last_seen >= ?1 ORDER BY agent_id",
    )?;
    let mut interfaces = conn.prepare(&INTERFACES.of_the_fleet())?;
    let mut peers = conn.prepare(&PEERS.of_the_fleet())?;
    let mut devices = conn.prepare(&DEVICE_KEYS.of_the_fleet())?;
    let mut routes = conn.prepare(&ROUTES.of_the_fleet())?;
    let mut interfaces = interfaces.query_map([], interface)?.peekable();
    let mut peers = peers.query_map([], peer)?.peekable();
    let mut devices = devices.query_map([], device_key)?.peekable();
    let mut routes = routes.query_map([], route)?.peekable();
    for agent in agents.query_map([since], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
        let (id, hostname) = agent?;
        let rows = agent_rows(
            hostname,
            rows_of(&mut interfaces, &id)?,
            rows_of(&mut peers, &id)?,
            rows_of(&mut devices, &id)?,
            rows_of(&mut routes, &id)?,
        );
        f(id, rows);
    }
    Ok(())
}

/// The next rows of `agent` from a stream in agent order (rows of agents
/// before it, which have no `agents` row, are skipped).
pub(crate) fn rows_of<T>(
    stream: &mut std::iter::Peekable<impl Iterator<Item = rusqlite::Result<(String, T)>>>,
    agent: &str,
) -> rusqlite::Result<Vec<T>> {
    let mut found = Vec::new();
    loop {
        let ours = match stream.peek() {
            Some(Ok((id, _))) => id.as_str() <= agent,
            Some(Err(_)) => true, // next() returns it
            None => false,
        };
        if !ours {
            return Ok(found);
        }
        let (id, row) = stream.next().expect("peeked")?;
        if id == agent {
            found.push(row);
        }
    }
}

/// Everything one message changes, in the order it is written: the
/// agent's state, the topology, the alarms. Borrows from the message where
/// it can: most of a report is written as it arrived.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// None for a message that carries no state (a registration).
    pub state: Option<AgentChanges<'a>>,
    pub edges: Vec<EdgeChange<'a>>,
    pub alarms: Vec<AlarmChange<'a>>,
    /// Agents that went silent: the peers they list, and their listers'
    /// peers of their device keys, become unknown.
    pub silenced: Vec<Silenced<'a>>,
}

impl Changes<'_> {
    /// Whether applying these changes writes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.as_ref().is_none_or(AgentChanges::is_empty)
            && self.edges.is_empty()
            && self.alarms.is_empty()
            && self.silenced.is_empty()
    }
}

/// An agent that went silent, and the agents that may list one of its
/// device keys (the other ends of its links, as the topology model knows
/// them): their peer rows are found by their own key, not through an index
/// on the peers' keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Silenced<'a> {
    pub agent: &'a str,
    pub listers: Vec<String>,
}

/// What one report changed in its agent's state.
#[derive(Debug)]
pub struct AgentChanges<'a> {
    pub agent_id: &'a str,
    /// The receiver's clock: `first_seen` of new rows, `last_seen` of all.
    pub now: i64,
    /// Interfaces written whole, counters included.
    pub interfaces: Vec<&'a Interface>,
    /// Interfaces no longer reported: kept, marked "gone".
    pub interfaces_gone: Vec<String>,
    /// The new routing table, when it changed.
    pub routes: Option<&'a [Route]>,
    /// The new WireGuard devices, when their keys changed.
    pub devices: Option<&'a [WgDevice]>,
    /// Peers written whole, counters included.
    pub peers: Vec<PeerUpsert<'a>>,
    /// Peers no longer configured: (device, public key).
    pub peers_removed: Vec<(String, String)>,
    pub sample: Option<Sample>,
}

impl<'a> AgentChanges<'a> {
    pub fn new(agent_id: &'a str, now: i64) -> Self {
        AgentChanges {
            agent_id,
            now,
            interfaces: Vec::new(),
            interfaces_gone: Vec::new(),
            routes: None,
            devices: None,
            peers: Vec::new(),
            peers_removed: Vec::new(),
            sample: None,
        }
    }

    /// Whether nothing is written (not even counters or a history sample).
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty()
            && self.interfaces_gone.is_empty()
            && self.routes.is_none()
            && self.devices.is_none()
            && self.peers.is_empty()
            && self.peers_removed.is_empty()
            && self.sample.is_none()
    }
}

/// One WireGuard peer as written: the reported peer plus what processing
/// concluded about it.
#[derive(Debug)]
pub struct PeerUpsert<'a> {
    pub device: &'a str,
    pub peer: &'a WgPeer,
    /// The agent owning the peer's key; None for an external peer.
    pub peer_agent_id: Option<String>,
    /// When its received bytes last grew.
    pub rx_grew_at: Option<i64>,
    pub health: PeerHealth,
}

/// Writes everything one message changed. Runs inside the writer's batch
/// transaction: the message commits with its changes or not at all.
pub fn apply(conn: &Connection, changes: &Changes<'_>) -> rusqlite::Result<()> {
    if let Some(state) = &changes.state {
        apply_agent(conn, state)?;
    }
    topology::apply(conn, &changes.edges)?;
    let unknown = PeerHealth::Unknown.as_str();
    for Silenced { agent, listers } in &changes.silenced {
        // Its own peers, and its listers' peers whose key is one of its devices'.
        conn.prepare_cached("UPDATE wg_peers SET health = ?2 WHERE agent_id = ?1")?
            .execute(params![agent, unknown])?;
        let mut listed = conn.prepare_cached(
            "UPDATE wg_peers SET health = ?3
             WHERE agent_id = ?1 AND public_key IN (SELECT public_key FROM wg_devices WHERE agent_id = ?2)",
        )?;
        for lister in listers {
            listed.execute(params![lister, agent, unknown])?;
        }
    }
    alarms::apply(conn, &changes.alarms)
}

fn apply_agent(conn: &Connection, c: &AgentChanges<'_>) -> rusqlite::Result<()> {
    let (agent_id, now) = (c.agent_id, c.now);
    for i in &c.interfaces {
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
            json_text(&i.addresses),
            i.rx_bytes as i64,
            i.tx_bytes as i64,
            i.rx_errors as i64,
            i.tx_errors as i64,
            now,
        ])?;
    }
    for name in &c.interfaces_gone {
        conn.prepare_cached(
            "UPDATE interfaces SET state = 'gone', last_seen = ?3 WHERE agent_id = ?1 AND name = ?2",
        )?
        .execute(params![agent_id, name, now])?;
    }
    if let Some(routes) = c.routes {
        conn.prepare_cached("DELETE FROM routes WHERE agent_id = ?1")?.execute([agent_id])?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO routes (agent_id, dst, gateway, dev, metric, table_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for route in routes {
            insert.execute(params![
                agent_id,
                route.dst,
                route.gateway,
                route.dev,
                route.metric,
                route.table
            ])?;
        }
    }
    if let Some(devices) = c.devices {
        conn.prepare_cached("DELETE FROM wg_devices WHERE agent_id = ?1")?.execute([agent_id])?;
        for d in devices {
            conn.prepare_cached(
                "INSERT INTO wg_devices (agent_id, name, public_key, listen_port) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![agent_id, d.name, d.public_key, d.listen_port])?;
        }
    }
    for u in &c.peers {
        let p = u.peer;
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
            u.device,
            p.public_key,
            u.peer_agent_id,
            p.endpoint,
            json_text(&p.allowed_ips),
            p.latest_handshake,
            p.rx_bytes as i64,
            p.tx_bytes as i64,
            p.persistent_keepalive,
            u.rx_grew_at,
            u.health.as_str(),
            now,
        ])?;
    }
    for (device, key) in &c.peers_removed {
        conn.prepare_cached(
            "DELETE FROM wg_peers WHERE agent_id = ?1 AND device = ?2 AND public_key = ?3",
        )?
        .execute(params![agent_id, device, key])?;
    }
    if let Some(sample) = &c.sample {
        history::insert_sample(conn, agent_id, sample)?;
    }
    Ok(())
}

/// A stored JSON list of strings; a malformed one reads as empty.
pub(crate) fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn json_text(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use kattila_fleet::Severity;

    use super::*;
    use crate::alarms::Condition;

    fn peer() -> WgPeer {
        WgPeer {
            public_key: "k".repeat(44),
            endpoint: Some("192.0.2.1:51820".into()),
            allowed_ips: vec!["10.0.0.2/32".into()],
            latest_handshake: Some(90),
            rx_bytes: 7,
            tx_bytes: 8,
            persistent_keepalive: None,
        }
    }

    #[test]
    fn what_is_applied_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open(&dir.path().join("t.db")).unwrap();
        conn.execute(
            "INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen, last_tick, reports)
             VALUES ('a', 'host-a', 'v', 1, 1, 1, 1)",
            [],
        )
        .unwrap();
        let iface = Interface {
            name: "eth0".into(),
            kind: "ether".into(),
            state: "up".into(),
            mtu: 1500,
            mac: None,
            addresses: vec!["10.1.0.1/24".into()],
            rx_bytes: 1,
            tx_bytes: 2,
            rx_errors: 0,
            tx_errors: 0,
        };
        let routes =
            [Route { dst: "0.0.0.0/0".into(), gateway: None, dev: None, metric: None, table: 254 }];
        let devices = [WgDevice {
            name: "wg0".into(),
            public_key: "d".repeat(44),
            listen_port: None,
            peers: vec![],
        }];
        let p = peer();
        let mut state = AgentChanges::new("a", 100);
        state.interfaces.push(&iface);
        state.routes = Some(&routes);
        state.devices = Some(&devices);
        state.peers.push(PeerUpsert {
            device: "wg0",
            peer: &p,
            peer_agent_id: None,
            rx_grew_at: Some(100),
            health: PeerHealth::Stale,
        });
        let condition = Condition {
            kind: Cow::Borrowed("peer_stale"),
            agent_id: Cow::Borrowed("a"),
            subject: Cow::Borrowed("wg0:k"),
        };
        let alarms = vec![
            AlarmChange::Raise {
                condition: condition.clone(),
                severity: Severity::Warning,
                message: "stale".into(),
                now: 100,
            },
            AlarmChange::Streak { condition: condition.clone(), streak: 2 },
        ];
        apply(&conn, &Changes { state: Some(state), edges: vec![], alarms, silenced: vec![] })
            .unwrap();

        let rows = load_agent(&conn, "a").unwrap();
        assert_eq!(rows.hostname.as_deref(), Some("host-a"));
        assert_eq!(rows.interfaces[0].addresses, ["10.1.0.1/24"]);
        assert_eq!(rows.routes, routes);
        assert_eq!(rows.device_keys, ["d".repeat(44)]);
        assert_eq!(rows.peers[0].health, PeerHealth::Stale);
        assert_eq!(rows.peers[0].rx_grew_at, Some(100));
        let loaded = crate::alarms::load(&conn).unwrap();
        assert_eq!(loaded.active.len(), 1);
        assert_eq!(loaded.streaks[0].1, 2);

        let mut gone = AgentChanges::new("a", 200);
        gone.interfaces_gone.push("eth0".into());
        gone.peers_removed.push(("wg0".into(), p.public_key.clone()));
        let touch =
            AlarmChange::Touch { condition: condition.clone(), message: "still".into(), now: 150 };
        apply(
            &conn,
            &Changes { state: Some(gone), edges: vec![], alarms: vec![touch], silenced: vec![] },
        )
        .unwrap();
        let rows = load_agent(&conn, "a").unwrap();
        assert_eq!(rows.interfaces[0].state, "gone");
        assert!(rows.peers.is_empty());
        let expired = crate::alarms::expire(&conn, &["peer_stale"], 160, 300).unwrap();
        assert_eq!(
            expired,
            [Condition {
                kind: Cow::Owned("peer_stale".into()),
                agent_id: Cow::Owned("a".into()),
                subject: Cow::Owned("wg0:k".into()),
            }]
        );
        assert!(crate::alarms::load(&conn).unwrap().active.is_empty());
    }

    /// The fleet loaded in one pass is each agent as loaded alone: rows of
    /// several agents interleaved in every table, an agent with no state,
    /// one with no reports yet, and one not heard from since `since`.
    #[test]
    fn the_fleet_loads_as_each_agent_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open(&dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            r#"
            INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen, last_tick, reports) VALUES
                ('b', 'host-b', 'v', 1, 500, 1, 3), ('a', 'host-a', 'v', 1, 500, 1, 2),
                ('c', 'host-c', 'v', 1, 500, 1, 0), ('d', 'host-d', 'v', 1, 500, 1, 1),
                ('old', 'host-o', 'v', 1, 10, 1, 9);
            INSERT INTO interfaces (agent_id, name, kind, state, mtu, mac, addresses, rx_bytes, tx_bytes,
                                    rx_errors, tx_errors, first_seen, last_seen) VALUES
                ('b', 'eth1', 'ether', 'up', 1500, NULL, '["10.0.1.2/24"]', 1, 2, 0, 0, 1, 400),
                ('a', 'eth0', 'ether', 'up', 1500, 'aa:bb', '["10.0.0.1/24","fd00::1/64"]', 1, 2, 0, 0, 1, 300),
                ('old', 'eth0', 'ether', 'down', 1400, NULL, '[]', 1, 2, 0, 0, 1, 10),
                ('b', 'eth0', 'ether', 'gone', 9000, NULL, '[]', 1, 2, 0, 0, 1, 200);
            INSERT INTO wg_devices (agent_id, name, public_key, listen_port) VALUES
                ('b', 'wg1', 'KEY-B1', NULL), ('b', 'wg0', 'KEY-B2', 51820), ('a', 'wg0', 'KEY-A', NULL);
            INSERT INTO wg_peers (agent_id, device, public_key, peer_agent_id, endpoint, allowed_ips,
                 latest_handshake, rx_bytes, tx_bytes, persistent_keepalive, rx_grew_at, health, first_seen, last_seen) VALUES
                ('b', 'wg0', 'KEY-A', 'a', '192.0.2.1:51820', '["10.9.0.1/32"]', 90, 7, 8, 25, 90, 'healthy', 1, 450),
                ('a', 'wg0', 'KEY-B2', 'b', NULL, '[]', NULL, 0, 0, NULL, NULL, 'never', 1, 300),
                ('b', 'wg1', 'KEY-X', NULL, NULL, '[]', 80, 1, 1, NULL, NULL, 'stale', 1, 450);
            INSERT INTO routes (agent_id, dst, gateway, dev, metric, table_id) VALUES
                ('a', '0.0.0.0/0', '10.0.0.254', 'eth0', 100, 254), ('b', '10.0.1.0/24', NULL, 'eth1', NULL, 254),
                ('a', '10.0.0.0/24', NULL, 'eth0', NULL, 254), ('old', '0.0.0.0/0', NULL, NULL, NULL, 254);
            "#,
        )
        .unwrap();
        let mut loaded = Vec::new();
        for_each_agent(&conn, 100, |id, rows| loaded.push((id, rows))).unwrap();
        let ids: Vec<&str> = loaded.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"], "agents heard from since 100, in order");
        for (id, rows) in &loaded {
            assert_eq!(*rows, load_agent(&conn, id).unwrap(), "agent {id}");
        }
        let b = &loaded[1].1;
        assert_eq!((b.interfaces.len(), b.peers.len(), b.routes.len()), (2, 2, 1));
        assert_eq!(b.device_keys, ["KEY-B1", "KEY-B2"], "sorted by key, not by device name");
        assert_eq!(b.counters_written, 450);
        assert_eq!(loaded[0].1.routes[1].dst, "10.0.0.0/24", "routes in stored order");
        assert_eq!(loaded[2].1.hostname, None, "no report yet");
    }

    /// A claimed key and a silenced agent change the peer rows of exactly
    /// the listers the receiver names, found by their own agent id.
    #[test]
    fn claims_and_silence_write_the_named_listers_peers() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open(&dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            r#"
            INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen, last_tick) VALUES
                ('a', 'a', 'v', 1, 1, 1), ('b', 'b', 'v', 1, 1, 1), ('c', 'c', 'v', 1, 1, 1);
            INSERT INTO wg_devices (agent_id, name, public_key, listen_port) VALUES ('a', 'wg0', 'KEY-A', NULL);
            INSERT INTO wg_peers (agent_id, device, public_key, peer_agent_id, endpoint, allowed_ips,
                 latest_handshake, rx_bytes, tx_bytes, persistent_keepalive, rx_grew_at, health, first_seen, last_seen) VALUES
                ('a', 'wg0', 'KEY-B', NULL, NULL, '[]', 90, 0, 0, NULL, NULL, 'healthy', 1, 1),
                ('b', 'wg0', 'KEY-A', NULL, NULL, '[]', 90, 0, 0, NULL, NULL, 'healthy', 1, 1),
                ('b', 'wg0', 'KEY-X', NULL, NULL, '[]', 90, 0, 0, NULL, NULL, 'healthy', 1, 1),
                ('c', 'wg1', 'KEY-A', NULL, NULL, '[]', 90, 0, 0, NULL, NULL, 'healthy', 1, 1);
            "#,
        )
        .unwrap();
        let rows = |conn: &Connection| -> Vec<(String, String, Option<String>, String)> {
            let mut stmt = conn
                .prepare("SELECT agent_id, public_key, peer_agent_id, health FROM wg_peers ORDER BY 1, 2")
                .unwrap();
            let found =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
            found.map(Result::unwrap).collect()
        };
        let row = |agent: &str, key: &str, owner: Option<&str>, health: &str| {
            (agent.to_string(), key.to_string(), owner.map(str::to_string), health.to_string())
        };
        let claimed = crate::topology::EdgeChange::KeysClaimed {
            agent: "a",
            listers: vec![("b".into(), "KEY-A".into()), ("c".into(), "KEY-A".into())],
        };
        apply(&conn, &Changes { edges: vec![claimed], ..Changes::default() }).unwrap();
        let silenced = Silenced { agent: "a", listers: vec!["b".into()] };
        apply(&conn, &Changes { silenced: vec![silenced], ..Changes::default() }).unwrap();
        assert_eq!(
            rows(&conn),
            [
                row("a", "KEY-B", None, "unknown"),
                row("b", "KEY-A", Some("a"), "unknown"),
                row("b", "KEY-X", None, "healthy"),
                row("c", "KEY-A", Some("a"), "healthy"),
            ],
            "a's own peers and b's peer of a's key are unknown; c was not named a lister"
        );
    }
}
