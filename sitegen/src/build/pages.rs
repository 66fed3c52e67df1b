//! Who is who: each agent's index, page and shown hostname, which the
//! other parts use to refer to agents.

use std::collections::{HashMap, HashSet};

use kattila_store::snapshot::FleetSnapshot;

use crate::anon::Anon;
use crate::format::page_name;

pub struct Directory {
    /// Agent id → index in the snapshot's (and the view's) agents.
    pub index: HashMap<String, usize>,
    /// Each agent's page relative to the site root, no two the same.
    pub pages: Vec<String>,
    /// Each agent's hostname as pages show it, anonymised: agents that
    /// report the same hostname get the start of their agent id added, so
    /// no two agents look the same.
    pub hostnames: Vec<String>,
    /// Each agent's hostname as reported, anonymised.
    pub reported: Vec<String>,
}

impl Directory {
    pub fn new(snap: &FleetSnapshot, anon: &mut Anon) -> Directory {
        let index = snap.agents.iter().enumerate().map(|(i, a)| (a.agent_id.clone(), i)).collect();
        // A plain id can look like another id's hashed name: the second
        // agent to want a name gets a suffix.
        let mut seen = HashSet::new();
        let pages = snap
            .agents
            .iter()
            .map(|a| {
                let mut name = page_name(&a.agent_id);
                if !seen.insert(name.clone()) {
                    name = format!("{name}-{}", seen.len());
                    seen.insert(name.clone());
                }
                format!("agents/{name}.html")
            })
            .collect();
        let reported: Vec<String> = snap.agents.iter().map(|a| anon.text(&a.hostname)).collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for h in &reported {
            *count.entry(h.as_str()).or_default() += 1;
        }
        let hostnames = reported
            .iter()
            .zip(&snap.agents)
            .map(|(h, a)| {
                if count[h.as_str()] > 1 {
                    let short: String = a.agent_id.chars().take(8).collect();
                    format!("{h} ({short})")
                } else {
                    h.clone()
                }
            })
            .collect();
        Directory { index, pages, hostnames, reported }
    }

    /// The index of the agent `id`, when it is in the snapshot.
    pub fn of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}
