//! Validly signed messages that the protocol refuses: the receiver answers
//! 400 bad_shape and its database is exactly as before.

use crate::common::*;
use kattila_agent::identity::new_nonce;
use kattila_agent::report::build_report;
use kattila_agent::simulate::SimFleet;
use kattila_proto::envelope::envelope_from_data_bytes;
use kattila_proto::{sign_data, signed_envelope, Psk, Report};

fn psk() -> Psk {
    Psk::new(PSK).unwrap()
}

/// A report of a simulated agent, ready to be changed and signed.
fn report(fleet: &SimFleet, tick: u64) -> Report {
    let now = kattila_agent::unix_now();
    let mut r = build_report(&fleet.agents[0].agent_id, now, fleet.telemetry(0, now));
    r.tick = tick;
    r.nonce = new_nonce();
    r
}

async fn post(h: &Harness, body: &[u8]) -> (u16, serde_json::Value) {
    h.post("/status/updates", None, std::str::from_utf8(body).unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn validly_signed_messages_of_the_wrong_shape_change_nothing() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("shapes", 1);
    // One accepted report, so the agent and its state exist.
    let (status, answer) = post(&h, &signed_envelope(&psk(), &report(&fleet, 1))).await;
    assert_eq!(status, 200, "{answer}");
    let before = kattila_testsupport::dump_db(&h.db);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    // The envelope as [version, data, hmac], the MAC over data intact.
    let data = serde_json::to_string(&report(&fleet, 2)).unwrap();
    let mac = sign_data(&psk(), data.as_bytes());
    cases.push(("envelope as array", format!("[1,{data},\"{mac}\"]").into_bytes()));

    // `system` as [uptime_secs, load, kernel].
    let r = report(&fleet, 3);
    let system = serde_json::to_string(&r.system).unwrap();
    let array =
        serde_json::to_string(&(r.system.uptime_secs, r.system.load, &r.system.kernel)).unwrap();
    let data = serde_json::to_string(&r).unwrap();
    assert!(data.contains(&system));
    cases.push((
        "system as array",
        envelope_from_data_bytes(&psk(), data.replacen(&system, &array, 1).as_bytes()),
    ));

    // Collected a day after it was signed.
    let mut r = report(&fleet, 4);
    r.observed_at = r.timestamp + 86_400;
    cases.push(("observed_at a day after timestamp", signed_envelope(&psk(), &r)));

    // Collected before 1970.
    let mut r = report(&fleet, 5);
    r.observed_at = -5;
    cases.push(("negative observed_at", signed_envelope(&psk(), &r)));

    // kind in serde's map form of an enum variant.
    let data = serde_json::to_string(&report(&fleet, 6)).unwrap();
    let data = data.replacen(r#""kind":"report""#, r#""kind":{"report":null}"#, 1);
    cases.push(("kind as a map", envelope_from_data_bytes(&psk(), data.as_bytes())));

    // A counter SQLite cannot hold.
    let mut r = report(&fleet, 7);
    r.interfaces[0].rx_bytes = u64::MAX;
    cases.push(("rx_bytes above 2^63-1", signed_envelope(&psk(), &r)));

    for (what, body) in cases {
        let (status, answer) = post(&h, &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_shape")),
            "{what}: {answer}"
        );
        assert_eq!(kattila_testsupport::dump_db(&h.db), before, "{what}: the database changed");
    }

    // The same agent's next valid report is still accepted.
    let (status, answer) = post(&h, &signed_envelope(&psk(), &report(&fleet, 8))).await;
    assert_eq!(status, 200, "{answer}");
}
