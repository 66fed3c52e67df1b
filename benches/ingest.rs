//! Ingest benchmark: how many realistic signed reports per second the
//! receiver verifies and commits, and at what latency.
//!
//!   cargo bench -p kattila --bench ingest -- [options]
//!
//! Options:
//!   --url URL          target a running receiver (default: start one in
//!                      this process on a fresh database in a temp dir)
//!   --agents N         simulated agents (default 1000)
//!   --seconds S        measured duration (default 10)
//!   --rate R           open loop at R reports/s; 0 = closed loop, as fast
//!                      as the receiver answers (default 0)
//!   --connections C    keep-alive connections (default 64); in open loop a
//!                      request waits for its connection when the receiver
//!                      is behind, and its latency still counts from when
//!                      it was due
//!   --psk KEY          fleet key (default "bench-key"; must match --url's)
//!   --reports N        closed loop: send at most N reports (default: as
//!                      many as --seconds could need at 25,000/s); with a
//!                      large --seconds, N reports are all sent
//!   --no-warmup        measure from the fleet's first reports (by default
//!                      every agent reports once before the clock starts:
//!                      a first report writes the agent's whole state, ~25
//!                      statements, while the steady state is measured)
//!   --stalled N        slow clients: keep N more connections open that
//!                      stall mid-request (every fourth in its request head,
//!                      the others after the head of a 3,000-byte report and
//!                      a few of its bytes); each one the receiver closes is
//!                      opened again at once. They are all open before the
//!                      warm-up starts.
//!   --stalled-body B   with --stalled: each stalled connection sends B
//!                      bytes of a body announced one byte longer, then stalls
//!   --no-reopen        with --stalled: a stalled connection the receiver
//!                      closes stays closed
//!   --realistic        the realistic mode (below) instead of pre-built
//!                      reports
//!   --churn P          realistic: percent of agents that change something
//!                      now and then (default 10)
//!   --relayed P        realistic: percent of the non-gateway agents whose
//!                      reports reach the receiver through a relay (default 5)
//!   --warmup-rounds R  reports per agent before the clock starts (default
//!                      1; 0 is the same as --no-warmup)
//!   --pause-after-warmup  print "paused after warm-up" and wait for a line
//!                      on stdin before measuring (scripts/bench-receiver.sh
//!                      --restart restarts the receiver meanwhile)
//!   --timeline         print committed reports and p99 for every second
//!   --new-connections  every request on a new connection (`Connection:
//!                      close`), as agents that report every 30 s do
//!
//! Steady-state mode (the default): every report is generated and signed
//! before the clock starts (the simulator's reports, ~3 KB on average, one
//! simulated second apart, so counters grow but handshakes rarely move),
//! so the measured phase is HTTP + verification + commit.
//!
//! Realistic mode (`--realistic`): every report is built and signed when it
//! is sent, as an independent agent fleet would, and moves the way a real
//! agent's does. Time in the reports is compressed: each report stands for
//! 30 s of its agent's life (the agent interval), whatever the real gap
//! between two of its reports. So interface and peer byte counters grow
//! by 30 s of traffic in every report, uptime by 30 s, and each peer
//! re-handshakes every fourth report (WireGuard's ~2 minutes), each peer
//! with its own phase: most reports of an agent with several peers carry a
//! newer handshake. A new handshake is the signing time, or one second
//! after the previous one when the clock has not moved on since (then it
//! can lie a little ahead of the receiver's clock). `--churn` agents
//! change something every 20th report (10 minutes of agent time), in
//! turn: a peer's endpoint moves (NAT rebinding), a container interface
//! appears, it goes again, a road-warrior peer (a key no agent owns)
//! appears, it goes again. `--relayed` agents deliver through their
//! site's neighbour gateway (a real relay layer, with the relaying agent's
//! own ticks). With `--no-warmup` on a fresh database every agent's first
//! report (its whole state) is part of the measured phase.
//!
//! A 200 means committed with synchronous=FULL; only 200s count.
//!
//! The generator shares the two cores with the receiver, so it must be
//! cheap: like `wrk`, it writes pre-built HTTP/1.1 requests on keep-alive
//! connections and reads only the status line and Content-Length of each
//! answer (about 15 µs of CPU per request; its CPU time is printed). The
//! realistic mode also builds and signs each report as it goes.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kattila_agent::simulate::{SimFleet, SITE_SIZE};
use kattila_proto::model::{Interface, WgPeer};
use kattila_proto::{relay_envelope, signed_envelope, Psk, Report};

struct Options {
    url: Option<String>,
    agents: usize,
    seconds: f64,
    rate: f64,
    connections: usize,
    psk: String,
    warmup: usize,
    reports: Option<usize>,
    stalled: usize,
    stalled_body: Option<usize>,
    reopen: bool,
    realistic: bool,
    churn: u64,
    relayed: u64,
    pause_after_warmup: bool,
    timeline: bool,
    new_connections: bool,
}

fn options() -> Options {
    let mut o = Options {
        url: None,
        agents: 1000,
        seconds: 10.0,
        rate: 0.0,
        connections: 64,
        psk: "bench-key".into(),
        warmup: 1,
        reports: None,
        stalled: 0,
        stalled_body: None,
        reopen: true,
        realistic: false,
        churn: 10,
        relayed: 5,
        pause_after_warmup: false,
        timeline: false,
        new_connections: false,
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value")).clone();
        match flag.as_str() {
            "--url" => o.url = Some(value()),
            "--agents" => o.agents = value().parse().expect("--agents N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            "--rate" => o.rate = value().parse().expect("--rate R"),
            "--connections" => o.connections = value().parse().expect("--connections C"),
            "--psk" => o.psk = value(),
            "--no-warmup" => o.warmup = 0,
            "--warmup-rounds" => o.warmup = value().parse().expect("--warmup-rounds R"),
            "--realistic" => o.realistic = true,
            "--churn" => o.churn = value().parse().expect("--churn P"),
            "--relayed" => o.relayed = value().parse().expect("--relayed P"),
            "--pause-after-warmup" => o.pause_after_warmup = true,
            "--timeline" => o.timeline = true,
            "--new-connections" => o.new_connections = true,
            "--reports" => o.reports = Some(value().parse().expect("--reports N")),
            "--stalled" => o.stalled = value().parse().expect("--stalled N"),
            "--stalled-body" => o.stalled_body = Some(value().parse().expect("--stalled-body B")),
            "--no-reopen" => o.reopen = false,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn envelopes(agents: usize, count: usize, psk: &str) -> (Vec<Vec<u8>>, usize) {
    let fleet = SimFleet::new("bench", agents);
    let psk = Psk::new(psk).unwrap();
    let now = kattila_agent::unix_now();
    let mut bytes = 0;
    let out: Vec<Vec<u8>> = (0..count)
        .map(|k| {
            let i = k % agents;
            let tick = (k / agents) as u64 + 1;
            let mut report = kattila_agent::report::build_report(
                &fleet.agents[i].agent_id,
                now,
                fleet.telemetry(i, now + tick as i64),
            );
            report.tick = tick;
            report.nonce = format!("{i:016x}{tick:016x}");
            let env = signed_envelope(&psk, &report);
            bytes += env.len();
            env
        })
        .collect();
    (out, bytes / count.max(1))
}

/// Whether requests ask for a new connection each (`--new-connections`).
static CLOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A complete HTTP/1.1 POST of `body` to the receiver's ingest endpoint.
fn http_request(host: &str, body: Vec<u8>) -> Vec<u8> {
    let close = if CLOSE.load(Ordering::Relaxed) { "Connection: close\r\n" } else { "" };
    let mut request = format!(
        "POST /status/updates HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// Seconds of an agent's life one report stands for in the realistic mode.
const AGENT_INTERVAL: u64 = 30;
/// Reports between two handshakes of a peer: WireGuard renews its session
/// about every two minutes.
const HANDSHAKE_EVERY_REPORTS: u64 = 4;
/// Reports between two changes of a churning agent (10 minutes).
const CHANGE_EVERY_REPORTS: u64 = 20;

/// A well-mixed 64-bit value of `x` (splitmix64): nonces, phases, shares.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One agent of the realistic mode: its last report, changed in place for
/// the next one.
struct LiveAgent {
    report: Report,
    /// Reports built so far (the next one is number `reports + 1`).
    reports: u64,
    /// This agent's own tick counter (its reports and its relay layers).
    tick: u64,
    /// Traffic per second of each interface and peer, bytes.
    rate: u64,
    /// Whether it changes something every CHANGE_EVERY_REPORTS reports.
    churns: bool,
    /// The agent whose relay layer carries this one's reports.
    relay: Option<usize>,
}

/// The realistic fleet: every report built and signed when it is sent.
struct LiveFleet {
    psk: Psk,
    host: String,
    agents: Vec<Mutex<LiveAgent>>,
    /// Keys no agent owns, for road-warrior peers.
    road_warriors: Vec<String>,
    /// Bodies built so far and their bytes, for the mean size.
    built: AtomicUsize,
    built_bytes: AtomicUsize,
}

impl LiveFleet {
    fn new(agents: usize, psk: &str, host: &str, churn: u64, relayed: u64) -> LiveFleet {
        let fleet = SimFleet::new("bench", agents);
        let now = kattila_agent::unix_now();
        let sites = fleet.sites();
        let live = (0..agents)
            .map(|i| {
                let a = &fleet.agents[i];
                let mut report =
                    kattila_agent::report::build_report(&a.agent_id, now, fleet.telemetry(i, now));
                report.site = Some(a.site_label.clone());
                // Counters of a host that has been up a while.
                let h = mix(i as u64);
                for iface in &mut report.interfaces {
                    iface.rx_bytes = h % 1_000_000_000_000;
                    iface.tx_bytes = h % 700_000_000_000;
                }
                let is_gateway = i % SITE_SIZE == 0;
                let relay = (!is_gateway && sites > 1 && mix(h) % 100 < relayed)
                    .then(|| SimFleet::gateway((a.site + 1) % sites));
                Mutex::new(LiveAgent {
                    report,
                    reports: 0,
                    tick: 0,
                    rate: 1_000 + h % 200_000,
                    churns: mix(h ^ 1) % 100 < churn,
                    relay,
                })
            })
            .collect();
        let road_warriors = SimFleet::new("road-warriors", 64)
            .agents
            .into_iter()
            .map(|a| a.wg_public_key)
            .collect();
        LiveFleet {
            psk: Psk::new(psk).unwrap(),
            host: host.to_string(),
            agents: live,
            road_warriors,
            built: AtomicUsize::new(0),
            built_bytes: AtomicUsize::new(0),
        }
    }

    /// The HTTP request of agent `i`'s next report, signed now (relayed
    /// when the agent is behind a relay).
    fn next_request(&self, i: usize) -> Vec<u8> {
        let now = kattila_agent::unix_now();
        let (envelope, relay) = {
            let mut a = self.agents[i].lock().unwrap();
            a.advance(i, now, &self.road_warriors);
            (signed_envelope(&self.psk, &a.report), a.relay)
        };
        let body = match relay {
            None => envelope,
            Some(r) => {
                // The relaying agent's own next tick.
                let (relayer, tick) = {
                    let mut relayer = self.agents[r].lock().unwrap();
                    relayer.tick += 1;
                    (relayer.report.agent_id.clone(), relayer.tick)
                };
                relay_envelope(&self.psk, &relayer, now, &nonce(r, tick), tick, &envelope)
                    .expect("an envelope we signed")
            }
        };
        self.built.fetch_add(1, Ordering::Relaxed);
        self.built_bytes.fetch_add(body.len(), Ordering::Relaxed);
        http_request(&self.host, body)
    }

    fn mean_size(&self) -> usize {
        self.built_bytes.load(Ordering::Relaxed) / self.built.load(Ordering::Relaxed).max(1)
    }
}

fn nonce(i: usize, tick: u64) -> String {
    let a = mix((i as u64) << 32 ^ tick);
    format!("{a:016x}{:016x}", mix(a))
}

impl LiveAgent {
    /// Moves the report on by one agent interval, signed at `now`.
    fn advance(&mut self, i: usize, now: i64, road_warriors: &[String]) {
        self.reports += 1;
        self.tick += 1;
        let n = self.reports;
        let r = &mut self.report;
        r.tick = self.tick;
        r.nonce = nonce(i, self.tick);
        r.timestamp = now;
        r.observed_at = now;
        if n == 1 {
            return; // the first report is the simulator's as built
        }
        let traffic = self.rate * AGENT_INTERVAL;
        r.system.uptime_secs += AGENT_INTERVAL;
        let load = 0.2 + 1.5 * (0.5 + 0.5 * ((n + i as u64) as f64 / 7.0).sin());
        r.system.load = [load, load * 0.8, load * 0.6];
        for iface in &mut r.interfaces {
            iface.rx_bytes += traffic;
            iface.tx_bytes += traffic / 2;
        }
        let peers = &mut r.wireguard[0].peers;
        for (k, p) in peers.iter_mut().enumerate() {
            p.rx_bytes += traffic / 4;
            p.tx_bytes += traffic / 5;
            let phase = mix((i * 4099 + k) as u64) % HANDSHAKE_EVERY_REPORTS;
            if (n + phase).is_multiple_of(HANDSHAKE_EVERY_REPORTS) {
                let jitter = (mix(n ^ k as u64) % 10) as i64;
                let previous = p.latest_handshake.unwrap_or(0);
                p.latest_handshake = Some((now - jitter).max(previous + 1));
            }
        }
        if self.churns && (n + i as u64).is_multiple_of(CHANGE_EVERY_REPORTS) {
            match (n + i as u64) / CHANGE_EVERY_REPORTS % 5 {
                0 => {
                    // NAT rebinding: the first peer's endpoint moves.
                    if let Some(p) = peers.first_mut() {
                        let port = 40_000 + mix(n) % 20_000;
                        let host = p.endpoint.as_deref().and_then(|e| e.rsplit_once(':'));
                        p.endpoint = host.map(|(h, _)| format!("{h}:{port}"));
                    }
                }
                1 => r.interfaces.push(Interface {
                    name: format!("veth{:x}", mix(n) % 0xffff),
                    kind: "veth".into(),
                    state: "up".into(),
                    mtu: 1500,
                    mac: Some(format!("02:42:ac:11:{:02x}:{:02x}", i % 256, n % 256)),
                    addresses: vec![format!("172.17.{}.{}/16", i % 256, n % 250 + 2)],
                    rx_bytes: 0,
                    tx_bytes: 0,
                    rx_errors: 0,
                    tx_errors: 0,
                }),
                2 => {
                    if r.interfaces.len() > 3 {
                        r.interfaces.pop();
                    }
                }
                3 => {
                    let key = &road_warriors[(mix(i as u64 ^ n) % 64) as usize];
                    peers.push(WgPeer {
                        public_key: key.clone(),
                        endpoint: Some(format!(
                            "198.51.100.{}:{}",
                            n % 250 + 1,
                            50_000 + n % 10_000
                        )),
                        allowed_ips: vec![format!("10.200.{}.{}/32", i % 256, n % 250 + 1)],
                        latest_handshake: Some(now),
                        rx_bytes: 0,
                        tx_bytes: 0,
                        persistent_keepalive: None,
                    });
                }
                _ => {
                    // Only a road-warrior peer (no keepalive) ever goes.
                    if peers.last().is_some_and(|p| p.persistent_keepalive.is_none()) {
                        peers.pop();
                    }
                }
            }
        }
    }
}

/// Where the requests come from: built before the clock starts, or built
/// and signed as they are sent.
enum Requests {
    Prebuilt(Vec<Vec<u8>>),
    Live(Box<LiveFleet>),
}

impl Requests {
    /// Request `k` of the run: agent `k % agents`'s next report.
    fn get(&self, k: usize, agents: usize) -> Option<Cow<'_, [u8]>> {
        match self {
            Requests::Prebuilt(built) => built.get(k).map(|r| Cow::Borrowed(r.as_slice())),
            Requests::Live(fleet) => Some(Cow::Owned(fleet.next_request(k % agents))),
        }
    }
}

/// One keep-alive connection; reconnects after an error or a close.
struct Connection {
    addr: String,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    fn new(addr: String) -> Self {
        Connection { addr, stream: None, buf: Vec::with_capacity(4096) }
    }

    /// Sends one request and returns the answer's status (None: the
    /// connection failed; the next call reconnects).
    async fn post(&mut self, request: &[u8]) -> Option<u16> {
        let status = self.exchange(request).await;
        if status.is_none() {
            self.stream = None;
        }
        status
    }

    async fn exchange(&mut self, request: &[u8]) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
            stream.set_nodelay(true).ok()?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut()?;
        stream.write_all(request).await.ok()?;
        // Read until the head is complete, then the body it announces.
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).ok()?;
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let close = head.to_ascii_lowercase().contains("connection: close");
        while self.buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..head_end + length);
        if close {
            self.stream = None;
        }
        Some(status)
    }
}

/// Slow clients: connections that stall mid-request, reopened when closed.
#[derive(Default)]
struct Stalled {
    open: AtomicUsize,
    closed: AtomicUsize,
}

/// What stalled connection `i` sends before it stalls.
fn stalled_start(host: &str, i: usize, body: Option<usize>) -> Vec<u8> {
    match body {
        Some(n) => {
            let mut start = format!(
                "POST /status/updates HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                n + 1
            )
            .into_bytes();
            start.resize(start.len() + n, b' ');
            start
        }
        None if i.is_multiple_of(4) => {
            format!("POST /status/updates HTTP/1.1\r\nHost: {host}\r\nContent-Le").into_bytes()
        }
        None => format!(
            "POST /status/updates HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 3000\r\n\r\n{{\"version\":1,"
        )
        .into_bytes(),
    }
}

/// One slow client: connects, sends `start`, waits until the receiver
/// answers or closes, and starts over, until `stop`.
async fn stall(
    addr: String,
    start: Arc<Vec<u8>>,
    stats: Arc<Stalled>,
    reopen: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = tokio::select! {
            sent = stream.write_all(&start) => sent.is_ok(),
            _ = stop.changed() => return,
        };
        if sent {
            stats.open.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            let closed = async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::select! {
                () = closed => {}
                _ = stop.changed() => return,
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        stats.closed.fetch_add(1, Ordering::Relaxed);
        if !reopen {
            return;
        }
    }
}

/// CPU time (user + system) this process used so far, in seconds: with
/// `--url`, the generator's share of the two cores; in process, generator
/// and receiver together.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(o));
}

async fn run(o: Options) {
    CLOSE.store(o.new_connections, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let url = match &o.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let config =
                kattila_receiver::config::Config::for_test(dir.path().join("bench.db"), &o.psk);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(kattila_receiver::server::serve(config, listener, std::future::pending()));
            url
        }
    };
    // Requests [0, base) are the warm-up: every agent's first report(s).
    let base = o.warmup * o.agents;
    let planned = base
        + if o.rate > 0.0 {
            (o.rate * o.seconds) as usize + 1
        } else {
            o.reports.unwrap_or(((o.seconds * 25_000.0) as usize).max(1000))
        };
    let generation = Instant::now();
    let addr = url.trim_start_matches("http://").to_string();
    let (requests, mean_size) = if o.realistic {
        let fleet = LiveFleet::new(o.agents, &o.psk, &addr, o.churn, o.relayed);
        (Arc::new(Requests::Live(Box::new(fleet))), 0)
    } else {
        let (envelopes, mean_size) = envelopes(o.agents, planned, &o.psk);
        let built = envelopes.into_iter().map(|body| http_request(&addr, body)).collect();
        (Arc::new(Requests::Prebuilt(built)), mean_size)
    };
    let generated = generation.elapsed();
    let stalled = Arc::new(Stalled::default());
    let (stop_stalling, stalling) = tokio::sync::watch::channel(false);
    if o.stalled > 0 {
        let mut starts = std::collections::HashMap::new();
        for i in 0..o.stalled {
            let key = if o.stalled_body.is_none() && i.is_multiple_of(4) { 0 } else { 1 };
            let start = starts
                .entry(key)
                .or_insert_with(|| Arc::new(stalled_start(&addr, i, o.stalled_body)))
                .clone();
            tokio::spawn(stall(addr.clone(), start, stalled.clone(), o.reopen, stalling.clone()));
        }
        let since = Instant::now();
        // Without reopening, those the receiver refused at once count too.
        let settled = || {
            let open = stalled.open.load(Ordering::Relaxed);
            let closed = if o.reopen { 0 } else { stalled.closed.load(Ordering::Relaxed) };
            open + closed >= o.stalled
        };
        while !settled() && since.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "stalled connections: {} of {} open ({} closed by the receiver) after {:.1?}",
            stalled.open.load(Ordering::Relaxed),
            o.stalled,
            stalled.closed.load(Ordering::Relaxed),
            since.elapsed()
        );
    }
    let warmup = Instant::now();
    let mut first_reports = tokio::task::JoinSet::new();
    for c in 0..o.connections.max(1) {
        let (addr, requests) = (addr.clone(), requests.clone());
        first_reports.spawn(async move {
            let mut conn = Connection::new(addr);
            let mut refused = 0;
            for k in (c..base).step_by(o.connections.max(1)) {
                if conn.post(&requests.get(k, o.agents).unwrap()).await != Some(200) {
                    refused += 1;
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(done) = first_reports.join_next().await {
        refused += done.unwrap();
    }
    // Scripts wait for this line before they start measuring.
    eprintln!(
        "generated {} signed reports from {} agents (mean {} bytes) in {:.1?}; warm-up: {} first reports in {:.1?}, {} refused",
        if o.realistic { 0 } else { planned },
        o.agents,
        mean_size,
        generated,
        base - refused,
        warmup.elapsed(),
        refused
    );
    if o.pause_after_warmup {
        eprintln!("paused after warm-up");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    if o.rate > 0.0 {
        // Open loop: request k is due at k/rate; latency counts from when it
        // was due, so a slow receiver cannot hide its queueing. Connection c
        // sends requests c, c+C, c+2C, ... each when due or, when it fell
        // behind, at once.
        let period = Duration::from_secs_f64(1.0 / o.rate);
        let due_count = ((o.seconds * o.rate) as usize).min(planned - base);
        let connections = o.connections.max(1);
        for c in 0..connections {
            let (addr, requests) = (addr.clone(), requests.clone());
            tasks.spawn(async move {
                let mut conn = Connection::new(addr);
                let mut results = Vec::new();
                for k in (c..due_count).step_by(connections) {
                    let due = started + period * k as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let request = requests.get(base + k, o.agents).unwrap();
                    let ok = conn.post(&request).await == Some(200);
                    results.push((ok, due.elapsed(), started.elapsed()));
                }
                results
            });
        }
    } else {
        let next = Arc::new(AtomicUsize::new(base));
        for _ in 0..o.connections {
            let (addr, requests, next) = (addr.clone(), requests.clone(), next.clone());
            tasks.spawn(async move {
                let mut conn = Connection::new(addr);
                let mut results = Vec::new();
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= planned {
                        break;
                    }
                    let sent = Instant::now();
                    let Some(request) = requests.get(k, o.agents) else { break };
                    let ok = conn.post(&request).await == Some(200);
                    results.push((ok, sent.elapsed(), started.elapsed()));
                }
                results
            });
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0usize;
    // Per second of the measured phase: latencies of the 200s answered in it.
    let mut seconds: Vec<Vec<Duration>> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        for (ok, latency, at) in r.unwrap() {
            if ok {
                latencies.push(latency);
                let second = at.as_secs() as usize;
                if seconds.len() <= second {
                    seconds.resize_with(second + 1, Vec::new);
                }
                seconds[second].push(latency);
            } else {
                failed += 1;
            }
        }
    }
    if o.timeline {
        for (second, mut l) in seconds.into_iter().enumerate() {
            l.sort();
            println!(
                "second={} committed={} p50={:.2}ms p99={:.2}ms",
                second + 1,
                l.len(),
                percentile(&l, 0.50).as_secs_f64() * 1e3,
                percentile(&l, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let process_cpu = own_cpu_seconds() - cpu_before;
    let stalled_open = stalled.open.load(Ordering::Relaxed);
    let _ = stop_stalling.send(true);
    latencies.sort();
    let mean_size = match &*requests {
        Requests::Live(fleet) => fleet.mean_size(),
        Requests::Prebuilt(_) => mean_size,
    };
    println!(
        "mode={}{} agents={} committed={} failed={} elapsed={:.2}s rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms mean_size={}B process_cpu={:.1}s",
        if o.rate > 0.0 { format!("open@{}/s", o.rate) } else { format!("closed/{}", o.connections) },
        if o.realistic { "/realistic" } else { "" },
        o.agents,
        latencies.len(),
        failed,
        elapsed,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        mean_size,
        process_cpu,
    );
    if o.stalled > 0 {
        println!(
            "stalled={} stalled_body={} stalled_open_at_end={} stalled_closed_by_receiver={}",
            o.stalled,
            o.stalled_body.map_or("none".to_string(), |b| b.to_string()),
            stalled_open,
            stalled.closed.load(Ordering::Relaxed),
        );
    }
}
