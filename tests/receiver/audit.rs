//! The audit table: every message leaves a row; the raw envelope is kept
//! when the report changed something, once per audit interval otherwise,
//! or always with `audit_every_report`.

use crate::common::*;
use kattila_agent::simulate::SimFleet;

fn raw_sizes(h: &Harness, agent: &str) -> Vec<(i64, i64)> {
    let conn = h.conn();
    let mut stmt = conn
        .prepare("SELECT length(raw), size FROM reports WHERE agent_id = ?1 ORDER BY tick")
        .unwrap();
    stmt.query_map([agent], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_copies_are_kept_for_changes_and_periodically() {
    let h = Harness::start(|c| c.settings.audit_interval_secs = 3600).await;
    let fleet = SimFleet::new("audit", 3);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap(); // first report: everything is new
    a.send(&h.url).await.unwrap(); // same state: metadata only
    a.send_with(&h.url, |t| t.interfaces[1].mtu = 9000).await.unwrap(); // a change
    let rows = raw_sizes(&h, &id);
    assert_eq!(rows.len(), 3, "every report leaves a row");
    assert!(
        rows.iter().all(|(_, size)| *size > 1000),
        "the size of each message is recorded: {rows:?}"
    );
    assert_eq!(rows[0].0, rows[0].1, "first report kept whole");
    assert_eq!(rows[1].0, 0, "unchanged report: no raw copy");
    assert_eq!(rows[2].0, rows[2].1, "changed report kept whole");
    // The kept copy is the exact envelope: it still verifies.
    let raw: Vec<u8> = h
        .conn()
        .query_row(
            "SELECT raw FROM reports WHERE agent_id = ?1 ORDER BY tick LIMIT 1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let keys = kattila_proto::KeySet::new(kattila_proto::Psk::new(PSK).unwrap());
    kattila_proto::verify(&raw, &keys, kattila_proto::VerifyOptions::at(kattila_agent::unix_now()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_is_kept_when_asked() {
    let h = Harness::start(|c| c.settings.audit_every_report = true).await;
    let fleet = SimFleet::new("audit-all", 3);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    for _ in 0..3 {
        a.send(&h.url).await.unwrap();
    }
    assert!(raw_sizes(&h, &id).iter().all(|(raw, size)| raw == size));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_change_is_stored_and_counts_as_a_change() {
    let h = Harness::start(|c| c.settings.audit_interval_secs = 3600).await;
    let fleet = SimFleet::new("routes", 3);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    a.send(&h.url).await.unwrap();
    a.send_with(&h.url, |t| t.routes[0].metric = Some(7)).await.unwrap();
    let rows = raw_sizes(&h, &id);
    assert_eq!(rows[1].0, 0, "unchanged routes: no raw copy");
    assert_eq!(rows[2].0, rows[2].1, "changed routes: raw copy kept");
    let metric: Option<i64> = h
        .conn()
        .query_row(
            "SELECT metric FROM routes WHERE agent_id = ?1 AND dst = '0.0.0.0/0'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(metric, Some(7));
}
