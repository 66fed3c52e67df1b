//! A running agent: the state its jobs share (identity and ticks, keys,
//! spool, what the last collection and delivery observed) and its one
//! collection cycle. Each job has its own module: [`delivery`] (this
//! agent's messages: direct, then relays, then the spool), [`discovery`]
//! (finding other agents to relay through) and [`serve`] (answering other
//! agents and administrators: peer info, health, relaying, resets).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use kattila_keysource::KeyRing;
use kattila_proto::{Psk, Report};

use crate::collect::Collector;
use crate::config::Config;
use crate::identity::{load_or_create_agent_id, new_agent_id, write_atomically, TickCounter};
use crate::push::Pusher;
use crate::report::{build_report, sign_report, Telemetry};
use crate::spool::{Spool, SpoolStats};
use crate::unix_now;

pub mod delivery;
pub mod discovery;
pub mod serve;

pub use delivery::{CycleSummary, Outcome};
pub use discovery::{agent_base, mesh_hosts, probe, probe_targets, targets, Candidate, MAX_PROBES};
pub use kattila_proto::PathInfo;

struct Ident {
    agent_id: String,
    ticks: TickCounter,
}

#[derive(Default)]
struct Observed {
    path: PathInfo,
    direct_failed_at: Option<Instant>,
    wg_keys: Vec<String>,
    mesh_hosts: Vec<IpAddr>,
}

/// The agent's shared state; one per process.
pub struct Node {
    pub config: Config,
    pub keys: KeyRing,
    ident: Mutex<Ident>,
    spool: Mutex<Spool>,
    observed: RwLock<Observed>,
    pusher: Pusher,
    prober: Pusher,
    candidates: tokio::sync::Mutex<Option<(Instant, Vec<Candidate>)>>,
    collector: tokio::sync::Mutex<Collector>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Opens the state directory (agent id, ticks, spool) for `config`.
    pub fn open(config: Config, keys: KeyRing) -> anyhow::Result<Node> {
        let dir = &config.state_dir;
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating state directory {} (set --state-dir or KATTILA_STATE_DIR)",
                dir.display()
            )
        })?;
        let agent_id = load_or_create_agent_id(&dir.join("agent_id"))?;
        let ticks = TickCounter::open(dir.join("tick"), 100)?;
        let spool = Spool::open(&dir.join("spool"), config.spool_max_bytes, config.spool_max_age)?;
        let pusher = Pusher::new(config.timeout)?;
        let prober = Pusher::new(config.timeout.min(Duration::from_secs(2)))?;
        Ok(Node {
            config,
            keys,
            ident: Mutex::new(Ident { agent_id, ticks }),
            spool: Mutex::new(spool),
            observed: RwLock::new(Observed::default()),
            pusher,
            prober,
            candidates: tokio::sync::Mutex::new(None),
            collector: tokio::sync::Mutex::new(Collector::default()),
        })
    }

    pub fn agent_id(&self) -> String {
        lock(&self.ident).agent_id.clone()
    }

    pub fn path(&self) -> PathInfo {
        self.observed.read().unwrap_or_else(|e| e.into_inner()).path
    }

    fn set_path(&self, path: PathInfo) {
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        if o.path != path {
            tracing::info!(path = %path.describe(), "path to the receiver changed");
        }
        o.path = path;
    }

    fn mark_direct(&self, ok: bool) {
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        o.direct_failed_at = if ok { None } else { Some(Instant::now()) };
    }

    fn direct_failed_recently(&self) -> bool {
        let o = self.observed.read().unwrap_or_else(|e| e.into_inner());
        o.direct_failed_at.is_some_and(|t| t.elapsed() < self.config.interval)
    }

    pub fn spool_stats(&self) -> SpoolStats {
        lock(&self.spool).stats()
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.config.state_dir.join(name)
    }

    /// Remembers what the last collection saw: this node's WireGuard keys
    /// and the host addresses of its peers (live peers first).
    pub fn observe(&self, t: &Telemetry) {
        let wg_keys = t.wireguard.iter().map(|d| d.public_key.clone()).collect();
        let hosts = mesh_hosts(t);
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        o.wg_keys = wg_keys;
        o.mesh_hosts = hosts;
    }

    fn next_tick(&self) -> anyhow::Result<u64> {
        lock(&self.ident).ticks.next_tick()
    }

    /// Collects and builds this cycle's unsigned report.
    pub async fn collect_report(&self) -> Report {
        let telemetry = self.collector.lock().await.collect().await;
        self.observe(&telemetry);
        let mut report = build_report(&self.agent_id(), unix_now(), telemetry);
        report.site = self.config.site.clone();
        report
    }

    /// Signs `report` for sending now, carrying the spool's dropped count.
    pub fn sign(&self, report: &mut Report, psk: &Psk) -> anyhow::Result<Vec<u8>> {
        report.spool_dropped = lock(&self.spool).dropped();
        let mut ident = lock(&self.ident);
        sign_report(report, psk, &mut ident.ticks, unix_now())
    }

    /// One cycle: register if needed, collect, deliver.
    pub async fn cycle(&self) -> anyhow::Result<CycleSummary> {
        let report = self.collect_report().await;
        self.register_if_needed(&report.hostname).await?;
        self.deliver_all(report).await
    }

    /// New agent id, empty spool, path unknown. Ticks keep increasing.
    pub fn reset(&self) -> anyhow::Result<String> {
        let new_id = new_agent_id();
        {
            let mut ident = lock(&self.ident);
            write_atomically(&self.state_file("agent_id"), format!("{new_id}\n").as_bytes())?;
            ident.agent_id = new_id.clone();
        }
        lock(&self.spool).clear()?;
        let _ = std::fs::remove_file(self.state_file("registered"));
        self.set_path(PathInfo::Unknown);
        Ok(new_id)
    }
}
