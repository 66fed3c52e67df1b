//! The stored topology: what the receiver's topology model is loaded from,
//! and the edge writes it decides (`topology_edges`, and the owner of a
//! peer's key in `wg_peers`).

use kattila_fleet::{AgentStatus, Health, PeerHealth};
use rusqlite::{params, Connection};

use crate::state::json_list;

/// What the topology model is built from, handed over row by row so that
/// the fleet's rows are never held twice, as rows and as the model (at
/// 10,000 agents, building from vectors of all rows peaked 3 MB higher and
/// took 0.52 s instead of 0.43 s).
pub trait TopologySink {
    /// (agent, device name, device public key) of a WireGuard device. All
    /// devices come first.
    fn device(&mut self, agent: String, name: String, public_key: String);
    /// A peer whose key belongs to an agent.
    fn agent_peer(&mut self, listing: PeerListing);
    /// An interface that is not gone; one agent's interfaces come together.
    fn interface(&mut self, interface: InterfaceAddresses);
    fn wireguard_edge(&mut self, edge: WireguardEdgeRow);
    /// An agent the receiver decided is silent.
    fn silent(&mut self, agent: String);
}

/// One agent listing one key as a WireGuard peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerListing {
    /// The agent whose device lists the peer.
    pub agent_id: String,
    pub public_key: String,
    /// The agent owning the key, when known.
    pub peer_agent_id: Option<String>,
    pub health: PeerHealth,
    pub latest_handshake: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceAddresses {
    pub agent_id: String,
    pub name: String,
    pub kind: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WireguardEdgeRow {
    pub key: EdgeKey,
    pub both_ends: bool,
    pub health: Health,
    pub last_seen: i64,
}

/// A WireGuard edge: (a_agent, b_agent, b_external); agent-to-agent edges
/// have a_agent < b_agent and no external key, edges to an external peer
/// have b_agent "" and the peer's key.
pub type EdgeKey = (String, String, String);

/// One write to the topology.
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeChange<'a> {
    /// `relay` delivered a message for `inner`.
    RelayUsed {
        relay: &'a str,
        inner: &'a str,
        now: i64,
    },
    /// `agent` owns device keys that these (listing agent, key) peers list:
    /// they point at it now.
    KeysClaimed {
        agent: &'a str,
        listers: Vec<(String, String)>,
    },
    WireguardUpsert {
        key: EdgeKey,
        both_ends: bool,
        health: Health,
        handshake_age: Option<i64>,
        now: i64,
    },
    WireguardDelete {
        key: EdgeKey,
    },
    /// `agent`'s physical edges replaced by these (other agent, subnet).
    PhysicalReplaced {
        agent: &'a str,
        edges: Vec<(String, String)>,
        now: i64,
    },
}

/// Reads everything the topology model starts from into `sink`, one table
/// at a time.
pub fn load(conn: &Connection, sink: &mut impl TopologySink) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT agent_id, name, public_key FROM wg_devices")?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (agent, name, key) = row?;
        sink.device(agent, name, key);
    }
    let mut stmt = conn.prepare(
        "SELECT agent_id, public_key, peer_agent_id, health, latest_handshake
         FROM wg_peers WHERE peer_agent_id IS NOT NULL",
    )?;
    for row in stmt.query_map([], listing)? {
        sink.agent_peer(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT agent_id, kind, addresses, name FROM interfaces WHERE state != 'gone'
         ORDER BY agent_id, name",
    )?;
    let interfaces = stmt.query_map([], |r| {
        Ok(InterfaceAddresses {
            agent_id: r.get(0)?,
            kind: r.get(1)?,
            addresses: json_list(&r.get::<_, String>(2)?),
            name: r.get(3)?,
        })
    })?;
    for row in interfaces {
        sink.interface(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT a_agent, b_agent, b_external, both_ends, health, last_seen
         FROM topology_edges WHERE kind = 'wireguard'",
    )?;
    let edges = stmt.query_map([], |r| {
        Ok(WireguardEdgeRow {
            key: (r.get(0)?, r.get(1)?, r.get(2)?),
            both_ends: r.get(3)?,
            health: Health::parse(&r.get::<_, String>(4)?),
            last_seen: r.get(5)?,
        })
    })?;
    for row in edges {
        sink.wireguard_edge(row?);
    }
    let mut stmt = conn.prepare("SELECT agent_id FROM agents WHERE status = ?1")?;
    for row in stmt.query_map([AgentStatus::Silent.as_str()], |r| r.get(0))? {
        sink.silent(row?);
    }
    Ok(())
}

/// Every peer, of any agent, whose key is one of `keys`. No index serves
/// this (one on the peers' keys cost every new agent a WAL page per peer):
/// each key scans the table. The receiver asks only for keys that move
/// from one agent to another (an agent reset or a cloned machine); the
/// listers of a key no agent owns it knows from its topology model.
pub fn peers_listing(conn: &Connection, keys: &[&str]) -> rusqlite::Result<Vec<PeerListing>> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, public_key, peer_agent_id, health, latest_handshake
         FROM wg_peers WHERE public_key = ?1",
    )?;
    let mut found = Vec::new();
    for key in keys {
        for row in stmt.query_map([key], listing)? {
            found.push(row?);
        }
    }
    Ok(found)
}

fn listing(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerListing> {
    Ok(PeerListing {
        agent_id: r.get(0)?,
        public_key: r.get(1)?,
        peer_agent_id: r.get(2)?,
        health: PeerHealth::parse(&r.get::<_, String>(3)?),
        latest_handshake: r.get(4)?,
    })
}

/// Writes topology changes in order.
pub fn apply(conn: &Connection, changes: &[EdgeChange<'_>]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            EdgeChange::RelayUsed { relay, inner, now } => {
                conn.prepare_cached(
                    "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, first_seen, last_seen)
                     VALUES ('relay', ?1, ?2, '', 0, 'healthy', ?3, ?3)
                     ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET last_seen = excluded.last_seen, health = 'healthy'",
                )?
                .execute(params![relay, inner, now])?;
            }
            EdgeChange::KeysClaimed { agent, listers } => {
                let mut stmt = conn.prepare_cached(
                    "UPDATE wg_peers SET peer_agent_id = ?3 WHERE agent_id = ?1 AND public_key = ?2",
                )?;
                for (lister, key) in listers {
                    stmt.execute(params![lister, key, agent])?;
                }
            }
            EdgeChange::WireguardUpsert { key, both_ends, health, handshake_age, now } => {
                conn.prepare_cached(
                    "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, handshake_age,
                                                 first_seen, last_seen)
                     VALUES ('wireguard', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                     ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET both_ends = excluded.both_ends,
                         health = excluded.health, handshake_age = excluded.handshake_age, last_seen = excluded.last_seen",
                )?
                .execute(params![key.0, key.1, key.2, both_ends, health.as_str(), handshake_age, now])?;
            }
            EdgeChange::WireguardDelete { key } => {
                conn.prepare_cached(
                    "DELETE FROM topology_edges
                     WHERE kind = 'wireguard' AND a_agent = ?1 AND b_agent = ?2 AND b_external = ?3",
                )?
                .execute(params![key.0, key.1, key.2])?;
            }
            EdgeChange::PhysicalReplaced { agent, edges, now } => {
                // Two statements, so each uses an index (an OR would scan every
                // physical edge of the fleet).
                for sql in [
                    "DELETE FROM topology_edges WHERE kind = 'physical' AND a_agent = ?1",
                    "DELETE FROM topology_edges INDEXED BY physical_edges_by_b
                     WHERE b_agent = ?1 AND kind = 'physical'",
                ] {
                    conn.prepare_cached(sql)?.execute([agent])?;
                }
                for (other, subnet) in edges {
                    let (a, b) = if *agent <= other.as_str() {
                        (*agent, other.as_str())
                    } else {
                        (other.as_str(), *agent)
                    };
                    conn.prepare_cached(
                        "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, detail, first_seen, last_seen)
                         VALUES ('physical', ?1, ?2, '', 1, 'unknown', ?3, ?4, ?4)
                         ON CONFLICT(kind, a_agent, b_agent, b_external) DO UPDATE SET last_seen = excluded.last_seen",
                    )?
                    .execute(params![a, b, subnet, now])?;
                }
            }
        }
    }
    Ok(())
}

/// Drops relay edges unused since `cutoff`: the path is no longer in use.
pub fn expire_relay_edges(conn: &Connection, cutoff: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM topology_edges WHERE kind = 'relay' AND last_seen < ?1")?
        .execute([cutoff])?;
    Ok(())
}
