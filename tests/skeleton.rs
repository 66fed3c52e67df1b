//! One report from simulated agents to the published page, through the real
//! binaries, and every bad input refused over real HTTP with nothing stored.

mod util;

use kattila_agent::simulate::SimFleet;
use kattila_proto::envelope::envelope_from_data_bytes;
use kattila_proto::{relay_envelope, signed_envelope, Psk};
use util::*;

const PSK: &str = "e2e-fleet-key";

fn now() -> i64 {
    kattila_agent::unix_now()
}

/// A valid signed report from `agent_id` with `tick`, timestamped `ts`.
fn report_envelope(agent_id: &str, tick: u64, ts: i64) -> Vec<u8> {
    let fleet = SimFleet::new("bad-input", 3);
    let mut report = kattila_agent::report::build_report(agent_id, ts, fleet.telemetry(1, ts));
    report.timestamp = ts;
    report.tick = tick;
    report.nonce = format!("{tick:032x}");
    signed_envelope(&Psk::new(PSK).unwrap(), &report)
}

fn relay(relayer: &str, tick: u64, inner: &[u8]) -> Vec<u8> {
    let nonce = format!("{:032x}", tick + 1_000_000);
    relay_envelope(&Psk::new(PSK).unwrap(), relayer, now(), &nonce, tick, inner).unwrap()
}

#[test]
fn simulated_fleet_reaches_the_published_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let state = dir.path().join("sim-state");
    let (code, _, stderr) = run(
        AGENT,
        &[
            "simulate",
            "--agents",
            "4",
            "--rounds",
            "2",
            "--interval",
            "0.2",
            "--seed",
            "e2e",
            "--url",
            &receiver.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("KATTILA_PSK", PSK)],
    );
    assert_eq!(code, 0, "simulator failed: {stderr}");
    assert!(stderr.contains("8 reports accepted, 0 refused, 0 undelivered"), "{stderr}");

    let out = dir.path().join("site");
    let (code, stdout, stderr) = run(
        SITEGEN,
        &["--once", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "sitegen failed: {stderr}");
    assert!(stdout.contains("built 4 agents"), "{stdout}");

    let page = std::fs::read_to_string(out.join("current/index.html")).unwrap();
    let fleet = SimFleet::new("e2e", 4);
    for agent in &fleet.agents {
        assert!(page.contains(&agent.agent_id), "page misses {}", agent.agent_id);
        assert!(page.contains(&agent.hostname), "page misses {}", agent.hostname);
    }
    assert_eq!(page.matches("<tr>").count(), 1 + 4, "header row plus exactly the four agents");
    assert!(page.contains("agents (4)"), "the overview counts the four agents");

    // A second run continues the persisted ticks: nothing is refused as a replay.
    let (code, _, stderr) = run(
        AGENT,
        &[
            "simulate",
            "--agents",
            "4",
            "--rounds",
            "1",
            "--interval",
            "0.1",
            "--seed",
            "e2e",
            "--url",
            &receiver.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("KATTILA_PSK", PSK)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(count(&db, "reports"), 12);
    assert_eq!(count(&db, "agents"), 4);
}

#[test]
fn bad_input_gets_the_documented_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let agent = "0123456789abcdef0123456789abcdef";
    let good = report_envelope(agent, 10, now());
    let (status, answer) = receiver.post("/status/updates", good.clone());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["tick"], 10);
    let before = dump_db(&db);

    let mut wrong_mac = good.clone();
    let at = wrong_mac.len() - 3;
    wrong_mac[at] = if wrong_mac[at] == b'0' { b'1' } else { b'0' };
    let other_key = {
        let fleet = SimFleet::new("bad-input", 3);
        let ts = now();
        let mut r = kattila_agent::report::build_report(agent, ts, fleet.telemetry(1, ts));
        r.tick = 11;
        r.nonce = format!("{:032x}", 11);
        signed_envelope(&Psk::new("not-the-fleet-key").unwrap(), &r)
    };
    let register_on_updates = {
        let data = format!(
            r#"{{"kind":"register","agent_id":"{agent}","timestamp":{},"nonce":"{:032x}","tick":12,"hostname":"h","agent_version":"1"}}"#,
            now(),
            12
        );
        envelope_from_data_bytes(&Psk::new(PSK).unwrap(), data.as_bytes())
    };
    let four_relays = ["r1", "r2", "r3", "r4"]
        .iter()
        .enumerate()
        .fold(report_envelope(agent, 13, now()), |env, (i, r)| relay(r, i as u64 + 1, &env));
    let loop_chain =
        relay("r1", 5, &relay("r2", 6, &relay("r1", 7, &report_envelope(agent, 14, now()))));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("truncated JSON", good[..good.len() / 2].to_vec(), 400, "bad_json"),
        ("not JSON at all", b"hello".to_vec(), 400, "bad_json"),
        ("empty body", Vec::new(), 400, "bad_json"),
        ("wrong MAC", wrong_mac, 401, "bad_mac"),
        ("signed with another key", other_key, 401, "bad_mac"),
        ("replayed envelope", good.clone(), 409, "replay"),
        ("stale timestamp", report_envelope(agent, 20, now() - 3600), 401, "stale"),
        ("timestamp from the future", report_envelope(agent, 21, now() + 3600), 401, "stale"),
        ("oversized body", vec![b' '; (1 << 20) + 10], 413, "too_large"),
        ("register sent to updates", register_on_updates, 400, "wrong_kind"),
        ("four relay layers", four_relays, 400, "too_many_relays"),
        ("relay loop", loop_chain, 400, "relay_loop"),
        (
            "unsupported version",
            String::from_utf8(report_envelope(agent, 22, now()))
                .unwrap()
                .replacen("\"version\":1", "\"version\":9", 1)
                .into_bytes(),
            400,
            "unsupported_version",
        ),
    ];
    for (what, body, expected_status, expected_code) in cases {
        let (status, answer) = receiver.post("/status/updates", body);
        assert_eq!(status, expected_status, "{what}: {answer}");
        assert_eq!(answer["error"], expected_code, "{what}: {answer}");
        assert!(
            answer["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: no detail in {answer}"
        );
        assert!(!answer.to_string().contains(PSK), "{what}: answer leaks the key");
    }
    assert_eq!(dump_db(&db), before, "a refused message changed the database");
}

#[test]
fn relayed_report_is_committed_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let origin = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let chain = relay("relay-two", 1, &relay("relay-one", 1, &report_envelope(origin, 1, now())));
    let (status, answer) = receiver.post("/status/updates", chain);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["relay_hops"], 2);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (hops, via): (i64, String) = conn
        .query_row("SELECT relay_hops, via_agent FROM agents WHERE agent_id = ?1", [origin], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((hops, via.as_str()), (2, "relay-two"));
    let path: String = conn.query_row("SELECT relay_path FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(path, "relay-one relay-two");
}

#[test]
fn replay_is_refused_after_a_receiver_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let agent = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let envelope = report_envelope(agent, 7, now());
    assert_eq!(receiver.post("/status/updates", envelope.clone()).0, 200);
    // A late, lower tick (a spooled report) is inside the window.
    let late = report_envelope(agent, 3, now());
    assert_eq!(receiver.post("/status/updates", late.clone()).0, 200);
    // A relayer's own layer is remembered too, not only the origin's.
    let origin = "dddddddddddddddddddddddddddddddd";
    let relayed = relay("relay-one", 5, &report_envelope(origin, 1, now()));
    assert_eq!(receiver.post("/status/updates", relayed).0, 200);
    let port = receiver.port;
    receiver.stop();

    let receiver = Receiver::start_on(&db, PSK, port);
    for (what, body) in [
        ("the newest report", envelope),
        ("a late report", late),
        ("a relay layer", relay("relay-one", 5, &report_envelope(origin, 2, now()))),
    ] {
        let (status, answer) = receiver.post("/status/updates", body);
        assert_eq!((status, answer["error"].as_str()), (409, Some("replay")), "{what}: {answer}");
    }
    // Unused ticks are fine: inside the window and above it.
    assert_eq!(receiver.post("/status/updates", report_envelope(agent, 4, now())).0, 200);
    assert_eq!(receiver.post("/status/updates", report_envelope(agent, 8, now())).0, 200);
    let relayed = relay("relay-one", 6, &report_envelope(origin, 2, now()));
    assert_eq!(receiver.post("/status/updates", relayed).0, 200);
}

#[test]
fn register_is_accepted_on_its_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let data = format!(
        r#"{{"kind":"register","agent_id":"cccc","timestamp":{},"nonce":"{:032x}","tick":1,"hostname":"fresh-node","agent_version":"0.1.0"}}"#,
        now(),
        1
    );
    let env = envelope_from_data_bytes(&Psk::new(PSK).unwrap(), data.as_bytes());
    let (status, answer) = receiver.post("/status/register", env.clone());
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = receiver.post("/status/updates", report_envelope("cccc", 2, now()));
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = receiver.post("/status/register", report_envelope("cccc", 3, now()));
    assert_eq!((status, answer["error"].as_str()), (400, Some("wrong_kind")));
}

#[test]
fn sitegen_reports_a_missing_or_foreign_database_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site");
    let missing = dir.path().join("nope.db");
    let (code, _, stderr) = run(
        SITEGEN,
        &["--once", "--db", missing.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not sqlite at all, just text").unwrap();
    let (code, _, stderr) = run(
        SITEGEN,
        &["--once", "--db", junk.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("not a readable SQLite database"), "{stderr}");
    assert!(!out.join("current").exists(), "a failed build published something");
}

#[test]
fn receiver_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(
        RECEIVER,
        &["--listen", "127.0.0.1:0", "--db", dir.path().join("k.db").to_str().unwrap()],
        &[("KATTILA_PSK", "   ")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("KATTILA_PSK is empty"), "{stderr}");
}
