//! End-to-end tests of `fetch_txt` through a real UDP/TCP exchange with the
//! in-process test server (and with dnsmasq where it is installed).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kattila_keysource::test_server::TestDnsServer;
use kattila_keysource::{fetch_txt, FetchError};

const NAME: &str = "psk.fleet.kattila.test";
const SECRET: &str = "s3cr3t-Psk-value-0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(5);

async fn fetch(server: &TestDnsServer) -> Result<String, FetchError> {
    fetch_txt(NAME, Some(server.addr()), TIMEOUT).await
}

/// Display and Debug of an error must never carry the secret.
fn assert_no_secret(err: &FetchError, secret: &str) {
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(secret), "secret leaked in: {shown}");
    assert!(shown.contains(NAME), "record name missing in: {shown}");
}

#[tokio::test]
async fn returns_the_value() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    assert_eq!(fetch(&server).await.unwrap(), SECRET);
    assert_eq!(server.queries(), 1);
}

#[tokio::test]
async fn accepts_fully_qualified_name_and_any_case() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    let fqdn = format!("{}.", NAME.to_uppercase());
    let value = fetch_txt(&fqdn, Some(server.addr()), TIMEOUT).await;
    assert_eq!(value.unwrap(), SECRET);
}

#[tokio::test]
async fn rotation_is_seen_on_next_fetch() {
    // The record's TTL is 300 s, so any caching would return the old value.
    let server = TestDnsServer::start(NAME, "key-1").await.unwrap();
    for (i, key) in ["key-1", "key-2", "key-3"].into_iter().enumerate() {
        server.set_value(key);
        assert_eq!(fetch(&server).await.unwrap(), key);
        assert_eq!(server.queries(), i as u64 + 1, "every fetch must reach the server");
    }
}

#[tokio::test]
async fn long_value_is_joined() {
    let long: String = (0..600).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let server = TestDnsServer::start(NAME, &long).await.unwrap();
    assert_eq!(fetch(&server).await.unwrap(), long);
}

#[tokio::test]
async fn oversized_value_falls_back_to_tcp() {
    // 3000 bytes exceed the 1232-byte EDNS UDP payload: TC over UDP, then TCP.
    let huge: String = (0..3000).map(|i| char::from(b'A' + (i % 26) as u8)).collect();
    let server = TestDnsServer::start(NAME, &huge).await.unwrap();
    assert_eq!(fetch(&server).await.unwrap(), huge);
    assert_eq!(server.queries(), 2, "one truncated UDP answer, one TCP answer");
}

#[tokio::test]
async fn whitespace_is_trimmed() {
    let server = TestDnsServer::start(NAME, "  \t padded-key \n").await.unwrap();
    assert_eq!(fetch(&server).await.unwrap(), "padded-key");
}

#[tokio::test]
async fn missing_record_is_not_found_quickly() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    server.remove_record();
    let started = Instant::now();
    let err = fetch(&server).await.unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert!(started.elapsed() < TIMEOUT / 2, "NXDOMAIN must not wait for the timeout");
    assert_no_secret(&err, SECRET);
}

#[tokio::test]
async fn empty_value_is_an_error() {
    let server = TestDnsServer::start(NAME, "   ").await.unwrap();
    let err = fetch(&server).await.unwrap_err();
    assert!(matches!(err, FetchError::Empty { .. }), "{err:?}");
}

#[tokio::test]
async fn several_records_must_agree() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    server.set_values(&[SECRET, SECRET]);
    assert_eq!(fetch(&server).await.unwrap(), SECRET);

    let other = "other-Psk-value-fedcba9876543210";
    server.set_values(&[SECRET, other]);
    let err = fetch(&server).await.unwrap_err();
    assert!(matches!(err, FetchError::Ambiguous { count: 2, .. }), "{err:?}");
    assert_no_secret(&err, SECRET);
    assert_no_secret(&err, other);
}

#[tokio::test]
async fn non_utf8_value_is_an_error() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    let mut raw = SECRET.as_bytes().to_vec();
    raw.push(0xff);
    server.set_values(&[raw]);
    let err = fetch(&server).await.unwrap_err();
    assert!(matches!(err, FetchError::NotUtf8 { .. }), "{err:?}");
    assert_no_secret(&err, SECRET);
}

#[tokio::test]
async fn outage_times_out_then_recovers() {
    let server = TestDnsServer::start(NAME, SECRET).await.unwrap();
    server.set_outage(true);
    let err = fetch_txt(NAME, Some(server.addr()), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
    assert_no_secret(&err, SECRET);
    assert!(err.to_string().contains(&server.addr().to_string()), "{err}");
    assert_eq!(server.queries(), 0);

    server.set_outage(false);
    assert_eq!(fetch(&server).await.unwrap(), SECRET);
}

#[tokio::test]
async fn unreachable_port_is_an_error_not_a_hang() {
    // Nothing listens there: ICMP port unreachable or silence, both must end in time.
    let port = free_udp_port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let err = fetch_txt(NAME, Some(addr), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. } | FetchError::Resolver { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_name_is_a_resolver_error() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    let err = fetch_txt("bad..name", Some(addr), TIMEOUT).await.unwrap_err();
    assert!(matches!(err, FetchError::Resolver { .. }), "{err:?}");
}

/// dnsmasq, a second, independent DNS implementation; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    const PATH: &str = "/usr/sbin/dnsmasq";

    /// Starts dnsmasq on a free port with `args` added, or `None` if it is not installed.
    fn start(test: &str, args: &[String]) -> Option<Self> {
        if !Path::new(Self::PATH).exists() {
            let reason = format!("{} is not installed (Debian: dnsmasq-base)", Self::PATH);
            kattila_testsupport::skip(test, &reason);
            return None;
        }
        // dnsmasq binds TCP as well as UDP on its port, without
        // SO_REUSEADDR, so a port that is free for UDP can still be taken
        // for TCP (a connection in TIME-WAIT holds it): then dnsmasq exits at
        // once, and we try another port.
        for _ in 0..20 {
            let port = free_udp_port();
            let mut child = Command::new(Self::PATH)
                .args([
                    "--keep-in-foreground",
                    &format!("--port={port}"),
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                ])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            std::thread::sleep(Duration::from_millis(200));
            if child.try_wait().expect("dnsmasq status").is_none() {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                return Some(Self { child, addr });
            }
        }
        panic!("dnsmasq exited at start on 20 different ports");
    }

    /// Fetches through dnsmasq, retrying while it is still starting up.
    async fn fetch(&self) -> Result<String, FetchError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fetch_txt(NAME, Some(self.addr), Duration::from_millis(500)).await {
                Err(FetchError::Timeout { .. } | FetchError::Resolver { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn fetch_from_dnsmasq_record() {
    // Longer than 255 bytes, so dnsmasq has to split it into character-strings itself.
    let value: String = format!("{SECRET}-{}", "x".repeat(300));
    // No quotes here: a shell would have removed them, and quotes that reach
    // dnsmasq through argv become part of the value.
    let record = format!("--txt-record={NAME},{value}");
    let Some(dnsmasq) = Dnsmasq::start("fetch_from_dnsmasq_record", &[record]) else {
        return;
    };
    assert_eq!(dnsmasq.fetch().await.unwrap(), value);
}

/// dnsmasq forwarding to the test server: a real resolver accepts its answers.
#[tokio::test]
async fn dnsmasq_forwards_test_server_answers() {
    let long: String = (0..600).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let server = TestDnsServer::start(NAME, &long).await.unwrap();
    let forward = format!("--server=127.0.0.1#{}", server.addr().port());
    let args = [forward, "--cache-size=0".to_owned()];
    let Some(dnsmasq) = Dnsmasq::start("dnsmasq_forwards_test_server_answers", &args) else {
        return;
    };
    assert_eq!(dnsmasq.fetch().await.unwrap(), long);
    server.set_value("rotated");
    assert_eq!(dnsmasq.fetch().await.unwrap(), "rotated");
    server.remove_record();
    let err = dnsmasq.fetch().await.unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
}

/// A UDP port that was free a moment ago (the OS does not hand it out again at once).
fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.local_addr().unwrap().port()
}
