//! What the receiver makes of a verified message, as a pure step: (what is
//! known of the fleet and the agent, the message, now) → (what changed, as
//! values for storage to write). No I/O: the writer loads what is known
//! through `kattila_store`, calls [`Processor::apply`], and writes the
//! returned [`Changes`] in the same transaction as the message.
//!
//! - [`report`]: one report against what is known of its agent.
//! - [`topology`]: the fleet's links as an in-memory model.
//! - [`alarms`]: the alarm lifecycle (streaks, flap suppression, events).
//! - [`history`]: history samples.
//! - [`incidents`]: related alarms of one site grouped into incidents.
//!
//! What is known is kept in memory between messages, loaded on first use,
//! so that a report which changes nothing but counters writes little: the
//! disk, not the CPU, limits ingest.

pub mod alarms;
pub mod history;
pub mod incidents;
pub mod report;
pub mod topology;

use foldhash::HashMap;
use kattila_fleet::PeerHealth;
use kattila_proto::{Message, Verified};
use kattila_store::admin::Retention;
use kattila_store::alarms::{AlarmRows, Condition};
use kattila_store::state::AgentRows;
use kattila_store::topology::PeerListing;
use kattila_store::Changes;

pub use alarms::{AlarmKind, Observation};
pub use report::KnownAgent;

/// Tunables of processing; see `kattila-receiver --help`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Expected seconds between two reports of one agent.
    pub interval_secs: i64,
    /// Consecutive observations before an alarm is raised or resolved.
    pub alarm_threshold: i64,
    /// A WireGuard peer whose newest handshake is older than this, and whose
    /// received bytes stopped growing, is stale.
    pub stale_after_secs: i64,
    /// At most one history sample and one counter update per agent per this.
    pub sample_secs: i64,
    /// Event alarms (new interface, endpoint changed) resolve after this.
    pub event_ttl_secs: i64,
    /// Raw reports older than this are deleted from the audit table.
    pub audit_retention_secs: i64,
    /// History samples are kept this long (rolled up hourly after a day).
    pub history_retention_secs: i64,
    /// Keep the raw copy of every report, not only of reports that changed
    /// something and one per `audit_interval_secs` per agent.
    pub audit_every_report: bool,
    pub audit_interval_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval_secs: 30,
            alarm_threshold: 2,
            stale_after_secs: 180,
            sample_secs: 60,
            event_ttl_secs: 3600,
            audit_retention_secs: 86_400,
            history_retention_secs: 7 * 86_400,
            audit_every_report: false,
            audit_interval_secs: 300,
        }
    }
}

impl Settings {
    /// What the retention sweep at `now` deletes.
    pub fn retention(&self, now: i64) -> Retention {
        Retention {
            now,
            reports_before: now - self.audit_retention_secs,
            // A relay path unused for six intervals is no longer in use.
            relay_edges_before: now - 6 * self.interval_secs.max(10),
            history_before: now - self.history_retention_secs,
        }
    }

    /// Agents without a report since this are silent.
    pub fn silent_before(&self, now: i64) -> i64 {
        now - kattila_fleet::silent_after(self.interval_secs)
    }
}

/// What one message changed, and whether its raw copy is kept for the
/// audit.
#[derive(Debug)]
pub struct Processed<'a> {
    pub changes: Changes<'a>,
    pub keep_raw: bool,
    /// Whether the message changed what the dashboard shows beyond
    /// counters and ages: state, status, health, alarms.
    pub visible: bool,
}

/// What the writer thread knows of the fleet between messages.
#[derive(Debug, Default)]
pub struct Processor {
    pub settings: Settings,
    agents: HashMap<String, KnownAgent>,
    alarms: alarms::Alarms,
    topology: topology::Topology,
    loaded: bool,
}

impl Processor {
    pub fn new(settings: Settings) -> Self {
        Processor { settings, ..Processor::default() }
    }

    /// Forgets everything; it is loaded again before the next message.
    /// Called after a failed transaction so memory never disagrees with disk.
    pub fn invalidate(&mut self) {
        let settings = self.settings.clone();
        *self = Processor::new(settings);
    }

    /// Whether the fleet-wide state (topology, alarms) is loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn load(&mut self, topology: topology::Topology, alarms: AlarmRows) {
        self.topology = topology;
        self.alarms = alarms::Alarms::load(alarms);
        self.loaded = true;
    }

    /// Whether an agent's state is loaded.
    pub fn knows(&self, agent_id: &str) -> bool {
        self.agents.contains_key(agent_id)
    }

    pub fn know(&mut self, agent_id: &str, rows: AgentRows) {
        self.agents.insert(agent_id.to_string(), KnownAgent::from_rows(rows));
    }

    /// Device keys that `message` gives its agent anew and that another
    /// agent owns or gave up: `apply` needs every stored peer listing one
    /// of them. Who lists a key no agent owned the topology model knows; a
    /// key moves from one agent to another only when an agent is reset or
    /// a machine cloned.
    pub fn moved_keys<'a>(&self, message: &'a Verified) -> Vec<&'a str> {
        let agent = message.origin().agent_id.as_str();
        let (Message::Report(r), Some(known)) = (&message.message, self.agents.get(agent)) else {
            return Vec::new();
        };
        let mut keys = known.new_device_keys(r).unwrap_or_default();
        keys.retain(|k| {
            self.topology.owners.owner_of(k).is_some_and(|owner| owner != agent)
                || self.topology.is_orphaned(k)
        });
        keys
    }

    /// Processes an accepted message (its `agents` row is written). The
    /// fleet and the agent must be loaded ([`Processor::load`],
    /// [`Processor::know`]); `listings` are the stored peers listing the
    /// [`Processor::moved_keys`].
    ///
    /// The raw copy is kept for registers, relayed messages and reports
    /// that changed something (state, alarms raised or resolved), else once
    /// per audit interval.
    pub fn apply<'a>(
        &mut self,
        message: &'a Verified,
        listings: &[PeerListing],
        now: i64,
    ) -> Processed<'a> {
        debug_assert!(self.loaded, "the writer loads the fleet first");
        let s = &self.settings;
        let origin = message.origin().agent_id.as_str();
        let mut changes = Changes::default();
        // A report proves the agent is alive, however it arrived.
        let alive = Observation::new(AlarmKind::AgentSilent, "", false);
        self.alarms.observe(origin, alive, s, now, &mut changes.alarms);
        topology::record_relays(message, now, &mut changes.edges);
        let hops = message.relay_hops();
        let relay_only = Observation::new(AlarmKind::RelayOnly, "", hops > 0)
            .saying(|| format!("reachable only through {hops} relay(s)"));
        self.alarms.observe(origin, relay_only, s, now, &mut changes.alarms);
        // Back from silence: its links are judged again.
        let was_silent = self.topology.heard(origin, now, &mut changes.edges);
        let before = changes.alarms.len();
        let changed = match &message.message {
            Message::Report(report) => self.report(report, listings, now, &mut changes),
            Message::Register(_) => true,
        };
        let transitions = changes.alarms[before..].iter().any(alarms::is_transition);
        let known = known_mut(&mut self.agents, origin);
        // Reached through relays now and not before, or the other way: its
        // status changed.
        let relayed = known.relayed.replace(hops > 0).is_some_and(|was| was != (hops > 0));
        let visible = changed || transitions || was_silent || relayed;
        let changed = changed || hops > 0 || transitions;
        let keep_raw = changed
            || self.settings.audit_every_report
            || now - known.raw_kept_at >= self.settings.audit_interval_secs;
        if keep_raw {
            known.raw_kept_at = now;
        }
        Processed { changes, keep_raw, visible }
    }

    /// One report: its agent's state, then the topology, then the alarms.
    /// Returns whether the agent's state changed (not counting counters).
    fn report<'a>(
        &mut self,
        r: &'a kattila_proto::Report,
        listings: &[PeerListing],
        now: i64,
        changes: &mut Changes<'a>,
    ) -> bool {
        let s = &self.settings;
        let id = r.agent_id.as_str();
        let known = known_mut(&mut self.agents, id);
        let ctx = report::Ctx {
            settings: s,
            now,
            owners: &self.topology.owners,
            silent: &self.topology.silent,
            observe_clear: self.alarms.tracks(id),
        };
        let step = report::step(known, r, &ctx);

        if let Some(keys) = &step.new_device_keys {
            let listings = self.listings(id, keys, listings);
            self.topology.set_device_keys(id, keys, &listings, now, &mut changes.edges);
        }
        let known = known_mut(&mut self.agents, id);
        let facts: Vec<topology::PeerFact<'_>> = known
            .peers
            .values()
            .flatten()
            .map(|(key, p)| topology::PeerFact {
                public_key: key,
                peer_agent_id: p.peer_agent_id.as_deref(),
                health: p.health,
                latest_handshake: p.latest_handshake,
            })
            .collect();
        self.topology.update_wireguard_edges(id, &facts, now, s, &mut changes.edges);
        let wg_names: Vec<&str> = r.wireguard.iter().map(|d| d.name.as_str()).collect();
        let networks = topology::physical_networks(&r.interfaces, &wg_names);
        self.topology.update_physical(id, networks, now, &mut changes.edges);

        for observation in step.observations {
            self.alarms.observe(id, observation, s, now, &mut changes.alarms);
        }
        changes.state = Some(step.state);
        step.changed
    }

    /// Every peer of another agent listing one of the `keys` that `agent`
    /// claims: those storage found (`stored`, for keys that moved from
    /// another agent), and those of keys no agent owned, from the topology's
    /// edges to them, seen as the listing agent's state has them when it is
    /// loaded (its state may be newer than its rows).
    fn listings(
        &self,
        agent: &str,
        keys: &[&str],
        stored: &[PeerListing],
    ) -> Vec<topology::Listing> {
        let mut found: Vec<topology::Listing> =
            stored.iter().map(topology::Listing::from).collect();
        let stored = found.len();
        for key in keys {
            for (lister, edge_health) in self.topology.external_listers(key) {
                // A key's external listers are distinct: only what storage
                // found can repeat one.
                let listed = |l: &topology::Listing| l.agent_id == lister && l.public_key == *key;
                if lister == agent || found[..stored].iter().any(listed) {
                    continue;
                }
                let peer = self
                    .agents
                    .get(lister)
                    .and_then(|known| known.peers.values().find_map(|device| device.get(*key)));
                let view =
                    peer.map_or((edge_health, None), |p| (p.health.link(), p.latest_handshake));
                found.push(topology::Listing {
                    agent_id: lister.to_string(),
                    public_key: key.to_string(),
                    view,
                });
            }
        }
        found
    }

    /// Agents in `silent` (agent, last seen) are silent: raises their
    /// silent alarm (silence is unambiguous, so no streak is needed), and
    /// for those that just went silent makes every link they are an end of
    /// and every peer entry about them unknown — a link is not healthy
    /// when one of its ends cannot be heard.
    pub fn silent<'a>(&mut self, silent: &'a [(String, i64)], now: i64) -> Changes<'a> {
        let mut out = Changes::default();
        for (agent, last_seen) in silent {
            let message = format!("no report for {} s", now - last_seen);
            let observation = Observation::new(AlarmKind::AgentSilent, "", true).saying(|| message);
            self.alarms.raise_now(agent, observation, now, &mut out.alarms);
            if self.topology.silent.contains(agent) {
                continue;
            }
            self.topology.silence(agent, now, &mut out.edges);
            // What is known of peers it lists or is listed as, as stored.
            for (id, known) in self.agents.iter_mut() {
                for peer in known.peers.values_mut().flat_map(|d| d.values_mut()) {
                    if id == agent || peer.peer_agent_id.as_deref() == Some(agent.as_str()) {
                        peer.health = PeerHealth::Unknown;
                    }
                }
            }
            let listers = self.topology.linked(agent);
            out.silenced.push(kattila_store::state::Silenced { agent, listers });
        }
        out
    }

    /// Forgets the conditions of alarms that storage expired.
    pub fn expired(&mut self, conditions: &[Condition<'_>]) {
        self.alarms.forget(conditions);
    }
}

/// The agent as known; the writer loads it before processing its message
/// ([`Processor::know`]), else it starts as never seen.
fn known_mut<'k>(agents: &'k mut HashMap<String, KnownAgent>, id: &str) -> &'k mut KnownAgent {
    if !agents.contains_key(id) {
        debug_assert!(false, "the writer loads agent {id} first");
        agents.insert(id.to_string(), KnownAgent::default());
    }
    agents.get_mut(id).expect("inserted above")
}

#[cfg(test)]
mod tests;
