//! Fixtures for the workspace tests: real binaries on free ports, killed on
//! drop, with their output forwarded into the test log.
#![allow(dead_code)]

pub mod dist;
#[path = "../../sitegen/tests/common/published.rs"]
pub mod published;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_kattila-agent");
pub const RECEIVER: &str = env!("CARGO_BIN_EXE_kattila-receiver");
pub const SITEGEN: &str = env!("CARGO_BIN_EXE_sitegen");

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Forwards a child's output line by line into the test's output.
fn forward(name: &'static str, stream: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
        }
    });
}

/// A running `kattila-receiver`; SIGKILLed on drop.
pub struct Receiver {
    pub child: Child,
    pub port: u16,
    pub db: PathBuf,
}

impl Receiver {
    /// Starts the receiver on a free port with `db` and key `psk`, and waits
    /// until its health check answers.
    pub fn start(db: &Path, psk: &str) -> Receiver {
        Self::start_on(db, psk, free_port())
    }

    pub fn start_on(db: &Path, psk: &str, port: u16) -> Receiver {
        let mut child = Command::new(RECEIVER)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
            .env("KATTILA_PSK", psk)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kattila-receiver starts");
        forward("receiver", child.stdout.take().unwrap());
        forward("receiver", child.stderr.take().unwrap());
        let receiver = Receiver { child, port, db: db.to_path_buf() };
        receiver.wait_ready();
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/status/healthcheck", self.url())).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("receiver did not become ready on port {}", self.port);
    }

    /// Stops the receiver the way an operator does (SIGTERM) and waits.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("receiver ignored SIGTERM");
    }

    /// POSTs raw bytes to `path`; returns status and parsed JSON answer.
    pub fn post(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url()))
            .body(body)
            .send()
            .expect("receiver answers");
        let status = r.status().as_u16();
        let json = serde_json::from_slice(&r.bytes().unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to completion; returns (exit code, stdout, stderr).
pub fn run(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out =
        Command::new(bin).args(args).envs(envs.iter().copied()).output().expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("[{}] {stdout}{stderr}", Path::new(bin).file_name().unwrap().to_string_lossy());
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

// Not every test binary that includes this module uses it.
#[allow(unused_imports)]
pub use kattila_testsupport::dump_db;

/// Counts rows of `table`.
pub fn count(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

/// Environment variables a test agent must not inherit from the test's own
/// environment: every variable the agent reads (its own list), the original
/// system's `DNS`, and the system env file's location.
pub fn agent_env() -> impl Iterator<Item = &'static str> {
    kattila_agent::config::ENV_KEYS.iter().copied().chain(["DNS", "KATTILA_ENV_FILE"])
}

/// A `kattila-agent` command that reads no `.env` file of the machine: its
/// working directory is `dir` and the system env file points nowhere.
pub fn agent_command(dir: &Path) -> Command {
    let mut cmd = Command::new(AGENT);
    for k in agent_env() {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir).env("KATTILA_ENV_FILE", dir.join("no-system-env-file"));
    cmd
}

/// Runs a command to completion; returns (exit code, stdout, stderr).
pub fn run_command(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("command runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("[agent] {stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// A running `kattila-agent` daemon with its API on a free loopback port;
/// SIGKILLed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub state: PathBuf,
    pub name: &'static str,
}

impl Agent {
    /// Starts an agent named `name` (for the log) with state in `state`,
    /// key `psk`, receiver `manager_url`, static relay URLs `relays` and
    /// further flags `extra`; waits until its health check answers.
    pub fn start(
        name: &'static str,
        state: &Path,
        psk: &str,
        manager_url: &str,
        relays: &[String],
        extra: &[&str],
    ) -> Agent {
        std::fs::create_dir_all(state).unwrap();
        let port = free_port();
        let mut cmd = agent_command(state);
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--manager-url", manager_url])
            .arg("--state-dir")
            .arg(state)
            .args(["--interval", "0.3", "--timeout", "3", "--retries", "2"])
            .args(extra)
            .env("KATTILA_PSK", psk)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for r in relays {
            cmd.args(["--relay", r]);
        }
        let mut child = cmd.spawn().expect("kattila-agent starts");
        forward(name, child.stdout.take().unwrap());
        forward(name, child.stderr.take().unwrap());
        let mut agent = Agent { child, port, state: state.to_path_buf(), name };
        agent.wait_ready();
        agent
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("agent {} exited at start: {status}", self.name);
            }
            if self.try_get("/status/healthcheck").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent {} did not become ready on port {}", self.name, self.port);
    }

    fn try_get(&self, path: &str) -> Option<serde_json::Value> {
        let r =
            reqwest::blocking::Client::new().get(format!("{}{path}", self.url())).send().ok()?;
        serde_json::from_slice(&r.bytes().ok()?).ok()
    }

    /// GETs `path` of the agent's API as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.try_get(path).unwrap_or_else(|| panic!("agent {} answers {path}", self.name))
    }

    /// POSTs raw bytes to `path`; returns status and parsed JSON answer.
    pub fn post(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url()))
            .body(body)
            .send()
            .expect("agent answers");
        let status = r.status().as_u16();
        let json = serde_json::from_slice(&r.bytes().unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub fn agent_id(&self) -> String {
        self.get("/status/peer")["agent_id"].as_str().unwrap().to_string()
    }

    /// Waits (up to 30 s) until `GET /status/healthcheck` satisfies `pred`;
    /// returns that answer.
    pub fn wait_health(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            if let Some(h) = self.try_get("/status/healthcheck") {
                if pred(&h) {
                    return h;
                }
                last = h;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent {}: {what} did not happen; last health: {last}", self.name);
    }

    /// Waits until the agent's path to the receiver is `state` (with `hops`).
    pub fn wait_path(&self, state: &str, hops: Option<u64>) {
        self.wait_health(&format!("path {state} {hops:?}"), |h| {
            h["path"]["state"] == state && (hops.is_none() || h["path"]["hops"].as_u64() == hops)
        });
    }

    /// Stops the agent with SIGTERM and waits for it to exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent {} ignored SIGTERM", self.name);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reports stored for `agent_id`, in the order the receiver stored them:
/// (tick, observed_at, relay_path).
pub fn stored_reports(db: &Path, agent_id: &str) -> Vec<(i64, i64, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT tick, observed_at, relay_path FROM reports \
             WHERE agent_id = ?1 AND kind = 'report' ORDER BY id",
        )
        .unwrap();
    stmt.query_map([agent_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Polls `cond` every 50 ms for up to 30 s; panics naming `what` if it
/// never holds. (Waiting for an event, not measuring time.)
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: did not happen within 30 s");
}

/// Runs a command that must succeed; returns its standard output.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("command runs");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A WireGuard key pair from `wg genkey` / `wg pubkey` (test setup only;
/// the agent itself reads WireGuard through its interfaces, never `wg`).
pub fn keypair() -> (String, String) {
    use std::io::Write;
    let private = sh(&["wg", "genkey"]).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (private, String::from_utf8_lossy(&out.stdout).trim().to_string())
}
