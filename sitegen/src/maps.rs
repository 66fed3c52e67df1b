//! Topology maps, as positioned drawing data for the SVG template.
//! Layouts come from [`crate::layout`] (cached by structure); everything
//! drawn here — classes, labels, titles, links — is ours. Titles that name
//! hosts are [`Pieces`], so each agent-supplied name is shown on its own
//! (see [`crate::shown`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use kattila_fleet::Health;
use serde::Serialize;

use crate::format::{age_text, cluster_mark, cut, status_mark};
use crate::layout::{Graph, LayoutCache};
use crate::shown::Pieces;
use crate::view::Site;

/// Neighbouring clusters drawn one by one on a cluster map; beyond this
/// they are drawn as one "other clusters" node.
const MAX_NEIGHBOUR_CLUSTERS: usize = 8;
/// External peers drawn one by one on a cluster map.
const MAX_EXTERNALS: usize = 24;

#[derive(Debug, Clone, Serialize)]
pub struct SvgGraph {
    pub title: Pieces,
    pub width: f64,
    pub height: f64,
    pub engine: String,
    pub nodes: Vec<SvgNode>,
    pub edges: Vec<SvgEdge>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SvgNode {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub sublabel: String,
    pub title: Pieces,
    /// Relative link, or None.
    pub href: Option<String>,
    /// CSS classes: shape ('agent' | 'cluster' | 'external' | 'outside')
    /// and state.
    pub class: String,
    /// A text mark for the state, so colour is never the only signal.
    pub mark: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SvgEdge {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub class: String,
    pub title: Pieces,
}

// For page keys (`render::PageKeys`): floats by their bits. Destructured,
// so that a new field cannot be forgotten.

impl Hash for SvgGraph {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let SvgGraph { title, width, height, engine, nodes, edges } = self;
        (title, width.to_bits(), height.to_bits(), engine, nodes, edges).hash(h);
    }
}

impl Hash for SvgNode {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let SvgNode { x, y, label, sublabel, title, href, class, mark } = self;
        (x.to_bits(), y.to_bits(), label, sublabel, title, href, class, mark).hash(h);
    }
}

impl Hash for SvgEdge {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let SvgEdge { x1, y1, x2, y2, class, title } = self;
        (x1.to_bits(), y1.to_bits(), x2.to_bits(), y2.to_bits(), class, title).hash(h);
    }
}

/// Prefix for links from a page `depth` directories below the root.
fn up(depth: usize) -> String {
    "../".repeat(depth)
}

/// The overview map: one node per cluster, edges aggregated between them.
pub fn overview(site: &Site, cache: &LayoutCache, depth: usize) -> Option<SvgGraph> {
    if site.clusters.is_empty() {
        return None;
    }
    let cluster_of: HashMap<&str, usize> = site
        .clusters
        .iter()
        .enumerate()
        .flat_map(|(c, cl)| cl.agents.iter().map(move |&i| (site.agents[i].agent_id.as_str(), c)))
        .collect();
    // Per pair of clusters: links, the worst health, links not healthy.
    let mut between: BTreeMap<(usize, usize), (usize, Health, usize)> = BTreeMap::new();
    for l in &site.links {
        let (Some(&a), Some(&b)) = (cluster_of.get(l.a.as_str()), cluster_of.get(l.b.as_str()))
        else {
            continue;
        };
        if a == b {
            continue;
        }
        let e = between.entry((a.min(b), a.max(b))).or_insert((0, Health::Healthy, 0));
        e.0 += 1;
        e.1 = e.1.worse(l.health);
        if !l.health.is_healthy() {
            e.2 += 1;
        }
    }
    let graph = Graph {
        nodes: site.clusters.iter().map(|c| c.label.clone()).collect(),
        edges: between.keys().copied().collect(),
    };
    let layout = cache.get(&graph);
    let root = up(depth);
    let nodes = site
        .clusters
        .iter()
        .enumerate()
        .map(|(c, cl)| SvgNode {
            x: layout.pos[c].0,
            y: layout.pos[c].1,
            label: cut(&cl.label),
            sublabel: format!(
                "{} agent{}{}",
                cl.agents.len(),
                if cl.agents.len() == 1 { "" } else { "s" },
                if cl.silent > 0 { format!(", {} silent", cl.silent) } else { String::new() }
            ),
            title: Pieces::new().and(cl.label.as_str()).and(format!(
                ": {} agents ({} up, {} silent, {} relay only), {} active alarms",
                cl.agents.len(),
                cl.up,
                cl.silent,
                cl.relay,
                cl.alarms_active
            )),
            href: Some(format!("{root}{}", cl.page)),
            class: format!("cluster {}", cl.health),
            mark: cluster_mark(&cl.health).into(),
        })
        .collect();
    let edges = between
        .iter()
        .map(|(&(a, b), (count, health, bad))| SvgEdge {
            x1: layout.pos[a].0,
            y1: layout.pos[a].1,
            x2: layout.pos[b].0,
            y2: layout.pos[b].1,
            class: format!("wireguard {}", health.as_str()),
            title: Pieces::new()
                .and(site.clusters[a].label.as_str())
                .and(" — ")
                .and(site.clusters[b].label.as_str())
                .and(format!(
                    ": {count} link{}{}",
                    if *count == 1 { "" } else { "s" },
                    if *bad > 0 { format!(", {bad} not healthy") } else { String::new() }
                )),
        })
        .collect();
    Some(SvgGraph {
        title: format!("Fleet map: {} clusters", site.clusters.len()).into(),
        width: layout.width,
        height: layout.height,
        engine: layout.engine,
        nodes,
        edges,
    })
}

/// Which cluster each agent is in and which links touch each cluster,
/// computed once per build.
pub struct MapIndex<'a> {
    cluster_of: HashMap<&'a str, usize>,
    links_of: Vec<Vec<usize>>,
}

impl<'a> MapIndex<'a> {
    pub fn new(site: &'a Site) -> MapIndex<'a> {
        let cluster_of: HashMap<&str, usize> = site
            .clusters
            .iter()
            .enumerate()
            .flat_map(|(k, cl)| {
                cl.agents.iter().map(move |&i| (site.agents[i].agent_id.as_str(), k))
            })
            .collect();
        let mut links_of = vec![Vec::new(); site.clusters.len()];
        for (li, l) in site.links.iter().enumerate() {
            let a = cluster_of.get(l.a.as_str()).copied();
            let b = cluster_of.get(l.b.as_str()).copied();
            if let Some(a) = a {
                links_of[a].push(li);
            }
            if let Some(b) = b.filter(|&b| Some(b) != a) {
                links_of[b].push(li);
            }
        }
        MapIndex { cluster_of, links_of }
    }
}

/// The map of one cluster: its agents, their links, neighbouring clusters
/// and external peers.
pub fn cluster(
    site: &Site,
    index: &MapIndex<'_>,
    c: usize,
    cache: &LayoutCache,
    depth: usize,
) -> Option<SvgGraph> {
    let cl = &site.clusters[c];
    let root = up(depth);
    let mut ids: Vec<String> = Vec::new();
    let mut nodes: Vec<SvgNode> = Vec::new();
    let mut local: HashMap<&str, usize> = HashMap::new();
    for &i in &cl.agents {
        let a = &site.agents[i];
        local.insert(a.agent_id.as_str(), nodes.len());
        ids.push(format!("a:{}", a.agent_id));
        nodes.push(SvgNode {
            x: 0.0,
            y: 0.0,
            label: cut(&a.hostname),
            sublabel: a.status.as_str().into(),
            title: Pieces::new().and(a.hostname.as_str()).and(" (").and(a.agent_id.as_str()).and(
                format!(
                    "): {}, {} of {} peers healthy, {} active alarms",
                    a.status.as_str(),
                    a.peers_healthy,
                    a.peers_total,
                    a.alarms_active
                ),
            ),
            href: Some(format!("{root}{}", a.page)),
            class: format!("agent {}", a.status.as_str()),
            mark: status_mark(a.status).into(),
        });
    }
    let cluster_index = &index.cluster_of;
    // Links touching this cluster.
    struct Pending {
        from: usize,
        to: Target,
        class: String,
        title: Pieces,
    }
    enum Target {
        Local(usize),
        Cluster(usize),
        External(String),
    }
    let mut pending = Vec::new();
    let name =
        |id: &str| site.agent(id).map(|a| a.hostname.clone()).unwrap_or_else(|| id.to_string());
    for l in index.links_of[c].iter().map(|&li| &site.links[li]) {
        let (a_in, b_in) = (local.get(l.a.as_str()).copied(), local.get(l.b.as_str()).copied());
        let one_sided = l.kind == "wireguard" && l.external.is_empty() && !l.both_ends;
        let health = l.health.as_str();
        let class = format!("{} {health}{}", l.kind, if one_sided { " one-sided" } else { "" });
        let age =
            l.handshake_age.map(|a| format!(", handshake {}", age_text(a))).unwrap_or_default();
        let sides = if l.kind != "wireguard" || !l.external.is_empty() {
            ""
        } else if l.both_ends {
            ", both ends"
        } else {
            ", listed by one end only"
        };
        match (a_in, b_in) {
            (Some(x), Some(y)) => pending.push(Pending {
                from: x,
                to: Target::Local(y),
                class,
                title: Pieces::new()
                    .and(l.kind.as_str())
                    .and(" ")
                    .and(name(&l.a))
                    .and(" — ")
                    .and(name(&l.b))
                    .and(": ")
                    .and(health)
                    .and(format!("{sides}{age}")),
            }),
            (Some(x), None) if l.b.is_empty() && !l.external.is_empty() => pending.push(Pending {
                from: x,
                to: Target::External(l.external.clone()),
                class: format!("{class} external"),
                title: Pieces::new()
                    .and(name(&l.a))
                    .and(" → external peer ")
                    .and(l.external.as_str())
                    .and(": ")
                    .and(health)
                    .and(age),
            }),
            (Some(x), None) | (None, Some(x)) => {
                let other = if a_in.is_some() { &l.b } else { &l.a };
                if let Some(&k) = cluster_index.get(other.as_str()) {
                    pending.push(Pending {
                        from: x,
                        to: Target::Cluster(k),
                        class,
                        title: Pieces::new()
                            .and(l.kind.as_str())
                            .and(" ")
                            .and(name(&l.a))
                            .and(" — ")
                            .and(name(&l.b))
                            .and(" (in ")
                            .and(site.clusters[k].label.as_str())
                            .and("): ")
                            .and(health)
                            .and(format!("{sides}{age}")),
                    });
                }
            }
            (None, None) => {}
        }
    }
    let mut neighbours: Vec<usize> = pending
        .iter()
        .filter_map(|p| if let Target::Cluster(k) = p.to { Some(k) } else { None })
        .collect();
    neighbours.sort_unstable();
    neighbours.dedup();
    let aggregate = neighbours.len() > MAX_NEIGHBOUR_CLUSTERS;
    let mut cluster_node: HashMap<usize, usize> = HashMap::new();
    let mut other_node = None;
    for &k in &neighbours {
        if aggregate {
            if other_node.is_none() {
                other_node = Some(nodes.len());
                ids.push("other-clusters".into());
                nodes.push(SvgNode {
                    x: 0.0,
                    y: 0.0,
                    label: format!("{} other clusters", neighbours.len()),
                    sublabel: String::new(),
                    title: format!(
                        "Links to {} other clusters: see the fleet map",
                        neighbours.len()
                    )
                    .into(),
                    href: Some(format!("{root}map.html")),
                    class: "outside".into(),
                    mark: "◇".into(),
                });
            }
            cluster_node.insert(k, other_node.unwrap());
        } else {
            cluster_node.insert(k, nodes.len());
            ids.push(format!("c:{}", site.clusters[k].id));
            nodes.push(SvgNode {
                x: 0.0,
                y: 0.0,
                label: cut(&site.clusters[k].label),
                sublabel: format!("{} agents", site.clusters[k].agents.len()),
                title: Pieces::new().and("Cluster ").and(site.clusters[k].label.as_str()),
                href: Some(format!("{root}{}", site.clusters[k].page)),
                class: "outside".into(),
                mark: "◇".into(),
            });
        }
    }
    let mut external_node: HashMap<String, usize> = HashMap::new();
    let mut externals_dropped = 0;
    for p in &pending {
        if let Target::External(key) = &p.to {
            if external_node.contains_key(key) {
                continue;
            }
            if external_node.len() >= MAX_EXTERNALS {
                externals_dropped += 1;
                continue;
            }
            external_node.insert(key.clone(), nodes.len());
            ids.push(format!("x:{key}"));
            nodes.push(SvgNode {
                x: 0.0,
                y: 0.0,
                label: cut(key),
                sublabel: "external".into(),
                title: Pieces::new().and("External WireGuard peer ").and(key.as_str()),
                href: None,
                class: "external".into(),
                mark: "◆".into(),
            });
        }
    }
    let mut edges_idx = Vec::new();
    let mut edges = Vec::new();
    for p in pending {
        let to = match p.to {
            Target::Local(y) => Some(y),
            Target::Cluster(k) => cluster_node.get(&k).copied(),
            Target::External(key) => external_node.get(&key).copied(),
        };
        let Some(to) = to else { continue };
        edges_idx.push((p.from, to));
        edges.push((p.from, to, p.class, p.title));
    }
    if nodes.is_empty() {
        return None;
    }
    let layout = cache.get(&Graph { nodes: ids, edges: edges_idx });
    for (n, &(x, y)) in nodes.iter_mut().zip(&layout.pos) {
        n.x = x;
        n.y = y;
    }
    let edges = edges
        .into_iter()
        .map(|(a, b, class, title)| SvgEdge {
            x1: nodes[a].x,
            y1: nodes[a].y,
            x2: nodes[b].x,
            y2: nodes[b].y,
            class,
            title,
        })
        .collect();
    let mut title = Pieces::new()
        .and("Map of ")
        .and(cl.label.as_str())
        .and(format!(": {} agents", cl.agents.len()));
    if externals_dropped > 0 {
        title = title.and(format!(" ({externals_dropped} more external peers not drawn)"));
    }
    Some(SvgGraph {
        title,
        width: layout.width,
        height: layout.height,
        engine: layout.engine,
        nodes,
        edges,
    })
}
