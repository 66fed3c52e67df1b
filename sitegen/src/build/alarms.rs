//! The alarm log: every alarm with its agent's name and page, active ones
//! first (most urgent first), then newest first; and how many active
//! alarms each agent has.

use std::cmp::Ordering;

use kattila_fleet::Severity;
use kattila_store::snapshot::{Alarm, FleetSnapshot};

use crate::anon::Anon;
use crate::build::pages::Directory;
use crate::view::AlarmView;

/// The log, and each agent's number of active alarms (by agent index).
pub fn alarms(
    snap: &FleetSnapshot,
    directory: &Directory,
    anon: &mut Anon,
) -> (Vec<AlarmView>, Vec<usize>) {
    let mut active = vec![0usize; snap.agents.len()];
    let mut log: Vec<AlarmView> = snap
        .alarms
        .iter()
        .map(|al| {
            let who = directory.of(&al.agent_id);
            if let (Some(i), true) = (who, al.state == "active") {
                active[i] += 1;
            }
            view(al, who, directory, anon)
        })
        .collect();
    log.sort_by(log_order);
    (log, active)
}

fn view(al: &Alarm, who: Option<usize>, directory: &Directory, anon: &mut Anon) -> AlarmView {
    // Raised until resolved, or until last observed while active (not
    // until now: pages stay the same while nothing changes).
    let end = al.resolved_at.unwrap_or(al.last_seen);
    AlarmView {
        id: al.id,
        kind: anon.text(&al.kind),
        kind_text: match kattila_fleet::alarm_kind_words(&al.kind) {
            Some(words) => words.to_string(),
            None => anon.text(&al.kind),
        },
        severity: anon.text(&al.severity),
        agent_id: al.agent_id.clone(),
        hostname: who.map(|i| directory.hostnames[i].clone()),
        agent_page: who.map(|i| directory.pages[i].clone()),
        subject: anon.text(&al.subject),
        message: anon.text(&al.message),
        state: al.state.clone(),
        first_seen: al.first_seen,
        last_seen: al.last_seen,
        resolved_at: al.resolved_at,
        acked_at: al.acked_at,
        acknowledged: al.acked_at.is_some(),
        duration: (end - al.first_seen).max(0),
    }
}

/// Active before resolved; active ones by severity; then newest first.
fn log_order(x: &AlarmView, y: &AlarmView) -> Ordering {
    let (x_active, y_active) = (x.state == "active", y.state == "active");
    y_active
        .cmp(&x_active)
        .then_with(|| {
            if x_active {
                Severity::rank(&x.severity).cmp(&Severity::rank(&y.severity))
            } else {
                Ordering::Equal
            }
        })
        .then(y.first_seen.cmp(&x.first_seen))
        .then(y.id.cmp(&x.id))
}
