//! Fleet keys from a real DNS server on loopback: rotation through three
//! values, an outage, recovery, a start with no key at all, and the keys
//! kept across a restart (also one while DNS is down).

use std::time::Duration;

use crate::common::*;
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

/// Waits until the receiver's ring has `n` keys.
async fn wait_for_keys(h: &Harness, n: i64) {
    for _ in 0..200 {
        if keys_seen(h).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys_seen(h).await, n, "the receiver never had {n} keys");
}

/// Runs a receiver through `keys`, one rotation each, and stops it.
async fn rotate_and_stop(server: &TestDnsServer, keys: &[&str]) -> tempfile::TempDir {
    let h = Harness::start(|c| c.keys = dns(server)).await;
    for (n, key) in keys.iter().enumerate() {
        server.set_value(key);
        let want = (n + 1).min(3) as i64;
        if n >= 3 {
            // The count stays at 3: wait for the rotation itself.
            for _ in 0..200 {
                if h.get_text("/metrics")
                    .await
                    .contains(&format!("kattila_key_rotations_total {}", n + 1))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        wait_for_keys(&h, want).await;
    }
    let metrics = h.get_text("/metrics").await;
    assert!(metrics.contains(&format!("kattila_key_rotations_total {}", keys.len())), "{metrics}");
    h.stop().await
}

/// Every file of `dir` that holds one of `keys`, except the key state file.
fn files_with_keys(dir: &std::path::Path, keys: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kattila.db.keys" || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if keys.iter().any(|k| bytes.windows(k.len()).any(|w| w == k.as_bytes())) {
            found.push(path.display().to_string());
        }
    }
    found
}

const ROTATION: [&str; 4] = [
    "restart-key-zero-8d3f1a", // rotated out three times: refused
    "restart-key-one-5c9e2b",
    "restart-key-two-1f7a4d",
    "restart-key-three-e2b86c", // current
];

#[tokio::test(flavor = "multi_thread")]
async fn previous_keys_survive_a_restart() {
    let server = TestDnsServer::start(RECORD, ROTATION[0]).await.unwrap();
    let dir = rotate_and_stop(&server, &ROTATION).await;
    let state = dir.path().join("kattila.db.keys");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key state file must be private");
    assert!(files_with_keys(dir.path(), &ROTATION).is_empty(), "a key is in the database");

    // Restarted with DNS answering the current key: the two previous keys
    // still verify, as they did before the restart.
    let h = Harness::start_in(dir, |c| c.keys = dns(&server)).await;
    let fleet = SimFleet::new("restart", 4);
    for (i, key) in ROTATION.iter().enumerate().skip(1) {
        let mut a = SimAgent::with_key(&fleet, i, key);
        a.send(&h.url).await.unwrap_or_else(|e| panic!("key {i} refused after a restart: {e}"));
    }
    let mut old = SimAgent::with_key(&fleet, 0, ROTATION[0]);
    let err = old.send(&h.url).await.unwrap_err().to_string();
    assert!(err.contains("bad_mac"), "the 4th-oldest key must stay refused: {err}");
    assert_eq!(keys_seen(&h).await, 3);
    let metrics = h.get_text("/metrics").await;
    assert!(
        metrics.contains("kattila_key_rotations_total 0"),
        "confirming is no rotation: {metrics}"
    );
    assert!(!metrics.contains("restart-key"), "{metrics}");
    let health = h.get("/status/healthcheck").await.1;
    assert!(!health.to_string().contains("restart-key"), "{health}");
    let dir = h.stop().await;
    assert!(files_with_keys(dir.path(), &ROTATION).is_empty(), "a key is in the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_while_dns_is_down_verifies_with_the_saved_keys() {
    let keys = &ROTATION[1..];
    let server = TestDnsServer::start(RECORD, keys[0]).await.unwrap();
    let dir = rotate_and_stop(&server, keys).await;

    server.set_outage(true);
    let answered = server.queries();
    let h = Harness::start_in(dir, |c| c.keys = dns(&server)).await;
    // No waiting for DNS: the saved keys verify from the first request.
    let fleet = SimFleet::new("down", 3);
    for (i, key) in keys.iter().enumerate() {
        let mut a = SimAgent::with_key(&fleet, i, key);
        a.send(&h.url).await.unwrap_or_else(|e| panic!("saved key {i} refused: {e}"));
    }
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = h.get("/status/healthcheck").await.1;
        if health["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["keys"]["count"], 3, "{health}");
    let reason = health["reasons"][0].as_str().unwrap();
    assert!(reason.contains("verifying with the 3 known key(s)"), "{reason}");
    assert!(!health.to_string().contains("restart-key"), "{health}");
    assert_eq!(server.queries(), answered, "the keys came from the state file, not from DNS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_key_leaves_no_key_state_file() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("fixed", 1);
    SimAgent::new(&fleet, 0).send(&h.url).await.unwrap();
    let dir = h.stop().await;
    assert!(!dir.path().join("kattila.db.keys").exists());
}
