//! Clusters: agents grouped by the site label they report, else by the
//! network of their first LAN address (else their first global IPv6
//! network, else their WireGuard network),
//! each with its agents' statuses counted and a health word for its map
//! node. Sets each agent's `cluster`.

use std::collections::{BTreeMap, HashMap, HashSet};

use kattila_fleet::{site_network, AgentStatus, Severity};
use kattila_store::snapshot::{Agent, FleetSnapshot};

use crate::anon::Anon;
use crate::format::file_safe;
use crate::view::{AgentView, ClusterView, LinkView};

/// Clusters sorted by their (anonymised) network; `agents` are the views
/// of `snap.agents`, in the same order.
pub fn clusters(
    snap: &FleetSnapshot,
    agents: &mut [AgentView],
    links: &[LinkView],
    index: &HashMap<String, usize>,
    anon: &mut Anon,
) -> Vec<ClusterView> {
    // Per agent: the WireGuard and relay links touching it that are not
    // healthy (a cluster with broken links is not "ok").
    let mut not_healthy = vec![0usize; agents.len()];
    for l in links.iter().filter(|l| l.kind != "physical" && !l.health.is_healthy()) {
        for end in [&l.a, &l.b] {
            if let Some(&i) = index.get(end.as_str()) {
                not_healthy[i] += 1;
            }
        }
    }
    let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, a) in snap.agents.iter().enumerate() {
        // The operator's site label names the cluster when there is one.
        let label = match (&a.site, cluster_key(a)) {
            (Some(site), _) => anon.text(site),
            (None, Some(k)) => anon.network(&k),
            (None, None) => "unaddressed".to_string(),
        };
        by_label.entry(label).or_default().push(i);
    }
    let mut used_ids = HashSet::new();
    by_label
        .into_iter()
        .map(|(label, members)| {
            // Labels that differ only in punctuation make the same id.
            let mut id = format!("net-{}", file_safe(&label));
            if !used_ids.insert(id.clone()) {
                id = format!("{id}-{}", used_ids.len());
                used_ids.insert(id.clone());
            }
            for &i in &members {
                agents[i].cluster = id.clone();
            }
            let links_not_healthy = members.iter().map(|&i| not_healthy[i]).sum();
            cluster(id, label, members, agents, links_not_healthy)
        })
        .collect()
}

fn cluster(
    id: String,
    label: String,
    members: Vec<usize>,
    agents: &[AgentView],
    links_not_healthy: usize,
) -> ClusterView {
    let count = |s: AgentStatus| members.iter().filter(|&&i| agents[i].status == s).count();
    let (up, silent, relay) =
        (count(AgentStatus::Up), count(AgentStatus::Silent), count(AgentStatus::Relay));
    let alarms_active: usize = members.iter().map(|&i| agents[i].alarms_active).sum();
    // A silent agent is as urgent as its alarm; an agent reached only
    // through relays, a link not healthy or any active alarm asks for a
    // look.
    let health = if silent > 0 {
        Severity::Critical.as_str()
    } else if relay > 0 || alarms_active > 0 || links_not_healthy > 0 {
        Severity::Warning.as_str()
    } else {
        "ok"
    };
    ClusterView {
        page: format!("map/{id}.html"),
        id,
        label,
        agents: members,
        up,
        silent,
        relay,
        alarms_active,
        links_not_healthy,
        health: health.into(),
    }
}

/// The network an agent without a site label is clustered by: the
/// receiver groups incidents by the same rule (`kattila_fleet::site_of`).
fn cluster_key(agent: &Agent) -> Option<String> {
    site_network(agent.interfaces.iter().map(|i| (i.kind.as_str(), i.addresses.as_slice())))
}
