//! Notification latency benchmark: from an alarm raised (the commit of the
//! report that raised it) to its webhook received by a local HTTP sink.
//!
//!   cargo bench -p kattila --bench notify -- [options]
//!
//! Options:
//!   --mode conflict    (default) each trial is a fresh agent whose hostname
//!                      flips (A, B, A, …) until the receiver raises
//!                      `identity_conflict`, a kind that is not grouped into
//!                      incidents and has a 0 s raise hold by default: the
//!                      figure is the decision + outbox + delivery path
//!                      alone. The raise time is when the POST of the report
//!                      that raised it was sent (the alarm is committed
//!                      before its 200, so the report's own ingest counts
//!                      in); the sink stamps each arrival.
//!   --mode silent      each trial is a fresh agent that reports once and
//!                      falls silent; `agent_silent` is grouped, so with the
//!                      defaults it waits `group_wait` (30 s). The raise time
//!                      is the alarm's `first_seen` in the database (whole
//!                      seconds).
//!   --trials N         trials (default 40 conflict, 6 silent)
//!   --gap-ms MS        pause between two conflict trials (default 250), so
//!                      raises fall at every phase of the delivery worker
//!   --group-wait D     `[noise] group_wait` (default: not set, i.e. 30s)
//!
//! The real receiver binary runs as its own process on a fresh database
//! with one webhook channel to the sink and the default route.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kattila_agent::simulate::{SimFleet, SITE_SIZE};
use kattila_proto::{signed_envelope, Psk};

const PSK: &str = "bench-key";

/// Arrivals by idempotency key: (Unix µs, body).
type Arrivals = Arc<Mutex<BTreeMap<String, (i64, serde_json::Value)>>>;

fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

async fn receive(State(got): State<Arrivals>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = unix_us();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("");
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    got.lock().unwrap().insert(key.to_string(), (at, body));
    StatusCode::OK
}

fn start_sink() -> (Arrivals, u16) {
    let got = Arrivals::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app =
                axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    (got, port)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let mut mode = "conflict".to_string();
    let mut trials: Option<usize> = None;
    let mut gap_ms = 250u64;
    let mut group_wait: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--mode" => mode = value(),
            "--trials" => trials = Some(value().parse().expect("--trials N")),
            "--gap-ms" => gap_ms = value().parse().expect("--gap-ms MS"),
            "--group-wait" => group_wait = Some(value()),
            "--bench" => {}
            "--help" | "-h" => {
                println!("see the comment at the top of benches/notify.rs");
                return;
            }
            other => panic!("unknown option {other}"),
        }
    }
    let silent = match mode.as_str() {
        "conflict" => false,
        "silent" => true,
        other => panic!("--mode conflict|silent, not {other}"),
    };
    let trials = trials.unwrap_or(if silent { 6 } else { 40 });

    let dir = tempfile::tempdir().unwrap();
    let (got, sink_port) = start_sink();
    let noise = group_wait.map(|g| format!("[noise]\ngroup_wait = \"{g}\"\n")).unwrap_or_default();
    let config = dir.path().join("notify.toml");
    std::fs::write(
        &config,
        format!(
            "{noise}\n[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{sink_port}/hook\"\n\n[default_route]\nchannels = [\"hook\"]\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db = dir.path().join("bench.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kattila-receiver"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .arg("--notify-config")
        .arg(&config)
        .env("KATTILA_PSK", PSK)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if silent {
        // Silent after three 1 s intervals, swept twice a second.
        cmd.args(["--interval-secs", "1", "--sweep-secs", "0.5"]);
    }
    let _receiver = Killed(cmd.spawn().expect("kattila-receiver starts"));
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let ready = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{url}/status/healthcheck"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < ready, "the receiver did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reader = || {
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    };

    // One agent per site (the first of each): two silent agents of one
    // site would be an incident, told as one message instead of theirs.
    let fleet = SimFleet::new("notify-bench", trials.max(1) * SITE_SIZE);
    let psk = Psk::new(PSK).unwrap();
    let post = |i: usize, tick: u64, hostname: &str| {
        let now = kattila_agent::unix_now();
        let mut report = kattila_agent::report::build_report(
            &fleet.agents[i].agent_id,
            now,
            fleet.telemetry(i, now),
        );
        report.tick = tick;
        report.nonce = format!("{i:016x}{tick:016x}");
        report.hostname = hostname.to_string();
        let r = client
            .post(format!("{url}/status/updates"))
            .header("content-type", "application/json")
            .body(signed_envelope(&psk, &report))
            .send()
            .expect("the receiver answers");
        assert!(r.status().is_success(), "report refused: {}", r.status());
    };
    let kind = if silent { "agent_silent" } else { "identity_conflict" };
    let mut latencies = Vec::new();
    let mut overall = Vec::new();
    for i in (0..trials).map(|t| t * SITE_SIZE) {
        let agent = fleet.agents[i].agent_id.clone();
        let active = |conn: &rusqlite::Connection| -> Option<(i64, i64)> {
            conn.query_row(
                "SELECT id, first_seen FROM alarms WHERE agent_id = ?1 AND kind = ?2 AND state = 'active'",
                rusqlite::params![agent, kind],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
        };
        // (alarm id, raise time in Unix µs)
        let raised: (i64, i64) = if silent {
            post(i, 1, &format!("silent-{i}"));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some((id, first_seen)) = active(&reader()) {
                    break (id, first_seen * 1_000_000);
                }
                assert!(Instant::now() < deadline, "no agent_silent alarm");
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            let mut tick = 0;
            loop {
                tick += 1;
                assert!(tick < 20, "no identity_conflict raised after 20 reports");
                let host = if tick % 2 == 1 { "host-a" } else { "host-b" };
                // The report is sent at `sent` and the alarm is committed
                // before its 200: `sent` is the raise time at the latest
                // minus the report's own ingest (a few ms, counted in).
                let sent = unix_us();
                post(i, tick, &format!("{host}-{i}"));
                if let Some((id, _)) = active(&reader()) {
                    break (id, sent);
                }
            }
        };
        let key = format!("alarm-{}-raised", raised.0);
        let deadline = Instant::now() + Duration::from_secs(300);
        let arrived = loop {
            if let Some((at, _)) = got.lock().unwrap().get(&key) {
                break *at;
            }
            assert!(Instant::now() < deadline, "{key} never arrived");
            std::thread::sleep(Duration::from_millis(2));
        };
        let latency = (arrived - raised.1) as f64 / 1e6;
        latencies.push(latency);
        overall.push(latency);
        if silent {
            println!("trial {}: {kind} raised, webhook after {latency:.1} s", i / SITE_SIZE);
        }
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
    latencies.sort_by(f64::total_cmp);
    let unit = if silent { "s" } else { "ms" };
    let scale = if silent { 1.0 } else { 1000.0 };
    println!(
        "mode={mode} kind={kind} trials={} p50={:.1}{unit} p99={:.1}{unit} min={:.1}{unit} max={:.1}{unit}",
        latencies.len(),
        percentile(&latencies, 50.0) * scale,
        percentile(&latencies, 99.0) * scale,
        latencies.first().unwrap_or(&f64::NAN) * scale,
        latencies.last().unwrap_or(&f64::NAN) * scale,
    );
}
