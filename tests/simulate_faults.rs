//! The simulator's faults against a real receiver: `simulate::run` (what
//! `kattila-agent simulate --faults demo` runs) sends one report per agent
//! per second to the receiver's own `serve` on port 0 with a real SQLite
//! file, and what the receiver decided is read back with plain SQL. A round
//! is one second here, so the demo cycle's first 25 rounds — every fault
//! started, the silent site and the gateway back — take under half a minute.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kattila_agent::simulate::{
    self, site_label, Fault, Scenario, Schedule, SimFleet, SimOptions, SimStats, SITE_SIZE,
};
use kattila_proto::Psk;
use kattila_receiver::config::Config;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

const PSK: &str = "simulate-faults-key";
const SEED: &str = "kattila-demo";
const AGENTS: usize = 20;
/// Past the silent site's return (round 21) with a few reports to spare.
const ROUNDS: u64 = 25;

/// What the schedule says the receiver must see, as agent ids.
struct Expect {
    silent_site: Vec<String>,
    /// The site labels of the silent site and of the gateway's site.
    silent_label: String,
    gateway_label: String,
    down_gateway: String,
    relayed: Vec<String>,
    /// Gateways that may relay for the cut-off site (all but its own).
    relayers: HashSet<String>,
    stale: (String, String),
    one_sided: (String, String),
    /// The agents that peer with the one whose endpoint moves.
    see_move: Vec<String>,
    flapping: String,
    /// An agent no fault touches in these rounds, and its gateway.
    control: (String, String),
}

/// The first fault of the demo's first rounds that `f` picks out.
fn pick<T>(schedule: &Schedule, f: impl Fn(Fault) -> Option<T>) -> T {
    schedule
        .windows
        .iter()
        .filter(|w| w.from < ROUNDS)
        .find_map(|w| f(w.fault))
        .expect("the demo schedule has this fault in its first rounds")
}

fn expect(fleet: &SimFleet) -> Expect {
    let schedule = Scenario::Demo.schedule(fleet);
    let id = |i: usize| fleet.agents[i].agent_id.clone();
    let silent = pick(&schedule, |f| match f {
        Fault::SiteSilent { site } => Some(site),
        _ => None,
    });
    let gateway_site = pick(&schedule, |f| match f {
        Fault::GatewayDown { site } => Some(site),
        _ => None,
    });
    let stale = pick(&schedule, |f| match f {
        Fault::StaleLink { a, b } => Some((a, b)),
        _ => None,
    });
    let one_sided = pick(&schedule, |f| match f {
        Fault::OneSided { remover, removed } => Some((remover, removed)),
        _ => None,
    });
    let mover = pick(&schedule, |f| match f {
        Fault::EndpointMoved { agent } => Some(agent),
        _ => None,
    });
    let flapping = pick(&schedule, |f| match f {
        Fault::Flapping { agent } => Some(agent),
        _ => None,
    });
    let site_agents = |site: usize| (site * SITE_SIZE..(site + 1) * SITE_SIZE).map(id).collect();
    // Touched by a fault of these rounds: the agents named, their sites'
    // gateways relaying or down, the silent site.
    let touched: HashSet<usize> = [stale.0, stale.1, one_sided.0, one_sided.1, mover, flapping]
        .into_iter()
        .chain((silent * SITE_SIZE..(silent + 1) * SITE_SIZE).chain([gateway_site * SITE_SIZE]))
        .collect();
    let control = (0..AGENTS)
        .find(|&i| {
            i % SITE_SIZE != 0
                && !touched.contains(&i)
                && fleet.agents[i].peers.iter().all(|p| !touched.contains(p))
                && !touched.contains(&SimFleet::gateway(fleet.agents[i].site))
        })
        .expect("an untouched agent");
    Expect {
        silent_site: site_agents(silent),
        silent_label: site_label(silent),
        gateway_label: site_label(gateway_site),
        down_gateway: id(SimFleet::gateway(gateway_site)),
        relayed: (gateway_site * SITE_SIZE + 1..(gateway_site + 1) * SITE_SIZE).map(id).collect(),
        relayers: (0..fleet.sites())
            .filter(|&s| s != gateway_site)
            .map(|s| id(SimFleet::gateway(s)))
            .collect(),
        stale: (id(stale.0), id(stale.1)),
        one_sided: (id(one_sided.0), id(one_sided.1)),
        see_move: fleet.agents[mover].peers.iter().map(|&p| id(p)).collect(),
        flapping: id(flapping),
        control: (id(control), id(SimFleet::gateway(fleet.agents[control].site))),
    }
}

fn read_only(db: &Path) -> Connection {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// How the receiver last heard from an agent.
struct Heard {
    status: String,
    reachability: String,
    relay_hops: i64,
    via_agent: Option<String>,
}

fn status(c: &Connection, agent: &str) -> Option<Heard> {
    c.query_row(
        "SELECT status, reachability, relay_hops, via_agent FROM agents WHERE agent_id = ?1",
        [agent],
        |r| {
            Ok(Heard {
                status: r.get(0)?,
                reachability: r.get(1)?,
                relay_hops: r.get(2)?,
                via_agent: r.get(3)?,
            })
        },
    )
    .optional()
    .unwrap()
}

fn count(c: &Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    c.query_row(sql, params, |r| r.get(0)).unwrap()
}

fn peer_health(c: &Connection, agent: &str, peer: &str) -> Option<String> {
    c.query_row(
        "SELECT health FROM wg_peers WHERE agent_id = ?1 AND peer_agent_id = ?2",
        [agent, peer],
        |r| r.get(0),
    )
    .optional()
    .unwrap()
}

/// States that hold only while their fault does, latched as they are seen.
#[derive(Debug, Default)]
struct Seen {
    site_silent: bool,
    site_back: bool,
    gateway_silent: bool,
    relayed: bool,
    direct_again: bool,
    /// Links and peers shown healthy while an end was silent (must stay
    /// empty: the receiver decides that such a link is not known to work).
    healthy_with_a_silent_end: Vec<String>,
    /// (kind, site, agents) of every incident seen active.
    incidents: HashSet<(String, String, String)>,
}

impl Seen {
    fn poll(&mut self, c: &Connection, e: &Expect) {
        let lies = |sql: &str| -> Vec<String> {
            let mut stmt = c.prepare(sql).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        // One snapshot of both tables, as a reader sees them.
        c.execute_batch("BEGIN").unwrap();
        self.healthy_with_a_silent_end.extend(lies(
            "SELECT 'edge ' || a_agent || ' - ' || b_agent FROM topology_edges e
             WHERE kind = 'wireguard' AND health = 'healthy' AND EXISTS
               (SELECT 1 FROM agents s WHERE s.status = 'silent' AND s.agent_id IN (e.a_agent, e.b_agent))",
        ));
        self.healthy_with_a_silent_end.extend(lies(
            "SELECT 'peer ' || p.agent_id || ' -> ' || coalesce(p.peer_agent_id, '?') FROM wg_peers p
             WHERE p.health = 'healthy' AND EXISTS
               (SELECT 1 FROM agents s WHERE s.status = 'silent' AND s.agent_id IN (p.agent_id, p.peer_agent_id))",
        ));
        c.execute_batch("COMMIT").unwrap();
        let mut stmt =
            c.prepare("SELECT kind, site, agents FROM incidents WHERE state = 'active'").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        self.incidents.extend(rows.map(Result::unwrap));
        let all = |ids: &[String], f: &dyn Fn(&Heard) -> bool| {
            ids.iter().all(|a| status(c, a).as_ref().is_some_and(f))
        };
        if all(&e.silent_site, &|h| h.status == "silent") {
            self.site_silent = true;
        } else if self.site_silent && all(&e.silent_site, &|h| h.status == "up") {
            self.site_back = true;
        }
        if status(c, &e.down_gateway).is_some_and(|h| h.status == "silent") {
            self.gateway_silent = true;
        }
        let via_relay = |h: &Heard| {
            h.status == "relay"
                && h.reachability == "relay"
                && h.relay_hops == 1
                && h.via_agent.as_ref().is_some_and(|v| e.relayers.contains(v))
        };
        if all(&e.relayed, &via_relay) {
            self.relayed = true;
        } else if self.relayed
            && all(&e.relayed, &|h| h.reachability == "direct" && h.relay_hops == 0)
        {
            self.direct_again = true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_faults_reach_the_receiver_and_recover() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let mut config = Config::for_test(&db, PSK);
    // The receiver expects what the fleet does, a report a second: an agent
    // is silent after three seconds. Sweeps run often enough to notice.
    config.settings.interval_secs = 1;
    config.sweep_secs = 0.2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = tokio::spawn(kattila_receiver::server::serve(config, listener, async {
        let _ = stopped.await;
    }));

    // Answering means the database is open and migrated: the polls below
    // read it from the first round on.
    let health = format!("{url}/status/healthcheck");
    let ready = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < ready, "the receiver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let fleet = SimFleet::new(SEED, AGENTS);
    let e = expect(&fleet);
    let stats = Arc::new(SimStats::default());
    let opts = SimOptions {
        agents: AGENTS,
        receiver_url: url,
        interval: Duration::from_secs(1),
        seed: SEED.into(),
        state_dir: dir.path().join("sim"),
        rounds: Some(ROUNDS),
        faults: Scenario::Demo,
    };
    let sim = tokio::spawn(simulate::run(opts, Psk::new(PSK).unwrap(), stats.clone()));

    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(ROUNDS + 60);
    while !sim.is_finished() {
        assert!(Instant::now() < deadline, "the simulation did not finish: {seen:?}");
        seen.poll(&read_only(&db), &e);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.await.unwrap().unwrap();
    let c = read_only(&db);
    seen.poll(&c, &e);

    assert_eq!(stats.refused.load(Ordering::Relaxed), 0, "every report and relay layer verified");
    assert_eq!(stats.unreachable.load(Ordering::Relaxed), 0);
    assert!(stats.relayed.load(Ordering::Relaxed) > 0);
    assert!(stats.withheld.load(Ordering::Relaxed) > 0);

    // A whole site went silent, and after its fault it reports again.
    assert!(seen.site_silent, "{seen:?}");
    assert!(
        seen.healthy_with_a_silent_end.is_empty(),
        "shown healthy while an end was silent: {:?}",
        seen.healthy_with_a_silent_end
    );
    assert!(seen.site_back, "{seen:?}");
    for agent in &e.silent_site {
        assert!(
            count(&c, "SELECT count(*) FROM alarms WHERE kind = 'agent_silent' AND agent_id = ?1 AND state = 'resolved'", [agent]) > 0,
            "{agent}: silence raised and resolved"
        );
    }

    // The gateway went silent; its site arrived through real relay layers
    // of a live gateway, then directly again.
    assert!(seen.gateway_silent && seen.relayed && seen.direct_again, "{seen:?}");
    for agent in &e.relayed {
        let paths: Vec<String> = c
            .prepare("SELECT DISTINCT relay_path FROM reports WHERE agent_id = ?1 AND relay_path IS NOT NULL")
            .unwrap()
            .query_map([agent], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!paths.is_empty(), "{agent}: relayed reports are audited with their path");
        assert!(paths.iter().all(|p| e.relayers.contains(p)), "{paths:?}");
    }
    assert!(
        count(&c, "SELECT count(*) FROM topology_edges WHERE kind = 'relay'", []) > 0,
        "relay edges"
    );

    // The receiver grouped both into one incident each, naming the site by
    // its label and listing its agents, and resolved them after recovery.
    let listed = |kind: &str, site: &str| -> Vec<Vec<String>> {
        seen.incidents
            .iter()
            .filter(|(k, s, _)| k == kind && s == site)
            .map(|(_, _, agents)| serde_json::from_str(agents).unwrap())
            .collect()
    };
    let mut whole_site = e.silent_site.clone();
    whole_site.sort();
    assert!(listed("site_silent", &e.silent_label).contains(&whole_site), "{:?}", seen.incidents);
    let mut gateway_and_relayed: Vec<String> =
        [e.down_gateway.clone()].into_iter().chain(e.relayed.iter().cloned()).collect();
    gateway_and_relayed.sort();
    assert!(
        listed("gateway_down", &e.gateway_label).iter().any(|a| {
            a[0] == e.down_gateway && {
                let mut a = a.clone();
                a.sort();
                a == gateway_and_relayed
            }
        }),
        "{:?}",
        seen.incidents
    );
    // The sweep after the last status change may still be due.
    let settled = Instant::now() + Duration::from_secs(10);
    for (kind, site) in [("site_silent", &e.silent_label), ("gateway_down", &e.gateway_label)] {
        let active = |c: &Connection| {
            count(
                c,
                "SELECT count(*) FROM incidents WHERE kind = ?1 AND site = ?2 AND state = 'active'",
                [kind, site.as_str()],
            )
        };
        while active(&read_only(&db)) > 0 && Instant::now() < settled {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(active(&read_only(&db)), 0, "{kind} {site} resolved after recovery");
        assert!(
            count(
                &c,
                "SELECT count(*) FROM incidents WHERE kind = ?1 AND site = ?2 AND state = 'resolved'
                   AND resolved_at >= first_seen",
                [kind, site.as_str()],
            ) > 0,
            "{kind} {site}"
        );
    }

    // A link stale at both ends, and the link seen so.
    let (a, b) = &e.stale;
    assert_eq!(peer_health(&c, a, b).as_deref(), Some("stale"));
    assert_eq!(peer_health(&c, b, a).as_deref(), Some("stale"));
    assert!(
        count(&c, "SELECT count(*) FROM alarms WHERE kind = 'peer_stale' AND agent_id = ?1", [a])
            > 0
    );

    // One end removed the other: the remaining end still lists it.
    let (remover, removed) = &e.one_sided;
    assert_eq!(peer_health(&c, remover, removed), None, "the remover lists no such peer");
    assert!(peer_health(&c, removed, remover).is_some());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM topology_edges WHERE kind = 'wireguard' AND both_ends = 0
               AND ((a_agent = ?1 AND b_agent = ?2) OR (a_agent = ?2 AND b_agent = ?1))",
            [remover, removed],
        ),
        1
    );

    // Every peer of the moved agent saw its endpoint change.
    for agent in &e.see_move {
        assert!(
            count(
                &c,
                "SELECT count(*) FROM alarms WHERE kind = 'endpoint_changed' AND agent_id = ?1",
                [agent]
            ) > 0,
            "{agent}"
        );
    }

    // The flapping interface raised interface_down and cleared it again.
    let flaps = |state: &str| {
        count(
            &c,
            "SELECT count(*) FROM alarms WHERE kind = 'interface_down' AND agent_id = ?1 AND subject = 'eth0' AND state = ?2",
            [e.flapping.as_str(), state],
        )
    };
    assert!(flaps("resolved") >= 1, "raised and resolved while flapping");

    // Healthy links stay healthy: counters and handshakes keep moving.
    let (control, its_gateway) = &e.control;
    assert_eq!(peer_health(&c, control, its_gateway).as_deref(), Some("healthy"));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM wg_peers WHERE agent_id = ?1 AND health != 'healthy'",
            [control]
        ),
        0
    );

    // Every simulated agent labels its reports with its site.
    let site = fleet.agents.iter().find(|a| &a.agent_id == control).unwrap().site;
    let raw: Vec<u8> = c
        .query_row(
            "SELECT raw FROM reports WHERE agent_id = ?1 AND length(raw) > 0 LIMIT 1",
            [control],
            |r| r.get(0),
        )
        .unwrap();
    let needle = format!("\"site\":\"{}\"", site_label(site));
    assert!(String::from_utf8_lossy(&raw).contains(&needle), "{needle}");
    // … and the receiver keeps it, for the dashboard to name clusters by.
    let stored: Option<String> = c
        .query_row("SELECT site FROM agents WHERE agent_id = ?1", [control], |r| r.get(0))
        .unwrap();
    assert_eq!(stored.as_deref(), Some(site_label(site).as_str()));

    let _ = stop.send(());
    receiver.await.unwrap().unwrap();
}
