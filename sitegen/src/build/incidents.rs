//! Incidents as the receiver grouped them: each with its cluster (the
//! cluster of its agents: the receiver's site and sitegen's cluster follow
//! one rule, `kattila_fleet::site_of`), its summary anonymised, active ones
//! first, then newest first as stored.

use kattila_store::snapshot::FleetSnapshot;

use crate::anon::Anon;
use crate::view::{AgentView, ClusterView, IncidentView};

pub fn incidents(
    snap: &FleetSnapshot,
    agents: &[AgentView],
    clusters: &[ClusterView],
    index: &std::collections::HashMap<String, usize>,
    anon: &mut Anon,
) -> Vec<IncidentView> {
    snap.incidents
        .iter()
        .map(|inc| {
            let members: Vec<usize> =
                inc.agents.iter().filter_map(|id| index.get(id).copied()).collect();
            let cluster =
                members.first().and_then(|&i| clusters.iter().find(|c| c.id == agents[i].cluster));
            IncidentView {
                id: inc.id,
                kind: anon.text(&inc.kind),
                severity: anon.text(&inc.severity),
                cluster: cluster.map(|c| c.id.clone()),
                cluster_label: cluster.map(|c| c.label.clone()),
                cluster_page: cluster.map(|c| c.page.clone()),
                summary: anon.text(&inc.summary),
                agent_ids: inc.agents.clone(),
                agents: members,
                state: inc.state.clone(),
                first_seen: inc.first_seen,
                last_seen: inc.last_seen,
                resolved_at: inc.resolved_at,
            }
        })
        .collect()
}
