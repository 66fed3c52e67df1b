//! The whole system on a real network. Four hosts are network namespaces
//! joined by veth links:
//!
//! ```text
//!   hq (receiver, sitegen --watch, dnsmasq) ── a
//!    │                                            WireGuard mesh (wireguard-go)
//!    └── b ── c      c reaches hq only through b   between a, b and c
//! ```
//!
//! a, b and c run real `kattila-agent` daemons (real collection, each with
//! its own hostname) and a full WireGuard mesh with `wireguard-go`,
//! configured with `wg`. The fleet key is a TXT record served by dnsmasq on
//! hq. The scenario is asserted through the site that `sitegen --watch`
//! publishes (`OUT/current/api/v1/*.json` and the pages):
//!
//! 1. every host reports directly: all WireGuard links both-ends and
//!    healthy, the matrix complete, no active alarm;
//! 2. c's underlay path to hq is cut: its reports arrive through a relay
//!    over the mesh, the site shows the relay link and a relay-only alarm,
//!    nothing is lost; the path returns and the alarm resolves;
//! 3. a's WireGuard interface goes down: stale-peer alarms on the others;
//!    it comes back: they resolve;
//! 4. the key in DNS is rotated: receiver and agents follow, no report is
//!    refused;
//! 5. an agent is stopped: the receiver's timer raises agent-silent;
//! 6. no address of the test network appears anywhere in the site;
//!
//! and finally the site is served by nginx and crawled in Chromium
//! (`tests/browser`).
//!
//! Needs root, iproute2, wireguard-tools, wireguard-go, dnsmasq, curl and
//! util-linux `unshare`; skips with the reason printed otherwise. All names
//! carry the test's process id; every process is killed by PID and every
//! namespace deleted on drop, also when an assertion fails.

mod browser;
mod util;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{keypair, sh, AGENT, RECEIVER, SITEGEN};

const RECORD: &str = "psk.fleet.kattila.test";
/// Seconds between agent reports, and what the receiver is told to expect.
const INTERVAL: &str = "1";
const RECEIVER_INTERVAL: &str = "2";
const STALE_AFTER: i64 = 5;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.to_string()))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need it)".into());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("wg", "wireguard-tools"),
        ("wireguard-go", "wireguard-go"),
        ("dnsmasq", "dnsmasq-base"),
        ("curl", "curl"),
        ("unshare", "util-linux"),
    ] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed (Debian: {package})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// One agent host of the mesh.
struct Host {
    name: &'static str,
    ns: String,
    wg: String,
    /// Its underlay address (WireGuard endpoint) and the receiver's address it uses.
    underlay: &'static str,
    receiver: &'static str,
    mesh_ip: &'static str,
    private: String,
    public: String,
    state: PathBuf,
}

/// The network and every process on it. Dropping it kills the processes
/// (by PID) and deletes the namespaces.
struct Lab {
    hq: String,
    hosts: Vec<Host>,
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    db: PathBuf,
    out: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        for h in &self.hosts {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", h.wg));
        }
    }
}

/// Forwards a child's output into the test log, line by line.
fn forward(name: String, stream: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
        }
    });
}

impl Lab {
    fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.hq.clone()).chain(self.hosts.iter().map(|h| h.ns.clone())).collect()
    }

    fn new() -> Lab {
        let id = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let host = |name: &'static str, underlay, receiver, mesh_ip| {
            let (private, public) = keypair();
            Host {
                name,
                ns: format!("kmesh{name}{id}"),
                wg: format!("kmw{name}{id}"),
                underlay,
                receiver,
                mesh_ip,
                private,
                public,
                state: dir.path().join(format!("state-{name}")),
            }
        };
        let hosts = vec![
            host("a", "192.0.2.2", "192.0.2.1", "10.99.0.1"),
            host("b", "198.51.100.2", "198.51.100.1", "10.99.0.2"),
            host("c", "203.0.113.2", "198.51.100.1", "10.99.0.3"),
        ];
        let lab = Lab {
            hq: format!("kmeshhq{id}"),
            hosts,
            children: Vec::new(),
            db: dir.path().join("kattila.db"),
            out: dir.path().join("site"),
            dir,
        };
        for ns in lab.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (hq, a, b, c) = (&lab.hq, &lab.hosts[0].ns, &lab.hosts[1].ns, &lab.hosts[2].ns);
        // Underlay: hq──a, hq──b, b──c; hq and b route.
        let link = |ns1: &str, if1: &str, ns2: &str, if2: &str, v4: [&str; 2], v6: [&str; 2]| {
            sh(&[
                "ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns",
                ns2,
            ]);
            for (ns, ifname, a4, a6) in [(ns1, if1, v4[0], v6[0]), (ns2, if2, v4[1], v6[1])] {
                sh(&["ip", "-n", ns, "addr", "add", a4, "dev", ifname]);
                sh(&["ip", "-n", ns, "addr", "add", a6, "dev", ifname, "nodad"]);
                sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
            }
        };
        link(
            hq,
            "to-a",
            a,
            "up0",
            ["192.0.2.1/24", "192.0.2.2/24"],
            ["2001:db8:a::1/64", "2001:db8:a::2/64"],
        );
        link(
            hq,
            "to-b",
            b,
            "up0",
            ["198.51.100.1/24", "198.51.100.2/24"],
            ["2001:db8:b::1/64", "2001:db8:b::2/64"],
        );
        link(
            b,
            "to-c",
            c,
            "up0",
            ["203.0.113.1/24", "203.0.113.2/24"],
            ["2001:db8:c::1/64", "2001:db8:c::2/64"],
        );
        sh(&["ip", "-n", a, "route", "add", "default", "via", "192.0.2.1"]);
        sh(&["ip", "-n", b, "route", "add", "default", "via", "198.51.100.1"]);
        sh(&["ip", "-n", c, "route", "add", "default", "via", "203.0.113.1"]);
        sh(&["ip", "-n", hq, "route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
        for ns in [hq, b] {
            sh(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        }
        lab
    }

    /// Spawns `args` inside namespace `ns` with a clean environment; the
    /// child's PID is the program's own (`ip netns exec` and `unshare` exec).
    fn spawn(&mut self, name: &str, ns: &str, args: &[&str], envs: &[(&str, &str)]) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(envs.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            // sitegen prints a line per build: too many for the test log.
            .stdout(if name == "sitegen" { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
        if let Some(stdout) = child.stdout.take() {
            forward(name.to_string(), stdout);
        }
        forward(name.to_string(), child.stderr.take().unwrap());
        self.children.push((name.to_string(), child));
    }

    /// Stops the process named `name` (SIGTERM by PID) and waits for it.
    fn stop(&mut self, name: &str) {
        let i = self.children.iter().position(|(n, _)| n == name).expect("process is running");
        let (_, mut child) = self.children.remove(i);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts and configures WireGuard on the hosts `which` (indexes):
    /// wireguard-go, then `wg set` with the host's key and every other host
    /// as a peer, then the mesh address, then the link up.
    fn start_wireguard(&mut self, which: &[usize]) {
        for &i in which {
            let (ns, wg) = (self.hosts[i].ns.clone(), self.hosts[i].wg.clone());
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{wg}.sock"));
            self.spawn(
                &format!("wireguard-go {wg}"),
                &ns,
                &["wireguard-go", "-f", &wg],
                &[("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")],
            );
        }
        for &i in which {
            let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", self.hosts[i].wg));
            util::wait_until(&format!("{} exists", sock.display()), || sock.exists());
        }
        // Configure every end before bringing any up, so no first handshake
        // initiation is lost.
        for &i in which {
            let h = &self.hosts[i];
            let key = self.dir.path().join(format!("{}.key", h.name));
            std::fs::write(&key, &h.private).unwrap();
            let mut args: Vec<String> =
                ["ip", "netns", "exec", &h.ns, "wg", "set", &h.wg, "private-key"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend([key.display().to_string(), "listen-port".into(), "51820".into()]);
            for p in self.hosts.iter().filter(|p| p.name != h.name) {
                // The address the peer's packets come from, so WireGuard has
                // no reason to roam (a roam is an endpoint_changed alarm):
                // b reaches c over their shared link.
                let endpoint =
                    if (h.name, p.name) == ("c", "b") { "203.0.113.1" } else { p.underlay };
                args.extend([
                    "peer".into(),
                    p.public.clone(),
                    "endpoint".into(),
                    format!("{endpoint}:51820"),
                    "allowed-ips".into(),
                    format!("{}/32", p.mesh_ip),
                    "persistent-keepalive".into(),
                    "1".into(),
                ]);
            }
            sh(&args.iter().map(String::as_str).collect::<Vec<_>>());
            std::fs::remove_file(&key).unwrap();
        }
        for &i in which {
            let h = &self.hosts[i];
            sh(&["ip", "-n", &h.ns, "addr", "add", &format!("{}/24", h.mesh_ip), "dev", &h.wg]);
            sh(&["ip", "-n", &h.ns, "link", "set", &h.wg, "up"]);
        }
    }

    /// Waits until every pair of hosts completed a WireGuard handshake.
    fn wait_handshakes(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let missing: Vec<String> = self
                .hosts
                .iter()
                .flat_map(|h| {
                    let out = sh(&[
                        "ip",
                        "netns",
                        "exec",
                        &h.ns,
                        "wg",
                        "show",
                        &h.wg,
                        "latest-handshakes",
                    ]);
                    self.hosts
                        .iter()
                        .filter(|p| p.name != h.name)
                        .filter(|p| {
                            !out.lines()
                                .any(|l| l.starts_with(&p.public) && !l.trim_end().ends_with("\t0"))
                        })
                        .map(|p| format!("{}→{}", h.name, p.name))
                        .collect::<Vec<_>>()
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no WireGuard handshake for {missing:?} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// dnsmasq on hq serving `key` as the TXT record on `addresses`.
    fn start_dns(&mut self, name: &str, addresses: &str, key: &str) {
        let hq = self.hq.clone();
        self.spawn(
            name,
            &hq,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--port=53",
                &format!("--listen-address={addresses}"),
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                &format!("--txt-record={RECORD},{key}"),
            ],
            &[],
        );
    }

    fn start_agent(&mut self, i: usize) {
        let h = &self.hosts[i];
        std::fs::create_dir_all(&h.state).unwrap();
        let (ns, name, state) = (h.ns.clone(), h.name, h.state.display().to_string());
        let manager = format!("http://{}:5086", h.receiver);
        let dns_server = format!("{}:53", h.receiver);
        let hostname = format!("mesh-{name}");
        let none = self.dir.path().join("no-env-file").display().to_string();
        self.spawn(
            &format!("agent-{name}"),
            &ns,
            &[
                "unshare",
                "--uts",
                "sh",
                "-c",
                "echo \"$0\" > /proc/sys/kernel/hostname && exec \"$@\"",
                &hostname,
                AGENT,
                "--manager-url",
                &manager,
                "--dns",
                RECORD,
                "--dns-server",
                &dns_server,
                "--key-refresh",
                "1",
                "--interval",
                INTERVAL,
                "--timeout",
                "2",
                "--retries",
                "1",
                "--listen",
                "0.0.0.0:5087",
                "--state-dir",
                &state,
            ],
            &[("RUST_LOG", "info"), ("KATTILA_ENV_FILE", &none)],
        );
    }

    /// `curl` inside namespace `ns`: the answer's body, if any.
    fn curl(&self, ns: &str, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sf", "-m", "3", url])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn agent_health(&self, i: usize) -> Value {
        let body = self
            .curl(&self.hosts[i].ns, "http://127.0.0.1:5087/status/healthcheck")
            .unwrap_or_else(|| panic!("agent {} answers its health check", self.hosts[i].name));
        serde_json::from_str(&body).unwrap()
    }

    fn receiver_get(&self, path: &str) -> Option<String> {
        self.curl(&self.hq, &format!("http://127.0.0.1:5086{path}"))
    }

    fn agent_id(&self, i: usize) -> String {
        let file = self.hosts[i].state.join("agent_id");
        util::wait_until(&format!("agent {} has an id", self.hosts[i].name), || file.exists());
        std::fs::read_to_string(file).unwrap().trim().to_string()
    }

    fn current(&self) -> PathBuf {
        self.out.join("current")
    }
}

/// The published site's JSON, read once.
struct Site {
    agents: Value,
    alarms: Value,
    topology: Value,
    summary: Value,
}

impl Site {
    fn read(current: &Path) -> Option<Site> {
        let get = |f: &str| -> Option<Value> {
            serde_json::from_slice(&std::fs::read(current.join("api/v1").join(f)).ok()?).ok()
        };
        Some(Site {
            agents: util::published::published_agents(current)?,
            alarms: get("alarms.json")?,
            topology: get("topology.json")?,
            summary: get("summary.json")?,
        })
    }

    fn agent(&self, id: &str) -> Option<&Value> {
        self.agents["agents"].as_array()?.iter().find(|a| a["agent_id"] == id)
    }

    fn alarms(&self, kind: &str, agent: &str, state: &str) -> Vec<&Value> {
        self.alarms["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == kind && a["agent_id"] == agent && a["state"] == state)
            .collect()
    }

    fn active_alarms(&self) -> Vec<&Value> {
        self.alarms["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "active")
            .collect()
    }

    fn link(&self, kind: &str, x: &str, y: &str) -> Option<&Value> {
        self.topology["links"].as_array()?.iter().find(|l| {
            l["kind"] == kind && ((l["a"] == x && l["b"] == y) || (l["a"] == y && l["b"] == x))
        })
    }
}

/// Waits (up to 60 s) until the published site satisfies `check`, which
/// says what is still missing; panics with that on time-out.
fn wait_site(lab: &Lab, what: &str, mut check: impl FnMut(&Site) -> Result<(), String>) -> Site {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no site yet");
    loop {
        if let Some(site) = Site::read(&lab.current()) {
            match check(&site) {
                Ok(()) => return site,
                Err(e) => last = e,
            }
        }
        assert!(Instant::now() < deadline, "{what}: not on the site within 60 s; last: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn page(lab: &Lab, rel: &str) -> String {
    std::fs::read_to_string(lab.current().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The rejected-report counters in the receiver's metrics, summed.
fn rejected_total(lab: &Lab) -> (u64, String) {
    let metrics = lab.receiver_get("/metrics").expect("receiver answers /metrics");
    let lines: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("kattila_reports_rejected_total")).collect();
    let sum =
        lines.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() as u64;
    (sum, lines.join("\n"))
}

#[test]
fn mesh_of_namespaces_through_relay_link_failure_rotation_and_silence() {
    if let Some(reason) = skip_reason() {
        return kattila_testsupport::skip(
            "mesh_of_namespaces_through_relay_link_failure_rotation_and_silence",
            &reason,
        );
    }
    let key_one = format!("mesh-key-one-{}", std::process::id());
    let key_two = format!("mesh-key-two-{}", std::process::id());
    let mut lab = Lab::new();
    lab.start_wireguard(&[0, 1, 2]);
    lab.wait_handshakes();

    // hq: two dnsmasq views of the key record — one on hq's loopback for the
    // receiver, one on the underlay for the agents — so a rotation can reach
    // the receiver before the agents (see step 4).
    lab.start_dns("dns-receiver", "127.0.0.1", &key_one);
    lab.start_dns("dns-fleet", "192.0.2.1,198.51.100.1", &key_one);
    let hq = lab.hq.clone();
    let (db, out) = (lab.db.display().to_string(), lab.out.display().to_string());
    lab.spawn(
        "receiver",
        &hq,
        &[
            RECEIVER,
            "--listen",
            "0.0.0.0:5086",
            "--db",
            &db,
            "--dns",
            RECORD,
            "--dns-server",
            "127.0.0.1:53",
            "--key-refresh-secs",
            "1",
            "--interval-secs",
            RECEIVER_INTERVAL,
            "--alarm-threshold",
            "2",
            "--stale-after-secs",
            &STALE_AFTER.to_string(),
            "--sweep-secs",
            "0.5",
        ],
        &[("RUST_LOG", "info")],
    );
    util::wait_until("the receiver has the key from DNS", || {
        lab.receiver_get("/status/healthcheck").is_some_and(|h| {
            serde_json::from_str::<Value>(&h)
                .is_ok_and(|h| h["keys"]["count"] == 1 && h["status"] == "ok")
        })
    });
    lab.spawn(
        "sitegen",
        &hq,
        &[
            SITEGEN,
            "--watch",
            "--db",
            &db,
            "--out",
            &out,
            "--poll-ms",
            "200",
            "--refresh-secs",
            "5",
        ],
        &[("RUST_LOG", "info")],
    );
    for i in 0..lab.hosts.len() {
        lab.start_agent(i);
    }
    let ids: Vec<String> = (0..3).map(|i| lab.agent_id(i)).collect();
    let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let name_of =
        |id: &str| format!("mesh-{}", ["a", "b", "c"][ids.iter().position(|x| x == id).unwrap()]);

    // ── 1. Everyone reports directly ─────────────────────────────────────
    let site = wait_site(&lab, "step 1: all agents direct, full healthy mesh, no alarm", |s| {
        for id in &ids {
            let ag = s.agent(id).ok_or(format!("agent {id} missing"))?;
            if ag["status"] != "up"
                || ag["reachability"] != "direct"
                || ag["reports"].as_u64() < Some(3)
            {
                return Err(format!("agent {id}: {ag}"));
            }
        }
        for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
            let l = s.link("wireguard", x, y).ok_or(format!("no WireGuard link {x}–{y}"))?;
            if l["both_ends"] != true || l["health"] != "healthy" {
                return Err(format!("link {l}"));
            }
        }
        if !s.active_alarms().is_empty() {
            return Err(format!("active alarms: {:?}", s.active_alarms()));
        }
        Ok(())
    });
    assert_eq!(site.agents["agents"].as_array().unwrap().len(), 3);
    let hostnames: BTreeSet<&str> = site.agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hostnames, BTreeSet::from(["mesh-a", "mesh-b", "mesh-c"]));
    let sum = &site.summary["summary"];
    assert_eq!((sum["agents_up"].as_u64(), sum["agents_relay_only"].as_u64()), (Some(3), Some(0)));
    assert_eq!(
        (sum["links_one_sided"].as_u64(), sum["alarms_active"].as_u64()),
        (Some(0), Some(0))
    );
    // What the agents collected is the real network: a's WireGuard device
    // with its key, port and both peers, handshakes done.
    let agent_a = site.agent(&a).unwrap();
    let wg_a = &agent_a["wireguard"][0];
    assert_eq!(
        (wg_a["name"].as_str(), wg_a["public_key"].as_str()),
        (Some(lab.hosts[0].wg.as_str()), Some(lab.hosts[0].public.as_str()))
    );
    assert_eq!(wg_a["listen_port"], 51820);
    let peer_keys: BTreeSet<&str> = wg_a["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["public_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        peer_keys,
        BTreeSet::from([lab.hosts[1].public.as_str(), lab.hosts[2].public.as_str()])
    );
    // The matrix: every ordered pair of distinct agents a both-ends cell.
    let matrix = page(&lab, "matrix.html");
    for x in &ids {
        for y in ids.iter().filter(|y| *y != x) {
            let cell =
                format!("{} — {}: healthy; both ends list each other", name_of(x), name_of(y));
            assert!(matrix.contains(&cell), "matrix lacks «{cell}»");
        }
    }
    assert_eq!(matrix.matches("<td class=\"both ").count(), 6, "3 × 2 both-ends cells");

    // ── 2. c loses its underlay path to hq ───────────────────────────────
    let c_ns = lab.hosts[2].ns.clone();
    let reports_before = site.agent(&c).unwrap()["reports"].as_u64().unwrap();
    for addr in ["198.51.100.1/32", "192.0.2.1/32"] {
        sh(&["ip", "-n", &c_ns, "route", "add", "unreachable", addr]);
    }
    let cut_at = kattila_fleet::unix_now();
    let site = wait_site(
        &lab,
        "step 2: c reports through a relay, relay link and relay-only alarm",
        |s| {
            let ag = s.agent(&c).unwrap();
            if ag["reachability"] != "relay" || ag["relay_hops"] != 1 {
                return Err(format!("c: {ag}"));
            }
            let via = ag["via_agent"].as_str().unwrap_or_default();
            if via != a && via != b {
                return Err(format!("c relayed by {via}"));
            }
            s.link("relay", &c, via).ok_or(format!("no relay link c–{via}"))?;
            if s.alarms("relay_only", &c, "active").is_empty() {
                return Err("no active relay_only alarm for c".into());
            }
            if ag["reports"].as_u64() < Some(reports_before + 3) {
                return Err(format!("c: only {} reports", ag["reports"]));
            }
            Ok(())
        },
    );
    let via = site.agent(&c).unwrap()["via_agent"].as_str().unwrap().to_string();
    let c_page = page(&lab, &format!("agents/{c}.html"));
    assert!(
        c_page.contains("through 1 relay") && c_page.contains(&name_of(&via)),
        "c's page shows the relay"
    );
    assert!(site.summary["summary"]["agents_relay_only"] == 1);
    let alarm = &site.alarms("relay_only", &c, "active")[0];
    assert!(alarm["first_seen"].as_i64() >= Some(cut_at), "raised after the cut: {alarm}");
    // Nothing c reported was lost: its spool is empty and never dropped.
    let health = lab.agent_health(2);
    assert_eq!(health["path"]["state"], "relay", "{health}");
    assert_eq!(health["spool"]["dropped"], 0, "{health}");
    // c's reports reached the database through the relay, and none was refused.
    let relayed = util::stored_reports(&lab.db, &c)
        .into_iter()
        .filter(|r| r.2.as_deref() == Some(via.as_str()))
        .count();
    assert!(relayed >= 2, "{relayed} relayed reports stored");
    let (rejected, lines) = rejected_total(&lab);
    assert_eq!(rejected, 0, "no report refused so far: {lines}");

    // The path returns: c reports directly again and the alarm resolves.
    for addr in ["198.51.100.1/32", "192.0.2.1/32"] {
        sh(&["ip", "-n", &c_ns, "route", "del", "unreachable", addr]);
    }
    wait_site(&lab, "step 2: c direct again, relay-only resolved", |s| {
        let ag = s.agent(&c).unwrap();
        if ag["reachability"] != "direct" {
            return Err(format!("c: {}", ag["reachability"]));
        }
        if !s.alarms("relay_only", &c, "active").is_empty()
            || s.alarms("relay_only", &c, "resolved").is_empty()
        {
            return Err("relay_only not resolved".into());
        }
        Ok(())
    });
    let health = lab.agent_health(2);
    assert_eq!(
        (health["spool"]["reports"].as_u64(), health["spool"]["dropped"].as_u64()),
        (Some(0), Some(0)),
        "{health}"
    );

    // ── 3. a's WireGuard goes down, then comes back ──────────────────────
    // Stopping wireguard-go removes the interface, as `wg-quick down` does.
    // (Setting a wireguard-go link administratively down is not enough: it
    // keeps sending keepalives.)
    let (a_wg, a_pub) = (lab.hosts[0].wg.clone(), lab.hosts[0].public.clone());
    lab.stop(&format!("wireguard-go {a_wg}"));
    let down_at = kattila_fleet::unix_now();
    let site = wait_site(&lab, "step 3: stale-peer alarms for a on b and c", |s| {
        for x in [&b, &c] {
            let stale = s.alarms("peer_stale", x, "active");
            if !stale
                .iter()
                .any(|al| al["subject"].as_str().is_some_and(|sub| sub.contains(&a_pub)))
            {
                let seen = s.agent(x).map(|ag| ag["wireguard"].clone());
                return Err(format!(
                    "no active peer_stale for a's key on {x}; its WireGuard: {seen:?}"
                ));
            }
        }
        let gone = s.alarms("interface_gone", &a, "active");
        if !gone.iter().any(|al| al["subject"].as_str().is_some_and(|sub| sub.contains(&a_wg))) {
            return Err(format!("no active interface_gone for {a_wg} on a"));
        }
        // b's view of a: no longer healthy (the a–b link itself is now
        // b's alone: a's key belongs to no device any more).
        let peers = s.agent(&b).unwrap()["wireguard"][0]["peers"].clone();
        let view =
            peers.as_array().and_then(|ps| ps.iter().find(|p| p["public_key"] == a_pub.as_str()));
        if view.is_none_or(|p| p["health"] == "healthy") {
            return Err(format!("b still sees a healthy: {view:?}"));
        }
        Ok(())
    });
    for x in [&b, &c] {
        for al in site.alarms("peer_stale", x, "active") {
            assert!(
                al["first_seen"].as_i64() >= Some(down_at),
                "raised only after the peer went down: {al}"
            );
        }
    }
    let alarms_page = page(&lab, "alarms.html");
    assert!(
        alarms_page.contains("peer_stale") || alarms_page.contains("stale"),
        "alarms page lists the stale peer"
    );
    lab.start_wireguard(&[0]);
    lab.wait_handshakes();
    wait_site(&lab, "step 3: stale-peer alarms resolved, links healthy", |s| {
        if !s.alarms("interface_gone", &a, "active").is_empty() {
            return Err("interface_gone still active on a".into());
        }
        for x in [&b, &c] {
            if !s.alarms("peer_stale", x, "active").is_empty() {
                return Err(format!("peer_stale still active on {x}"));
            }
            if s.alarms("peer_stale", x, "resolved").is_empty() {
                return Err(format!("no resolved peer_stale on {x}"));
            }
        }
        for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
            let l = s.link("wireguard", x, y).ok_or("link missing")?;
            if l["health"] != "healthy" || l["both_ends"] != true {
                return Err(format!("link {l}"));
            }
        }
        Ok(())
    });

    // ── 4. Key rotation in DNS ───────────────────────────────────────────
    // The receiver's view changes first; once the receiver holds the new
    // key (and still the old one), the agents' view changes.
    let (rejected_before, _) = rejected_total(&lab);
    lab.stop("dns-receiver");
    lab.start_dns("dns-receiver", "127.0.0.1", &key_two);
    util::wait_until("the receiver picks up the new key", || {
        lab.receiver_get("/status/healthcheck")
            .and_then(|h| serde_json::from_str::<Value>(&h).ok())
            .is_some_and(|h| h["keys"]["count"] == 2)
    });
    lab.stop("dns-fleet");
    lab.start_dns("dns-fleet", "192.0.2.1,198.51.100.1", &key_two);
    for i in 0..3 {
        util::wait_until(&format!("agent {} picks up the new key", lab.hosts[i].name), || {
            let h = lab.agent_health(i);
            h["key"]["keys"] == 2 && h["key"]["degraded"] == false
        });
    }
    let rotated_at = kattila_fleet::unix_now();
    wait_site(&lab, "step 4: every agent reports with the new key", |s| {
        for id in &ids {
            let ag = s.agent(id).unwrap();
            if ag["last_seen"].as_i64() < Some(rotated_at + 2) || ag["status"] != "up" {
                return Err(format!("{id}: last_seen {}", ag["last_seen"]));
            }
        }
        Ok(())
    });
    let (rejected_after, lines) = rejected_total(&lab);
    assert_eq!(rejected_after, rejected_before, "no report refused during the rotation: {lines}");
    for i in 0..3 {
        let h = lab.agent_health(i);
        assert_eq!(h["spool"]["reports"], 0, "agent {} holds nothing back: {h}", lab.hosts[i].name);
    }
    let metrics = lab.receiver_get("/metrics").unwrap();
    assert!(
        metrics.contains("kattila_key_rotations_total 2"),
        "first key and one rotation: {metrics}"
    );

    // ── 5. An agent stops: the receiver's timer declares it silent ───────
    lab.stop("agent-a");
    let stopped_at = kattila_fleet::unix_now();
    let site = wait_site(&lab, "step 5: agent a silent", |s| {
        if s.alarms("agent_silent", &a, "active").is_empty() {
            return Err("no active agent_silent for a".into());
        }
        if s.agent(&a).unwrap()["status"] != "silent" {
            return Err(format!("a: {}", s.agent(&a).unwrap()["status"]));
        }
        Ok(())
    });
    let silent = &site.alarms("agent_silent", &a, "active")[0];
    assert_eq!(silent["severity"], "critical");
    assert!(
        silent["first_seen"].as_i64() > Some(stopped_at),
        "raised while a sent nothing: {silent}"
    );
    assert!(site.agent(&a).unwrap()["last_seen"].as_i64() <= Some(stopped_at));
    assert!(page(&lab, "index.html").contains("mesh-a"));
    for id in [&b, &c] {
        assert!(site.alarms("agent_silent", id, "active").is_empty());
    }

    // ── The site in a browser, served by nginx ──────────────────────────
    // (Before step 6, so that the browser's verdict is known even when
    // step 6 fails.)
    match browser::skip_reason() {
        Some(reason) => kattila_testsupport::skip(
            "mesh_of_namespaces_through_relay_link_failure_rotation_and_silence (browser part)",
            &reason,
        ),
        None => {
            browser::check_site(&lab.out, "mesh_scenario");
        }
    }

    // ── 6. No address of the test network anywhere in the site ──────────
    let secrets = network_addresses(&lab);
    assert!(secrets.len() > 20, "{secrets:?}");
    let leaks = find_addresses(&lab.current(), &secrets);
    if !leaks.is_empty() {
        // Keep the evidence: the lab and its site are deleted when the test ends.
        let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts/mesh_scenario-leak");
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::create_dir_all(&keep).unwrap();
        sh(&["cp", "-a", &format!("{}/.", lab.current().display()), &keep.display().to_string()]);
        eprintln!("the site with the leaks is kept in {}", keep.display());
    }
    assert!(leaks.is_empty(), "real addresses in the published site: {leaks:?}");
    // WireGuard private keys and the fleet keys reach neither the database nor the site.
    for secret in
        lab.hosts.iter().map(|h| h.private.as_str()).chain([key_one.as_str(), key_two.as_str()])
    {
        assert!(
            !any_file_contains(&lab.current().canonicalize().unwrap(), secret.as_bytes()),
            "a key is in the site"
        );
        for f in [lab.db.clone(), lab.db.with_extension("db-wal")] {
            assert!(
                !f.exists() || !any_file_contains(&f, secret.as_bytes()),
                "a key is in {}",
                f.display()
            );
        }
    }
    // The same search finds them in a site built with --reveal-addresses,
    // so it would have found a leak.
    let revealed = lab.dir.path().join("revealed");
    let (code, _, stderr) = util::run(
        SITEGEN,
        &["--once", "--reveal-addresses", "--db", &db, "--out", revealed.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let found = find_addresses(&revealed.join("current"), &secrets);
    for must in ["192.0.2.2", "198.51.100.2", "203.0.113.2", "10.99.0.3", "2001:db8:c::2"] {
        assert!(
            found.iter().any(|(_, addr, _)| addr == must),
            "{must} not found in the revealed site: {found:?}"
        );
    }
}

/// Every address on the test network: IPv4 and IPv6 addresses of every
/// interface in every namespace, their networks, and the MAC addresses.
fn network_addresses(lab: &Lab) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for ns in lab.namespaces() {
        let json: Value =
            serde_json::from_str(&sh(&["ip", "-n", &ns, "-j", "addr", "show"])).unwrap();
        for link in json.as_array().unwrap() {
            if let Some(mac) = link["address"].as_str() {
                if mac.len() == 17 && mac != "00:00:00:00:00:00" {
                    set.insert(mac.to_lowercase());
                }
            }
            for info in link["addr_info"].as_array().into_iter().flatten() {
                let (Some(local), Some(prefix)) =
                    (info["local"].as_str(), info["prefixlen"].as_u64())
                else {
                    continue;
                };
                let ip: IpAddr = local.parse().unwrap();
                // Loopback and the like name no host and are published as
                // they are (docs/sitegen.md, "Anonymisation").
                if kattila_fleet::AddressClass::of(&ip) == kattila_fleet::AddressClass::NoHost {
                    continue;
                }
                set.insert(ip.to_string());
                let net = match ip {
                    IpAddr::V4(v4) => {
                        let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
                        IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
                    }
                    IpAddr::V6(v6) => {
                        let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
                        IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                    }
                };
                // A link-local network (fe80::/64) is the prefix every host
                // has, kept on purpose; its hosts' addresses are not.
                let link_local_prefix = matches!(
                    kattila_fleet::AddressClass::of(&net),
                    kattila_fleet::AddressClass::LinkLocal { prefix: block } if prefix <= u64::from(block)
                );
                if !net.is_unspecified() && !link_local_prefix {
                    set.insert(net.to_string());
                }
            }
        }
    }
    set
}

/// (file, address, context) for every whole-token occurrence of an address of
/// `needles` in a file (name or content) under `dir`; IPv4 addresses also
/// in the dashed form used in file names and ids (192-0-2-0).
fn find_addresses(dir: &Path, needles: &BTreeSet<String>) -> Vec<(String, String, String)> {
    let root = dir.canonicalize().unwrap();
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_lowercase();
            for needle in needles {
                let dashed = needle.replace('.', "-");
                let is_v4 = needle.parse::<Ipv4Addr>().is_ok();
                for hay in [&text, &name] {
                    let at = token_at(hay, needle, false)
                        .or_else(|| is_v4.then(|| token_at(hay, &dashed, true)).flatten());
                    if let Some(i) = at {
                        let mut from = i.saturating_sub(40);
                        while !hay.is_char_boundary(from) {
                            from -= 1;
                        }
                        let mut to = (i + needle.len() + 40).min(hay.len());
                        while !hay.is_char_boundary(to) {
                            to += 1;
                        }
                        found.push((name.clone(), needle.clone(), hay[from..to].to_string()));
                        break;
                    }
                }
            }
        }
    }
    found
}

/// Where `needle` occurs in `text` other than as part of a longer address
/// or number. `dashed`: the needle is an address written with dashes.
fn token_at(text: &str, needle: &str, dashed: bool) -> Option<usize> {
    let bytes = text.as_bytes();
    text.match_indices(needle).map(|(i, _)| i).find(|&i| {
        let m = needle;
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + m.len()).copied();
        let after2 = bytes.get(i + m.len() + 1).copied();
        if dashed {
            let digit = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit());
            // "net-192-0-2-0-24": a dash then the prefix length may follow.
            return !digit(before) && !digit(after);
        }
        let part = |b: u8| b.is_ascii_hexdigit() || b == b':';
        let before_ok = !before.is_some_and(|b| part(b) || b == b'.');
        let longer_v4 = after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_digit());
        let after_ok = !after.is_some_and(part) && !longer_v4;
        before_ok && after_ok
    })
}

/// Whether any file under `dir` (or the file `dir` itself) contains `needle`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    if dir.is_file() {
        return std::fs::read(dir).unwrap().windows(needle.len()).any(|w| w == needle);
    }
    std::fs::read_dir(dir).unwrap().any(|e| any_file_contains(&e.unwrap().path(), needle))
}
