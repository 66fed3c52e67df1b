//! The agent's disk spool with a real agent and a real receiver: reports
//! pile up while the receiver is down and are delivered oldest first, with
//! their original `observed_at`, when it is back; a full spool drops the
//! oldest and says how many in the next delivered report.

mod util;

use std::path::Path;

use util::*;

const PSK: &str = "spool-test-fleet-key";

/// The spooled reports' `observed_at`, oldest first (from the file names,
/// `<sequence>-<observed_at>.json`).
fn spooled(state: &Path) -> Vec<i64> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| n.trim_end_matches(".json").split_once('-').unwrap().1.parse().unwrap())
        .collect()
}

fn spool_dropped_at_receiver(db: &Path, agent_id: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT spool_dropped FROM agents WHERE agent_id = ?1", [agent_id], |r| r.get(0))
        .unwrap()
}

#[test]
fn spool_fills_while_the_receiver_is_down_and_drains_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("x");

    let x = Agent::start("agent-x", &state, PSK, &url, &[], &[]);
    let id = x.agent_id();
    x.wait_health("five reports spooled", |h| h["spool"]["reports"].as_u64() >= Some(5));
    x.stop();
    let waiting = spooled(&state);
    assert!(waiting.len() >= 5);
    assert!(waiting.windows(2).all(|w| w[0] <= w[1]), "{waiting:?}");

    let _receiver = Receiver::start_on(&db, PSK, port);
    let x = Agent::start("agent-x", &state, PSK, &url, &[], &[]);
    wait_until("the spool drains", || stored_reports(&db, &id).len() > waiting.len());
    x.wait_health("empty spool", |h| h["spool"]["reports"] == 0);
    drop(x);

    let rows = stored_reports(&db, &id);
    // Every spooled report arrived, first and in order, with the time it
    // was collected (not the time it was sent), each with a fresh tick.
    let delivered: Vec<i64> = rows.iter().take(waiting.len()).map(|r| r.1).collect();
    assert_eq!(delivered, waiting);
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "ticks increase: {rows:?}");
    assert!(rows.iter().all(|r| r.2.is_none()), "delivered directly");
    assert_eq!(spool_dropped_at_receiver(&db, &id), 0, "nothing was dropped");
}

#[test]
fn full_spool_drops_the_oldest_and_reports_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("x");
    std::fs::create_dir_all(&state).unwrap();

    // Room for about three reports of this host.
    let mut dump = agent_command(&state);
    dump.args(["--dump", "-", "--state-dir"]).arg(&state).env("KATTILA_PSK", PSK);
    let (code, envelope, _) = run_command(dump);
    assert_eq!(code, 0);
    let limit = (envelope.len() * 3).to_string();

    let x = Agent::start("agent-x", &state, PSK, &url, &[], &["--spool-max-bytes", &limit]);
    let id = x.agent_id();
    x.wait_health("reports dropped", |h| h["spool"]["dropped"].as_u64() >= Some(3));
    x.stop();
    let waiting = spooled(&state);
    let dropped: i64 =
        std::fs::read_to_string(state.join("spool/dropped")).unwrap().parse().unwrap();
    assert!((1..=3).contains(&waiting.len()), "{waiting:?}");
    let bytes: u64 = std::fs::read_dir(state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes <= envelope.len() as u64 * 3, "spool stays within its limit");

    let _receiver = Receiver::start_on(&db, PSK, port);
    let x = Agent::start("agent-x", &state, PSK, &url, &[], &["--spool-max-bytes", &limit]);
    wait_until("the spool drains", || stored_reports(&db, &id).len() > waiting.len());
    x.wait_health("dropped count acknowledged", |h| h["spool"]["dropped"] == 0);
    drop(x);
    let rows = stored_reports(&db, &id);
    let delivered: Vec<i64> = rows.iter().take(waiting.len()).map(|r| r.1).collect();
    assert_eq!(delivered, waiting, "the newest reports survived, oldest first");
    assert_eq!(spool_dropped_at_receiver(&db, &id), dropped, "the receiver was told");
}
