//! Links as the receiver stored them (`topology_edges`): WireGuard links
//! between agents and to external peers, relay and physical links, each
//! with its health and whether both ends list each other. Sorted for
//! stable output, and indexed by pair of agents.

use std::collections::HashMap;

use kattila_fleet::Health;
use kattila_store::snapshot::{Edge, FleetSnapshot};

use crate::anon::Anon;
use crate::view::LinkView;

/// Every stored link, sorted by kind and ends.
pub fn links(snap: &FleetSnapshot, anon: &mut Anon) -> Vec<LinkView> {
    let mut links: Vec<LinkView> = snap.edges.iter().map(|e| view(e, anon)).collect();
    links.sort_by(|x, y| {
        (&x.kind, &x.a, &x.b, &x.external).cmp(&(&y.kind, &y.a, &y.b, &y.external))
    });
    links
}

fn view(e: &Edge, anon: &mut Anon) -> LinkView {
    LinkView {
        kind: anon.text(&e.kind),
        a: e.a_agent.clone(),
        b: e.b_agent.clone(),
        external: anon.text(&e.b_external),
        both_ends: e.both_ends,
        health: Health::parse(&e.health),
        handshake_age: e.handshake_age,
        detail: anon.opt_text(e.detail.as_deref()),
        handshake_at: e.handshake_age.map(|age| e.last_seen - age),
    }
}

/// Pair of agent indices (low, high) → index in `links` of the WireGuard
/// link between them.
pub fn pair_links(
    links: &[LinkView],
    index: &HashMap<String, usize>,
) -> HashMap<(usize, usize), usize> {
    links
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == "wireguard" && l.external.is_empty())
        .filter_map(|(n, l)| {
            let (i, j) = (*index.get(&l.a)?, *index.get(&l.b)?);
            (i != j).then_some(((i.min(j), i.max(j)), n))
        })
        .collect()
}
