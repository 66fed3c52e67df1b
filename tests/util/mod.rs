//! Fixtures for the workspace tests: real binaries on free ports, killed on
//! drop, with their output forwarded into the test log.
#![allow(dead_code)]

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

/// Every row of every table, as text: equal dumps mean nothing changed.
pub fn dump_db(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = String::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1, 2")).unwrap();
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..cols)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.unwrap()));
        }
    }
    out
}

/// Counts rows of `table`.
pub fn count(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}
