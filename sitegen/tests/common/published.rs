//! Reading a published site as a JSON reader does: the index
//! `agents.json` and the per-agent files it names.
#![allow(dead_code)]

use std::path::Path;

/// The published `agents.json` of a site build, each agent with its
/// interfaces, routes and WireGuard devices joined in from the per-agent
/// file its `detail` names. `None` while a file is missing or partial.
pub fn published_agents(current: &Path) -> Option<serde_json::Value> {
    let read = |rel: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(current.join(rel)).ok()?).ok()
    };
    let mut index = read("api/v1/agents.json")?;
    for agent in index["agents"].as_array_mut()? {
        let detail = read(agent["detail"].as_str()?)?;
        for key in ["interfaces", "routes", "wireguard"] {
            agent[key] = detail[key].clone();
        }
    }
    Some(index)
}
