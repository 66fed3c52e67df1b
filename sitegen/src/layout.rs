//! Node positions for the topology maps.
//!
//! Small graphs (up to [`LAYOUT_RS_MAX_NODES`] nodes) are laid out with
//! layout-rs (layered, readable, but its cost grows steeply: 100 nodes take
//! ~0.4 s, 300 nodes ~10 s). Larger graphs use a grid-accelerated
//! Fruchterman–Reingold force layout written here, O(nodes + edges) per
//! iteration. Only positions are taken from either; the SVG is drawn by our
//! own templates.
//!
//! Layouts depend only on the graph's *structure* (node ids and edges), so
//! they are cached by a hash of it, in memory and on disk under
//! `OUT/.sitegen/layouts/`: a change of health, colour or counters never
//! re-runs a layout.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::routing;

/// Largest graph handed to layout-rs.
pub const LAYOUT_RS_MAX_NODES: usize = 40;
/// Bump when the layout code changes, so cached layouts are redone.
const ALGORITHM_VERSION: &str = "kattila-layout-7";

/// A graph to lay out: node ids (any order, unique) and edges between
/// node indices.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<String>,
    pub edges: Vec<(usize, usize)>,
}

/// Positions of a graph's nodes (centres), in the graph's node order,
/// within a `width` × `height` canvas, and the edges that must be drawn
/// bent to pass no other node's box (see [`crate::routing`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Layout {
    pub pos: Vec<(f64, f64)>,
    pub width: f64,
    pub height: f64,
    pub engine: String,
    /// (low node, high node) → the control point of its curve.
    #[serde(default)]
    pub bends: Vec<((usize, usize), (f64, f64))>,
}

impl Layout {
    /// The control point of the curve between nodes `a` and `b`, or None
    /// when the straight line is clear.
    pub fn bend(&self, a: usize, b: usize) -> Option<(f64, f64)> {
        let key = (a.min(b), a.max(b));
        self.bends.iter().find(|(k, _)| *k == key).map(|&(_, c)| c)
    }
}

impl Graph {
    /// Edges without self-loops and duplicates, each as (low, high).
    fn clean_edges(&self) -> Vec<(usize, usize)> {
        let mut e: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter(|(a, b)| a != b && *a < self.nodes.len() && *b < self.nodes.len())
            .map(|&(a, b)| (a.min(b), a.max(b)))
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    /// Hash of the structure: sorted node ids and edges named by id.
    pub fn structure_key(&self) -> String {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by(|&a, &b| self.nodes[a].cmp(&self.nodes[b]));
        let mut h = Sha256::new();
        h.update(ALGORITHM_VERSION.as_bytes());
        for &i in &order {
            h.update([1]);
            h.update(self.nodes[i].as_bytes());
        }
        let mut named: Vec<(&str, &str)> = self
            .clean_edges()
            .iter()
            .map(|&(a, b)| {
                let (x, y) = (self.nodes[a].as_str(), self.nodes[b].as_str());
                (x.min(y), x.max(y))
            })
            .collect();
        named.sort_unstable();
        for (a, b) in named {
            h.update([2]);
            h.update(a.as_bytes());
            h.update([0]);
            h.update(b.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Computes a layout without any cache.
pub fn compute(g: &Graph) -> Layout {
    let n = g.nodes.len();
    if n == 0 {
        return Layout {
            pos: vec![],
            width: 0.0,
            height: 0.0,
            engine: "none".into(),
            bends: vec![],
        };
    }
    if n == 1 {
        return Layout {
            pos: vec![(100.0, 50.0)],
            width: 200.0,
            height: 100.0,
            engine: "single".into(),
            bends: vec![],
        };
    }
    // layout-rs places boxes of about our size without overlaps: its
    // positions are kept as they are, unless the drawing is a long thin
    // strip (many nodes without edges end up side by side). Force layouts
    // land nodes anywhere: they are put on a grid in their rough order.
    let (raw, engine) = match (n <= LAYOUT_RS_MAX_NODES).then(|| layout_rs(g)).flatten() {
        Some(raw) => (raw, "layout-rs"),
        None => (force(g, 7), "force"),
    };
    let snap = engine == "force" || {
        let (w, h) = extent(&raw);
        w > 3.0 * h.max(100.0) || h > 3.0 * w.max(300.0)
    };
    let edges = g.clean_edges();
    let drawing = routing::arrange(&raw, &edges, snap);
    Layout {
        bends: edges.iter().zip(&drawing.bends).filter_map(|(&e, b)| b.map(|c| (e, c))).collect(),
        pos: drawing.pos,
        width: drawing.width,
        height: drawing.height,
        engine: engine.into(),
    }
}

/// layout-rs positions. It panics on some inputs (an empty graph, for one);
/// a panic falls back to the force layout instead of failing the build.
fn layout_rs(g: &Graph) -> Option<Vec<(f64, f64)>> {
    use layout::core::base::Orientation;
    use layout::core::geometry::Point;
    use layout::core::style::StyleAttr;
    use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
    use layout::topo::layout::VisualGraph;

    let edges = g.clean_edges();
    let n = g.nodes.len();
    let result = std::panic::catch_unwind(move || {
        let mut vg = VisualGraph::new(Orientation::TopToBottom);
        let handles: Vec<_> = (0..n)
            .map(|_| {
                vg.add_node(Element::create(
                    ShapeKind::new_box(""),
                    StyleAttr::simple(),
                    Orientation::LeftToRight,
                    Point::new(150.0, 44.0),
                ))
            })
            .collect();
        for (a, b) in edges {
            vg.add_edge(Arrow::simple(""), handles[a], handles[b]);
        }
        vg.do_it(false, false, false, &mut NullBackend);
        handles
            .iter()
            .map(|h| {
                let c = vg.pos(*h).center();
                (c.x, c.y)
            })
            .collect::<Vec<_>>()
    });
    result.ok().filter(|p: &Vec<(f64, f64)>| p.iter().all(|(x, y)| x.is_finite() && y.is_finite()))
}

/// Width and height of the box around the points.
fn extent(pos: &[(f64, f64)]) -> (f64, f64) {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in pos {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    ((x1 - x0).max(0.0), (y1 - y0).max(0.0))
}

/// Fruchterman–Reingold with a uniform grid for repulsion (only nodes in
/// neighbouring cells repel), deterministic for a given graph and seed.
pub fn force(g: &Graph, seed: u64) -> Vec<(f64, f64)> {
    let n = g.nodes.len();
    let edges = g.clean_edges();
    let area = n as f64 * 10_000.0;
    let k = (area / n as f64).sqrt();
    // Deterministic start: a golden-angle spiral, perturbed by a hash of the
    // node id so equal structures give equal layouts whatever the order.
    let mut pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(g.nodes[i].as_bytes());
            let d = h.finalize();
            let jitter = (d[0] as f64 / 255.0 - 0.5) * k * 0.5;
            let r = k * (i as f64 + 0.5).sqrt();
            let t = i as f64 * 2.399_963;
            (r * t.cos() + jitter, r * t.sin() - jitter)
        })
        .collect();
    let iterations = if n > 2000 { 80 } else { 150 };
    let mut temp = k * (n as f64).sqrt() * 0.5;
    let cool = temp / (iterations as f64 + 1.0);
    let cell = 2.0 * k;
    let mut disp = vec![(0.0f64, 0.0f64); n];
    let mut grid: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for _ in 0..iterations {
        grid.clear();
        for (i, &(x, y)) in pos.iter().enumerate() {
            grid.entry(((x / cell).floor() as i64, (y / cell).floor() as i64)).or_default().push(i);
        }
        disp.iter_mut().for_each(|d| *d = (0.0, 0.0));
        for (&(cx, cy), members) in &grid {
            for gx in cx - 1..=cx + 1 {
                for gy in cy - 1..=cy + 1 {
                    let Some(others) = grid.get(&(gx, gy)) else { continue };
                    for &i in members {
                        for &j in others {
                            if i == j {
                                continue;
                            }
                            let (dx, dy) = (pos[i].0 - pos[j].0, pos[i].1 - pos[j].1);
                            let d2 = (dx * dx + dy * dy).max(0.01);
                            if d2 > cell * cell {
                                continue;
                            }
                            let f = k * k / d2;
                            disp[i].0 += dx * f;
                            disp[i].1 += dy * f;
                        }
                    }
                }
            }
        }
        for &(a, b) in &edges {
            let (dx, dy) = (pos[a].0 - pos[b].0, pos[a].1 - pos[b].1);
            let d = (dx * dx + dy * dy).sqrt().max(0.01);
            let f = d / k;
            disp[a].0 -= dx * f;
            disp[a].1 -= dy * f;
            disp[b].0 += dx * f;
            disp[b].1 += dy * f;
        }
        // A weak pull to the centre keeps disconnected parts together.
        for (i, p) in pos.iter_mut().enumerate() {
            let (dx, dy) = (disp[i].0 - p.0 * 0.05, disp[i].1 - p.1 * 0.05);
            let len = (dx * dx + dy * dy).sqrt().max(0.01);
            let step = len.min(temp);
            p.0 += dx / len * step;
            p.1 += dy / len * step;
        }
        temp = (temp - cool).max(k * 0.05);
    }
    pos
}

/// layout-rs wants somewhere to draw; we only want its positions.
struct NullBackend;

impl layout::core::format::RenderBackend for NullBackend {
    fn draw_rect(
        &mut self,
        _: layout::core::geometry::Point,
        _: layout::core::geometry::Point,
        _: &layout::core::style::StyleAttr,
        _: Option<String>,
        _: Option<layout::core::format::ClipHandle>,
    ) {
    }
    fn draw_line(
        &mut self,
        _: layout::core::geometry::Point,
        _: layout::core::geometry::Point,
        _: &layout::core::style::StyleAttr,
        _: Option<String>,
    ) {
    }
    fn draw_circle(
        &mut self,
        _: layout::core::geometry::Point,
        _: layout::core::geometry::Point,
        _: &layout::core::style::StyleAttr,
        _: Option<String>,
    ) {
    }
    fn draw_text(
        &mut self,
        _: layout::core::geometry::Point,
        _: &str,
        _: &layout::core::style::StyleAttr,
    ) {
    }
    fn draw_arrow(
        &mut self,
        _: &[(layout::core::geometry::Point, layout::core::geometry::Point)],
        _: bool,
        _: (bool, bool),
        _: &layout::core::style::StyleAttr,
        _: Option<String>,
        _: &str,
    ) {
    }
    fn create_clip(
        &mut self,
        _: layout::core::geometry::Point,
        _: layout::core::geometry::Point,
        _: usize,
    ) -> layout::core::format::ClipHandle {
        0
    }
}

/// Layouts by structure key, in memory and (optionally) on disk. Shared
/// by the threads that draw maps: layouts are loaded and computed outside
/// the lock (two threads may compute the same new structure at once; both
/// get the same positions).
#[derive(Debug, Default)]
pub struct LayoutCache {
    dir: Option<PathBuf>,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    mem: HashMap<String, Layout>,
    used: HashSet<String>,
    hits: usize,
    misses: usize,
    /// Time spent computing layouts in the current build, summed over
    /// threads.
    compute_time: std::time::Duration,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// Node ids in the stored order, so a reordered graph maps back.
    nodes: Vec<String>,
    layout: Layout,
}

impl LayoutCache {
    pub fn new(dir: Option<PathBuf>) -> LayoutCache {
        LayoutCache { dir, ..LayoutCache::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Layouts found in the cache during the current build.
    pub fn hits(&self) -> usize {
        self.state().hits
    }

    /// Layouts computed during the current build.
    pub fn misses(&self) -> usize {
        self.state().misses
    }

    /// Time spent computing layouts in the current build.
    pub fn compute_time(&self) -> std::time::Duration {
        self.state().compute_time
    }

    /// Starts a build: resets the counters.
    pub fn begin(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.used.clear();
        state.hits = 0;
        state.misses = 0;
        state.compute_time = std::time::Duration::ZERO;
    }

    /// The layout of `g`, from the cache when its structure was seen before.
    pub fn get(&self, g: &Graph) -> Layout {
        if g.nodes.is_empty() {
            return compute(g);
        }
        let key = g.structure_key();
        let mut sorted: Vec<usize> = (0..g.nodes.len()).collect();
        sorted.sort_by(|&a, &b| g.nodes[a].cmp(&g.nodes[b]));
        // Stored layouts are in sorted-id order.
        let from_sorted = |stored: &Layout| -> Layout {
            let mut pos = vec![(0.0, 0.0); g.nodes.len()];
            for (k, &i) in sorted.iter().enumerate() {
                pos[i] = stored.pos[k];
            }
            let bends = stored
                .bends
                .iter()
                .filter(|((a, b), _)| *a < sorted.len() && *b < sorted.len())
                .map(|&((a, b), c)| {
                    let (x, y) = (sorted[a], sorted[b]);
                    ((x.min(y), x.max(y)), c)
                })
                .collect();
            Layout { pos, bends, ..stored.clone() }
        };
        {
            let mut state = self.state();
            state.used.insert(key.clone());
            if let Some(l) = state.mem.get(&key) {
                let out = from_sorted(l);
                state.hits += 1;
                return out;
            }
        }
        if let Some(l) = self.load(&key, g.nodes.len()) {
            let out = from_sorted(&l);
            let mut state = self.state();
            state.hits += 1;
            state.mem.insert(key, l);
            return out;
        }
        let started = std::time::Instant::now();
        // Lay out the graph in sorted order, so the result depends on the
        // structure only.
        let mut rank = vec![0usize; g.nodes.len()];
        for (k, &i) in sorted.iter().enumerate() {
            rank[i] = k;
        }
        let canonical = Graph {
            nodes: sorted.iter().map(|&i| g.nodes[i].clone()).collect(),
            edges: g.edges.iter().map(|&(a, b)| (rank[a], rank[b])).collect(),
        };
        let l = compute(&canonical);
        let took = started.elapsed();
        self.store(&key, &canonical.nodes, &l);
        let out = from_sorted(&l);
        let mut state = self.state();
        state.misses += 1;
        state.compute_time += took;
        state.mem.insert(key, l);
        out
    }

    fn load(&self, key: &str, n: usize) -> Option<Layout> {
        let path = self.dir.as_ref()?.join(format!("{key}.json"));
        let stored: Stored = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        (stored.layout.pos.len() == n && stored.nodes.len() == n).then_some(stored.layout)
    }

    fn store(&self, key: &str, nodes: &[String], l: &Layout) {
        let Some(dir) = &self.dir else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let stored = Stored { nodes: nodes.to_vec(), layout: l.clone() };
        // Unique: two threads may store the same key at once.
        static TMP: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(".{key}.{}.tmp", TMP.fetch_add(1, Ordering::Relaxed)));
        if let Ok(bytes) = serde_json::to_vec(&stored) {
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join(format!("{key}.json")));
            }
        }
    }

    /// Ends a build: forgets layouts this build did not use (memory and,
    /// once there are many, disk).
    pub fn finish(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.mem.retain(|k, _| state.used.contains(k));
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let files: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        if files.len() <= 2 * state.used.len() + 64 {
            return;
        }
        for e in files {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name.trim_end_matches(".json");
            if !state.used.contains(key) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize, prefix: &str) -> Graph {
        Graph {
            nodes: (0..n).map(|i| format!("{prefix}{i:04}")).collect(),
            edges: (0..n).map(|i| (i, (i + 1) % n)).collect(),
        }
    }

    #[test]
    fn small_and_large_graphs_get_finite_distinct_positions() {
        for (n, engine) in [(2, "layout-rs"), (12, "layout-rs"), (120, "force")] {
            let l = compute(&ring(n, "a"));
            assert_eq!(l.engine, engine);
            assert_eq!(l.pos.len(), n);
            for &(x, y) in &l.pos {
                assert!(x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0);
                assert!(x <= l.width && y <= l.height);
            }
            let mut uniq: Vec<_> =
                l.pos.iter().map(|&(x, y)| ((x * 10.0) as i64, (y * 10.0) as i64)).collect();
            uniq.sort();
            uniq.dedup();
            assert!(uniq.len() > n / 2, "{engine}: nodes collapsed");
        }
        assert!(compute(&Graph::default()).pos.is_empty());
    }

    #[test]
    fn cache_is_keyed_by_structure_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LayoutCache::new(Some(dir.path().to_path_buf()));
        let g = ring(8, "n");
        cache.begin();
        let first = cache.get(&g);
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        // Same structure with nodes listed in another order: a hit, and each
        // node keeps its position.
        let mut shuffled = g.clone();
        shuffled.nodes.reverse();
        let n = g.nodes.len();
        shuffled.edges = g.edges.iter().map(|&(a, b)| (n - 1 - a, n - 1 - b)).collect();
        let again = cache.get(&shuffled);
        assert_eq!(cache.hits(), 1);
        assert_eq!(again.pos[n - 1], first.pos[0]);
        // A fresh cache on the same directory finds it on disk.
        let mut cold = LayoutCache::new(Some(dir.path().to_path_buf()));
        cold.begin();
        assert_eq!(cold.get(&g), first);
        assert_eq!((cold.hits(), cold.misses()), (1, 0));
        // Another edge is another structure.
        let mut other = g.clone();
        other.edges.push((0, 4));
        cold.get(&other);
        assert_eq!(cold.misses(), 1);
    }
}
