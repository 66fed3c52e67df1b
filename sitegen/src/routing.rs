//! Making a layout drawable without lying: no two node boxes overlap, and
//! no line passes through a box that is not one of its ends (which would
//! make two agents look linked when they are not).
//!
//! The layout engines place node centres; this module then
//! 1. pushes overlapping boxes apart,
//! 2. draws each edge straight when the straight line is clear, else bends
//!    it (a quadratic curve) around the boxes in its way,
//! 3. spreads the whole drawing out and tries again when some edge found
//!    no clear way, and as a last resort puts the nodes on a circle large
//!    enough that every chord is clear.
//!
//! Boxes are those the SVG template draws: [`NODE_HALF_W`] × [`NODE_HALF_H`]
//! around each centre.

use std::collections::HashMap;

/// Half the width of a node box in the SVG (the template's `rect`).
pub const NODE_HALF_W: f64 = 72.0;
/// Half the height of a node box in the SVG.
pub const NODE_HALF_H: f64 = 19.0;
/// Free space kept between two boxes.
const GAP: f64 = 14.0;
/// How close a line may pass a box it does not end at.
const CLEARANCE: f64 = 3.0;
/// Points a curve is checked at.
const CURVE_STEPS: usize = 16;
/// Margin around the drawing.
const MARGIN: f64 = 16.0;
/// Sideways offsets (px) of the control point also tried, whatever the
/// line's length.
const OFFSETS: &[f64] = &[40.0, 80.0, 120.0, 170.0, 230.0, 300.0];
/// Curves tried for an edge whose straight line is blocked: (how far the
/// control point is moved sideways, as a share of the edge's length;
/// where along the edge it sits).
const BENDS: &[(f64, f64)] = &[
    (0.15, 0.5),
    (-0.15, 0.5),
    (0.3, 0.5),
    (-0.3, 0.5),
    (0.3, 0.3),
    (-0.3, 0.3),
    (0.3, 0.7),
    (-0.3, 0.7),
    (0.5, 0.5),
    (-0.5, 0.5),
    (0.6, 0.25),
    (-0.6, 0.25),
    (0.6, 0.75),
    (-0.6, 0.75),
    (0.8, 0.5),
    (-0.8, 0.5),
    (1.1, 0.5),
    (-1.1, 0.5),
];

/// Node centres, the bend of each edge (the control point of its curve,
/// None for a straight line; in the order of the edges given) and the
/// canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    pub pos: Vec<(f64, f64)>,
    pub bends: Vec<Option<(f64, f64)>>,
    pub width: f64,
    pub height: f64,
}

/// Arranges `pos` (node centres from a layout engine) and `edges` (pairs of
/// node indices, no self-loops) into a drawing that keeps both rules.
/// `snap`: put the nodes on a grid first, keeping their rough order (for
/// force layouts, whose nodes land anywhere and often on each other).
pub fn arrange(pos: &[(f64, f64)], edges: &[(usize, usize)], snap: bool) -> Drawing {
    let mut pos = if snap { to_grid(pos) } else { pos.to_vec() };
    separate(&mut pos);
    // Spreading out makes room for curves, but shrinks the drawing on
    // the page: a little at a time.
    for _ in 0..12 {
        if let Some(bends) = route(&pos, edges) {
            return finish(pos, bends);
        }
        spread(&mut pos, 1.1);
    }
    let pos = circle(pos.len());
    let bends = route(&pos, edges).unwrap_or_else(|| vec![None; edges.len()]);
    finish(pos, bends)
}

/// Grid cell: room for a box and for curves between the rows.
const CELL_W: f64 = 2.0 * NODE_HALF_W + 48.0;
const CELL_H: f64 = 2.0 * NODE_HALF_H + 64.0;

/// The nodes on a grid a little wider than high, in rows by their `y`,
/// each row by `x`: no two boxes overlap, and what was near stays near.
fn to_grid(pos: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let n = pos.len();
    let cols = ((n as f64 * 1.6 * CELL_H / CELL_W).sqrt().ceil() as usize).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| pos[a].1.total_cmp(&pos[b].1).then(pos[a].0.total_cmp(&pos[b].0)));
    let mut out = vec![(0.0, 0.0); n];
    for (r, row) in order.chunks_mut(cols).enumerate() {
        row.sort_by(|&a, &b| pos[a].0.total_cmp(&pos[b].0));
        // Odd rows are offset by half a cell, so that lines between rows
        // find gaps.
        let shift = if r % 2 == 1 { CELL_W / 2.0 } else { 0.0 };
        for (c, &i) in row.iter().enumerate() {
            out[i] = (c as f64 * CELL_W + shift, r as f64 * CELL_H);
        }
    }
    out
}

/// A box with the gap around it, as (x0, y0, x1, y1).
fn padded(c: (f64, f64), pad: f64) -> (f64, f64, f64, f64) {
    (
        c.0 - NODE_HALF_W - pad,
        c.1 - NODE_HALF_H - pad,
        c.0 + NODE_HALF_W + pad,
        c.1 + NODE_HALF_H + pad,
    )
}

/// Pushes overlapping boxes apart along the axis where they overlap least,
/// until no two boxes (with [`GAP`] between them) overlap; spreads the
/// layout out if that does not settle.
fn separate(pos: &mut [(f64, f64)]) {
    let (need_x, need_y) = (2.0 * NODE_HALF_W + GAP, 2.0 * NODE_HALF_H + GAP);
    for round in 0..200 {
        let mut moved = false;
        let grid = Grid::new(pos, need_x.max(need_y));
        for i in 0..pos.len() {
            for j in grid.near(pos[i], need_x, need_y) {
                if j <= i {
                    continue;
                }
                let (dx, dy) = (pos[j].0 - pos[i].0, pos[j].1 - pos[i].1);
                let (ox, oy) = (need_x - dx.abs(), need_y - dy.abs());
                if ox <= 0.0 || oy <= 0.0 {
                    continue;
                }
                moved = true;
                // Coincident centres: a fixed direction keeps it deterministic.
                let sign = |d: f64, k: usize| {
                    if d > 0.0 || (d == 0.0 && k.is_multiple_of(2)) {
                        1.0
                    } else {
                        -1.0
                    }
                };
                if ox / need_x <= oy / need_y {
                    let s = sign(dx, i + j) * (ox / 2.0 + 0.5);
                    pos[i].0 -= s;
                    pos[j].0 += s;
                } else {
                    let s = sign(dy, i + j) * (oy / 2.0 + 0.5);
                    pos[i].1 -= s;
                    pos[j].1 += s;
                }
            }
        }
        if !moved {
            return;
        }
        if round % 50 == 49 {
            spread(pos, 1.2);
        }
    }
    // Did not settle: spreading out far enough always separates distinct
    // centres.
    let mut scale = 1.0f64;
    for i in 0..pos.len() {
        for j in i + 1..pos.len() {
            let (dx, dy) = ((pos[j].0 - pos[i].0).abs(), (pos[j].1 - pos[i].1).abs());
            let s = (need_x / dx.max(1e-6)).min(need_y / dy.max(1e-6));
            scale = scale.max(s);
        }
    }
    spread(pos, scale.min(1e6));
}

/// Scales the drawing about its centre.
fn spread(pos: &mut [(f64, f64)], factor: f64) {
    let n = pos.len().max(1) as f64;
    let (cx, cy) = pos.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    for p in pos.iter_mut() {
        *p = (cx + (p.0 - cx) * factor, cy + (p.1 - cy) * factor);
    }
}

/// `n` nodes on a circle whose chords clear every box they do not end at:
/// boxes far enough apart along the circle, and the circle so large that a
/// chord between two non-neighbours passes the boxes between them.
fn circle(n: usize) -> Vec<(f64, f64)> {
    let diag = (NODE_HALF_W * NODE_HALF_W + NODE_HALF_H * NODE_HALF_H).sqrt();
    let step = std::f64::consts::TAU / n.max(1) as f64;
    // Neighbours on the circle: a chord of length >= box width + gap.
    let r_apart = (2.0 * diag + GAP) / (2.0 * (step / 2.0).sin()).max(1e-9);
    // A chord between nodes two steps apart passes the node between at
    // distance r (cos(step / 2) ... ) ≈ r (1 - cos(step)); it must exceed
    // the box's reach.
    let r_clear = (diag + CLEARANCE) / (1.0 - step.cos()).max(1e-9);
    let r = r_apart.max(r_clear).max(2.0 * diag);
    (0..n).map(|i| (r * (i as f64 * step).cos(), r * (i as f64 * step).sin())).collect()
}

/// Bends for every edge, or None when some edge found no clear way.
fn route(pos: &[(f64, f64)], edges: &[(usize, usize)]) -> Option<Vec<Option<(f64, f64)>>> {
    let grid = Grid::new(pos, 4.0 * NODE_HALF_W);
    let mut bends = Vec::with_capacity(edges.len());
    for &(a, b) in edges {
        let (p, q) = (pos[a], pos[b]);
        if clear(&grid, pos, &[p, q], a, b) {
            bends.push(None);
            continue;
        }
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (nx, ny) = (-dy / len, dx / len);
        // Bends from slight to strong, on either side, with the curve's
        // peak in the middle or nearer one end.
        let relative = BENDS.iter().map(|&(k, along)| (k * len, along));
        // Long lines also try bends of a fixed size: a gap between two rows
        // of boxes is as wide for a long line as for a short one.
        let absolute = OFFSETS.iter().flat_map(|&o| [(o, 0.5), (-o, 0.5), (o, 0.3), (-o, 0.7)]);
        let found = relative.chain(absolute).find_map(|(offset, along)| {
            let at = (p.0 + dx * along, p.1 + dy * along);
            let c = (at.0 + nx * offset, at.1 + ny * offset);
            clear(&grid, pos, &curve_points(p, c, q), a, b).then_some(c)
        });
        bends.push(Some(found?));
    }
    Some(bends)
}

/// Points along the quadratic curve from `p` to `q` bent towards `c`.
pub fn curve_points(p: (f64, f64), c: (f64, f64), q: (f64, f64)) -> Vec<(f64, f64)> {
    (0..=CURVE_STEPS)
        .map(|s| {
            let t = s as f64 / CURVE_STEPS as f64;
            let (u, v, w) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
            (u * p.0 + v * c.0 + w * q.0, u * p.1 + v * c.1 + w * q.1)
        })
        .collect()
}

/// Whether the polyline passes no box but those of `a` and `b`.
fn clear(grid: &Grid, pos: &[(f64, f64)], line: &[(f64, f64)], a: usize, b: usize) -> bool {
    line.windows(2).all(|seg| {
        let (p, q) = (seg[0], seg[1]);
        grid.along(p, q)
            .into_iter()
            .all(|k| k == a || k == b || !segment_hits_box(p, q, padded(pos[k], CLEARANCE)))
    })
}

/// Whether the segment p–q meets the box (Liang–Barsky clipping).
pub fn segment_hits_box(p: (f64, f64), q: (f64, f64), r: (f64, f64, f64, f64)) -> bool {
    let (x0, y0, x1, y1) = r;
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (edge_p, edge_q) in [(-dx, p.0 - x0), (dx, x1 - p.0), (-dy, p.1 - y0), (dy, y1 - p.1)] {
        if edge_p == 0.0 {
            if edge_q < 0.0 {
                return false;
            }
            continue;
        }
        let t = edge_q / edge_p;
        if edge_p < 0.0 {
            t0 = t0.max(t);
        } else {
            t1 = t1.min(t);
        }
        if t0 > t1 {
            return false;
        }
    }
    true
}

/// Moves the drawing to start at the margin and sizes the canvas.
fn finish(mut pos: Vec<(f64, f64)>, mut bends: Vec<Option<(f64, f64)>>) -> Drawing {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    let points = pos
        .iter()
        .map(|&c| padded(c, 0.0))
        .chain(bends.iter().flatten().map(|&(x, y)| (x, y, x, y)));
    for (a, b, c, d) in points {
        (x0, y0, x1, y1) = (x0.min(a), y0.min(b), x1.max(c), y1.max(d));
    }
    if x0 > x1 {
        return Drawing { pos, bends, width: 0.0, height: 0.0 };
    }
    let shift = |p: &mut (f64, f64)| {
        *p = (round1(p.0 - x0 + MARGIN), round1(p.1 - y0 + MARGIN));
    };
    pos.iter_mut().for_each(shift);
    bends.iter_mut().flatten().for_each(shift);
    Drawing {
        pos,
        bends,
        width: round1(x1 - x0 + 2.0 * MARGIN),
        height: round1(y1 - y0 + 2.0 * MARGIN),
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Node centres bucketed by a uniform grid, for finding the boxes near a
/// point or a segment without looking at every box.
struct Grid {
    cell: f64,
    cells: HashMap<(i64, i64), Vec<usize>>,
}

impl Grid {
    fn new(pos: &[(f64, f64)], cell: f64) -> Grid {
        let mut cells: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
        for (i, &(x, y)) in pos.iter().enumerate() {
            cells
                .entry(((x / cell).floor() as i64, (y / cell).floor() as i64))
                .or_default()
                .push(i);
        }
        Grid { cell, cells }
    }

    /// Nodes whose centre lies within the rectangle around `p`.
    fn near(&self, p: (f64, f64), rx: f64, ry: f64) -> Vec<usize> {
        self.in_rect(p.0 - rx, p.1 - ry, p.0 + rx, p.1 + ry)
    }

    /// Nodes whose box may meet the segment p–q.
    fn along(&self, p: (f64, f64), q: (f64, f64)) -> Vec<usize> {
        let (rx, ry) = (NODE_HALF_W + CLEARANCE, NODE_HALF_H + CLEARANCE);
        self.in_rect(p.0.min(q.0) - rx, p.1.min(q.1) - ry, p.0.max(q.0) + rx, p.1.max(q.1) + ry)
    }

    fn in_rect(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> Vec<usize> {
        let c = |v: f64| (v / self.cell).floor() as i64;
        let (cx0, cy0, cx1, cy1) = (c(x0), c(y0), c(x1), c(y1));
        let mut out = Vec::new();
        // A long segment spans many cells: then walking the occupied cells
        // is cheaper than walking the rectangle.
        if (cx1 - cx0 + 1).saturating_mul(cy1 - cy0 + 1) as usize > self.cells.len() {
            for (&(gx, gy), members) in &self.cells {
                if (cx0..=cx1).contains(&gx) && (cy0..=cy1).contains(&gy) {
                    out.extend_from_slice(members);
                }
            }
        } else {
            for gx in cx0..=cx1 {
                for gy in cy0..=cy1 {
                    if let Some(members) = self.cells.get(&(gx, gy)) {
                        out.extend_from_slice(members);
                    }
                }
            }
        }
        out
    }
}

/// What is wrong with a drawing: pairs of overlapping boxes and edges
/// passing a box they do not end at. Both are 0 for every drawing
/// [`arrange`] makes; the tests measure the SVG the same way.
pub fn problems(d: &Drawing, edges: &[(usize, usize)]) -> (usize, usize) {
    let mut overlaps = 0;
    for i in 0..d.pos.len() {
        for j in i + 1..d.pos.len() {
            let (a, b) = (padded(d.pos[i], 0.0), padded(d.pos[j], 0.0));
            if a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3 {
                overlaps += 1;
            }
        }
    }
    let mut crossings = 0;
    for (e, &(a, b)) in edges.iter().enumerate() {
        let line = match d.bends[e] {
            None => vec![d.pos[a], d.pos[b]],
            Some(c) => curve_points(d.pos[a], c, d.pos[b]),
        };
        for k in (0..d.pos.len()).filter(|&k| k != a && k != b) {
            if line.windows(2).any(|s| segment_hits_box(s[0], s[1], padded(d.pos[k], 0.0))) {
                crossings += 1;
            }
        }
    }
    (overlaps, crossings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_boxes() {
        let r = (0.0, 0.0, 10.0, 10.0);
        assert!(segment_hits_box((-5.0, 5.0), (15.0, 5.0), r));
        assert!(segment_hits_box((5.0, 5.0), (6.0, 6.0), r));
        assert!(!segment_hits_box((-5.0, -5.0), (-1.0, 20.0), r));
        assert!(!segment_hits_box((11.0, 0.0), (20.0, 20.0), r));
        assert!(segment_hits_box((-5.0, 5.0), (5.0, -5.0), r), "touches the corner");
    }

    #[test]
    fn a_line_through_a_box_in_the_middle_is_bent_around_it() {
        // Three nodes in a column, the outer two linked: the straight line
        // would pass through the middle one.
        let pos = [(0.0, 0.0), (0.0, 100.0), (0.0, 200.0)];
        let edges = [(0, 2), (0, 1), (1, 2)];
        let d = arrange(&pos, &edges, false);
        assert_eq!(problems(&d, &edges), (0, 0));
        assert!(d.bends[0].is_some() && d.bends[1].is_none() && d.bends[2].is_none());
    }

    #[test]
    fn overlapping_boxes_are_pushed_apart() {
        let pos = [(0.0, 0.0), (10.0, 5.0), (10.0, 5.0), (-3.0, 2.0), (500.0, 500.0)];
        let d = arrange(&pos, &[], false);
        assert_eq!(problems(&d, &[]).0, 0);
        assert!(d.pos.iter().all(|&(x, y)| x >= NODE_HALF_W && y >= NODE_HALF_H));
        assert!(d.width > 0.0 && d.height > 0.0);
    }

    #[test]
    fn dense_graphs_stay_clean() {
        // A complete graph on a grid: many lines want to pass many boxes.
        for n in [4usize, 9, 16, 30] {
            let side = (n as f64).sqrt().ceil() as usize;
            let pos: Vec<(f64, f64)> =
                (0..n).map(|i| ((i % side) as f64 * 160.0, (i / side) as f64 * 60.0)).collect();
            let edges: Vec<(usize, usize)> =
                (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
            for snap in [false, true] {
                let d = arrange(&pos, &edges, snap);
                assert_eq!(problems(&d, &edges), (0, 0), "{n} nodes, snap {snap}");
            }
        }
    }

    #[test]
    fn the_circle_clears_every_chord() {
        for n in [3usize, 7, 25, 60] {
            let pos = circle(n);
            let edges: Vec<(usize, usize)> =
                (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
            let d = Drawing { bends: vec![None; edges.len()], pos, width: 0.0, height: 0.0 };
            assert_eq!(problems(&d, &edges), (0, 0), "{n} nodes");
        }
    }
}
