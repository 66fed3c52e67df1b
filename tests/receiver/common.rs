//! A real receiver (the same `serve` the binary runs) on port 0, and
//! simulated agents that push to it with the real agent push client.

use std::path::PathBuf;

use kattila_agent::identity::TickCounter;
use kattila_agent::push::{updates_url, PushError, Pusher};
use kattila_agent::report::{build_report, sign_report, Telemetry};
use kattila_agent::simulate::SimFleet;
use kattila_proto::Psk;
use kattila_receiver::config::Config;
use tokio::sync::oneshot;

pub const PSK: &str = "receiver-test-key";
pub const ADMIN: &str = "admin-token-0123456789";

pub struct Harness {
    pub url: String,
    pub db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a receiver with the test key; `tune` adjusts the configuration.
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tune).await
    }

    fn init_logging() {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    }

    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> Harness {
        Self::init_logging();
        let db = dir.path().join("kattila.db");
        let mut config = Config::for_test(&db, PSK);
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kattila_receiver::server::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Harness { url, db, stop: Some(stop), task: Some(task), dir }
    }

    /// Graceful stop; returns the directory (with the database) for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.url)).await.unwrap().text().await.unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut req =
            reqwest::Client::new().post(format!("{}{path}", self.url)).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Active alarms of `kind` (and agent, if given).
    pub fn active(&self, kind: &str, agent: &str) -> i64 {
        self.conn()
            .query_row(
                "SELECT count(*) FROM alarms WHERE state = 'active' AND kind = ?1 AND agent_id = ?2",
                [kind, agent],
                |r| r.get(0),
            )
            .unwrap()
    }

    pub fn resolved(&self, kind: &str, agent: &str) -> i64 {
        self.conn()
            .query_row(
                "SELECT count(*) FROM alarms WHERE state = 'resolved' AND kind = ?1 AND agent_id = ?2",
                [kind, agent],
                |r| r.get(0),
            )
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One simulated agent of a fleet, pushing through the real client.
pub struct SimAgent {
    pub fleet: SimFleet,
    pub index: usize,
    ticks: TickCounter,
    psk: Psk,
    pusher: Pusher,
    _dir: tempfile::TempDir,
}

impl SimAgent {
    pub fn new(fleet: &SimFleet, index: usize) -> SimAgent {
        Self::with_key(fleet, index, PSK)
    }

    pub fn with_key(fleet: &SimFleet, index: usize, psk: &str) -> SimAgent {
        let dir = tempfile::tempdir().unwrap();
        SimAgent {
            fleet: fleet.clone(),
            index,
            ticks: TickCounter::open(dir.path().join("tick"), 1).unwrap(),
            psk: Psk::new(psk).unwrap(),
            pusher: Pusher::new(std::time::Duration::from_secs(10)).unwrap(),
            _dir: dir,
        }
    }

    pub fn set_key(&mut self, psk: &str) {
        self.psk = Psk::new(psk).unwrap();
    }

    pub fn id(&self) -> &str {
        &self.fleet.agents[self.index].agent_id
    }

    /// Sends one report, after letting `tweak` change the telemetry.
    pub async fn send_with(
        &mut self,
        url: &str,
        tweak: impl FnOnce(&mut Telemetry),
    ) -> Result<serde_json::Value, PushError> {
        let now = kattila_agent::unix_now();
        let mut telemetry = self.fleet.telemetry(self.index, now);
        tweak(&mut telemetry);
        let mut report = build_report(self.id(), now, telemetry);
        let envelope = sign_report(&mut report, &self.psk, &mut self.ticks, now).unwrap();
        self.pusher.post(&updates_url(url), envelope).await
    }

    pub async fn send(&mut self, url: &str) -> Result<serde_json::Value, PushError> {
        self.send_with(url, |_| {}).await
    }
}

/// Waits until `check` is true, polling; panics with `what` after `secs`.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
