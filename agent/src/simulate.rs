//! A synthetic fleet for the demo, tests and benchmarks: N agents with
//! stable ids and WireGuard keys derived from a seed, grouped in sites
//! (each with a gateway, its hub), peered into a hub-and-spoke mesh (both
//! ends of every link list each other), pushing signed reports through the
//! real report builder, signer and push client.
//!
//! A fault [`Schedule`] (`--faults`) puts realistic failures on the fleet:
//! a site gone silent, a gateway down with its site's agents delivering
//! through a relay, stale links, a peer removed at one end, a moved
//! endpoint, a flapping interface — and their recoveries. Faults change
//! only what the simulated hosts see and send, never how it is signed:
//! relayed reports are real relay envelopes, wrapped by a live simulated
//! agent with its own key, tick and nonce.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use kattila_proto::model::{Interface, Route, SystemInfo, WgDevice, WgPeer};
use kattila_proto::{relay_envelope, Psk};
use sha2::{Digest, Sha256};

use crate::identity::{new_nonce, TickCounter};
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
    /// The operator's label for the site, sent as the report's `site`.
    pub site_label: String,
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

/// The label simulated agents of `site` report: `site-03`.
pub fn site_label(site: usize) -> String {
    format!("site-{site:02}")
}

/// Seconds between two handshakes of a healthy simulated link (WireGuard
/// renews its session about every two minutes while traffic flows).
const HANDSHAKE_EVERY: i64 = 110;

/// Seconds a stale link's last handshake lies before its fault starts:
/// more than the receiver's default stale threshold (180 s), so the link
/// shows stale from its second report in the fault, not three minutes
/// later — the link had been dead a while before anyone looked.
pub const STALE_HEAD_START_SECS: i64 = 200;

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
                    site_label: site_label(site),
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

    /// Sites in the fleet (the last may be partial).
    pub fn sites(&self) -> usize {
        self.agents.len().div_ceil(SITE_SIZE)
    }

    /// The gateway (hub) of `site`: its first agent.
    pub fn gateway(site: usize) -> usize {
        site * SITE_SIZE
    }

    /// What agent `i` would report at time `now` with nothing wrong.
    pub fn telemetry(&self, i: usize, now: i64) -> Telemetry {
        self.telemetry_with(i, now, &[])
    }

    /// What agent `i` would report at time `now` while `faults` are in
    /// force. Healthy links behave as WireGuard does: a handshake about
    /// every two minutes (each pair with its own phase), rx and tx growing.
    pub fn telemetry_with(&self, i: usize, now: i64, faults: &[Active]) -> Telemetry {
        let a = &self.agents[i];
        let (v4, v6) = self.eth_addr(i);
        let uptime = 86_400 * (1 + i as u64 % 30) + (now as u64 % 86_400);
        let phase = (now as f64 / 300.0) + i as f64;
        let load1 = 0.2 + 0.8 * (0.5 + 0.5 * phase.sin()) * (1.0 + (i % 4) as f64);
        let rate = 2_000 + 300 * (i as u64 % 7);
        let counter_at = |t: i64, k: u64| (t.max(0) as u64).saturating_mul(rate * k) / 10;
        let counter = |k: u64| counter_at(now, k);
        let wg_ip = self.wg_addr(i);
        let gateway = format!("10.{}.{}.1", 20 + a.site / 256, a.site % 256);
        // A flapping link is down for two reports, up for two, and so on.
        let eth0_state = match faults.iter().find_map(|f| match f.fault {
            Fault::Flapping { agent } if agent == i => Some(f.rounds_in),
            _ => None,
        }) {
            Some(rounds_in) if (rounds_in / 2) % 2 == 0 => "down",
            _ => "up",
        };
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
                state: eth0_state.into(),
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
        // A peer removed from this end's configuration is gone from its
        // WireGuard device and from the routes wg-quick installed for it.
        let configured: Vec<usize> = a
            .peers
            .iter()
            .copied()
            .filter(|&p| {
                !faults.iter().any(|f| f.fault == Fault::OneSided { remover: i, removed: p })
            })
            .collect();
        // wg-quick installs a route for each peer's allowed IPs.
        let mut routes = routes;
        routes.extend(configured.iter().map(|&p| Route {
            dst: format!("{}/32", self.wg_addr(p)),
            gateway: None,
            dev: Some("wg0".into()),
            metric: None,
            table: 254,
        }));
        let peers = configured
            .iter()
            .map(|&p| {
                let pair = (i.min(p) * 7919 + i.max(p) * 104_729) as i64;
                // Handshakes renew every two minutes; each pair has its own phase.
                let handshake_at = |t: i64| t - (t + pair).rem_euclid(HANDSHAKE_EVERY);
                let rx_at = |t: i64| counter_at(t, 2) + pair as u64 % 10_000;
                // A dead link keeps its last handshake and receives nothing;
                // this end still sends (handshake attempts, keepalives).
                let (latest_handshake, rx_bytes) = match self.link_dead(i, p, faults) {
                    Some(dead) => (handshake_at(dead.handshakes_until), rx_at(dead.rx_until)),
                    None => (handshake_at(now), rx_at(now)),
                };
                let moved = faults.iter().any(|f| f.fault == Fault::EndpointMoved { agent: p });
                let endpoint = if moved {
                    // NAT rebinding: a new public address and source port.
                    format!("203.0.113.{}:{}", p % 250 + 1, 40_000 + p % 20_000)
                } else {
                    format!("{}:51820", self.eth_addr(p).0)
                };
                WgPeer {
                    public_key: self.agents[p].wg_public_key.clone(),
                    endpoint: Some(endpoint),
                    allowed_ips: vec![format!("{}/32", self.wg_addr(p))],
                    latest_handshake: Some(latest_handshake),
                    rx_bytes,
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

    /// Whether agent `i` is down (sends nothing) under `faults`.
    pub fn is_down(&self, i: usize, faults: &[Active]) -> bool {
        faults.iter().any(|f| match f.fault {
            Fault::SiteSilent { site } => self.agents[i].site == site,
            Fault::GatewayDown { site } => i == Self::gateway(site),
            _ => false,
        })
    }

    /// How agent `i`'s report reaches the receiver under `faults`. While its
    /// site's gateway is down, through the gateway of the next site that
    /// is up (the agents name it as a relay, as `--relay` does).
    pub fn path(&self, i: usize, faults: &[Active]) -> SimPath {
        let site = self.agents[i].site;
        let cut_off = faults.iter().any(|f| f.fault == Fault::GatewayDown { site })
            && !self.is_down(i, faults);
        if !cut_off {
            return SimPath::Direct;
        }
        (1..self.sites())
            .map(|k| Self::gateway((site + k) % self.sites()))
            .find(|&g| !self.is_down(g, faults))
            .map_or(SimPath::None, SimPath::Relay)
    }

    /// Whether `i`'s link to `p` is dead under `faults`, and since when.
    fn link_dead(&self, i: usize, p: usize, faults: &[Active]) -> Option<Dead> {
        faults
            .iter()
            .filter_map(|f| match f.fault {
                Fault::StaleLink { a, b } if (a, b) == (i, p) || (a, b) == (p, i) => Some(Dead {
                    handshakes_until: f.since - STALE_HEAD_START_SECS,
                    rx_until: f.since,
                }),
                // The other end removed this one: its handshakes go unanswered.
                Fault::OneSided { remover, removed } if (remover, removed) == (p, i) => {
                    Some(Dead::since(f.since))
                }
                Fault::SiteSilent { site } if self.agents[p].site == site => {
                    Some(Dead::since(f.since))
                }
                Fault::GatewayDown { site } if p == Self::gateway(site) => {
                    Some(Dead::since(f.since))
                }
                _ => None,
            })
            .min_by_key(|d| d.handshakes_until)
    }

    /// A fault in words, with the simulated hostnames it concerns.
    pub fn describe(&self, fault: Fault) -> String {
        let host = |i: usize| self.agents[i].hostname.as_str();
        match fault {
            Fault::SiteSilent { site } => format!("{} silent", site_label(site)),
            Fault::GatewayDown { site } => format!(
                "{} gateway {} down, its agents relay",
                site_label(site),
                host(Self::gateway(site))
            ),
            Fault::StaleLink { a, b } => format!("link {} - {} stale", host(a), host(b)),
            Fault::OneSided { remover, removed } => {
                format!("{} removed peer {} (one-sided)", host(remover), host(removed))
            }
            Fault::EndpointMoved { agent } => format!("{} endpoint moved", host(agent)),
            Fault::Flapping { agent } => format!("{} eth0 flapping", host(agent)),
        }
    }
}

/// Since when a link has been dead (Unix seconds): its last handshake and
/// the last bytes received.
#[derive(Debug, Clone, Copy)]
struct Dead {
    handshakes_until: i64,
    rx_until: i64,
}

impl Dead {
    fn since(t: i64) -> Dead {
        Dead { handshakes_until: t, rx_until: t }
    }
}

/// How a simulated report travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimPath {
    Direct,
    /// Wrapped in a relay layer by this (live) agent.
    Relay(usize),
    /// Cut off with no live relay: nothing is sent.
    None,
}

/// A failure the simulator can put on its fleet. Agents are fleet indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Every agent of the site is down: no reports, and every link to the
    /// site dies (power or uplink lost).
    SiteSilent { site: usize },
    /// The site's gateway is down (no reports, its links die); the site's
    /// other agents cannot reach the receiver directly and deliver through
    /// the next site's gateway that is up.
    GatewayDown { site: usize },
    /// Both ends of the link stop seeing handshakes and received bytes.
    StaleLink { a: usize, b: usize },
    /// `remover` drops `removed` from its WireGuard configuration; `removed`
    /// still lists it and sees the link die: a one-sided link.
    OneSided { remover: usize, removed: usize },
    /// Every peer of `agent` sees its endpoint change (NAT rebinding); when
    /// the fault ends it changes back.
    EndpointMoved { agent: usize },
    /// `agent`'s eth0 goes down for two reports, up for two, and so on.
    Flapping { agent: usize },
}

/// A fault in force for one report: what, since when (Unix seconds) and
/// for how many rounds (reports per agent) already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Active {
    pub fault: Fault,
    pub since: i64,
    pub rounds_in: u64,
}

/// A fault from round `from` up to (not including) round `until` of each
/// period. A round is one report of every agent, so the same schedule
/// runs faster with a shorter `--interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub fault: Fault,
    pub from: u64,
    pub until: u64,
}

/// When which faults are in force; repeats every `period` rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub windows: Vec<Window>,
    pub period: u64,
}

/// Rounds of one cycle of the `demo` scenario (4 minutes at 5 s).
pub const DEMO_PERIOD: u64 = 48;

/// The fault scenarios of `simulate --faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scenario {
    /// Every agent healthy, every report delivered directly.
    #[default]
    None,
    /// A repeating cycle of failures and recoveries; see [`Schedule::demo`].
    Demo,
}

impl Scenario {
    /// This scenario's schedule for `fleet` (targets picked from its seed).
    pub fn schedule(self, fleet: &SimFleet) -> Schedule {
        match self {
            Scenario::None => Schedule { windows: Vec::new(), period: DEMO_PERIOD },
            Scenario::Demo => Schedule::demo(fleet),
        }
    }
}

impl Schedule {
    /// The demo cycle of [`DEMO_PERIOD`] rounds. Three full sites, picked
    /// from the seed, get roles: one loses its gateway, one goes silent,
    /// one (and a fourth, if there is one) carries the link and interface
    /// faults. In rounds of the cycle:
    ///
    /// | rounds | fault |
    /// |---|---|
    /// | 0–30 | a link of the quiet site stale |
    /// | 2–20 | the quiet site's gateway flapping |
    /// | 3–19 | a gateway down, its site relayed |
    /// | 4–40 | a spoke removes its gateway (one-sided) |
    /// | 5–21 | a whole site silent |
    /// | 6–26 | an endpoint moved (and back) |
    /// | 24–48 | another link stale |
    /// | 28–44 | another interface flapping |
    ///
    /// So something is wrong at every moment, red and amber show within
    /// the first minute at 5 s per round, and every fault recovers once
    /// per cycle. A fleet too small for a role leaves that fault out.
    pub fn demo(fleet: &SimFleet) -> Schedule {
        let n = fleet.agents.len();
        let mut full: Vec<usize> =
            (0..fleet.sites()).filter(|s| (s + 1) * SITE_SIZE <= n).collect();
        // Fisher-Yates with the seed's digests: the same fleet, the same faults.
        for k in (1..full.len()).rev() {
            let d = digest(&fleet.seed, "faults", k);
            let j =
                (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % (k as u64 + 1)) as usize;
            full.swap(k, j);
        }
        let (gateway_site, silent_site, quiet) = match full.as_slice() {
            [] => (None, None, vec![0]),
            [q] => (None, None, vec![*q]),
            [g, q] => (Some(*g), None, vec![*q]),
            [g, s, rest @ ..] => (Some(*g), Some(*s), rest.to_vec()),
        };
        let q = SimFleet::gateway(quiet[0]);
        let q2 = SimFleet::gateway(quiet.get(1).copied().unwrap_or(quiet[0]));
        let exists = |i: usize| i < n;
        let linked =
            |a: usize, b: usize| exists(a) && exists(b) && fleet.agents[a].peers.contains(&b);
        let mut windows = Vec::new();
        let mut add = |fault: Fault, from: u64, until: u64, ok: bool| {
            if ok {
                windows.push(Window { fault, from, until });
            }
        };
        add(Fault::StaleLink { a: q + 1, b: q + 2 }, 0, 30, linked(q + 1, q + 2));
        add(Fault::Flapping { agent: q }, 2, 20, exists(q));
        if let Some(site) = gateway_site {
            add(Fault::GatewayDown { site }, 3, 19, true);
        }
        add(Fault::OneSided { remover: q + 4, removed: q }, 4, 40, linked(q + 4, q));
        if let Some(site) = silent_site {
            add(Fault::SiteSilent { site }, 5, 21, true);
        }
        add(Fault::EndpointMoved { agent: q + 3 }, 6, 26, exists(q + 3));
        add(Fault::StaleLink { a: q2 + 3, b: q2 + 4 }, 24, DEMO_PERIOD, linked(q2 + 3, q2 + 4));
        add(Fault::Flapping { agent: q2 + 1 }, 28, 44, exists(q2 + 1));
        Schedule { windows, period: DEMO_PERIOD }
    }

    /// The faults in force in `round` (counted from 0), with the Unix time
    /// each began: rounds start at `start` and are `interval` apart.
    pub fn active(&self, round: u64, start: f64, interval: Duration) -> Vec<Active> {
        let period = self.period.max(1);
        let (cycle, pos) = (round / period, round % period);
        self.windows
            .iter()
            .filter(|w| w.from <= pos && pos < w.until)
            .map(|w| {
                let began = cycle * period + w.from;
                Active {
                    fault: w.fault,
                    since: (start + began as f64 * interval.as_secs_f64()) as i64,
                    rounds_in: round - began,
                }
            })
            .collect()
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
    /// Which failures to put on the fleet.
    pub faults: Scenario,
}

/// Counts of what the simulation sent.
#[derive(Debug, Default)]
pub struct SimStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub unreachable: AtomicU64,
    /// Reports sent wrapped in a relay layer (accepted or not).
    pub relayed: AtomicU64,
    /// Reports not made because the agent was down (a fault).
    pub withheld: AtomicU64,
}

/// What every simulated agent's task shares.
struct Shared {
    fleet: SimFleet,
    schedule: Schedule,
    /// One tick counter per agent: its own reports and the relay layers it
    /// wraps take ticks from the same strictly increasing counter.
    ticks: Vec<Mutex<TickCounter>>,
    pusher: Pusher,
    url: String,
    psk: Psk,
    stats: Arc<SimStats>,
    /// Unix time (fractional) of round 0.
    start: f64,
    interval: Duration,
    rounds: Option<u64>,
}

/// Runs the fleet: every agent pushes once per interval (spread evenly over
/// the interval) until `rounds` are done or the future is dropped.
pub async fn run(opts: SimOptions, psk: Psk, stats: Arc<SimStats>) -> anyhow::Result<()> {
    let fleet = SimFleet::new(&opts.seed, opts.agents);
    let schedule = opts.faults.schedule(&fleet);
    for w in &schedule.windows {
        tracing::info!(
            from = w.from,
            until = w.until,
            every = schedule.period,
            "fault: {}",
            fleet.describe(w.fault)
        );
    }
    std::fs::create_dir_all(&opts.state_dir).with_context(|| {
        format!("creating the simulator's state directory {}", opts.state_dir.display())
    })?;
    let ticks = fleet
        .agents
        .iter()
        .map(|a| {
            TickCounter::open(opts.state_dir.join(format!("{}.tick", a.agent_id)), 1000)
                .map(Mutex::new)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let shared = Arc::new(Shared {
        schedule,
        ticks,
        pusher: Pusher::new(Duration::from_secs(10))?,
        url: updates_url(&opts.receiver_url),
        psk,
        stats,
        start,
        interval: opts.interval,
        rounds: opts.rounds,
        fleet,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let count = shared.fleet.agents.len();
    for i in 0..count {
        let shared = shared.clone();
        let offset = opts.interval.mul_f64(i as f64 / count.max(1) as f64);
        tasks.spawn(async move { agent_loop(i, shared, offset).await });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn agent_loop(i: usize, shared: Arc<Shared>, offset: Duration) -> anyhow::Result<()> {
    let Shared { fleet, schedule, ticks, pusher, url, psk, stats, .. } = &*shared;
    tokio::time::sleep(offset).await;
    let mut timer = tokio::time::interval(shared.interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let agent_id = &fleet.agents[i].agent_id;
    for round in 0.. {
        if shared.rounds.is_some_and(|r| round >= r) {
            break;
        }
        timer.tick().await;
        let faults = schedule.active(round, shared.start, shared.interval);
        if fleet.is_down(i, &faults) {
            stats.withheld.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = crate::unix_now();
        let mut report = build_report(agent_id, now, fleet.telemetry_with(i, now, &faults));
        report.site = Some(fleet.agents[i].site_label.clone());
        let envelope = sign_report(&mut report, psk, &mut lock(&ticks[i]), now)?;
        let envelope = match fleet.path(i, &faults) {
            SimPath::Direct => envelope,
            // What the relaying agent's POST /status/relay does: its own
            // layer, key, tick and nonce around the envelope as received.
            SimPath::Relay(r) => {
                let tick = lock(&ticks[r]).next_tick()?;
                let relayer = &fleet.agents[r].agent_id;
                stats.relayed.fetch_add(1, Ordering::Relaxed);
                relay_envelope(psk, relayer, now, &new_nonce(), tick, &envelope)
                    .context("wrapping a simulated relay layer")?
            }
            SimPath::None => {
                stats.unreachable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match pusher.post(url, envelope).await {
            Ok(_) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            // The agent's retry policy: what it would keep for a later
            // attempt because the receiver was not there counts as
            // unreachable; any refusal, as refused.
            Err(e) if e.verdict() == Verdict::Unavailable => {
                stats.unreachable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %agent_id, error = %e, "push failed");
            }
            Err(e) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent = %agent_id, error = %e, "report refused");
            }
        }
    }
    Ok(())
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

    const T: i64 = 1_767_225_600;

    fn peer<'a>(fleet: &SimFleet, t: &'a Telemetry, p: usize) -> Option<&'a WgPeer> {
        t.wireguard[0].peers.iter().find(|x| x.public_key == fleet.agents[p].wg_public_key)
    }

    fn active(fault: Fault, rounds_in: u64) -> Active {
        Active { fault, since: T, rounds_in }
    }

    #[test]
    fn healthy_links_handshake_every_two_minutes_and_keep_receiving() {
        let fleet = SimFleet::new("healthy", 10);
        let mut last: Option<(i64, u64)> = None;
        let mut renewed_at = T;
        for now in (T..T + 900).step_by(5) {
            let t = fleet.telemetry(1, now);
            let hub = peer(&fleet, &t, 0).unwrap();
            let hs = hub.latest_handshake.unwrap();
            assert!(now - hs < HANDSHAKE_EVERY, "handshake {} s old", now - hs);
            if let Some((prev_hs, prev_rx)) = last {
                assert!(hub.rx_bytes > prev_rx, "rx grows");
                assert!(hs >= prev_hs);
                if hs > prev_hs {
                    renewed_at = now;
                }
            }
            assert!(now - renewed_at <= 120, "a new handshake at least every two minutes");
            last = Some((hs, hub.rx_bytes));
        }
    }

    #[test]
    fn the_schedule_is_the_same_for_a_seed_and_none_puts_no_fault() {
        let schedule = |seed: &str| Scenario::Demo.schedule(&SimFleet::new(seed, 60));
        assert_eq!(schedule("s"), schedule("s"));
        assert!(
            ["t", "u", "v", "w"].iter().any(|seed| schedule(seed) != schedule("s")),
            "the seed picks the targets"
        );

        let fleet = SimFleet::new("s", 20);
        let none = Scenario::None.schedule(&fleet);
        for round in 0..3 * DEMO_PERIOD {
            let faults = none.active(round, T as f64, Duration::from_secs(5));
            assert!(faults.is_empty(), "round {round}: {faults:?}");
            for i in [0, 1, 7] {
                assert!(!fleet.is_down(i, &faults));
                assert_eq!(fleet.path(i, &faults), SimPath::Direct);
                assert_eq!(fleet.telemetry_with(i, T, &faults), fleet.telemetry(i, T));
            }
        }
    }

    #[test]
    fn the_demo_has_every_fault_always_something_wrong_and_every_fault_recovers() {
        let fleet = SimFleet::new("kattila-demo", 20);
        let schedule = Scenario::Demo.schedule(&fleet);
        let kinds: std::collections::HashSet<_> =
            schedule.windows.iter().map(|w| std::mem::discriminant(&w.fault)).collect();
        assert_eq!(kinds.len(), 6, "{schedule:?}");
        let interval = Duration::from_secs(5);
        for round in 0..2 * DEMO_PERIOD {
            assert!(!schedule.active(round, T as f64, interval).is_empty(), "round {round}");
        }
        for w in &schedule.windows {
            let during = schedule.active(w.from, T as f64, interval);
            let hit = during.iter().find(|a| a.fault == w.fault).unwrap();
            assert_eq!((hit.since, hit.rounds_in), (T + 5 * w.from as i64, 0));
            let next_cycle = schedule.active(w.from + DEMO_PERIOD + 1, T as f64, interval);
            let hit = next_cycle.iter().find(|a| a.fault == w.fault).unwrap();
            assert_eq!(hit.since, T + 5 * (w.from + DEMO_PERIOD) as i64, "the cycle repeats");
            // Recovered before the cycle ends (or, for a fault held to the
            // end of the cycle, when the next one starts).
            let after = schedule.active(w.until % DEMO_PERIOD + DEMO_PERIOD, T as f64, interval);
            assert!(after.iter().all(|a| a.fault != w.fault), "{w:?} recovers");
        }
        // Within the first minute at 5 s per round a site is silent and a
        // gateway is down.
        let early = schedule.active(6, T as f64, interval);
        assert!(early.iter().any(|a| matches!(a.fault, Fault::SiteSilent { .. })));
        assert!(early.iter().any(|a| matches!(a.fault, Fault::GatewayDown { .. })));
    }

    #[test]
    fn stale_links_and_one_sided_peers_freeze_what_the_ends_see() {
        let fleet = SimFleet::new("faults", 20);
        let stale = [active(Fault::StaleLink { a: 1, b: 2 }, 1)];
        let (early, late) =
            (fleet.telemetry_with(1, T + 10, &stale), fleet.telemetry_with(1, T + 60, &stale));
        let (p_early, p_late) = (peer(&fleet, &early, 2).unwrap(), peer(&fleet, &late, 2).unwrap());
        assert!(p_early.latest_handshake.unwrap() <= T - STALE_HEAD_START_SECS);
        assert_eq!(p_early.latest_handshake, p_late.latest_handshake);
        assert_eq!(p_early.rx_bytes, p_late.rx_bytes, "nothing received");
        assert!(p_late.tx_bytes > p_early.tx_bytes, "handshake attempts still go out");
        // The other end sees the same; other links of both ends stay healthy.
        let other_end = fleet.telemetry_with(2, T + 60, &stale);
        assert!(peer(&fleet, &other_end, 1).unwrap().latest_handshake.unwrap() <= T - 200);
        let hub_early = peer(&fleet, &early, 0).unwrap();
        let hub_late = peer(&fleet, &late, 0).unwrap();
        assert!(hub_late.rx_bytes > hub_early.rx_bytes);

        let one_sided = [active(Fault::OneSided { remover: 4, removed: 0 }, 0)];
        let remover = fleet.telemetry_with(4, T + 30, &one_sided);
        assert!(peer(&fleet, &remover, 0).is_none());
        assert!(peer(&fleet, &remover, 3).is_some());
        let route = format!("{}/32", fleet.wg_addr(0));
        assert!(remover.routes.iter().all(|r| r.dst != route), "its route went with it");
        let removed = fleet.telemetry_with(0, T + 100, &one_sided);
        let view = peer(&fleet, &removed, 4).expect("the other end still lists it");
        assert!(view.latest_handshake.unwrap() <= T);
        assert_eq!(view.rx_bytes, peer(&fleet, &fleet.telemetry(0, T), 4).unwrap().rx_bytes);
    }

    #[test]
    fn endpoints_move_interfaces_flap_and_reports_stay_valid() {
        let fleet = SimFleet::new("faults", 20);
        let moved = [active(Fault::EndpointMoved { agent: 3 }, 0)];
        let before = peer(&fleet, &fleet.telemetry(2, T), 3).unwrap().endpoint.clone();
        let t = fleet.telemetry_with(2, T, &moved);
        let after = peer(&fleet, &t, 3).unwrap().endpoint.clone();
        assert_ne!(before, after);
        check_report(&build_report("x", T, t)).unwrap();

        let eth0 = |rounds_in| {
            let t = fleet.telemetry_with(0, T, &[active(Fault::Flapping { agent: 0 }, rounds_in)]);
            check_report(&build_report("x", T, t.clone())).unwrap();
            t.interfaces.iter().find(|i| i.name == "eth0").unwrap().state.clone()
        };
        let states: Vec<String> = (0..6).map(eth0).collect();
        assert_eq!(states, ["down", "down", "up", "up", "down", "down"]);
        assert_eq!(fleet.telemetry(1, T).interfaces[1].state, "up", "others stay up");
    }

    #[test]
    fn a_gateway_down_relays_its_site_through_the_next_live_gateway() {
        let fleet = SimFleet::new("faults", 20);
        let gw = [active(Fault::GatewayDown { site: 1 }, 0)];
        assert!(fleet.is_down(5, &gw), "the gateway sends nothing");
        assert_eq!(fleet.path(6, &gw), SimPath::Relay(10));
        assert_eq!(fleet.path(1, &gw), SimPath::Direct, "other sites go direct");
        // Its links die for everyone who peers with it.
        let spoke = fleet.telemetry_with(6, T + 30, &gw);
        assert!(peer(&fleet, &spoke, 5).unwrap().latest_handshake.unwrap() <= T);
        // The next site silent too: the one after relays.
        let both = [gw[0], active(Fault::SiteSilent { site: 2 }, 0)];
        assert!(fleet.is_down(12, &both));
        assert_eq!(fleet.path(6, &both), SimPath::Relay(15));
        // Nobody left to relay: nothing is sent.
        let small = SimFleet::new("faults", 5);
        assert_eq!(small.path(1, &[active(Fault::GatewayDown { site: 0 }, 0)]), SimPath::None);
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
