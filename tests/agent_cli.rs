//! The agent's command line as an operator uses it: configuration
//! precedence (.env < environment < flags, the original system's .env
//! keys), clear errors for bad input, --sysinfo, --dump and --once.

mod util;

use std::path::Path;

use kattila_proto::{verify, KeySet, Message, Psk, VerifyOptions};
use util::*;

const PSK: &str = "cli-test-fleet-key";

fn show_config(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let mut cmd = agent_command(dir);
    cmd.arg("--show-config").args(args).envs(envs.iter().copied());
    let (code, stdout, stderr) = run_command(cmd);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).expect("--show-config prints JSON")
}

#[test]
fn dotenv_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    // The original system's .env keys, in the working directory.
    std::fs::write(
        dir.path().join(".env"),
        "# kattila\nDNS=kattila.example.com\nMANAGER_URL=http://10.0.0.1:5086\nKATTILA_INTERVAL=7\n",
    )
    .unwrap();
    // The system-wide file: used for what the first file does not set.
    let system = dir.path().join("agent.env");
    std::fs::write(
        &system,
        "MANAGER_URL=http://ignored:1\nKATTILA_TIMEOUT=3s\nKATTILA_PEER_PORT=6000\n",
    )
    .unwrap();
    let system = system.to_str().unwrap();

    let c = show_config(dir.path(), &[("KATTILA_ENV_FILE", system)], &[]);
    assert_eq!(c["manager_url"], "http://10.0.0.1:5086/");
    assert_eq!(c["key_source"], "dns kattila.example.com");
    assert_eq!(c["interval_secs"], 7.0);
    assert_eq!(c["timeout_secs"], 3.0);
    assert_eq!(c["peer_port"], 6000);
    assert_eq!(c["env_files"].as_array().unwrap().len(), 2);

    // The environment overrides the files …
    let envs = [
        ("KATTILA_ENV_FILE", system),
        ("MANAGER_URL", "https://kattila.example.net"),
        ("KATTILA_INTERVAL", "9"),
        ("DNS", "env.example.com"),
    ];
    let c = show_config(dir.path(), &envs, &[]);
    assert_eq!(c["manager_url"], "https://kattila.example.net/");
    assert_eq!(c["interval_secs"], 9.0);
    assert_eq!(c["key_source"], "dns env.example.com");
    // … and flags override the environment.
    let c = show_config(dir.path(), &envs, &["--interval", "2m", "--dns", "flag.example.com"]);
    assert_eq!(c["interval_secs"], 120.0);
    assert_eq!(c["key_source"], "dns flag.example.com");
    // KATTILA_PSK beats DNS and never appears in the output.
    let c = show_config(dir.path(), &[("KATTILA_PSK", PSK)], &[]);
    assert_eq!(c["key_source"], "KATTILA_PSK");
    assert!(!c.to_string().contains(PSK));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--interval", "soon"],
            "--interval (KATTILA_INTERVAL): \"soon\" is not a valid duration",
        ),
        (&["--manager-url", "10.0.0.1:5086"], "must be an http:// or https:// URL"),
        (&["--listen", "everywhere"], "--listen (KATTILA_LISTEN)"),
        (&["--spool-max-bytes", "lots"], "is not a size"),
    ];
    for (args, message) in cases {
        let mut cmd = agent_command(dir.path());
        cmd.arg("--show-config").args(*args);
        let (code, _, stderr) = run_command(cmd);
        assert_eq!(code, 1, "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // A malformed .env line names the file and line, and nothing runs.
    std::fs::write(dir.path().join(".env"), "MANAGER_URL=http://x:1\nthis is not a setting\n")
        .unwrap();
    let mut cmd = agent_command(dir.path());
    cmd.arg("--show-config");
    let (code, stdout, stderr) = run_command(cmd);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains(".env:2: expected KEY=VALUE"), "{stderr}");
    std::fs::remove_file(dir.path().join(".env")).unwrap();

    // Running without a key or without a receiver says what to set.
    let state = dir.path().join("state");
    let mut cmd = agent_command(dir.path());
    cmd.args(["--once", "--manager-url", "http://127.0.0.1:9"]).arg("--state-dir").arg(&state);
    let (code, _, stderr) = run_command(cmd);
    assert_eq!(code, 1);
    assert!(stderr.contains("no fleet key"), "{stderr}");
    let mut cmd = agent_command(dir.path());
    cmd.arg("--once").arg("--state-dir").arg(&state).env("KATTILA_PSK", PSK);
    let (code, _, stderr) = run_command(cmd);
    assert_eq!(code, 1);
    assert!(stderr.contains("no receiver: set MANAGER_URL"), "{stderr}");
    assert!(!stderr.contains(PSK));
    assert!(!state.exists(), "refused configurations create no state");
}

/// The site label goes through the same layers as every setting and into
/// the signed report; a bad label stops the agent before it touches state.
#[test]
fn site_label_is_configured_like_any_setting_and_reaches_the_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "KATTILA_SITE=from-file\n").unwrap();
    assert_eq!(show_config(dir.path(), &[], &[])["site"], "from-file");
    let env = [("KATTILA_SITE", "from-env")];
    assert_eq!(show_config(dir.path(), &env, &[])["site"], "from-env");
    assert_eq!(show_config(dir.path(), &env, &["--site", "helsinki-dc1"])["site"], "helsinki-dc1");
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    assert_eq!(show_config(dir.path(), &[], &[])["site"], serde_json::Value::Null);

    let keys = KeySet::new(Psk::new(PSK).unwrap());
    let state = dir.path().join("state");
    for (args, site) in [(&["--site", "helsinki-dc1"][..], Some("helsinki-dc1")), (&[][..], None)] {
        let mut cmd = agent_command(dir.path());
        cmd.args(["--dump", "-"]).args(args).arg("--state-dir").arg(&state).env("KATTILA_PSK", PSK);
        let (code, stdout, stderr) = run_command(cmd);
        assert_eq!(code, 0, "{stderr}");
        let v =
            verify(stdout.trim().as_bytes(), &keys, VerifyOptions::at(kattila_agent::unix_now()))
                .unwrap();
        let Message::Report(r) = v.message else { panic!("a report") };
        assert_eq!(r.site.as_deref(), site);
        // Not configured: the member is absent, as 0.1.0 agents sent it.
        assert_eq!(stdout.contains("\"site\""), site.is_some(), "{stdout}");
    }

    let fresh = dir.path().join("fresh-state");
    let long = "x".repeat(kattila_proto::limits::MAX_SITE + 1);
    for (site, message) in [(long.as_str(), "1-64 bytes"), ("dc\u{1b}[31m1", "control characters")]
    {
        let mut cmd = agent_command(dir.path());
        cmd.args(["--dump", "-", "--site", site])
            .arg("--state-dir")
            .arg(&fresh)
            .env("KATTILA_PSK", PSK);
        let (code, stdout, stderr) = run_command(cmd);
        assert_eq!(code, 1, "{site:?}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("--site (KATTILA_SITE)") && stderr.contains(message), "{stderr}");
        assert!(!fresh.exists(), "a refused label creates no state");
    }
}

#[test]
fn sysinfo_prints_this_hosts_telemetry_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = agent_command(dir.path());
    cmd.arg("--sysinfo");
    let (code, stdout, stderr) = run_command(cmd);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is exactly one JSON document");
    let lo = v["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "lo").unwrap();
    assert!(lo["addresses"].as_array().unwrap().iter().any(|a| a == "127.0.0.1/8"));
    assert!(
        v["routes"].as_array().unwrap().iter().any(|r| r["table"] == 255),
        "local table included"
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["system"]["kernel"], kernel.trim());
    assert_eq!(v["hostname"], std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
}

#[test]
fn dump_writes_one_verifiable_envelope_and_ticks_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = dir.path().join("report.json");
    let mut ticks = Vec::new();
    for _ in 0..2 {
        let mut cmd = agent_command(dir.path());
        cmd.arg("--dump").arg(&file).arg("--state-dir").arg(&state).env("KATTILA_PSK", PSK);
        let (code, stdout, stderr) = run_command(cmd);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.is_empty());
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(PSK));
        let keys = KeySet::new(Psk::new(PSK).unwrap());
        let v = verify(&bytes, &keys, VerifyOptions::at(kattila_agent::unix_now())).unwrap();
        let Message::Report(r) = v.message else { panic!("a report") };
        assert_eq!(r.agent_id, std::fs::read_to_string(state.join("agent_id")).unwrap().trim());
        assert!(r.observed_at <= r.timestamp);
        ticks.push(r.tick);
    }
    assert!(ticks[1] > ticks[0], "{ticks:?}");
}

#[test]
fn once_exit_status_says_how_delivery_went() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    let state = dir.path().join("state");
    let once = |url: &str, psk: &str| {
        let mut cmd = agent_command(dir.path());
        cmd.args(["--once", "--retries", "1", "--manager-url", url])
            .arg("--state-dir")
            .arg(&state)
            .env("KATTILA_PSK", psk);
        run_command(cmd)
    };
    // Nothing reachable: 3, and the report waits in the spool.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, _, stderr) = once(&dead, PSK);
    assert_eq!(code, 3, "{stderr}");
    // The receiver refuses a report signed with another key: 2. The report
    // is kept: a key rotation that has not reached this node yet passes.
    let (code, _, stderr) = once(&receiver.url(), "not-the-fleet-key");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad_mac"), "{stderr}");
    assert!(!stderr.contains("not-the-fleet-key"));
    // Delivered: 0; the spooled reports went first.
    let (code, _, stderr) = once(&receiver.url(), PSK);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("delivered directly"), "{stderr}");
    let id = std::fs::read_to_string(state.join("agent_id")).unwrap().trim().to_string();
    let rows = stored_reports(&db, &id);
    assert_eq!(rows.len(), 3, "two spooled reports and the new one: {rows:?}");
    assert!(rows[0].1 <= rows[1].1 && rows[1].1 <= rows[2].1);
}

/// An unknown fault scenario stops the simulator before it sends anything,
/// naming the scenarios there are.
#[test]
fn simulate_refuses_an_unknown_fault_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim");
    let mut cmd = agent_command(dir.path());
    cmd.args(["simulate", "--faults", "everything", "--url", "http://127.0.0.1:9"])
        .arg("--state-dir")
        .arg(&state)
        .env("KATTILA_PSK", PSK);
    let (code, _, stderr) = run_command(cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid value 'everything' for '--faults <SCENARIO>'"), "{stderr}");
    assert!(stderr.contains("[possible values: none, demo]"), "{stderr}");
    assert!(!state.exists());
}
