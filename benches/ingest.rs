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
//!
//! Every report is generated and signed before the clock starts (the
//! simulator's realistic reports, ~3 KB on average), so the measured phase
//! is HTTP + verification + commit. A 200 means committed with
//! synchronous=FULL; only 200s count.
//!
//! The generator shares the two cores with the receiver, so it must be
//! cheap: like `wrk`, it writes pre-built HTTP/1.1 requests on keep-alive
//! connections and reads only the status line and Content-Length of each
//! answer (about 15 µs of CPU per request; its CPU time is printed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kattila_agent::simulate::SimFleet;
use kattila_proto::{signed_envelope, Psk};

struct Options {
    url: Option<String>,
    agents: usize,
    seconds: f64,
    rate: f64,
    connections: usize,
    psk: String,
    warmup: bool,
    reports: Option<usize>,
    stalled: usize,
    stalled_body: Option<usize>,
    reopen: bool,
}

fn options() -> Options {
    let mut o = Options {
        url: None,
        agents: 1000,
        seconds: 10.0,
        rate: 0.0,
        connections: 64,
        psk: "bench-key".into(),
        warmup: true,
        reports: None,
        stalled: 0,
        stalled_body: None,
        reopen: true,
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
            "--no-warmup" => o.warmup = false,
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

/// A complete HTTP/1.1 POST of `body` to the receiver's ingest endpoint.
fn http_request(host: &str, body: Vec<u8>) -> Vec<u8> {
    let mut request = format!(
        "POST /status/updates HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
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
    // Requests [0, base) are the warm-up: every agent's first report.
    let base = if o.warmup { o.agents } else { 0 };
    let planned = base
        + if o.rate > 0.0 {
            (o.rate * o.seconds) as usize + 1
        } else {
            o.reports.unwrap_or(((o.seconds * 25_000.0) as usize).max(1000))
        };
    let generation = Instant::now();
    let (envelopes, mean_size) = envelopes(o.agents, planned, &o.psk);
    let addr = url.trim_start_matches("http://").to_string();
    let requests: Arc<Vec<Vec<u8>>> =
        Arc::new(envelopes.into_iter().map(|body| http_request(&addr, body)).collect());
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
                if conn.post(&requests[k]).await != Some(200) {
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
        planned,
        o.agents,
        mean_size,
        generated,
        base - refused,
        warmup.elapsed(),
        refused
    );
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
        let due_count = ((o.seconds * o.rate) as usize).min(requests.len() - base);
        let connections = o.connections.max(1);
        for c in 0..connections {
            let (addr, requests) = (addr.clone(), requests.clone());
            tasks.spawn(async move {
                let mut conn = Connection::new(addr);
                let mut results = Vec::new();
                for k in (c..due_count).step_by(connections) {
                    let due = started + period * k as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let ok = conn.post(&requests[base + k]).await == Some(200);
                    results.push((ok, due.elapsed()));
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
                    let Some(request) = requests.get(k) else { break };
                    let sent = Instant::now();
                    let ok = conn.post(request).await == Some(200);
                    results.push((ok, sent.elapsed()));
                }
                results
            });
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        for (ok, latency) in r.unwrap() {
            if ok {
                latencies.push(latency);
            } else {
                failed += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let process_cpu = own_cpu_seconds() - cpu_before;
    let stalled_open = stalled.open.load(Ordering::Relaxed);
    let _ = stop_stalling.send(true);
    latencies.sort();
    println!(
        "mode={} agents={} committed={} failed={} elapsed={:.2}s rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms mean_size={}B process_cpu={:.1}s",
        if o.rate > 0.0 { format!("open@{}/s", o.rate) } else { format!("closed/{}", o.connections) },
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
