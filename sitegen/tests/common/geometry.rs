//! Reads the geometry of a published map back from its SVG — node boxes
//! from each node group's `translate` and `rect`, lines and curves from
//! the edges — and counts what would mislead a reader: boxes that overlap
//! and lines that pass a box they do not end at. Written independently of
//! sitegen's own routing code, which it checks.

/// A box: left, top, right, bottom.
type Rect = (f64, f64, f64, f64);

#[derive(Debug, Default)]
pub struct Geometry {
    pub boxes: Vec<Rect>,
    /// Each edge as a polyline (curves sampled).
    pub edges: Vec<Vec<(f64, f64)>>,
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[at..].find('"')? + at;
    Some(&tag[at..end])
}

fn num(s: &str) -> f64 {
    s.trim().parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

fn pair(s: &str) -> (f64, f64) {
    let (x, y) = s.split_once(',').unwrap_or_else(|| panic!("not a point: {s:?}"));
    (num(x), num(y))
}

pub fn parse(svg: &str) -> Geometry {
    let mut g = Geometry::default();
    for (i, _) in svg.match_indices('<') {
        let end = svg[i..].find('>').map(|e| i + e).unwrap_or(svg.len());
        let tag = &svg[i..end];
        if tag.starts_with("<g class=\"node ") {
            let t = attr(tag, "transform").expect("a node has a position");
            let inner = t.trim_start_matches("translate(").trim_end_matches(')');
            let (x, y) = pair(inner);
            let rect_at = svg[end..].find("<rect").expect("a node has a box") + end;
            let rect_end = svg[rect_at..].find('>').unwrap() + rect_at;
            let rect = &svg[rect_at..rect_end];
            let (rx, ry) = (num(attr(rect, "x").unwrap()), num(attr(rect, "y").unwrap()));
            let (w, h) = (num(attr(rect, "width").unwrap()), num(attr(rect, "height").unwrap()));
            g.boxes.push((x + rx, y + ry, x + rx + w, y + ry + h));
        } else if tag.starts_with("<line") && tag.contains("class=\"edge") {
            let p = (num(attr(tag, "x1").unwrap()), num(attr(tag, "y1").unwrap()));
            let q = (num(attr(tag, "x2").unwrap()), num(attr(tag, "y2").unwrap()));
            g.edges.push(vec![p, q]);
        } else if tag.starts_with("<path") && tag.contains("class=\"edge") {
            // "Mx,y Qcx,cy x2,y2"
            let d = attr(tag, "d").unwrap();
            let mut parts = d.trim_start_matches('M').split(' ');
            let p = pair(parts.next().unwrap());
            let c = pair(parts.next().unwrap().trim_start_matches('Q'));
            let q = pair(parts.next().unwrap());
            let points = (0..=64)
                .map(|s| {
                    let t = s as f64 / 64.0;
                    let (a, b, k) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
                    (a * p.0 + b * c.0 + k * q.0, a * p.1 + b * c.1 + k * q.1)
                })
                .collect();
            g.edges.push(points);
        }
    }
    g
}

fn inside(p: (f64, f64), r: Rect) -> bool {
    p.0 > r.0 && p.0 < r.2 && p.1 > r.1 && p.1 < r.3
}

/// Whether the segment passes through the box's interior, by sampling it
/// finely (a box is at least 38 px tall, so steps of 2 px cannot miss it).
fn crosses(p: (f64, f64), q: (f64, f64), r: Rect) -> bool {
    let len = ((q.0 - p.0).powi(2) + (q.1 - p.1).powi(2)).sqrt();
    let steps = (len / 2.0).ceil().max(1.0) as usize;
    (0..=steps).any(|s| {
        let t = s as f64 / steps as f64;
        inside((p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t), r)
    })
}

impl Geometry {
    /// Pairs of boxes that overlap.
    pub fn overlaps(&self) -> usize {
        let b = &self.boxes;
        (0..b.len())
            .flat_map(|i| (i + 1..b.len()).map(move |j| (i, j)))
            .filter(|&(i, j)| {
                b[i].0 < b[j].2 && b[j].0 < b[i].2 && b[i].1 < b[j].3 && b[j].1 < b[i].3
            })
            .count()
    }

    /// (edge, box) pairs where the edge passes through a box that is not
    /// one of its ends (the ends are the boxes containing its end points).
    pub fn crossings(&self) -> usize {
        let mut n = 0;
        for line in &self.edges {
            let (first, last) = (line[0], *line.last().unwrap());
            for &r in &self.boxes {
                let is_end = |p: (f64, f64)| p.0 >= r.0 && p.0 <= r.2 && p.1 >= r.1 && p.1 <= r.3;
                if is_end(first) || is_end(last) {
                    continue;
                }
                if line.windows(2).any(|s| crosses(s[0], s[1], r)) {
                    n += 1;
                }
            }
        }
        n
    }
}
