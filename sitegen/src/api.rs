//! The JSON files under `api/v1/` for other tools, each with a JSON Schema
//! published beside it in `api/v1/schema/`. Field names are stable; a
//! change that breaks readers bumps `schema_version`.

use std::borrow::Cow;

use kattila_fleet::Health;
use rayon::prelude::*;
use serde::Serialize;

use crate::files::SiteFile;
use crate::format::iso_time;
use crate::view::{AgentView, AlarmView, ClusterView, IncidentView, LinkView, Site, Summary};

/// The published schemas: (file name under api/v1/schema/, text).
pub const SCHEMAS: &[(&str, &str)] = &[
    ("summary.schema.json", include_str!("../../templates/api/schema/summary.schema.json")),
    ("agents.schema.json", include_str!("../../templates/api/schema/agents.schema.json")),
    ("alarms.schema.json", include_str!("../../templates/api/schema/alarms.schema.json")),
    ("topology.schema.json", include_str!("../../templates/api/schema/topology.schema.json")),
    ("netjson.schema.json", include_str!("../../templates/api/schema/netjson.schema.json")),
];

/// Which schema describes which file.
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
    agents: &'a [AgentView],
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
                agents: &site.agents,
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
    for (name, text) in SCHEMAS {
        out.push(sink(SiteFile::new(format!("api/v1/schema/{name}"), text.as_bytes().to_vec()))?);
    }
    Ok(out)
}
