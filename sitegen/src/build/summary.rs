//! The fleet in numbers, for the overview tiles and `summary.json`:
//! agents by status, WireGuard links by health, active alarms by severity.

use kattila_fleet::{AgentStatus, Health, Severity};

use crate::view::{AgentView, AlarmView, LinkView, Summary};

pub fn summary(
    agents: &[AgentView],
    links: &[LinkView],
    alarms: &[AlarmView],
    clusters: usize,
) -> Summary {
    let mut s = Summary { agents_total: agents.len(), clusters, ..Summary::default() };
    for a in agents {
        match a.status {
            AgentStatus::Silent => s.agents_silent += 1,
            AgentStatus::Relay => s.agents_relay_only += 1,
            AgentStatus::Up => s.agents_up += 1,
        }
    }
    for l in links.iter().filter(|l| l.kind == "wireguard") {
        if !l.external.is_empty() {
            s.external_peers += 1;
            continue;
        }
        s.links_total += 1;
        match l.health {
            Health::Healthy => s.links_healthy += 1,
            Health::Stale => s.links_stale += 1,
            Health::Down => s.links_down += 1,
            Health::Unknown => s.links_unknown += 1,
        }
        if !l.both_ends {
            s.links_one_sided += 1;
        }
    }
    for al in alarms.iter().filter(|a| a.state == "active") {
        s.alarms_active += 1;
        // An unknown severity counts with the least urgent.
        match Severity::parse(&al.severity) {
            Some(Severity::Critical) => s.alarms_critical += 1,
            Some(Severity::Warning) => s.alarms_warning += 1,
            Some(Severity::Info) | None => s.alarms_info += 1,
        }
        if !al.acknowledged {
            s.alarms_unacknowledged += 1;
        }
    }
    s
}
