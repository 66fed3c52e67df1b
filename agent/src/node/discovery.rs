//! Discovery: finding other agents that can relay this agent's messages —
//! the configured relay URLs and the WireGuard peers' host addresses on the
//! peer port — by asking each for its `GET /status/peer`, best path first.

use std::net::IpAddr;
use std::time::Instant;

use kattila_proto::limits::{check_agent_id, parse_cidr};
use kattila_proto::{PathInfo, PeerInfo};

use super::Node;
use crate::config::Config;
use crate::push::{endpoint, Pusher};
use crate::report::Telemetry;

/// Most addresses probed when looking for relays.
pub const MAX_PROBES: usize = 256;

/// Another agent that answered a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub base: String,
    pub agent_id: String,
    pub path: PathInfo,
}

/// Sort key of a candidate's path: a direct path first, then fewer hops,
/// unknown, none.
fn rank(path: PathInfo) -> usize {
    match path {
        PathInfo::Direct => 0,
        PathInfo::Relay { hops } => hops,
        PathInfo::Unknown => 100,
        PathInfo::None => 101,
    }
}

impl Node {
    /// Agents that answer on the mesh or at the configured relay URLs,
    /// best path first, never this agent itself. Cached for one interval
    /// unless `refresh`.
    pub async fn candidates(&self, refresh: bool) -> Vec<Candidate> {
        let mut cache = self.candidates.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if !refresh && at.elapsed() < self.config.interval {
                return list.clone();
            }
        }
        let list = self.probe().await;
        *cache = Some((Instant::now(), list.clone()));
        list
    }

    async fn probe(&self) -> Vec<Candidate> {
        let hosts = self.observed.read().unwrap_or_else(|e| e.into_inner()).mesh_hosts.clone();
        let targets = targets(&self.config, &hosts);
        probe(&self.prober, targets, Some(&self.agent_id())).await
    }
}

/// Base URL of an agent at `ip`:`port`.
pub fn agent_base(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// Host addresses (/32, /128) in the AllowedIPs of WireGuard peers, peers
/// with the most recent handshake first.
pub fn mesh_hosts(t: &Telemetry) -> Vec<IpAddr> {
    let mut peers: Vec<(i64, IpAddr)> = Vec::new();
    for dev in &t.wireguard {
        for peer in &dev.peers {
            for allowed in &peer.allowed_ips {
                if let Some((ip, prefix)) = parse_cidr(allowed) {
                    let host = if ip.is_ipv4() { 32 } else { 128 };
                    if prefix == host && !ip.is_unspecified() {
                        peers.push((peer.latest_handshake.unwrap_or(0), ip));
                    }
                }
            }
        }
    }
    peers.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut hosts: Vec<IpAddr> = Vec::new();
    for (_, ip) in peers {
        if !hosts.contains(&ip) {
            hosts.push(ip);
        }
    }
    hosts
}

/// Base URLs to probe: the configured relays, then the mesh hosts on the
/// peer port; at most [`MAX_PROBES`].
pub fn targets(config: &Config, hosts: &[IpAddr]) -> Vec<String> {
    let mut targets: Vec<String> =
        config.relays.iter().map(|u| u.as_str().trim_end_matches('/').to_string()).collect();
    for &ip in hosts {
        let base = agent_base(ip, config.peer_port);
        if !targets.contains(&base) {
            targets.push(base);
        }
    }
    targets.truncate(MAX_PROBES);
    targets
}

/// What `--discover` probes for a given collection.
pub fn probe_targets(config: &Config, t: &Telemetry) -> Vec<String> {
    targets(config, &mesh_hosts(t))
}

/// Asks every target's `GET /status/peer` at once; returns the agents that
/// answered (not `own`), best path first.
pub async fn probe(prober: &Pusher, targets: Vec<String>, own: Option<&str>) -> Vec<Candidate> {
    let mut set = tokio::task::JoinSet::new();
    for base in targets {
        let prober = prober.clone();
        set.spawn(async move {
            let info: PeerInfo = prober.get_json(&endpoint(&base, "/status/peer")).await.ok()?;
            check_agent_id(&info.agent_id).ok()?;
            Some(Candidate { base, agent_id: info.agent_id, path: info.path })
        });
    }
    let mut found: Vec<Candidate> = Vec::new();
    while let Some(res) = set.join_next().await {
        if let Ok(Some(c)) = res {
            if Some(c.agent_id.as_str()) != own && !found.iter().any(|f| f.agent_id == c.agent_id) {
                found.push(c);
            }
        }
    }
    found.sort_by(|a, b| rank(a.path).cmp(&rank(b.path)).then_with(|| a.base.cmp(&b.base)));
    found
}
