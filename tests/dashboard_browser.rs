//! The dashboard measured in a real browser: fixture fleets of 10 and 1,000
//! agents with faults (a silent site, silent agents, relays, stale, down and
//! one-sided links, external peers) are built into sites, served by nginx
//! with the shipped server block and opened in headless Chromium
//! (`tests/browser/dashboard.mjs`) at 1,440 × 900 and 390 × 844, light and
//! dark. Every page fits the viewport's width (only the scroll areas inside
//! a page may scroll sideways), the map and the matrix show a problem, and
//! no page logs an error. A second test reads the published JSON, SVG and
//! agent pages: nothing with a silent end is shown healthy.
//!
//! Needs nginx, chromium and node/npm; skips with the reason otherwise.

mod browser;
#[path = "../sitegen/tests/common/published.rs"]
mod published;

#[path = "../sitegen/tests/common/fixture.rs"]
mod fixture;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::Builder;
use serde_json::{json, Value};

/// The fixture fleet of `agents` with the site `silent_site` all silent,
/// built into `dir/site`; returns the directory of the published site.
fn site(dir: &Path, agents: usize, silent_site: usize) -> PathBuf {
    let db = dir.join("kattila.db");
    let spec =
        fixture::FleetSpec { silent_site: Some(silent_site), ..fixture::FleetSpec::new(agents) };
    fixture::create(&db, &spec);
    let conn = kattila_store::open_read_only(&db).unwrap();
    let out = dir.join("site");
    let mut builder =
        Builder::new(&out, Anon::new(&SiteKey::from_bytes([5; 32])), Default::default());
    builder.build(&conn, spec.now).unwrap();
    out
}

fn json_file(current: &Path, rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(current.join(rel)).unwrap()).unwrap()
}

/// The pages a reader goes through: the overview, problems, the fleet map,
/// the map of the cluster of the first silent agent, the matrix, alarms,
/// that agent's page and the JSON index.
fn pages(current: &Path) -> Vec<String> {
    let agents = json_file(current, "api/v1/agents.json");
    let silent = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "silent")
        .expect("the fixture has a silent agent")
        .clone();
    let cluster = format!("map/{}.html", silent["cluster"].as_str().unwrap());
    assert!(current.join(&cluster).is_file(), "{cluster}");
    ["index.html", "problems.html", "map.html", &cluster, "matrix.html", "alarms.html"]
        .iter()
        .map(|s| s.to_string())
        .chain([silent["page"].as_str().unwrap().to_string(), "data.html".to_string()])
        .collect()
}

/// Runs `dashboard.mjs` with `config` (the Chromium path is added).
fn run_dashboard(mut config: Value) -> Value {
    config["chromium"] = json!(browser::CHROMIUM);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(cfg.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the dashboard check could not run: {stdout}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("dashboard.mjs printed no JSON ({e}): {stdout}"))
}

const VIEWPORTS: &str = r#"[{"name": "desktop", "width": 1440, "height": 900},
                           {"name": "phone", "width": 390, "height": 844}]"#;

#[test]
fn pages_fit_the_screen_and_show_problems_in_chromium() {
    let test = "pages_fit_the_screen_and_show_problems_in_chromium";
    if let Some(reason) = browser::skip_reason() {
        return kattila_testsupport::skip(test, &reason);
    }
    let t = Instant::now();
    // 10 agents are two sites: the second silent. 1,000 agents: site 3.
    let dirs: Vec<(usize, tempfile::TempDir)> =
        [10, 1000].into_iter().map(|n| (n, tempfile::tempdir().unwrap())).collect();
    let mut servers = Vec::new();
    let mut sites = Vec::new();
    for (n, dir) in &dirs {
        let out = site(dir.path(), *n, if *n == 10 { 1 } else { 3 });
        let pages = pages(&out.join("current"));
        let nginx = browser::Nginx::start(&out);
        sites.push(json!({
            "label": n.to_string(),
            "url": nginx.url("/"),
            "pages": pages,
            "problem_pages": ["map.html", "matrix.html"],
        }));
        servers.push(nginx);
    }
    eprintln!("sites built and served in {:.1?}", t.elapsed());
    let artefacts = browser::artefact_dir("dashboard_browser");
    let report = run_dashboard(json!({
        // The moment the fixture describes, a minute after it was built:
        // pages read as a reader saw them then, without a staleness warning.
        "clock": fixture::FleetSpec::new(0).now + 60,
        "viewports": serde_json::from_str::<Value>(VIEWPORTS).unwrap(),
        "schemes": ["light", "dark"],
        "sites": sites,
        "screenshots": [
            {"site": "1000", "page": "map.html", "viewport": "phone", "scheme": "dark",
             "file": artefacts.join("1000-map-phone-dark.png")},
            {"site": "1000", "page": "matrix.html", "viewport": "desktop", "scheme": "light",
             "file": artefacts.join("1000-matrix-desktop-light.png")},
        ],
    }));
    eprintln!("measured in {:.1?}; screenshots in {}", t.elapsed(), artefacts.display());
    assert_eq!(report["errors"], json!([]), "the browser found errors");
    let measures = report["measures"].as_array().unwrap();
    // 2 sites × 2 viewports × 2 schemes × 8 pages.
    assert_eq!(measures.len(), 64, "{measures:?}");
    let mut failures = Vec::new();
    for m in measures {
        let what = format!("{}/{} at {} ({})", m["site"], m["page"], m["viewport"], m["scheme"]);
        let (width, scroll) = (m["width"].as_i64().unwrap(), m["scroll_width"].as_i64().unwrap());
        if scroll > width {
            failures.push(format!(
                "{what}: the page scrolls sideways ({scroll} px of {width}); too wide: {}",
                m["too_wide"]
            ));
        }
        if let Some(p) = m.get("problem") {
            // A problem is marked, and at least one mark is drawn (it has a
            // box on screen, not hidden or collapsed).
            if p["count"].as_i64().unwrap() == 0 || p["visible"].as_i64().unwrap() == 0 {
                failures.push(format!("{what}: no problem shown: {p}"));
            }
            // On a desktop screen the first one is in the first screenful.
            if m["viewport"] == "desktop" && p["top"].as_i64().is_none_or(|top| top > 900) {
                failures.push(format!("{what}: the first problem is below the fold: {p}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for shot in report["screenshots"].as_array().unwrap() {
        let len = std::fs::metadata(shot.as_str().unwrap()).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {shot} missing or empty");
    }
    eprintln!("{} page views fit and show their problems ({:.1?})", measures.len(), t.elapsed());
}

/// Hostnames of the silent agents and their page paths.
fn silent_agents(current: &Path) -> (HashSet<String>, HashSet<String>) {
    let agents = json_file(current, "api/v1/agents.json");
    let silent: Vec<&Value> =
        agents["agents"].as_array().unwrap().iter().filter(|a| a["status"] == "silent").collect();
    (
        silent.iter().map(|a| a["hostname"].as_str().unwrap().to_string()).collect(),
        silent.iter().map(|a| a["page"].as_str().unwrap().to_string()).collect(),
    )
}

/// Nothing with a silent end is shown healthy: not a link in
/// topology.json, not a peer in agents.json, not a line on a map, not a
/// peer row of an agent page. (The receiver stores them `unknown`; the
/// fixture stores them so; sitegen must show what is stored.)
#[test]
fn nothing_with_a_silent_end_is_shown_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let out = site(dir.path(), 1000, 3);
    let current = out.join("current");
    let agents =
        published::published_agents(&current).expect("agents.json and the per-agent files");
    let agents = agents["agents"].as_array().unwrap();
    let silent_ids: HashSet<&str> = agents
        .iter()
        .filter(|a| a["status"] == "silent")
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    // The whole site 3 and the fixture's scattered silent agents.
    assert!(silent_ids.len() >= 5 + 20, "{} silent", silent_ids.len());
    let mut failures = Vec::new();
    let (mut links, mut peers, mut lines, mut rows) = (0, 0, 0, 0);

    // JSON: links and peer entries.
    let topology = json_file(&current, "api/v1/topology.json");
    for l in topology["links"].as_array().unwrap() {
        // A relay link says a relay delivered a report, not that a tunnel works.
        if l["kind"] != "wireguard" {
            continue;
        }
        let ends = [l["a"].as_str().unwrap(), l["b"].as_str().unwrap()];
        if ends.iter().any(|e| silent_ids.contains(e)) {
            links += 1;
            if l["health"] == "healthy" {
                failures.push(format!("topology.json: healthy link with a silent end: {l}"));
            }
        }
    }
    for a in agents {
        let own_silent = silent_ids.contains(a["agent_id"].as_str().unwrap());
        for d in a["wireguard"].as_array().unwrap() {
            for p in d["peers"].as_array().unwrap() {
                let peer_silent =
                    p["peer_agent_id"].as_str().is_some_and(|id| silent_ids.contains(id));
                if own_silent || peer_silent {
                    peers += 1;
                    if p["health"] == "healthy" {
                        failures.push(format!(
                            "agents.json: {} lists a healthy peer with a silent end: {p}",
                            a["hostname"]
                        ));
                    }
                }
            }
        }
    }

    // SVG: agent-to-agent lines on the cluster maps, named in their titles
    // "wireguard A — B[ (in …)]: health, …".
    let (silent_hosts, silent_pages) = silent_agents(&current);
    for entry in std::fs::read_dir(current.join("map")).unwrap() {
        let path = entry.unwrap().path();
        let html = std::fs::read_to_string(&path).unwrap();
        for (at, _) in html.match_indices("class=\"edge wireguard ") {
            let class = &html[at + 7..at + 7 + html[at + 7..].find('"').unwrap()];
            // A line of the map has its title inside; the legend's lines have none.
            let rest = &html[at + html[at..].find('>').unwrap() + 1..];
            let Some(title) = rest.strip_prefix("<title>") else { continue };
            let title = &title[..title.find("</title>").unwrap()];
            let Some(pair) = title.strip_prefix("wireguard ") else { continue };
            let pair = &pair[..pair.find(": ").unwrap()];
            let pair = pair.split(" (in ").next().unwrap();
            let Some((a, b)) = pair.split_once(" — ") else { continue };
            if silent_hosts.contains(a) || silent_hosts.contains(b) {
                lines += 1;
                if class.split_whitespace().any(|c| c == "healthy") || title.contains(": healthy") {
                    failures.push(format!(
                        "{}: a healthy line with a silent end: {title}",
                        path.display()
                    ));
                }
            }
        }
    }

    // HTML: the peer rows of every agent page.
    for a in agents {
        let page = a["page"].as_str().unwrap();
        let own_silent = silent_pages.contains(page);
        let html = std::fs::read_to_string(current.join(page)).unwrap();
        let wg = &html[html.find("<h2>WireGuard</h2>").unwrap()..];
        let wg = &wg[..wg.find("<h2>Routes</h2>").unwrap()];
        for row in wg.split("<tr>").skip(1) {
            let Some(th) = row.find("<th scope=\"row\">") else { continue };
            let peer_silent = silent_pages.iter().any(|p| row[th..].contains(&format!("/{p}\"")));
            if own_silent || peer_silent {
                rows += 1;
                if row.contains("class=\"health healthy\"") {
                    failures.push(format!("{page}: a healthy peer row with a silent end: {row}"));
                }
            }
        }
    }
    eprintln!(
        "with a silent end: {links} links, {peers} peer entries, {lines} map lines, {rows} peer rows"
    );
    // Enough of each was looked at for the check to mean something.
    assert!(links > 25 && peers > 50 && lines > 25 && rows > 50, "{links} {peers} {lines} {rows}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
