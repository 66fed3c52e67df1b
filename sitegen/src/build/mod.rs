//! Making the public view ([`crate::view`]) from one snapshot, part by
//! part: who is who, alarms, links, agents, clusters, incidents, summary. Each part
//! reads the snapshot and what the parts before it made, and passes every
//! string it keeps through the anonymiser. Nothing the receiver stored is
//! decided again here: agent status, peer and link health and whether both
//! ends of a link list each other are read as they are.

mod agents;
mod alarms;
mod clusters;
mod incidents;
mod links;
mod pages;
mod problems;
mod summary;

use kattila_store::snapshot::FleetSnapshot;

use crate::anon::Anon;
use crate::view::{Site, SCHEMA_VERSION};

impl Site {
    /// Builds the view. All text passes through `anon`.
    pub fn build(snap: &FleetSnapshot, anon: &mut Anon, now: i64) -> Site {
        let directory = pages::Directory::new(snap, anon);
        let (alarms, active_alarms) = alarms::alarms(snap, &directory, anon);
        let (silences, windows) = alarms::mutes(snap, anon, now);
        let links = links::links(snap, anon);
        let pair_links = links::pair_links(&links, &directory.index);
        let both_ends = |i: usize, j: usize| {
            pair_links.get(&(i.min(j), i.max(j))).is_some_and(|&l| links[l].both_ends)
        };
        let mut agents = agents::agents(snap, &directory, &active_alarms, &both_ends, anon, now);
        let clusters = clusters::clusters(snap, &mut agents, &links, &directory.index, anon);
        let incidents = incidents::incidents(snap, &agents, &clusters, &directory.index, anon);
        let summary = summary::summary(&agents, &links, &alarms, clusters.len());
        let problems = problems::problems(
            &agents,
            &links,
            &clusters,
            &incidents,
            &alarms,
            &summary,
            &directory.index,
        );
        Site {
            schema_version: SCHEMA_VERSION,
            generated_at: now,
            addresses_revealed: anon.is_revealing(),
            summary,
            agents,
            alarms,
            incidents,
            silences,
            windows,
            links,
            clusters,
            problems,
            index: directory.index,
            pair_links,
        }
    }
}
