//! Notifications end to end, with real processes: the receiver binary with
//! a notification configuration, `kattila-agent simulate --faults demo`
//! (a site silent, a gateway down, stale links, a flapping interface, a
//! moved endpoint, each recovering), an HTTP sink in this test speaking the
//! webhook, Slack and ntfy protocols, and a real SMTP server (Debian's
//! python3-aiosmtpd). Mid-storm the sink goes down and the receiver is
//! killed with SIGKILL; both come back. Then messages are counted by
//! idempotency key: every decided message delivered, every incident told
//! once, every recovery told, the flapping interface never.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use rusqlite::Connection;

const PSK: &str = "notify-test-fleet-key";
const ADMIN: &str = "notify-test-admin-token";
const HOOK_SECRET: &str = "notify-test-hook-secret";

/// One message the sink received.
#[derive(Debug, Clone)]
struct Got {
    channel: String,
    key: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// The HTTP sink: `/hook` (webhook), `/slack`, `/ntfy/<topic>`; answers 503
/// while `down`.
#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Got>>>,
    down: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> (Sink, u16) {
        let sink = Sink::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = sink.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/{*path}", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        (sink, port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(sink): State<Sink>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if sink.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let channel = path.split('/').next().unwrap_or("").to_string();
    let key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    sink.got.lock().unwrap().push(Got { channel, key, headers, body, at: Instant::now() });
    StatusCode::OK
}

/// The SMTP server: aiosmtpd with AUTH, each message appended to a file
/// as one JSON line.
const SMTP_SINK: &str = r#"
import json, signal, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out = int(sys.argv[1]), sys.argv[2]
tls = None
if len(sys.argv) > 4:                      # cert, key: STARTTLS required before AUTH
    import ssl
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sys.argv[3], sys.argv[4])

class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "auth": bool(session.authenticated),
                                "tls": session.ssl is not None,
                                "data": envelope.content.decode("utf8", "replace")}) + "\n")
        return "250 OK"

def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"kattila" and data.password == b"mail-secret"
    return AuthResult(success=ok)

c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=auth,
               auth_require_tls=tls is not None, auth_required=True,
               tls_context=tls, require_starttls=tls is not None)
c.start()
print("smtp ready", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
c.stop()
"#;

/// A Python that has aiosmtpd (Debian's python3-aiosmtpd is for the
/// system's python3, which may not be the first on PATH).
fn python_with_aiosmtpd() -> Option<String> {
    ["python3", "/usr/bin/python3"].into_iter().map(String::from).find(|p| {
        Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_smtp(python: &str, dir: &Path) -> (Killed, u16, PathBuf) {
    start_smtp_with(python, dir, &[])
}

/// `tls`: a certificate and key file; STARTTLS is then required.
fn start_smtp_with(python: &str, dir: &Path, tls: &[&Path]) -> (Killed, u16, PathBuf) {
    let script = dir.join("smtp_sink.py");
    std::fs::write(&script, SMTP_SINK).unwrap();
    let port = util::free_port();
    let out = dir.join("mail.jsonl");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(port.to_string())
        .arg(&out)
        .args(tls)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("smtp ready"), "the SMTP sink did not start: {line:?}");
    (Killed(child), port, out)
}

fn config(sink: u16, smtp: u16) -> String {
    format!(
        r#"
public_url = "https://mesh.example.org/dash"

# The link kinds (interface_down, peer_stale, relay_only, links_stale) keep
# their default holds: the flapping interface must stay untold with them.
[noise]
group_wait = "4s"
resolve_hold = "5s"
min_gap = "3s"

[delivery]
timeout = "2s"
retry_base = "200ms"
retry_max = "1s"
max_tries = 1000

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:{sink}/hook"
secret_env = "KATTILA_TEST_HOOK_SECRET"

[channels.chat]
type = "slack"
url = "http://127.0.0.1:{sink}/slack"

[channels.phone]
type = "ntfy"
url = "http://127.0.0.1:{sink}/ntfy"
topic = "mesh"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
username = "kattila"
secret_env = "KATTILA_TEST_MAIL_SECRET"
from = "Kattila <kattila@example.org>"
to = ["ops@example.org"]

[[routes]]
severity = ["info"]
channels = ["hook"]

[default_route]
channels = ["hook", "chat", "phone", "mail"]
"#
    )
}

fn start_receiver(dir: &Path, port: u16, config: &Path) -> Killed {
    let mut child = Killed(
        Command::new(util::RECEIVER)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.join("kattila.db"))
            .arg("--notify-config")
            .arg(config)
            .args(["--interval-secs", "1", "--sweep-secs", "0.5"])
            .env("KATTILA_PSK", PSK)
            .env("KATTILA_ADMIN_TOKEN", ADMIN)
            .env("KATTILA_TEST_HOOK_SECRET", HOOK_SECRET)
            .env("KATTILA_TEST_MAIL_SECRET", "mail-secret")
            .env("RUST_LOG", "info")
            .spawn()
            .expect("kattila-receiver starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        let url = format!("http://127.0.0.1:{port}/status/healthcheck");
        if client.get(url).send().is_ok_and(|r| r.status().is_success()) {
            return child;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the receiver exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the receiver did not become ready");
}

fn outbox(db: &Path) -> Vec<(String, String, String, String, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT event_key, channel, subject, event, state FROM notify_outbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn scalar(db: &Path, sql: &str) -> i64 {
    Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Whether `text` holds an IP address or socket address.
fn has_address(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '[' | ']')))
        .map(|t| t.trim_end_matches(['.', ':']))
        .find(|t| {
            t.parse::<std::net::IpAddr>().is_ok()
                || t.parse::<SocketAddr>().is_ok()
                || t.rsplit_once(':')
                    .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().is_ok())
        })
        .map(String::from)
}

#[test]
fn a_fleet_storm_is_told_once_per_incident_and_recovery_with_nothing_lost() {
    let Some(python) = python_with_aiosmtpd() else {
        kattila_testsupport::skip(
            "a_fleet_storm_is_told_once_per_incident_and_recovery_with_nothing_lost",
            "python3-aiosmtpd is not installed",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_port) = Sink::start();
    let (_smtp, smtp_port, mail_file) = start_smtp(&python, dir.path());
    let config_file = dir.path().join("notify.toml");
    std::fs::write(&config_file, config(sink_port, smtp_port)).unwrap();
    let port = util::free_port();
    let mut receiver = start_receiver(dir.path(), port, &config_file);
    let db = dir.path().join("kattila.db");

    // 20 agents, one report a second each: the demo cycle's faults start
    // in its first rounds and all recover by round 48.
    let state = dir.path().join("sim");
    std::fs::create_dir_all(&state).unwrap();
    let mut sim = util::agent_command(&state);
    sim.args(["simulate", "--agents", "20", "--interval", "1", "--faults", "demo"])
        .args(["--rounds", "200", "--url", &format!("http://127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(&state)
        .env("KATTILA_PSK", PSK)
        .env("RUST_LOG", "warn");
    let sim = Killed(sim.spawn().expect("kattila-agent simulate starts"));
    let started = Instant::now();
    let at = |secs: u64| {
        let until = started + Duration::from_secs(secs);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    };

    // The channels go down while the storm builds…
    at(6);
    sink.down.store(true, Ordering::SeqCst);
    // … the receiver dies with messages waiting…
    at(11);
    let queued_at_kill = scalar(&db, "SELECT count(*) FROM notify_outbox WHERE state = 'queued'");
    receiver.0.kill().unwrap();
    receiver.0.wait().unwrap();
    at(13);
    receiver = start_receiver(dir.path(), port, &config_file);
    // … and the channels come back half a minute later.
    at(25);
    sink.down.store(false, Ordering::SeqCst);
    eprintln!("queued when killed: {queued_at_kill}");
    assert!(queued_at_kill > 0, "the kill found an outbox with messages waiting");

    // The first cycle's faults have all recovered by round 48 (the next
    // cycle starts then); its resolves are told resolve_hold later. Count
    // while the fleet still reports: a fleet that stops is a storm of its own.
    at(62);
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(&db, "SELECT count(*) FROM notify_outbox WHERE state = 'queued'") > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Every recovery told: no subject told raised whose alarm or incident
    // resolved longer than the resolve hold (and a sweep) ago.
    let untold = scalar(
        &db,
        "SELECT count(*) FROM notify_subjects s WHERE s.state = 'raised'
           AND s.subject NOT LIKE 'alarm:interface_new:%' AND s.subject NOT LIKE 'alarm:endpoint_changed:%'
           AND ((s.subject LIKE 'incident:%' AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = s.row_id
                   AND i.state = 'resolved' AND i.resolved_at < unixepoch() - 7))
             OR (s.subject LIKE 'alarm:%' AND EXISTS (SELECT 1 FROM alarms a WHERE a.id = s.row_id
                   AND a.state = 'resolved' AND a.resolved_at < unixepoch() - 7)))",
    );
    assert_eq!(untold, 0, "recoveries not told");
    drop(sim);

    let rows = outbox(&db);
    let got = sink.got();
    // Nothing lost: every decided message was sent, none dead.
    let not_sent: Vec<_> = rows.iter().filter(|r| r.4 != "sent").collect();
    assert!(not_sent.is_empty(), "not sent: {not_sent:?}");
    // Each HTTP channel received exactly the keys decided for it (a
    // repeat of a key is allowed by at-least-once; count them).
    for (channel, path) in [("hook", "hook"), ("chat", "slack"), ("phone", "ntfy")] {
        let decided: BTreeSet<&str> =
            rows.iter().filter(|r| r.1 == channel).map(|r| r.0.as_str()).collect();
        let received: Vec<&str> =
            got.iter().filter(|g| g.channel == path).map(|g| g.key.as_str()).collect();
        let distinct: BTreeSet<&str> = received.iter().copied().collect();
        assert_eq!(distinct, decided, "channel {channel}: received keys differ from decided");
        eprintln!(
            "channel {channel}: {} decided, {} received ({} again after the kill)",
            decided.len(),
            received.len(),
            received.len() - distinct.len()
        );
    }
    // The mail server got every mail message, authenticated.
    let mails: Vec<serde_json::Value> = std::fs::read_to_string(&mail_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mail_keys: BTreeSet<String> = mails
        .iter()
        .filter_map(|m| {
            let data = m["data"].as_str()?;
            let id = data.lines().find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
            Some(id.split('<').nth(1)?.split('@').next()?.to_string())
        })
        .collect();
    let mail_decided: BTreeSet<String> =
        rows.iter().filter(|r| r.1 == "mail").map(|r| r.0.clone()).collect();
    assert_eq!(mail_keys, mail_decided, "the SMTP server got every mail message");
    assert!(mails.iter().all(|m| m["auth"] == true), "every mail was sent authenticated");

    // Every webhook body is signed over timestamp.body with the secret.
    for g in got.iter().filter(|g| g.channel == "hook") {
        let ts = g.headers["kattila-timestamp"].to_str().unwrap();
        let sig = g.headers["kattila-signature"].to_str().unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&g.body);
        assert_eq!(sig, format!("v1={}", hex::encode(mac.finalize().into_bytes())));
        let body: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body["schema"], "kattila.notification.v1");
        assert_eq!(body["idempotency_key"], g.key);
        assert!(body["url"].as_str().unwrap().starts_with("https://mesh.example.org/dash/"));
    }
    // No message carries an address: no channel here is private.
    for g in &got {
        let text = String::from_utf8_lossy(&g.body);
        assert_eq!(has_address(&text), None, "an address in a {} message: {text}", g.channel);
    }

    // Per subject, told once per story: a raise, then (events aside) its
    // resolve before any next raise; no repeats are configured.
    let mut by_subject: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.1 == "hook") {
        by_subject.entry(r.2.as_str()).or_default().push(r.3.as_str());
    }
    for (subject, events) in &by_subject {
        let event_kind =
            subject.contains(":interface_new:") || subject.contains(":endpoint_changed:");
        let mut open = false;
        for e in events {
            match *e {
                "raised" => {
                    assert!(!open || event_kind, "{subject}: raised twice: {events:?}");
                    open = true;
                }
                "resolved" => {
                    assert!(
                        open && !event_kind,
                        "{subject}: a resolve without a raise: {events:?}"
                    );
                    open = false;
                }
                other => panic!("{subject}: unexpected {other}"),
            }
        }
    }
    let stories = rows.iter().filter(|r| r.1 == "hook" && r.3 == "raised").count();
    eprintln!("{stories} raises over {} subjects", by_subject.len());
    eprintln!("subjects told: {:#?}", by_subject.keys().collect::<Vec<_>>());
    // The incidents were told, each once, as incidents.
    let incidents: Vec<&&str> = by_subject.keys().filter(|s| s.starts_with("incident:")).collect();
    assert!(
        incidents.iter().any(|s| s.starts_with("incident:site_silent:")),
        "the silent site was told as one incident: {incidents:?}"
    );
    // The silent site's agents were not told one by one.
    let conn = Connection::open(&db).unwrap();
    let members: Vec<String> = conn
        .prepare(
            "SELECT agents FROM incidents WHERE kind = 'site_silent' AND notified_at IS NOT NULL",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .flat_map(|a| serde_json::from_str::<Vec<String>>(&a.unwrap()).unwrap())
        .collect();
    assert!(!members.is_empty());
    for m in &members {
        let alone = format!("alarm:agent_silent:{m}:");
        assert!(!by_subject.contains_key(alone.as_str()), "{m} was told alone, not as its site");
    }
    // The flapping interface raised alarms and was never told.
    let flapped = scalar(
        &db,
        "SELECT count(*) FROM alarms WHERE kind = 'interface_down' AND subject = 'eth0'",
    );
    assert!(flapped >= 2, "the flapping interface raised alarms ({flapped})");
    assert!(
        !by_subject.keys().any(|s| s.starts_with("alarm:interface_down:")),
        "a flapping interface was told"
    );
    // And /metrics counts it.
    let metrics =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")).unwrap().text().unwrap();
    assert!(metrics.contains("kattila_notifications_outbox{channel=\"hook\",state=\"sent\"}"));
    assert!(metrics.contains("kattila_notification_delivery_seconds_count"));
    drop(receiver);
}

#[test]
fn a_bad_configuration_is_refused_with_its_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n\n[[routes]]\nchannels = [\"nope\"]\n",
    )
    .unwrap();
    let (code, out, err) =
        util::run(util::RECEIVER, &["notify", "check", bad.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("line 6") && err.contains("\"nope\""), "{err}");
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[noise]\nmin_gap = \"soon\"\n").unwrap();
    let (code, _, err) =
        util::run(util::RECEIVER, &["notify", "check", syntax.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("line 2") && err.contains("soon"), "{err}");
    // A secret that is missing is named, its value never printed.
    let secret = dir.path().join("secret.toml");
    std::fs::write(
        &secret,
        "[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"KATTILA_TEST_NO_SUCH\"\n",
    )
    .unwrap();
    let (code, _, err) =
        util::run(util::RECEIVER, &["notify", "check", secret.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("KATTILA_TEST_NO_SUCH is not set"), "{err}");
    let (code, out, _) = util::run(
        util::RECEIVER,
        &["notify", "check", secret.to_str().unwrap()],
        &[("KATTILA_TEST_NO_SUCH", "very-secret-value")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("ok: 1 channel(s)") && !out.contains("very-secret-value"), "{out}");

    // The receiver does not start on a bad file, and creates no database.
    let db = dir.path().join("kattila.db");
    let (code, _, err) = util::run(
        util::RECEIVER,
        &[
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--notify-config",
            bad.to_str().unwrap(),
        ],
        &[("KATTILA_PSK", PSK)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("line 6"), "{err}");
    assert!(!db.exists(), "a refused start wrote nothing");

    // A bad reload keeps the configuration in use.
    let good = dir.path().join("good.toml");
    let (sink, sink_port) = Sink::start();
    let good_text = format!(
        "[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{sink_port}/hook\"\n[default_route]\nchannels = [\"hook\"]\n"
    );
    std::fs::write(&good, &good_text).unwrap();
    let port = util::free_port();
    let receiver = start_receiver(dir.path(), port, &good);
    std::fs::write(&good, "this is not toml = = =").unwrap();
    let pid = receiver.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let windows: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/status/healthcheck"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(windows.is_object(), "still running after a bad reload");
    // `notify test` sends through the configuration's channel.
    std::fs::write(&good, &good_text).unwrap();
    let (code, out, err) = util::run(
        util::RECEIVER,
        &["--notify-config", good.to_str().unwrap(), "notify", "test", "hook"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let got = sink.got();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"], "test");
    let (code, _, err) = util::run(
        util::RECEIVER,
        &["--notify-config", good.to_str().unwrap(), "notify", "test", "nosuch"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no channel \"nosuch\""), "{err}");
}

// ---------------------------------------------------------------------
// One behaviour at a time: a small fleet (one site of three simulated
// agents) that reports for a few rounds and then stops, so its site goes
// silent — one incident, told once — with one webhook channel.

/// The configuration of the small tests: short holds, one webhook
/// channel with `channel` settings, a default route with `route` settings.
fn small_config(sink: u16, channel: &str, route: &str) -> String {
    format!(
        r#"
[noise]
group_wait = "1s"
resolve_hold = "1s"
min_gap = "0s"

[delivery]
timeout = "2s"
retry_base = "500ms"
retry_max = "5s"
max_tries = 1000

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:{sink}/hook"
{channel}

[default_route]
channels = ["hook"]
{route}
"#
    )
}

struct Rig {
    dir: tempfile::TempDir,
    sink: Sink,
    port: u16,
    db: PathBuf,
    _receiver: Killed,
}

impl Rig {
    fn start(channel: &str, route: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (sink, sink_port) = Sink::start();
        let config = dir.path().join("notify.toml");
        std::fs::write(&config, small_config(sink_port, channel, route)).unwrap();
        let port = util::free_port();
        let receiver = start_receiver(dir.path(), port, &config);
        let db = dir.path().join("kattila.db");
        Rig { dir, sink, port, db, _receiver: receiver }
    }

    /// `agents` simulated agents report `rounds` times a second apart,
    /// then stop (and are silent three seconds later).
    fn fleet(&self, agents: usize, rounds: usize) {
        let state = self.dir.path().join("sim");
        std::fs::create_dir_all(&state).unwrap();
        let status = util::agent_command(&state)
            .args(["simulate", "--agents", &agents.to_string(), "--interval", "1"])
            .args(["--rounds", &rounds.to_string()])
            .args(["--url", &format!("http://127.0.0.1:{}", self.port)])
            .arg("--state-dir")
            .arg(&state)
            .env("KATTILA_PSK", PSK)
            .env("RUST_LOG", "warn")
            .status()
            .expect("kattila-agent simulate runs");
        assert!(status.success());
    }

    fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::blocking::Client::new();
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            "DELETE" => client.delete(url),
            other => panic!("{other}"),
        }
        .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    fn scalar(&self, sql: &str) -> i64 {
        scalar(&self.db, sql)
    }

    /// The events received, as (idempotency key, event, subject key).
    fn events(&self) -> Vec<(String, String, String)> {
        self.sink
            .got()
            .iter()
            .map(|g| {
                let b: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
                let event = b["event"].as_str().unwrap().to_string();
                let subject = b["subject"]["key"].as_str().unwrap_or("").to_string();
                (g.key.clone(), event, subject)
            })
            .collect()
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Unix seconds as RFC 3339 in UTC.
fn rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Each key received once, and at most one raise per subject.
fn assert_told_once(events: &[(String, String, String)]) {
    let keys: BTreeSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(keys.len(), events.len(), "a key received twice: {events:?}");
    let mut raised = BTreeSet::new();
    for e in events.iter().filter(|e| e.1 == "raised") {
        assert!(raised.insert(e.2.as_str()), "{} raised twice: {events:?}", e.2);
    }
}

#[test]
fn a_maintenance_window_records_but_sends_nothing_and_tells_what_is_left_once_at_its_end() {
    let rig = Rig::start("", "");
    let start = unix_now();
    let end = start + 14;
    let (code, body) = rig.admin(
        "POST",
        "/status/admin/windows",
        Some(serde_json::json!({"name": "upgrade", "start": rfc3339(start), "end": rfc3339(end)})),
    );
    assert_eq!(code, 200, "{body}");
    let (_, windows) = rig.admin("GET", "/status/admin/windows", None);
    assert_eq!(windows["windows"][0]["open"], true, "{windows}");

    rig.fleet(3, 3);
    // The site goes silent inside the window: recorded, marked, not sent.
    wait_for("alarms marked in maintenance", Duration::from_secs(10), || {
        rig.scalar(
            "SELECT count(*) FROM alarms WHERE state = 'active' AND muted = 'maintenance: upgrade'",
        ) >= 3
    });
    wait_for("the incident marked", Duration::from_secs(5), || {
        rig.scalar("SELECT count(*) FROM incidents WHERE state = 'active' AND muted = 'maintenance: upgrade'")
            == 1
    });
    while unix_now() < end - 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rig.sink.got().is_empty(), "sent during the window: {:?}", rig.events());
    assert_eq!(rig.scalar("SELECT count(*) FROM notify_outbox"), 0);

    // At its end the silent site is told once, as its incident.
    wait_for("the message after the window", Duration::from_secs(10), || {
        !rig.sink.got().is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let events = rig.events();
    assert_told_once(&events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].2.starts_with("incident:site_silent:"), "{events:?}");
    assert_eq!(
        rig.scalar("SELECT count(*) FROM alarms WHERE state = 'active' AND muted IS NOT NULL"),
        0,
        "the marks are gone with the window"
    );
}

#[test]
fn a_silence_holds_messages_back_until_it_expires() {
    let rig = Rig::start("", "");
    let (code, body) = rig.admin(
        "POST",
        "/status/admin/silences",
        Some(serde_json::json!({"matchers": ["kind=~.+"], "duration_secs": 12, "comment": "test"})),
    );
    assert_eq!(code, 200, "{body}");
    let expires = body["ends_at"].as_i64().unwrap();
    rig.fleet(3, 3);
    wait_for("alarms marked silenced", Duration::from_secs(10), || {
        rig.scalar(
            "SELECT count(*) FROM alarms WHERE state = 'active' AND muted = 'silenced: test'",
        ) >= 3
    });
    while unix_now() < expires - 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rig.sink.got().is_empty(), "sent while silenced: {:?}", rig.events());
    wait_for("the message after the silence", Duration::from_secs(10), || {
        !rig.sink.got().is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let events = rig.events();
    assert_told_once(&events);
    assert_eq!(events.len(), 1, "{events:?}");
    let (_, list) = rig.admin("GET", "/status/admin/silences", None);
    assert_eq!(list["silences"][0]["active"], false, "{list}");
}

#[test]
fn acknowledging_stops_repeats() {
    let rig = Rig::start("", "repeat_interval = \"2s\"");
    rig.fleet(3, 3);
    wait_for("a repeat", Duration::from_secs(20), || rig.events().iter().any(|e| e.1 == "repeat"));
    // Acknowledge what is active: the incident (and its alarms).
    let conn = Connection::open(&rig.db).unwrap();
    let ids = |sql: &str| -> Vec<i64> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let incidents = ids("SELECT id FROM incidents WHERE state = 'active'");
    assert!(!incidents.is_empty());
    for id in incidents {
        let (code, body) = rig.admin("POST", &format!("/status/admin/incidents/{id}/ack"), None);
        assert_eq!(code, 200, "{body}");
    }
    for id in ids("SELECT id FROM alarms WHERE state = 'active'") {
        let (code, body) = rig.admin("POST", &format!("/status/admin/alarms/{id}/ack"), None);
        assert_eq!(code, 200, "{body}");
    }
    let (code, _) = rig.admin("POST", "/status/admin/incidents/999999/ack", None);
    assert_eq!(code, 404);
    let (code, _) = rig.admin("POST", "/status/admin/incidents/x/ack", None);
    assert_eq!(code, 400);
    // A repeat decided before the acknowledgement may still arrive.
    std::thread::sleep(Duration::from_secs(1));
    let before = rig.events().len();
    std::thread::sleep(Duration::from_secs(7));
    let events = rig.events();
    assert_eq!(events.len(), before, "repeats after the acknowledgement: {events:?}");
    let keys: BTreeSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(keys.len(), events.len(), "a key received twice");
}

#[test]
fn a_channel_down_for_a_minute_gets_everything_once_when_it_returns() {
    let rig = Rig::start("", "");
    rig.sink.down.store(true, Ordering::SeqCst);
    rig.fleet(3, 3);
    wait_for("a message waiting", Duration::from_secs(10), || {
        rig.scalar("SELECT count(*) FROM notify_outbox WHERE state = 'queued'") > 0
    });
    let down_since = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let tries = rig.scalar("SELECT min(tries) FROM notify_outbox");
    assert!(tries >= 8, "retried through the outage, {tries} tries");
    assert_eq!(rig.scalar("SELECT count(*) FROM notify_outbox WHERE state != 'queued'"), 0);
    rig.sink.down.store(false, Ordering::SeqCst);
    eprintln!("down for {:?}, {tries} tries", down_since.elapsed());
    wait_for("the outbox drained", Duration::from_secs(15), || {
        rig.scalar("SELECT count(*) FROM notify_outbox WHERE state = 'queued'") == 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let decided: BTreeSet<String> = outbox(&rig.db).into_iter().map(|r| r.0).collect();
    let events = rig.events();
    let got: BTreeSet<String> = events.iter().map(|e| e.0.clone()).collect();
    assert_eq!(got, decided, "every message delivered");
    assert_eq!(events.len(), got.len(), "none twice");
    assert_eq!(rig.scalar("SELECT count(*) FROM notify_outbox WHERE state = 'dead'"), 0);
}

#[test]
fn a_channel_rate_limit_spaces_its_messages_and_drops_none() {
    // Two sites go silent at once: two incidents, decided together.
    let rig = Rig::start("rate_limit = \"1/3s\"", "");
    rig.fleet(10, 3);
    wait_for("two messages", Duration::from_secs(30), || rig.sink.got().len() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    let got = rig.sink.got();
    let created: BTreeSet<i64> = Connection::open(&rig.db)
        .unwrap()
        .prepare("SELECT created_at FROM notify_outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let first_created = *created.first().unwrap();
    assert!(created.last().unwrap() - first_created <= 1, "decided together: {created:?}");
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(2_800), "sent {gap:?} apart");
    }
    assert_told_once(&rig.events());
    assert_eq!(rig.scalar("SELECT count(*) FROM notify_outbox WHERE state != 'sent'"), 0);
}

#[test]
fn admin_endpoints_manage_silences_windows_and_the_outbox_and_refuse_bad_input() {
    let rig = Rig::start("", "");
    let count = |path: &str, field: &str| -> usize {
        let (code, body) = rig.admin("GET", path, None);
        assert_eq!(code, 200, "{body}");
        body[field].as_array().unwrap().len()
    };
    // Silences: created, listed, bad ones refused, expired.
    let (code, body) = rig.admin(
        "POST",
        "/status/admin/silences",
        Some(
            serde_json::json!({"matchers": ["site=hel"], "duration_secs": 600, "comment": "move"}),
        ),
    );
    assert_eq!(code, 200, "{body}");
    let id = body["id"].as_i64().unwrap();
    for bad in [
        serde_json::json!({"matchers": ["site~hel"], "duration_secs": 600, "comment": "x"}),
        serde_json::json!({"matchers": ["site=~("], "duration_secs": 600, "comment": "x"}),
        serde_json::json!({"matchers": [], "duration_secs": 600, "comment": "x"}),
        serde_json::json!({"matchers": ["site=hel"], "duration_secs": 600, "comment": " "}),
        serde_json::json!({"matchers": ["site=hel"], "comment": "no end"}),
        serde_json::json!({"matchers": ["site=hel"], "duration_secs": -5, "comment": "x"}),
        serde_json::json!({"matchers": ["site=hel"], "starts_at": 2000, "ends_at": 1000, "comment": "x"}),
        serde_json::json!({"matchers": ["site=hel"], "duration_secs": 60, "comment": "x", "extra": 1}),
    ] {
        let (code, body) = rig.admin("POST", "/status/admin/silences", Some(bad.clone()));
        assert_eq!(code, 400, "{bad} → {body}");
        assert!(body.to_string().len() > 10, "a reason: {body}");
    }
    assert_eq!(count("/status/admin/silences", "silences"), 1, "nothing added");
    assert_eq!(rig.admin("DELETE", "/status/admin/silences/999", None).0, 404);
    assert_eq!(rig.admin("DELETE", "/status/admin/silences/abc", None).0, 400);
    assert_eq!(rig.admin("DELETE", &format!("/status/admin/silences/{id}"), None).0, 200);
    let (_, list) = rig.admin("GET", "/status/admin/silences", None);
    assert_eq!(list["silences"][0]["active"], false, "expired: {list}");

    // Windows: created, listed, bad ones refused, deleted.
    let (code, body) = rig.admin(
        "POST",
        "/status/admin/windows",
        Some(serde_json::json!({"name": "nightly", "sites": ["hel"], "every": "day",
            "at": "02:00", "duration": "1h", "time_zone": "Europe/Helsinki"})),
    );
    assert_eq!(code, 200, "{body}");
    let wid = body["id"].as_i64().unwrap();
    for bad in [
        serde_json::json!({"name": "no times"}),
        serde_json::json!({"name": "zone", "every": "day", "at": "02:00", "duration": "1h", "time_zone": "Mars/Olympus"}),
        serde_json::json!({"name": "late", "every": "day", "at": "25:00", "duration": "1h"}),
        serde_json::json!({"name": "backwards", "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}),
        serde_json::json!("not a window"),
    ] {
        let (code, body) = rig.admin("POST", "/status/admin/windows", Some(bad.clone()));
        assert_eq!(code, 400, "{bad} → {body}");
    }
    assert_eq!(count("/status/admin/windows", "windows"), 1, "nothing added");
    assert_eq!(rig.admin("DELETE", "/status/admin/windows/999", None).0, 404);
    assert_eq!(rig.admin("DELETE", &format!("/status/admin/windows/{wid}"), None).0, 200);
    assert_eq!(count("/status/admin/windows", "windows"), 0);

    // The outbox and its dead letters; no token, no answer.
    assert_eq!(count("/status/admin/notifications", "notifications"), 0);
    assert_eq!(count("/status/admin/notifications?state=dead", "notifications"), 0);
    assert_eq!(rig.admin("GET", "/status/admin/notifications?state=lost", None).0, 400);
    let anonymous =
        reqwest::blocking::get(format!("http://127.0.0.1:{}/status/admin/notifications", rig.port))
            .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[test]
fn mail_goes_out_over_starttls_with_authentication_trusting_the_configured_ca() {
    let Some(python) = python_with_aiosmtpd() else {
        kattila_testsupport::skip(
            "mail_goes_out_over_starttls_with_authentication_trusting_the_configured_ca",
            "python3-aiosmtpd is not installed",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A private CA and the server's certificate signed by it.
    let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (csr, ext) = (dir.path().join("server.csr"), dir.path().join("server.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    let p = |f: &PathBuf| f.to_str().unwrap().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<String>; 3] = [
        [&["req", "-x509"][..], &ec, &["-days", "1", "-subj", "/CN=kattila test CA"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca)])
            .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&key), "-out".into(), p(&csr)])
            .collect(),
        ["x509", "-req", "-days", "1", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([p(&csr), "-CA".into(), p(&ca), "-CAkey".into(), p(&ca_key)])
            .chain(["-extfile".into(), p(&ext), "-out".into(), p(&cert)])
            .collect(),
    ];
    for args in steps {
        let ok = Command::new("openssl")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            kattila_testsupport::skip(
                "mail_goes_out_over_starttls_with_authentication_trusting_the_configured_ca",
                "openssl is not installed",
            );
            return;
        }
    }
    let (_smtp, port, mail_file) = start_smtp_with(&python, dir.path(), &[&cert, &key]);
    let config = |ca: &str| {
        format!(
            "[channels.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\n{ca}\
             username = \"kattila\"\nsecret_env = \"KATTILA_TEST_MAIL_SECRET\"\n\
             from = \"Kattila <kattila@example.org>\"\nto = [\"ops@example.org\"]\n"
        )
    };
    let file = dir.path().join("mail.toml");
    let secret = [("KATTILA_TEST_MAIL_SECRET", "mail-secret")];
    // Without the CA the server's certificate is not trusted: nothing sent.
    std::fs::write(&file, config("")).unwrap();
    let (code, _, err) = util::run(
        util::RECEIVER,
        &["--notify-config", file.to_str().unwrap(), "notify", "test", "mail"],
        &secret,
    );
    assert_ne!(code, 0, "an untrusted certificate was accepted");
    assert!(!err.contains("mail-secret"), "{err}");
    // With it: STARTTLS, then AUTH, then the message.
    std::fs::write(&file, config(&format!("ca_file = {:?}\n", ca.to_str().unwrap()))).unwrap();
    let (code, out, err) = util::run(
        util::RECEIVER,
        &["--notify-config", file.to_str().unwrap(), "notify", "test", "mail"],
        &secret,
    );
    assert_eq!(code, 0, "{out}{err}");
    let mails: Vec<serde_json::Value> = std::fs::read_to_string(&mail_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["tls"], true);
    assert_eq!(mails[0]["auth"], true);
    let data = mails[0]["data"].as_str().unwrap();
    assert!(data.contains("multipart/alternative") && data.contains("text/html"), "{data}");
}
