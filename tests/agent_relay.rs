//! Relaying with real agent processes on loopback (no root needed): each
//! agent is told its relay candidates with --relay, the receiver is a real
//! kattila-receiver, and an agent "cut off" from the receiver is one whose
//! receiver URL points at a port where nothing listens.

mod util;

use kattila_agent::simulate::SimFleet;
use kattila_proto::{relay_envelope, signed_envelope, Psk};
use util::*;

const PSK: &str = "relay-test-fleet-key";

fn now() -> i64 {
    kattila_agent::unix_now()
}

/// A receiver URL where nothing listens.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A signed report envelope from `agent_id`, timestamped `ts`, under `psk`.
fn report(agent_id: &str, tick: u64, ts: i64, psk: &str) -> Vec<u8> {
    let fleet = SimFleet::new("relay-tests", 3);
    let mut r = kattila_agent::report::build_report(agent_id, ts, fleet.telemetry(1, ts));
    r.tick = tick;
    r.nonce = format!("{:032x}", tick + 7);
    signed_envelope(&Psk::new(psk).unwrap(), &r)
}

/// `inner` wrapped in a relay layer signed by `relayer`.
fn wrap(relayer: &str, tick: u64, inner: &[u8]) -> Vec<u8> {
    let nonce = format!("{:032x}", tick + 1_000_000);
    relay_envelope(&Psk::new(PSK).unwrap(), relayer, now(), &nonce, tick, inner).unwrap()
}

/// Stored messages that came through a relay.
fn relayed_rows(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM reports WHERE relay_path IS NOT NULL", [], |r| r.get(0))
        .unwrap()
}

fn read_agent_id(state: &std::path::Path) -> String {
    std::fs::read_to_string(state.join("agent_id")).unwrap().trim().to_string()
}

/// `kattila-agent --once` for a node with state in `state`.
fn once(state: &std::path::Path, manager_url: &str, relays: &[String]) -> (i32, String) {
    std::fs::create_dir_all(state).unwrap();
    let mut cmd = agent_command(state);
    cmd.args(["--once", "--manager-url", manager_url, "--retries", "1", "--timeout", "3"])
        .arg("--state-dir")
        .arg(state)
        .env("KATTILA_PSK", PSK);
    for r in relays {
        cmd.args(["--relay", r]);
    }
    let (code, stdout, stderr) = run_command(cmd);
    assert!(stdout.is_empty(), "--once prints nothing on stdout: {stdout}");
    assert!(!stderr.contains(PSK), "the key must never be printed");
    (code, stderr)
}

#[test]
fn report_of_a_cut_off_agent_arrives_through_a_relay_and_the_answer_travels_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &receiver.url(), &[], &[]);
    a.wait_path("direct", Some(0));

    let b_state = dir.path().join("b");
    let (code, stderr) = once(&b_state, &dead_url(), &[a.url()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("delivered through 1 relay hop"), "{stderr}");

    let b_id = read_agent_id(&b_state);
    let rows = stored_reports(&db, &b_id);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].2.as_deref(), Some(a.agent_id().as_str()), "relay path is A");
    // Nothing was left in B's spool: it knew its report was committed.
    let spooled = std::fs::read_dir(b_state.join("spool"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(spooled, 0);
}

#[test]
fn three_hop_chain_delivers_and_a_fourth_hop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &receiver.url(), &[], &[]);
    a.wait_path("direct", Some(0));
    let b = Agent::start("agent-b", &dir.path().join("b"), PSK, &dead_url(), &[a.url()], &[]);
    b.wait_path("relay", Some(1));
    let c = Agent::start("agent-c", &dir.path().join("c"), PSK, &dead_url(), &[b.url()], &[]);
    c.wait_path("relay", Some(2));
    let d = Agent::start("agent-d", &dir.path().join("d"), PSK, &dead_url(), &[c.url()], &[]);
    d.wait_path("relay", Some(3));

    // D's reports went D → C → B → A → receiver: three relay layers.
    let (a_id, b_id, c_id, d_id) = (a.agent_id(), b.agent_id(), c.agent_id(), d.agent_id());
    wait_until("a report of D is stored", || !stored_reports(&db, &d_id).is_empty());
    let rows = stored_reports(&db, &d_id);
    let expected = format!("{c_id} {b_id} {a_id}");
    assert!(rows.iter().all(|r| r.2.as_deref() == Some(expected.as_str())), "{rows:?}");

    // E behind D would need a fourth layer: A refuses it, the refusal comes
    // back down the chain, and E keeps its report in its spool.
    let e_state = dir.path().join("e");
    let (code, stderr) = once(&e_state, &dead_url(), &[d.url()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("too_many_relays"), "{stderr}");
    assert!(stored_reports(&db, &read_agent_id(&e_state)).is_empty());
    let spooled = std::fs::read_dir(e_state.join("spool"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(spooled, 1);
}

#[test]
fn relay_refuses_bad_input_and_forwards_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &receiver.url(), &[], &[]);
    a.wait_path("direct", Some(0));
    let a_id = a.agent_id();

    let origin = "0123456789abcdef0123456789abcdef";
    let good = report(origin, 1, now(), PSK);

    // Tampered: one byte of the signed data changed.
    let mut tampered = good.clone();
    let pos = tampered.windows(9).position(|w| w == b"\"site0-no").expect("hostname in report");
    tampered[pos + 1] = b'S';
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"not json at all".to_vec(), 400, "bad_json"),
        ("tampered", tampered, 401, "bad_mac"),
        ("wrong key", report(origin, 2, now(), "some-other-key"), 401, "bad_mac"),
        ("stale", report(origin, 3, now() - 3600, PSK), 401, "stale"),
        (
            "loop",
            wrap("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", 5, &wrap(&a_id, 4, &good)),
            400,
            "relay_loop",
        ),
        (
            "three layers already",
            wrap("c3", 8, &wrap("c2", 7, &wrap("c1", 6, &good))),
            400,
            "too_many_relays",
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, answer) = a.post("/status/relay", body);
        assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{what}: {answer}");
    }
    assert_eq!(relayed_rows(&db), 0, "nothing was forwarded");
    assert!(stored_reports(&db, origin).is_empty());

    // A valid envelope goes through, and the receiver's answer comes back.
    let (status, answer) = a.post("/status/relay", good);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["agent_id"], origin);
    assert_eq!(answer["relay_hops"], 1);
    let rows = stored_reports(&db, origin);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2.as_deref(), Some(a_id.as_str()));
}

/// `envelope` padded with whitespace inside its outer object to exactly
/// `size` bytes: the same message, signed bytes untouched, just bigger.
fn padded(envelope: &[u8], size: usize) -> Vec<u8> {
    let mut out = b"{".to_vec();
    out.resize(size - (envelope.len() - 1), b' ');
    out.extend_from_slice(&envelope[1..]);
    assert_eq!(out.len(), size);
    out
}

/// The receiver's count of messages it refused as too large.
fn too_large_refusals(receiver: &Receiver) -> u64 {
    let text = reqwest::blocking::get(format!("{}/metrics", receiver.url()))
        .and_then(|r| r.text())
        .expect("receiver serves /metrics");
    text.lines()
        .filter(|l| l.starts_with("kattila_reports_rejected_total") && l.contains("too_large"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_relay_refuses_an_envelope_its_own_layer_would_push_over_the_limit() {
    use kattila_proto::limits::{MAX_BODY_BYTES, MAX_RELAYABLE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &receiver.url(), &[], &[]);
    a.wait_path("direct", Some(0));
    let origin = "0123456789abcdef0123456789abcdef";

    // Within the limit on its own, over it once a relay layer is added.
    let near_limit = padded(&report(origin, 1, now(), PSK), MAX_BODY_BYTES - 100);
    let (status, answer) = a.post("/status/relay", near_limit.clone());
    assert_eq!((status, answer["error"].as_str()), (413, Some("too_large")), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("relay"), "{answer}");
    assert_eq!(too_large_refusals(&receiver), 0, "the relay sent nothing to be refused");
    assert!(stored_reports(&db, origin).is_empty());
    // The same envelope is fine sent directly: only the relay layer was too much.
    let (status, answer) = receiver.post("/status/updates", near_limit);
    assert_eq!(status, 200, "{answer}");

    // What the protocol tells origins to stay within passes through a relay.
    let relayable = padded(&report(origin, 2, now(), PSK), MAX_RELAYABLE_BYTES);
    let (status, answer) = a.post("/status/relay", relayable);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["relay_hops"], 1);
    assert_eq!(stored_reports(&db, origin).len(), 2);
}

#[test]
fn a_relay_without_a_path_says_so_and_the_origin_spools() {
    let dir = tempfile::tempdir().unwrap();
    // Two agents that point at each other and at no live receiver.
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &dead_url(), &[], &[]);
    let b = Agent::start("agent-b", &dir.path().join("b"), PSK, &dead_url(), &[a.url()], &[]);
    a.wait_path("none", None);
    b.wait_path("none", None);
    let (status, answer) =
        a.post("/status/relay", report("feedfeedfeedfeedfeedfeedfeedfeed", 1, now(), PSK));
    assert_eq!((status, answer["error"].as_str()), (502, Some("no_path")), "{answer}");

    let c_state = dir.path().join("c");
    let (code, stderr) = once(&c_state, &dead_url(), &[b.url(), a.url()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("kept in the spool (1 waiting)"), "{stderr}");
}

#[test]
fn signed_reset_gives_a_new_identity_and_unsigned_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start("agent-a", &dir.path().join("a"), PSK, &dead_url(), &[], &[]);
    let old = a.agent_id();
    let psk = Psk::new(PSK).unwrap();
    let forged = kattila_agent::reset::request(&Psk::new("wrong").unwrap(), &old, now(), 1);
    let (status, answer) = a.post("/status/reset", forged);
    assert_eq!((status, answer["error"].as_str()), (401, Some("bad_mac")));
    let (status, _) = a.post("/status/reset", b"{}".to_vec());
    assert_eq!(status, 400);
    let other = kattila_agent::reset::request(&psk, "0000000000000000000000000000000f", now(), 2);
    let (status, answer) = a.post("/status/reset", other);
    assert_eq!((status, answer["error"].as_str()), (400, Some("wrong_agent")));
    assert_eq!(a.agent_id(), old, "refused resets change nothing");

    let request = kattila_agent::reset::request(&psk, &old, now(), 3);
    let (status, answer) = a.post("/status/reset", request.clone());
    assert_eq!(status, 200, "{answer}");
    let new = answer["agent_id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(a.agent_id(), new);
    assert_eq!(read_agent_id(&a.state), new, "the new id is persisted");
    // Replaying the same request names the old id: refused.
    let (status, _) = a.post("/status/reset", request);
    assert_eq!(status, 400);
    assert_eq!(a.agent_id(), new);
}
