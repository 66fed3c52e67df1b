//! The pure step without a database: messages in, changes out.

use kattila_fleet::{Health, PeerHealth};
use kattila_proto::model::{Interface, SystemInfo, WgDevice, WgPeer};
use kattila_proto::{Kind, Layer, Message, Report, Verified};
use kattila_store::alarms::AlarmChange;
use kattila_store::state::AgentRows;
use kattila_store::topology::{EdgeChange, PeerListing};

use super::*;

const T0: i64 = 1_700_000_000;

fn key(c: char) -> String {
    std::iter::repeat_n(c, 43).chain(['=']).collect()
}

fn iface(name: &str, kind: &str, addresses: &[&str]) -> Interface {
    Interface {
        name: name.into(),
        kind: kind.into(),
        state: "up".into(),
        mtu: 1500,
        mac: None,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        rx_bytes: 1000,
        tx_bytes: 2000,
        rx_errors: 0,
        tx_errors: 0,
    }
}

/// Agent `id` with eth0, wg0 (device key `device`) and one peer `peer`
/// with a fresh handshake, observed at `now`.
fn report(id: &str, device: char, peer: char, now: i64) -> Report {
    Report {
        kind: Kind::Report,
        agent_id: id.into(),
        timestamp: now,
        nonce: "00".repeat(16),
        tick: 1,
        observed_at: now,
        hostname: format!("{id}.example"),
        site: None,
        agent_version: "test".into(),
        system: SystemInfo { uptime_secs: 1, load: [0.5, 0.5, 0.5], kernel: "6".into() },
        interfaces: vec![
            iface("lo", "loopback", &["127.0.0.1/8"]),
            iface("eth0", "ether", &["192.168.7.10/24"]),
            iface("wg0", "wireguard", &["10.99.0.1/24"]),
        ],
        routes: Vec::new(),
        wireguard: vec![WgDevice {
            name: "wg0".into(),
            public_key: key(device),
            listen_port: Some(51820),
            peers: vec![WgPeer {
                public_key: key(peer),
                endpoint: Some("192.0.2.1:51820".into()),
                allowed_ips: vec!["10.99.0.2/32".into()],
                latest_handshake: Some(now - 10),
                rx_bytes: 5000,
                tx_bytes: 5000,
                persistent_keepalive: Some(25),
            }],
        }],
        errors: Vec::new(),
        spool_dropped: 0,
    }
}

fn direct(r: Report) -> Verified {
    let layer = Layer {
        kind: Kind::Report,
        agent_id: r.agent_id.clone(),
        timestamp: r.timestamp,
        tick: r.tick,
        nonce: [0; 16],
    };
    Verified { layers: vec![layer], message: Message::Report(Box::new(r)) }
}

/// A processor over an empty database, with every agent of `agents` known.
fn processor(agents: &[&str]) -> Processor {
    let mut p = Processor::new(Settings { alarm_threshold: 2, ..Settings::default() });
    p.load(super::topology::Topology::default(), AlarmRows::default());
    for id in agents {
        p.know(id, AgentRows::default());
    }
    p
}

fn raised<'a>(changes: &'a Changes<'_>) -> Vec<(&'a str, &'a str)> {
    changes
        .alarms
        .iter()
        .filter_map(|c| match c {
            AlarmChange::Raise { condition, .. } => {
                Some((condition.kind.as_ref(), condition.subject.as_ref()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_report_writes_everything_and_raises_nothing() {
    let mut p = processor(&["a"]);
    let m = direct(report("a", 'A', 'B', T0));
    let out = p.apply(&m, &[], T0);
    let state = out.changes.state.as_ref().unwrap();
    assert_eq!(state.interfaces.len(), 3);
    assert!(state.devices.is_some());
    assert_eq!(state.peers.len(), 1);
    assert_eq!(state.peers[0].health, PeerHealth::Healthy);
    assert_eq!(state.peers[0].peer_agent_id, None, "no agent owns the peer's key yet");
    assert!(state.sample.is_some());
    assert!(raised(&out.changes).is_empty(), "new interfaces of a first report are no events");
    assert!(out.keep_raw);
}

#[test]
fn an_unchanged_report_writes_nothing_until_the_sample_interval() {
    let mut p = processor(&["a"]);
    let first = direct(report("a", 'A', 'B', T0));
    p.apply(&first, &[], T0);
    let mut r = report("a", 'A', 'B', T0 + 10);
    r.interfaces[1].rx_bytes += 100; // counters move; nothing else does
    let m = direct(r);
    let out = p.apply(&m, &[], T0 + 10);
    assert!(out.changes.is_empty(), "{:#?}", out.changes);
    assert!(!out.keep_raw, "the raw copy is kept once per audit interval");

    // A sample interval later the counters (and a sample) are written, and
    // still nothing counts as changed.
    let later = T0 + Settings::default().sample_secs;
    let m = direct(report("a", 'A', 'B', later));
    let out = p.apply(&m, &[], later);
    let state = out.changes.state.as_ref().unwrap();
    assert_eq!((state.interfaces.len(), state.peers.len()), (3, 1));
    assert!(state.sample.is_some());
    assert!(state.routes.is_none() && state.devices.is_none());
    assert!(state.interfaces_gone.is_empty() && state.peers_removed.is_empty());
    assert!(out.changes.alarms.is_empty());
}

#[test]
fn a_peer_goes_stale_and_is_alarmed_after_the_threshold() {
    let mut p = processor(&["a"]);
    p.apply(&direct(report("a", 'A', 'B', T0)), &[], T0);
    let stale_after = p.settings.stale_after_secs;
    // The handshake ages past the threshold while no bytes arrive.
    let mut seen = Vec::new();
    for n in 1..=3 {
        let now = T0 + stale_after + n * 30;
        let mut r = report("a", 'A', 'B', now);
        r.wireguard[0].peers[0].latest_handshake = Some(T0 - 10);
        let m = direct(r);
        let out = p.apply(&m, &[], now);
        let health = out.changes.state.as_ref().unwrap().peers.first().map(|u| u.health);
        let raised: Vec<_> = raised(&out.changes).into_iter().map(|(k, _)| k.to_string()).collect();
        seen.push((health, raised));
    }
    assert_eq!(seen[0].0, Some(PeerHealth::Stale), "health changed: the peer is written");
    assert!(seen[0].1.is_empty(), "one observation is below the threshold");
    assert_eq!(seen[1].1, ["peer_stale"], "raised after two");
    assert!(seen[2].1.is_empty(), "not raised twice");
}

#[test]
fn a_missing_interface_becomes_gone() {
    let mut p = processor(&["a"]);
    p.apply(&direct(report("a", 'A', 'B', T0)), &[], T0);
    let mut gone_raised = Vec::new();
    for n in 1..=2 {
        let mut r = report("a", 'A', 'B', T0 + n);
        r.interfaces.retain(|i| i.name != "eth0");
        let m = direct(r);
        let out = p.apply(&m, &[], T0 + n);
        let state = out.changes.state.as_ref().unwrap();
        let expected: &[&str] = if n == 1 { &["eth0"] } else { &[] };
        assert_eq!(state.interfaces_gone, expected, "marked gone once");
        assert_eq!(out.keep_raw, n == 1 || !raised(&out.changes).is_empty());
        gone_raised.extend(raised(&out.changes).into_iter().map(|(k, s)| format!("{k} {s}")));
    }
    assert_eq!(gone_raised, ["interface_gone eth0"]);
    // It returns: written whole again, and the streak starts clearing.
    let m = direct(report("a", 'A', 'B', T0 + 3));
    let out = p.apply(&m, &[], T0 + 3);
    let state = out.changes.state.as_ref().unwrap();
    assert_eq!(state.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["eth0"]);
}

#[test]
fn an_endpoint_change_is_an_event_and_a_new_interface_too() {
    let mut p = processor(&["a"]);
    p.apply(&direct(report("a", 'A', 'B', T0)), &[], T0);
    let mut r = report("a", 'A', 'B', T0 + 1);
    r.wireguard[0].peers[0].endpoint = Some("198.51.100.7:51820".into());
    r.interfaces.push(iface("eth1", "ether", &[]));
    let m = direct(r);
    let out = p.apply(&m, &[], T0 + 1);
    let subject = format!("wg0:{}", key('B'));
    assert_eq!(
        raised(&out.changes),
        [("interface_new", "eth1"), ("endpoint_changed", subject.as_str())],
        "events are raised at once"
    );
    assert!(out.keep_raw);
}

#[test]
fn a_key_claimed_later_turns_an_external_edge_into_an_agent_edge() {
    // b lists key A before any agent owns it: an external edge.
    let mut p = processor(&["a", "b"]);
    let m = direct(report("b", 'B', 'A', T0));
    let out = p.apply(&m, &[], T0);
    let external = ("b".to_string(), String::new(), key('A'));
    assert!(out
        .changes
        .edges
        .iter()
        .any(|e| matches!(e, EdgeChange::WireguardUpsert { key, .. } if *key == external)));
    // a reports device key A, which no agent owned: the model knows b lists
    // it, so storage is not asked.
    let m = direct(report("a", 'A', 'B', T0 + 1));
    assert!(p.moved_keys(&m).is_empty());
    let out = p.apply(&m, &[], T0 + 1);
    let edges = &out.changes.edges;
    assert!(edges.contains(&EdgeChange::WireguardDelete { key: external }));
    let claimed = EdgeChange::KeysClaimed { agent: "a", listers: vec![("b".into(), key('A'))] };
    assert!(edges.contains(&claimed), "{edges:?}");
    let pair = ("a".to_string(), "b".to_string(), String::new());
    assert!(edges.iter().any(|e| matches!(
        e,
        EdgeChange::WireguardUpsert { key, both_ends: true, health: Health::Healthy, .. }
            if *key == pair
    )));
    // eth0 of both is in 192.168.7.0/24: a physical edge; lo and wg0 make none.
    assert!(edges.iter().any(|e| matches!(
        e,
        EdgeChange::PhysicalReplaced { agent: "a", edges, .. }
            if edges == &[("b".to_string(), "192.168.7.0/24".to_string())]
    )));
    assert!(p.moved_keys(&m).is_empty(), "known now");
}

/// What storage finds for key A in the tests below: b lists it, its row
/// naming c as the owner.
fn b_lists_a_as_cs() -> PeerListing {
    PeerListing {
        agent_id: "b".into(),
        public_key: key('A'),
        peer_agent_id: Some("c".into()),
        health: PeerHealth::Healthy,
        latest_handshake: Some(T0 - 10),
    }
}

/// A key another agent owned (an agent reset, a cloned machine): storage
/// says who lists it, and those peers point at the new owner.
#[test]
fn a_key_moving_to_another_agent_takes_its_listers_from_storage() {
    let mut p = processor(&["a", "b", "c"]);
    p.apply(&direct(report("c", 'A', 'D', T0)), &[], T0);
    p.apply(&direct(report("b", 'B', 'A', T0)), &[], T0);
    let m = direct(report("a", 'A', 'B', T0 + 1));
    assert_eq!(p.moved_keys(&m), [key('A')], "c owned it");
    let out = p.apply(&m, &[b_lists_a_as_cs()], T0 + 1);
    let edges = &out.changes.edges;
    let claimed = EdgeChange::KeysClaimed { agent: "a", listers: vec![("b".into(), key('A'))] };
    assert!(edges.contains(&claimed), "{edges:?}");
    let pair = ("a".to_string(), "b".to_string(), String::new());
    assert!(edges.iter().any(|e| matches!(
        e,
        EdgeChange::WireguardUpsert { key, both_ends: true, health: Health::Healthy, .. }
            if *key == pair
    )));
}

/// A key its owner gave up may still be listed as the former owner's: a
/// claim of it asks storage, whatever the model knows.
#[test]
fn a_key_given_up_by_its_owner_takes_its_listers_from_storage() {
    let mut p = processor(&["a", "b", "c"]);
    p.apply(&direct(report("c", 'A', 'D', T0)), &[], T0);
    p.apply(&direct(report("b", 'B', 'A', T0)), &[], T0);
    p.apply(&direct(report("c", 'E', 'D', T0 + 1)), &[], T0 + 1);
    let m = direct(report("a", 'A', 'B', T0 + 2));
    assert_eq!(p.moved_keys(&m), [key('A')], "b's row may still name c");
    let out = p.apply(&m, &[b_lists_a_as_cs()], T0 + 2);
    let claimed = EdgeChange::KeysClaimed { agent: "a", listers: vec![("b".into(), key('A'))] };
    assert!(out.changes.edges.contains(&claimed), "{:?}", out.changes.edges);
    let again = direct(report("a", 'E', 'B', T0 + 3));
    assert_eq!(p.moved_keys(&again), [key('E')], "c owns E");
}

/// An agent that stops listing a key is no longer named its lister when
/// another agent claims the key.
#[test]
fn a_dropped_peer_is_not_a_lister_of_a_later_claim() {
    let mut p = processor(&["a", "b"]);
    p.apply(&direct(report("b", 'B', 'A', T0)), &[], T0);
    p.apply(&direct(report("b", 'B', 'C', T0 + 1)), &[], T0 + 1);
    let m = direct(report("a", 'A', 'D', T0 + 2));
    assert!(p.moved_keys(&m).is_empty());
    let out = p.apply(&m, &[], T0 + 2);
    let edges = &out.changes.edges;
    assert!(!edges.iter().any(|e| matches!(e, EdgeChange::KeysClaimed { .. })), "{edges:?}");
    let pair = ("a".to_string(), "b".to_string(), String::new());
    assert!(!edges
        .iter()
        .any(|e| matches!(e, EdgeChange::WireguardUpsert { key, .. } if *key == pair)));
}

/// A key nobody lists is claimed without a write to other agents' peers.
#[test]
fn a_key_nobody_lists_claims_nothing_elsewhere() {
    let mut p = processor(&["a"]);
    let m = direct(report("a", 'A', 'B', T0));
    let out = p.apply(&m, &[], T0);
    assert!(!out.changes.edges.iter().any(|e| matches!(e, EdgeChange::KeysClaimed { .. })));
}

#[test]
fn the_silent_alarm_is_raised_at_once_and_cleared_by_one_report() {
    let mut p = processor(&["a"]);
    p.apply(&direct(report("a", 'A', 'B', T0)), &[], T0);
    let silent = vec![("a".to_string(), T0)];
    let changes = p.silent(&silent, T0 + 100);
    assert!(matches!(&changes.alarms[0], AlarmChange::Raise { condition, message, .. }
        if condition.kind == "agent_silent" && message == "no report for 100 s"));
    let m = direct(report("a", 'A', 'B', T0 + 101));
    let out = p.apply(&m, &[], T0 + 101);
    assert!(out.changes.alarms.iter().any(
        |c| matches!(c, AlarmChange::Resolve { condition, .. } if condition.kind == "agent_silent")
    ));
}

/// A link is not healthy while one of its ends is silent, whatever the
/// other end still sees; the agent's own peers and the peers listing it
/// become unknown; when it reports again its links are judged again.
#[test]
fn a_silent_end_makes_its_links_and_peers_unknown_until_it_reports() {
    let mut p = processor(&["a", "b"]);
    let pair = ("a".to_string(), "b".to_string(), String::new());
    let health_of = |edges: &[EdgeChange<'_>]| {
        edges.iter().rev().find_map(|e| match e {
            EdgeChange::WireguardUpsert { key, health, .. } if *key == pair => Some(*health),
            _ => None,
        })
    };
    p.apply(&direct(report("a", 'A', 'B', T0)), &[], T0);
    let m = direct(report("b", 'B', 'A', T0));
    let out = p.apply(&m, &[], T0);
    assert_eq!(health_of(&out.changes.edges), Some(Health::Healthy));

    let silent = vec![("a".to_string(), T0)];
    let changes = p.silent(&silent, T0 + 100);
    let silenced = kattila_store::state::Silenced { agent: "a", listers: vec!["b".into()] };
    assert_eq!(changes.silenced, [silenced], "b lists a's key");
    assert_eq!(health_of(&changes.edges), Some(Health::Unknown), "the link of a silent end");
    // Silence is decided once: the next sweep changes nothing more.
    let again = p.silent(&silent, T0 + 105);
    assert!(again.silenced.is_empty() && health_of(&again.edges).is_none());

    // b still sees a handshake with a: its peer entry and the link stay unknown.
    let m = direct(report("b", 'B', 'A', T0 + 110));
    let out = p.apply(&m, &[], T0 + 110);
    let peer =
        out.changes.state.as_ref().unwrap().peers.iter().find(|u| u.peer.public_key == key('A'));
    assert_eq!(peer.map(|u| u.health), Some(PeerHealth::Unknown));
    assert_ne!(health_of(&out.changes.edges), Some(Health::Healthy));

    // a reports again: the link is judged from both ends' views.
    let m = direct(report("a", 'A', 'B', T0 + 120));
    let out = p.apply(&m, &[], T0 + 120);
    assert_eq!(health_of(&out.changes.edges), Some(Health::Healthy));
    let peer =
        out.changes.state.as_ref().unwrap().peers.iter().find(|u| u.peer.public_key == key('B'));
    assert_eq!(peer.map(|u| u.health), Some(PeerHealth::Healthy), "a's own peer is judged again");
}
