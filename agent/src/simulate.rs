//! A synthetic fleet for the demo, tests and benchmarks: N agents with
//! stable ids and WireGuard keys derived from a seed, grouped in sites,
//! peered into a hub-and-spoke mesh (both ends of every link list each
//! other), pushing signed reports through the real report builder, signer
//! and push client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kattila_proto::model::{Interface, Route, SystemInfo, WgDevice, WgPeer};
use kattila_proto::Psk;
use sha2::{Digest, Sha256};

use crate::identity::TickCounter;
use crate::push::{updates_url, Pusher};
use crate::report::{build_report, sign_report, Telemetry};
use crate::retry::Verdict;

/// Agents per site; the first agent of a site is its hub.
pub const SITE_SIZE: usize = 5;

/// One simulated host, fixed for a given seed and index.
#[derive(Debug, Clone)]
pub struct SimAgent {
    pub index: usize,
    pub agent_id: String,
    pub hostname: String,
    pub site: usize,
    pub wg_public_key: String,
    /// Indices of the agents this one peers with.
    pub peers: Vec<usize>,
}

/// A whole simulated fleet.
#[derive(Debug, Clone)]
pub struct SimFleet {
    pub seed: String,
    pub agents: Vec<SimAgent>,
}

fn digest(seed: &str, what: &str, index: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    h.update(index.to_le_bytes());
    h.finalize().into()
}

impl SimFleet {
    pub fn new(seed: &str, count: usize) -> SimFleet {
        let hub = |site: usize| site * SITE_SIZE;
        let sites = count.div_ceil(SITE_SIZE);
        let mut peers: Vec<Vec<usize>> = vec![Vec::new(); count];
        let mut link = |a: usize, b: usize| {
            if a != b && a < count && b < count && !peers[a].contains(&b) {
                peers[a].push(b);
                peers[b].push(a);
            }
        };
        for i in 0..count {
            let site = i / SITE_SIZE;
            // Spokes peer with their hub and with the next spoke of the site.
            link(i, hub(site));
            if i % SITE_SIZE != 0 && (i + 1) % SITE_SIZE != 0 {
                link(i, i + 1);
            }
        }
        // Hubs link sites: a full mesh for a few sites; for many, each hub
        // peers with the hubs 1, 2, 4, 8, … sites away (any site reaches any
        // other in a few hops, and no hub carries hundreds of peers).
        if sites <= 8 {
            for a in 0..sites {
                for b in a + 1..sites {
                    link(hub(a), hub(b));
                }
            }
        } else {
            for a in 0..sites {
                let mut step = 1;
                while step < sites {
                    link(hub(a), hub((a + step) % sites));
                    step *= 2;
                }
            }
        }
        let agents = (0..count)
            .map(|i| {
                let site = i / SITE_SIZE;
                let role = if i % SITE_SIZE == 0 { "gw" } else { "node" };
                SimAgent {
                    index: i,
                    agent_id: hex::encode(&digest(seed, "agent-id", i)[..16]),
                    hostname: format!("site{site}-{role}{:02}", i % SITE_SIZE),
                    site,
                    wg_public_key: base64::engine::general_purpose::STANDARD
                        .encode(digest(seed, "wg-key", i)),
                    peers: std::mem::take(&mut peers[i]),
                }
            })
            .collect();
        SimFleet { seed: seed.to_string(), agents }
    }

    fn eth_addr(&self, i: usize) -> (String, String) {
        let a = &self.agents[i];
        let (site_hi, site_lo) = (a.site / 256, a.site % 256);
        let host = i % SITE_SIZE + 10;
        (
            format!("10.{}.{site_lo}.{host}", 20 + site_hi),
            format!("2001:db8:{:x}::{host:x}", a.site),
        )
    }

    fn wg_addr(&self, i: usize) -> String {
        format!("10.99.{}.{}", i / 250, i % 250 + 1)
    }

    /// What agent `i` would report at time `now`.
    pub fn telemetry(&self, i: usize, now: i64) -> Telemetry {
        let a = &self.agents[i];
        let (v4, v6) = self.eth_addr(i);
        let uptime = 86_400 * (1 + i as u64 % 30) + (now as u64 % 86_400);
        let phase = (now as f64 / 300.0) + i as f64;
        let load1 = 0.2 + 0.8 * (0.5 + 0.5 * phase.sin()) * (1.0 + (i % 4) as f64);
        let rate = 2_000 + 300 * (i as u64 % 7);
        let counter = |k: u64| (now as u64).saturating_mul(rate * k) / 10;
        let wg_ip = self.wg_addr(i);
        let gateway = format!("10.{}.{}.1", 20 + a.site / 256, a.site % 256);
        let interfaces = vec![
            Interface {
                name: "lo".into(),
                kind: "loopback".into(),
                state: "unknown".into(),
                mtu: 65536,
                mac: None,
                addresses: vec!["127.0.0.1/8".into(), "::1/128".into()],
                rx_bytes: counter(1),
                tx_bytes: counter(1),
                rx_errors: 0,
                tx_errors: 0,
            },
            Interface {
                name: "eth0".into(),
                kind: "ether".into(),
                state: "up".into(),
                mtu: 1500,
                mac: Some(format!(
                    "52:54:00:{:02x}:{:02x}:{:02x}",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )),
                addresses: vec![format!("{v4}/24"), format!("{v6}/64")],
                rx_bytes: counter(40),
                tx_bytes: counter(25),
                rx_errors: 0,
                tx_errors: 0,
            },
            Interface {
                name: "wg0".into(),
                kind: "wireguard".into(),
                state: "unknown".into(),
                mtu: 1420,
                mac: None,
                addresses: vec![format!("{wg_ip}/16")],
                rx_bytes: counter(10),
                tx_bytes: counter(9),
                rx_errors: 0,
                tx_errors: 0,
            },
        ];
        let routes = vec![
            Route {
                dst: "0.0.0.0/0".into(),
                gateway: Some(gateway),
                dev: Some("eth0".into()),
                metric: Some(100),
                table: 254,
            },
            Route {
                dst: format!("10.{}.{}.0/24", 20 + a.site / 256, a.site % 256),
                gateway: None,
                dev: Some("eth0".into()),
                metric: Some(100),
                table: 254,
            },
            Route {
                dst: "10.99.0.0/16".into(),
                gateway: None,
                dev: Some("wg0".into()),
                metric: None,
                table: 254,
            },
            Route {
                dst: format!("{v4}/32"),
                gateway: None,
                dev: Some("eth0".into()),
                metric: None,
                table: 255,
            },
        ];
        // wg-quick installs a route for each peer's allowed IPs.
        let mut routes = routes;
        routes.extend(a.peers.iter().map(|&p| Route {
            dst: format!("{}/32", self.wg_addr(p)),
            gateway: None,
            dev: Some("wg0".into()),
            metric: None,
            table: 254,
        }));
        let peers = a
            .peers
            .iter()
            .map(|&p| {
                let pair = (i.min(p) * 7919 + i.max(p) * 104_729) as i64;
                WgPeer {
                    public_key: self.agents[p].wg_public_key.clone(),
                    endpoint: Some(format!("{}:51820", self.eth_addr(p).0)),
                    allowed_ips: vec![format!("{}/32", self.wg_addr(p))],
                    // Handshakes renew every two minutes; each pair has its own phase.
                    latest_handshake: Some(now - (now + pair).rem_euclid(110)),
                    rx_bytes: counter(2) + pair as u64 % 10_000,
                    tx_bytes: counter(2) + pair as u64 % 7_000,
                    persistent_keepalive: Some(25),
                }
            })
            .collect();
        Telemetry {
            hostname: a.hostname.clone(),
            system: SystemInfo {
                uptime_secs: uptime,
                load: [load1, load1 * 0.8, load1 * 0.6],
                kernel: "6.1.0-28-amd64".into(),
            },
            interfaces,
            routes,
            wireguard: vec![WgDevice {
                name: "wg0".into(),
                public_key: a.wg_public_key.clone(),
                listen_port: Some(51820),
                peers,
            }],
            errors: Vec::new(),
        }
    }
}

/// How to run a simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub agents: usize,
    pub receiver_url: String,
    pub interval: Duration,
    pub seed: String,
    /// Where the simulated agents keep their tick counters.
    pub state_dir: PathBuf,
    /// Stop after this many rounds (None: until interrupted).
    pub rounds: Option<u64>,
}

/// Counts of what the simulation sent.
#[derive(Debug, Default)]
pub struct SimStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub unreachable: AtomicU64,
}

/// Runs the fleet: every agent pushes once per interval (spread evenly over
/// the interval) until `rounds` are done or the future is dropped.
pub async fn run(opts: SimOptions, psk: Psk, stats: Arc<SimStats>) -> anyhow::Result<()> {
    let fleet = Arc::new(SimFleet::new(&opts.seed, opts.agents));
    let pusher = Pusher::new(Duration::from_secs(10))?;
    let url = updates_url(&opts.receiver_url);
    std::fs::create_dir_all(&opts.state_dir)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..fleet.agents.len() {
        let ticks = TickCounter::open(
            opts.state_dir.join(format!("{}.tick", fleet.agents[i].agent_id)),
            1000,
        )?;
        let (fleet, pusher, url, psk, stats) =
            (fleet.clone(), pusher.clone(), url.clone(), psk.clone(), stats.clone());
        let offset = opts.interval.mul_f64(i as f64 / fleet.agents.len().max(1) as f64);
        let (interval, rounds) = (opts.interval, opts.rounds);
        tasks.spawn(async move {
            agent_loop(i, fleet, ticks, pusher, url, psk, stats, offset, interval, rounds).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn agent_loop(
    i: usize,
    fleet: Arc<SimFleet>,
    mut ticks: TickCounter,
    pusher: Pusher,
    url: String,
    psk: Psk,
    stats: Arc<SimStats>,
    offset: Duration,
    interval: Duration,
    rounds: Option<u64>,
) -> anyhow::Result<()> {
    tokio::time::sleep(offset).await;
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0;
    loop {
        if rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        timer.tick().await;
        round += 1;
        let now = crate::unix_now();
        let agent_id = &fleet.agents[i].agent_id;
        let mut report = build_report(agent_id, now, fleet.telemetry(i, now));
        let envelope = sign_report(&mut report, &psk, &mut ticks, now)?;
        match pusher.post(&url, envelope).await {
            Ok(_) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            // The agent's retry policy: what it would keep for a later
            // attempt because the receiver was not there counts as
            // unreachable; any refusal, as refused.
            Err(e) if Verdict::of(&e) == Verdict::Unavailable => {
                stats.unreachable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %agent_id, error = %e, "push failed");
            }
            Err(e) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent = %agent_id, error = %e, "report refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kattila_proto::limits::check_report;

    #[test]
    fn fleet_is_stable_for_a_seed_and_differs_across_seeds() {
        let a = SimFleet::new("s", 12);
        let b = SimFleet::new("s", 12);
        let c = SimFleet::new("t", 12);
        assert_eq!(a.agents[3].agent_id, b.agents[3].agent_id);
        assert_ne!(a.agents[3].agent_id, c.agents[3].agent_id);
        let ids: std::collections::HashSet<_> = a.agents.iter().map(|x| &x.agent_id).collect();
        assert_eq!(ids.len(), 12);
    }

    #[test]
    fn every_link_is_listed_by_both_ends_and_points_at_real_keys() {
        let fleet = SimFleet::new("mesh", 23);
        for a in &fleet.agents {
            assert!(!a.peers.is_empty(), "{} has no peers", a.hostname);
            for &p in &a.peers {
                assert!(fleet.agents[p].peers.contains(&a.index));
            }
        }
        let t = fleet.telemetry(7, 1_767_225_600);
        let keys: Vec<_> = t.wireguard[0].peers.iter().map(|p| &p.public_key).collect();
        for &p in &fleet.agents[7].peers {
            assert!(keys.contains(&&fleet.agents[p].wg_public_key));
        }
    }

    #[test]
    fn simulated_reports_pass_the_protocol_limits() {
        let fleet = SimFleet::new("limits", 600);
        for i in [0, 1, 4, 5, 299, 599] {
            let report = build_report(
                &fleet.agents[i].agent_id,
                1_767_225_600,
                fleet.telemetry(i, 1_767_225_600),
            );
            check_report(&report).unwrap_or_else(|e| panic!("agent {i}: {e:?}"));
        }
    }
}
