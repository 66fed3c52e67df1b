//! The matrices, in natural order with legends that name exactly the
//! symbols shown: agent × agent (each WireGuard link's health as the
//! receiver stored it, which end lists the other, the age of its newest
//! handshake; silent and relay-only agents marked) and cluster × cluster
//! (the worst health of the links between two clusters' agents, with
//! counts, each cell leading to the agent matrix of that pair). Both read
//! the receiver's links and decide no health of their own.

use std::collections::BTreeMap;

use kattila_fleet::{AgentStatus, Health, Severity};
use serde::Serialize;

use crate::format::{band_class, cluster_mark, cut, handshake_band, human_time, status_mark};
use crate::natural::natural_cmp;
use crate::shown::Pieces;
use crate::view::{AgentView, ClusterView, Site};

/// Up to this many clusters the cluster matrix is a full grid (scrolling
/// in its own area); beyond, it lists only the clusters with problems,
/// each with the clusters it has links with, as a grid of thousands of
/// columns cannot be read.
pub const CLUSTER_MATRIX_MAX: usize = 60;

/// In that list, agents not up named per cluster; more are only counted.
const NOT_UP_SHOWN: usize = 4;

/// Links not healthy named above an agent matrix; more are only counted.
pub const PROBLEMS_SHOWN: usize = 12;
/// A large fleet's cluster list shows this many problem clusters in full
/// (most urgent first), the others as links: at 10,000 agents with
/// problems everywhere, every row in full made `matrix.html` 1.7 MB.
const CLUSTER_ROWS_SHOWN: usize = 100;
/// … and in a row this many pairs with problems, worst first.
const PAIRS_SHOWN: usize = 12;

/// The text mark of a link health, so colour is never the only signal.
pub fn health_mark(h: Health) -> &'static str {
    match h {
        Health::Healthy => "●",
        Health::Stale => "◐",
        Health::Down => "✕",
        Health::Unknown => "?",
    }
}

/// What a status mark says, for agents that are not simply up.
fn status_word(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Up => "up",
        AgentStatus::Silent => "silent",
        AgentStatus::Relay => "relay only",
    }
}

/// One symbol of a legend: its CSS class, its mark and what it means.
#[derive(Debug, Clone, Serialize, Hash, PartialEq, Eq)]
pub struct Symbol {
    pub class: String,
    pub mark: String,
    pub text: String,
}

fn symbol(class: &str, mark: &str, text: &str) -> Symbol {
    Symbol { class: class.into(), mark: mark.into(), text: text.into() }
}

/// What a link health means, for legends.
fn health_text(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Stale => "stale: old handshakes, no traffic received",
        Health::Down => "down: no handshake ever, or none for long",
        Health::Unknown => "unknown: nothing says either way",
    }
}

/// The health legend for the healths in `seen` (worst first).
fn health_symbols(seen: impl Fn(Health) -> bool) -> Vec<Symbol> {
    Health::ALL
        .into_iter()
        .filter(|&h| seen(h))
        .map(|h| symbol(&format!("health-{}", h.as_str()), health_mark(h), health_text(h)))
        .collect()
}

/// A row or column heading: an agent.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct Head {
    /// Cut to a label's length; `hostname` is the whole name.
    pub label: String,
    pub hostname: String,
    pub page: String,
    /// 'up' | 'silent' | 'relay'.
    pub status: String,
    /// Mark and word for agents that are not up, else empty.
    pub mark: String,
    pub word: String,
}

fn head(a: &AgentView) -> Head {
    let up = a.status == AgentStatus::Up;
    Head {
        label: cut(&a.hostname),
        hostname: a.hostname.clone(),
        page: a.page.clone(),
        status: a.status.as_str().into(),
        mark: if up { String::new() } else { status_mark(a.status).into() },
        word: if up { String::new() } else { status_word(a.status).into() },
    }
}

/// One cell of an agent matrix.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct Cell {
    /// 'both' | 'row' (only the row agent lists the column agent) | 'col' |
    /// 'none' | 'self'.
    pub state: String,
    /// The link's health word, '' without a link.
    pub health: String,
    /// Health mark, direction arrow and handshake band ('' without a link).
    pub mark: String,
    pub arrow: String,
    pub band: String,
    pub class: String,
    pub title: Pieces,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct MatrixRow {
    pub head: Head,
    pub cells: Vec<Cell>,
}

/// An agent × agent matrix and the legend of what it shows.
#[derive(Debug, Clone, Serialize, Hash, Default)]
pub struct AgentMatrix {
    pub cols: Vec<Head>,
    pub rows: Vec<MatrixRow>,
    pub legend: Vec<Symbol>,
    /// Links in it, and those not healthy (a link of a square matrix is
    /// counted once).
    pub links: usize,
    pub not_healthy: usize,
    /// The links not healthy, worst first (the first [`PROBLEMS_SHOWN`]),
    /// named above the grid so that they are seen without scrolling.
    pub problems: Vec<Problem>,
}

/// A link not healthy, as the list above an agent matrix names it.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct Problem {
    pub a: Head,
    pub b: Head,
    pub health: String,
    pub mark: String,
}

impl AgentMatrix {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Agent indices in natural order of their hostnames (then ids, so that
/// the order is total).
pub fn natural_agents(site: &Site, members: &[usize]) -> Vec<usize> {
    let mut v = members.to_vec();
    v.sort_by(|&x, &y| {
        let (a, b) = (&site.agents[x], &site.agents[y]);
        natural_cmp(&a.hostname, &b.hostname).then_with(|| a.agent_id.cmp(&b.agent_id))
    });
    v
}

/// Agents `rows` × agents `cols`, each in natural order (a square matrix
/// when they are the same agents).
pub fn agent_matrix(site: &Site, rows: &[usize], cols: &[usize]) -> AgentMatrix {
    let (rows, cols) = (natural_agents(site, rows), natural_agents(site, cols));
    let square = rows == cols;
    let mut m = AgentMatrix {
        cols: cols.iter().map(|&c| head(&site.agents[c])).collect(),
        ..AgentMatrix::default()
    };
    let (mut healths, mut arrows, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    for &r in &rows {
        let cells: Vec<Cell> = cols
            .iter()
            .map(|&c| {
                let mut cell = cell(site, r, c);
                // Silent and relay-only agents' columns are marked like
                // their rows (which the row's class marks).
                let status = site.agents[c].status;
                if status != AgentStatus::Up {
                    cell.class = format!("{} col-{}", cell.class, status.as_str());
                }
                if !cell.health.is_empty() && (!square || r < c) {
                    m.links += 1;
                    if cell.health != Health::Healthy.as_str() {
                        m.not_healthy += 1;
                        m.problems.push(Problem {
                            a: head(&site.agents[r]),
                            b: head(&site.agents[c]),
                            health: cell.health.clone(),
                            mark: cell.mark.clone(),
                        });
                    }
                }
                healths.push(cell.health.clone());
                arrows.push(cell.state.clone());
                cell
            })
            .collect();
        m.rows.push(MatrixRow { head: head(&site.agents[r]), cells });
    }
    for &i in rows.iter().chain(&cols) {
        statuses.push(site.agents[i].status);
    }
    let mut legend = health_symbols(|h| healths.iter().any(|s| s == h.as_str()));
    for (state, mark, text) in [
        ("both", "⇄", "both ends list each other"),
        ("row", "→", "only the row's agent lists the column's"),
        ("col", "←", "only the column's agent lists the row's"),
    ] {
        if arrows.iter().any(|a| a == state) {
            legend.push(symbol(state, mark, text));
        }
    }
    for s in [AgentStatus::Silent, AgentStatus::Relay] {
        if statuses.contains(&s) {
            let text = format!("{}: the agent's row and column are marked", status_word(s));
            legend.push(symbol(&format!("status {}", s.as_str()), status_mark(s), &text));
        }
    }
    m.legend = legend;
    m.problems.sort_by_key(|p| rank(Health::parse(&p.health))); // stable: natural within
    m.problems.truncate(PROBLEMS_SHOWN);
    m
}

fn blank(state: &str) -> Cell {
    Cell {
        state: state.into(),
        health: String::new(),
        mark: if state == "self" { "—".into() } else { String::new() },
        arrow: String::new(),
        band: String::new(),
        class: state.into(),
        title: Pieces::new(),
    }
}

fn cell(site: &Site, r: usize, c: usize) -> Cell {
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
    // As of the receiver's last write of the link, not of this build: the
    // page does not move with the clock.
    let band = handshake_band(link.handshake_age);
    let health = link.health.as_str();
    Cell {
        state: state.into(),
        health: health.into(),
        mark: health_mark(link.health).into(),
        arrow: arrow.into(),
        band: band.into(),
        class: format!("{state} health-{health} band-{}", band_class(band)),
        title: Pieces::new().and(ra.hostname.as_str()).and(" — ").and(ca.hostname.as_str()).and(
            format!(
                ": {health}; {sides}; newest handshake {}",
                link.handshake_at.map(human_time).unwrap_or_else(|| "never".into())
            ),
        ),
    }
}

/// `agent` has a peer that is a device of the agent `other`.
fn lists(agent: &AgentView, other: &str) -> bool {
    agent.wireguard.iter().flat_map(|d| &d.peers).any(|p| p.peer_agent_id.as_deref() == Some(other))
}

/// Position of a health in [`Health::ALL`] (worst first).
fn rank(h: Health) -> usize {
    Health::ALL.iter().position(|&x| x == h).unwrap_or(0)
}

/// Links between two clusters, counted by health in [`Health::ALL`]'s
/// order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Counts([usize; 4]);

impl Counts {
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// The worst health among the links (None without links).
    pub fn worst(&self) -> Option<Health> {
        Health::ALL.into_iter().find(|&h| self.0[rank(h)] > 0)
    }

    pub fn of(&self, h: Health) -> usize {
        self.0[rank(h)]
    }

    /// "1 down, 2 stale, 5 healthy".
    fn describe(&self) -> String {
        Health::ALL
            .into_iter()
            .filter(|&h| self.of(h) > 0)
            .map(|h| format!("{} {}", self.of(h), h.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A page with the agent matrix of two clusters: rows the agents of `a`,
/// columns those of `b` (indices into `site.clusters`).
#[derive(Debug, Clone)]
pub struct PairPage {
    pub a: usize,
    pub b: usize,
    pub path: String,
    pub counts: Counts,
}

/// The WireGuard links between clusters, counted by health: what the
/// cluster matrix and the pair pages are made from, computed once a build.
#[derive(Debug, Clone)]
pub struct ClusterLinks {
    /// Cluster indices in natural order of their labels.
    order: Vec<usize>,
    /// (low, high) cluster index → its links (the diagonal: links inside).
    pairs: BTreeMap<(usize, usize), Counts>,
    /// Per cluster, the clusters it has links with (itself included when
    /// it has links inside) in natural order: a large fleet's list walks
    /// these, not every cluster for every cluster.
    partners: Vec<Vec<usize>>,
    /// Whether the matrix is a full grid (else problem rows only).
    grid: bool,
    /// Pair pages, and their index by (low, high) cluster index.
    pages: Vec<PairPage>,
    page_of: BTreeMap<(usize, usize), usize>,
}

impl ClusterLinks {
    /// Pair pages are made for every pair of clusters with links while the
    /// matrix is a grid (at most `CLUSTER_MATRIX_MAX²/2` pages), beyond
    /// that only for pairs with a link not healthy — so the number of
    /// files follows the number of problems, not the size of the fleet;
    /// a healthy pair then leads to the row cluster's own page.
    pub fn new(site: &Site) -> ClusterLinks {
        let mut of = vec![0usize; site.agents.len()];
        for (c, cl) in site.clusters.iter().enumerate() {
            for &i in &cl.agents {
                of[i] = c;
            }
        }
        let mut pairs: BTreeMap<(usize, usize), Counts> = BTreeMap::new();
        for (&(lo, hi), &l) in &site.pair_links {
            let (a, b) = (of[lo], of[hi]);
            pairs.entry((a.min(b), a.max(b))).or_default().0[rank(site.links[l].health)] += 1;
        }
        let mut order: Vec<usize> = (0..site.clusters.len()).collect();
        order.sort_by(|&x, &y| {
            let (a, b) = (&site.clusters[x], &site.clusters[y]);
            natural_cmp(&a.label, &b.label).then_with(|| a.id.cmp(&b.id))
        });
        let grid = site.clusters.len() <= CLUSTER_MATRIX_MAX;
        let mut pos = vec![0; order.len()];
        for (k, &c) in order.iter().enumerate() {
            pos[c] = k;
        }
        let pages: Vec<PairPage> = pairs
            .iter()
            .filter(|(&(a, b), counts)| {
                a != b && (grid || counts.worst().is_some_and(|h| !h.is_healthy()))
            })
            .map(|(&(lo, hi), &counts)| {
                // Rows the cluster that comes first in the matrix, so the
                // pair page reads like the upper half of the grid.
                let (a, b) = if pos[lo] <= pos[hi] { (lo, hi) } else { (hi, lo) };
                let path = format!("matrix/{}--{}.html", site.clusters[a].id, site.clusters[b].id);
                PairPage { a, b, path, counts }
            })
            .collect();
        let page_of =
            pages.iter().enumerate().map(|(k, p)| ((p.a.min(p.b), p.a.max(p.b)), k)).collect();
        let mut partners = vec![Vec::new(); site.clusters.len()];
        for &(a, b) in pairs.keys() {
            partners[a].push(b);
            if a != b {
                partners[b].push(a);
            }
        }
        for list in &mut partners {
            list.sort_by_key(|&c| pos[c]);
        }
        ClusterLinks { order, pairs, partners, grid, pages, page_of }
    }

    /// The pair pages to render.
    pub fn pair_pages(&self) -> &[PairPage] {
        &self.pages
    }

    fn counts(&self, a: usize, b: usize) -> Counts {
        self.pairs.get(&(a.min(b), a.max(b))).copied().unwrap_or_default()
    }

    /// Where the cell of clusters `a` × `b` leads: the pair's page, else
    /// (inside one cluster, or a healthy pair without a page) `a`'s matrix.
    /// Relative to the site root.
    fn href(&self, site: &Site, a: usize, b: usize) -> String {
        match self.page_of.get(&(a.min(b), a.max(b))) {
            Some(&k) if a != b => self.pages[k].path.clone(),
            _ => format!("{}#matrix", site.clusters[a].page),
        }
    }

    fn cell(&self, site: &Site, a: usize, b: usize, with_label: bool) -> ClusterCell {
        let counts = self.counts(a, b);
        let (ca, cb) = (&site.clusters[a], &site.clusters[b]);
        let Some(worst) = counts.worst() else {
            return ClusterCell {
                class: if a == b { "self" } else { "none" }.into(),
                ..Default::default()
            };
        };
        let total = counts.total();
        let n = counts.of(worst);
        let (text, sub) = if worst.is_healthy() {
            (format!("{total}"), String::new())
        } else {
            (
                format!("{n} {}", worst.as_str()),
                if total > n { format!("of {total}") } else { String::new() },
            )
        };
        let title = if a == b {
            Pieces::new().and("inside ").and(ca.label.as_str())
        } else {
            Pieces::new().and(ca.label.as_str()).and(" — ").and(cb.label.as_str())
        };
        let links = if total == 1 { "WireGuard link" } else { "WireGuard links" };
        ClusterCell {
            class: format!("health-{}{}", worst.as_str(), if a == b { " inside" } else { "" }),
            health: worst.as_str().into(),
            mark: health_mark(worst).into(),
            text,
            sub,
            href: self.href(site, a, b),
            partner: match (with_label, a == b) {
                (false, _) => String::new(),
                (true, true) => "inside".into(),
                (true, false) => cut(&cb.label),
            },
            title: title.and(format!(": {total} {links}: {}", counts.describe())),
        }
    }

    fn head(site: &Site, c: usize) -> ClusterHead {
        let cl = &site.clusters[c];
        ClusterHead {
            label: cut(&cl.label),
            full: cl.label.clone(),
            page: format!("{}#matrix", cl.page),
            health: cl.health.clone(),
            mark: cluster_mark(&cl.health).into(),
            agents: cl.agents.len(),
            silent: cl.silent,
            relay: cl.relay,
        }
    }

    /// The cluster matrix as the matrix page shows it.
    pub fn matrix(&self, site: &Site) -> ClusterMatrix {
        let mut seen = [false; 4];
        let note = |seen: &mut [bool; 4], cells: &[ClusterCell]| {
            for c in cells.iter().filter(|c| !c.health.is_empty()) {
                seen[rank(Health::parse(&c.health))] = true;
            }
        };
        let mut m = ClusterMatrix { grid: self.grid, ..ClusterMatrix::default() };
        if self.grid {
            m.cols = self.order.iter().map(|&c| Self::head(site, c)).collect();
            for &a in &self.order {
                let cells: Vec<ClusterCell> =
                    self.order.iter().map(|&b| self.cell(site, a, b, false)).collect();
                note(&mut seen, &cells);
                m.rows.push(ClusterRow {
                    head: Self::head(site, a),
                    cells,
                    ..ClusterRow::default()
                });
            }
        } else {
            // Problem clusters only, the most urgent first; in a row, the
            // agents not up by name, the pairs with problems (worst first)
            // and how many are healthy.
            let urgency = |c: usize| match Severity::parse(&site.clusters[c].health) {
                Some(Severity::Critical) => 0,
                Some(Severity::Warning) => 1,
                Some(Severity::Info) => 2,
                None => 3,
            };
            let mut shown: Vec<usize> =
                self.order.iter().copied().filter(|&c| site.clusters[c].health != "ok").collect();
            // Within a severity, the worst link first: a down link is
            // broken, a silent agent may be switched off.
            let worst_link = |c: usize| {
                let worst = self.partners[c].iter().filter_map(|&b| self.counts(c, b).worst());
                worst.map(rank).min().unwrap_or(usize::MAX) // no links: last
            };
            shown.sort_by_cached_key(|&c| (urgency(c), worst_link(c))); // stable: natural within
            m.hidden_ok = site.clusters.len() - shown.len();
            let more = shown.split_off(shown.len().min(CLUSTER_ROWS_SHOWN));
            m.more_heads = more.iter().map(|&c| Self::head(site, c)).collect();
            for a in shown {
                let (mut sick, healthy): (Vec<usize>, Vec<usize>) = std::iter::once(a)
                    .filter(|&b| self.counts(a, b).total() > 0)
                    .chain(self.partners[a].iter().copied().filter(|&b| b != a))
                    .partition(|&b| self.counts(a, b).worst() != Some(Health::Healthy));
                sick.sort_by_key(|&b| self.counts(a, b).worst().map(rank)); // stable
                let cells: Vec<ClusterCell> =
                    sick.iter().take(PAIRS_SHOWN).map(|&b| self.cell(site, a, b, true)).collect();
                note(&mut seen, &cells);
                if !healthy.is_empty() {
                    seen[rank(Health::Healthy)] = true;
                }
                let members = natural_agents(site, &site.clusters[a].agents);
                let not_up: Vec<Head> = members
                    .iter()
                    .map(|&i| &site.agents[i])
                    .filter(|x| x.status != AgentStatus::Up)
                    .map(head)
                    .collect();
                m.rows.push(ClusterRow {
                    head: Self::head(site, a),
                    not_up_more: not_up.len().saturating_sub(NOT_UP_SHOWN),
                    not_up: not_up.into_iter().take(NOT_UP_SHOWN).collect(),
                    healthy_pairs: healthy.iter().filter(|&&b| b != a).count(),
                    healthy_inside: healthy.contains(&a),
                    healthy_links: healthy.iter().map(|&b| self.counts(a, b).total()).sum(),
                    cells_more: sick.len().saturating_sub(PAIRS_SHOWN),
                    cells,
                });
            }
        }
        m.legend = health_symbols(|h| seen[rank(h)]);
        m
    }

    /// The agent matrix of pair page `p`, and what its page says.
    pub fn pair(&self, site: &Site, p: &PairPage) -> (AgentMatrix, PairInfo) {
        let (ca, cb) = (&site.clusters[p.a], &site.clusters[p.b]);
        let worst = p.counts.worst().unwrap_or(Health::Unknown);
        // Only the agents with a link to the other cluster: between two
        // sites of a dozen agents joined by one link, one cell, not a grid
        // of 144 mostly empty ones (at 10,000 agents in a mesh dense
        // across sites, pair pages were 25 MB).
        let linked = |from: &[usize], to: &[usize]| -> Vec<usize> {
            from.iter()
                .copied()
                .filter(|&x| to.iter().any(|&y| site.pair_link(x, y).is_some()))
                .collect()
        };
        let (rows, cols) = (linked(&ca.agents, &cb.agents), linked(&cb.agents, &ca.agents));
        let info = PairInfo {
            a: Self::head(site, p.a),
            b: Self::head(site, p.b),
            a_linked: rows.len(),
            b_linked: cols.len(),
            health: worst.as_str().into(),
            mark: health_mark(worst).into(),
            links: p.counts.total(),
            describe: p.counts.describe(),
        };
        (agent_matrix(site, &rows, &cols), info)
    }
}

/// A cluster as a row or column heading.
#[derive(Debug, Clone, Serialize, Hash, Default)]
pub struct ClusterHead {
    pub label: String,
    pub full: String,
    /// The cluster's page at its matrix, from the site root.
    pub page: String,
    /// 'ok' | 'warning' | 'critical', as the cluster view says.
    pub health: String,
    pub mark: String,
    pub agents: usize,
    pub silent: usize,
    pub relay: usize,
}

/// One cell of the cluster matrix.
#[derive(Debug, Clone, Serialize, Hash, Default)]
pub struct ClusterCell {
    pub class: String,
    /// Worst health of the links, '' without links.
    pub health: String,
    pub mark: String,
    /// "3" when all are healthy, else "1 down" (the worst) and "of 3".
    pub text: String,
    pub sub: String,
    /// From the site root.
    pub href: String,
    /// The other cluster, in the list of a large fleet.
    pub partner: String,
    pub title: Pieces,
}

/// A row of the cluster matrix: in a grid one cell per cluster, in the
/// list of a large fleet the pairs with links not all healthy, with the
/// healthy rest only counted (a core cluster may link with every other).
#[derive(Debug, Clone, Serialize, Hash, Default)]
pub struct ClusterRow {
    pub head: ClusterHead,
    pub cells: Vec<ClusterCell>,
    /// In the list: its agents that are not up (the first
    /// [`NOT_UP_SHOWN`]) and how many more there are.
    pub not_up: Vec<Head>,
    pub not_up_more: usize,
    /// In the list: other clusters all of whose links with this one are
    /// healthy, whether the links inside are, and how many links that is.
    pub healthy_pairs: usize,
    pub healthy_inside: bool,
    pub healthy_links: usize,
    /// In the list: pairs with problems beyond the [`PAIRS_SHOWN`] shown.
    pub cells_more: usize,
}

/// The cluster × cluster matrix: a grid, or for many clusters the rows of
/// those with problems.
#[derive(Debug, Clone, Serialize, Hash, Default)]
pub struct ClusterMatrix {
    pub grid: bool,
    pub cols: Vec<ClusterHead>,
    pub rows: Vec<ClusterRow>,
    /// Clusters not shown because nothing in them needs a look.
    pub hidden_ok: usize,
    /// In the list: problem clusters beyond the [`CLUSTER_ROWS_SHOWN`]
    /// shown in full, most urgent first.
    pub more_heads: Vec<ClusterHead>,
    pub legend: Vec<Symbol>,
}

/// What the page of a pair of clusters says about it.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct PairInfo {
    pub a: ClusterHead,
    pub b: ClusterHead,
    /// Agents of each cluster with a link to the other: the rows and
    /// columns of the pair's matrix.
    pub a_linked: usize,
    pub b_linked: usize,
    pub health: String,
    pub mark: String,
    pub links: usize,
    pub describe: String,
}

/// Clusters in natural order of their labels.
pub fn natural_clusters(clusters: &[ClusterView]) -> Vec<&ClusterView> {
    let mut v: Vec<&ClusterView> = clusters.iter().collect();
    v.sort_by(|a, b| natural_cmp(&a.label, &b.label).then_with(|| a.id.cmp(&b.id)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_the_worst_first() {
        let mut c = Counts::default();
        assert_eq!(c.worst(), None);
        c.0[rank(Health::Healthy)] = 2;
        assert_eq!(c.worst(), Some(Health::Healthy));
        c.0[rank(Health::Stale)] = 1;
        c.0[rank(Health::Down)] = 1;
        assert_eq!(c.worst(), Some(Health::Down));
        assert_eq!((c.total(), c.of(Health::Stale)), (4, 1));
        assert_eq!(c.describe(), "1 down, 1 stale, 2 healthy");
    }

    #[test]
    fn every_health_has_its_own_mark() {
        let marks: std::collections::HashSet<_> = Health::ALL.map(health_mark).into();
        assert_eq!(marks.len(), 4);
    }
}
