//! The alarm lifecycle, driven by simulated agents through real HTTP.

use crate::common::*;
use kattila_agent::simulate::SimFleet;
use kattila_receiver::config::AdminToken;

fn set_state(t: &mut kattila_agent::report::Telemetry, name: &str, state: &str) {
    t.interfaces.iter_mut().find(|i| i.name == name).unwrap().state = state.into();
}

#[tokio::test(flavor = "multi_thread")]
async fn interface_down_is_raised_after_the_threshold_and_resolved_when_it_returns() {
    let h = Harness::start(|c| c.settings.alarm_threshold = 2).await;
    let fleet = SimFleet::new("alarms", 3);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    a.send_with(&h.url, |t| set_state(t, "eth0", "down")).await.unwrap();
    assert_eq!(h.active("interface_down", &id), 0, "one observation is below the threshold");
    a.send_with(&h.url, |t| set_state(t, "eth0", "down")).await.unwrap();
    assert_eq!(h.active("interface_down", &id), 1, "raised after two");
    a.send_with(&h.url, |t| set_state(t, "eth0", "down")).await.unwrap();
    assert_eq!(h.active("interface_down", &id), 1, "not raised twice");
    // A single good report does not resolve it (flap suppression)…
    a.send(&h.url).await.unwrap();
    assert_eq!(h.active("interface_down", &id), 1);
    // …two do.
    a.send(&h.url).await.unwrap();
    assert_eq!(h.active("interface_down", &id), 0);
    assert_eq!(h.resolved("interface_down", &id), 1);
    // A flapping interface (down, up, down, up) never raises.
    for state in ["down", "up", "down", "up"] {
        a.send_with(&h.url, |t| set_state(t, "eth0", state)).await.unwrap();
    }
    assert_eq!(h.active("interface_down", &id) + h.resolved("interface_down", &id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_and_new_interfaces() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("alarms", 3);
    let mut a = SimAgent::new(&fleet, 2);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    assert_eq!(
        h.active("interface_new", &id),
        0,
        "the first report introduces interfaces silently"
    );
    for _ in 0..2 {
        a.send_with(&h.url, |t| t.interfaces.retain(|i| i.name != "wg0")).await.unwrap();
    }
    assert_eq!(h.active("interface_gone", &id), 1);
    let state: String = h
        .conn()
        .query_row(
            "SELECT state FROM interfaces WHERE agent_id = ?1 AND name = 'wg0'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "gone");
    for _ in 0..2 {
        a.send(&h.url).await.unwrap();
    }
    assert_eq!(h.active("interface_gone", &id), 0);
    a.send_with(&h.url, |t| {
        let mut extra = t.interfaces[1].clone();
        extra.name = "eth1".into();
        t.interfaces.push(extra);
    })
    .await
    .unwrap();
    assert_eq!(h.active("interface_new", &id), 1, "a new interface is an event, raised at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_agent_is_raised_by_the_timer_and_cleared_by_a_report() {
    let h = Harness::start(|c| {
        c.settings.interval_secs = 1;
        c.sweep_secs = 0.1;
    })
    .await;
    let fleet = SimFleet::new("silent", 2);
    let mut a = SimAgent::new(&fleet, 0);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    assert_eq!(h.active("agent_silent", &id), 0);
    // No report is sent now: only the timer can raise the alarm.
    eventually(10, "the silent alarm", || h.active("agent_silent", &id) == 1).await;
    let (_, agents) = h.get("/status/agents").await;
    assert_eq!(agents["agents"][0]["state"], "silent");
    a.send(&h.url).await.unwrap();
    assert_eq!(h.active("agent_silent", &id), 0, "one report ends the silence");
    assert_eq!(h.resolved("agent_silent", &id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_peer_needs_an_old_handshake_and_no_traffic() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("stale", 5);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    let now = kattila_agent::unix_now();
    // Old handshake but bytes still arriving: healthy.
    let mut rx = 1_000_000;
    for _ in 0..3 {
        rx += 5000;
        a.send_with(&h.url, |t| {
            let p = &mut t.wireguard[0].peers[0];
            p.latest_handshake = Some(now - 600);
            p.rx_bytes = rx;
        })
        .await
        .unwrap();
    }
    assert_eq!(h.active("peer_stale", &id), 0, "traffic still flows: not stale");
    // Old handshake and rx frozen: stale after the threshold.
    for _ in 0..2 {
        a.send_with(&h.url, |t| {
            let p = &mut t.wireguard[0].peers[0];
            p.latest_handshake = Some(now - 600);
            p.rx_bytes = rx;
        })
        .await
        .unwrap();
    }
    assert_eq!(h.active("peer_stale", &id), 1);
    let (_, alarms) = h.get("/status/alarms").await;
    let alarm = &alarms["alarms"][0];
    assert_eq!(alarm["kind"], "peer_stale");
    assert_eq!(alarm["severity"], "warning");
    assert!(alarm["message"].as_str().unwrap().contains("last handshake"));
    for _ in 0..2 {
        a.send(&h.url).await.unwrap();
    }
    assert_eq!(h.active("peer_stale", &id), 0, "fresh handshakes resolve it");
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_conflict_when_two_hosts_share_an_agent_id() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("conflict", 2);
    let mut a = SimAgent::new(&fleet, 0);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    // A rename is not a conflict.
    a.send_with(&h.url, |t| t.hostname = "renamed".into()).await.unwrap();
    a.send_with(&h.url, |t| t.hostname = "renamed".into()).await.unwrap();
    assert_eq!(h.active("identity_conflict", &id), 0);
    for host in ["renamed", "other-box", "renamed", "other-box"] {
        a.send_with(&h.url, |t| t.hostname = host.into()).await.unwrap();
    }
    assert_eq!(h.active("identity_conflict", &id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_need_the_token() {
    // No token configured: the admin API is off.
    let h = Harness::start(|_| {}).await;
    let (status, body) = h.post("/status/admin/reset", Some(ADMIN), "{}").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_disabled")));

    let h = Harness::start(|c| c.admin_token = Some(AdminToken(ADMIN.into()))).await;
    let fleet = SimFleet::new("admin", 3);
    let mut a = SimAgent::new(&fleet, 1);
    let id = a.id().to_string();
    a.send(&h.url).await.unwrap();
    for _ in 0..2 {
        a.send_with(&h.url, |t| set_state(t, "eth0", "down")).await.unwrap();
    }
    let (_, alarms) = h.get("/status/alarms?state=active").await;
    let alarm_id = alarms["alarms"][0]["id"].as_i64().unwrap();

    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, body) =
            h.post(&format!("/status/admin/alarms/{alarm_id}/ack"), token, "").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "token {token:?}"
        );
    }
    let acked: Option<i64> = h
        .conn()
        .query_row("SELECT acked_at FROM alarms WHERE id = ?1", [alarm_id], |r| r.get(0))
        .unwrap();
    assert_eq!(acked, None, "refused calls change nothing");

    let (status, _) =
        h.post(&format!("/status/admin/alarms/{alarm_id}/ack"), Some(ADMIN), "").await;
    assert_eq!(status, 200);
    let (state, acked): (String, Option<i64>) = h
        .conn()
        .query_row("SELECT state, acked_at FROM alarms WHERE id = ?1", [alarm_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(state, "active", "acknowledging does not resolve");
    assert!(acked.is_some());
    let (status, _) = h.post("/status/admin/alarms/999999/ack", Some(ADMIN), "").await;
    assert_eq!(status, 404);
    let (status, _) = h.post("/status/admin/alarms/abc/ack", Some(ADMIN), "").await;
    assert_eq!(status, 400);

    // Reset of one agent clears its state and resolves its alarms.
    let (status, _) = h.post("/status/admin/reset", Some(ADMIN), r#"{"agent_id":"nobody"}"#).await;
    assert_eq!(status, 404);
    let (status, _) = h.post("/status/admin/reset", Some(ADMIN), r#"{"agent":"typo"}"#).await;
    assert_eq!(status, 400);
    let (status, body) =
        h.post("/status/admin/reset", Some(ADMIN), &format!(r#"{{"agent_id":"{id}"}}"#)).await;
    assert_eq!((status, body["reset"].as_i64()), (200, Some(1)));
    assert_eq!(h.active("interface_down", &id), 0);
    let left: i64 = h
        .conn()
        .query_row("SELECT count(*) FROM interfaces WHERE agent_id = ?1", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // The agent's next report rebuilds its state.
    a.send(&h.url).await.unwrap();
    let left: i64 = h
        .conn()
        .query_row("SELECT count(*) FROM interfaces WHERE agent_id = ?1", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn alarm_query_rejects_unknown_states() {
    let h = Harness::start(|_| {}).await;
    let (status, body) = h.get("/status/alarms?state=bogus").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, body) = h.get("/status/alarms?state=all").await;
    assert_eq!(status, 200);
    assert!(body["alarms"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_beyond_the_in_flight_limit_is_shed_with_503() {
    // No capacity at all: every ingest request is over the limit.
    let h = Harness::start(|c| c.max_in_flight = 0).await;
    let fleet = SimFleet::new("shed", 2);
    let mut a = SimAgent::new(&fleet, 0);
    let err = a.send(&h.url).await.unwrap_err();
    assert!(err.is_retryable(), "agents keep the report and retry: {err}");
    assert!(err.to_string().contains("503") && err.to_string().contains("overloaded"), "{err}");
    let r = reqwest::Client::new()
        .post(format!("{}/status/updates", h.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let count: i64 = h.conn().query_row("SELECT count(*) FROM reports", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 0);
    // Reads are not ingest: they still answer.
    assert_eq!(h.get("/status/healthcheck").await.0, 200);
    assert!(h
        .get_text("/metrics")
        .await
        .contains("kattila_reports_rejected_total{reason=\"overloaded\"} 2"));
}
