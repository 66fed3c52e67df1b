//! The JSON files under `api/v1/` for other tools, each with a JSON Schema
//! published beside it in `api/v1/schema/`. Field names are stable; a
//! change that breaks readers bumps `schema_version`.
//!
//! What grows with the fleet is split so that a reader opens small files:
//! `agents.json` is the index (one entry per agent, about 500 bytes), and
//! each agent's interfaces, routes and WireGuard peers are in
//! `api/v1/agents/<file>.json`. Those carry no generation time, so a build
//! reuses the file of every agent whose data did not change.

use std::borrow::Cow;

use kattila_fleet::Health;
use rayon::prelude::*;
use serde::Serialize;

use crate::files::SiteFile;
use crate::format::iso_time;
use crate::view::{
    AgentView, AlarmView, ClusterView, CollectError, DeviceView, IncidentView, InterfaceView,
    LinkView, PeerView, RouteView, Site, Summary,
};

/// The published schemas: (file name under api/v1/schema/, text).
pub const SCHEMAS: &[(&str, &str)] = &[
    ("summary.schema.json", include_str!("../../templates/api/schema/summary.schema.json")),
    ("agents.schema.json", include_str!("../../templates/api/schema/agents.schema.json")),
    ("agent.schema.json", include_str!("../../templates/api/schema/agent.schema.json")),
    ("alarms.schema.json", include_str!("../../templates/api/schema/alarms.schema.json")),
    ("topology.schema.json", include_str!("../../templates/api/schema/topology.schema.json")),
    ("netjson.schema.json", include_str!("../../templates/api/schema/netjson.schema.json")),
    // What the receiver's webhook channel sends (docs/notifications.md).
    (
        "notification.schema.json",
        include_str!("../../templates/api/schema/notification.schema.json"),
    ),
];

/// The schema of every per-agent file, `api/v1/agents/<file>.json`.
pub const AGENT_DETAIL_SCHEMA: &str = "agent.schema.json";

/// Which schema describes which file (the per-agent files aside).
pub const FILES: &[(&str, &str)] = &[
    ("api/v1/summary.json", "summary.schema.json"),
    ("api/v1/agents.json", "agents.schema.json"),
    ("api/v1/alarms.json", "alarms.schema.json"),
    ("api/v1/topology.json", "topology.schema.json"),
    ("api/v1/topology.netjson", "netjson.schema.json"),
];

#[derive(Serialize)]
struct Header<'a> {
    #[serde(rename = "$schema")]
    schema: &'a str,
    schema_version: u32,
    generated_at: i64,
    generated_at_iso: String,
    addresses_revealed: bool,
}

fn header<'a>(site: &Site, schema: &'a str) -> Header<'a> {
    Header {
        schema,
        schema_version: site.schema_version,
        generated_at: site.generated_at,
        generated_at_iso: iso_time(site.generated_at),
        addresses_revealed: site.addresses_revealed,
    }
}

#[derive(Serialize)]
struct ClusterOut<'a> {
    id: &'a str,
    label: &'a str,
    page: &'a str,
    agents: usize,
    up: usize,
    silent: usize,
    relay: usize,
    alarms_active: usize,
    links_not_healthy: usize,
    health: &'a str,
}

impl<'a> From<&'a ClusterView> for ClusterOut<'a> {
    fn from(c: &'a ClusterView) -> Self {
        ClusterOut {
            id: &c.id,
            label: &c.label,
            page: &c.page,
            agents: c.agents.len(),
            up: c.up,
            silent: c.silent,
            relay: c.relay,
            alarms_active: c.alarms_active,
            links_not_healthy: c.links_not_healthy,
            health: &c.health,
        }
    }
}

#[derive(Serialize)]
struct SummaryFile<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    summary: &'a Summary,
    clusters: Vec<ClusterOut<'a>>,
}

#[derive(Serialize)]
struct AgentsFile<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    agents: Vec<AgentEntry<'a>>,
}

/// One agent in the index `agents.json`.
#[derive(Serialize)]
struct AgentEntry<'a> {
    agent_id: &'a str,
    page: &'a str,
    detail: String,
    hostname: &'a str,
    display_name: &'a str,
    agent_version: &'a str,
    status: &'a str,
    reachability: &'a str,
    relay_hops: i64,
    via_agent: Option<&'a str>,
    first_seen: i64,
    last_seen: i64,
    last_seen_age: i64,
    last_observed_at: Option<i64>,
    kernel: Option<&'a str>,
    uptime_secs: Option<i64>,
    load: Option<[f64; 3]>,
    reports: i64,
    spool_dropped: i64,
    collect_errors: &'a [CollectError],
    cluster: &'a str,
    peers_total: usize,
    peers_healthy: usize,
    alarms_active: usize,
}

impl<'a> From<&'a AgentView> for AgentEntry<'a> {
    fn from(a: &'a AgentView) -> Self {
        // Two decimals, as the pages show them: 1.1, not 1.0999999999999999.
        let round = |x: f64| (x * 100.0).round() / 100.0;
        AgentEntry {
            agent_id: &a.agent_id,
            page: &a.page,
            detail: detail_path(&a.page),
            hostname: &a.reported_hostname,
            display_name: &a.hostname,
            agent_version: &a.agent_version,
            status: a.status.as_str(),
            reachability: &a.reachability,
            relay_hops: a.relay_hops,
            via_agent: a.via_agent.as_deref(),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            last_seen_age: a.last_seen_age,
            last_observed_at: a.last_observed_at,
            kernel: a.kernel.as_deref(),
            uptime_secs: a.uptime_secs,
            load: a.load.map(|l| l.map(round)),
            reports: a.reports,
            spool_dropped: a.spool_dropped,
            collect_errors: &a.collect_errors,
            cluster: &a.cluster,
            peers_total: a.peers_total,
            peers_healthy: a.peers_healthy,
            alarms_active: a.alarms_active,
        }
    }
}

/// The per-agent file beside a page: `agents/x.html` → `api/v1/agents/x.json`.
pub fn detail_path(page: &str) -> String {
    let name = page.strip_prefix("agents/").unwrap_or(page);
    format!("api/v1/agents/{}.json", name.strip_suffix(".html").unwrap_or(name))
}

/// `api/v1/agents/<file>.json`: what the agent's page shows in its tables.
/// Values that only move with the clock (ages) and names found in the
/// index are left out, so the file changes only when the agent's data does.
#[derive(Serialize)]
struct AgentDetail<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    schema_version: u32,
    addresses_revealed: bool,
    agent_id: &'a str,
    hostname: &'a str,
    page: &'a str,
    last_seen: i64,
    interfaces: &'a [InterfaceView],
    routes: &'a [RouteView],
    wireguard: Vec<DeviceOut<'a>>,
}

#[derive(Serialize)]
struct DeviceOut<'a> {
    name: &'a str,
    public_key: &'a str,
    listen_port: Option<i64>,
    peers: Vec<PeerOut<'a>>,
}

#[derive(Serialize)]
struct PeerOut<'a> {
    public_key: &'a str,
    peer_agent_id: Option<&'a str>,
    mutual: bool,
    endpoint: Option<&'a str>,
    allowed_ips: &'a [String],
    latest_handshake: Option<i64>,
    rx_bytes: i64,
    tx_bytes: i64,
    persistent_keepalive: Option<i64>,
    health: &'a str,
}

impl<'a> From<&'a DeviceView> for DeviceOut<'a> {
    fn from(d: &'a DeviceView) -> Self {
        DeviceOut {
            name: &d.name,
            public_key: &d.public_key,
            listen_port: d.listen_port,
            peers: d.peers.iter().map(PeerOut::from).collect(),
        }
    }
}

impl<'a> From<&'a PeerView> for PeerOut<'a> {
    fn from(p: &'a PeerView) -> Self {
        PeerOut {
            public_key: &p.public_key,
            peer_agent_id: p.peer_agent_id.as_deref(),
            mutual: p.mutual,
            endpoint: p.endpoint.as_deref(),
            allowed_ips: &p.allowed_ips,
            latest_handshake: p.latest_handshake,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive: p.persistent_keepalive,
            health: p.health.as_str(),
        }
    }
}

fn agent_detail(site: &Site, a: &AgentView) -> anyhow::Result<SiteFile> {
    let detail = AgentDetail {
        schema: "../schema/agent.schema.json",
        schema_version: site.schema_version,
        addresses_revealed: site.addresses_revealed,
        agent_id: &a.agent_id,
        hostname: &a.reported_hostname,
        page: &a.page,
        last_seen: a.last_seen,
        interfaces: &a.interfaces,
        routes: &a.routes,
        wireguard: a.wireguard.iter().map(DeviceOut::from).collect(),
    };
    Ok(SiteFile::new(detail_path(&a.page), to_bytes(&detail)?))
}

#[derive(Serialize)]
struct AlarmsFile<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    alarms: &'a [AlarmView],
    /// Related alarms of one site, grouped by the receiver.
    incidents: &'a [IncidentView],
}

#[derive(Serialize)]
struct NodeOut<'a> {
    id: &'a str,
    hostname: &'a str,
    status: &'a str,
    cluster: &'a str,
    page: &'a str,
}

#[derive(Serialize)]
struct TopologyFile<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    nodes: Vec<NodeOut<'a>>,
    links: &'a [LinkView],
}

fn to_bytes(v: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut out = serde_json::to_vec(v)?;
    out.push(b'\n');
    Ok(out)
}

/// NetJSON NetworkGraph (https://netjson.org/rfc.html): agents and external
/// peers as nodes, every link as a link. Fields are declared in
/// alphabetical order: the file has always listed keys sorted.
#[derive(Serialize)]
pub struct NetJson<'a> {
    label: &'static str,
    links: Vec<NetLink<'a>>,
    metric: &'static str,
    nodes: Vec<NetNode<'a>>,
    protocol: &'static str,
    router_id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct NetNode<'a> {
    id: Cow<'a, str>,
    label: &'a str,
    properties: NodeProperties<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum NodeProperties<'a> {
    Agent { cluster: &'a str, page: &'a str, status: &'a str },
    External { external: bool },
}

#[derive(Serialize)]
struct NetLink<'a> {
    cost: f64,
    properties: LinkProperties<'a>,
    source: &'a str,
    target: Cow<'a, str>,
}

#[derive(Serialize)]
struct LinkProperties<'a> {
    both_ends: bool,
    handshake_age: Option<i64>,
    health: &'a str,
    kind: &'a str,
}

pub fn netjson(site: &Site) -> NetJson<'_> {
    let mut nodes: Vec<NetNode> = site
        .agents
        .iter()
        .map(|a| NetNode {
            id: Cow::Borrowed(&a.agent_id),
            label: &a.hostname,
            properties: NodeProperties::Agent {
                cluster: &a.cluster,
                page: &a.page,
                status: a.status.as_str(),
            },
        })
        .collect();
    let mut externals: Vec<&str> =
        site.links.iter().filter(|l| !l.external.is_empty()).map(|l| l.external.as_str()).collect();
    externals.sort_unstable();
    externals.dedup();
    nodes.extend(externals.iter().map(|k| NetNode {
        id: Cow::Owned(format!("wg:{k}")),
        label: "external peer",
        properties: NodeProperties::External { external: true },
    }));
    let links = site
        .links
        .iter()
        .map(|l| NetLink {
            cost: match l.health {
                Health::Healthy => 1.0,
                Health::Stale => 10.0,
                Health::Down | Health::Unknown => 100.0,
            },
            properties: LinkProperties {
                both_ends: l.both_ends,
                handshake_age: l.handshake_age,
                health: l.health.as_str(),
                kind: &l.kind,
            },
            source: &l.a,
            target: if l.external.is_empty() {
                Cow::Borrowed(&l.b)
            } else {
                Cow::Owned(format!("wg:{}", l.external))
            },
        })
        .collect();
    NetJson {
        label: "Kattila fleet",
        links,
        metric: "health",
        nodes,
        protocol: "wireguard",
        router_id: "kattila",
        kind: "NetworkGraph",
        version: "1",
    }
}

type Maker = fn(&Site) -> anyhow::Result<Vec<u8>>;

/// Every file under `api/v1/`, side by side on all cores.
pub fn files(site: &Site) -> anyhow::Result<Vec<SiteFile>> {
    files_into(site, &Ok)
}

/// [`files`], each handed to `sink` as soon as it is made.
pub fn files_into<T: Send>(
    site: &Site,
    sink: &(dyn Fn(SiteFile) -> anyhow::Result<T> + Sync),
) -> anyhow::Result<Vec<T>> {
    let makers: [(&str, Maker); 5] = [
        ("api/v1/summary.json", |site| {
            to_bytes(&SummaryFile {
                header: header(site, "schema/summary.schema.json"),
                summary: &site.summary,
                clusters: site.clusters.iter().map(ClusterOut::from).collect(),
            })
        }),
        ("api/v1/agents.json", |site| {
            to_bytes(&AgentsFile {
                header: header(site, "schema/agents.schema.json"),
                agents: site.agents.iter().map(AgentEntry::from).collect(),
            })
        }),
        ("api/v1/alarms.json", |site| {
            to_bytes(&AlarmsFile {
                header: header(site, "schema/alarms.schema.json"),
                alarms: &site.alarms,
                incidents: &site.incidents,
            })
        }),
        ("api/v1/topology.json", |site| {
            to_bytes(&TopologyFile {
                header: header(site, "schema/topology.schema.json"),
                nodes: site
                    .agents
                    .iter()
                    .map(|a| NodeOut {
                        id: &a.agent_id,
                        hostname: &a.reported_hostname,
                        status: a.status.as_str(),
                        cluster: &a.cluster,
                        page: &a.page,
                    })
                    .collect(),
                links: &site.links,
            })
        }),
        ("api/v1/topology.netjson", |site| to_bytes(&netjson(site))),
    ];
    let mut out = makers
        .par_iter()
        .map(|(path, make)| sink(SiteFile::new(*path, make(site)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    out.extend(
        site.agents
            .par_iter()
            .map(|a| sink(agent_detail(site, a)?))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    for (name, text) in SCHEMAS {
        out.push(sink(SiteFile::new(format!("api/v1/schema/{name}"), text.as_bytes().to_vec()))?);
    }
    Ok(out)
}
