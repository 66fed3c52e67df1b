//! What changed in the fleet between two builds: the "state" of the fleet
//! (who is there, statuses, interfaces, peers' health, links, alarms),
//! deliberately without counters and timestamps, so that a moving clock
//! is not a change. Used for the per-build line and git commit messages.

use std::collections::{BTreeMap, BTreeSet};

use kattila_fleet::AgentStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shown;
use crate::view::Site;

/// Keys of the digest's maps join their parts with this separator (JSON
/// object keys must be strings).
const SEP: char = '\u{1f}';

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    /// agent id → (hostname, status)
    agents: BTreeMap<String, (String, String)>,
    /// "agent id SEP interface" → (state, addresses)
    interfaces: BTreeMap<String, (String, String)>,
    /// "agent id SEP peer key" → health
    peers: BTreeMap<String, String>,
    /// (kind, a, b, external, health, both ends)
    links: BTreeSet<(String, String, String, String, String, bool)>,
    /// alarm id → (state, acknowledged)
    alarms: BTreeMap<i64, (String, bool)>,
}

impl StateDigest {
    /// From the public view (so it never holds a raw address).
    pub fn of(site: &Site) -> StateDigest {
        // Collected rather than inserted one by one: `BTreeMap` sorts the
        // whole list once and builds the tree in bulk, several times faster
        // for a big fleet. Equal keys keep the last value, as inserts do.
        StateDigest {
            agents: site
                .agents
                .iter()
                .map(|a| (a.agent_id.clone(), (a.hostname.clone(), a.status.as_str().to_string())))
                .collect(),
            interfaces: site
                .agents
                .iter()
                .flat_map(|a| {
                    a.interfaces.iter().map(move |i| {
                        (
                            format!("{}{SEP}{}", a.agent_id, i.name),
                            (i.state.clone(), i.addresses.join(" ")),
                        )
                    })
                })
                .collect(),
            peers: site
                .agents
                .iter()
                .flat_map(|a| {
                    a.wireguard.iter().flat_map(|dev| &dev.peers).map(move |p| {
                        (
                            format!("{}{SEP}{}", a.agent_id, p.public_key),
                            p.health.as_str().to_string(),
                        )
                    })
                })
                .collect(),
            links: site
                .links
                .iter()
                .map(|l| {
                    (
                        l.kind.clone(),
                        l.a.clone(),
                        l.b.clone(),
                        l.external.clone(),
                        l.health.as_str().to_string(),
                        l.both_ends,
                    )
                })
                .collect(),
            alarms: site
                .alarms
                .iter()
                .map(|al| (al.id, (al.state.clone(), al.acknowledged)))
                .collect(),
        }
    }

    /// A short hash of the state, stable across runs.
    pub fn fingerprint(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a digest serialises");
        hex::encode(&Sha256::digest(&bytes)[..12])
    }

    fn name(&self, id: &str) -> String {
        self.agents.get(id).map(|(h, _)| h.clone()).unwrap_or_else(|| id.to_string())
    }
}

/// The difference between two digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub first: bool,
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// (hostname, new status)
    pub status: Vec<(String, String)>,
    pub raised: usize,
    pub resolved: usize,
    pub acknowledged: usize,
    pub links: usize,
    pub interfaces: usize,
    pub peers: usize,
}

/// Up to three hostnames, with hidden characters made visible: the line
/// goes to a terminal and into git commit messages, where an ESC or an
/// override would act rather than show.
fn names(list: &[String]) -> String {
    let mut s = list.iter().take(3).map(|h| shown::visible(h)).collect::<Vec<_>>().join(", ");
    if list.len() > 3 {
        s.push_str(&format!(" and {} more", list.len() - 3));
    }
    s
}

impl Changes {
    pub fn between(old: Option<&StateDigest>, new: &StateDigest) -> Changes {
        let Some(old) = old else { return Changes { first: true, ..Changes::default() } };
        let mut c = Changes::default();
        for (id, (host, status)) in &new.agents {
            match old.agents.get(id) {
                None => c.joined.push(host.clone()),
                Some((_, s)) if s != status => c.status.push((host.clone(), status.clone())),
                _ => {}
            }
        }
        c.left = old
            .agents
            .keys()
            .filter(|id| !new.agents.contains_key(*id))
            .map(|id| old.name(id))
            .collect();
        for (id, (state, acked)) in &new.alarms {
            match old.alarms.get(id) {
                None if state == "active" => c.raised += 1,
                None => {}
                Some((s, a)) => {
                    if s == "active" && state != "active" {
                        c.resolved += 1;
                    } else if s != "active" && state == "active" {
                        c.raised += 1;
                    }
                    if *acked && !a {
                        c.acknowledged += 1;
                    }
                }
            }
        }
        c.links = old.links.symmetric_difference(&new.links).count();
        c.interfaces = count_changed(&old.interfaces, &new.interfaces);
        c.peers = count_changed(&old.peers, &new.peers);
        c
    }

    pub fn is_empty(&self) -> bool {
        !self.first && *self == Changes::default()
    }

    /// "2 alarms raised, 1 resolved; site1-gw00 silent; 3 agents joined".
    pub fn describe(&self) -> String {
        if self.first {
            return "first build".into();
        }
        if self.is_empty() {
            return "no state change".into();
        }
        let mut parts = Vec::new();
        let mut alarms = Vec::new();
        if self.raised > 0 {
            alarms.push(format!(
                "{} alarm{} raised",
                self.raised,
                if self.raised == 1 { "" } else { "s" }
            ));
        }
        if self.resolved > 0 {
            alarms.push(format!("{} resolved", self.resolved));
        }
        if self.acknowledged > 0 {
            alarms.push(format!("{} acknowledged", self.acknowledged));
        }
        if !alarms.is_empty() {
            parts.push(alarms.join(", "));
        }
        let mut by_status: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (host, status) in &self.status {
            by_status.entry(status.as_str()).or_default().push(host.clone());
        }
        for (status, hosts) in by_status {
            let what = match AgentStatus::parse(status) {
                AgentStatus::Silent => "silent",
                AgentStatus::Relay => "reachable only through relays",
                AgentStatus::Up => "back up",
            };
            parts.push(format!("{} {what}", names(&hosts)));
        }
        if !self.joined.is_empty() {
            parts.push(format!(
                "{} agent{} joined ({})",
                self.joined.len(),
                if self.joined.len() == 1 { "" } else { "s" },
                names(&self.joined)
            ));
        }
        if !self.left.is_empty() {
            parts.push(format!(
                "{} agent{} gone ({})",
                self.left.len(),
                if self.left.len() == 1 { "" } else { "s" },
                names(&self.left)
            ));
        }
        let mut small = Vec::new();
        if self.links > 0 {
            small.push(format!(
                "{} link change{}",
                self.links,
                if self.links == 1 { "" } else { "s" }
            ));
        }
        if self.interfaces > 0 {
            small.push(format!(
                "{} interface change{}",
                self.interfaces,
                if self.interfaces == 1 { "" } else { "s" }
            ));
        }
        if self.peers > 0 {
            small.push(format!(
                "{} peer change{}",
                self.peers,
                if self.peers == 1 { "" } else { "s" }
            ));
        }
        if !small.is_empty() {
            parts.push(small.join(", "));
        }
        parts.join("; ")
    }
}

fn count_changed<K: Ord, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> usize {
    let changed_or_new = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).count();
    let gone = old.keys().filter(|k| !new.contains_key(*k)).count();
    changed_or_new + gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(agents: &[(&str, &str)], alarms: &[(i64, &str)]) -> StateDigest {
        let mut d = StateDigest::default();
        for (id, status) in agents {
            d.agents.insert(id.to_string(), (format!("host-{id}"), status.to_string()));
        }
        for (id, state) in alarms {
            d.alarms.insert(*id, (state.to_string(), false));
        }
        d
    }

    #[test]
    fn describes_what_changed() {
        let a = digest(&[("a", "up"), ("b", "up")], &[(1, "active")]);
        assert_eq!(Changes::between(None, &a).describe(), "first build");
        assert_eq!(Changes::between(Some(&a), &a).describe(), "no state change");
        let b = digest(
            &[("a", "silent"), ("b", "up"), ("c", "up")],
            &[(1, "resolved"), (2, "active"), (3, "active")],
        );
        let c = Changes::between(Some(&a), &b);
        assert_eq!(
            c.describe(),
            "2 alarms raised, 1 resolved; host-a silent; 1 agent joined (host-c)"
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn hostnames_in_the_line_show_their_hidden_characters() {
        let a = digest(&[("a", "up")], &[]);
        let mut b = a.clone();
        b.agents.insert("a".into(), ("gw\u{1b}[2J\u{202e}01".into(), "silent".into()));
        b.agents.insert("b".into(), ("x\u{7}".into(), "up".into()));
        let line = Changes::between(Some(&a), &b).describe();
        assert_eq!(line, "gw␛[2J⟨U+202E⟩01 silent; 1 agent joined (x␇)");
    }
}
