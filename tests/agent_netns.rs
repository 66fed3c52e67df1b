//! The agent in real network namespaces with userspace WireGuard
//! (wireguard-go): what it collects must be exactly what was set up, and an
//! agent with no path to the receiver finds another one over the WireGuard
//! mesh and delivers through it.
//!
//! Needs root, `ip` (iproute2), `wg` (wireguard-tools) and `wireguard-go`;
//! skips with the reason printed otherwise. Two namespaces joined by a veth
//! each run wireguard-go with its own interface name (the UAPI sockets in
//! /var/run/wireguard are shared by all namespaces). Everything is removed
//! on drop, also when a test fails.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::*;

const PSK: &str = "netns-test-fleet-key";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.to_string()))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// Why this machine cannot run the namespace tests, if it cannot.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need it)".into());
    }
    for tool in ["ip", "wg", "wireguard-go"] {
        if !in_path(tool) {
            return Some(format!(
                "{tool} is not installed (Debian: iproute2, wireguard-tools, wireguard-go)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

macro_rules! skip_unless_capable {
    ($test:literal) => {
        if let Some(reason) = skip_reason() {
            return kattila_testsupport::skip($test, &reason);
        }
    };
}

/// Two namespaces A and B joined by a veth, each with a wireguard-go device,
/// peered with each other; A has a second peer X that never answers.
struct Lab {
    ns_a: String,
    ns_b: String,
    wg_a: String,
    wg_b: String,
    pub_a: String,
    pub_b: String,
    pub_x: String,
    private_a: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for wg in [&self.wg_a, &self.wg_b] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{wg}.sock"));
        }
    }
}

impl Lab {
    /// `tag` keeps names distinct between tests running at the same time.
    fn new(tag: &str) -> Lab {
        let id = std::process::id() % 100_000;
        let (private_a, pub_a) = keypair();
        let (private_b, pub_b) = keypair();
        let (_, pub_x) = keypair();
        let mut lab = Lab {
            ns_a: format!("kt{tag}a{id}"),
            ns_b: format!("kt{tag}b{id}"),
            wg_a: format!("kw{tag}a{id}"),
            wg_b: format!("kw{tag}b{id}"),
            pub_a,
            pub_b,
            pub_x,
            private_a: private_a.clone(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let (a, b) = (lab.ns_a.clone(), lab.ns_b.clone());
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        sh(&["ip", "-n", &a, "addr", "add", "192.0.2.1/24", "dev", "va"]);
        sh(&["ip", "-n", &a, "addr", "add", "2001:db8:77::1/64", "dev", "va", "nodad"]);
        sh(&["ip", "-n", &b, "addr", "add", "192.0.2.2/24", "dev", "vb"]);
        sh(&["ip", "-n", &a, "link", "set", "va", "up"]);
        sh(&["ip", "-n", &b, "link", "set", "vb", "up"]);
        sh(&[
            "ip",
            "-n",
            &a,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.2",
            "dev",
            "va",
            "metric",
            "42",
        ]);

        let (wa, wb) = (lab.wg_a.clone(), lab.wg_b.clone());
        for (ns, wg) in [(&a, &wa), (&b, &wb)] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{wg}.sock"));
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "wireguard-go", "-f", wg])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("wireguard-go starts");
            lab.children.push(child);
        }
        for wg in [&wa, &wb] {
            let sock = PathBuf::from(format!("/var/run/wireguard/{wg}.sock"));
            wait_until(&format!("{} exists", sock.display()), || sock.exists());
        }
        let key_a = lab.dir.path().join("a.key");
        let key_b = lab.dir.path().join("b.key");
        std::fs::write(&key_a, &private_a).unwrap();
        std::fs::write(&key_b, &private_b).unwrap();
        // Configure both ends before bringing them up, so the first
        // handshake initiation is not lost.
        sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "wg",
            "set",
            &wa,
            "private-key",
            key_a.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &lab.pub_b,
            "endpoint",
            "192.0.2.2:51821",
            "allowed-ips",
            "10.77.0.2/32",
            "persistent-keepalive",
            "1",
            "peer",
            &lab.pub_x,
            "allowed-ips",
            "10.77.0.3/32",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &b,
            "wg",
            "set",
            &wb,
            "private-key",
            key_b.to_str().unwrap(),
            "listen-port",
            "51821",
            "peer",
            &lab.pub_a,
            "endpoint",
            "192.0.2.1:51820",
            "allowed-ips",
            "10.77.0.1/32",
            "persistent-keepalive",
            "1",
        ]);
        sh(&["ip", "-n", &a, "addr", "add", "10.77.0.1/24", "dev", &wa]);
        sh(&["ip", "-n", &b, "addr", "add", "10.77.0.2/24", "dev", &wb]);
        sh(&["ip", "-n", &a, "link", "set", &wa, "up"]);
        sh(&["ip", "-n", &b, "link", "set", &wb, "up"]);
        lab
    }

    /// Waits until A and B completed a handshake (up to 15 s).
    fn wait_handshake(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let out = sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns_a,
                "wg",
                "show",
                &self.wg_a,
                "latest-handshakes",
            ]);
            if out.lines().any(|l| l.starts_with(&self.pub_b) && !l.trim_end().ends_with("\t0")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no WireGuard handshake between the namespaces within 15 s");
    }

    /// A kattila-agent command run inside namespace `ns`.
    fn agent_in(&self, ns: &str, args: &[&str]) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped.args(["netns", "exec", ns, AGENT]).args(args);
        wrapped.current_dir(self.dir.path());
        for k in agent_env() {
            wrapped.env_remove(k);
        }
        wrapped.env("KATTILA_ENV_FILE", self.dir.path().join("none"));
        wrapped
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starts");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                }
            });
        }
        self.children.push(child);
    }
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no entry with {key} = {value} in {list}"))
}

#[test]
fn collection_shows_exactly_the_namespace_links_routes_and_wireguard_peers() {
    skip_unless_capable!("collection_shows_exactly_the_namespace_links_routes_and_wireguard_peers");
    let lab = Lab::new("c");
    lab.wait_handshake();
    let (code, stdout, stderr) = run_command(lab.agent_in(&lab.ns_a, &["--sysinfo"]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    assert!(!stdout.contains(&lab.private_a), "the private key never leaves the agent");
    assert_eq!(v["errors"], serde_json::json!([]), "nothing failed");

    let mut names: Vec<&str> =
        v["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    let mut expected = vec!["lo", "va", lab.wg_a.as_str()];
    expected.sort();
    assert_eq!(names, expected);

    let va = find(&v["interfaces"], "name", "va");
    assert_eq!((va["kind"].as_str(), va["state"].as_str()), (Some("veth"), Some("up")));
    assert!(va["mac"].as_str().is_some_and(|m| m.len() == 17));
    let addrs: Vec<&str> =
        va["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(addrs.contains(&"192.0.2.1/24") && addrs.contains(&"2001:db8:77::1/64"), "{addrs:?}");
    let wg = find(&v["interfaces"], "name", &lab.wg_a);
    assert_eq!(wg["kind"], "tun");
    let wg_addrs: Vec<&str> = wg["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .filter(|a| !a.starts_with("fe80:")) // the kernel's link-local address
        .collect();
    assert_eq!(wg_addrs, ["10.77.0.1/24"]);

    let routes = v["routes"].as_array().unwrap();
    let has = |dst: &str, gw: Option<&str>, dev: &str, table: u64| {
        routes.iter().any(|r| {
            r["dst"] == dst && r["gateway"].as_str() == gw && r["dev"] == dev && r["table"] == table
        })
    };
    assert!(has("198.51.100.0/24", Some("192.0.2.2"), "va", 254), "{routes:?}");
    assert!(routes.iter().any(|r| r["dst"] == "198.51.100.0/24" && r["metric"] == 42));
    assert!(has("192.0.2.0/24", None, "va", 254));
    assert!(has("10.77.0.0/24", None, &lab.wg_a, 254));
    assert!(has("192.0.2.1/32", None, "va", 255), "local table");
    assert!(routes.iter().any(|r| r["dst"] == "2001:db8:77::/64" && r["dev"] == "va"));

    // Only this namespace's device, although B's socket is visible too.
    let devices = v["wireguard"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    let dev = &devices[0];
    assert_eq!(dev["name"], lab.wg_a.as_str());
    assert_eq!(dev["public_key"], lab.pub_a.as_str());
    assert_eq!(dev["listen_port"], 51820);
    let peers = dev["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    let b = find(&dev["peers"], "public_key", &lab.pub_b);
    assert_eq!(b["endpoint"], "192.0.2.2:51821");
    assert_eq!(b["allowed_ips"], serde_json::json!(["10.77.0.2/32"]));
    assert_eq!(b["persistent_keepalive"], 1);
    assert!(b["latest_handshake"].as_i64().is_some_and(|t| t > 1_700_000_000));
    assert!(b["rx_bytes"].as_u64() > Some(0));
    let x = find(&dev["peers"], "public_key", &lab.pub_x);
    assert!(x.get("endpoint").is_none() && x.get("latest_handshake").is_none(), "{x}");
    assert_eq!(x["allowed_ips"], serde_json::json!(["10.77.0.3/32"]));
}

#[test]
fn cut_off_agent_discovers_a_relay_on_the_mesh_and_delivers_through_it() {
    skip_unless_capable!("cut_off_agent_discovers_a_relay_on_the_mesh_and_delivers_through_it");
    let mut lab = Lab::new("r");
    lab.wait_handshake();
    let db = lab.dir.path().join("kattila.db");
    // The receiver listens on B's loopback: only B reaches it directly.
    let mut receiver = Command::new("ip");
    receiver
        .args(["netns", "exec", &lab.ns_b, RECEIVER, "--listen", "127.0.0.1:5086", "--db"])
        .arg(&db)
        .env("KATTILA_PSK", PSK);
    lab.spawn("receiver", receiver);
    let state_b = lab.dir.path().join("b");
    let mut agent_b = lab.agent_in(
        &lab.ns_b.clone(),
        &[
            "--manager-url",
            "http://127.0.0.1:5086",
            "--listen",
            "10.77.0.2:5087",
            "--interval",
            "0.5",
        ],
    );
    agent_b.arg("--state-dir").arg(&state_b).env("KATTILA_PSK", PSK).env("RUST_LOG", "info");
    lab.spawn("agent-b", agent_b);

    // A's --discover probes the host addresses of its peers' AllowedIPs.
    let state_a = lab.dir.path().join("a");
    let discover = || {
        let mut cmd = lab.agent_in(&lab.ns_a, &["--discover", "--timeout", "2"]);
        cmd.arg("--state-dir").arg(&state_a);
        run_command(cmd)
    };
    let mut found = String::new();
    wait_until("A discovers B with a direct path", || {
        let (_, stdout, _) = discover();
        found = stdout;
        found.contains("http://10.77.0.2:5087") && found.contains("\tdirect")
    });
    let b_id = std::fs::read_to_string(state_b.join("agent_id")).unwrap().trim().to_string();
    assert!(found.contains(&b_id), "{found}");

    // A cannot reach the receiver (nothing listens on A's loopback), so its
    // report goes through B.
    let mut once = lab.agent_in(
        &lab.ns_a,
        &["--once", "--manager-url", "http://127.0.0.1:5086", "--retries", "1"],
    );
    once.arg("--state-dir").arg(&state_a).env("KATTILA_PSK", PSK);
    let (code, _, stderr) = run_command(once);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("delivered through 1 relay hop"), "{stderr}");
    let a_id = std::fs::read_to_string(state_a.join("agent_id")).unwrap().trim().to_string();
    let rows = stored_reports(&db, &a_id);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2.as_deref(), Some(b_id.as_str()));
}
