//! The public view of a snapshot: everything the pages and the JSON files
//! show, with every address already anonymised (unless revealing) and
//! every derived fact (agent status, clusters, links) computed once.
//! Renderers only ever see this view, never the raw snapshot, which is what
//! keeps raw addresses out of the site.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use rayon::prelude::*;
use serde::Serialize;

use crate::anon::Anon;
use kattila_store::snapshot::{Agent, FleetSnapshot, Sample};

/// Version of the JSON files' layout (`schema_version` in each).
pub const SCHEMA_VERSION: u32 = 1;

/// Options that change what the view says.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// An agent with no report for this long is silent (even before the
    /// receiver's timer raised its alarm).
    pub silent_after_secs: i64,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions { silent_after_secs: 300 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub schema_version: u32,
    pub generated_at: i64,
    pub addresses_revealed: bool,
    pub summary: Summary,
    pub agents: Vec<AgentView>,
    pub alarms: Vec<AlarmView>,
    pub links: Vec<LinkView>,
    pub clusters: Vec<ClusterView>,
    #[serde(skip)]
    pub index: HashMap<String, usize>,
    /// Per pair of agent indices (low, high): WireGuard link state.
    #[serde(skip)]
    pub pairs: HashMap<(usize, usize), PairState>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, Hash)]
pub struct Summary {
    pub agents_total: usize,
    pub agents_up: usize,
    pub agents_silent: usize,
    pub agents_relay_only: usize,
    pub links_total: usize,
    pub links_healthy: usize,
    pub links_stale: usize,
    pub links_down: usize,
    pub links_one_sided: usize,
    pub external_peers: usize,
    pub alarms_active: usize,
    pub alarms_critical: usize,
    pub alarms_warning: usize,
    pub alarms_info: usize,
    pub alarms_unacknowledged: usize,
    pub clusters: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    /// Page of this agent, relative to the site root.
    pub page: String,
    pub hostname: String,
    pub agent_version: String,
    /// 'up' | 'silent' | 'relay'.
    pub status: String,
    pub reachability: String,
    pub relay_hops: i64,
    pub via_agent: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_seen_age: i64,
    pub last_observed_at: Option<i64>,
    pub kernel: Option<String>,
    pub uptime_secs: Option<i64>,
    pub load: Option<[f64; 3]>,
    pub reports: i64,
    pub spool_dropped: i64,
    pub collect_errors: Vec<CollectError>,
    pub cluster: String,
    pub interfaces: Vec<InterfaceView>,
    pub routes: Vec<RouteView>,
    pub wireguard: Vec<DeviceView>,
    pub peers_total: usize,
    pub peers_healthy: usize,
    pub alarms_active: usize,
    #[serde(skip)]
    pub history: Vec<Sample>,
}

/// Page keys (`render::PageKeys`) hash everything a page is rendered from
/// except what only moves with the clock: `last_seen_age` is left out, as
/// pages below the root never show relative times.
impl Hash for AgentView {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Destructured, so that a new field cannot be forgotten here.
        let AgentView {
            agent_id,
            page,
            hostname,
            agent_version,
            status,
            reachability,
            relay_hops,
            via_agent,
            first_seen,
            last_seen,
            last_seen_age: _,
            last_observed_at,
            kernel,
            uptime_secs,
            load,
            reports,
            spool_dropped,
            collect_errors,
            cluster,
            interfaces,
            routes,
            wireguard,
            peers_total,
            peers_healthy,
            alarms_active,
            history,
        } = self;
        (agent_id, page, hostname, agent_version, status, reachability).hash(h);
        (relay_hops, via_agent, first_seen, last_seen, last_observed_at).hash(h);
        (kernel, uptime_secs, load.map(|l| l.map(f64::to_bits))).hash(h);
        (reports, spool_dropped, collect_errors, cluster, interfaces, routes).hash(h);
        (wireguard, peers_total, peers_healthy, alarms_active, history).hash(h);
    }
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct CollectError {
    pub source: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct InterfaceView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub mtu: i64,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub rx_errors: i64,
    pub tx_errors: i64,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct RouteView {
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub metric: Option<i64>,
    pub table: i64,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct DeviceView {
    pub name: String,
    pub public_key: String,
    pub listen_port: Option<i64>,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub public_key: String,
    pub peer_agent_id: Option<String>,
    pub peer_hostname: Option<String>,
    pub peer_page: Option<String>,
    /// The peer lists this agent too.
    pub mutual: bool,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake: Option<i64>,
    pub handshake_age: Option<i64>,
    pub handshake_band: String,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub persistent_keepalive: Option<i64>,
    /// 'healthy' | 'stale' | 'never'.
    pub health: String,
}

/// All but the clock-relative `handshake_age` (see `AgentView`'s `Hash`).
impl Hash for PeerView {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let PeerView {
            public_key,
            peer_agent_id,
            peer_hostname,
            peer_page,
            mutual,
            endpoint,
            allowed_ips,
            latest_handshake,
            handshake_age: _,
            handshake_band,
            rx_bytes,
            tx_bytes,
            persistent_keepalive,
            health,
        } = self;
        (public_key, peer_agent_id, peer_hostname, peer_page, mutual, endpoint).hash(h);
        (allowed_ips, latest_handshake, handshake_band, rx_bytes, tx_bytes).hash(h);
        (persistent_keepalive, health).hash(h);
    }
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct AlarmView {
    pub id: i64,
    pub kind: String,
    pub severity: String,
    pub agent_id: String,
    pub hostname: Option<String>,
    pub agent_page: Option<String>,
    pub subject: String,
    pub message: String,
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub acknowledged: bool,
    /// Seconds from raised to resolved (or to last observed while active).
    pub duration: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkView {
    /// 'wireguard' | 'relay' | 'physical'.
    pub kind: String,
    pub a: String,
    /// '' for an external peer.
    pub b: String,
    /// The external peer's public key, else ''.
    pub external: String,
    pub both_ends: bool,
    /// 'healthy' | 'stale' | 'down' | 'unknown'.
    pub health: String,
    pub handshake_age: Option<i64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct ClusterView {
    /// File-safe name.
    pub id: String,
    /// The (anonymised) network that defines it.
    pub label: String,
    pub page: String,
    pub agents: Vec<usize>,
    pub up: usize,
    pub silent: usize,
    pub relay: usize,
    pub alarms_active: usize,
    /// 'ok' | 'warning' | 'critical'.
    pub health: String,
}

/// WireGuard state of one pair of agents.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairState {
    pub low_lists_high: bool,
    pub high_lists_low: bool,
    pub newest_handshake: Option<i64>,
}

/// "< 3 min", "< 10 min", "< 1 h", "> 1 h", "never".
pub fn handshake_band(age: Option<i64>) -> &'static str {
    match age {
        None => "never",
        Some(a) if a < 180 => "< 3 min",
        Some(a) if a < 600 => "< 10 min",
        Some(a) if a < 3600 => "< 1 h",
        Some(_) => "> 1 h",
    }
}

/// A file name for an agent's page: the id itself when it is plainly safe
/// (lowercase letters, digits, '-', '_', inner dots), else a hash of it.
pub fn page_name(agent_id: &str) -> String {
    let plain = !agent_id.is_empty()
        && agent_id.len() <= 64
        && !agent_id.starts_with('.')
        && !agent_id.ends_with('.')
        && agent_id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if plain {
        agent_id.to_string()
    } else {
        use sha2::Digest;
        format!("id-{}", &hex::encode(sha2::Sha256::digest(agent_id.as_bytes()))[..32])
    }
}

fn network_of(addr: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = addr.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let net = match ip {
        IpAddr::V4(v4) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if len <= 128 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return None,
    };
    Some((net, len))
}

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The network an agent is clustered by: its first LAN IPv4 network, else
/// its first global IPv6 network, else its WireGuard network.
fn cluster_key(agent: &Agent) -> Option<String> {
    let pick = |wireguard: bool, v4: bool| {
        agent
            .interfaces
            .iter()
            .filter(|i| i.kind != "loopback" && (i.kind == "wireguard") == wireguard)
            .flat_map(|i| i.addresses.iter())
            .filter_map(|a| network_of(a))
            .find(|(net, len)| usable(net) && net.is_ipv4() == v4 && *len > 0)
            .map(|(net, len)| format!("{net}/{len}"))
    };
    pick(false, true).or_else(|| pick(false, false)).or_else(|| pick(true, true))
}

fn file_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

fn health_rank(h: &str) -> u8 {
    match h {
        "healthy" => 3,
        "stale" => 2,
        "never" | "down" => 1,
        _ => 0,
    }
}

impl Site {
    /// Builds the view. All text passes through `anon`.
    pub fn build(snap: &FleetSnapshot, anon: &mut Anon, now: i64, opts: &ViewOptions) -> Site {
        let index: HashMap<String, usize> =
            snap.agents.iter().enumerate().map(|(i, a)| (a.agent_id.clone(), i)).collect();
        let pages: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            snap.agents
                .iter()
                .map(|a| {
                    let mut name = page_name(&a.agent_id);
                    if !seen.insert(name.clone()) {
                        name = format!("{name}-{}", seen.len());
                        seen.insert(name.clone());
                    }
                    format!("agents/{name}.html")
                })
                .collect()
        };
        let key_owner: HashMap<&str, usize> = snap
            .agents
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.wg_devices.iter().map(move |d| (d.public_key.as_str(), i)))
            .collect();
        let hostnames: Vec<String> = snap.agents.iter().map(|a| anon.text(&a.hostname)).collect();

        // Alarms.
        let mut silent_alarm = vec![false; snap.agents.len()];
        let mut active_per_agent = vec![0usize; snap.agents.len()];
        let mut alarms: Vec<AlarmView> = snap
            .alarms
            .iter()
            .map(|al| {
                let who = index.get(&al.agent_id).copied();
                let active = al.state == "active";
                if let (Some(i), true) = (who, active) {
                    active_per_agent[i] += 1;
                    if al.kind == "agent_silent" {
                        silent_alarm[i] = true;
                    }
                }
                // Raised until resolved, or until last observed while active
                // (not until now: pages stay the same while nothing changes).
                let end = al.resolved_at.unwrap_or(al.last_seen);
                AlarmView {
                    id: al.id,
                    kind: anon.text(&al.kind),
                    severity: anon.text(&al.severity),
                    agent_id: al.agent_id.clone(),
                    hostname: who.map(|i| hostnames[i].clone()),
                    agent_page: who.map(|i| pages[i].clone()),
                    subject: anon.text(&al.subject),
                    message: anon.text(&al.message),
                    state: al.state.clone(),
                    first_seen: al.first_seen,
                    last_seen: al.last_seen,
                    resolved_at: al.resolved_at,
                    acked_at: al.acked_at,
                    acknowledged: al.acked_at.is_some(),
                    duration: (end - al.first_seen).max(0),
                }
            })
            .collect();
        let sev_rank = |s: &str| match s {
            "critical" => 0,
            "warning" => 1,
            "info" => 2,
            _ => 3,
        };
        alarms.sort_by(|x, y| {
            (x.state != "active")
                .cmp(&(y.state != "active"))
                .then_with(|| {
                    if x.state == "active" {
                        sev_rank(&x.severity).cmp(&sev_rank(&y.severity))
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then(y.first_seen.cmp(&x.first_seen))
                .then(y.id.cmp(&x.id))
        });

        // WireGuard pairs from both ends' peer lists.
        let mut pairs: HashMap<(usize, usize), PairState> = HashMap::new();
        for (i, a) in snap.agents.iter().enumerate() {
            for p in &a.wg_peers {
                let other = p
                    .peer_agent_id
                    .as_deref()
                    .and_then(|id| index.get(id).copied())
                    .or_else(|| key_owner.get(p.public_key.as_str()).copied());
                let Some(j) = other.filter(|&j| j != i) else { continue };
                let key = (i.min(j), i.max(j));
                let st = pairs.entry(key).or_default();
                if i < j {
                    st.low_lists_high = true;
                } else {
                    st.high_lists_low = true;
                }
                st.newest_handshake = st.newest_handshake.max(p.latest_handshake);
            }
        }

        // Agents, on all cores: the memo of anonymised text is shared
        // read-only meanwhile, and learns what was new afterwards.
        let shared: &Anon = anon;
        let (mut agents, learned): (Vec<AgentView>, Vec<_>) = snap
            .agents
            .par_iter()
            .enumerate()
            .map(|(i, a)| {
                let mut anon = shared.scope();
                let silent = silent_alarm[i] || now - a.last_seen > opts.silent_after_secs;
                let status = if silent {
                    "silent"
                } else if a.reachability == "relay" {
                    "relay"
                } else {
                    "up"
                };
                let collect_errors =
                    serde_json::from_str::<Vec<serde_json::Value>>(&a.collect_errors)
                        .unwrap_or_default()
                        .iter()
                        .map(|e| CollectError {
                            source: anon
                                .text(e.get("source").and_then(|v| v.as_str()).unwrap_or("")),
                            message: anon
                                .text(e.get("message").and_then(|v| v.as_str()).unwrap_or("")),
                        })
                        .collect();
                let wireguard: Vec<DeviceView> = a
                    .wg_devices
                    .iter()
                    .map(|d| DeviceView {
                        name: anon.text(&d.name),
                        public_key: anon.text(&d.public_key),
                        listen_port: d.listen_port,
                        peers: Vec::new(),
                    })
                    .collect();
                let mut wireguard = wireguard;
                let mut peers_healthy = 0;
                for p in &a.wg_peers {
                    let other = p
                        .peer_agent_id
                        .as_deref()
                        .and_then(|id| index.get(id).copied())
                        .or_else(|| key_owner.get(p.public_key.as_str()).copied());
                    let mutual = other
                        .filter(|&j| j != i)
                        .and_then(|j| pairs.get(&(i.min(j), i.max(j))))
                        .is_some_and(|s| s.low_lists_high && s.high_lists_low);
                    if p.health == "healthy" {
                        peers_healthy += 1;
                    }
                    let age = p.latest_handshake.map(|t| (now - t).max(0));
                    let view = PeerView {
                        public_key: anon.text(&p.public_key),
                        peer_agent_id: other
                            .map(|j| snap.agents[j].agent_id.clone())
                            .or_else(|| p.peer_agent_id.clone()),
                        peer_hostname: other.map(|j| hostnames[j].clone()),
                        peer_page: other.map(|j| pages[j].clone()),
                        mutual,
                        endpoint: anon.opt_text(p.endpoint.as_deref()),
                        allowed_ips: p.allowed_ips.iter().map(|s| anon.text(s)).collect(),
                        latest_handshake: p.latest_handshake,
                        handshake_age: age,
                        handshake_band: handshake_band(age).into(),
                        rx_bytes: p.rx_bytes,
                        tx_bytes: p.tx_bytes,
                        persistent_keepalive: p.persistent_keepalive,
                        health: anon.text(&p.health),
                    };
                    let device = anon.text(&p.device);
                    match wireguard.iter_mut().find(|d| d.name == device) {
                        Some(d) => d.peers.push(view),
                        None => wireguard.push(DeviceView {
                            name: device,
                            public_key: String::new(),
                            listen_port: None,
                            peers: vec![view],
                        }),
                    }
                }
                let view = AgentView {
                    agent_id: a.agent_id.clone(),
                    page: pages[i].clone(),
                    hostname: hostnames[i].clone(),
                    agent_version: anon.text(&a.agent_version),
                    status: status.into(),
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
                    collect_errors,
                    cluster: String::new(),
                    interfaces: a
                        .interfaces
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
                        })
                        .collect(),
                    routes: a
                        .routes
                        .iter()
                        .map(|r| RouteView {
                            dst: anon.network(&r.dst),
                            gateway: anon.opt_text(r.gateway.as_deref()),
                            dev: anon.opt_text(r.dev.as_deref()),
                            metric: r.metric,
                            table: r.table_id,
                        })
                        .collect(),
                    wireguard,
                    peers_total: a.wg_peers.len(),
                    peers_healthy,
                    alarms_active: active_per_agent[i],
                    history: a.history.clone(),
                };
                (view, anon.learned)
            })
            .unzip();
        anon.learn(learned.into_iter().flatten());

        // Links: the receiver's inferred edges, or (before it infers any)
        // WireGuard and relay links derived here from the peer lists.
        let mut links: Vec<LinkView> = if !snap.edges.is_empty() {
            snap.edges
                .iter()
                .map(|e| LinkView {
                    kind: anon.text(&e.kind),
                    a: e.a_agent.clone(),
                    b: e.b_agent.clone(),
                    external: anon.text(&e.b_external),
                    both_ends: e.both_ends,
                    health: anon.text(&e.health),
                    handshake_age: e.handshake_age,
                    detail: anon.opt_text(e.detail.as_deref()),
                })
                .collect()
        } else {
            derive_links(snap, &pairs, &key_owner, &index, now, anon)
        };
        links.sort_by(|x, y| {
            (&x.kind, &x.a, &x.b, &x.external).cmp(&(&y.kind, &y.a, &y.b, &y.external))
        });

        // Clusters.
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, a) in snap.agents.iter().enumerate() {
            let label = match cluster_key(a) {
                Some(k) => anon.network(&k),
                None => "unaddressed".to_string(),
            };
            by_key.entry(label).or_default().push(i);
        }
        let mut clusters = Vec::new();
        let mut used_ids = std::collections::HashSet::new();
        for (label, members) in by_key {
            let mut id = format!("net-{}", file_safe(&label));
            if !used_ids.insert(id.clone()) {
                id = format!("{id}-{}", used_ids.len());
                used_ids.insert(id.clone());
            }
            let count = |s: &str| members.iter().filter(|&&i| agents[i].status == s).count();
            let alarms_active: usize = members.iter().map(|&i| agents[i].alarms_active).sum();
            let (up, silent, relay) = (count("up"), count("silent"), count("relay"));
            let health = if silent > 0 {
                "critical"
            } else if relay > 0 || alarms_active > 0 {
                "warning"
            } else {
                "ok"
            };
            for &i in &members {
                agents[i].cluster = id.clone();
            }
            clusters.push(ClusterView {
                page: format!("map/{id}.html"),
                id,
                label,
                agents: members,
                up,
                silent,
                relay,
                alarms_active,
                health: health.into(),
            });
        }

        let mut summary =
            Summary { agents_total: agents.len(), clusters: clusters.len(), ..Summary::default() };
        for a in &agents {
            match a.status.as_str() {
                "silent" => summary.agents_silent += 1,
                "relay" => summary.agents_relay_only += 1,
                _ => summary.agents_up += 1,
            }
        }
        for l in links.iter().filter(|l| l.kind == "wireguard") {
            if !l.external.is_empty() {
                summary.external_peers += 1;
                continue;
            }
            summary.links_total += 1;
            match l.health.as_str() {
                "healthy" => summary.links_healthy += 1,
                "stale" => summary.links_stale += 1,
                _ => summary.links_down += 1,
            }
            if !l.both_ends {
                summary.links_one_sided += 1;
            }
        }
        for al in alarms.iter().filter(|a| a.state == "active") {
            summary.alarms_active += 1;
            match al.severity.as_str() {
                "critical" => summary.alarms_critical += 1,
                "warning" => summary.alarms_warning += 1,
                _ => summary.alarms_info += 1,
            }
            if !al.acknowledged {
                summary.alarms_unacknowledged += 1;
            }
        }

        Site {
            schema_version: SCHEMA_VERSION,
            generated_at: now,
            addresses_revealed: anon.is_revealing(),
            summary,
            agents,
            alarms,
            links,
            clusters,
            index,
            pairs,
        }
    }

    pub fn agent(&self, id: &str) -> Option<&AgentView> {
        self.index.get(id).map(|&i| &self.agents[i])
    }
}

fn derive_links(
    snap: &FleetSnapshot,
    pairs: &HashMap<(usize, usize), PairState>,
    key_owner: &HashMap<&str, usize>,
    index: &HashMap<String, usize>,
    now: i64,
    anon: &mut Anon,
) -> Vec<LinkView> {
    let mut links = Vec::new();
    let mut health: HashMap<(usize, usize), u8> = HashMap::new();
    for (i, a) in snap.agents.iter().enumerate() {
        for p in &a.wg_peers {
            let other = p
                .peer_agent_id
                .as_deref()
                .and_then(|id| index.get(id).copied())
                .or_else(|| key_owner.get(p.public_key.as_str()).copied());
            match other {
                Some(j) if j != i => {
                    let h = health.entry((i.min(j), i.max(j))).or_default();
                    *h = (*h).max(health_rank(&p.health));
                }
                Some(_) => {}
                None => links.push(LinkView {
                    kind: "wireguard".into(),
                    a: a.agent_id.clone(),
                    b: String::new(),
                    external: anon.text(&p.public_key),
                    both_ends: false,
                    health: match p.health.as_str() {
                        "healthy" => "healthy",
                        "stale" => "stale",
                        _ => "down",
                    }
                    .into(),
                    handshake_age: p.latest_handshake.map(|t| (now - t).max(0)),
                    detail: None,
                }),
            }
        }
    }
    for (&(lo, hi), st) in pairs {
        let (a, b) = (&snap.agents[lo].agent_id, &snap.agents[hi].agent_id);
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        let rank = health.get(&(lo, hi)).copied().unwrap_or(0);
        links.push(LinkView {
            kind: "wireguard".into(),
            a: a.clone(),
            b: b.clone(),
            external: String::new(),
            both_ends: st.low_lists_high && st.high_lists_low,
            health: match rank {
                3 => "healthy",
                2 => "stale",
                1 => "down",
                _ => "unknown",
            }
            .into(),
            handshake_age: st.newest_handshake.map(|t| (now - t).max(0)),
            detail: None,
        });
    }
    for a in &snap.agents {
        if let Some(via) = a.via_agent.as_deref().filter(|v| index.contains_key(*v)) {
            if a.relay_hops > 0 && via != a.agent_id {
                links.push(LinkView {
                    kind: "relay".into(),
                    a: via.to_string(),
                    b: a.agent_id.clone(),
                    external: String::new(),
                    both_ends: false,
                    health: "healthy".into(),
                    handshake_age: None,
                    detail: None,
                });
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_are_safe() {
        assert_eq!(page_name("0123abcd"), "0123abcd");
        for hostile in
            ["..", ".", "../x", "A/B", "con\u{0}", "Upper", "a b", "x".repeat(70).as_str()]
        {
            let n = page_name(hostile);
            assert!(n.starts_with("id-") && n.len() == 35, "{hostile:?} -> {n}");
        }
        assert_ne!(page_name("Upper"), page_name("upper"));
    }

    #[test]
    fn bands() {
        assert_eq!(handshake_band(None), "never");
        assert_eq!(handshake_band(Some(10)), "< 3 min");
        assert_eq!(handshake_band(Some(4000)), "> 1 h");
    }
}
