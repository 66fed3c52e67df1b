//! What one report changes in its agent's state, decided from what is
//! known of the agent: interfaces (new, changed, gone), routes, WireGuard
//! devices and peers (health, endpoint changes, removals), a history sample,
//! and the conditions to observe for alarms. Pure: no I/O; storage writes
//! the [`AgentChanges`].
//!
//! A report that changes only counters writes them once per sample
//! interval and nothing else: this runs for every report, and the disk,
//! not the CPU, limits ingest.

use std::collections::VecDeque;

use foldhash::HashMap;
use kattila_fleet::PeerHealth;
use kattila_proto::model::Route;
use kattila_proto::Report;
use kattila_store::state::{AgentChanges, AgentRows, PeerUpsert};

use super::alarms::{AlarmKind, Observation};
use super::history::{self, LastSample};
use super::topology::Owners;
use super::Settings;

/// What the receiver remembers of one agent between reports.
#[derive(Debug, Default)]
pub struct KnownAgent {
    /// Hostnames of the last few reports, oldest first.
    hostnames: VecDeque<String>,
    interfaces: HashMap<String, KnownInterface>,
    /// device → peer public key → peer.
    pub(super) peers: HashMap<String, HashMap<String, KnownPeer>>,
    /// Public keys of its WireGuard devices, sorted.
    device_keys: Vec<String>,
    /// Unix seconds when counters were last written.
    counters_written: i64,
    last_sample: Option<LastSample>,
    /// Fingerprint of the routes as last stored. A hash, not a copy: a
    /// fleet's route tables would cost megabytes.
    routes: u64,
    /// Unix seconds when a raw copy of this agent's report was last kept.
    pub(super) raw_kept_at: i64,
    /// Reports processed since the agent was loaded.
    reports: u64,
    /// Whether its last message came through relays (None: none yet).
    pub(super) relayed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
struct KnownInterface {
    /// The agent's report count when the interface was last reported.
    reported_in: u64,
    kind: String,
    state: String,
    mtu: u32,
    mac: Option<String>,
    addresses: Vec<String>,
    gone: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct KnownPeer {
    /// The agent's report count when the peer was last reported; peers
    /// with an older mark have been removed.
    reported_in: u64,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    pub(super) latest_handshake: Option<i64>,
    rx_bytes: u64,
    rx_grew_at: Option<i64>,
    pub(super) health: PeerHealth,
    pub(super) peer_agent_id: Option<String>,
}

impl KnownAgent {
    /// What is known of an agent from its stored state.
    pub fn from_rows(rows: AgentRows) -> KnownAgent {
        let mut known = KnownAgent {
            hostnames: rows.hostname.into_iter().collect(),
            device_keys: rows.device_keys,
            routes: routes_fingerprint(&rows.routes),
            counters_written: rows.counters_written,
            ..KnownAgent::default()
        };
        for i in rows.interfaces {
            let iface = KnownInterface {
                reported_in: 0,
                kind: i.kind,
                gone: i.state == "gone",
                state: i.state,
                mtu: i.mtu,
                mac: i.mac,
                addresses: i.addresses,
            };
            known.interfaces.insert(i.name, iface);
        }
        for p in rows.peers {
            let peer = KnownPeer {
                reported_in: 0,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                latest_handshake: p.latest_handshake,
                rx_bytes: p.rx_bytes,
                rx_grew_at: p.rx_grew_at,
                health: p.health,
                peer_agent_id: p.peer_agent_id,
            };
            known.peers.entry(p.device).or_default().insert(p.public_key, peer);
        }
        known
    }

    /// The report's device keys, sorted, when they differ from the known ones.
    pub fn new_device_keys<'a>(&self, r: &'a Report) -> Option<Vec<&'a str>> {
        // Most hosts have one device: compared without collecting.
        if let [d] = r.wireguard.as_slice() {
            if let [known] = self.device_keys.as_slice() {
                return (*known != d.public_key).then(|| vec![d.public_key.as_str()]);
            }
        }
        let mut keys: Vec<&str> = r.wireguard.iter().map(|d| d.public_key.as_str()).collect();
        keys.sort_unstable();
        (!keys.iter().eq(self.device_keys.iter())).then_some(keys)
    }
}

/// What a report is judged against besides the agent itself.
pub struct Ctx<'c> {
    pub settings: &'c Settings,
    /// The receiver's clock.
    pub now: i64,
    pub owners: &'c Owners,
    /// Agents that are silent: what is reported of peers they own cannot be
    /// trusted ([`PeerHealth::Unknown`]).
    pub silent: &'c foldhash::HashSet<String>,
    /// Whether observations that a condition is clear matter (the agent has
    /// a condition streaking or alarmed); without, only conditions that hold
    /// are observed.
    pub observe_clear: bool,
}

/// What one report changed.
#[derive(Debug)]
pub struct Step<'a> {
    pub state: AgentChanges<'a>,
    /// Whether anything but counters and history changed.
    pub changed: bool,
    /// The agent's device keys, sorted, when they changed.
    pub new_device_keys: Option<Vec<&'a str>>,
    /// Conditions and events for the alarm lifecycle, in order.
    pub observations: Vec<Observation<'a>>,
}

/// Compares a report with what is known of its agent, updates `known`, and
/// says what to write and what to observe.
pub fn step<'a>(known: &mut KnownAgent, r: &'a Report, ctx: &Ctx<'_>) -> Step<'a> {
    let s = ctx.settings;
    let now = ctx.now;
    let mut state = AgentChanges::new(&r.agent_id, now);
    let mut observations = Vec::new();
    known.reports += 1;
    let round = Round {
        number: known.reports,
        first_report: known.interfaces.is_empty() && known.peers.is_empty(),
        write_counters: now - known.counters_written >= s.sample_secs,
    };
    if round.write_counters {
        known.counters_written = now;
    }

    // Identity conflict: the hostname flips back and forth between values.
    let mut slot = match known.hostnames.len() {
        4.. => known.hostnames.pop_front().unwrap_or_default(),
        _ => String::new(),
    };
    slot.clear();
    slot.push_str(&r.hostname);
    known.hostnames.push_back(slot);
    let conflict = hostname_flips(&known.hostnames);
    if conflict || ctx.observe_clear {
        observations.push(Observation::new(AlarmKind::IdentityConflict, "", conflict).saying(
            || format!("agent id used by more than one host ({})", distinct(&known.hostnames)),
        ));
    }

    let ifaces_changed = interfaces(known, r, ctx, round, &mut state, &mut observations);
    let routes = routes_fingerprint(&r.routes);
    let routes_changed = routes != known.routes;
    if routes_changed {
        state.routes = Some(&r.routes);
        known.routes = routes;
    }
    let new_device_keys = known.new_device_keys(r);
    if let Some(keys) = &new_device_keys {
        state.devices = Some(&r.wireguard);
        known.device_keys = keys.iter().map(|k| k.to_string()).collect();
    }
    let peers_changed = peers(known, r, ctx, round, &mut state, &mut observations);
    let healthy = known.peers.values().flatten().filter(|(_, p)| p.health.is_healthy()).count();
    state.sample = history::sample(&mut known.last_sample, r, healthy, s.sample_secs, now);
    Step {
        state,
        changed: ifaces_changed || routes_changed || new_device_keys.is_some() || peers_changed,
        new_device_keys,
        observations,
    }
}

/// One report's place in its agent's sequence.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// The agent's report count, this report included: what is reported
    /// now is marked with it, and what carries an older mark is gone.
    number: u64,
    /// The first report introduces its interfaces silently.
    first_report: bool,
    /// Counters are written once per sample interval.
    write_counters: bool,
}

fn hostname_flips(names: &VecDeque<String>) -> bool {
    // A, B, A: two hosts take turns with one agent id. A single rename (A, B, B) is not a conflict.
    names
        .iter()
        .zip(names.iter().skip(2))
        .zip(names.iter().skip(1))
        .any(|((a, c), b)| a == c && a != b)
}

fn distinct(names: &VecDeque<String>) -> String {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

fn is_down(state: &str) -> bool {
    matches!(state, "down" | "lowerlayerdown" | "notpresent")
}

/// Interfaces: new, changed (written whole), unchanged (counters once per
/// sample interval), gone. Returns whether any changed.
fn interfaces<'a>(
    known: &mut KnownAgent,
    r: &'a Report,
    ctx: &Ctx<'_>,
    round: Round,
    state: &mut AgentChanges<'a>,
    observations: &mut Vec<Observation<'a>>,
) -> bool {
    let mut any_changed = false;
    for i in &r.interfaces {
        let mut previous = known.interfaces.get_mut(&i.name);
        if let Some(p) = previous.as_mut() {
            p.reported_in = round.number;
        }
        let changed = previous.as_ref().is_none_or(|c| {
            c.gone
                || c.kind != i.kind
                || c.state != i.state
                || c.mtu != i.mtu
                || c.mac != i.mac
                || c.addresses != i.addresses
        });
        any_changed |= changed;
        if previous.is_none() && !round.first_report {
            observations.push(Observation::event(
                AlarmKind::InterfaceNew,
                i.name.as_str(),
                format!("new interface {}", i.name),
            ));
        }
        if changed {
            let now_known = KnownInterface {
                reported_in: round.number,
                kind: i.kind.clone(),
                state: i.state.clone(),
                mtu: i.mtu,
                mac: i.mac.clone(),
                addresses: i.addresses.clone(),
                gone: false,
            };
            match previous {
                Some(c) => *c = now_known,
                None => {
                    known.interfaces.insert(i.name.clone(), now_known);
                }
            }
        }
        if changed || round.write_counters {
            state.interfaces.push(i);
        }
        // Observed every time (when they can matter): the clear
        // observations resolve the alarms. Present clears 'gone'.
        let down = is_down(&i.state);
        if ctx.observe_clear {
            observations.push(Observation::new(AlarmKind::InterfaceGone, i.name.as_str(), false));
        }
        if down || ctx.observe_clear {
            observations.push(
                Observation::new(AlarmKind::InterfaceDown, i.name.as_str(), down)
                    .saying(|| format!("interface {} is down", i.name)),
            );
        }
    }
    // Interfaces that were reported before and are missing now stay as
    // 'gone' until they return or an administrator resets the agent.
    for (name, iface) in known.interfaces.iter_mut() {
        if iface.reported_in == round.number {
            continue;
        }
        if !iface.gone {
            any_changed = true;
            iface.gone = true;
            iface.state = "gone".into();
            state.interfaces_gone.push(name.clone());
        }
        observations.push(
            Observation::new(AlarmKind::InterfaceGone, name.clone(), true)
                .saying(|| format!("interface {name} disappeared")),
        );
    }
    any_changed
}

fn routes_fingerprint(routes: &[Route]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    for r in routes {
        (&r.dst, &r.gateway, &r.dev, r.metric, r.table).hash(&mut h);
    }
    routes.len().hash(&mut h);
    h.finish()
}

/// Compares the report's peers with the known ones: what changed is written
/// whole, unchanged peers their counters once per sample interval, removed
/// peers deleted. Returns whether any changed (not counting counters). An
/// unchanged peer is updated in place: this runs for every peer of every
/// report.
fn peers<'a>(
    known: &mut KnownAgent,
    r: &'a Report,
    ctx: &Ctx<'_>,
    round: Round,
    state: &mut AgentChanges<'a>,
    observations: &mut Vec<Observation<'a>>,
) -> bool {
    let now = ctx.now;
    let mut any_changed = false;
    let this_report = round.number;
    for d in &r.wireguard {
        let device = match known.peers.get_mut(&d.name) {
            Some(device) => device,
            None => known.peers.entry(d.name.clone()).or_default(),
        };
        for p in &d.peers {
            let previous = device.get_mut(&p.public_key);
            let rx_grew = previous.as_ref().is_some_and(|prev| p.rx_bytes > prev.rx_bytes);
            let rx_grew_at = if rx_grew {
                Some(now)
            } else {
                previous.as_ref().and_then(|prev| prev.rx_grew_at)
            };
            let peer_agent_id = ctx.owners.owner_of(&p.public_key);
            // A link to a silent agent is not known to work, whatever this
            // end still sees of it.
            let health = if peer_agent_id.is_some_and(|owner| ctx.silent.contains(owner)) {
                PeerHealth::Unknown
            } else {
                PeerHealth::judge(p.latest_handshake, rx_grew, now, ctx.settings.stale_after_secs)
            };
            let structural = previous.as_ref().is_none_or(|prev| {
                prev.endpoint != p.endpoint
                    || prev.allowed_ips != p.allowed_ips
                    || prev.health != health
                    || prev.peer_agent_id.as_deref() != peer_agent_id
            });
            any_changed |= structural;
            let endpoint_change = previous
                .as_ref()
                .and_then(|prev| prev.endpoint.as_ref())
                .zip(p.endpoint.as_ref())
                .is_some_and(|(old, new)| old != new);
            match previous {
                Some(prev) if !structural => {
                    prev.reported_in = this_report;
                    prev.latest_handshake = p.latest_handshake;
                    prev.rx_bytes = p.rx_bytes;
                    prev.rx_grew_at = rx_grew_at;
                }
                _ => {
                    let now_known = KnownPeer {
                        reported_in: this_report,
                        endpoint: p.endpoint.clone(),
                        allowed_ips: p.allowed_ips.clone(),
                        latest_handshake: p.latest_handshake,
                        rx_bytes: p.rx_bytes,
                        rx_grew_at,
                        health,
                        peer_agent_id: peer_agent_id.map(str::to_string),
                    };
                    device.insert(p.public_key.clone(), now_known);
                }
            }
            if structural || round.write_counters {
                state.peers.push(PeerUpsert {
                    device: &d.name,
                    peer: p,
                    peer_agent_id: peer_agent_id.map(str::to_string),
                    rx_grew_at,
                    health,
                });
            }
            // Unknown (the other end is silent) is that agent's alarm, not
            // a stale peer here.
            let stale = matches!(health, PeerHealth::Stale | PeerHealth::Never);
            if !(stale || ctx.observe_clear || endpoint_change) {
                continue;
            }
            let subject = format!("{}:{}", d.name, p.public_key);
            let name = peer_agent_id.unwrap_or(&p.public_key[..8]);
            if stale || ctx.observe_clear {
                let observation = Observation::new(AlarmKind::PeerStale, subject.clone(), stale)
                    .saying(|| {
                        let age = p
                            .latest_handshake
                            .map_or("never".to_string(), |hs| format!("{} s ago", now - hs));
                        format!("WireGuard peer {name} on {}: last handshake {age}", d.name)
                    });
                observations.push(observation);
            }
            if endpoint_change {
                let message = format!("WireGuard peer {name} on {} changed endpoint", d.name);
                observations.push(Observation::event(AlarmKind::EndpointChanged, subject, message));
            }
        }
    }
    // Peers removed from the configuration (or whose device went) leave
    // the snapshot; their conditions clear.
    for (device, peers) in known.peers.iter_mut() {
        peers.retain(|key, p| {
            if p.reported_in == this_report {
                return true;
            }
            state.peers_removed.push((device.clone(), key.clone()));
            let subject = format!("{device}:{key}");
            observations.push(Observation::new(AlarmKind::PeerStale, subject, false));
            any_changed = true;
            false
        });
    }
    known.peers.retain(|_, peers| !peers.is_empty());
    any_changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_flip_detection() {
        let q = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<VecDeque<_>>();
        assert!(!hostname_flips(&q(&["a", "a", "a"])));
        assert!(!hostname_flips(&q(&["a", "b", "b"])), "a rename is not a conflict");
        assert!(hostname_flips(&q(&["a", "b", "a"])));
        assert!(hostname_flips(&q(&["b", "a", "b", "a"])));
    }
}
