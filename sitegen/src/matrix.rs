//! The matrices: agent × agent (which end of each WireGuard link lists
//! the other, and its newest handshake) and cluster × cluster (how many
//! WireGuard links join their agents). Both read the receiver's links.

use serde::Serialize;

use crate::format::{band_class, handshake_band, human_time};
use crate::shown::Pieces;
use crate::view::{AgentView, Site};

/// Clusters beyond this make a cluster × cluster matrix too wide to read;
/// the cluster list links each cluster's own matrix instead.
const CLUSTER_MATRIX_MAX: usize = 60;

/// One cell of the agent matrix.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct Cell {
    /// 'both' | 'row' (only the row agent lists the column agent) | 'col' |
    /// 'none' | 'self'.
    pub state: String,
    pub text: String,
    pub band: String,
    pub class: String,
    pub title: Pieces,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct MatrixRow {
    pub hostname: String,
    pub page: String,
    pub status: String,
    pub cells: Vec<Cell>,
}

/// agents × agents for the given agent indices.
pub fn matrix(site: &Site, members: &[usize], now: i64) -> Vec<MatrixRow> {
    members
        .iter()
        .map(|&r| {
            let ra = &site.agents[r];
            MatrixRow {
                hostname: ra.hostname.clone(),
                page: ra.page.clone(),
                status: ra.status.as_str().into(),
                cells: members.iter().map(|&c| cell(site, r, c, now)).collect(),
            }
        })
        .collect()
}

fn blank(state: &str) -> Cell {
    Cell {
        state: state.into(),
        text: if state == "self" { "—".into() } else { String::new() },
        band: String::new(),
        class: state.into(),
        title: Pieces::new(),
    }
}

fn cell(site: &Site, r: usize, c: usize, now: i64) -> Cell {
    if r == c {
        return blank("self");
    }
    let Some(link) = site.pair_link(r, c) else { return blank("none") };
    let (ra, ca) = (&site.agents[r], &site.agents[c]);
    // A link listed by one end only is listed by the row's agent or, if
    // not, by the column's.
    let (state, arrow, sides) = if link.both_ends {
        ("both", "⇄", "both ends list each other")
    } else if lists(ra, &ca.agent_id) {
        ("row", "→", "only the row's agent lists the other")
    } else {
        ("col", "←", "only the column's agent lists the other")
    };
    let band = handshake_band(link.handshake_at.map(|t| (now - t).max(0)));
    Cell {
        state: state.into(),
        text: format!("{arrow} {band}"),
        band: band.into(),
        class: format!("{state} band-{}", band_class(band)),
        title: Pieces::new().and(ra.hostname.as_str()).and(" — ").and(ca.hostname.as_str()).and(
            format!(
                ": {sides}; newest handshake {}",
                link.handshake_at.map(human_time).unwrap_or_else(|| "never".into())
            ),
        ),
    }
}

/// `agent` has a peer that is a device of the agent `other`.
fn lists(agent: &AgentView, other: &str) -> bool {
    agent.wireguard.iter().flat_map(|d| &d.peers).any(|p| p.peer_agent_id.as_deref() == Some(other))
}

#[derive(Serialize)]
pub struct ClusterRow {
    label: String,
    page: String,
    cells: Vec<String>,
    titles: Vec<Pieces>,
}

/// cluster × cluster: number of WireGuard links between members.
pub fn cluster_matrix(site: &Site) -> Vec<ClusterRow> {
    let n = site.clusters.len();
    if n > CLUSTER_MATRIX_MAX {
        return Vec::new();
    }
    let mut of = vec![0usize; site.agents.len()];
    for (c, cl) in site.clusters.iter().enumerate() {
        for &i in &cl.agents {
            of[i] = c;
        }
    }
    let mut counts = vec![vec![0usize; n]; n];
    for &(lo, hi) in site.pair_links.keys() {
        let (a, b) = (of[lo], of[hi]);
        counts[a][b] += 1;
        if a != b {
            counts[b][a] += 1;
        }
    }
    (0..n)
        .map(|r| ClusterRow {
            label: site.clusters[r].label.clone(),
            page: site.clusters[r].page.clone(),
            cells: (0..n)
                .map(|c| if counts[r][c] == 0 { String::new() } else { counts[r][c].to_string() })
                .collect(),
            titles: (0..n)
                .map(|c| {
                    Pieces::new()
                        .and(site.clusters[r].label.as_str())
                        .and(" — ")
                        .and(site.clusters[c].label.as_str())
                        .and(format!(": {} WireGuard links", counts[r][c]))
                })
                .collect(),
        })
        .collect()
}
