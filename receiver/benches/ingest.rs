//! Ingest benchmark: how many realistic signed reports per second the
//! receiver verifies and commits, and at what latency.
//!
//!   cargo bench -p kattila-receiver --bench ingest -- [options]
//!
//! Options:
//!   --url URL          target a running receiver (default: start one in
//!                      this process on a fresh database in a temp dir)
//!   --agents N         simulated agents (default 1000)
//!   --seconds S        measured duration (default 10)
//!   --rate R           open loop at R reports/s; 0 = closed loop, as fast
//!                      as the receiver answers (default 0)
//!   --connections C    concurrent requests in closed loop (default 64)
//!   --psk KEY          fleet key (default "bench-key"; must match --url's)
//!
//! Every report is generated and signed before the clock starts (the
//! simulator's realistic reports, ~3 KB on average), so the measured phase
//! is HTTP + verification + commit. A 200 means committed with
//! synchronous=FULL; only 200s count.

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
}

fn options() -> Options {
    let mut o = Options {
        url: None,
        agents: 1000,
        seconds: 10.0,
        rate: 0.0,
        connections: 64,
        psk: "bench-key".into(),
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
    let planned = if o.rate > 0.0 {
        (o.rate * o.seconds) as usize + 1
    } else {
        ((o.seconds * 25_000.0) as usize).max(1000)
    };
    let generation = Instant::now();
    let (envelopes, mean_size) = envelopes(o.agents, planned, &o.psk);
    eprintln!(
        "generated {} signed reports from {} agents (mean {} bytes) in {:.1?}",
        envelopes.len(),
        o.agents,
        mean_size,
        generation.elapsed()
    );
    let envelopes = Arc::new(envelopes);
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    let target = format!("{url}/status/updates");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    if o.rate > 0.0 {
        // Open loop: request k is due at k/rate; latency counts from when it
        // was due, so a slow receiver cannot hide its queueing.
        let period = Duration::from_secs_f64(1.0 / o.rate);
        for k in 0..envelopes.len() {
            let due = started + period * k as u32;
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let (client, target, envelopes) = (client.clone(), target.clone(), envelopes.clone());
            tasks.spawn(async move {
                let ok = matches!(client.post(&target).body(envelopes[k].clone()).send().await, Ok(r) if r.status() == 200);
                vec![(ok, due.elapsed())]
            });
        }
    } else {
        for _ in 0..o.connections {
            let (client, target, envelopes, next) =
                (client.clone(), target.clone(), envelopes.clone(), next.clone());
            tasks.spawn(async move {
                let mut results = Vec::new();
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = envelopes.get(k) else { break };
                    let sent = Instant::now();
                    let ok = matches!(client.post(&target).body(body.clone()).send().await, Ok(r) if r.status() == 200);
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
    latencies.sort();
    println!(
        "mode={} agents={} committed={} failed={} elapsed={:.2}s rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms mean_size={}B",
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
    );
}
