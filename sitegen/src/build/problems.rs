//! What needs attention, most severe first: the overview's one-sentence
//! verdict, one line per problem, and the lists behind every count (silent
//! and relay-only agents; links down, unknown, stale and listed by one end
//! only). Lists are in natural order of names.
//!
//! The receiver's active incidents come first, one line each (a whole site
//! silent is one line, not one per agent); the lines made here leave out
//! what an incident already says, and the lists and counts keep it.

use std::collections::{BTreeMap, HashSet};

use kattila_fleet::{AgentStatus, Health};

use crate::natural::natural_cmp;
use crate::shown::Pieces;
use crate::view::{
    AgentView, AlarmView, ClusterView, IncidentView, LinkView, ProblemLine, Problems, Summary,
};

/// Names listed in a problem line before it says "and N more".
const NAMES_IN_A_LINE: usize = 3;

pub fn problems(
    agents: &[AgentView],
    links: &[LinkView],
    clusters: &[ClusterView],
    incidents: &[IncidentView],
    alarms: &[AlarmView],
    summary: &Summary,
    index: &std::collections::HashMap<String, usize>,
) -> Problems {
    let by_name = |list: &mut Vec<usize>| {
        list.sort_by(|&a, &b| natural_cmp(&agents[a].hostname, &agents[b].hostname));
    };
    let with = |s: AgentStatus| (0..agents.len()).filter(|&i| agents[i].status == s).collect();
    let mut p = Problems {
        silent: with(AgentStatus::Silent),
        relay: with(AgentStatus::Relay),
        ..Problems::default()
    };
    by_name(&mut p.silent);
    by_name(&mut p.relay);
    let link_name = |l: &LinkView| {
        let name = |id: &str| index.get(id).map_or(id.to_string(), |&i| agents[i].hostname.clone());
        (name(&l.a), name(&l.b))
    };
    let mut wireguard: Vec<usize> = (0..links.len())
        .filter(|&l| links[l].kind == "wireguard" && links[l].external.is_empty())
        .collect();
    wireguard.sort_by(|&x, &y| {
        let ((xa, xb), (ya, yb)) = (link_name(&links[x]), link_name(&links[y]));
        natural_cmp(&xa, &ya).then_with(|| natural_cmp(&xb, &yb))
    });
    for &l in &wireguard {
        match links[l].health {
            Health::Down => p.links_down.push(l),
            Health::Unknown => p.links_unknown.push(l),
            Health::Stale => p.links_stale.push(l),
            Health::Healthy => {}
        }
        if !links[l].both_ends {
            p.links_one_sided.push(l);
        }
    }

    // The receiver's incidents, one line each, linking to their cluster.
    // What they involve is not said again below: silent and relayed agents
    // of a silent site or a gateway down, links stale at a troubled site.
    let mut covered_agents = HashSet::new();
    let mut covered_link_ends = HashSet::new();
    for inc in incidents.iter().filter(|i| i.state == "active") {
        let text = match &inc.cluster_label {
            Some(label) => Pieces::new().and("Cluster ").and(label.as_str()).and(": "),
            None => Pieces::new(),
        }
        .and(inc.summary.as_str());
        let (severity, mark) = match inc.severity.as_str() {
            "critical" => ("critical", "✕"),
            _ => ("warning", if inc.kind == "links_stale" { "◐" } else { "!" }),
        };
        let href = inc.cluster_page.as_deref().unwrap_or("problems.html");
        p.lines.push(line(severity, mark, text, href));
        let into =
            if inc.kind == "links_stale" { &mut covered_link_ends } else { &mut covered_agents };
        into.extend(inc.agents.iter().copied());
    }
    let silent_alone: Vec<usize> =
        p.silent.iter().copied().filter(|i| !covered_agents.contains(i)).collect();
    if !silent_alone.is_empty() {
        let text = names(agents, &silent_alone, "silent", "agent", "agents");
        p.lines.push(line("critical", "✕", text, "problems.html#silent"));
    }
    // A stale or down link with an end at a site whose links are one
    // incident is said by that incident.
    let covered_link = |l: usize| {
        [&links[l].a, &links[l].b]
            .iter()
            .any(|id| index.get(id.as_str()).is_some_and(|i| covered_link_ends.contains(i)))
    };
    let links_down: Vec<usize> =
        p.links_down.iter().copied().filter(|&l| !covered_link(l)).collect();
    let links_stale: Vec<usize> =
        p.links_stale.iter().copied().filter(|&l| !covered_link(l)).collect();
    if !links_down.is_empty() {
        let to_silent = links_down
            .iter()
            .filter(|&&l| {
                [&links[l].a, &links[l].b].iter().any(|id| {
                    index.get(id.as_str()).is_some_and(|&i| agents[i].status == AgentStatus::Silent)
                })
            })
            .count();
        let n = links_down.len();
        let mut text = format!("{n} WireGuard link{} down", plural(n));
        if to_silent > 0 {
            text.push_str(&format!(" ({to_silent} of them to silent agents)"));
        }
        p.lines.push(line("critical", "✕", text.into(), "problems.html#links-down"));
    }
    // Agents reached only through relays, by cluster: usually their way
    // out (a gateway, an uplink) is broken.
    let relay: Vec<usize> =
        p.relay.iter().copied().filter(|i| !covered_agents.contains(i)).collect();
    if !relay.is_empty() {
        let mut by_cluster: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &relay {
            by_cluster.entry(agents[i].cluster.as_str()).or_default().push(i);
        }
        if by_cluster.len() <= NAMES_IN_A_LINE {
            for (id, members) in by_cluster {
                let mut text = match clusters.iter().find(|c| c.id == id).map(|c| c.label.as_str())
                {
                    Some(label) => Pieces::new().and("Cluster ").and(label).and(": "),
                    None => Pieces::new(),
                };
                text = text.join(names(
                    agents,
                    &members,
                    "reachable only through relays",
                    "agent",
                    "agents",
                ));
                p.lines.push(line("warning", "↪", text, "problems.html#relay"));
            }
        } else {
            let n = relay.len();
            let text = format!(
                "{n} agent{} in {} clusters reachable only through relays",
                plural(n),
                by_cluster.len()
            );
            p.lines.push(line("warning", "↪", text.into(), "problems.html#relay"));
        }
    }
    for (list, what, mark, anchor) in [
        (
            &p.links_unknown,
            "in unknown state (an end is silent or has not said)",
            "?",
            "links-unknown",
        ),
        (&links_stale, "stale (no recent handshake, no traffic)", "◐", "links-stale"),
        (&p.links_one_sided, "listed by one end only", "⇢", "links-one-sided"),
    ] {
        if !list.is_empty() {
            let n = list.len();
            let text = format!("{n} WireGuard link{} {what}", plural(n));
            p.lines.push(line("warning", mark, text.into(), &format!("problems.html#{anchor}")));
        }
    }
    let active = alarms.iter().filter(|a| a.state == "active").count();
    if active > 0 {
        let severity = if summary.alarms_critical > 0 { "critical" } else { "warning" };
        let mut text = format!("{active} active alarm{}", plural(active));
        if summary.alarms_unacknowledged > 0 {
            text.push_str(&format!(", {} not acknowledged", summary.alarms_unacknowledged));
        }
        p.lines.push(line(severity, "!", text.into(), "alarms.html"));
    }
    // Most severe first; within a severity, in the order made above.
    p.lines.sort_by_key(|l| l.severity != "critical");
    p.verdict = match p.lines.first() {
        None => "ok".into(),
        Some(l) => l.severity.clone(),
    };
    p.headline = if p.lines.is_empty() {
        format!(
            "All well: {} agent{} up, {} WireGuard link{} healthy, no active alarms.",
            summary.agents_up,
            plural(summary.agents_up),
            summary.links_healthy,
            plural(summary.links_healthy)
        )
    } else {
        let n = p.lines.len();
        format!("{n} problem{} need{} attention.", plural(n), if n == 1 { "s" } else { "" })
    };
    p
}

fn line(severity: &str, mark: &str, text: Pieces, href: &str) -> ProblemLine {
    ProblemLine { severity: severity.into(), mark: mark.into(), text, href: href.into() }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// "a, b and c silent" or "12 agents silent: a, b, c and 9 more".
fn names(agents: &[AgentView], list: &[usize], what: &str, one: &str, many: &str) -> Pieces {
    let n = list.len();
    if n > NAMES_IN_A_LINE {
        let mut text = Pieces::new().and(format!("{n} {many} {what}: "));
        for (k, &i) in list.iter().take(NAMES_IN_A_LINE).enumerate() {
            if k > 0 {
                text = text.and(", ");
            }
            text = text.and(agents[i].hostname.as_str());
        }
        return text.and(format!(" and {} more", n - NAMES_IN_A_LINE));
    }
    let mut text = Pieces::new().and(format!("{} ", if n == 1 { one } else { many }));
    for (k, &i) in list.iter().enumerate() {
        if k > 0 {
            text = text.and(if k + 1 == n { " and " } else { ", " });
        }
        text = text.and(agents[i].hostname.as_str());
    }
    text.and(format!(" {what}"))
}
