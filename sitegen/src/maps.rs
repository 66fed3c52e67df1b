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
use crate::view::{ClusterView, Site};

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
    /// Control point of the curve when the straight line would pass
    /// another node's box.
    pub bend: Option<(f64, f64)>,
    /// Shown beside the line (the number of links a cluster pair has).
    pub label: String,
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
        let SvgEdge { x1, y1, x2, y2, bend, label, class, title } = self;
        let bend = bend.map(|(x, y)| (x.to_bits(), y.to_bits()));
        (x1.to_bits(), y1.to_bits(), x2.to_bits(), y2.to_bits(), bend, label, class, title).hash(h);
    }
}

/// Prefix for links from a page `depth` directories below the root.
fn up(depth: usize) -> String {
    "../".repeat(depth)
}

/// Up to this many clusters the fleet map draws every one of them.
const FLEET_MAP_ALL: usize = 40;
/// A larger fleet's map draws at most this many clusters: those with
/// problems and their neighbours; the rest is one node.
const FLEET_MAP_MAX: usize = 36;

/// Per pair of nodes: links, the worst health, links not healthy.
type Between = BTreeMap<(usize, usize), (usize, Health, usize)>;

fn add_link(between: &mut Between, a: usize, b: usize, health: Health) {
    let e = between.entry((a.min(b), a.max(b))).or_insert((0, Health::Healthy, 0));
    e.0 += 1;
    e.1 = e.1.worse(health);
    if !health.is_healthy() {
        e.2 += 1;
    }
}

/// The overview map: one node per cluster, one line per pair of clusters
/// with links (labelled with their count, coloured by the worst). A fleet
/// of more than [`FLEET_MAP_ALL`] clusters shows where the problems are:
/// clusters with problems first, then their neighbours, and the quiet
/// rest as one node.
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
    let mut between = Between::new();
    for l in &site.links {
        let (Some(&a), Some(&b)) = (cluster_of.get(l.a.as_str()), cluster_of.get(l.b.as_str()))
        else {
            continue;
        };
        if a != b {
            add_link(&mut between, a, b, l.health);
        }
    }
    let shown = shown_clusters(site, &between);
    // Node of each cluster: its own, or the one node of the rest.
    let rest_node = shown.len();
    let mut node_of = vec![rest_node; site.clusters.len()];
    for (n, &c) in shown.iter().enumerate() {
        node_of[c] = n;
    }
    let hidden = site.clusters.len() - shown.len();
    let mut edges = Between::new();
    for (&(a, b), &(count, health, bad)) in &between {
        let (x, y) = (node_of[a], node_of[b]);
        // The quiet rest stays quiet: only links with problems join it.
        if x == y || ((x == rest_node || y == rest_node) && bad == 0) {
            continue;
        }
        let e = edges.entry((x.min(y), x.max(y))).or_insert((0, Health::Healthy, 0));
        e.0 += count;
        e.1 = e.1.worse(health);
        e.2 += bad;
    }
    let mut ids: Vec<String> = shown.iter().map(|&c| site.clusters[c].label.clone()).collect();
    if hidden > 0 {
        ids.push("rest".into());
    }
    let graph = Graph { nodes: ids, edges: edges.keys().copied().collect() };
    let layout = cache.get(&graph);
    let root = up(depth);
    let mut nodes: Vec<SvgNode> = shown
        .iter()
        .enumerate()
        .map(|(n, &c)| {
            let cl = &site.clusters[c];
            SvgNode {
                x: layout.pos[n].0,
                y: layout.pos[n].1,
                label: cut(&cl.label),
                sublabel: cluster_sublabel(cl),
                title: Pieces::new().and(cl.label.as_str()).and(format!(
                    ": {} ({} up, {} silent, {} relay only), {} not healthy, {}",
                    count(cl.agents.len(), "agent"),
                    cl.up,
                    cl.silent,
                    cl.relay,
                    count(cl.links_not_healthy, "link"),
                    count(cl.alarms_active, "active alarm"),
                )),
                href: Some(format!("{root}{}", cl.page)),
                class: format!("cluster {}", cl.health),
                mark: cluster_mark(&cl.health).into(),
            }
        })
        .collect();
    if hidden > 0 {
        let rest: Vec<&ClusterView> = site
            .clusters
            .iter()
            .enumerate()
            .filter(|&(c, _)| node_of[c] == rest_node)
            .map(|(_, cl)| cl)
            .collect();
        let troubled = rest.iter().filter(|cl| cl.health != "ok").count();
        let agents: usize = rest.iter().map(|cl| cl.agents.len()).sum();
        nodes.push(SvgNode {
            x: layout.pos[rest_node].0,
            y: layout.pos[rest_node].1,
            label: format!("{hidden} more clusters"),
            sublabel: if troubled == 0 {
                format!("{agents} agents, all well")
            } else {
                format!("{troubled} with problems")
            },
            title: format!(
                "{hidden} clusters not drawn one by one ({agents} agents, {troubled} with problems): see the list below"
            )
            .into(),
            href: Some(format!("{root}map.html#clusters")),
            class: format!("cluster rest {}", if troubled == 0 { "ok" } else { "warning" }),
            mark: if troubled == 0 { "●" } else { "!" }.into(),
        });
    }
    let name = |n: usize| {
        if n == rest_node {
            format!("{hidden} more clusters")
        } else {
            site.clusters[shown[n]].label.clone()
        }
    };
    let mut edges: Vec<SvgEdge> = edges
        .iter()
        .map(|(&(a, b), &(count, health, bad))| SvgEdge {
            x1: layout.pos[a].0,
            y1: layout.pos[a].1,
            x2: layout.pos[b].0,
            y2: layout.pos[b].1,
            bend: layout.bend(a, b),
            label: if count > 1 { count.to_string() } else { String::new() },
            class: format!("wireguard {}", health.as_str()),
            title: Pieces::new().and(name(a)).and(" — ").and(name(b)).and(format!(
                ": {count} link{}, {}{}",
                if count == 1 { "" } else { "s" },
                if bad == 0 { "all healthy".to_string() } else { format!("{bad} not healthy") },
                if bad == 0 { String::new() } else { format!(", worst {}", health.as_str()) }
            )),
        })
        .collect();
    draw_problems_last(&mut edges);
    let title = if hidden > 0 {
        format!(
            "Fleet map: {} clusters, {} drawn (those with problems and their neighbours)",
            site.clusters.len(),
            shown.len()
        )
    } else {
        format!("Fleet map: {} clusters", site.clusters.len())
    };
    Some(SvgGraph {
        title: title.into(),
        width: layout.width,
        height: layout.height,
        engine: layout.engine,
        nodes,
        edges,
    })
}

/// "1 link", "3 links".
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What fits under a cluster's name in its box: the worst first.
fn cluster_sublabel(cl: &ClusterView) -> String {
    if cl.silent > 0 {
        format!("{} of {} silent", cl.silent, cl.agents.len())
    } else if cl.relay > 0 {
        format!("{} of {} relay only", cl.relay, cl.agents.len())
    } else if cl.links_not_healthy > 0 {
        format!("{}, {} bad", count(cl.agents.len(), "agent"), count(cl.links_not_healthy, "link"))
    } else {
        count(cl.agents.len(), "agent")
    }
}

/// The clusters the fleet map draws one by one, in cluster order: all of
/// a small fleet's; of a large one those with problems (most severe
/// first) and then their neighbours, up to [`FLEET_MAP_MAX`].
fn shown_clusters(site: &Site, between: &Between) -> Vec<usize> {
    let n = site.clusters.len();
    if n <= FLEET_MAP_ALL {
        return (0..n).collect();
    }
    let urgency = |c: usize| match site.clusters[c].health.as_str() {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    let mut problems: Vec<usize> = (0..n).filter(|&c| urgency(c) < 2).collect();
    problems.sort_by_key(|&c| (urgency(c), std::cmp::Reverse(site.clusters[c].agents.len())));
    let cap = FLEET_MAP_MAX - 1;
    let mut chosen: Vec<usize> = problems.iter().copied().take(cap).collect();
    let mut taken = vec![false; n];
    chosen.iter().for_each(|&c| taken[c] = true);
    // Neighbours of the problems, those with most links to them first.
    let mut neighbours: BTreeMap<usize, usize> = BTreeMap::new();
    for (&(a, b), &(count, _, _)) in between {
        if taken[a] != taken[b] {
            *neighbours.entry(if taken[a] { b } else { a }).or_default() += count;
        }
    }
    let mut neighbours: Vec<(usize, usize)> = neighbours.into_iter().collect();
    neighbours.sort_by_key(|&(c, links)| (std::cmp::Reverse(links), c));
    for (c, _) in neighbours {
        if chosen.len() >= cap {
            break;
        }
        chosen.push(c);
    }
    chosen.sort_unstable();
    chosen
}

/// One of the links merged into a line: its class, health and title.
type Merged = (String, Health, Pieces);

/// Healthy lines first, so that lines with problems are drawn over them.
fn draw_problems_last(edges: &mut [SvgEdge]) {
    let rank = |e: &SvgEdge| !(e.class.contains("healthy") || e.class.starts_with("physical"));
    edges.sort_by_key(rank);
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
                    "): {}, {} of {} peers healthy, {}",
                    a.status.as_str(),
                    a.peers_healthy,
                    a.peers_total,
                    count(a.alarms_active, "active alarm")
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
        health: Health,
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
                health: l.health,
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
                health: l.health,
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
                        health: l.health,
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
    // One line per pair of nodes: the links between them merged, the
    // worst health shown, every link named in the title.
    let mut pairs: BTreeMap<(usize, usize), Vec<Merged>> = BTreeMap::new();
    for p in pending {
        let to = match p.to {
            Target::Local(y) => Some(y),
            Target::Cluster(k) => cluster_node.get(&k).copied(),
            Target::External(key) => external_node.get(&key).copied(),
        };
        let Some(to) = to.filter(|&to| to != p.from) else { continue };
        pairs
            .entry((p.from.min(to), p.from.max(to)))
            .or_default()
            .push((p.class, p.health, p.title));
    }
    if nodes.is_empty() {
        return None;
    }
    let layout = cache.get(&Graph { nodes: ids, edges: pairs.keys().copied().collect() });
    for (n, &(x, y)) in nodes.iter_mut().zip(&layout.pos) {
        n.x = x;
        n.y = y;
    }
    let mut edges: Vec<SvgEdge> = pairs
        .into_iter()
        .map(|((a, b), links)| {
            // The class of the link that matters most: the worst health,
            // WireGuard over relay over physical.
            let weight = |class: &str| {
                if class.starts_with("wireguard") {
                    0
                } else if class.starts_with("relay") {
                    1
                } else {
                    2
                }
            };
            let (class, _, _) = links
                .iter()
                .min_by_key(|(class, health, _)| (*health, weight(class)))
                .expect("a pair has a link");
            let mut title = Pieces::new();
            for (k, (_, _, t)) in links.iter().enumerate() {
                if k > 0 {
                    title = title.and("; ");
                }
                title = title.join(t.clone());
            }
            SvgEdge {
                x1: nodes[a].x,
                y1: nodes[a].y,
                x2: nodes[b].x,
                y2: nodes[b].y,
                bend: layout.bend(a, b),
                label: if links.len() > 1 { links.len().to_string() } else { String::new() },
                class: class.clone(),
                title,
            }
        })
        .collect();
    draw_problems_last(&mut edges);
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
