//! Whole-site tests on fixture databases: anonymisation, schemas, hostile
//! strings, atomic publishing, layout cache, alarm pages, snapshots, git.

mod common;

use std::path::{Path, PathBuf};

use common::fixture::{self, FleetSpec};
use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::{BuildReport, Builder};
use kattila_store::open_read_only;

const NOW: i64 = 1_767_225_600;

fn key() -> SiteKey {
    SiteKey::from_bytes([42; 32])
}

fn builder(out: &Path, anon: Anon) -> Builder {
    Builder::new(out, anon, Default::default())
}

fn fixture(dir: &Path, spec: &FleetSpec) -> (PathBuf, fixture::Fixture) {
    let db = dir.join("kattila.db");
    let fx = fixture::create(&db, spec);
    (db, fx)
}

fn build(db: &Path, out: &Path, anon: Anon) -> BuildReport {
    let conn = open_read_only(db).unwrap();
    builder(out, anon).build(&conn, NOW).unwrap()
}

/// Every published file: (path relative to the site root, contents).
fn site_files(out: &Path) -> Vec<(String, String)> {
    let root = std::fs::canonicalize(out.join("current")).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                files.push((rel, String::from_utf8(std::fs::read(e.path()).unwrap()).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn hits(files: &[(String, String)], fx: &fixture::Fixture) -> Vec<String> {
    let mut found = Vec::new();
    for addr in &fx.addresses {
        for form in fixture::textual_forms(addr) {
            for (path, text) in files {
                if let Some(at) = fixture::find_standalone(text, &form) {
                    let mut lo = at.saturating_sub(30);
                    while !text.is_char_boundary(lo) {
                        lo -= 1;
                    }
                    let mut hi = (at + form.len() + 30).min(text.len());
                    while !text.is_char_boundary(hi) {
                        hi += 1;
                    }
                    let ctx = &text[lo..hi];
                    found.push(format!("{form} in {path}: …{ctx}…"));
                }
            }
        }
    }
    for mac in &fx.macs {
        for form in [mac.clone(), mac.to_uppercase()] {
            for (path, text) in files {
                if text.contains(&form) {
                    found.push(format!("{form} in {path}"));
                }
            }
        }
    }
    found
}

#[test]
fn no_raw_address_reaches_any_published_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { hostile: true, resolved_alarms: 40, ..FleetSpec::new(60) };
    let (db, fx) = fixture(dir.path(), &spec);
    assert!(fx.addresses.len() > 150, "the fixture has addresses to find");

    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let files = site_files(&out);
    assert!(files.len() > 60);
    let found = hits(&files, &fx);
    assert!(found.is_empty(), "raw addresses published:\n{}", found.join("\n"));
    // Addresses that name no host are shown as what they are.
    assert!(
        files.iter().any(|(_, text)| text.contains("<code>127.0.0.1/8</code>")),
        "loopback is shown as loopback"
    );

    // The scan does find them when addresses are revealed.
    let open = dir.path().join("open");
    build(&db, &open, Anon::reveal());
    let found = hits(&site_files(&open), &fx);
    assert!(found.len() > fx.addresses.len(), "the scanner is blind: {}", found.len());
}

#[test]
fn pseudonyms_are_stable_for_a_key_and_keep_subnets() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = fixture(dir.path(), &FleetSpec::new(10));
    let read = |out: &Path| {
        let v = common::published::published_agents(&out.join("current")).unwrap();
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let eth = a["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["kind"] == "ether")
                    .unwrap();
                eth["addresses"][0].as_str().unwrap().to_string()
            })
            .collect::<Vec<_>>()
    };
    build(&db, &dir.path().join("a"), Anon::new(&key()));
    build(&db, &dir.path().join("b"), Anon::new(&key()));
    build(&db, &dir.path().join("c"), Anon::new(&SiteKey::from_bytes([1; 32])));
    let (a, b, c) =
        (read(&dir.path().join("a")), read(&dir.path().join("b")), read(&dir.path().join("c")));
    assert_eq!(a, b, "same key, same pseudonyms");
    assert_ne!(a, c, "another key, other pseudonyms");
    // Agents 0..5 share a /24, 5..10 another: prefixes survive.
    let net = |s: &str| s.rsplit_once('.').unwrap().0.to_string();
    assert!(a[..5].iter().all(|x| net(x) == net(&a[0])), "{a:?}");
    assert_ne!(net(&a[0]), net(&a[5]));
    assert!(a.iter().all(|x| x.ends_with("/24")));
}

/// Agent status, link health and whether both ends list each other are the
/// receiver's: the site shows them as stored and decides none of them again.
#[test]
fn statuses_and_links_are_shown_as_the_receiver_stored_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db, fx) = fixture(dir.path(), &FleetSpec::new(10));
    let ids = &fx.agent_ids;
    let rw = rusqlite::Connection::open(&db).unwrap();
    let edge = "kind = 'wireguard' AND a_agent = min(?1, ?2) AND b_agent = max(?1, ?2)";
    let mutual: bool = rw
        .query_row(
            &format!("SELECT both_ends FROM topology_edges WHERE {edge}"),
            [&ids[0], &ids[1]],
            |r| r.get(0),
        )
        .unwrap();
    assert!(mutual, "the fixture's gateway and first node list each other");
    // Heard from a day ago, yet up: the receiver's interval is what says
    // when an agent is silent, not sitegen's clock.
    rw.execute(
        "UPDATE agents SET last_seen = ?1, status = 'up' WHERE agent_id = ?2",
        rusqlite::params![NOW - 86_400, ids[1]],
    )
    .unwrap();
    rw.execute(
        "UPDATE agents SET last_seen = ?1, status = 'silent' WHERE agent_id = ?2",
        rusqlite::params![NOW, ids[2]],
    )
    .unwrap();
    rw.execute(
        &format!("UPDATE topology_edges SET both_ends = 0, health = 'stale' WHERE {edge}"),
        [&ids[0], &ids[1]],
    )
    .unwrap();
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("current").join(p)).unwrap())
            .unwrap()
    };
    let agents = common::published::published_agents(&out.join("current")).unwrap();
    let agent = |id: &str| {
        agents["agents"].as_array().unwrap().iter().find(|a| a["agent_id"] == id).unwrap().clone()
    };
    assert_eq!(agent(&ids[1])["status"], "up");
    assert_eq!(agent(&ids[2])["status"], "silent");
    for (from, to) in [(&ids[0], &ids[1]), (&ids[1], &ids[0])] {
        let a = agent(from);
        let peer = a["wireguard"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["peers"].as_array().unwrap())
            .find(|p| p["peer_agent_id"] == to.as_str())
            .unwrap()
            .clone();
        assert_eq!(peer["mutual"], false, "the stored link says one end only: {peer}");
    }
    let topology = json("api/v1/topology.json");
    let link = topology["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["kind"] == "wireguard"
                && [&l["a"], &l["b"]].contains(&&serde_json::json!(ids[0]))
                && [&l["a"], &l["b"]].contains(&&serde_json::json!(ids[1]))
        })
        .unwrap()
        .clone();
    assert_eq!(
        (&link["health"], &link["both_ends"]),
        (&serde_json::json!("stale"), &serde_json::json!(false))
    );
    let summary = &json("api/v1/summary.json")["summary"];
    assert!(
        summary["links_one_sided"].as_u64() >= Some(1)
            && summary["links_stale"].as_u64() >= Some(1)
    );
}

#[test]
fn every_json_file_validates_against_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { hostile: true, ..FleetSpec::new(30) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let root = out.join("current/api/v1");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let mut compiled = std::collections::HashMap::new();
    for (file, schema_name) in kattila_sitegen::api::FILES {
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("schema").join(schema_name)).unwrap())
                .unwrap();
        let url = schema["$id"].as_str().unwrap().to_string();
        if !compiled.contains_key(&url) {
            compiler.add_resource(&url, schema).unwrap();
            let idx = compiler.compile(&url, &mut schemas).unwrap();
            compiled.insert(url.clone(), idx);
        }
        let path = out.join("current").join(file);
        let instance: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if let Err(e) = schemas.validate(&instance, compiled[&url]) {
            panic!("{file} does not match {schema_name}: {e:#}");
        }
        if file.ends_with(".json") {
            assert_eq!(instance["schema_version"], 2, "{file}");
            // The schema really constrains: a missing field is refused.
            let mut broken = instance.clone();
            broken.as_object_mut().unwrap().remove("generated_at");
            assert!(
                schemas.validate(&broken, compiled[&url]).is_err(),
                "{file}: schema accepts anything"
            );
        }
    }
    // Every agent's own file, named by the index, matches its schema, and
    // no other file is in the folder.
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("schema").join(kattila_sitegen::api::AGENT_DETAIL_SCHEMA))
            .unwrap(),
    )
    .unwrap();
    let url = schema["$id"].as_str().unwrap().to_string();
    compiler.add_resource(&url, schema).unwrap();
    let detail_schema = compiler.compile(&url, &mut schemas).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("agents.json")).unwrap()).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for agent in index["agents"].as_array().unwrap() {
        let rel = agent["detail"].as_str().unwrap();
        let detail: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("current").join(rel)).unwrap()).unwrap();
        if let Err(e) = schemas.validate(&detail, detail_schema) {
            panic!("{rel} does not match agent.schema.json: {e:#}");
        }
        assert_eq!(detail["agent_id"], agent["agent_id"], "{rel}");
        let mut broken = detail.clone();
        broken.as_object_mut().unwrap().remove("wireguard");
        assert!(
            schemas.validate(&broken, detail_schema).is_err(),
            "{rel}: schema accepts anything"
        );
        named.insert(rel.to_string());
    }
    let present: std::collections::BTreeSet<String> = std::fs::read_dir(root.join("agents"))
        .unwrap()
        .map(|e| format!("api/v1/agents/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(named.len(), 30);
    assert_eq!(named, present, "one file per agent, each named by the index");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["summary"]["agents_total"], 30);
    let netjson: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("topology.netjson")).unwrap()).unwrap();
    assert_eq!(netjson["type"], "NetworkGraph");
    let ids: std::collections::HashSet<&str> =
        netjson["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    for l in netjson["links"].as_array().unwrap() {
        assert!(
            ids.contains(l["source"].as_str().unwrap())
                && ids.contains(l["target"].as_str().unwrap()),
            "dangling link {l}"
        );
    }
}

#[test]
fn hostile_strings_are_escaped_and_never_name_files() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { hostile: true, ..FleetSpec::new(12) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let files = site_files(&out);
    for (path, text) in &files {
        assert!(
            path.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
                && !path.contains(".."),
            "unsafe file name {path:?}"
        );
        if path.ends_with(".html") || path.ends_with(".svg") {
            for bad in ["<script>alert", "<img src=x", "<b>\u{7}", "<i>"] {
                assert!(!text.contains(bad), "{path} contains raw {bad:?}");
            }
        }
    }
    // Nothing was written outside the build.
    assert!(!dir.path().join("etc").exists());
    let index = &files.iter().find(|(p, _)| p == "index.html").unwrap().1;
    assert!(
        index.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "hostname shown escaped"
    );
    assert!(index.contains(&"Ωmega-ノード-".repeat(14)), "long non-ASCII hostname shown whole");
    // The agent whose id is not a plain name gets a hashed page, linked.
    let evil = files
        .iter()
        .find(|(_, t)| t.contains("<code>Evil..Agent-ID</code>") && t.contains("<h1>"))
        .map(|(p, _)| p.clone());
    let evil = evil.expect("page of the agent with a mixed-case id");
    assert!(evil.starts_with("agents/id-"), "{evil}");
    assert!(index.contains(&format!("href=\"{evil}\"")));
    // JSON stays valid and carries the hostile strings as data.
    let agents: serde_json::Value =
        serde_json::from_str(&files.iter().find(|(p, _)| p == "api/v1/agents.json").unwrap().1)
            .unwrap();
    assert_eq!(agents["agents"].as_array().unwrap().len(), 12);
    assert!(agents.to_string().contains("<script>alert('x')</script>"));
}

/// How a page shows a hidden character, as docs/sitegen.md describes it:
/// a Control Picture for C0 controls and DEL, else the code point.
fn mark(c: char) -> String {
    match c as u32 {
        n @ 0..=0x1f => char::from_u32(0x2400 + n).unwrap().to_string(),
        0x7f => "␡".to_string(),
        n => format!("⟨U+{n:04X}⟩"),
    }
}

const FSI: char = '\u{2068}';
const PDI: char = '\u{2069}';

#[test]
fn hidden_characters_are_shown_and_agent_text_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { hostile: true, ..FleetSpec::new(12) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let files = site_files(&out);
    let (json, pages): (Vec<_>, Vec<_>) =
        files.iter().partition(|(p, _)| p.ends_with(".json") || p.ends_with(".netjson"));
    assert!(pages.len() > spec.agents, "{} pages", pages.len());

    // No hidden character reaches any page raw, and the only bidi controls
    // left are the isolates that wrap agent text, in pairs.
    let marks: String = fixture::HIDDEN.iter().map(|&c| mark(c)).collect();
    let shown = |what: &str| format!("{what}-{marks}-שרת");
    for (path, text) in &pages {
        for (n, line) in text.lines().enumerate() {
            let bad: Vec<char> = line
                .chars()
                .filter(|&c| {
                    fixture::HIDDEN.contains(&c)
                        || (c.is_control() && c != '\t')
                        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}' | '\u{2067}' | '\u{feff}')
                })
                .collect();
            assert!(bad.is_empty(), "{path}:{}: raw {bad:?} in {line:?}", n + 1);
            let mut depth = 0i32;
            for c in line.chars() {
                depth += match c {
                    FSI => 1,
                    PDI => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "{path}:{}: PDI without FSI in {line:?}", n + 1);
            }
            assert_eq!(depth, 0, "{path}:{}: FSI left open in {line:?}", n + 1);
        }
        // Every agent string that has a direction of its own is isolated:
        // its right-to-left word is inside an FSI … PDI pair, with the
        // marks of the hidden characters before it.
        for (at, _) in text.match_indices("-שרת") {
            let context = &text[text[..at].rfind('\n').unwrap_or(0)..at];
            let open =
                text[..at].rfind(FSI).unwrap_or_else(|| panic!("{path}: not isolated: {context}"));
            assert!(!text[open..at].contains(PDI), "{path}: not isolated: {context}");
            let close =
                text[at..].find(PDI).unwrap_or_else(|| panic!("{path}: not closed: {context}"));
            assert!(!text[at..at + close].contains(FSI), "{path}: not closed: {context}");
            assert!(text[open..at].ends_with(&format!("-{marks}")), "{path}: no marks: {context}");
        }
    }

    // The marks are there wherever the hidden agent's strings are shown.
    let page = |p: &str| &pages.iter().find(|(q, _)| q == p).unwrap_or_else(|| panic!("{p}")).1;
    let host = format!("{FSI}{}{PDI}", shown("host"));
    assert!(page("index.html").contains(&format!(">{host}</a>")), "hostname in the agent list");
    assert!(page("alarms.html").contains(&host), "hostname in the alarm log");
    let agent = page(&format!("agents/{}.html", fixture::agent_id(fixture::HIDDEN_AGENT)));
    assert!(agent.contains(&format!("<title>Kattila — {host}</title>")));
    assert!(agent.contains(&format!("<h1>{host}</h1>")));
    for what in ["0.1.0", "6.1.0-28-amd64", "netlink", "no route", "ether", "up"] {
        assert!(agent.contains(&format!("{FSI}{}{PDI}", shown(what))), "{what}");
    }
    let (eth, wg) = (shown("eth0"), shown("wg0"));
    assert!(agent.contains(&format!("<th scope=\"row\">{FSI}{eth}{PDI}</th>")), "interface name");
    assert!(agent.contains(&format!("<td>{FSI}{eth}{PDI}</td>")), "route device");
    // The WireGuard device's key and port follow its isolated name.
    assert!(agent.contains(&format!("<caption>{FSI}{wg}{PDI} — key <code>")), "device caption");
    assert!(
        page("alarms.html").contains(&format!("<td class=\"subject\">{FSI}{eth}{PDI}</td>")),
        "alarm subject"
    );
    // The maps' titles name the host, isolated within the sentence.
    assert!(
        pages.iter().any(|(p, t)| p.starts_with("map/")
            && t.contains(&format!(
                "<title>{host} ({})",
                fixture::agent_id(fixture::HIDDEN_AGENT)
            ))),
        "map node title"
    );

    // JSON is for programs: it keeps the strings as reported (JSON escapes
    // the C0 controls itself).
    let agents: serde_json::Value =
        serde_json::from_str(&json.iter().find(|(p, _)| p == "api/v1/agents.json").unwrap().1)
            .unwrap();
    let hidden = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == fixture::agent_id(fixture::HIDDEN_AGENT))
        .unwrap();
    assert_eq!(hidden["hostname"], fixture::hidden_text("host"));
}

#[test]
fn pages_link_relatively_and_every_link_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = fixture(dir.path(), &FleetSpec::new(64));
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let root = std::fs::canonicalize(out.join("current")).unwrap();
    let files = site_files(&out);
    let mut checked = 0;
    for (path, text) in files.iter().filter(|(p, _)| p.ends_with(".html")) {
        // One script, the site's own file (a strict CSP allows it; no
        // inline script, no event handler attributes); pages are complete
        // without it.
        for tag in text.split("<script").skip(1) {
            let tag = &tag[..tag.find("</script>").unwrap_or(tag.len())];
            assert!(
                tag.starts_with(" src=\"") && tag.ends_with("static/fresh.js\" defer>"),
                "{path}: a script other than static/fresh.js: <script{tag}"
            );
        }
        assert!(
            !text.contains(" onload=") && !text.contains(" onclick="),
            "{path}: inline handler"
        );
        let base = root.join(path).parent().unwrap().to_path_buf();
        for part in text.split("href=\"").skip(1) {
            let link = part.split('"').next().unwrap();
            if link.starts_with("data:") {
                continue; // inline content (the favicon), not a link to a file
            }
            assert!(
                !link.starts_with('/') && !link.contains("://"),
                "{path}: absolute link {link}"
            );
            let file = link.split('#').next().unwrap();
            if file.is_empty() {
                continue;
            }
            let target = base.join(file.replace("&#x2f;", "/"));
            assert!(target.exists(), "{path}: broken link {link}");
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} links checked");
}

#[test]
fn layouts_are_cached_by_structure() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = fixture(dir.path(), &FleetSpec::new(50));
    let out = dir.path().join("site");
    let conn = open_read_only(&db).unwrap();
    let mut b = builder(&out, Anon::new(&key()));
    let first = b.build(&conn, NOW).unwrap();
    assert!(first.layouts_computed > 10, "{first:?}");
    let second = b.build(&conn, NOW + 10).unwrap();
    assert_eq!(second.layouts_computed, 0, "nothing changed, nothing laid out");
    // Pages of unchanged agents and clusters are the same bytes: linked.
    assert!(
        second.files_unchanged * 10 > second.files * 8,
        "{} of {} unchanged",
        second.files_unchanged,
        second.files
    );
    // Health and colour changes do not re-run layouts.
    let rw = rusqlite::Connection::open(&db).unwrap();
    rw.execute("UPDATE topology_edges SET health = 'down'", []).unwrap();
    rw.execute("UPDATE wg_peers SET health = 'stale'", []).unwrap();
    let third = b.build(&conn, NOW + 20).unwrap();
    assert_eq!(third.layouts_computed, 0);
    assert!(third.changes.links > 0, "{}", third.changes.describe());
    // A new process finds the layouts on disk.
    let cold = builder(&out, Anon::new(&key())).build(&conn, NOW + 30).unwrap();
    assert_eq!(cold.layouts_computed, 0);
    // A new link is a new structure for the two clusters it touches.
    let (a, b2): (String, String) = rw
        .query_row("SELECT a_agent, b_agent FROM topology_edges WHERE kind = 'wireguard' AND b_agent != '' LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let _ = (a, b2);
    let ids: Vec<String> = rw
        .prepare("SELECT agent_id FROM agents ORDER BY agent_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rw.execute(
        "INSERT INTO topology_edges (kind, a_agent, b_agent, health, first_seen, last_seen) VALUES ('wireguard', ?1, ?2, 'healthy', 0, 0)",
        [&ids[1], &ids[48]],
    )
    .unwrap();
    let fourth = b.build(&conn, NOW + 40).unwrap();
    assert!(fourth.layouts_computed >= 1, "{fourth:?}");
}

#[test]
fn a_rebuild_publishes_what_a_fresh_build_would() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { resolved_alarms: 30, ..FleetSpec::new(60) };
    let (db, _) = fixture(dir.path(), &spec);
    let conn = open_read_only(&db).unwrap();
    let out = dir.path().join("site");
    let mut b = builder(&out, Anon::new(&key()));
    b.build(&conn, NOW).unwrap();
    // Changes that show on agent and cluster pages (a hostname also on its
    // peers' pages), but not everywhere.
    let rw = rusqlite::Connection::open(&db).unwrap();
    rw.execute_batch(
        "UPDATE agents SET hostname = hostname || '-renamed' WHERE rowid = 3;
         UPDATE wg_peers SET health = 'stale'
          WHERE agent_id IN (SELECT agent_id FROM agents WHERE rowid % 7 = 0);
         UPDATE interfaces SET state = 'down'
          WHERE agent_id IN (SELECT agent_id FROM agents WHERE rowid % 13 = 0);
         UPDATE history SET load1 = load1 + 1
          WHERE agent_id IN (SELECT agent_id FROM agents WHERE rowid % 11 = 0);
         UPDATE alarms SET acked_at = first_seen + 60 WHERE id % 5 = 0;",
    )
    .unwrap();
    for (k, now) in [NOW + 10, NOW + 20].into_iter().enumerate() {
        let rebuilt = b.build(&conn, now).unwrap();
        let fresh_out = dir.path().join(format!("fresh{k}"));
        let fresh = builder(&fresh_out, Anon::new(&key())).build(&conn, now).unwrap();
        assert_eq!(rebuilt.files, fresh.files);
        assert!(rebuilt.files_unchanged > rebuilt.files / 2, "{}", rebuilt.line());
        assert!(site_files(&out) == site_files(&fresh_out), "build {k} differs from a fresh one");
    }
}

/// Page keys leave out what moves with the clock alone (relative ages, the
/// generation time), which is right only while the pages that have keys
/// never show them.
#[test]
fn pages_with_keys_do_not_show_the_clock() {
    use kattila_sitegen::files::{Contents, SiteFile};
    use kattila_sitegen::layout::LayoutCache;
    use kattila_sitegen::render::{render_site, PageKeys};

    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { hostile: true, resolved_alarms: 230, ..FleetSpec::new(60) };
    let (db, _) = fixture(dir.path(), &spec);
    let conn = open_read_only(&db).unwrap();
    let snap = kattila_store::snapshot::FleetSnapshot::read(&conn, NOW).unwrap();
    let site = kattila_sitegen::view::Site::build(&snap, &mut Anon::new(&key()), NOW);
    // The same fleet a minute later.
    let mut later = site.clone();
    later.generated_at += 60;
    for a in &mut later.agents {
        a.last_seen_age += 60;
        for p in a.wireguard.iter_mut().flat_map(|d| &mut d.peers) {
            p.handshake_age = p.handshake_age.map(|s| s + 60);
        }
    }
    let render = |site, keys: &PageKeys| {
        render_site(site, &LayoutCache::new(None), &Default::default(), keys).unwrap()
    };
    let bytes = |f: &SiteFile| match &f.contents {
        Contents::Bytes(b) => b.clone(),
        Contents::Previous => panic!("{} not rendered", f.path),
    };
    let mut keys = PageKeys::default();
    let first = render(&site, &keys);
    let again = render(&later, &keys);
    let keyed: Vec<_> = first.iter().filter(|f| f.key.is_some()).collect();
    assert!(keyed.len() >= 60 + 12 + 2, "every agent, cluster and older alarm page has a key");
    for (a, b) in first.iter().zip(&again).filter(|(a, _)| a.key.is_some()) {
        assert_eq!(a.path, b.path);
        assert!(bytes(a) == bytes(b), "{} shows the clock", a.path);
    }
    // And their keys did not move: the next build takes them as they are.
    keys.published(&first);
    let next = render(&later, &keys);
    for f in next.iter().filter(|f| f.key.is_some()) {
        assert!(matches!(f.contents, Contents::Previous), "{} rendered again", f.path);
    }
}

#[test]
fn alarm_log_puts_active_first_and_paginates_history() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { resolved_alarms: 230, ..FleetSpec::new(80) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let cur = out.join("current");
    let page1 = std::fs::read_to_string(cur.join("alarms.html")).unwrap();
    assert!(cur.join("alarms/page-2.html").exists() && cur.join("alarms/page-3.html").exists());
    assert!(!cur.join("alarms/page-4.html").exists());
    assert!(page1.contains("page 1 of 3") && page1.contains("href=\"alarms/page-2.html\""));
    let page3 = std::fs::read_to_string(cur.join("alarms/page-3.html")).unwrap();
    assert!(
        page3.contains("href=\"../alarms/page-2.html\"") && page3.contains("../static/style.css")
    );
    // Active alarms come first, critical before warning.
    let active = page1.find("<h2>Active").unwrap();
    let history = page1.find("<h2>History").unwrap();
    let critical = page1.find("sev critical").unwrap();
    let warning = page1.find("sev warning").unwrap();
    assert!(active < critical && critical < warning && warning < history);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cur.join("api/v1/alarms.json")).unwrap())
            .unwrap();
    let states: Vec<&str> =
        json["alarms"].as_array().unwrap().iter().map(|a| a["state"].as_str().unwrap()).collect();
    let first_resolved = states.iter().position(|s| *s == "resolved").unwrap();
    assert!(states[first_resolved..].iter().all(|s| *s == "resolved"));
    assert_eq!(states.len() - first_resolved, 230);
}

#[test]
fn matrix_and_map_show_one_sided_links_and_external_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = fixture(dir.path(), &FleetSpec::new(30));
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let cur = out.join("current");
    let matrix = std::fs::read_to_string(cur.join("matrix.html")).unwrap();
    // A cell: health mark, direction, then the handshake's age band.
    assert!(matrix.contains("⇄<span class=\"band\">&lt; 3 min</span>"), "both ends, fresh");
    assert!(
        matrix.contains("→<span class=\"band\">") && matrix.contains("←<span class=\"band\">"),
        "one-sided links in both directions of the table"
    );
    assert!(matrix.contains("<span class=\"band\">never</span>"), "a link that never handshook");
    assert!(matrix.contains("<th scope=\"row\" ") && matrix.contains("<th scope=\"col\" "));
    let map = std::fs::read_to_string(cur.join("map.html")).unwrap();
    assert!(map.contains("<svg") && map.contains("<title>") && map.contains("href=\"map/net-"));
    let cluster0 = std::fs::read_dir(cur.join("map"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|t| t.contains(">site0-gw00</a></td>"))
        .unwrap();
    assert!(cluster0.contains("class=\"node external\""), "external peer drawn");
    assert!(cluster0.contains("href=\"../agents/"), "nodes link to agent pages");
    assert!(cluster0.contains("class=\"node outside\""), "neighbouring clusters drawn");
    let any_one_sided = std::fs::read_dir(cur.join("map"))
        .unwrap()
        .any(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().contains("one-sided"));
    assert!(any_one_sided);
}

#[test]
fn publishing_is_atomic_for_a_polling_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = fixture(dir.path(), &FleetSpec::new(40));
    let out = dir.path().join("site");
    let conn = open_read_only(&db).unwrap();
    let mut b = builder(&out, Anon::new(&key()));
    b.build(&conn, NOW).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let html = std::fs::read_to_string(out.join("current/index.html"))
                    .expect("index.html always there");
                assert!(html.trim_end().ends_with("</html>"), "partial index.html");
                let json = std::fs::read(out.join("current/api/v1/summary.json"))
                    .expect("summary.json always there");
                serde_json::from_slice::<serde_json::Value>(&json).expect("complete summary.json");
                let css = std::fs::read(out.join("current/static/style.css"))
                    .expect("style.css always there");
                assert!(!css.is_empty());
                reads += 1;
            }
            reads
        })
    };
    for k in 0..12 {
        b.build(&conn, NOW + k).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only complete sites");
    assert!(reads > 0);
    drop(b); // waits for the removal of old builds
    assert!(std::fs::read_dir(out.join(".builds")).unwrap().count() <= 3, "old builds removed");
}

#[test]
fn representative_output_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { resolved_alarms: 3, samples: 4, hostile: true, ..FleetSpec::new(7) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let cur = out.join("current");
    let read = |p: &str| std::fs::read_to_string(cur.join(p)).unwrap();
    insta::assert_snapshot!("index_html", read("index.html"));
    let pretty = |p: &str| {
        let v: serde_json::Value = serde_json::from_str(&read(p)).unwrap();
        serde_json::to_string_pretty(&v).unwrap()
    };
    insta::assert_snapshot!("summary_json", pretty("api/v1/summary.json"));
    insta::assert_snapshot!("topology_netjson", pretty("api/v1/topology.netjson"));
    let gw = format!("agents/{}.html", fixture::agent_id(0));
    insta::assert_snapshot!("agent_html", read(&gw));
    let cluster =
        std::fs::read_dir(cur.join("map")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let text = std::fs::read_to_string(cluster).unwrap();
    let svg = &text[text.find("<svg").unwrap()..text.find("</svg>").unwrap() + 6];
    insta::assert_snapshot!("cluster_svg", svg);
}

/// Every map of fleets with faults (silent agents, stale, down and
/// one-sided links, relays, external peers) is readable: no two node boxes
/// overlap and no line passes through a box that is not one of its ends,
/// measured on the published SVG.
#[test]
fn maps_have_no_overlapping_boxes_and_no_lines_through_boxes() {
    // (agents, agents per site, cross-site peers per agent): the last is a
    // mesh dense across sites, where most sites link with many others.
    for (agents, site_size, cross_links) in
        [(10, 5, 0), (60, 5, 0), (1000, 5, 0), (10_000, 5, 0), (400, 12, 2)]
    {
        let t = std::time::Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let spec = FleetSpec { site_size, cross_links, ..FleetSpec::new(agents) };
        let (db, _) = fixture(dir.path(), &spec);
        let out = dir.path().join("site");
        build(&db, &out, Anon::new(&key()));
        let files = site_files(&out);
        let maps: Vec<&(String, String)> = files
            .iter()
            .filter(|(path, _)| path.ends_with(".html") && path.contains("map"))
            .collect();
        assert!(maps.len() > agents / site_size, "{agents} agents: {} map pages", maps.len());
        let (mut boxes, mut lines, mut bent) = (0, 0, 0);
        for (path, html) in maps {
            let Some(start) = html.find("<svg") else { continue };
            let end = html[start..].find("</svg>").unwrap() + start;
            let g = common::geometry::parse(&html[start..end]);
            assert_eq!(g.overlaps(), 0, "{agents} agents: overlapping boxes in {path}");
            assert_eq!(g.crossings(), 0, "{agents} agents: lines through boxes in {path}");
            boxes += g.boxes.len();
            lines += g.edges.len();
            bent += html[start..end].matches("<path d=\"M").count();
        }
        assert!(boxes > agents && lines > agents / 2, "{agents}: {boxes} boxes, {lines} lines");
        eprintln!(
            "{agents} agents: {boxes} boxes, {lines} lines ({bent} bent) checked in {:.1?}",
            t.elapsed()
        );
    }
}

/// The overview opens with the fleet's state and what needs attention,
/// most severe first: a whole silent site is one line, every count links
/// to an existing list, lists put problems first and sort names
/// naturally, alarm kinds read as words, and two agents with one hostname
/// can be told apart.
#[test]
fn the_overview_puts_problems_first() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { silent_site: Some(3), duplicate_hostname: true, ..FleetSpec::new(60) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let files = site_files(&out);
    let file = |name: &str| &files.iter().find(|(p, _)| p == name).unwrap().1;
    let index = file("index.html");
    let problems = file("problems.html");

    // The verdict comes before every table, and is not "all well".
    let verdict = index.find("class=\"verdict critical\"").expect("a critical verdict");
    assert!(verdict < index.find("<table").unwrap());
    assert!(index.contains("problems need attention."));
    // The silent site is one line, before the warnings.
    let site3 = index.find(": all 5 agents silent").expect("one line for the silent site");
    let first_warning = index.find("<li class=\"warning\">").expect("warnings too");
    assert!(site3 < first_warning, "critical lines first");
    assert_eq!(index.matches(": all 5 agents silent").count(), 1);
    // That line is the receiver's incident: it links to the site's cluster
    // page, and the line of silent agents does not name its agents again.
    let item = &index[index[..site3].rfind("<li").unwrap()..site3];
    assert!(item.contains("href=\"map/net-"), "{item}");
    let overview = &index[verdict..index.find("<table").unwrap()];
    assert!(!overview.contains("site3-"), "{overview}");
    assert!(overview.contains("site7-node01"), "other silent agents keep their line");
    let alarms_json: serde_json::Value = serde_json::from_str(file("api/v1/alarms.json")).unwrap();
    let incidents = alarms_json["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["kind"], "site_silent");
    assert_eq!(incidents[0]["agents"].as_array().unwrap().len(), 5);
    assert!(incidents[0]["cluster_page"].as_str().unwrap().starts_with("map/net-"));
    // Every link to the problems page names an anchor that exists.
    for (at, _) in index.match_indices("href=\"problems.html#") {
        let anchor = &index[at + 20..at + 20 + index[at + 20..].find('"').unwrap()];
        assert!(problems.contains(&format!("id=\"{anchor}\"")), "#{anchor} missing");
    }
    assert!(index.contains("href=\"problems.html#silent\""));
    // The silent site's agents are listed, in natural order.
    let at =
        |name: &str| problems.find(&format!(">{name}</a>")).unwrap_or_else(|| panic!("{name}"));
    assert!(at("site3-gw00") < at("site3-node01") && at("site3-node01") < at("site3-node04"));
    // The agent list: silent agents first, then by name with site2 before site10.
    let rows = &index[index.find("<table class=\"agents\"").unwrap()..];
    let row = |name: &str| rows.find(&format!(">{name}</a>")).unwrap_or_else(|| panic!("{name}"));
    assert!(row("site3-gw00") < row("site0-gw00"), "silent first");
    assert!(row("site2-gw00") < row("site10-gw00"), "natural order");
    // Alarm kinds in words.
    let alarms = file("alarms.html");
    assert!(alarms.contains("<td>agent silent</td>") && !alarms.contains("<td>agent_silent</td>"));
    // The duplicated hostname is told apart by the start of the agent id.
    let dup = hostname_of(1);
    assert!(index.contains(&format!(">{dup} (")), "duplicates are disambiguated");
    let agents: serde_json::Value = serde_json::from_str(file("api/v1/agents.json")).unwrap();
    let same: Vec<&serde_json::Value> =
        agents["agents"].as_array().unwrap().iter().filter(|a| a["hostname"] == dup).collect();
    assert_eq!(same.len(), 2, "JSON keeps the reported hostname");
    assert_ne!(same[0]["display_name"], same[1]["display_name"]);
}

fn hostname_of(i: usize) -> String {
    fixture::hostname(i, false)
}

/// Agents that report a site label are clustered and named by it: the
/// operator's names, not anonymised networks.
#[test]
fn clusters_are_named_by_the_site_labels_agents_report() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { site_labels: true, ..FleetSpec::new(20) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let files = site_files(&out);
    let summary: serde_json::Value =
        serde_json::from_str(&files.iter().find(|(p, _)| p == "api/v1/summary.json").unwrap().1)
            .unwrap();
    let labels: Vec<&str> = summary["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["dc-00", "dc-01", "dc-02", "dc-03"]);
    let map = &files.iter().find(|(p, _)| p == "map.html").unwrap().1;
    assert!(map.contains(">dc-02<"), "the fleet map names the sites");
}

/// A fleet larger than the overview's list: the overview shows the most
/// urgent agents, the list pages every agent once, in the same order, and
/// their links resolve.
#[test]
fn a_large_fleet_is_listed_on_pages() {
    use kattila_sitegen::render::{AGENTS_PER_LIST_PAGE, INDEX_AGENTS};
    let n = AGENTS_PER_LIST_PAGE + 40;
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { silent_site: Some(3), ..FleetSpec::new(n) };
    let (db, fx) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let cur = std::fs::canonicalize(out.join("current")).unwrap();
    let read = |p: &str| std::fs::read_to_string(cur.join(p)).unwrap();
    let rows = |page: &str| -> Vec<String> {
        let table = &page[page.find("<table class=\"agents\"").unwrap()..];
        let body = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
        body.split("<tr>")
            .skip(1)
            .map(|r| r.split("<code>").nth(1).unwrap().split('<').next().unwrap().to_string())
            .collect()
    };
    let index = read("index.html");
    let shown = rows(&index);
    assert_eq!(shown.len(), INDEX_AGENTS);
    assert!(index.contains("href=\"list/agents-1.html\">All agents</a> (2 pages)"));
    let (p1, p2) = (read("list/agents-1.html"), read("list/agents-2.html"));
    assert!(!cur.join("list/agents-3.html").exists());
    assert!(
        p1.contains("href=\"../list/agents-2.html\"")
            && p2.contains("href=\"../list/agents-1.html\"")
    );
    for link in p1.split("href=\"").skip(1).map(|p| p.split(['"', '#']).next().unwrap()) {
        assert!(link.is_empty() || cur.join("list").join(link).exists(), "broken link {link}");
    }
    // Below the root: no relative ages, no generation time.
    assert!(!p1.contains(" ago<") && !p1.contains("class=\"age\""));
    assert!(p1.contains("data as of <time") && p1.contains(" data-as-of=\""));
    let all: Vec<String> = rows(&p1).into_iter().chain(rows(&p2)).collect();
    assert_eq!(all.len(), n);
    assert_eq!(all[..INDEX_AGENTS], shown[..], "the overview shows the head of the list");
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    let mut ids = fx.agent_ids.clone();
    ids.sort();
    assert_eq!(sorted, ids, "every agent once");
}

/// However many agents are silent, the problems page lists a bounded
/// number, gives the total and links to the full list.
#[test]
fn problem_lists_are_bounded() {
    use kattila_sitegen::render::PROBLEM_ROWS;
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec { site_size: 150, silent_site: Some(0), ..FleetSpec::new(300) };
    let (db, _) = fixture(dir.path(), &spec);
    let out = dir.path().join("site");
    build(&db, &out, Anon::new(&key()));
    let page = std::fs::read_to_string(out.join("current/problems.html")).unwrap();
    let silent =
        &page[page.find("<h2 id=\"silent\">").unwrap()..page.find("<h2 id=\"relay\">").unwrap()];
    let total = 150 + (150..300).filter(|i| i % 37 == 36).count();
    assert!(silent.contains(&format!("Silent agents ({total})")), "{silent}");
    assert_eq!(silent.matches("<tr><td>").count(), PROBLEM_ROWS);
    assert!(silent.contains(&format!("The first {PROBLEM_ROWS} of {total}")));
    assert!(silent.contains("href=\"list/agents-1.html\""));
}
