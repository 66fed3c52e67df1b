//! Which messages to send, as a pure step: (the configuration, the active
//! alarms and incidents, what each subject was told, now) → outbox rows
//! and told-state for storage to write in the same transaction.
//!
//! It compares what holds with what was told, so nothing depends on
//! seeing an edge: a raise missed by a crash, the end of a maintenance
//! window or a silence's expiry is simply a difference found by the next
//! run. The rules, per subject (an alarm's condition, or an incident's
//! kind and site):
//! - an alarm of an agent inside an active incident of a kind the
//!   incidents group is told as that incident, not alone;
//! - a raise is told once the subject has been active for its kind's
//!   hold (`raise_hold`, `link_raise_hold` for the link kinds, at least
//!   `group_wait` for what incidents group), not muted
//!   by a window or silence, and `min_gap` after its last message;
//! - while told and active: a repeat every route's `repeat_interval`,
//!   unless the alarm is acknowledged;
//! - a resolve is told once the subject stayed gone for its kind's
//!   `resolve_hold` (`link_resolve_hold` for the link kinds);
//!   a condition back before that continues the same story, so a
//!   flapping link sends nothing more.

use std::collections::{BTreeMap, BTreeSet};

use kattila_store::notify::{AlarmSubject, IncidentSubject, NotifyChange, NotifyInputs, Told};

use super::config::{Labels, NotifyConfig, Silence, Window};
use super::message::{AgentRef, Message, Subject, SCHEMA};

/// Event alarms (resolved by age): no resolve is told.
const EVENT_KINDS: [&str; 2] = ["interface_new", "endpoint_changed"];

/// What the API's silences and windows and the file's make together.
pub struct Mutes<'a> {
    pub silences: Vec<Silence>,
    pub windows: Vec<Window>,
    config: &'a NotifyConfig,
}

impl<'a> Mutes<'a> {
    pub fn new(config: &'a NotifyConfig, inputs: &NotifyInputs) -> Self {
        let silences = inputs.silences.iter().filter_map(Silence::from_row).collect();
        let windows = inputs
            .windows
            .iter()
            .filter_map(|w| Window::from_json(&w.spec, Some(w.id)).ok())
            .collect();
        Mutes { silences, windows, config }
    }

    /// Why `labels` are held back at `now`, if they are.
    pub fn reason(&self, labels: &Labels, now: i64) -> Option<String> {
        let silence = self.config.silences.iter().chain(&self.silences);
        if let Some(s) = silence.into_iter().find(|s| s.active_at(now) && s.matches(labels)) {
            return Some(format!("silenced: {}", s.comment));
        }
        let windows = self.config.windows.iter().chain(&self.windows);
        windows
            .into_iter()
            .find(|w| w.open_at(now) && w.covers(labels))
            .map(|w| format!("maintenance: {}", w.name))
    }
}

/// One active subject.
struct Active<'a> {
    key: String,
    row_id: i64,
    labels: Labels,
    first_seen: i64,
    acked: bool,
    muted_was: Option<&'a str>,
    grouped: bool,
    alarm: Option<&'a AlarmSubject>,
    incident: Option<&'a IncidentSubject>,
}

pub fn alarm_key(a: &AlarmSubject) -> String {
    format!("alarm:{}:{}:{}", a.kind, a.agent_id, a.subject)
}

pub fn incident_key(i: &IncidentSubject) -> String {
    format!("incident:{}:{}", i.kind, i.site)
}

fn alarm_labels(a: &AlarmSubject) -> Labels {
    Labels {
        kind: a.kind.clone(),
        severity: a.severity.clone(),
        agents: vec![a.agent_id.clone()],
        hosts: vec![a.hostname.clone()],
        site: a.site.clone(),
    }
}

fn incident_labels(i: &IncidentSubject) -> Labels {
    Labels {
        kind: i.kind.clone(),
        severity: i.severity.clone(),
        agents: i.agents.clone(),
        hosts: i.hostnames.clone(),
        site: i.site.clone(),
    }
}

/// The labels a told message was about (for its resolve's routes and mutes).
fn message_labels(m: &Message) -> Labels {
    Labels {
        kind: m.subject.kind.clone(),
        severity: m.subject.severity.clone(),
        agents: m.subject.agents.iter().map(|a| a.agent_id.clone()).collect(),
        hosts: m.subject.agents.iter().map(|a| a.hostname.clone()).collect(),
        site: m.subject.site.clone(),
    }
}

fn words(kind: &str) -> String {
    kind.replace('_', " ")
}

fn raise_message(s: &Active<'_>, now: i64) -> Message {
    let (type_, title, text, detail, agents) = match (s.alarm, s.incident) {
        (Some(a), _) => {
            let what = if a.subject.is_empty() {
                words(&a.kind)
            } else {
                format!("{} {}", words(&a.kind), a.subject)
            };
            (
                "alarm",
                format!("{}: {what}", a.hostname),
                format!("{} alarm on {}: {}", a.severity, a.hostname, a.message),
                a.subject.clone(),
                vec![AgentRef { agent_id: a.agent_id.clone(), hostname: a.hostname.clone() }],
            )
        }
        (None, Some(i)) => (
            "incident",
            format!("site {}: {}", i.site, i.summary),
            format!(
                "{} incident ({}) at site {}: {}",
                i.severity,
                words(&i.kind),
                i.site,
                i.summary
            ),
            String::new(),
            i.agents
                .iter()
                .zip(&i.hostnames)
                .map(|(id, h)| AgentRef { agent_id: id.clone(), hostname: h.clone() })
                .collect(),
        ),
        (None, None) => unreachable!("a subject is an alarm or an incident"),
    };
    Message {
        schema: SCHEMA.into(),
        idempotency_key: format!("{type_}-{}-raised", s.row_id),
        event: "raised".into(),
        subject: Subject {
            type_: type_.into(),
            key: s.key.clone(),
            kind: s.labels.kind.clone(),
            severity: s.labels.severity.clone(),
            site: s.labels.site.clone(),
            agents,
            detail,
        },
        title,
        text,
        first_seen: s.first_seen,
        resolved_at: None,
        at: now,
        url: None,
    }
}

/// The channels `labels` go to, and the shortest repeat interval and
/// whether resolves are told on the routes taken.
fn routed(config: &NotifyConfig, labels: &Labels) -> (Vec<String>, Option<i64>, bool) {
    let mut channels = BTreeSet::new();
    let mut repeat: Option<i64> = None;
    let mut resolved = false;
    for r in config.routes_for(labels) {
        channels.extend(r.channels.iter().cloned());
        if let Some(d) = r.repeat_interval {
            let d = d.as_secs().max(1) as i64;
            repeat = Some(repeat.map_or(d, |r| r.min(d)));
        }
        resolved |= r.send_resolved;
    }
    (channels.into_iter().collect(), repeat, resolved)
}

fn enqueue(out: &mut Vec<NotifyChange>, channels: &[String], m: &Message, now: i64) {
    let payload = serde_json::to_string(m).expect("a message serialises");
    for c in channels {
        out.push(NotifyChange::Enqueue {
            event_key: m.idempotency_key.clone(),
            channel: c.clone(),
            subject: m.subject.key.clone(),
            event: match m.event.as_str() {
                "raised" => "raised",
                "resolved" => "resolved",
                _ => "repeat",
            },
            payload: payload.clone(),
            now,
        });
    }
}

/// Decides what to write for `inputs` at `now`.
pub fn decide(config: &NotifyConfig, inputs: &NotifyInputs, now: i64) -> Vec<NotifyChange> {
    let mutes = Mutes::new(config, inputs);
    let noise = &config.noise;
    let mut out = Vec::new();
    let told: BTreeMap<&str, &Told> = inputs.told.iter().map(|t| (t.subject.as_str(), t)).collect();
    let in_incident: BTreeSet<&str> =
        inputs.incidents.iter().flat_map(|i| i.agents.iter().map(String::as_str)).collect();
    let mut active: Vec<Active<'_>> = Vec::new();
    for a in &inputs.alarms {
        active.push(Active {
            key: alarm_key(a),
            row_id: a.id,
            labels: alarm_labels(a),
            first_seen: a.first_seen,
            acked: a.acked,
            muted_was: a.muted.as_deref(),
            grouped: kattila_fleet::INCIDENT_GROUPED_KINDS.contains(&a.kind.as_str()),
            alarm: Some(a),
            incident: None,
        });
    }
    for i in &inputs.incidents {
        active.push(Active {
            key: incident_key(i),
            row_id: i.id,
            labels: incident_labels(i),
            first_seen: i.first_seen,
            acked: i.acked,
            muted_was: i.muted.as_deref(),
            grouped: true,
            alarm: None,
            incident: Some(i),
        });
    }
    let mut seen = BTreeSet::new();
    for s in &active {
        seen.insert(s.key.as_str());
        let muted = mutes.reason(&s.labels, now);
        if muted.as_deref() != s.muted_was {
            out.push(match s.alarm {
                Some(_) => NotifyChange::AlarmMuted { id: s.row_id, muted: muted.clone() },
                None => NotifyChange::IncidentMuted { id: s.row_id, muted: muted.clone() },
            });
        }
        let notified = |out: &mut Vec<NotifyChange>, at: i64| {
            out.push(match s.alarm {
                Some(_) => NotifyChange::AlarmNotified { id: s.row_id, at },
                None => NotifyChange::IncidentNotified { id: s.row_id, at },
            })
        };
        let (channels, repeat, _) = routed(config, &s.labels);
        match told.get(s.key.as_str()).filter(|t| t.state == "raised") {
            Some(t) => {
                // Told and active: the same story, maybe of a newer row
                // (the condition came back within the resolve hold).
                let mut row_id = t.row_id;
                if t.row_id != s.row_id {
                    row_id = s.row_id;
                    notified(&mut out, t.told_at);
                }
                let mut last_sent = t.last_sent;
                let due = repeat.is_some_and(|r| now - t.last_sent >= r);
                if due && muted.is_none() && !s.acked && !channels.is_empty() {
                    if let Ok(raised) = serde_json::from_str::<Message>(&t.payload) {
                        let key = format!("{}-{}-repeat-{now}", raised.subject.type_, s.row_id);
                        enqueue(&mut out, &channels, &raised.retold("repeat", key, now), now);
                        last_sent = now;
                    }
                }
                if row_id != t.row_id || last_sent != t.last_sent {
                    out.push(NotifyChange::Told {
                        subject: s.key.clone(),
                        row_id,
                        state: "raised",
                        told_at: t.told_at,
                        last_sent,
                        payload: t.payload.clone(),
                    });
                }
            }
            None => {
                let covered =
                    s.alarm.is_some_and(|a| s.grouped && in_incident.contains(a.agent_id.as_str()));
                let holds = noise.holds(&s.labels.kind);
                let hold =
                    if s.grouped { holds.raise.max(noise.group_wait.secs()) } else { holds.raise };
                let gap_ok =
                    told.get(s.key.as_str()).is_none_or(|t| now - t.last_sent >= holds.min_gap);
                if covered || muted.is_some() || channels.is_empty() || !gap_ok {
                    continue;
                }
                if now - s.first_seen < hold {
                    continue;
                }
                let m = raise_message(s, now);
                enqueue(&mut out, &channels, &m, now);
                notified(&mut out, now);
                out.push(NotifyChange::Told {
                    subject: s.key.clone(),
                    row_id: s.row_id,
                    state: "raised",
                    told_at: now,
                    last_sent: now,
                    payload: serde_json::to_string(&m).expect("a message serialises"),
                });
            }
        }
    }
    // Told raised and no longer active: the resolve, once it held.
    for t in
        inputs.told.iter().filter(|t| t.state == "raised" && !seen.contains(t.subject.as_str()))
    {
        let Ok(raised) = serde_json::from_str::<Message>(&t.payload) else { continue };
        let labels = message_labels(&raised);
        let gone_since = t.row_resolved_at.unwrap_or(now);
        let holds = noise.holds(&raised.subject.kind);
        if now - gone_since < holds.resolve
            || now - t.last_sent < holds.min_gap
            || mutes.reason(&labels, now).is_some()
        {
            continue;
        }
        let (channels, _, send_resolved) = routed(config, &labels);
        if send_resolved && !EVENT_KINDS.contains(&raised.subject.kind.as_str()) {
            let key = format!("{}-{}-resolved", raised.subject.type_, t.row_id);
            let mut m = raised.retold("resolved", key, now);
            m.resolved_at = Some(gone_since);
            enqueue(&mut out, &channels, &m, now);
        }
        out.push(NotifyChange::Told {
            subject: t.subject.clone(),
            row_id: t.row_id,
            state: "resolved",
            told_at: t.told_at,
            last_sent: now,
            payload: t.payload.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kattila_store::notify::SilenceRow;

    const CONFIG: &str = r#"
[noise]
raise_hold = "10s"
group_wait = "30s"
resolve_hold = "60s"
min_gap = "20s"
[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[[routes]]
channels = ["hook"]
repeat_interval = "100s"
[[windows]]
name = "night"
agents = ["b"]
start = "1970-01-01T00:00:00Z"
end = "1970-01-01T00:16:40Z"
"#;

    fn config() -> NotifyConfig {
        NotifyConfig::parse(CONFIG, &|_| None).unwrap()
    }

    /// An alarm of a kind that is not a link kind, so `[noise]`'s own
    /// holds apply.
    fn alarm(id: i64, agent: &str, first_seen: i64) -> AlarmSubject {
        AlarmSubject {
            id,
            kind: "interface_gone".into(),
            severity: "warning".into(),
            agent_id: agent.into(),
            hostname: format!("host-{agent}"),
            site: "hel".into(),
            subject: "eth0".into(),
            message: "eth0 is down".into(),
            first_seen,
            acked: false,
            muted: None,
        }
    }

    /// Runs `decide` and folds its told-state back into `inputs`, as the
    /// database would; returns the events enqueued.
    fn step(inputs: &mut NotifyInputs, now: i64) -> Vec<&'static str> {
        step_in(&config(), inputs, now)
    }

    fn step_in(config: &NotifyConfig, inputs: &mut NotifyInputs, now: i64) -> Vec<&'static str> {
        let changes = decide(config, inputs, now);
        let mut events = Vec::new();
        for c in changes {
            match c {
                NotifyChange::Enqueue { event, .. } => events.push(event),
                NotifyChange::Told { subject, row_id, state, told_at, last_sent, payload } => {
                    inputs.told.retain(|t| t.subject != subject);
                    inputs.told.push(Told {
                        subject,
                        row_id,
                        state: state.into(),
                        told_at,
                        last_sent,
                        payload,
                        row_resolved_at: None,
                    });
                }
                _ => {}
            }
        }
        events
    }

    fn resolve_rows(inputs: &mut NotifyInputs, at: i64) {
        inputs.alarms.clear();
        for t in &mut inputs.told {
            t.row_resolved_at = Some(at);
        }
    }

    #[test]
    fn raise_waits_for_its_hold_and_resolve_for_its_hold_down() {
        let mut inputs = NotifyInputs { alarms: vec![alarm(1, "a", 2000)], ..Default::default() };
        assert!(step(&mut inputs, 2005).is_empty(), "inside raise_hold");
        assert_eq!(step(&mut inputs, 2010), ["raised"]);
        assert!(step(&mut inputs, 2011).is_empty(), "told once");
        resolve_rows(&mut inputs, 2050);
        assert!(step(&mut inputs, 2100).is_empty(), "inside resolve_hold");
        assert_eq!(step(&mut inputs, 2110), ["resolved"]);
        assert!(step(&mut inputs, 2200).is_empty());
    }

    #[test]
    fn a_condition_back_within_the_hold_down_continues_its_story() {
        let mut inputs = NotifyInputs { alarms: vec![alarm(1, "a", 2000)], ..Default::default() };
        assert_eq!(step(&mut inputs, 2010), ["raised"]);
        resolve_rows(&mut inputs, 2020);
        assert!(step(&mut inputs, 2030).is_empty());
        // Flapping: a new alarm row of the same condition.
        inputs.alarms = vec![alarm(2, "a", 2040)];
        assert!(step(&mut inputs, 2050).is_empty());
        assert_eq!(inputs.told[0].row_id, 2, "the story follows the new row");
        resolve_rows(&mut inputs, 2060);
        assert!(step(&mut inputs, 2100).is_empty());
        assert_eq!(step(&mut inputs, 2120), ["resolved"]);
    }

    #[test]
    fn an_alarm_that_flaps_faster_than_the_raise_hold_is_never_told() {
        let mut inputs = NotifyInputs::default();
        for (i, t) in (0..10).map(|i| (i, 2000 + i * 8)) {
            inputs.alarms = vec![alarm(i + 1, "a", t)];
            assert!(step(&mut inputs, t + 4).is_empty());
            inputs.alarms.clear();
            assert!(step(&mut inputs, t + 6).is_empty());
        }
        assert!(inputs.told.is_empty());
    }

    /// Only a channel and a route: every noise setting is the default.
    const DEFAULTS: &str = r#"
[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[default_route]
channels = ["hook"]
"#;

    fn link(id: i64, kind: &str, first_seen: i64) -> AlarmSubject {
        AlarmSubject { kind: kind.into(), ..alarm(id, "a", first_seen) }
    }

    #[test]
    fn with_defaults_a_link_flapping_with_the_handshake_cadence_is_never_told() {
        let config = NotifyConfig::parse(DEFAULTS, &|_| None).unwrap();
        for kind in ["peer_stale", "interface_down", "relay_only"] {
            // Stale for up to a handshake round and its retries (120 s +
            // 20 s), fresh again for a few reports, over and over.
            let mut inputs = NotifyInputs::default();
            for i in 0..20 {
                let t = 1000 + i * 150;
                inputs.alarms = vec![link(i + 1, kind, t)];
                for now in (t..t + 140).step_by(10) {
                    assert!(step_in(&config, &mut inputs, now).is_empty(), "{kind} at {now}");
                }
                resolve_rows(&mut inputs, t + 140);
                assert!(step_in(&config, &mut inputs, t + 145).is_empty());
            }
            assert!(inputs.told.is_empty(), "{kind}: nothing told");
        }
    }

    #[test]
    fn with_defaults_a_link_down_for_good_is_told_once_and_its_recovery_once_settled() {
        let config = NotifyConfig::parse(DEFAULTS, &|_| None).unwrap();
        let mut inputs =
            NotifyInputs { alarms: vec![link(1, "peer_stale", 1000)], ..Default::default() };
        assert!(step_in(&config, &mut inputs, 1149).is_empty(), "inside the link raise hold");
        assert_eq!(step_in(&config, &mut inputs, 1150), ["raised"]);
        // Back up, then stale again within the link hold-down: one story.
        resolve_rows(&mut inputs, 1400);
        assert!(step_in(&config, &mut inputs, 1500).is_empty());
        inputs.alarms = vec![link(2, "peer_stale", 1560)];
        assert!(step_in(&config, &mut inputs, 1570).is_empty(), "continues, not raised again");
        resolve_rows(&mut inputs, 1600);
        assert!(step_in(&config, &mut inputs, 1779).is_empty(), "inside the link hold-down");
        assert_eq!(step_in(&config, &mut inputs, 1780), ["resolved"]);
    }

    #[test]
    fn with_defaults_other_kinds_are_told_at_once_and_grouped_kinds_after_the_group_wait() {
        let config = NotifyConfig::parse(DEFAULTS, &|_| None).unwrap();
        let mut inputs =
            NotifyInputs { alarms: vec![link(1, "interface_gone", 1000)], ..Default::default() };
        assert_eq!(step_in(&config, &mut inputs, 1000), ["raised"], "no raise hold");
        let mut inputs =
            NotifyInputs { alarms: vec![link(1, "agent_silent", 1000)], ..Default::default() };
        assert!(step_in(&config, &mut inputs, 1029).is_empty());
        assert_eq!(step_in(&config, &mut inputs, 1030), ["raised"], "after group_wait");
    }

    #[test]
    fn a_kind_may_set_its_own_holds() {
        let text = format!(
            "{DEFAULTS}[noise]\nlink_raise_hold = \"5m\"\n[noise.kind.interface_down]\nraise_hold = \"5s\"\nresolve_hold = \"0s\"\nmin_gap = \"0s\"\n"
        );
        let config = NotifyConfig::parse(&text, &|_| None).unwrap();
        assert_eq!(config.noise.holds("peer_stale").raise, 300);
        let mut inputs =
            NotifyInputs { alarms: vec![link(1, "interface_down", 1000)], ..Default::default() };
        assert_eq!(step_in(&config, &mut inputs, 1005), ["raised"]);
        resolve_rows(&mut inputs, 1006);
        assert_eq!(step_in(&config, &mut inputs, 1006), ["resolved"]);
        let bad = format!("{DEFAULTS}[noise.kind.link_down]\nraise_hold = \"5s\"\n");
        let err = NotifyConfig::parse(&bad, &|_| None).unwrap_err().to_string();
        assert!(err.contains("[noise.kind.link_down]: no such kind"), "{err}");
    }

    #[test]
    fn repeats_stop_when_acknowledged() {
        let mut inputs = NotifyInputs { alarms: vec![alarm(1, "a", 2000)], ..Default::default() };
        assert_eq!(step(&mut inputs, 2010), ["raised"]);
        assert_eq!(step(&mut inputs, 2110), ["repeat"]);
        inputs.alarms[0].acked = true;
        assert!(step(&mut inputs, 2300).is_empty());
    }

    #[test]
    fn a_window_records_but_holds_back_and_tells_at_its_end() {
        // Agent b is in the window until 1000 s.
        let mut inputs = NotifyInputs { alarms: vec![alarm(1, "b", 100)], ..Default::default() };
        let changes = decide(&config(), &inputs, 200);
        assert!(changes.iter().any(|c| matches!(c,
            NotifyChange::AlarmMuted { id: 1, muted: Some(m) } if m == "maintenance: night")));
        assert!(!changes.iter().any(|c| matches!(c, NotifyChange::Enqueue { .. })));
        assert!(step(&mut inputs, 999).is_empty());
        assert_eq!(step(&mut inputs, 1000), ["raised"], "still present at the end: told once");
        assert!(step(&mut inputs, 1001).is_empty());
    }

    #[test]
    fn a_silence_holds_back_until_it_expires() {
        let silence = SilenceRow {
            id: 1,
            matchers: vec!["site=hel".into(), "kind=~interface_.*".into()],
            starts_at: 0,
            ends_at: 3000,
            comment: "works".into(),
            created_by: "test".into(),
            created_at: 0,
        };
        let mut inputs = NotifyInputs {
            alarms: vec![alarm(1, "a", 2000)],
            silences: vec![silence],
            ..Default::default()
        };
        assert!(step(&mut inputs, 2500).is_empty());
        assert_eq!(step(&mut inputs, 3000), ["raised"]);
    }

    #[test]
    fn alarms_of_an_incident_are_told_as_the_incident() {
        let silent = |id, agent: &str| AlarmSubject {
            kind: "agent_silent".into(),
            subject: String::new(),
            severity: "critical".into(),
            ..alarm(id, agent, 2000)
        };
        let mut inputs = NotifyInputs {
            alarms: vec![silent(1, "a"), silent(2, "c"), alarm(3, "a", 2000)],
            incidents: vec![IncidentSubject {
                id: 7,
                kind: "site_silent".into(),
                site: "hel".into(),
                severity: "critical".into(),
                summary: "all 2 agents silent".into(),
                agents: vec!["a".into(), "c".into()],
                hostnames: vec!["host-a".into(), "host-c".into()],
                first_seen: 2005,
                acked: false,
                muted: None,
            }],
            ..Default::default()
        };
        // The interface alarm is not a kind incidents group: told alone.
        assert_eq!(step(&mut inputs, 2010), ["raised"]);
        assert_eq!(step(&mut inputs, 2035), ["raised"], "the incident, once");
        let subjects: Vec<&str> = inputs.told.iter().map(|t| t.subject.as_str()).collect();
        assert_eq!(subjects, ["alarm:interface_gone:a:eth0", "incident:site_silent:hel"]);
        // The incident repeats (the route's 100 s) until acknowledged.
        inputs.alarms.retain(|a| a.kind == "agent_silent");
        assert_eq!(step(&mut inputs, 2135), ["repeat"]);
        inputs.incidents[0].acked = true;
        assert!(step(&mut inputs, 2400).is_empty(), "acknowledged: no more repeats");
    }
}
