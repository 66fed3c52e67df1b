//! The fleet key from DNS across restarts, with the real binaries: the
//! receiver and the agent keep their keys in a key state file, so a key
//! rotated out before a restart still verifies after it, and both keep
//! working when they restart while DNS is down. Their logs (at DEBUG) never
//! show a key.

mod util;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kattila_keysource::test_server::TestDnsServer;
use util::*;

const RECORD: &str = "psk.e2e.kattila.test";
const K1: &str = "e2e-first-key-7f3a91c2d5b8e4f6a0c9";
const K2: &str = "e2e-second-key-2b6d8e0f4a1c3e5b7d9f";

/// A receiver fed from DNS, its log written to `log`; SIGKILLed on drop.
struct DnsReceiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl DnsReceiver {
    fn start(db: &Path, dns: SocketAddr, log_path: &Path) -> DnsReceiver {
        let port = free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
        let child = Command::new(RECEIVER)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
            .args(["--dns", RECORD, "--dns-server", &dns.to_string(), "--key-refresh-secs", "1"])
            .env_remove("KATTILA_PSK")
            .env_remove("KATTILA_PSK_FILE")
            .env_remove("KATTILA_KEY_STATE")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("kattila-receiver starts");
        DnsReceiver { child, port, log: log_path.to_path_buf() }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The health check, once the receiver answers (safety net: 30 s).
    fn health(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::blocking::get(format!("{}/status/healthcheck", self.url())) {
                return serde_json::from_slice(&r.bytes().unwrap()).unwrap();
            }
            if Instant::now() >= deadline {
                let running = Path::new(&format!("/proc/{}", self.child.id())).exists();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "the receiver never answered (process still there: {running}); its log:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_keys(&self, n: i64) {
        wait_until(&format!("the receiver has {n} key(s)"), || self.health()["keys"]["count"] == n);
    }

    fn post(&self, body: Vec<u8>) -> (u16, String) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/status/updates", self.url()))
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// SIGTERM, as systemd stops it.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "receiver ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DnsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A report signed with `key` by the real agent (`--dump`).
fn report_signed_with(dir: &Path, key: &str) -> Vec<u8> {
    let mut cmd = agent_command(dir);
    cmd.args(["--dump", "-", "--state-dir"]).arg(dir.join(format!("dump-{}", &key[..9])));
    cmd.env("KATTILA_PSK", key);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn file_holds(path: &Path, secret: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
}

#[test]
fn keys_survive_restarts_of_receiver_and_agent_with_dns_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver_log = dir.path().join("receiver.log");
    let agent_state = dir.path().join("agent-state");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(TestDnsServer::start(RECORD, K1)).unwrap();

    let receiver = DnsReceiver::start(&db, dns.addr(), &receiver_log);
    receiver.wait_keys(1);
    let agent_once = |url: &str| {
        let mut cmd = agent_command(dir.path());
        cmd.args(["--once", "--retries", "1", "--manager-url", url, "--dns", RECORD])
            .args(["--dns-server", &dns.addr().to_string(), "--state-dir"])
            .arg(&agent_state)
            .env("RUST_LOG", "debug");
        run_command(cmd)
    };
    let (code, _, stderr) = agent_once(&receiver.url());
    assert_eq!(code, 0, "{stderr}");
    let agent_keys = agent_state.join("fleet-keys");
    assert_eq!(mode(&agent_keys), 0o600, "the agent's key state file must be private");

    // Rotation K1 → K2 while the receiver runs; then it is stopped.
    dns.set_value(K2);
    receiver.wait_keys(2);
    receiver.stop();
    let receiver_keys = PathBuf::from(format!("{}.keys", db.display()));
    assert_eq!(mode(&receiver_keys), 0o600, "the key state file is beside --db, private");

    // DNS goes down; both programs restart.
    dns.set_outage(true);
    let receiver = DnsReceiver::start(&db, dns.addr(), &receiver_log);
    let health = receiver.health();
    assert_eq!(health["keys"]["count"], 2, "the saved keys are there at once: {health}");
    for key in [K1, K2] {
        let (status, answer) = receiver.post(report_signed_with(dir.path(), key));
        assert_eq!(status, 200, "a saved key must verify after the restart: {answer}");
    }
    // The agent never saw K2: it signs with its saved K1, still accepted.
    let (code, _, stderr) = agent_once(&receiver.url());
    assert_eq!(code, 0, "the agent must deliver with its saved key: {stderr}");
    assert!(stderr.contains("signing with the key saved by the last run"), "{stderr}");
    assert!(!stderr.contains(K1) && !stderr.contains(K2), "the agent logged a key");
    receiver.stop();

    let log = std::fs::read_to_string(&receiver_log).unwrap();
    assert!(log.contains("loaded from the key state file"), "{log}");
    assert!(!log.contains(K1) && !log.contains(K2), "the receiver logged a key:\n{log}");
    for f in [db.clone(), dir.path().join("kattila.db-wal")] {
        assert!(!file_holds(&f, K1) && !file_holds(&f, K2), "a key is in {}", f.display());
    }
}
