//! Each agent's view: its status as the receiver decided it, interfaces,
//! routes, WireGuard devices with their peers, collect errors and history.
//! A peer names the agent that owns its key as the receiver recorded it,
//! and is mutual when the receiver's link between the two says both ends.
//! Agents are made on all cores.

use rayon::prelude::*;

use kattila_fleet::PeerHealth;
use kattila_store::snapshot::{Agent, FleetSnapshot, WgPeer};

use crate::anon::{Anon, AnonScope};
use crate::build::pages::Directory;
use crate::format::handshake_band;
use crate::view::{AgentView, CollectError, DeviceView, InterfaceView, PeerView, RouteView};

/// Every agent, in snapshot order. `active_alarms` by agent index;
/// `both_ends(i, j)`: the link between agents i and j says both list each
/// other.
pub fn agents(
    snap: &FleetSnapshot,
    directory: &Directory,
    active_alarms: &[usize],
    both_ends: &(dyn Fn(usize, usize) -> bool + Sync),
    anon: &mut Anon,
    now: i64,
) -> Vec<AgentView> {
    // The memo of anonymised text is shared read-only meanwhile, and
    // learns what was new afterwards.
    let shared: &Anon = anon;
    let made = |(i, a): (usize, &Agent)| {
        let mut anon = shared.scope();
        let mut view = agent(i, a, directory, both_ends, &mut anon, now);
        view.alarms_active = active_alarms[i];
        (view, anon.learned)
    };
    let (agents, learned): (Vec<AgentView>, Vec<_>) =
        snap.agents.par_iter().enumerate().map(made).unzip();
    anon.learn(learned.into_iter().flatten());
    agents
}

fn agent(
    i: usize,
    a: &Agent,
    directory: &Directory,
    both_ends: &(dyn Fn(usize, usize) -> bool + Sync),
    anon: &mut AnonScope<'_>,
    now: i64,
) -> AgentView {
    AgentView {
        agent_id: a.agent_id.clone(),
        page: directory.pages[i].clone(),
        reported_hostname: directory.reported[i].clone(),
        hostname: directory.hostnames[i].clone(),
        agent_version: anon.text(&a.agent_version),
        status: a.status,
        reachability: anon.text(&a.reachability),
        relay_hops: a.relay_hops,
        via_agent: a.via_agent.clone(),
        first_seen: a.first_seen,
        last_seen: a.last_seen,
        last_seen_age: (now - a.last_seen).max(0),
        last_observed_at: a.last_observed_at,
        kernel: anon.opt_text(a.kernel.as_deref()),
        uptime_secs: a.uptime_secs,
        load: a.load,
        reports: a.reports,
        spool_dropped: a.spool_dropped,
        collect_errors: collect_errors(a, anon),
        cluster: String::new(),
        interfaces: interfaces(a, anon),
        routes: routes(a, anon),
        wireguard: wireguard(i, a, directory, both_ends, anon, now),
        peers_total: a.wg_peers.len(),
        peers_healthy: a
            .wg_peers
            .iter()
            .filter(|p| PeerHealth::parse(&p.health).is_healthy())
            .count(),
        alarms_active: 0,
        history: a.history.clone(),
    }
}

/// The stored JSON list of {source, message}; anything else is no error.
fn collect_errors(a: &Agent, anon: &mut AnonScope<'_>) -> Vec<CollectError> {
    let listed = serde_json::from_str::<Vec<serde_json::Value>>(&a.collect_errors);
    let field = |e: &serde_json::Value, name: &str| -> String {
        e.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string()
    };
    listed
        .unwrap_or_default()
        .iter()
        .map(|e| CollectError {
            source: anon.text(&field(e, "source")),
            message: anon.text(&field(e, "message")),
        })
        .collect()
}

fn interfaces(a: &Agent, anon: &mut AnonScope<'_>) -> Vec<InterfaceView> {
    a.interfaces
        .iter()
        .map(|f| InterfaceView {
            name: anon.text(&f.name),
            kind: anon.text(&f.kind),
            state: anon.text(&f.state),
            mtu: f.mtu,
            mac: f.mac.as_deref().map(|m| anon.mac(m)),
            addresses: f.addresses.iter().map(|s| anon.text(s)).collect(),
            rx_bytes: f.rx_bytes,
            tx_bytes: f.tx_bytes,
            rx_errors: f.rx_errors,
            tx_errors: f.tx_errors,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
        })
        .collect()
}

fn routes(a: &Agent, anon: &mut AnonScope<'_>) -> Vec<RouteView> {
    a.routes
        .iter()
        .map(|r| RouteView {
            dst: anon.network(&r.dst),
            gateway: anon.opt_text(r.gateway.as_deref()),
            dev: anon.opt_text(r.dev.as_deref()),
            metric: r.metric,
            table: r.table,
        })
        .collect()
}

/// The agent's devices, each with its peers; a peer of a device the agent
/// did not report gets a device of its own.
fn wireguard(
    i: usize,
    a: &Agent,
    directory: &Directory,
    both_ends: &(dyn Fn(usize, usize) -> bool + Sync),
    anon: &mut AnonScope<'_>,
    now: i64,
) -> Vec<DeviceView> {
    let mut devices: Vec<DeviceView> = a
        .wg_devices
        .iter()
        .map(|d| DeviceView {
            name: anon.text(&d.name),
            public_key: anon.text(&d.public_key),
            listen_port: d.listen_port,
            peers: Vec::new(),
        })
        .collect();
    for p in &a.wg_peers {
        let view = peer(i, p, directory, both_ends, anon, now);
        let device = anon.text(&p.device);
        match devices.iter_mut().find(|d| d.name == device) {
            Some(d) => d.peers.push(view),
            None => devices.push(DeviceView {
                name: device,
                public_key: String::new(),
                listen_port: None,
                peers: vec![view],
            }),
        }
    }
    // Problems first, then by name (natural order), external peers last.
    for d in &mut devices {
        d.peers.sort_by(|x, y| {
            x.health
                .is_healthy()
                .cmp(&y.health.is_healthy())
                .then(x.peer_hostname.is_none().cmp(&y.peer_hostname.is_none()))
                .then_with(|| {
                    let name = |p: &crate::view::PeerView| {
                        p.peer_hostname.clone().unwrap_or_else(|| p.public_key.clone())
                    };
                    crate::natural::natural_cmp(&name(x), &name(y))
                })
        });
    }
    devices
}

fn peer(
    i: usize,
    p: &WgPeer,
    directory: &Directory,
    both_ends: &(dyn Fn(usize, usize) -> bool + Sync),
    anon: &mut AnonScope<'_>,
    now: i64,
) -> PeerView {
    let other = p.peer_agent_id.as_deref().and_then(|id| directory.of(id));
    let age = p.latest_handshake.map(|t| (now - t).max(0));
    PeerView {
        public_key: anon.text(&p.public_key),
        peer_agent_id: p.peer_agent_id.clone(),
        peer_hostname: other.map(|j| directory.hostnames[j].clone()),
        peer_page: other.map(|j| directory.pages[j].clone()),
        mutual: other.is_some_and(|j| j != i && both_ends(i, j)),
        endpoint: anon.opt_text(p.endpoint.as_deref()),
        allowed_ips: p.allowed_ips.iter().map(|s| anon.text(s)).collect(),
        latest_handshake: p.latest_handshake,
        handshake_age: age,
        handshake_band: handshake_band(age).into(),
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
        persistent_keepalive: p.persistent_keepalive,
        health: PeerHealth::parse(&p.health),
    }
}
