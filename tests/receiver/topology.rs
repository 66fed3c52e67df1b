//! Topology inference from a simulated mesh, over real HTTP.

use std::collections::HashSet;

use crate::common::*;
use kattila_agent::simulate::{SimFleet, SITE_SIZE};
use kattila_proto::{relay_envelope, signed_envelope, Psk};

fn edges(h: &Harness, kind: &str) -> Vec<(String, String, String, bool, String)> {
    let conn = h.conn();
    let mut stmt = conn
        .prepare("SELECT a_agent, b_agent, b_external, both_ends, health FROM topology_edges WHERE kind = ?1 ORDER BY 1, 2, 3")
        .unwrap();
    stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The links the simulated fleet is built with, as ordered agent-id pairs.
fn expected_links(fleet: &SimFleet) -> HashSet<(String, String)> {
    let mut links = HashSet::new();
    for a in &fleet.agents {
        for &p in &a.peers {
            let (x, y) = (a.agent_id.clone(), fleet.agents[p].agent_id.clone());
            links.insert(if x < y { (x, y) } else { (y, x) });
        }
    }
    links
}

#[tokio::test(flavor = "multi_thread")]
async fn mesh_edges_match_the_fleet_and_are_both_ends() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("topology", 12);
    let mut agents: Vec<SimAgent> = (0..12).map(|i| SimAgent::new(&fleet, i)).collect();
    for a in agents.iter_mut() {
        a.send(&h.url).await.unwrap();
    }
    let wg = edges(&h, "wireguard");
    let found: HashSet<(String, String)> = wg.iter().map(|e| (e.0.clone(), e.1.clone())).collect();
    assert_eq!(found, expected_links(&fleet));
    assert!(wg.iter().all(|e| e.2.is_empty() && e.3 && e.4 == "healthy"), "{wg:?}");

    // Physical: the agents of one site share a /24 and a /64.
    let physical = edges(&h, "physical");
    let per_site = SITE_SIZE * (SITE_SIZE - 1) / 2;
    let sites = [SITE_SIZE, SITE_SIZE, 12 - 2 * SITE_SIZE];
    let expected: usize = sites.iter().map(|n| n * (n - 1) / 2).sum();
    assert_eq!(physical.len(), expected, "{per_site} per full site");

    // /status/agents lists each agent with its links.
    let (status, body) = h.get("/status/agents").await;
    assert_eq!(status, 200);
    let list = body["agents"].as_array().unwrap();
    assert_eq!(list.len(), 12);
    let hub = list.iter().find(|a| a["agent_id"] == fleet.agents[0].agent_id).unwrap();
    let wg_links =
        hub["links"].as_array().unwrap().iter().filter(|l| l["kind"] == "wireguard").count();
    assert_eq!(wg_links, fleet.agents[0].peers.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sided_and_external_peers() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("sided", 5);
    let mut hub = SimAgent::new(&fleet, 0);
    let mut spoke = SimAgent::new(&fleet, 1);
    let external_key = "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M=".to_string();
    // Only the spoke has reported: its peers are agents nobody knows yet.
    spoke.send(&h.url).await.unwrap();
    assert!(
        edges(&h, "wireguard").iter().all(|e| !e.2.is_empty()),
        "unknown keys are external peers"
    );
    // The hub reports, adding an external peer of its own.
    let ext = external_key.clone();
    hub.send_with(&h.url, move |t| {
        let mut p = t.wireguard[0].peers[0].clone();
        p.public_key = ext;
        t.wireguard[0].peers.push(p);
    })
    .await
    .unwrap();
    let (hub_id, spoke_id) = (hub.id().to_string(), spoke.id().to_string());
    let (a, b) = if hub_id < spoke_id { (&hub_id, &spoke_id) } else { (&spoke_id, &hub_id) };
    let wg = edges(&h, "wireguard");
    let link = wg.iter().find(|e| &e.0 == a && &e.1 == b).expect("hub-spoke edge");
    assert!(link.3, "both ends list each other");
    assert!(wg.iter().any(|e| e.0 == hub_id && e.2 == external_key), "external peer kept: {wg:?}");
    // The spoke drops the hub from its configuration: the edge is one-sided.
    let hub_key = fleet.agents[0].wg_public_key.clone();
    spoke
        .send_with(&h.url, move |t| t.wireguard[0].peers.retain(|p| p.public_key != hub_key))
        .await
        .unwrap();
    let wg = edges(&h, "wireguard");
    let link = wg.iter().find(|e| &e.0 == a && &e.1 == b).expect("edge kept from the hub's side");
    assert!(!link.3, "one end only");
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_reports_make_relay_edges_and_a_relay_only_alarm() {
    let h = Harness::start(|c| c.settings.alarm_threshold = 2).await;
    let fleet = SimFleet::new("relay", 3);
    let psk = Psk::new(PSK).unwrap();
    let origin = fleet.agents[2].agent_id.clone();
    let relayer = fleet.agents[0].agent_id.clone();
    let client = reqwest::Client::new();
    for tick in 1..=2u64 {
        let now = kattila_agent::unix_now();
        let mut report = kattila_agent::report::build_report(&origin, now, fleet.telemetry(2, now));
        report.tick = tick;
        report.nonce = format!("{tick:032x}");
        let inner = signed_envelope(&psk, &report);
        let nonce = format!("{:032x}", tick + 100);
        let relay = relay_envelope(&psk, &relayer, now, &nonce, tick, &inner).unwrap();
        let r = client.post(format!("{}/status/updates", h.url)).body(relay).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let relay_edges = edges(&h, "relay");
    assert_eq!(relay_edges.len(), 1);
    assert_eq!(
        (relay_edges[0].0.as_str(), relay_edges[0].1.as_str()),
        (relayer.as_str(), origin.as_str())
    );
    assert_eq!(h.active("relay_only", &origin), 1);
    let reach: String = h
        .conn()
        .query_row("SELECT reachability FROM agents WHERE agent_id = ?1", [&origin], |r| r.get(0))
        .unwrap();
    assert_eq!(reach, "relay");
    // Direct again: resolved after the threshold.
    let mut direct = SimAgent::new(&fleet, 2);
    // Its fresh tick counter first repeats the ticks used through the relay
    // (refused as replays), then two direct reports are accepted.
    let mut accepted = 0;
    while accepted < 2 {
        match direct.send(&h.url).await {
            Ok(_) => accepted += 1,
            Err(e) => assert!(e.to_string().contains("replay"), "{e}"),
        }
    }
    assert_eq!(h.active("relay_only", &origin), 0);
}

/// Health and handshake age of the WireGuard edge between two agents.
fn wg_edge(h: &Harness, x: &str, y: &str) -> (String, Option<i64>) {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    h.conn()
        .query_row(
            "SELECT health, handshake_age FROM topology_edges
             WHERE kind = 'wireguard' AND a_agent = ?1 AND b_agent = ?2 AND b_external = ''",
            [a, b],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_health_and_handshake_age_follow_the_reports() {
    let h = Harness::start(|c| c.settings.sample_secs = 2).await;
    let fleet = SimFleet::new("edge-life", 5);
    let mut hub = SimAgent::new(&fleet, 0);
    let mut spoke = SimAgent::new(&fleet, 1);
    let (hub_id, spoke_id) = (hub.id().to_string(), spoke.id().to_string());
    let (hub_key, spoke_key) =
        (fleet.agents[0].wg_public_key.clone(), fleet.agents[1].wg_public_key.clone());
    hub.send(&h.url).await.unwrap();
    spoke.send(&h.url).await.unwrap();
    assert_eq!(wg_edge(&h, &hub_id, &spoke_id).0, "healthy");

    // Both ends see an old handshake and no traffic: the edge is stale at
    // once, however recently it was written.
    let now = kattila_agent::unix_now();
    let silence = |key: String| {
        move |t: &mut kattila_agent::report::Telemetry| {
            for p in t.wireguard.iter_mut().flat_map(|d| &mut d.peers) {
                if p.public_key == key {
                    p.latest_handshake = Some(now - 600);
                    p.rx_bytes = 0;
                }
            }
        }
    };
    hub.send_with(&h.url, silence(spoke_key.clone())).await.unwrap();
    spoke.send_with(&h.url, silence(hub_key.clone())).await.unwrap();
    assert_eq!(wg_edge(&h, &hub_id, &spoke_id).0, "stale");
    hub.send(&h.url).await.unwrap();
    assert_eq!(wg_edge(&h, &hub_id, &spoke_id).0, "healthy", "one end's fresh handshake");

    // An unchanged link is rewritten once per sample interval with the
    // newest handshake's age.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let now = kattila_agent::unix_now();
    hub.send_with(&h.url, move |t| {
        for p in t.wireguard.iter_mut().flat_map(|d| &mut d.peers) {
            if p.public_key == spoke_key {
                p.latest_handshake = Some(now - 7);
            }
        }
    })
    .await
    .unwrap();
    let (health, age) = wg_edge(&h, &hub_id, &spoke_id);
    assert_eq!(health, "healthy");
    // The spoke's own view (a fresh handshake from its last report) may be newer.
    assert!(age.is_some_and(|a| a <= 9), "handshake age {age:?}");
}

/// The agent a peer row of `lister` for `key` points at.
fn owner_in_peer_row(h: &Harness, lister: &str, key: &str) -> Option<String> {
    h.conn()
        .query_row(
            "SELECT peer_agent_id FROM wg_peers WHERE agent_id = ?1 AND public_key = ?2",
            [lister, key],
            |r| r.get(0),
        )
        .unwrap()
}

/// Who lists a key is known without an index on the peers' keys: a key no
/// agent owned, claimed after a restart, turns the listers' external edges
/// into links (the model loads them from the stored edges), and a key that
/// moves to another agent (a cloned machine) takes its listers with it
/// (storage scans the peers for them).
#[tokio::test(flavor = "multi_thread")]
async fn claimed_keys_find_their_listers_across_a_restart_and_a_move() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("claims", 5);
    let mut spoke = SimAgent::new(&fleet, 1);
    let hub_key = fleet.agents[0].wg_public_key.clone();
    let (hub_id, spoke_id) = (fleet.agents[0].agent_id.clone(), spoke.id().to_string());
    spoke.send(&h.url).await.unwrap();
    assert!(edges(&h, "wireguard").iter().any(|e| e.0 == spoke_id && e.2 == hub_key));
    assert_eq!(owner_in_peer_row(&h, &spoke_id, &hub_key), None);

    let h = Harness::start_in(h.stop().await, |_| {}).await;
    SimAgent::new(&fleet, 0).send(&h.url).await.unwrap();
    let wg = edges(&h, "wireguard");
    assert!(!wg.iter().any(|e| e.2 == hub_key), "no external edge to a claimed key: {wg:?}");
    let (a, b) = if hub_id < spoke_id { (&hub_id, &spoke_id) } else { (&spoke_id, &hub_id) };
    let link = wg.iter().find(|e| &e.0 == a && &e.1 == b).expect("hub-spoke link");
    assert!(link.3 && link.4 == "healthy", "{link:?}");
    assert_eq!(owner_in_peer_row(&h, &spoke_id, &hub_key).as_deref(), Some(hub_id.as_str()));

    // Another agent reports the hub's device key as its own.
    let mut clone = SimAgent::new(&fleet, 3);
    let clone_id = clone.id().to_string();
    let moved = hub_key.clone();
    clone.send_with(&h.url, move |t| t.wireguard[0].public_key = moved).await.unwrap();
    assert_eq!(owner_in_peer_row(&h, &spoke_id, &hub_key).as_deref(), Some(clone_id.as_str()));
    let (a, b) = if clone_id < spoke_id { (&clone_id, &spoke_id) } else { (&spoke_id, &clone_id) };
    assert!(edges(&h, "wireguard").iter().any(|e| &e.0 == a && &e.1 == b), "spoke-clone link");
}
