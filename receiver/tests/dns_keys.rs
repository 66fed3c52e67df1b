//! Fleet keys from a real DNS server on loopback: rotation through three
//! values, an outage, recovery, and a start with no key at all.

mod common;

use std::time::Duration;

use common::*;
use kattila_agent::simulate::SimFleet;
use kattila_keysource::test_server::TestDnsServer;
use kattila_keysource::KeyConfig;

const RECORD: &str = "psk.kattila.test";

fn dns(server: &TestDnsServer) -> KeyConfig {
    KeyConfig::Dns {
        name: RECORD.into(),
        server: Some(server.addr()),
        refresh: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
    }
}

async fn keys_seen(h: &Harness) -> i64 {
    h.get("/status/healthcheck").await.1["keys"]["count"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_two_previous_keys() {
    let server = TestDnsServer::start(RECORD, "key-one").await.unwrap();
    let h = Harness::start(|c| c.keys = dns(&server)).await;
    let fleet = SimFleet::new("dns", 2);
    let mut a = SimAgent::with_key(&fleet, 0, "key-one");
    let mut tries = 0;
    while a.send(&h.url).await.is_err() {
        tries += 1;
        assert!(tries < 100, "never accepted with the DNS key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, value) in ["key-two", "key-three"].iter().enumerate() {
        server.set_value(value);
        let want = n as i64 + 2;
        for _ in 0..100 {
            if keys_seen(&h).await == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(keys_seen(&h).await, want);
        a.send(&h.url).await.expect("a key rotated out once or twice still verifies");
    }
    server.set_value("key-four");
    let mut refused = false;
    for _ in 0..100 {
        if let Err(e) = a.send(&h.url).await {
            assert!(e.to_string().contains("bad_mac"), "{e}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a key rotated out three times must stop verifying");
    a.set_key("key-four");
    a.send(&h.url).await.expect("the current key verifies");
    let metrics = h.get_text("/metrics").await;
    assert!(metrics.contains("kattila_key_rotations_total 4"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_keeps_known_keys_and_shows_in_health_and_metrics() {
    let server = TestDnsServer::start(RECORD, "steady-key").await.unwrap();
    let h = Harness::start(|c| c.keys = dns(&server)).await;
    let fleet = SimFleet::new("outage", 2);
    let mut a = SimAgent::with_key(&fleet, 1, "steady-key");
    for _ in 0..100 {
        if keys_seen(&h).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.set_outage(true);
    let mut degraded = serde_json::Value::Null;
    for _ in 0..100 {
        degraded = h.get("/status/healthcheck").await.1;
        if degraded["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    let reason = degraded["reasons"][0].as_str().unwrap();
    assert!(reason.contains("key refresh failing") && reason.contains(RECORD), "{reason}");
    assert!(!degraded.to_string().contains("steady-key"), "health check leaks the key");
    a.send(&h.url).await.expect("known keys keep verifying during the outage");
    let metrics = h.get_text("/metrics").await;
    assert!(metrics.contains("kattila_key_refresh_ok 0"), "{metrics}");
    assert!(!metrics.contains("steady-key"));

    server.set_outage(false);
    for _ in 0..100 {
        if h.get("/status/healthcheck").await.1["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.get("/status/healthcheck").await.1["status"], "ok");
    assert!(h.get_text("/metrics").await.contains("kattila_key_refresh_ok 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_at_start_means_503_until_dns_answers() {
    let server = TestDnsServer::start(RECORD, "late-key").await.unwrap();
    server.remove_record();
    let h = Harness::start(|c| c.keys = dns(&server)).await;
    let fleet = SimFleet::new("late", 2);
    let mut a = SimAgent::with_key(&fleet, 0, "late-key");
    let err = a.send(&h.url).await.unwrap_err().to_string();
    assert!(err.contains("503") && err.contains("no_key"), "{err}");
    let count: i64 = h.conn().query_row("SELECT count(*) FROM agents", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 0, "nothing is stored without a key");
    server.set_value("late-key");
    let mut ok = false;
    for _ in 0..100 {
        if a.send(&h.url).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "accepted once DNS answered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_mac_brings_the_next_key_lookup_forward() {
    let server = TestDnsServer::start(RECORD, "old-key").await.unwrap();
    // Hourly refresh: only the early lookup can pick up the new key in time.
    let h = Harness::start(|c| {
        c.keys = KeyConfig::Dns {
            name: RECORD.into(),
            server: Some(server.addr()),
            refresh: Duration::from_secs(3600),
            timeout: Duration::from_millis(500),
        }
    })
    .await;
    for _ in 0..100 {
        if keys_seen(&h).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The key is rotated and an agent already signs with the new one.
    server.set_value("new-key");
    let fleet = SimFleet::new("early", 2);
    let mut a = SimAgent::with_key(&fleet, 0, "new-key");
    let first = a.send(&h.url).await.unwrap_err().to_string();
    assert!(first.contains("bad_mac"), "{first}");
    let mut accepted = false;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if a.send(&h.url).await.is_ok() {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the receiver never looked the key up again");
    assert_eq!(keys_seen(&h).await, 2, "old and new key are both accepted");
}
