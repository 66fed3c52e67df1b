//! The public view of a snapshot: the types everything published is
//! rendered from — pages, maps and JSON — with every address already
//! anonymised (unless revealing). Renderers only ever see this view, never
//! the raw snapshot, which is what keeps raw addresses out of the site.
//! How a view is made is [`crate::build`]'s job; statuses and health in it
//! are the receiver's words, read, never decided here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use kattila_fleet::{AgentStatus, Health, PeerHealth};
use kattila_store::snapshot::Sample;
use serde::Serialize;

use crate::shown::Pieces;

/// Version of the JSON files' layout (`schema_version` in each); 2 split
/// `agents.json` into an index and one file per agent.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub schema_version: u32,
    pub generated_at: i64,
    pub addresses_revealed: bool,
    pub summary: Summary,
    pub agents: Vec<AgentView>,
    pub alarms: Vec<AlarmView>,
    /// Active first, then newest first.
    pub incidents: Vec<IncidentView>,
    /// Silences and maintenance windows made through the admin API.
    pub silences: Vec<SilenceView>,
    pub windows: Vec<WindowView>,
    pub links: Vec<LinkView>,
    pub clusters: Vec<ClusterView>,
    pub problems: Problems,
    /// Agent id → index in `agents`.
    #[serde(skip)]
    pub index: HashMap<String, usize>,
    /// Pair of agent indices (low, high) → its WireGuard link in `links`.
    #[serde(skip)]
    pub pair_links: HashMap<(usize, usize), usize>,
}

/// What needs attention: the verdict, one line per problem, and the
/// lists behind them (indices into `Site::agents` and `Site::links`).
#[derive(Debug, Clone, Default, Serialize, Hash)]
pub struct Problems {
    /// 'ok' | 'warning' | 'critical': the most severe line's.
    pub verdict: String,
    pub headline: String,
    pub lines: Vec<ProblemLine>,
    pub silent: Vec<usize>,
    pub relay: Vec<usize>,
    pub links_down: Vec<usize>,
    pub links_unknown: Vec<usize>,
    pub links_stale: Vec<usize>,
    pub links_one_sided: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct ProblemLine {
    /// 'critical' | 'warning'.
    pub severity: String,
    /// A text mark, so colour is never the only signal.
    pub mark: String,
    pub text: Pieces,
    /// Where the details are, relative to the site root.
    pub href: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, Hash)]
pub struct Summary {
    pub agents_total: usize,
    pub agents_up: usize,
    pub agents_silent: usize,
    pub agents_relay_only: usize,
    pub links_total: usize,
    pub links_healthy: usize,
    pub links_stale: usize,
    pub links_down: usize,
    /// An end is silent: not known to work.
    pub links_unknown: usize,
    pub links_one_sided: usize,
    pub external_peers: usize,
    pub alarms_active: usize,
    pub alarms_critical: usize,
    pub alarms_warning: usize,
    pub alarms_info: usize,
    pub alarms_unacknowledged: usize,
    pub clusters: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    /// Page of this agent, relative to the site root.
    pub page: String,
    /// The hostname as the agent reported it (anonymised), for JSON.
    #[serde(rename = "hostname")]
    pub reported_hostname: String,
    /// The hostname as pages show it: with a short agent id added when
    /// another agent reports the same hostname.
    #[serde(rename = "display_name")]
    pub hostname: String,
    pub agent_version: String,
    /// As the receiver decided it.
    pub status: AgentStatus,
    pub reachability: String,
    pub relay_hops: i64,
    pub via_agent: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_seen_age: i64,
    pub last_observed_at: Option<i64>,
    pub kernel: Option<String>,
    pub uptime_secs: Option<i64>,
    pub load: Option<[f64; 3]>,
    pub reports: i64,
    pub spool_dropped: i64,
    pub collect_errors: Vec<CollectError>,
    pub cluster: String,
    pub interfaces: Vec<InterfaceView>,
    pub routes: Vec<RouteView>,
    pub wireguard: Vec<DeviceView>,
    pub peers_total: usize,
    pub peers_healthy: usize,
    pub alarms_active: usize,
    #[serde(skip)]
    pub history: Vec<Sample>,
}

/// Page keys (`render::PageKeys`) hash everything a page is rendered from
/// except what only moves with the clock: `last_seen_age` is left out, as
/// pages below the root never show relative times.
impl Hash for AgentView {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Destructured, so that a new field cannot be forgotten here.
        let AgentView {
            agent_id,
            page,
            reported_hostname,
            hostname,
            agent_version,
            status,
            reachability,
            relay_hops,
            via_agent,
            first_seen,
            last_seen,
            last_seen_age: _,
            last_observed_at,
            kernel,
            uptime_secs,
            load,
            reports,
            spool_dropped,
            collect_errors,
            cluster,
            interfaces,
            routes,
            wireguard,
            peers_total,
            peers_healthy,
            alarms_active,
            history,
        } = self;
        (agent_id, page, reported_hostname, hostname, agent_version, status, reachability).hash(h);
        (relay_hops, via_agent, first_seen, last_seen, last_observed_at).hash(h);
        (kernel, uptime_secs, load.map(|l| l.map(f64::to_bits))).hash(h);
        (reports, spool_dropped, collect_errors, cluster, interfaces, routes).hash(h);
        (wireguard, peers_total, peers_healthy, alarms_active, history).hash(h);
    }
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct CollectError {
    pub source: String,
    pub message: String,
}

/// Interfaces and routes are shown as stored, their text anonymised.
pub use kattila_store::snapshot::{Interface as InterfaceView, Route as RouteView};

#[derive(Debug, Clone, Serialize, Hash)]
pub struct DeviceView {
    pub name: String,
    pub public_key: String,
    pub listen_port: Option<i64>,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub public_key: String,
    pub peer_agent_id: Option<String>,
    pub peer_hostname: Option<String>,
    pub peer_page: Option<String>,
    /// The peer lists this agent too (the receiver's link says both ends).
    pub mutual: bool,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake: Option<i64>,
    pub handshake_age: Option<i64>,
    pub handshake_band: String,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub persistent_keepalive: Option<i64>,
    pub health: PeerHealth,
}

/// All but the clock-relative `handshake_age` (see `AgentView`'s `Hash`).
impl Hash for PeerView {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let PeerView {
            public_key,
            peer_agent_id,
            peer_hostname,
            peer_page,
            mutual,
            endpoint,
            allowed_ips,
            latest_handshake,
            handshake_age: _,
            handshake_band,
            rx_bytes,
            tx_bytes,
            persistent_keepalive,
            health,
        } = self;
        (public_key, peer_agent_id, peer_hostname, peer_page, mutual, endpoint).hash(h);
        (allowed_ips, latest_handshake, handshake_band, rx_bytes, tx_bytes).hash(h);
        (persistent_keepalive, health).hash(h);
    }
}

/// An incident: related alarms of one site, grouped by the receiver.
#[derive(Debug, Clone, Serialize, Hash)]
pub struct IncidentView {
    pub id: i64,
    /// 'site_silent' | 'gateway_down' | 'links_stale'.
    pub kind: String,
    /// 'critical' | 'warning' | 'info'.
    pub severity: String,
    /// The cluster of its agents (id, label, page); None when none of them
    /// is known any more.
    pub cluster: Option<String>,
    pub cluster_label: Option<String>,
    pub cluster_page: Option<String>,
    /// What is wrong, without the site's name.
    pub summary: String,
    /// The agents involved, as stored.
    #[serde(rename = "agents")]
    pub agent_ids: Vec<String>,
    /// Indices into `Site::agents` of those still known.
    #[serde(skip)]
    pub agents: Vec<usize>,
    /// 'active' | 'resolved'.
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct AlarmView {
    pub id: i64,
    pub kind: String,
    /// The kind in words.
    pub kind_text: String,
    pub severity: String,
    pub agent_id: String,
    pub hostname: Option<String>,
    pub agent_page: Option<String>,
    pub subject: String,
    pub message: String,
    pub state: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub acknowledged: bool,
    /// Seconds from raised to resolved (or to last observed while active).
    pub duration: i64,
    /// When a notification about it was decided (None: not told — held
    /// back, or no notifications); for an alarm told as its incident, when
    /// the incident was.
    pub notified_at: Option<i64>,
    /// The incident it was told with ("site hel: all 5 agents silent"),
    /// when it was not told on its own.
    pub notified_with: Option<String>,
    /// Why notifications about it are held back now: "maintenance: …" or
    /// "silenced: …".
    pub muted: Option<String>,
}

/// A silence made through the receiver's admin API that has not ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SilenceView {
    pub matchers: Vec<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    /// Started (else it starts later).
    pub active: bool,
}

/// A maintenance window made through the receiver's admin API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowView {
    pub name: String,
    /// "the whole fleet", or the sites and agents it covers.
    pub scope: String,
    /// When it is open, in words.
    pub when: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkView {
    /// 'wireguard' | 'relay' | 'physical'.
    pub kind: String,
    pub a: String,
    /// '' for an external peer.
    pub b: String,
    /// The external peer's public key, else ''.
    pub external: String,
    pub both_ends: bool,
    pub health: Health,
    /// Seconds from the newest handshake to the receiver's last write of
    /// this link.
    pub handshake_age: Option<i64>,
    pub detail: Option<String>,
    /// When the newest handshake was (the last write less the age), for
    /// the matrix's titles.
    #[serde(skip)]
    pub handshake_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Hash)]
pub struct ClusterView {
    /// File-safe name.
    pub id: String,
    /// The (anonymised) network that defines it.
    pub label: String,
    pub page: String,
    pub agents: Vec<usize>,
    pub up: usize,
    pub silent: usize,
    pub relay: usize,
    pub alarms_active: usize,
    /// WireGuard and relay links touching its agents that are not healthy.
    pub links_not_healthy: usize,
    /// 'ok' | 'warning' | 'critical'.
    pub health: String,
}

impl Site {
    pub fn agent(&self, id: &str) -> Option<&AgentView> {
        self.index.get(id).map(|&i| &self.agents[i])
    }

    /// The WireGuard link between agents `i` and `j`, if there is one.
    pub fn pair_link(&self, i: usize, j: usize) -> Option<&LinkView> {
        self.pair_links.get(&(i.min(j), i.max(j))).map(|&l| &self.links[l])
    }
}
