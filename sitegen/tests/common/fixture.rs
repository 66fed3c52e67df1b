//! Fixture databases for sitegen's tests and benchmarks: the receiver's real
//! schema (created by `kattila_store::open`) filled with a realistic
//! fleet by SQL, following the column comments of the receiver's migrations.
//!
//! The fleet: sites of five agents (a gateway and four nodes, names like the
//! simulator's `site3-gw00`), each site on its own LAN (IPv4 /24 and IPv6
//! /64), all on a WireGuard network 10.99.0.0/16. Nodes peer with their
//! gateway and the next node; gateways with the neighbouring gateways and
//! three core gateways. Some links are stale, never handshaken or listed by
//! one end only; some gateways have external peers; some agents are silent
//! or reachable only through a relay; alarms are active and resolved.
//!
//! Agent statuses and the topology edges are stored as the receiver
//! decides and infers them: sitegen shows them and derives neither. As the
//! receiver does, every peer entry and link with a silent end (and the
//! external peers and relay links of a silent agent) is stored `unknown`:
//! what a silent agent last said is no evidence that a link works now.
//! (Relay links stay as the receiver writes them: `healthy` when used.)
#![allow(dead_code)]

use std::path::Path;

use rusqlite::params;

pub const SITE_SIZE: usize = 5;

#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub agents: usize,
    pub now: i64,
    /// Resolved alarms in the history.
    pub resolved_alarms: usize,
    /// History samples per agent (every 5 minutes).
    pub samples: usize,
    /// Give a few agents hostile names and strings.
    pub hostile: bool,
    /// A site whose agents are all silent.
    pub silent_site: Option<usize>,
    /// The second agent reports the first one's hostname.
    pub duplicate_hostname: bool,
    /// Agents report site labels ("dc-00", "dc-01", … by site).
    pub site_labels: bool,
    /// Agents per site (one /24 each, so one cluster each): the tests'
    /// [`SITE_SIZE`] by default; larger for fleets of fewer, larger sites.
    pub site_size: usize,
    /// Extra peers in other sites per agent, as in meshes where nodes talk
    /// across sites directly (0: only gateways link sites).
    pub cross_links: usize,
}

impl FleetSpec {
    pub fn new(agents: usize) -> FleetSpec {
        FleetSpec {
            agents,
            now: 1_767_225_600,
            resolved_alarms: 12,
            samples: 24,
            hostile: false,
            silent_site: None,
            duplicate_hostname: false,
            site_labels: false,
            site_size: SITE_SIZE,
            cross_links: 0,
        }
    }
}

/// What went into the database, for checks.
#[derive(Debug, Default, Clone)]
pub struct Fixture {
    pub agent_ids: Vec<String>,
    pub hostnames: Vec<String>,
    /// Every IP address stored anywhere, without prefix or port.
    pub addresses: Vec<String>,
    pub macs: Vec<String>,
}

pub const HOSTILE_HOSTNAMES: &[&str] = &[
    "<script>alert('x')</script>",
    "../../etc/passwd\"'&<b>\u{7}\u{1b}[31m",
    "host-10.20.0.11-<i>",
];

/// Characters that display as nothing or turn the text around them (NUL,
/// BEL, ESC, DEL, two C1 controls, ZERO WIDTH SPACE, LEFT-TO-RIGHT ISOLATE
/// and RIGHT-TO-LEFT OVERRIDE, the last two never closed): the hostile
/// fleet puts them in every string one agent reports.
pub const HIDDEN: &[char] =
    &['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{200b}', '\u{2066}', '\u{202e}'];

/// The agent of the hostile fleet whose every reported string is
/// [`hidden_text`].
pub const HIDDEN_AGENT: usize = 6;

/// `what` followed by every [`HIDDEN`] character and a right-to-left
/// word, as a hostile agent reports it.
pub fn hidden_text(what: &str) -> String {
    let hidden: String = HIDDEN.iter().collect();
    format!("{what}-{hidden}-שרת")
}

pub fn agent_id(i: usize) -> String {
    format!("{:032x}", (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

pub fn hostname(i: usize, hostile: bool) -> String {
    hostname_sized(i, hostile, SITE_SIZE)
}

/// The hostname of agent `i` in a fleet of sites of `ss` agents.
pub fn hostname_sized(i: usize, hostile: bool, ss: usize) -> String {
    if hostile && i == HIDDEN_AGENT {
        return hidden_text("host");
    }
    if hostile && i >= 1 && i <= HOSTILE_HOSTNAMES.len() {
        return HOSTILE_HOSTNAMES[i - 1].to_string();
    }
    if hostile && i == HOSTILE_HOSTNAMES.len() + 1 {
        return "Ωmega-ノード-".repeat(14);
    }
    let site = i / ss;
    let role = if i.is_multiple_of(ss) { "gw" } else { "node" };
    format!("site{site}-{role}{:02}", i % ss)
}

fn wg_key(i: usize) -> String {
    // 44 characters like a base64 WireGuard key; stable per index.
    format!("{:0>42}{}=", format!("{:x}", (i as u64 + 7).wrapping_mul(0x2545_f491_4f6c_dd1d)), "Kq")
}

fn eth_v4(i: usize, ss: usize) -> String {
    let site = i / ss;
    format!("10.{}.{}.{}", 20 + site / 256, site % 256, i % ss + 10)
}

fn eth_v6(i: usize, ss: usize) -> String {
    format!("2001:db8:{:x}::{:x}", i / ss, i % ss + 10)
}

fn wg_v4(i: usize) -> String {
    format!("10.99.{}.{}", i / 250, i % 250 + 1)
}

fn mac(i: usize) -> String {
    format!("52:54:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Peers of every agent (both directions), bounded degree.
pub fn mesh(n: usize) -> Vec<Vec<usize>> {
    mesh_sized(n, SITE_SIZE)
}

/// [`mesh`] with sites of `ss` agents: nodes peer with their gateway and
/// the next node, gateways as in [`mesh`].
pub fn mesh_sized(n: usize, ss: usize) -> Vec<Vec<usize>> {
    mesh_dense(n, ss, 0)
}

/// [`mesh_sized`], and every agent peers with `cross` agents of other
/// sites, spread over the fleet (the same fleet every time).
pub fn mesh_dense(n: usize, ss: usize, cross: usize) -> Vec<Vec<usize>> {
    let mut peers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut link = |a: usize, b: usize| {
        if a != b && a < n && b < n && !peers[a].contains(&b) {
            peers[a].push(b);
            peers[b].push(a);
        }
    };
    let sites = n.div_ceil(ss);
    for i in 0..n {
        let hub = i / ss * ss;
        link(i, hub);
        if i % ss != 0 && (i + 1) % ss != 0 {
            link(i, i + 1);
        }
    }
    for s in 0..sites {
        let hub = s * ss;
        if sites > 1 {
            link(hub, (s + 1) % sites * ss);
        }
        for core in 0..3.min(sites) {
            link(hub, core * ss);
        }
    }
    if sites > 1 {
        for i in 0..n {
            for k in 0..cross {
                let j = (i * 2_654_435_761 + (k + 1) * 40_503 * ss) % n;
                if j / ss != i / ss {
                    link(i, j);
                }
            }
        }
    }
    peers
}

fn pair_seed(a: usize, b: usize) -> usize {
    a.min(b) * 7919 + a.max(b) * 104_729
}

/// Creates the database at `path` and fills it.
pub fn create(path: &Path, spec: &FleetSpec) -> Fixture {
    let mut conn = kattila_store::open(path).expect("receiver schema");
    conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let n = spec.agents;
    let now = spec.now;
    let ss = spec.site_size;
    let peers = mesh_dense(n, ss, spec.cross_links);
    let mut fx = Fixture::default();
    let tx = conn.transaction().unwrap();
    {
        let mut ins_agent = tx
            .prepare(
                "INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen,
                 last_observed_at, last_tick, relay_hops, via_agent, kernel, uptime_secs, load1, load5,
                 load15, spool_dropped, collect_errors, reachability, reports, status)
                 VALUES (?1, ?2, ?14, ?3, ?4, ?4, ?5, ?6, ?7, ?15, ?8, ?9, ?10, ?11, 0, ?12, ?13, ?5, ?16)",
            )
            .unwrap();
        let mut ins_if = tx
            .prepare(
                "INSERT INTO interfaces (agent_id, name, kind, state, mtu, mac, addresses, rx_bytes,
                 tx_bytes, rx_errors, tx_errors, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, ?10, ?11)",
            )
            .unwrap();
        let mut ins_route = tx
            .prepare(
                "INSERT INTO routes (agent_id, dst, gateway, dev, metric, table_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        let mut ins_dev = tx
            .prepare("INSERT INTO wg_devices (agent_id, name, public_key, listen_port) VALUES (?1, ?3, ?2, 51820)")
            .unwrap();
        let mut ins_peer = tx
            .prepare(
                "INSERT INTO wg_peers (agent_id, device, public_key, peer_agent_id, endpoint, allowed_ips,
                 latest_handshake, rx_bytes, tx_bytes, persistent_keepalive, rx_grew_at, health, first_seen, last_seen)
                 VALUES (?1, ?13, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 25, ?9, ?10, ?11, ?12)",
            )
            .unwrap();
        let mut ins_hist = tx
            .prepare(
                "INSERT INTO history (agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        let mut ins_edge = tx
            .prepare(
                "INSERT INTO topology_edges (kind, a_agent, b_agent, b_external, both_ends, health, handshake_age,
                 detail, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();
        let mut ins_alarm = tx
            .prepare(
                "INSERT INTO alarms (kind, severity, agent_id, subject, message, state, first_seen, last_seen,
                 resolved_at, acked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();

        let ids: Vec<String> = (0..n)
            .map(
                |i| if spec.hostile && i == 4 { "Evil..Agent-ID".to_string() } else { agent_id(i) },
            )
            .collect();
        let silent = |i: usize| i % 37 == 36 || spec.silent_site == Some(i / ss);
        let relayed = |i: usize| i % 41 == 40 && !silent(i);
        // One-sided: the higher index does not list the lower one.
        let one_sided = |a: usize, b: usize| pair_seed(a, b).is_multiple_of(23);
        let pair_health = |a: usize, b: usize| match pair_seed(a, b) % 53 {
            0 => "never",
            s if s % 17 == 0 => "stale",
            _ => "healthy",
        };
        // The health the receiver stores for the peer entry or link of
        // `a` and `b` (`down` instead of `never` for links).
        let stored_health = |a: usize, b: usize| {
            if silent(a) || silent(b) {
                "unknown"
            } else {
                pair_health(a, b)
            }
        };
        let handshake = |a: usize, b: usize| match pair_health(a, b) {
            "never" => None,
            "stale" => Some(now - 900 - (pair_seed(a, b) % 600) as i64),
            _ => Some(now - (pair_seed(a, b) % 110) as i64),
        };
        for i in 0..n {
            let site = i / ss;
            let host = if spec.duplicate_hostname && i == 2 {
                hostname_sized(1, spec.hostile, ss)
            } else {
                hostname_sized(i, spec.hostile, ss)
            };
            // Every string the hidden agent reports is hostile.
            let hidden = spec.hostile && i == HIDDEN_AGENT;
            let text = |plain: &str| if hidden { hidden_text(plain) } else { plain.to_string() };
            let (eth, wg_dev) = (text("eth0"), text("wg0"));
            let last_seen = if silent(i) { now - 3600 } else { now - (i % 30) as i64 };
            let via = relayed(i).then(|| ids[site * ss].clone()).filter(|v| *v != ids[i]);
            let load = 0.2 + (i % 7) as f64 * 0.3;
            ins_agent
                .execute(params![
                    ids[i],
                    host,
                    now - 86_400 * 30,
                    last_seen,
                    1000 + i as i64,
                    if via.is_some() { 1 } else { 0 },
                    via,
                    86_400 * (1 + i as i64 % 30),
                    load,
                    load * 0.8,
                    load * 0.6,
                    if i % 29 == 3 {
                        r#"[{"source":"wireguard","message":"no device at 10.20.0.12"}]"#.to_string()
                    } else if hidden {
                        serde_json::json!([{"source": text("netlink"), "message": text("no route")}])
                            .to_string()
                    } else {
                        "[]".to_string()
                    },
                    if via.is_some() { "relay" } else { "direct" },
                    text("0.1.0"),
                    text("6.1.0-28-amd64"),
                    // As the receiver decides it.
                    if silent(i) {
                        "silent"
                    } else if via.is_some() {
                        "relay"
                    } else {
                        "up"
                    },
                ])
                .unwrap();
            fx.agent_ids.push(ids[i].clone());
            fx.hostnames.push(host);
            let (v4, v6, wg) = (eth_v4(i, ss), eth_v6(i, ss), wg_v4(i));
            let eth_name =
                if spec.hostile && i == 2 { "<img src=x onerror=alert(1)>" } else { eth.as_str() };
            let (ether, up, down) = (text("ether"), text("up"), text("down"));
            #[allow(clippy::type_complexity)]
            let ifaces: [(&str, &str, &str, i64, Option<String>, Vec<String>); 3] = [
                (
                    "lo",
                    "loopback",
                    "unknown",
                    65536,
                    None,
                    vec!["127.0.0.1/8".into(), "::1/128".into()],
                ),
                (
                    eth_name,
                    &ether,
                    if i % 31 == 7 { &down } else { &up },
                    1500,
                    Some(mac(i)),
                    vec![format!("{v4}/24"), format!("{v6}/64")],
                ),
                (&wg_dev, "wireguard", "unknown", 1420, None, vec![format!("{wg}/16")]),
            ];
            for (name, kind, state, mtu, m, addrs) in ifaces {
                ins_if
                    .execute(params![
                        ids[i],
                        name,
                        kind,
                        state,
                        mtu,
                        m,
                        serde_json::to_string(&addrs).unwrap(),
                        1_000_000 * (i as i64 + 1),
                        700_000 * (i as i64 + 1),
                        now - 86_400,
                        last_seen
                    ])
                    .unwrap();
                if let Some(m) = m {
                    fx.macs.push(m);
                }
            }
            fx.addresses.extend([v4.clone(), v6.clone(), wg.clone()]);
            let gw = format!("10.{}.{}.1", 20 + site / 256, site % 256);
            let lan = format!("10.{}.{}.0", 20 + site / 256, site % 256);
            fx.addresses.extend([gw.clone(), lan.clone()]);
            for (dst, gateway, dev, metric, table) in [
                ("0.0.0.0/0".to_string(), Some(gw.clone()), &eth, Some(100), 254),
                (format!("{lan}/24"), None, &eth, Some(100), 254),
                ("10.99.0.0/16".to_string(), None, &wg_dev, None, 254),
                (format!("{v4}/32"), None, &eth, None, 255),
            ] {
                ins_route.execute(params![ids[i], dst, gateway, dev, metric, table]).unwrap();
            }
            ins_dev.execute(params![ids[i], wg_key(i), wg_dev]).unwrap();
            let mut healthy = 0;
            for &p in &peers[i] {
                if one_sided(i, p) && i > p {
                    continue;
                }
                let h = stored_health(i, p);
                if h == "healthy" {
                    healthy += 1;
                }
                let hs = handshake(i, p);
                ins_peer
                    .execute(params![
                        ids[i],
                        wg_key(p),
                        ids[p],
                        format!("{}:51820", eth_v4(p, ss)),
                        serde_json::to_string(&[format!("{}/32", wg_v4(p))]).unwrap(),
                        hs,
                        5000 + pair_seed(i, p) as i64,
                        4000 + pair_seed(i, p) as i64,
                        hs,
                        h,
                        now - 86_400,
                        last_seen,
                        wg_dev,
                    ])
                    .unwrap();
            }
            // External peers on every tenth gateway.
            if i % (ss * 10) == 0 {
                let ext = format!("198.51.100.{}", i / (ss * 10) % 250 + 1);
                let v6ext = format!("2001:db8:ffff::{:x}", i + 1);
                fx.addresses.extend([ext.clone(), v6ext.clone()]);
                ins_peer
                    .execute(params![
                        ids[i],
                        format!("EXTERNAL{:036}=", i),
                        Option::<String>::None,
                        format!("[{v6ext}]:51820"),
                        serde_json::to_string(&[format!("{ext}/32"), "192.0.2.0/24".to_string()])
                            .unwrap(),
                        now - 60,
                        100,
                        200,
                        now - 60,
                        if silent(i) { "unknown" } else { "healthy" },
                        now - 86_400,
                        last_seen,
                        wg_dev,
                    ])
                    .unwrap();
                fx.addresses.push("192.0.2.0".into());
                ins_edge
                    .execute(params![
                        "wireguard",
                        ids[i],
                        "",
                        format!("EXTERNAL{:036}=", i),
                        0,
                        if silent(i) { "unknown" } else { "healthy" },
                        60,
                        Option::<String>::None,
                        now - 86_400,
                        now
                    ])
                    .unwrap();
            }
            for k in 0..spec.samples {
                let ts = now - (spec.samples - k) as i64 * 300;
                ins_hist
                    .execute(params![
                        ids[i],
                        ts,
                        load + (k % 5) as f64 * 0.1,
                        2000.0 + (k * 37 % 500) as f64,
                        1500.0 + (k * 53 % 400) as f64,
                        30 + (k * 13 % 90) as i64,
                        healthy,
                        peers[i].len() as i64
                    ])
                    .unwrap();
            }
            for &p in peers[i].iter().filter(|&&p| p > i) {
                let (a, b) = if ids[i] < ids[p] { (i, p) } else { (p, i) };
                let h = match stored_health(i, p) {
                    "never" => "down",
                    h => h,
                };
                let age = handshake(i, p).map(|t| now - t);
                ins_edge
                    .execute(params![
                        "wireguard",
                        ids[a],
                        ids[b],
                        "",
                        !one_sided(i, p),
                        h,
                        age,
                        Option::<String>::None,
                        now - 86_400,
                        now
                    ])
                    .unwrap();
            }
            if let Some(v) = via_of(i, &ids, relayed, ss) {
                ins_edge
                    .execute(params![
                        "relay",
                        v,
                        ids[i],
                        "",
                        0,
                        "healthy",
                        Option::<i64>::None,
                        Option::<String>::None,
                        now - 3600,
                        now
                    ])
                    .unwrap();
            }
            if silent(i) {
                ins_alarm
                    .execute(params![
                        "agent_silent",
                        "critical",
                        ids[i],
                        "",
                        "no report for 60 min",
                        "active",
                        now - 3000,
                        now,
                        Option::<i64>::None,
                        Option::<i64>::None
                    ])
                    .unwrap();
            }
            if relayed(i) {
                ins_alarm
                    .execute(params![
                        "relay_only",
                        "warning",
                        ids[i],
                        "",
                        "reachable only through relays",
                        "active",
                        now - 1200,
                        now,
                        Option::<i64>::None,
                        Some(now - 600)
                    ])
                    .unwrap();
            }
            if hidden {
                ins_alarm
                    .execute(params![
                        "interface_down",
                        "warning",
                        ids[i],
                        eth,
                        format!("{eth} is down ({})", text("carrier lost")),
                        "active",
                        now - 700,
                        now,
                        Option::<i64>::None,
                        Option::<i64>::None
                    ])
                    .unwrap();
            }
            if i % 31 == 7 {
                ins_alarm
                    .execute(params![
                        "interface_down",
                        "warning",
                        ids[i],
                        "eth0",
                        format!("eth0 is down (had {v4}/24)"),
                        "active",
                        now - 700,
                        now,
                        Option::<i64>::None,
                        Option::<i64>::None
                    ])
                    .unwrap();
            }
        }
        for k in 0..spec.resolved_alarms {
            if n == 0 {
                break;
            }
            let i = k * 7 % n;
            let from = eth_v4((i + 1) % n, ss);
            let to = format!("192.0.2.{}", k % 250 + 1);
            fx.addresses.push(to.clone());
            let first = now - 86_400 + k as i64 * 60;
            ins_alarm
                .execute(params![
                    "endpoint_changed",
                    if k % 3 == 0 { "info" } else { "warning" },
                    ids[i],
                    wg_key((i + 1) % n),
                    format!(
                        "endpoint changed from {from}:51820 to {to}:51820 ([{}]:51820)",
                        eth_v6((i + 1) % n, ss)
                    ),
                    "resolved",
                    first,
                    first + 300,
                    Some(first + 300 + k as i64),
                    if k % 2 == 0 { Some(first + 100) } else { None },
                ])
                .unwrap();
        }
    }
    // last_tick is 1000 + the agent's number (see above): its site by number.
    if spec.site_labels {
        tx.execute(
            "UPDATE agents SET site = 'dc-' || printf('%02d', (last_tick - 1000) / ?1)",
            [ss as i64],
        )
        .unwrap();
    }
    // The receiver's sweep groups the silent site into one incident
    // (receiver/src/process/incidents.rs); stored here as it would be, its
    // site named by kattila_fleet::site_of: the label, else the LAN.
    if let Some(s) = spec.silent_site {
        let site = if spec.site_labels {
            format!("dc-{s:02}")
        } else {
            format!("10.{}.{}.0/24", 20 + s / 256, s % 256)
        };
        let members: Vec<&String> =
            fx.agent_ids.iter().skip(s * SITE_SIZE).take(SITE_SIZE).collect();
        tx.execute(
            "INSERT INTO incidents (kind, site, severity, summary, agents, state, first_seen, last_seen)
             VALUES ('site_silent', ?1, 'critical', ?2, ?3, 'active', ?4, ?5)",
            params![
                site,
                format!("all {} agents silent", members.len()),
                serde_json::to_string(&members).unwrap(),
                now - 3000,
                now
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    // Loopback addresses (127.0.0.1/8, ::1/128 on every agent) name no
    // host and are published as they are; see sitegen/src/pseudonym.rs.
    fx.addresses.sort();
    fx.addresses.dedup();
    fx
}

fn via_of(i: usize, ids: &[String], relayed: impl Fn(usize) -> bool, ss: usize) -> Option<String> {
    let hub = i / ss * ss;
    (relayed(i) && hub != i).then(|| ids[hub].clone())
}

/// Every textual form of an address worth searching for: as stored, the
/// canonical form and, for IPv6, the fully expanded and upper-case forms.
pub fn textual_forms(addr: &str) -> Vec<String> {
    let mut forms = vec![addr.to_string()];
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => forms.push(v4.to_string()),
        Ok(std::net::IpAddr::V6(v6)) => {
            forms.push(v6.to_string());
            let seg = v6.segments();
            forms.push(seg.iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":"));
            forms.push(seg.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":"));
            forms.push(v6.to_string().to_uppercase());
        }
        Err(_) => {}
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Occurrences of `needle` in `hay` that stand alone (not part of a longer
/// number or address).
pub fn find_standalone(hay: &str, needle: &str) -> Option<usize> {
    let is_part =
        |c: u8| c.is_ascii_hexdigit() || c == b':' || (c == b'.' && !needle.contains(':'));
    let bytes = hay.as_bytes();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let at = from + pos;
        let end = at + needle.len();
        let before_ok = at == 0 || !is_part(bytes[at - 1]);
        let after_ok = end >= bytes.len()
            || !(bytes[end].is_ascii_hexdigit()
                || bytes[end] == b':'
                || (bytes[end] == b'.' && bytes.get(end + 1).is_some_and(|c| c.is_ascii_digit())));
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 1;
    }
    None
}
