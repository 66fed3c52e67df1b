//! Topology inference, as an in-memory model of the fleet's links that
//! decides edge writes. WireGuard edges join two agents when one lists the
//! other's device key as a peer (`both_ends` when each lists the other);
//! peers whose key belongs to no agent are external and kept as such. Relay
//! edges come from relay chains, physical edges from subnets two agents share.
//!
//! Edges are rewritten only when something visible changed (ends, health)
//! or, for handshake ages, at most once per sample interval.

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use kattila_fleet::{masked_network, Health, PeerHealth};
use kattila_proto::model::Interface;
use kattila_proto::Verified;
use kattila_store::topology::{
    EdgeChange, EdgeKey, InterfaceAddresses, PeerListing, TopologySink, WireguardEdgeRow,
};

use super::Settings;

/// Subnets with more agents than this get no physical edges: a flat /16 of
/// a thousand hosts would otherwise produce half a million edges.
pub const PHYSICAL_SUBNET_CAP: usize = 32;

#[derive(Debug, Clone, PartialEq)]
struct EdgeState {
    both_ends: bool,
    health: Health,
    written_at: i64,
}

/// How one agent sees another over WireGuard: best health and newest
/// handshake over its peers that are devices of the other agent.
pub type View = (Health, Option<i64>);

/// An agent listing a key that another agent now claims, and how its peer
/// of that key sees the link.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub agent_id: String,
    pub public_key: String,
    pub view: View,
}

impl From<&PeerListing> for Listing {
    fn from(l: &PeerListing) -> Self {
        Listing {
            agent_id: l.agent_id.clone(),
            public_key: l.public_key.clone(),
            view: (l.health.link(), l.latest_handshake),
        }
    }
}

/// One peer as the processor reports it to the topology.
pub struct PeerFact<'a> {
    pub public_key: &'a str,
    pub peer_agent_id: Option<&'a str>,
    pub health: PeerHealth,
    pub latest_handshake: Option<i64>,
}

/// Which agent owns each WireGuard public key: the one place a peer is
/// matched with the agent at its other end.
#[derive(Debug, Default)]
pub struct Owners(HashMap<String, String>);

impl Owners {
    pub fn owner_of(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
pub struct Topology {
    pub owners: Owners,
    /// Agent id → its device keys.
    devices: HashMap<String, Vec<String>>,
    /// from agent → to agent → how `from` sees `to`.
    views: HashMap<String, HashMap<String, View>>,
    /// Subnet → agents with an address in it.
    subnets: HashMap<String, BTreeSet<String>>,
    agent_subnets: HashMap<String, BTreeSet<String>>,
    /// WireGuard edges as last written, and each agent's edges. Both ends
    /// share the one key: with a copy of its strings for each end, and
    /// copies made at every write, 10,000 agents after three reports each
    /// peaked at 141 MB instead of 122 MB.
    wg_edges: HashMap<Arc<EdgeKey>, EdgeState>,
    edges_of: HashMap<String, BTreeSet<Arc<EdgeKey>>>,
    /// Key of an external peer → the agents with an edge to it: who lists
    /// a key no agent owns, for when an agent claims it (storage has no
    /// index on the peers' keys).
    external_listers: HashMap<String, BTreeSet<String>>,
    /// Keys that an agent gave up (it changed keys) or that stored peers
    /// still attribute to an agent not owning them (after an admin reset):
    /// their listers may still point at the former owner, so a claim of
    /// one asks storage who lists it.
    orphaned: foldhash::HashSet<String>,
    /// Agent → fingerprint of its peers' structure (key, owner, health) and
    /// when its edges were last brought up to date from them.
    peer_structure: HashMap<String, (u64, i64)>,
    /// Agents that are silent: every link they are an end of is unknown.
    pub silent: foldhash::HashSet<String>,
}

/// Builds the [`Topology`] from the stored rows as they are read
/// (`kattila_store::topology::load`).
#[derive(Debug, Default)]
pub struct TopologyLoader {
    t: Topology,
    /// Agent → its WireGuard device names (userspace devices are plain
    /// "tun" interfaces: their names tell them from the underlay).
    wg_names: HashMap<String, Vec<String>>,
    /// The agent whose interfaces are being read, and those read so far.
    interfaces_of: Option<(String, Vec<Interface>)>,
}

impl TopologyLoader {
    pub fn finish(mut self) -> Topology {
        self.flush_interfaces();
        self.t
    }

    fn flush_interfaces(&mut self) {
        let Some((agent, ifaces)) = self.interfaces_of.take() else { return };
        let names: Vec<&str> = self
            .wg_names
            .get(&agent)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let nets = physical_networks(&ifaces, &names);
        for n in &nets {
            self.t.subnets.entry(n.clone()).or_default().insert(agent.clone());
        }
        self.t.agent_subnets.insert(agent, nets);
    }
}

impl TopologySink for TopologyLoader {
    fn device(&mut self, agent: String, name: String, public_key: String) {
        self.t.owners.0.insert(public_key.clone(), agent.clone());
        self.t.devices.entry(agent.clone()).or_default().push(public_key);
        self.wg_names.entry(agent).or_default().push(name);
    }

    fn agent_peer(&mut self, p: PeerListing) {
        let Some(to) = p.peer_agent_id else { return };
        // Devices come first, so the owners are complete here.
        if self.t.owners.owner_of(&p.public_key) != Some(to.as_str()) {
            self.t.orphaned.insert(p.public_key.clone());
        }
        let view =
            self.t.views.entry(p.agent_id).or_default().entry(to).or_insert((Health::Down, None));
        *view = merge(*view, (p.health.link(), p.latest_handshake));
    }

    fn interface(&mut self, i: InterfaceAddresses) {
        if self.interfaces_of.as_ref().is_none_or(|(agent, _)| *agent != i.agent_id) {
            self.flush_interfaces();
            self.interfaces_of = Some((i.agent_id.clone(), Vec::new()));
        }
        let (_, ifaces) = self.interfaces_of.as_mut().expect("set above");
        ifaces.push(Interface {
            name: i.name,
            kind: i.kind,
            state: String::new(),
            mtu: 0,
            mac: None,
            addresses: i.addresses,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_errors: 0,
            tx_errors: 0,
        });
    }

    fn wireguard_edge(&mut self, e: WireguardEdgeRow) {
        let state = EdgeState { both_ends: e.both_ends, health: e.health, written_at: e.last_seen };
        let key = Arc::new(e.key);
        self.t.index_edge(&key);
        self.t.wg_edges.insert(key, state);
    }

    fn silent(&mut self, agent: String) {
        self.t.silent.insert(agent);
    }
}

impl Topology {
    fn index_edge(&mut self, key: &Arc<EdgeKey>) {
        self.edges_of.entry(key.0.clone()).or_default().insert(key.clone());
        if key.1.is_empty() {
            self.external_listers.entry(key.2.clone()).or_default().insert(key.0.clone());
        } else {
            self.edges_of.entry(key.1.clone()).or_default().insert(key.clone());
        }
    }

    /// Whether the listers of `key` may still point at an agent that gave
    /// it up: the model does not know them, storage does.
    pub fn is_orphaned(&self, key: &str) -> bool {
        self.orphaned.contains(key)
    }

    /// Agents listing `key` while no agent owns it, and how each sees it
    /// as far as its edge to the key tells (no handshake).
    pub fn external_listers<'t>(
        &'t self,
        key: &'t str,
    ) -> impl Iterator<Item = (&'t str, Health)> + 't {
        let listers = self.external_listers.get(key).into_iter().flatten();
        listers.map(move |lister| {
            let edge = (lister.clone(), String::new(), key.to_string());
            (lister.as_str(), self.wg_edges.get(&edge).map_or(Health::Unknown, |e| e.health))
        })
    }

    /// The agents `agent` has a WireGuard link with: among them every agent
    /// whose peers list one of its device keys as its.
    pub fn linked(&self, agent: &str) -> Vec<String> {
        let edges = self.edges_of.get(agent).into_iter().flatten();
        edges.filter(|k| !k.1.is_empty()).map(|k| other_end(k, agent).to_string()).collect()
    }

    /// Records an agent's device keys. Peers elsewhere that pointed at one of
    /// the new keys (`listings`: every peer of another agent listing one of
    /// `keys`) stop being external and get agent-to-agent edges.
    pub fn set_device_keys<'a>(
        &mut self,
        agent: &'a str,
        keys: &[&'a str],
        listings: &[Listing],
        now: i64,
        out: &mut Vec<EdgeChange<'a>>,
    ) {
        self.peer_structure.remove(agent);
        if let Some(old) = self.devices.remove(agent) {
            for k in old {
                if self.owners.0.get(&k).is_some_and(|a| a == agent) {
                    self.owners.0.remove(&k);
                    self.orphaned.insert(k);
                }
            }
        }
        for k in keys {
            self.owners.0.insert(k.to_string(), agent.to_string());
            self.orphaned.remove(*k);
        }
        let listings: Vec<&Listing> = listings
            .iter()
            .filter(|l| l.agent_id != agent && keys.contains(&l.public_key.as_str()))
            .collect();
        if !listings.is_empty() {
            let listers = listings.iter().map(|l| (l.agent_id.clone(), l.public_key.clone()));
            out.push(EdgeChange::KeysClaimed { agent, listers: listers.collect() });
        }
        let mut listers = BTreeSet::new();
        for l in listings {
            let view = self
                .views
                .entry(l.agent_id.clone())
                .or_default()
                .entry(agent.to_string())
                .or_insert((Health::Down, None));
            *view = merge(*view, l.view);
            self.delete_edge((l.agent_id.clone(), String::new(), l.public_key.clone()), out);
            // The lister's edges changed outside its own reports.
            self.peer_structure.remove(&l.agent_id);
            listers.insert(l.agent_id.as_str());
        }
        self.devices.insert(agent.to_string(), keys.iter().map(|k| k.to_string()).collect());
        for other in listers {
            self.write_pair(agent, other, Write { now, min_gap: i64::MAX }, out);
        }
    }

    /// Refreshes every WireGuard edge that `agent` is an end of, from its
    /// current peers.
    pub fn update_wireguard_edges(
        &mut self,
        agent: &str,
        peers: &[PeerFact<'_>],
        now: i64,
        s: &Settings,
        out: &mut Vec<EdgeChange<'_>>,
    ) {
        // Most reports change no peer's owner or health. Then the edges stay
        // as they are, and only the handshakes behind them move; the edges
        // are rewritten (handshake age, last_seen) once per sample interval.
        let fingerprint = peer_fingerprint(peers);
        if let Some(&(known, refreshed_at)) = self.peer_structure.get(agent) {
            if known == fingerprint && now - refreshed_at < s.sample_secs {
                self.refresh_handshakes(agent, peers);
                return;
            }
        }
        let write = Write { now, min_gap: s.sample_secs };
        self.peer_structure.insert(agent.to_string(), (fingerprint, now));
        let mut views: HashMap<String, View> = HashMap::new();
        let mut current: BTreeSet<EdgeKey> = BTreeSet::new();
        for p in peers {
            match p.peer_agent_id {
                Some(other) if other != agent => {
                    let v = views.entry(other.to_string()).or_insert((Health::Down, None));
                    *v = merge(*v, (p.health.link(), p.latest_handshake));
                }
                Some(_) => {} // a device peering with another device of the same agent
                None => {
                    let edge = (agent.to_string(), String::new(), p.public_key.to_string());
                    let state =
                        EdgeState { both_ends: false, health: p.health.link(), written_at: now };
                    current.insert(edge.clone());
                    self.write_edge(edge, state, None, write, out);
                }
            }
        }
        let others: Vec<String> = views.keys().cloned().collect();
        self.views.insert(agent.to_string(), views);
        for other in &others {
            let (a, b) = ordered(agent, other);
            current.insert((a.to_string(), b.to_string(), String::new()));
            self.write_pair(agent, other, write, out);
        }
        // Edges this agent no longer has a peer for: keep them only if the
        // other end still lists this agent.
        let gone: Vec<Arc<EdgeKey>> = self
            .edges_of
            .get(agent)
            .map(|edges| edges.iter().filter(|k| !current.contains(k.as_ref())).cloned().collect())
            .unwrap_or_default();
        for key in gone {
            if key.1.is_empty() {
                self.delete_edge((*key).clone(), out);
            } else {
                self.write_pair(agent, other_end(&key, agent), write, out);
            }
        }
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

    /// `agent` went silent: every link it is an end of becomes unknown.
    pub fn silence(&mut self, agent: &str, now: i64, out: &mut Vec<EdgeChange<'_>>) {
        if !self.silent.insert(agent.to_string()) {
            return;
        }
        self.rewrite_edges_of(agent, now, out);
    }

    /// `agent` reports again: its links are judged from the views again,
    /// and its next peers are compared in full. Returns whether it was
    /// silent.
    pub fn heard(&mut self, agent: &str, now: i64, out: &mut Vec<EdgeChange<'_>>) -> bool {
        if !self.silent.remove(agent) {
            return false;
        }
        self.peer_structure.remove(agent);
        self.rewrite_edges_of(agent, now, out);
        true
    }

    fn rewrite_edges_of(&mut self, agent: &str, now: i64, out: &mut Vec<EdgeChange<'_>>) {
        let write = Write { now, min_gap: i64::MAX };
        let edges: Vec<Arc<EdgeKey>> =
            self.edges_of.get(agent).map(|e| e.iter().cloned().collect()).unwrap_or_default();
        for key in edges {
            if key.1.is_empty() {
                // An external peer: unknown while its agent is silent.
                let Some(old) = self.wg_edges.get(key.as_ref()) else { continue };
                let health =
                    if self.silent.contains(&key.0) { Health::Unknown } else { old.health };
                let state = EdgeState { both_ends: false, health, written_at: now };
                self.write_edge((*key).clone(), state, None, write, out);
            } else {
                self.write_pair(agent, other_end(&key, agent), write, out);
            }
        }
    }

    /// Writes the edge between two agents from both ends' current views;
    /// unknown while either end is silent.
    fn write_pair(&mut self, x: &str, y: &str, write: Write, out: &mut Vec<EdgeChange<'_>>) {
        let view = |from: &str, to: &str| self.views.get(from).and_then(|m| m.get(to)).copied();
        let (view_xy, view_yx) = (view(x, y), view(y, x));
        let (a, b) = ordered(x, y);
        let edge = (a.to_string(), b.to_string(), String::new());
        let (mut health, handshake) = match (view_xy, view_yx) {
            (None, None) => return self.delete_edge(edge, out),
            (Some(v), None) | (None, Some(v)) => v,
            (Some(v), Some(w)) => merge(v, w),
        };
        if self.silent.contains(x) || self.silent.contains(y) {
            health = Health::Unknown;
        }
        let state = EdgeState {
            both_ends: view_xy.is_some() && view_yx.is_some(),
            health,
            written_at: write.now,
        };
        let age = handshake.map(|hs| (write.now - hs).max(0));
        self.write_edge(edge, state, age, write, out)
    }

    fn write_edge(
        &mut self,
        key: EdgeKey,
        state: EdgeState,
        handshake_age: Option<i64>,
        write: Write,
        out: &mut Vec<EdgeChange<'_>>,
    ) {
        if let Some(old) = self.wg_edges.get(&key) {
            let same = old.both_ends == state.both_ends && old.health == state.health;
            if same && write.now.saturating_sub(old.written_at) < write.min_gap {
                return;
            }
        }
        out.push(EdgeChange::WireguardUpsert {
            key: key.clone(),
            both_ends: state.both_ends,
            health: state.health,
            handshake_age,
            now: write.now,
        });
        if let Some(known) = self.wg_edges.get_mut(&key) {
            *known = state;
        } else {
            let key = Arc::new(key);
            self.index_edge(&key);
            self.wg_edges.insert(key, state);
        }
    }

    fn delete_edge(&mut self, key: EdgeKey, out: &mut Vec<EdgeChange<'_>>) {
        if self.wg_edges.remove(&key).is_some() {
            for end in [&key.0, &key.1] {
                if let Some(set) = self.edges_of.get_mut(end) {
                    set.remove(&key);
                }
            }
            if key.1.is_empty() {
                if let Some(listers) = self.external_listers.get_mut(&key.2) {
                    listers.remove(&key.0);
                    if listers.is_empty() {
                        self.external_listers.remove(&key.2);
                    }
                }
            }
            out.push(EdgeChange::WireguardDelete { key });
        }
    }

    /// Updates the subnets `agent` is in and its physical edges, when they changed.
    pub fn update_physical<'a>(
        &mut self,
        agent: &'a str,
        nets: BTreeSet<String>,
        now: i64,
        out: &mut Vec<EdgeChange<'a>>,
    ) {
        if self.agent_subnets.get(agent) == Some(&nets) {
            return;
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
        let mut edges = Vec::new();
        for n in &nets {
            let members = &self.subnets[n];
            if members.len() > PHYSICAL_SUBNET_CAP {
                continue;
            }
            for other in members.iter().filter(|m| m.as_str() != agent) {
                edges.push((other.clone(), n.clone()));
            }
        }
        out.push(EdgeChange::PhysicalReplaced { agent, edges, now });
        self.agent_subnets.insert(agent.to_string(), nets);
    }
}

/// The end of an agent-to-agent edge that is not `agent`.
fn other_end<'k>(key: &'k EdgeKey, agent: &str) -> &'k str {
    if key.0 == agent {
        &key.1
    } else {
        &key.0
    }
}

/// When an edge write happens and how soon after the last one an unchanged
/// edge may be written again.
#[derive(Debug, Clone, Copy)]
struct Write {
    now: i64,
    min_gap: i64,
}

/// Relay edges of a chain: each relay delivered for the layer inside it.
pub fn record_relays<'a>(verified: &'a Verified, now: i64, out: &mut Vec<EdgeChange<'a>>) {
    for pair in verified.layers.windows(2) {
        out.push(EdgeChange::RelayUsed { relay: &pair[0].agent_id, inner: &pair[1].agent_id, now });
    }
}

/// Subnets of an agent's underlay addresses: not loopback, link-local,
/// host-only (/32, /128) or on WireGuard interfaces (those are the overlay:
/// kind "wireguard" for the kernel module, or named in `wg_devices` for
/// userspace implementations, whose devices are plain "tun" links).
pub fn physical_networks(interfaces: &[Interface], wg_devices: &[&str]) -> BTreeSet<String> {
    let underlay = |i: &&Interface| {
        i.kind != "wireguard" && i.kind != "loopback" && !wg_devices.contains(&i.name.as_str())
    };
    interfaces
        .iter()
        .filter(underlay)
        .flat_map(|i| &i.addresses)
        .filter_map(|a| masked_network(a))
        .collect()
}

fn ordered<'a>(x: &'a str, y: &'a str) -> (&'a str, &'a str) {
    if x <= y {
        (x, y)
    } else {
        (y, x)
    }
}

/// Order-independent fingerprint of the peers' structure.
fn peer_fingerprint(peers: &[PeerFact<'_>]) -> u64 {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::FixedState::default();
    peers.iter().fold(0u64, |sum, p| {
        sum.wrapping_add(hasher.hash_one((p.public_key, p.peer_agent_id, p.health)))
    })
}

/// Two views of one link combined: the better health, the newer handshake.
fn merge(a: View, b: View) -> View {
    (a.0.better(b.0), a.1.max(b.1))
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

    /// Stored peers that name an agent not owning their key (its devices
    /// were reset or replaced): the key's listers are not what the model
    /// knows, so its claim asks storage.
    #[test]
    fn stored_peers_naming_a_former_owner_orphan_the_key() {
        let mut loader = TopologyLoader::default();
        loader.device("c".into(), "wg0".into(), "KEY-E".into());
        let listing = |key: &str| PeerListing {
            agent_id: "b".into(),
            public_key: key.into(),
            peer_agent_id: Some("c".into()),
            health: PeerHealth::Healthy,
            latest_handshake: None,
        };
        loader.agent_peer(listing("KEY-A"));
        loader.agent_peer(listing("KEY-E"));
        let t = loader.finish();
        assert!(t.is_orphaned("KEY-A"), "c no longer owns it");
        assert!(!t.is_orphaned("KEY-E"), "c owns it");
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
