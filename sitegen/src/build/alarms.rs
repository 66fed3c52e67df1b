//! The alarm log: every alarm with its agent's name and page, active ones
//! first (most urgent first), then newest first; and how many active
//! alarms each agent has.

use std::cmp::Ordering;

use kattila_fleet::Severity;
use kattila_store::snapshot::{Alarm, FleetSnapshot, Incident};

use crate::anon::Anon;
use crate::build::pages::Directory;
use crate::view::{AlarmView, SilenceView, WindowView};

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
            view(al, who, directory, anon, told_with(al, &snap.incidents))
        })
        .collect();
    log.sort_by(log_order);
    (log, active)
}

/// The incident an alarm not told on its own was told with: one that was
/// notified, groups its kind, covers its agent, and overlapped it in time.
fn told_with<'a>(al: &Alarm, incidents: &'a [Incident]) -> Option<&'a Incident> {
    if al.notified_at.is_some()
        || !kattila_fleet::INCIDENT_GROUPED_KINDS.contains(&al.kind.as_str())
    {
        return None;
    }
    let end = al.resolved_at.unwrap_or(i64::MAX);
    incidents.iter().find(|i| {
        i.notified_at.is_some()
            && i.agents.contains(&al.agent_id)
            && i.first_seen <= end
            && i.resolved_at.unwrap_or(i64::MAX) >= al.first_seen
    })
}

fn view(
    al: &Alarm,
    who: Option<usize>,
    directory: &Directory,
    anon: &mut Anon,
    incident: Option<&Incident>,
) -> AlarmView {
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
        notified_at: al.notified_at.or(incident.and_then(|i| i.notified_at)),
        notified_with: incident.map(|i| anon.text(&format!("site {}: {}", i.site, i.summary))),
        muted: al.muted.as_deref().map(|m| anon.text(m)),
    }
}

/// The silences and maintenance windows of the admin API, as shown.
pub fn mutes(
    snap: &FleetSnapshot,
    anon: &mut Anon,
    now: i64,
) -> (Vec<SilenceView>, Vec<WindowView>) {
    let silences = snap
        .silences
        .iter()
        .map(|s| SilenceView {
            matchers: s.matchers.iter().map(|m| anon.text(m)).collect(),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            comment: anon.text(&s.comment),
            active: s.starts_at <= now,
        })
        .collect();
    let windows = snap
        .windows
        .iter()
        .map(|w| {
            let spec = &w.spec;
            let list = |key: &str| -> Vec<String> {
                spec[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).map(String::from).collect())
                    .unwrap_or_default()
            };
            let (sites, agents) = (list("sites"), list("agents"));
            let mut scope = Vec::new();
            if !sites.is_empty() {
                scope.push(format!("sites {}", sites.join(", ")));
            }
            if !agents.is_empty() {
                scope.push(format!("agents {}", agents.join(", ")));
            }
            let scope =
                if scope.is_empty() { "the whole fleet".to_string() } else { scope.join("; ") };
            let s = |key: &str| spec[key].as_str().unwrap_or("").to_string();
            let zone = spec["time_zone"].as_str().unwrap_or("UTC");
            let when = match spec["every"].as_str() {
                Some(every) => {
                    let days = list("days");
                    let on = if days.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", days.join(", "))
                    };
                    format!("every {every}{on} at {} for {} ({zone})", s("at"), s("duration"))
                }
                None => format!("{} to {} ({zone})", s("start"), s("end")),
            };
            WindowView {
                name: anon.text(&s("name")),
                scope: anon.text(&scope),
                when: anon.text(&when),
            }
        })
        .collect();
    (silences, windows)
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
