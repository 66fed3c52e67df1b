//! Ticks over the whole u64 range: the protocol allows 0 ..= 2^63 − 1 (SQLite
//! integers are signed 64-bit). Anything above is refused as `bad_shape`;
//! anything accepted stays a replay across a receiver restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::*;
use kattila_agent::identity::new_nonce;
use kattila_agent::report::{build_report, Telemetry};
use kattila_proto::limits::MAX_UINT;
use kattila_proto::{
    signed_envelope, verify, KeySet, Psk, VerifyError, VerifyOptions, REPLAY_WINDOW,
};
use kattila_receiver::metrics::Metrics;
use kattila_receiver::process::Settings;
use kattila_receiver::writer::{Outcome, Writer, WriterHandle};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// A validly signed report from `agent_id` with `tick` and a fresh nonce.
fn report(agent_id: &str, tick: u64) -> Vec<u8> {
    let now = kattila_agent::unix_now();
    let telemetry = Telemetry { hostname: format!("host-{agent_id}"), ..Telemetry::default() };
    let mut r = build_report(agent_id, now, telemetry);
    r.tick = tick;
    r.nonce = new_nonce();
    signed_envelope(&Psk::new(PSK).unwrap(), &r)
}

fn reports_of(h: &Harness, agent_id: &str) -> i64 {
    h.conn()
        .query_row("SELECT count(*) FROM reports WHERE agent_id = ?1", [agent_id], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_tick_stays_a_replay_after_a_restart_and_larger_ones_are_refused() {
    let h = Harness::start(|_| {}).await;
    let agent = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let first = report(agent, MAX_UINT);
    let (status, answer) =
        h.post("/status/updates", None, std::str::from_utf8(&first).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tick"], MAX_UINT);

    for tick in [MAX_UINT + 5, u64::MAX] {
        // From a new agent, then from one the receiver already knows.
        let other = format!("{agent}-{tick}");
        for from in [other.as_str(), agent] {
            let body = report(from, tick);
            let (status, answer) =
                h.post("/status/updates", None, std::str::from_utf8(&body).unwrap()).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (400, Some("bad_shape")),
                "{tick} from {from}: {answer}"
            );
        }
        assert_eq!(reports_of(&h, &other), 0, "tick {tick}: nothing stored");
    }
    assert_eq!(reports_of(&h, agent), 1);

    // Stop the receiver, start a new one on the same database: the tick,
    // another envelope with it, and one below the window are all replays.
    let dir = h.stop().await;
    let h = Harness::start_in(dir, |_| {}).await;
    for body in [first, report(agent, MAX_UINT), report(agent, MAX_UINT - REPLAY_WINDOW)] {
        let (status, answer) =
            h.post("/status/updates", None, std::str::from_utf8(&body).unwrap()).await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("replay")), "{answer}");
    }
    assert_eq!(reports_of(&h, agent), 1, "one audit row for one agent and tick");
}

/// The receiver's writer on a database, restartable like the process.
struct Storage {
    db: std::path::PathBuf,
    rt: tokio::runtime::Runtime,
    running: Option<(Writer, WriterHandle)>,
    _dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Storage {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut s = Storage { db: dir.path().join("kattila.db"), rt, running: None, _dir: dir };
        s.restart();
        s
    }

    /// Stops the writer (it commits what it has and exits), starts another.
    fn restart(&mut self) {
        if let Some((writer, handle)) = self.running.take() {
            drop(handle);
            writer.join();
        }
        let metrics = Arc::new(Metrics::default());
        self.running = Some(Writer::start(&self.db, 16, Settings::default(), metrics).unwrap());
    }

    /// Verifies `body` as the receiver does and, if it passes, submits it.
    fn submit(&self, body: &[u8]) -> Result<Outcome, VerifyError> {
        let keys = KeySet::new(Psk::new(PSK).unwrap());
        let verified = verify(body, &keys, VerifyOptions::at(kattila_agent::unix_now()))?;
        let handle = &self.running.as_ref().unwrap().1;
        let now = kattila_agent::unix_now();
        Ok(self.rt.block_on(handle.submit(verified, body.to_vec().into(), now)).unwrap())
    }
}

/// The property, for one tick: refused as bad_shape by verify, or once
/// committed, a replay after a restart (the same envelope and a new one
/// with the same tick).
fn no_replay_across_a_restart(storage: &mut Storage, agent: &str, tick: u64) {
    let body = report(agent, tick);
    match storage.submit(&body) {
        Err(VerifyError::BadShape(detail)) => {
            assert!(tick > MAX_UINT, "tick {tick} in range refused: {detail}");
            return;
        }
        Err(other) => panic!("tick {tick}: unexpected {other:?}"),
        Ok(outcome) => {
            assert!(matches!(outcome, Outcome::Committed), "tick {tick}: {outcome:?}")
        }
    }
    storage.restart();
    for again in [body, report(agent, tick)] {
        let outcome = storage.submit(&again).expect("verified the first time");
        assert!(
            matches!(outcome, Outcome::Replay { .. }),
            "tick {tick} after restart: {outcome:?}"
        );
    }
    // Checked last, so that for a tick the receiver cannot keep it is the
    // replay above that fails.
    assert!(tick <= MAX_UINT, "tick {tick} above the range accepted");
}

static AGENTS: AtomicU64 = AtomicU64::new(0);

/// A fresh agent for every case, so cases (and proptest's reruns) never
/// share a replay window.
fn fresh_agent() -> String {
    format!("prop-{}-{}", std::process::id(), AGENTS.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn edge_ticks_are_refused_or_stay_replays_across_a_restart() {
    let mut storage = Storage::new();
    for tick in [0, 1, MAX_UINT - 1, MAX_UINT, MAX_UINT + 1, MAX_UINT + 5, u64::MAX - 1, u64::MAX] {
        no_replay_across_a_restart(&mut storage, &fresh_agent(), tick);
    }
}

fn any_tick() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0..=MAX_UINT,
        MAX_UINT + 1..=u64::MAX,
        MAX_UINT - 200..=MAX_UINT + 200
    ]
}

#[test]
fn no_tick_is_ever_accepted_twice_across_a_restart() {
    // Each case restarts the writer (an fsync'd commit and a reopen), so a
    // few hundred cases on one database; the edges are covered above.
    let storage = std::cell::RefCell::new(Storage::new());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let result = runner.run(&any_tick(), |tick| {
        no_replay_across_a_restart(&mut storage.borrow_mut(), &fresh_agent(), tick);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
