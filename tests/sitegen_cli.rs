//! sitegen as its users run it: the real binary against a database filled
//! by the real receiver and simulator — watch mode reacting to commits,
//! --once exit codes and errors, anonymisation end to end, git snapshots.

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::*;

const PSK: &str = "sitegen-e2e-fleet-key";

fn simulate(receiver: &Receiver, state: &Path, agents: usize, rounds: u32) {
    let (code, _, stderr) = run(
        AGENT,
        &[
            "simulate",
            "--agents",
            &agents.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--interval",
            "0.1",
            "--seed",
            "sitegen-e2e",
            "--url",
            &receiver.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("KATTILA_PSK", PSK)],
    );
    assert_eq!(code, 0, "simulator failed: {stderr}");
}

/// `sitegen --watch`, killed on drop; its stdout lines arrive on a channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(db: &Path, out: &Path, extra: &[&str]) -> Watcher {
        let mut child = Command::new(SITEGEN)
            .args(["--watch", "--db"])
            .arg(db)
            .arg("--out")
            .arg(out)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sitegen starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[sitegen] {line}");
                let _ = tx.send(line);
            }
        });
        Watcher { child, lines }
    }

    /// Waits (generously: this is not a timing test) for a line containing `what`.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if line.contains(what) {
                    return line;
                }
            }
        }
        panic!("sitegen never printed {what:?}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_agent_rows(out: &Path) -> usize {
    std::fs::read_to_string(out.join("current/index.html"))
        .map(|t| t.matches("href=\"agents/").count())
        .unwrap_or(0)
}

#[test]
fn watch_mode_rebuilds_after_each_commit_of_the_real_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let out = dir.path().join("site");
    // A long fallback timer: the rebuilds below come from file events.
    let watcher = Watcher::start(&db, &out, &["--poll-ms", "60000"]);
    watcher.wait_for("built 0 agents");
    simulate(&receiver, &dir.path().join("sim"), 3, 1);
    let line = watcher.wait_for("built 3 agents");
    assert!(line.contains("3 agents joined") || line.contains("agent"), "{line}");
    assert_eq!(count_agent_rows(&out), 3);
    simulate(&receiver, &dir.path().join("sim"), 6, 1);
    watcher.wait_for("built 6 agents");
    assert_eq!(count_agent_rows(&out), 6);
    // The JSON followed too.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("current/api/v1/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["summary"]["agents_total"], 6);
}

/// A steady fleet reporting moves only counters and times: watch mode does
/// not rebuild for that (but once per --refresh-secs), while an agent
/// joining is built at once.
#[test]
fn watch_mode_builds_changes_at_once_and_a_steady_fleet_only_on_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let out = dir.path().join("site");
    let watcher = Watcher::start(&db, &out, &["--poll-ms", "100", "--refresh-secs", "3600"]);
    watcher.wait_for("built 0 agents");
    let state = dir.path().join("sim");
    // First contact, then a few rounds for the fleet to settle (peers find
    // their agents).
    simulate(&receiver, &state, 4, 5);
    watcher.wait_for("built 4 agents");
    std::thread::sleep(Duration::from_secs(2));
    while watcher.lines.try_recv().is_ok() {}
    // Thirty more rounds of the same fleet: counters and handshakes move.
    simulate(&receiver, &state, 4, 30);
    std::thread::sleep(Duration::from_secs(1));
    let builds: Vec<String> = watcher.lines.try_iter().filter(|l| l.contains("built")).collect();
    assert!(builds.is_empty(), "rebuilt for counters: {builds:?}");
    // A new agent is a change: built at once.
    simulate(&receiver, &state, 5, 1);
    watcher.wait_for("built 5 agents");
}

#[test]
fn no_address_from_the_receivers_database_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    simulate(&receiver, &dir.path().join("sim"), 12, 2);
    receiver.stop();
    let out = dir.path().join("site");
    let (code, stdout, stderr) = run(
        SITEGEN,
        &["--once", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("built 12 agents"), "{stdout}");
    // Every address the receiver stored, from every table.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut raw: Vec<String> = Vec::new();
    for sql in ["SELECT addresses FROM interfaces", "SELECT allowed_ips FROM wg_peers"] {
        let mut stmt = conn.prepare(sql).unwrap();
        for json in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let list: Vec<String> = serde_json::from_str(&json.unwrap()).unwrap();
            raw.extend(list.iter().map(|a| a.split('/').next().unwrap().to_string()));
        }
    }
    for sql in
        ["SELECT endpoint FROM wg_peers", "SELECT dst FROM routes", "SELECT gateway FROM routes"]
    {
        let mut stmt = conn.prepare(sql).unwrap();
        for v in stmt.query_map([], |r| r.get::<_, Option<String>>(0)).unwrap() {
            if let Some(v) = v.unwrap() {
                let host = v
                    .rsplit_once(':')
                    .filter(|_| v.contains('.'))
                    .map(|(h, _)| h.to_string())
                    .unwrap_or(v.clone());
                raw.push(host.trim_matches(['[', ']']).split('/').next().unwrap().to_string());
            }
        }
    }
    // Addresses that name no host (unspecified, loopback, multicast) are
    // published as they are: every machine has them (docs/sitegen.md).
    raw.retain(|a| {
        a.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            kattila_fleet::AddressClass::of(&ip) != kattila_fleet::AddressClass::NoHost
        })
    });
    raw.sort();
    raw.dedup();
    assert!(raw.len() > 30, "{raw:?}");
    // The pseudonyms of what is stored, addresses and networks alike. A
    // pseudonym can be, by chance, another stored address (private
    // addresses stay in their private range, so 10.20.0.0/24 may stand for
    // 10.31.0.0/24): such an address is the pseudonym that is published,
    // not a leak, and is not looked for in this run.
    let key =
        kattila_sitegen::anon::SiteKey::load_or_create(&out.join(".sitegen/site-key")).unwrap();
    let mut anon = kattila_sitegen::anon::Anon::new(&key);
    let mut published = std::collections::HashSet::new();
    for sql in [
        "SELECT value FROM interfaces, json_each(interfaces.addresses)",
        "SELECT value FROM wg_peers, json_each(wg_peers.allowed_ips)",
        "SELECT dst FROM routes",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        for cidr in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let cidr = cidr.unwrap();
            for form in [anon.text(&cidr), anon.network(&cidr)] {
                published.insert(form.split('/').next().unwrap().to_string());
            }
        }
    }
    let coincidences: Vec<String> =
        raw.iter().filter(|a| published.contains(*a)).cloned().collect();
    raw.retain(|a| !published.contains(a));
    assert!(raw.len() > 30, "{raw:?}");
    if !coincidences.is_empty() {
        eprintln!("not looked for (also a pseudonym under this key): {coincidences:?}");
    }
    let root = std::fs::canonicalize(out.join("current")).unwrap();
    let mut stack = vec![root];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&p).unwrap();
            for a in &raw {
                let ip: std::net::IpAddr = a.parse().unwrap();
                for form in [a.clone(), ip.to_string()] {
                    for (at, _) in text.match_indices(&form) {
                        let before = text[..at].chars().next_back();
                        let after = text[at + form.len()..].chars().next();
                        let part = |c: Option<char>| {
                            c.is_some_and(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                        };
                        assert!(
                            part(before) || part(after),
                            "{form} published in {}: …{}…",
                            p.display(),
                            &text[at.saturating_sub(120)..(at + 60).min(text.len())]
                        );
                    }
                }
            }
        }
    }
    assert!(files > 20);
}

#[test]
fn once_fails_clearly_on_missing_corrupt_and_locked_databases() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site");
    let o = out.to_str().unwrap();
    let missing = dir.path().join("missing.db");
    let (code, _, stderr) =
        run(SITEGEN, &["--once", "--db", missing.to_str().unwrap(), "--out", o], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not exist"), "{stderr}");
    // Bad input changes nothing: no site key, no output directory.
    assert!(!out.exists(), "a failed --once created {}", out.display());

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42u8; 8192]).unwrap();
    let (code, _, stderr) =
        run(SITEGEN, &["--once", "--db", corrupt.to_str().unwrap(), "--out", o], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a readable SQLite database"), "{stderr}");

    let empty = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let (code, _, stderr) =
        run(SITEGEN, &["--once", "--db", empty.to_str().unwrap(), "--out", o], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a Kattila database"), "{stderr}");

    // A database in rollback-journal mode with a writer holding an
    // exclusive lock: sitegen gives up after its busy timeout.
    let locked = dir.path().join("locked.db");
    drop(kattila_store::open(&locked).unwrap());
    let holder = rusqlite::Connection::open(&locked).unwrap();
    let mode: String = holder.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    holder
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO alarm_streaks VALUES ('k','a','s',1);")
        .unwrap();
    let (code, _, stderr) = run(
        SITEGEN,
        &["--once", "--db", locked.to_str().unwrap(), "--out", o, "--busy-timeout-ms", "200"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("locked"), "{stderr}");
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(!out.join("current").exists(), "a failed build published something");

    // And once the lock is gone, it builds; usage errors are exit code 2.
    let (code, stdout, _) =
        run(SITEGEN, &["--once", "--db", locked.to_str().unwrap(), "--out", o], &[]);
    assert_eq!((code, stdout.contains("built 0 agents")), (0, true));
    let (code, _, _) = run(SITEGEN, &["--once", "--watch"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn site_key_file_is_private_and_keeps_pseudonyms_stable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    simulate(&receiver, &dir.path().join("sim"), 3, 1);
    receiver.stop();
    let out = dir.path().join("site");
    let o = out.to_str().unwrap();
    let d = db.to_str().unwrap();
    let agents = || util::published::published_agents(&out.join("current")).unwrap().to_string();
    assert_eq!(run(SITEGEN, &["--once", "--db", d, "--out", o], &[]).0, 0);
    let first = agents();
    let key = out.join(".sitegen/site-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(run(SITEGEN, &["--once", "--db", d, "--out", o], &[]).0, 0);
    // The published addresses of every interface.
    let strip = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        let addrs: Vec<String> = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["interfaces"].as_array().unwrap().iter())
            .flat_map(|i| i["addresses"].as_array().unwrap().iter())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert!(addrs.len() > 5);
        addrs
    };
    assert_eq!(strip(&first), strip(&agents()), "same key file, same pseudonyms");
    let (code, _, _) = run(
        SITEGEN,
        &["--once", "--db", d, "--out", o],
        &[("KATTILA_SITE_KEY", "another site key, long enough")],
    );
    assert_eq!(code, 0);
    assert_ne!(strip(&first), strip(&agents()), "another key, other pseudonyms");
    let (code, _, stderr) =
        run(SITEGEN, &["--once", "--db", d, "--out", o], &[("KATTILA_SITE_KEY", "short")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("site key") && !stderr.contains("short\""), "{stderr}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn git_snapshots_commit_state_changes_and_push_to_a_remote() {
    if Command::new("git").arg("--version").output().is_err() {
        return kattila_testsupport::skip(
            "git_snapshots_commit_state_changes_and_push_to_a_remote",
            "git is not installed (Debian: git)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    simulate(&receiver, &dir.path().join("sim"), 3, 1);
    let remote = dir.path().join("pages.git");
    git(dir.path(), &["init", "--quiet", "--bare", remote.to_str().unwrap()]);
    let out = dir.path().join("site");
    let args = |interval: &'static str| {
        vec![
            "--once".to_string(),
            "--db".into(),
            db.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--git".into(),
            "--git-interval".into(),
            interval.into(),
            "--git-push".into(),
            remote.to_str().unwrap().into(),
        ]
    };
    let go = |interval: &'static str| {
        let a = args(interval);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run(SITEGEN, &a, &[]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    assert!(go("0").contains("git: committed \"Kattila: first snapshot\""));
    // Nothing but time moved: no commit.
    assert!(go("0").contains("nothing to commit"));
    // More agents: a state change, but within the interval: deferred.
    simulate(&receiver, &dir.path().join("sim"), 5, 1);
    assert!(go("3600").contains("not committing yet"));
    let stdout = go("0");
    assert!(stdout.contains("2 agents joined"), "{stdout}");
    let log = git(&remote, &["log", "--format=%s", "main"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects.len(), 2, "{log}");
    assert!(subjects[0].starts_with("Kattila: 2 agents joined"), "{log}");
    // The repository holds the site itself, at its root, ready for Pages.
    let files = git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.lines().any(|f| f == "index.html")
            && files.lines().any(|f| f == "api/v1/summary.json")
    );
    assert!(!files.contains("site-key") && !files.contains(".builds"));
}

/// `--once` from cron is a new process each time: its report says what
/// changed since the previous run, not "first build" every time.
#[test]
fn once_reports_changes_since_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    simulate(&receiver, &dir.path().join("sim"), 3, 1);
    let out = dir.path().join("site");
    let once = || {
        let (code, stdout, stderr) = run(
            SITEGEN,
            &["--once", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()],
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    assert!(once().contains("first build"));
    let again = once();
    assert!(again.contains("no state change"), "{again}");
    simulate(&receiver, &dir.path().join("sim"), 4, 1);
    let joined = once();
    assert!(joined.contains("1 agent joined") || joined.contains("agent"), "{joined}");
    assert!(!joined.contains("first build"), "{joined}");
}
