//! Incidents: related alarms of one site grouped into one, as a pure step
//! of the timer sweep — (agents' status and site, stale links, the stored
//! active incidents, now) → raise, refresh and resolve changes for storage
//! to write. A site is `kattila_fleet::site_of`, the rule sitegen names its
//! clusters by, so each incident is about one cluster of the dashboard.
//!
//! - `site_silent`: two or more agents of a site silent at once — the site
//!   lost power or its uplink, not each agent on its own.
//! - `gateway_down`: agents of a site silent while others of it are reached
//!   only through relays — the way out (a gateway) is down, the site is not.
//! - `links_stale`: [`LINKS_AT_ONCE`] or more WireGuard links of a site stale
//!   or down at once, both ends reporting — one cause (an uplink, a
//!   firewall) rather than each peer's own.

use std::collections::BTreeMap;

use kattila_fleet::{site_of, AgentStatus, Severity};
use kattila_store::incidents::{
    ActiveIncident, IncidentChange, IncidentFound, IncidentInputs, SiteAgent,
};

pub const SITE_SILENT: &str = "site_silent";
pub const GATEWAY_DOWN: &str = "gateway_down";
pub const LINKS_STALE: &str = "links_stale";

/// Stale or down WireGuard links of one site that make an incident. One
/// or two are the peers' own trouble and already listed link by link (a
/// site's gateway typically has two or three peers of its own); three at
/// once mean something the site shares, and grouping them says so.
pub const LINKS_AT_ONCE: usize = 3;

/// The incidents that hold now, ordered by (kind, site).
pub fn find(inputs: &IncidentInputs) -> Vec<IncidentFound> {
    let mut sites: BTreeMap<String, Vec<&SiteAgent>> = BTreeMap::new();
    let mut site_by_agent: BTreeMap<&str, &str> = BTreeMap::new();
    for agent in &inputs.agents {
        let interfaces = agent.interfaces.iter().map(|(k, a)| (k.as_str(), a.as_slice()));
        if let Some(site) = site_of(agent.site_label.as_deref(), interfaces) {
            sites.entry(site).or_default().push(agent);
        }
    }
    for (site, members) in &sites {
        for a in members {
            site_by_agent.insert(a.agent_id.as_str(), site.as_str());
        }
    }
    let status: BTreeMap<&str, AgentStatus> =
        inputs.agents.iter().map(|a| (a.agent_id.as_str(), a.status)).collect();
    let mut found = Vec::new();
    for (site, members) in &sites {
        let with = |s: AgentStatus| members.iter().filter(|a| a.status == s).collect::<Vec<_>>();
        let (silent, relay) = (with(AgentStatus::Silent), with(AgentStatus::Relay));
        let ids =
            |list: &[&&SiteAgent]| list.iter().map(|a| a.agent_id.clone()).collect::<Vec<_>>();
        if !silent.is_empty() && !relay.is_empty() {
            let who = match silent.as_slice() {
                [one] => one.hostname.clone(),
                many => format!("{} agents", many.len()),
            };
            let n = relay.len();
            found.push(IncidentFound {
                kind: GATEWAY_DOWN.into(),
                site: site.clone(),
                severity: Severity::Critical,
                summary: format!(
                    "{who} silent, {n} agent{} reachable only through relays",
                    plural(n)
                ),
                agents: [ids(&silent), ids(&relay)].concat(),
            });
        } else if silent.len() >= 2 {
            let (k, n) = (silent.len(), members.len());
            let summary = if k == n {
                format!("all {n} agents silent")
            } else {
                format!("{k} of {n} agents silent")
            };
            found.push(IncidentFound {
                kind: SITE_SILENT.into(),
                site: site.clone(),
                severity: Severity::Critical,
                summary,
                agents: ids(&silent),
            });
        }
    }
    // Links with a silent end are down because of the silence, which is
    // its own problem; only links whose ends both report count here.
    let mut links: BTreeMap<&str, (usize, Vec<String>)> = BTreeMap::new();
    for (a, b) in &inputs.links_not_healthy {
        let reporting = |id: &str| status.get(id).is_some_and(|&s| s != AgentStatus::Silent);
        if !reporting(a) || !reporting(b) {
            continue;
        }
        let (sa, sb) = (site_by_agent.get(a.as_str()), site_by_agent.get(b.as_str()));
        for (end, site) in [(a, sa), (b, sb)] {
            let Some(&site) = site else { continue };
            let entry = links.entry(site).or_default();
            // A link inside the site counts once.
            if end == a || sa != sb {
                entry.0 += 1;
            }
            if !entry.1.contains(end) {
                entry.1.push(end.clone());
            }
        }
    }
    for (site, (n, mut agents)) in links {
        if n >= LINKS_AT_ONCE {
            agents.sort();
            found.push(IncidentFound {
                kind: LINKS_STALE.into(),
                site: site.to_string(),
                severity: Severity::Warning,
                summary: format!("{n} WireGuard links stale or down at once"),
                agents,
            });
        }
    }
    found.sort_by(|x, y| (&x.kind, &x.site).cmp(&(&y.kind, &y.site)));
    found
}

/// What to write for the incidents found now against the stored active
/// ones: a new one is raised, one still found is refreshed (its last
/// sighting, and its agents and summary as they are now), one no longer
/// found is resolved. Also whether the dashboard changes: a raise, a
/// resolve, or a refresh that changes what an incident says.
pub fn changes(
    found: Vec<IncidentFound>,
    active: &[ActiveIncident],
    now: i64,
) -> (Vec<IncidentChange>, bool) {
    let mut out = Vec::new();
    let mut visible = false;
    for incident in found {
        match active.iter().find(|a| a.kind == incident.kind && a.site == incident.site) {
            None => {
                visible = true;
                out.push(IncidentChange::Raise { incident, now });
            }
            Some(stored) => {
                visible |= stored.summary != incident.summary
                    || stored.agents != incident.agents
                    || stored.severity != incident.severity.as_str();
                out.push(IncidentChange::Refresh { incident, now });
            }
        }
    }
    for stored in active {
        let still = out.iter().any(|c| match c {
            IncidentChange::Raise { incident, .. } | IncidentChange::Refresh { incident, .. } => {
                incident.kind == stored.kind && incident.site == stored.site
            }
            IncidentChange::Resolve { .. } => false,
        });
        if !still {
            visible = true;
            out.push(IncidentChange::Resolve {
                kind: stored.kind.clone(),
                site: stored.site.clone(),
                now,
            });
        }
    }
    (out, visible)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, site: &str, status: AgentStatus) -> SiteAgent {
        SiteAgent {
            agent_id: id.into(),
            hostname: format!("host-{id}"),
            status,
            site_label: Some(site.into()),
            interfaces: Vec::new(),
        }
    }

    /// Site "hel": gw h0 and nodes h1..h4; site "tku": t0..t4; all up.
    fn fleet() -> IncidentInputs {
        let mut agents = Vec::new();
        for (site, p) in [("hel", "h"), ("tku", "t")] {
            for i in 0..5 {
                agents.push(agent(&format!("{p}{i}"), site, AgentStatus::Up));
            }
        }
        IncidentInputs { agents, ..IncidentInputs::default() }
    }

    fn set(inputs: &mut IncidentInputs, ids: &[&str], status: AgentStatus) {
        for a in inputs.agents.iter_mut().filter(|a| ids.contains(&a.agent_id.as_str())) {
            a.status = status;
        }
    }

    /// Stores what `changes` decided, as the store would.
    fn stored(found: &[IncidentFound]) -> Vec<ActiveIncident> {
        found
            .iter()
            .map(|f| ActiveIncident {
                kind: f.kind.clone(),
                site: f.site.clone(),
                severity: f.severity.as_str().into(),
                summary: f.summary.clone(),
                agents: f.agents.clone(),
            })
            .collect()
    }

    #[test]
    fn a_healthy_fleet_has_no_incidents() {
        let mut inputs = fleet();
        assert!(find(&inputs).is_empty());
        // One silent agent is its own alarm, not a site's incident.
        set(&mut inputs, &["h3"], AgentStatus::Silent);
        assert!(find(&inputs).is_empty());
    }

    #[test]
    fn a_whole_site_silent_is_one_incident_and_recovery_resolves_it() {
        let mut inputs = fleet();
        set(&mut inputs, &["h0", "h1", "h2", "h3", "h4"], AgentStatus::Silent);
        let found = find(&inputs);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!((f.kind.as_str(), f.site.as_str()), (SITE_SILENT, "hel"));
        assert_eq!(f.summary, "all 5 agents silent");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.agents, ["h0", "h1", "h2", "h3", "h4"]);

        let (raise, visible) = changes(found.clone(), &[], 100);
        assert!(visible);
        assert!(matches!(&raise[..], [IncidentChange::Raise { now: 100, .. }]), "{raise:?}");
        let active = stored(&found);

        // Still silent: refreshed, nothing the dashboard shows changed.
        let (again, visible) = changes(find(&inputs), &active, 105);
        assert!(!visible);
        assert!(matches!(&again[..], [IncidentChange::Refresh { now: 105, .. }]), "{again:?}");

        // Three come back: two of five still silent, the same incident says so.
        set(&mut inputs, &["h0", "h1", "h2"], AgentStatus::Up);
        let found = find(&inputs);
        assert_eq!(found[0].summary, "2 of 5 agents silent");
        let (partly, visible) = changes(found.clone(), &active, 110);
        assert!(visible);
        assert!(matches!(&partly[..], [IncidentChange::Refresh { .. }]));

        set(&mut inputs, &["h3", "h4"], AgentStatus::Up);
        let (resolve, visible) = changes(find(&inputs), &stored(&found), 120);
        assert!(visible);
        assert_eq!(
            resolve,
            [IncidentChange::Resolve { kind: SITE_SILENT.into(), site: "hel".into(), now: 120 }]
        );
    }

    #[test]
    fn a_silent_gateway_with_its_site_relayed_is_gateway_down() {
        let mut inputs = fleet();
        set(&mut inputs, &["t0"], AgentStatus::Silent);
        set(&mut inputs, &["t1", "t2", "t3", "t4"], AgentStatus::Relay);
        let found = find(&inputs);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!((f.kind.as_str(), f.site.as_str()), (GATEWAY_DOWN, "tku"));
        assert_eq!(f.summary, "host-t0 silent, 4 agents reachable only through relays");
        assert_eq!(f.agents, ["t0", "t1", "t2", "t3", "t4"]);
        // The gateway returns: nothing holds any more.
        set(&mut inputs, &["t0", "t1", "t2", "t3", "t4"], AgentStatus::Up);
        let (resolve, _) = changes(find(&inputs), &stored(&found), 9);
        assert!(matches!(&resolve[..], [IncidentChange::Resolve { .. }]), "{resolve:?}");
    }

    #[test]
    fn sites_without_a_label_are_their_network() {
        let mut inputs = fleet();
        for a in inputs.agents.iter_mut().filter(|a| a.agent_id.starts_with('h')) {
            a.site_label = None;
            a.interfaces = vec![
                ("wireguard".into(), vec!["10.99.0.7/24".into()]),
                ("ethernet".into(), vec![format!("192.168.5.{}/24", a.agent_id.len())]),
            ];
        }
        set(&mut inputs, &["h1", "h2"], AgentStatus::Silent);
        let found = find(&inputs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].site, "192.168.5.0/24");
        assert_eq!(found[0].summary, "2 of 5 agents silent");
    }

    #[test]
    fn many_stale_links_of_a_site_are_one_incident() {
        let mut inputs = fleet();
        let link = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Two stale links: listed on their own, no incident.
        inputs.links_not_healthy = vec![link("h0", "t0"), link("h1", "h2")];
        assert!(find(&inputs).is_empty());
        inputs.links_not_healthy.push(link("h0", "t1"));
        let found = find(&inputs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].kind.as_str(), found[0].site.as_str()), (LINKS_STALE, "hel"));
        assert_eq!(found[0].summary, "3 WireGuard links stale or down at once");
        assert_eq!(found[0].agents, ["h0", "h1", "h2"]);
        assert_eq!(found[0].severity, Severity::Warning);
        // Links down because an end is silent do not count.
        set(&mut inputs, &["t1"], AgentStatus::Silent);
        assert!(find(&inputs).is_empty());
    }
}
