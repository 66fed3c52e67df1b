//! The matrix pages on fixture fleets with faults: every link's health by
//! colour class and text mark, silent agents' rows and columns marked,
//! natural order, cluster cells that lead to the agent matrix of their
//! pair, a bounded number of pair pages, and well-formed tables.

#[allow(dead_code)] // geometry is for the map tests
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::fixture::{self, FleetSpec};
use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::Builder;
use kattila_store::open_read_only;
use serde_json::Value;

const NOW: i64 = 1_767_225_600;

/// A fixture fleet of `spec` with `sql` applied, built into `dir/site`;
/// returns the published site's directory.
fn site(dir: &Path, spec: &FleetSpec, sql: &str) -> PathBuf {
    let db = dir.join("kattila.db");
    fixture::create(&db, spec);
    if !sql.is_empty() {
        rusqlite::Connection::open(&db).unwrap().execute_batch(sql).unwrap();
    }
    let out = dir.join("site");
    let conn = open_read_only(&db).unwrap();
    Builder::new(&out, Anon::new(&SiteKey::from_bytes([42; 32])), Default::default())
        .build(&conn, NOW)
        .unwrap();
    out.join("current")
}

fn read(cur: &Path, path: &str) -> String {
    std::fs::read_to_string(cur.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(cur: &Path, path: &str) -> Value {
    serde_json::from_str(&read(cur, path)).unwrap()
}

/// The value of attribute `name` in the start tag `tag` ("" when absent).
fn attr(tag: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    tag.find(&key)
        .map(|at| {
            let rest = &tag[at + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .unwrap_or_default()
}

/// The text of `html` without its tags, entities of `<`, `>` and `&`
/// decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A cell or heading: its start tag and what is inside it.
#[derive(Debug, Clone)]
struct Piece {
    tag: String,
    inner: String,
}

impl Piece {
    fn class(&self) -> String {
        attr(&self.tag, "class")
    }

    fn title(&self) -> String {
        attr(&self.tag, "title")
    }

    fn has_class(&self, c: &str) -> bool {
        self.class().split(' ').any(|x| x == c)
    }
}

/// One matrix table of a page.
#[derive(Debug)]
struct Table {
    cols: Vec<Piece>,
    /// (the row's `<tr>` start tag, its heading, its cells)
    rows: Vec<(String, Piece, Vec<Piece>)>,
}

/// The elements `<name …>…</name>` directly in `html` (none nested in
/// another of the same name, which tables here never do).
fn elements(html: &str, name: &str) -> Vec<Piece> {
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        if !after.starts_with([' ', '>']) {
            rest = after;
            continue;
        }
        let tag_end = at + rest[at..].find('>').unwrap() + 1;
        let end = tag_end + rest[tag_end..].find(&close).unwrap();
        out.push(Piece { tag: rest[at..tag_end].to_string(), inner: rest[tag_end..end].into() });
        rest = &rest[end + close.len()..];
    }
    out
}

/// The tables of class `matrix` on a page.
fn matrices(html: &str) -> Vec<Table> {
    elements(html, "table")
        .into_iter()
        .filter(|t| t.has_class("matrix"))
        .map(|t| {
            let head = &elements(&t.inner, "thead")[0].inner;
            let cols = elements(head, "th");
            let body = &elements(&t.inner, "tbody")[0].inner;
            let rows = elements(body, "tr")
                .into_iter()
                .map(|tr| {
                    let th = elements(&tr.inner, "th").remove(0);
                    (tr.tag.clone(), th, elements(&tr.inner, "td"))
                })
                .collect();
            Table { cols, rows }
        })
        .collect()
}

/// Elements that never have an end tag.
const VOID: &[&str] = &["meta", "link", "br", "img", "input", "hr", "col", "wbr", "source"];

/// Checks that `html` is well formed as the templates write it: every
/// element closed, in order (no unclosed table, row or cell), cells only
/// in rows, rows only in tables, no link inside a link, every attribute
/// value quoted and no stray `<` or `>` in text.
fn check_structure(path: &str, html: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    let mut text_at = 0usize;
    while let Some(lt) = rest.find('<') {
        assert!(!rest[..lt].contains('>'), "{path}: stray '>' in text near byte {text_at}");
        let tail = &rest[lt..];
        if tail.starts_with("<!--") {
            let end = tail.find("-->").expect("closed comment") + 3;
            rest = &tail[end..];
            continue;
        }
        let gt = tail.find('>').unwrap_or_else(|| panic!("{path}: unclosed tag"));
        let tag = &tail[..=gt];
        assert!(!tag[1..].contains('<'), "{path}: '<' inside the tag {tag}");
        assert_eq!(tag.matches('"').count() % 2, 0, "{path}: unbalanced quotes in {tag}");
        text_at += lt + gt + 1;
        rest = &tail[gt + 1..];
        if tag.starts_with("<!") {
            continue; // doctype
        }
        let name: String = tag
            .trim_start_matches("</")
            .trim_start_matches('<')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        assert!(!name.is_empty(), "{path}: a '<' that starts no tag: {tag}");
        if tag.starts_with("</") {
            let open = stack.pop().unwrap_or_else(|| panic!("{path}: {tag} closes nothing"));
            assert_eq!(open, name, "{path}: <{open}> closed by {tag} (open: {stack:?})");
        } else if !VOID.contains(&name.as_str()) && !tag.ends_with("/>") {
            let parent = stack.last().map(String::as_str).unwrap_or("");
            match name.as_str() {
                "td" | "th" => assert_eq!(parent, "tr", "{path}: <{name}> outside a row"),
                "tr" => assert!(
                    ["thead", "tbody", "table"].contains(&parent),
                    "{path}: <tr> in <{parent}>"
                ),
                "a" => assert!(!stack.iter().any(|t| t == "a"), "{path}: a link in a link"),
                _ => {}
            }
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "{path}: not closed: {stack:?}");
}

/// Hostname → agent id, agent id → (hostname, cluster id, status).
fn agents(cur: &Path) -> HashMap<String, (String, String, String)> {
    json(cur, "api/v1/agents.json")["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            (s("agent_id"), (s("hostname"), s("cluster"), s("status")))
        })
        .collect()
}

/// WireGuard links between two agents with health `health`: (a, b) ids.
fn links_with(cur: &Path, health: &str) -> Vec<(String, String)> {
    json(cur, "api/v1/topology.json")["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "wireguard" && l["b"] != "" && l["health"] == health)
        .map(|l| (l["a"].as_str().unwrap().to_string(), l["b"].as_str().unwrap().to_string()))
        .collect()
}

/// The cell of `table` in the row titled `row` and the column titled
/// `col` (titles start with the whole name).
fn cell<'t>(table: &'t Table, row: &str, col: &str) -> &'t Piece {
    let named = |p: &Piece, name: &str| {
        let t = p.title();
        t == name || t.starts_with(&format!("{name}:"))
    };
    let c = table.cols.iter().position(|p| named(p, col)).unwrap_or_else(|| panic!("column {col}"));
    let (_, _, cells) =
        table.rows.iter().find(|(_, th, _)| named(th, row)).unwrap_or_else(|| panic!("row {row}"));
    &cells[c]
}

#[test]
fn agent_matrix_shows_health_direction_and_silent_agents() {
    let dir = tempfile::tempdir().unwrap();
    let cur = site(dir.path(), &FleetSpec::new(40), "");
    let html = read(&cur, "matrix.html");
    check_structure("matrix.html", &html);
    let tables = matrices(&html);
    assert_eq!(tables.len(), 1, "one agent matrix for a fleet of 40");
    let m = &tables[0];
    assert_eq!((m.rows.len(), m.cols.len()), (40, 40));
    let agents = agents(&cur);
    let host = |id: &str| agents[id].0.clone();

    // Every health the fleet has is in a cell by class and by mark, in
    // both halves of the square.
    for (health, mark) in [("down", "✕"), ("stale", "◐"), ("healthy", "●")] {
        let links = links_with(&cur, health);
        assert!(!links.is_empty(), "the fixture has {health} links");
        for (a, b) in &links {
            for (r, c) in [(a, b), (b, a)] {
                let td = cell(m, &host(r), &host(c));
                assert!(td.has_class(&format!("health-{health}")), "{health}: {td:?}");
                assert!(td.inner.starts_with(&format!("<b class=\"mk\">{mark}</b> ")), "{td:?}");
                assert!(td.title().contains(&format!(": {health};")), "{td:?}");
            }
        }
    }
    // Colour is never the only signal: the marks that appear are
    // explained, and no other.
    let legend = &elements(&html, "ul").into_iter().find(|u| u.has_class("matrix-legend")).unwrap();
    let legend = text(&legend.inner);
    // (The silent agent's links are unknown, as the receiver stores them.)
    for want in [
        "✕ down",
        "◐ stale",
        "● healthy",
        "? unknown",
        "⇄ both ends",
        "→ only the row's",
        "✕ silent",
    ] {
        assert!(legend.contains(want), "legend lacks {want}: {legend}");
    }
    assert!(!legend.contains("relay"), "{legend}");

    // The silent agent (the fixture's 37th) is marked in its row and its
    // column: class, mark and word.
    let silent: Vec<&String> = agents.values().filter(|a| a.2 == "silent").map(|a| &a.0).collect();
    assert_eq!(silent.len(), 1);
    let (tr, th, cells) =
        m.rows.iter().find(|(_, th, _)| th.title().starts_with(silent[0])).unwrap();
    assert_eq!(attr(tr, "class"), "silent");
    assert!(text(&th.inner).ends_with("✕ silent"), "{th:?}");
    let col = m.cols.iter().position(|c| c.title().starts_with(silent[0])).unwrap();
    assert!(m.cols[col].has_class("silent") && text(&m.cols[col].inner).contains("✕ silent"));
    for (_, _, cells) in &m.rows {
        assert!(cells[col].has_class("col-silent") || cells[col].has_class("self"));
    }
    assert!(cells.iter().any(|c| c.class().contains("health-")), "its links are still shown");
}

#[test]
fn agents_and_clusters_are_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    // Names whose text order is not their natural order.
    let cur = site(
        dir.path(),
        &FleetSpec::new(30),
        "UPDATE agents SET hostname = 'host' || ((rowid * 7) % 30) || '-x'",
    );
    let html = read(&cur, "matrix.html");
    let m = &matrices(&html)[0];
    let number = |p: &Piece| -> u32 {
        let t = p.title();
        t["host".len()..t.find('-').unwrap()].parse().unwrap()
    };
    let rows: Vec<u32> = m.rows.iter().map(|(_, th, _)| number(th)).collect();
    let cols: Vec<u32> = m.cols.iter().map(number).collect();
    assert_eq!(rows, (0..30).collect::<Vec<_>>(), "host2 before host10");
    assert_eq!(cols, rows);

    // Clusters: their labels (anonymised networks) in natural order.
    let dir = tempfile::tempdir().unwrap();
    let cur = site(dir.path(), &FleetSpec::new(100), "");
    let m = &matrices(&read(&cur, "matrix.html"))[0];
    let labels: Vec<String> = m.cols.iter().map(|p| p.title()).collect();
    let key = |l: &str| -> Vec<u32> {
        l.split(':').next().unwrap().split(['.', '/']).map(|n| n.parse().unwrap()).collect()
    };
    let mut sorted = labels.clone();
    sorted.sort_by_key(|l| key(l));
    assert_eq!(labels, sorted, "clusters sorted by the numbers of their networks");
    let rows: Vec<String> = m.rows.iter().map(|(_, th, _)| th.title()).collect();
    assert_eq!(rows, labels);
}

#[test]
fn cluster_cells_show_the_worst_health_and_lead_to_the_pair() {
    let dir = tempfile::tempdir().unwrap();
    let cur = site(dir.path(), &FleetSpec::new(100), "");
    let html = read(&cur, "matrix.html");
    check_structure("matrix.html", &html);
    let m = &matrices(&html)[0];
    assert_eq!((m.rows.len(), m.cols.len()), (20, 20), "a grid of the 20 clusters");
    let agents = agents(&cur);
    let summary = json(&cur, "api/v1/summary.json");
    let label: HashMap<String, String> = summary["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().into(), c["label"].as_str().unwrap().into()))
        .collect();
    let down: Vec<_> =
        links_with(&cur, "down").into_iter().filter(|(a, b)| agents[a].1 != agents[b].1).collect();
    assert!(!down.is_empty(), "the fixture has a down link between clusters");
    let all_links: Vec<(String, String)> = ["healthy", "stale", "never", "down", "unknown"]
        .iter()
        .flat_map(|h| links_with(&cur, h))
        .collect();
    for (a, b) in &down {
        let (ca, cb) = (&agents[a].1, &agents[b].1);
        for (r, c) in [(ca, cb), (cb, ca)] {
            let td = cell(m, &label[r], &label[c]);
            assert!(td.has_class("health-down"), "{td:?}");
            let inner = text(&td.inner);
            assert!(inner.starts_with("✕ ") && inner.contains(" down"), "{inner}");
            assert!(td.title().contains(" down"), "{td:?}");
            // The cell leads to the agent matrix of the pair: rows one
            // cluster's agents, columns the other's, with the down link.
            let href = attr(&elements(&td.inner, "a")[0].tag, "href");
            assert!(href.starts_with("matrix/") && href.ends_with(".html"), "{href}");
            let pair_html = read(&cur, &href);
            check_structure(&href, &pair_html);
            let pair = &matrices(&pair_html)[0];
            // Rows and columns: the agents of each cluster with a link to
            // the other, whatever its health.
            let members = |cl: &str, other: &str| -> Vec<String> {
                let mut v: Vec<String> = all_links
                    .iter()
                    .flat_map(|(x, y)| [(x, y), (y, x)])
                    .filter(|(x, y)| agents[*x].1 == cl && agents[*y].1 == other)
                    .map(|(x, _)| agents[x].0.clone())
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            let mut rows: Vec<String> = pair
                .rows
                .iter()
                .map(|(_, th, _)| th.title().split(':').next().unwrap().into())
                .collect();
            let mut cols: Vec<String> =
                pair.cols.iter().map(|p| p.title().split(':').next().unwrap().into()).collect();
            rows.sort();
            cols.sort();
            let (x, y) = (members(ca, cb), members(cb, ca));
            let everyone = |cl: &str| agents.values().filter(|a| a.1 == cl).count();
            assert!(
                x.len() < everyone(ca) || y.len() < everyone(cb),
                "{href}: a pair linked by all"
            );
            assert!(
                (rows == x && cols == y) || (rows == y && cols == x),
                "{href}: {rows:?} × {cols:?}"
            );
            let (ra, rb) = if rows == x { (a, b) } else { (b, a) };
            let td = cell(pair, &agents[ra].0, &agents[rb].0);
            assert!(td.has_class("health-down") && td.inner.contains("✕"), "{href}: {td:?}");
            assert!(pair_html.contains(&format!(
                "href=\"../{}#matrix\"",
                summary["clusters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["id"] == ca.as_str())
                    .unwrap()["page"]
                    .as_str()
                    .unwrap()
            )));
        }
    }
    // The diagonal leads to each cluster's own matrix, which lists its
    // agents and marks its silent one.
    let (_, th, cells) = &m.rows[0];
    let own = &cells[0]; // rows and columns in one order
    assert!(own.has_class("inside"), "{own:?}");
    let href = attr(&elements(&own.inner, "a")[0].tag, "href");
    assert!(href.ends_with("#matrix"));
    assert_eq!(href, attr(&elements(&th.inner, "a")[0].tag, "href"));
    for page in std::fs::read_dir(cur.join("map")).unwrap() {
        let path = page.unwrap().path();
        let html = std::fs::read_to_string(&path).unwrap();
        check_structure(&path.display().to_string(), &html);
        assert_eq!(matrices(&html).len(), 1, "{}: its agent matrix", path.display());
    }
    let silent_cluster = std::fs::read_dir(cur.join("map"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|h| h.contains("<tr class=\"silent\">"));
    assert!(silent_cluster.is_some_and(|h| h.contains("✕ silent</span></th>")));
}

#[test]
fn many_clusters_list_those_with_problems_and_bound_the_pair_pages() {
    let dir = tempfile::tempdir().unwrap();
    let cur =
        site(dir.path(), &FleetSpec { samples: 2, resolved_alarms: 0, ..FleetSpec::new(1000) }, "");
    let html = read(&cur, "matrix.html");
    check_structure("matrix.html", &html);
    let summary = json(&cur, "api/v1/summary.json");
    let clusters = summary["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 200);
    let problems = clusters.iter().filter(|c| c["health"] != "ok").count();
    let table = elements(&html, "table").into_iter().find(|t| t.has_class("problems")).unwrap();
    let rows = elements(&elements(&table.inner, "tbody")[0].inner, "tr");
    // The 100 most urgent in full, the others named in a list below, so
    // that the page stays small however many clusters have problems.
    assert!(problems > 100, "the fixture has {problems} clusters with problems");
    assert_eq!(rows.len(), 100, "the most urgent clusters have a row");
    let more = elements(&html, "ul").into_iter().find(|u| u.has_class("more-clusters")).unwrap();
    let named = elements(&more.inner, "a");
    assert_eq!(named.len(), problems - 100, "every other cluster with a problem is named");
    assert!(html.contains(&format!("{} more clusters with problems", problems - 100)));
    for a in &named {
        let href = attr(&a.tag, "href");
        assert!(cur.join(href.split('#').next().unwrap()).is_file(), "{href}");
    }
    assert!(html.len() < 200_000, "matrix.html is {} bytes", html.len());
    assert!(
        html.contains(&format!("<strong>{} clusters are not shown", clusters.len() - problems)),
        "says how many healthy clusters are left out"
    );
    // Critical clusters first.
    let classes: Vec<String> = rows.iter().map(|r| r.class()).collect();
    let first_warning = classes.iter().position(|c| c == "warning").unwrap();
    assert!(classes[..first_warning].iter().all(|c| c == "critical"));
    assert!(classes[first_warning..].iter().all(|c| c != "critical"));
    // Pair pages only for pairs of clusters with a link not healthy, and
    // every cell of a pair with one leads to its page.
    let pair_pages = std::fs::read_dir(cur.join("matrix")).unwrap().count();
    let agents = agents(&cur);
    let mut unhealthy_pairs = std::collections::BTreeSet::new();
    for h in ["down", "stale", "unknown"] {
        for (a, b) in links_with(&cur, h) {
            let (x, y) = (agents[&a].1.clone(), agents[&b].1.clone());
            if x != y {
                unhealthy_pairs.insert((x.clone().min(y.clone()), x.max(y)));
            }
        }
    }
    assert_eq!(pair_pages, unhealthy_pairs.len());
    for link in elements(&table.inner, "a").iter().filter(|a| a.has_class("pair")) {
        let href = attr(&link.tag, "href");
        let file = href.split('#').next().unwrap();
        assert!(cur.join(file).is_file(), "{href}");
        if !link.has_class("health-healthy") && !link.has_class("inside") {
            assert!(href.starts_with("matrix/"), "{href}");
        }
    }
}
