//! A 200 means committed: kill the receiver with SIGKILL in the middle of
//! a load, then check that every report that got a 200 is in the database.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kattila_agent::simulate::SimFleet;
use kattila_proto::{signed_envelope, Psk};
use util::*;

const PSK: &str = "crash-test-key";

#[test]
fn every_acknowledged_report_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let mut receiver = Receiver::start(&db, PSK);
    let url = format!("{}/status/updates", receiver.url());
    let fleet = Arc::new(SimFleet::new("crash", 16));
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (fleet, acknowledged, stop, url) =
                (fleet.clone(), acknowledged.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let psk = Psk::new(PSK).unwrap();
                let id = fleet.agents[i].agent_id.clone();
                for tick in 1..=100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let now = kattila_agent::unix_now();
                    let mut report =
                        kattila_agent::report::build_report(&id, now, fleet.telemetry(i, now));
                    report.tick = tick;
                    report.nonce = format!("{:016x}{tick:016x}", i);
                    match client.post(&url).body(signed_envelope(&psk, &report)).send() {
                        Ok(r) if r.status() == 200 => {
                            acknowledged.lock().unwrap().push((id.clone(), tick))
                        }
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        Err(_) => break, // the receiver is gone
                    }
                }
            })
        })
        .collect();
    // Let the load run, then kill without warning.
    std::thread::sleep(Duration::from_millis(1500));
    receiver.child.kill().unwrap();
    receiver.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 50, "the load did not run: {} acknowledged", acknowledged.len());

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT 1 FROM reports WHERE agent_id = ?1 AND tick = ?2").unwrap();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|(id, tick)| !stmt.exists(rusqlite::params![id, *tick as i64]).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged reports lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!("{} acknowledged reports, all present after SIGKILL", acknowledged.len());
}
