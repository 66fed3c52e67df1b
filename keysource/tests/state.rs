//! The key state file through real lookups: a [`KeyRing`] fed by
//! [`refresh_forever`] from the in-process DNS server saves its keys, and a
//! new ring (a restarted program) starts with them — also while DNS is
//! down. Every test captures the log at DEBUG and checks that no key value
//! is in it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kattila_keysource::test_server::TestDnsServer;
use kattila_keysource::{refresh_forever, KeyConfig, KeyRing};
use kattila_proto::Psk;

const RECORD: &str = "psk.state.kattila.test";
const K0: &str = "zeroth-key-4b1d0c93a7e2f5d8c6b0a9e1";
const K1: &str = "first-key-0f3e9a1c7b5d2e8f4a6c0b9d";
const K2: &str = "second-key-9c2d7e1f3a5b8c0d6e4f2a1b";
const K3: &str = "third-key-5e8f1a3c7d9b2e4f6a0c8d1e";
const ALL: [&str; 4] = [K0, K1, K2, K3];

/// The log of this test's thread, as the programs format it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Captures DEBUG and up on this thread (the tests run on a
    /// current-thread runtime, so the refresh task logs here too), with the
    /// DNS libraries held at WARN as `init_logging` does.
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,hickory_net=warn,hickory_resolver=warn,hickory_proto=warn"
                    .parse::<tracing_subscriber::EnvFilter>()
                    .unwrap(),
            )
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (log, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn assert_no_key(&self) {
        let text = self.text();
        for key in ALL {
            assert!(!text.contains(key), "a key is in the log:\n{text}");
        }
    }
}

fn config(server: &TestDnsServer) -> KeyConfig {
    KeyConfig::Dns {
        name: RECORD.into(),
        server: Some(server.addr()),
        refresh: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
    }
}

fn accepts(ring: &KeyRing, key: &str) -> bool {
    let key = Psk::new(key).unwrap();
    ring.with(|set| set.iter().any(|k| k.same_as(&key)))
}

fn is_current(ring: &KeyRing, key: &str) -> bool {
    ring.current().is_some_and(|c| c.same_as(&Psk::new(key).unwrap()))
}

/// Polls `check` (safety net of 20 s, never a timing assert).
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs a ring with its refresh task through K0 → K1 → K2 → K3 and stops it.
async fn rotate_through_all(server: &TestDnsServer, state: &Path) {
    let ring = KeyRing::open(&config(server), Some(state));
    let task = tokio::spawn(refresh_forever(ring.clone(), config(server)));
    for key in ALL {
        server.set_value(key);
        until(key, || is_current(&ring, key)).await;
    }
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let (log, _guard) = Log::capture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("kattila.db.keys");
    let server = TestDnsServer::start(RECORD, K0).await.unwrap();
    rotate_through_all(&server, &state).await;
    assert_eq!(mode(&state), 0o600, "the key state file must be private");

    // The "restarted" ring knows all three keys before any lookup.
    let ring = KeyRing::open(&config(&server), Some(&state));
    assert!(is_current(&ring, K3));
    assert!(accepts(&ring, K2) && accepts(&ring, K1), "current + 2 previous survive");
    assert!(!accepts(&ring, K0), "a key rotated out three times stays out");
    let status = ring.status();
    assert_eq!((status.keys, status.from_state, status.last_success), (3, 3, None));
    assert!(!status.degraded());
    let shown = format!("{ring:?} {status:?}");
    assert!(ALL.iter().all(|k| !shown.contains(k)), "Debug shows a key: {shown}");

    // DNS still says K3: the first lookup confirms it, nothing is lost.
    let task = tokio::spawn(refresh_forever(ring.clone(), config(&server)));
    until("a lookup", || ring.status().last_success.is_some()).await;
    task.abort();
    assert!(accepts(&ring, K1) && accepts(&ring, K2) && is_current(&ring, K3));
    assert_eq!(ring.status().rotations, 0, "confirming the saved key is no rotation");
    log.assert_no_key();
    assert!(log.text().contains("loaded from the key state file"), "{}", log.text());
}

#[tokio::test]
async fn restart_while_dns_is_down_verifies_with_the_saved_keys() {
    let (log, _guard) = Log::capture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keys");
    let server = TestDnsServer::start(RECORD, K0).await.unwrap();
    rotate_through_all(&server, &state).await;

    server.set_outage(true);
    let ring = KeyRing::open(&config(&server), Some(&state));
    let task = tokio::spawn(refresh_forever(ring.clone(), config(&server)));
    until("a failed lookup", || ring.status().failures > 0).await;
    assert!(is_current(&ring, K3), "the saved current key signs during the outage");
    assert!(accepts(&ring, K2) && accepts(&ring, K1));
    assert!(ring.status().degraded(), "keys that DNS did not confirm are degraded");

    // DNS comes back with a key rotated while the program was down: it
    // becomes current, the saved ones shift back, and the file follows.
    server.set_value("fifth-key-after-the-restart-0123456");
    server.set_outage(false);
    until("the new key", || ring.status().rotations == 1).await;
    task.abort();
    let _ = task.await;
    let restarted = KeyRing::open(&config(&server), Some(&state));
    assert!(is_current(&restarted, "fifth-key-after-the-restart-0123456"));
    assert!(accepts(&restarted, K3) && accepts(&restarted, K2) && !accepts(&restarted, K1));

    log.assert_no_key();
    assert!(!log.text().contains("fifth-key"), "{}", log.text());
    let text = log.text();
    assert!(text.contains("verifying with the keys from the key state file"), "{text}");
    assert!(!text.contains("no key is known"), "{text}");
}

#[tokio::test]
async fn no_key_and_dns_down_says_every_report_is_refused() {
    let (log, _guard) = Log::capture();
    let dir = tempfile::tempdir().unwrap();
    let server = TestDnsServer::start(RECORD, K0).await.unwrap();
    server.set_outage(true);
    let ring = KeyRing::open(&config(&server), Some(&dir.path().join("keys")));
    let task = tokio::spawn(refresh_forever(ring.clone(), config(&server)));
    until("a failed lookup", || ring.status().failures > 0).await;
    task.abort();
    let text = log.text();
    assert!(
        text.contains("no key is known yet") && text.contains("every report is refused"),
        "{text}"
    );
    assert!(!text.contains("keeping the known keys"), "there are no known keys:\n{text}");
    assert!(!dir.path().join("keys").exists(), "nothing to save without a key");
}

#[tokio::test]
async fn an_unusable_state_file_is_ignored_and_replaced() {
    let (log, _guard) = Log::capture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keys");
    let server = TestDnsServer::start(RECORD, K0).await.unwrap();
    rotate_through_all(&server, &state).await;
    let good = std::fs::read(&state).unwrap();

    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("readable by others", good.clone(), 0o644),
        ("writable by the group", good.clone(), 0o620),
        ("garbage", format!("{K2} not json").into_bytes(), 0o600),
        ("truncated", good[..good.len() / 2].to_vec(), 0o600),
        ("binary", vec![0xff, 0x00, 0xfe], 0o600),
        (
            "another record",
            format!("{{\"version\":1,\"record\":\"other.test\",\"keys\":[\"{K2}\"]}}").into_bytes(),
            0o600,
        ),
    ];
    for (what, bytes, file_mode) in cases {
        std::fs::write(&state, &bytes).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(file_mode)).unwrap();
        let ring = KeyRing::open(&config(&server), Some(&state));
        assert_eq!(ring.status().keys, 0, "{what}: its keys must not be used");
        assert!(log.text().contains("ignoring the key state file"), "{what}: {}", log.text());
        // The next successful lookup writes a good, private file again.
        assert!(ring.accept(Psk::new(K3).unwrap(), 1));
        assert_eq!(mode(&state), 0o600, "{what}");
        let again = KeyRing::open(&config(&server), Some(&state));
        assert!(is_current(&again, K3) && again.status().keys == 1, "{what}");
    }
    log.assert_no_key();
}

#[tokio::test]
async fn a_failed_save_is_retried_at_the_next_lookup() {
    let (log, _guard) = Log::capture();
    let dir = tempfile::tempdir().unwrap();
    let server = TestDnsServer::start(RECORD, K0).await.unwrap();
    // The file's directory does not exist yet: the write fails, the ring
    // keeps working, and the next lookup (same key, no rotation) writes it.
    let state = dir.path().join("later").join("keys");
    let ring = KeyRing::open(&config(&server), Some(&state));
    assert!(ring.accept(Psk::new(K0).unwrap(), 1));
    assert!(is_current(&ring, K0));
    assert!(log.text().contains("could not save the fleet keys"), "{}", log.text());
    std::fs::create_dir(dir.path().join("later")).unwrap();
    assert!(!ring.accept(Psk::new(K0).unwrap(), 2));
    let restarted = KeyRing::open(&config(&server), Some(&state));
    assert!(is_current(&restarted, K0));
    log.assert_no_key();
}

#[test]
fn a_fixed_key_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keys");
    let ring = KeyRing::open(&KeyConfig::Fixed(Psk::new(K0).unwrap()), Some(&state));
    assert!(!ring.accept(Psk::new(K0).unwrap(), 1));
    assert!(ring.accept(Psk::new(K1).unwrap(), 2));
    assert!(!state.exists());
}
