//! The JSON files under `api/v1/` for other tools, each with a JSON Schema
//! published beside it in `api/v1/schema/`. Field names are stable; a
//! change that breaks readers bumps `schema_version`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::render::{iso_time, SiteFile};
use crate::view::{AgentView, AlarmView, ClusterView, LinkView, Site, Summary};

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
/// peers as nodes, every link as a link.
pub fn netjson(site: &Site) -> Value {
    let mut nodes: Vec<Value> = site
        .agents
        .iter()
        .map(|a| {
            json!({
                "id": a.agent_id,
                "label": a.hostname,
                "properties": { "status": a.status, "cluster": a.cluster, "page": a.page },
            })
        })
        .collect();
    let mut externals: Vec<&str> =
        site.links.iter().filter(|l| !l.external.is_empty()).map(|l| l.external.as_str()).collect();
    externals.sort_unstable();
    externals.dedup();
    nodes.extend(externals.iter().map(|k| {
        json!({ "id": format!("wg:{k}"), "label": "external peer", "properties": { "external": true } })
    }));
    let links: Vec<Value> = site
        .links
        .iter()
        .map(|l| {
            let target =
                if l.external.is_empty() { l.b.clone() } else { format!("wg:{}", l.external) };
            let cost = match l.health.as_str() {
                "healthy" => 1.0,
                "stale" => 10.0,
                _ => 100.0,
            };
            json!({
                "source": l.a,
                "target": target,
                "cost": cost,
                "properties": {
                    "kind": l.kind,
                    "health": l.health,
                    "both_ends": l.both_ends,
                    "handshake_age": l.handshake_age,
                },
            })
        })
        .collect();
    json!({
        "type": "NetworkGraph",
        "protocol": "wireguard",
        "version": "1",
        "metric": "health",
        "label": "Kattila fleet",
        "router_id": "kattila",
        "nodes": nodes,
        "links": links,
    })
}

/// Every file under `api/v1/`.
pub fn files(site: &Site) -> anyhow::Result<Vec<SiteFile>> {
    let mut out = vec![
        (
            "api/v1/summary.json".to_string(),
            to_bytes(&SummaryFile {
                header: header(site, "schema/summary.schema.json"),
                summary: &site.summary,
                clusters: site.clusters.iter().map(ClusterOut::from).collect(),
            })?,
        ),
        (
            "api/v1/agents.json".to_string(),
            to_bytes(&AgentsFile {
                header: header(site, "schema/agents.schema.json"),
                agents: &site.agents,
            })?,
        ),
        (
            "api/v1/alarms.json".to_string(),
            to_bytes(&AlarmsFile {
                header: header(site, "schema/alarms.schema.json"),
                alarms: &site.alarms,
            })?,
        ),
        (
            "api/v1/topology.json".to_string(),
            to_bytes(&TopologyFile {
                header: header(site, "schema/topology.schema.json"),
                nodes: site
                    .agents
                    .iter()
                    .map(|a| NodeOut {
                        id: &a.agent_id,
                        hostname: &a.hostname,
                        status: &a.status,
                        cluster: &a.cluster,
                        page: &a.page,
                    })
                    .collect(),
                links: &site.links,
            })?,
        ),
        ("api/v1/topology.netjson".to_string(), to_bytes(&netjson(site))?),
    ];
    out.extend(
        SCHEMAS
            .iter()
            .map(|(name, text)| (format!("api/v1/schema/{name}"), text.as_bytes().to_vec())),
    );
    Ok(out)
}
