//! The alarm lifecycle, as decisions. A *condition* (interface down, peer
//! stale, …) must hold for `alarm_threshold` consecutive observations
//! before its alarm is raised, and be clear as many times before it
//! resolves (flap suppression). *Events* (new interface, endpoint changed)
//! raise at once and resolve when they are older than the event TTL.
//! Acknowledging does not resolve.
//!
//! Streaks are kept in memory and stored (`alarm_streaks`), so a restart
//! neither forgets a streak nor raises twice. Every decision is returned as
//! an [`AlarmChange`] for storage to write.

use std::borrow::Cow;

use foldhash::HashMap;
use kattila_fleet::Severity;
use kattila_store::alarms::{AlarmChange, AlarmRows, Condition};

use super::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    InterfaceDown,
    InterfaceGone,
    InterfaceNew,
    PeerStale,
    EndpointChanged,
    AgentSilent,
    RelayOnly,
    IdentityConflict,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 8] = [
        AlarmKind::InterfaceDown,
        AlarmKind::InterfaceGone,
        AlarmKind::InterfaceNew,
        AlarmKind::PeerStale,
        AlarmKind::EndpointChanged,
        AlarmKind::AgentSilent,
        AlarmKind::RelayOnly,
        AlarmKind::IdentityConflict,
    ];

    /// The kinds that are events: raised at once, expired by age.
    pub const EVENTS: [AlarmKind; 2] = [AlarmKind::InterfaceNew, AlarmKind::EndpointChanged];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::InterfaceDown => "interface_down",
            AlarmKind::InterfaceGone => "interface_gone",
            AlarmKind::InterfaceNew => "interface_new",
            AlarmKind::PeerStale => "peer_stale",
            AlarmKind::EndpointChanged => "endpoint_changed",
            AlarmKind::AgentSilent => "agent_silent",
            AlarmKind::RelayOnly => "relay_only",
            AlarmKind::IdentityConflict => "identity_conflict",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            AlarmKind::AgentSilent | AlarmKind::IdentityConflict => Severity::Critical,
            AlarmKind::InterfaceDown
            | AlarmKind::InterfaceGone
            | AlarmKind::PeerStale
            | AlarmKind::RelayOnly => Severity::Warning,
            AlarmKind::InterfaceNew | AlarmKind::EndpointChanged => Severity::Info,
        }
    }

    pub fn is_event(self) -> bool {
        AlarmKind::EVENTS.contains(&self)
    }

    /// Observations needed to raise or resolve. A report ends silence at once.
    fn threshold(self, s: &Settings) -> i64 {
        match self {
            AlarmKind::AgentSilent => 1,
            _ => s.alarm_threshold.max(1),
        }
    }
}

/// One observation of a condition of an agent, or one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub kind: AlarmKind,
    /// What inside the agent: an interface, a peer, "" for the agent.
    pub subject: Cow<'a, str>,
    /// Whether the condition holds (always, for an event).
    pub holds: bool,
    /// The alarm's message; unused (and left empty) when clear.
    pub message: String,
}

impl<'a> Observation<'a> {
    pub fn new(kind: AlarmKind, subject: impl Into<Cow<'a, str>>, holds: bool) -> Self {
        Observation { kind, subject: subject.into(), holds, message: String::new() }
    }

    /// The message, built only when the observation holds.
    pub fn saying(mut self, message: impl FnOnce() -> String) -> Self {
        if self.holds {
            self.message = message();
        }
        self
    }

    pub fn event(kind: AlarmKind, subject: impl Into<Cow<'a, str>>, message: String) -> Self {
        debug_assert!(kind.is_event());
        Observation { kind, subject: subject.into(), holds: true, message }
    }
}

/// A condition of one agent: its kind and subject.
type Key = (AlarmKind, String);

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tracked {
    /// > 0: consecutive observations holding; < 0: consecutive clear ones.
    streak: i64,
    /// Whether its alarm is active.
    active: bool,
}

/// Every condition currently streaking or alarmed, by agent: most agents
/// have none, and a clear observation for them costs one lookup.
#[derive(Debug, Default)]
pub struct Alarms {
    tracked: HashMap<String, HashMap<Key, Tracked>>,
}

impl Alarms {
    pub fn load(rows: AlarmRows) -> Alarms {
        let mut alarms = Alarms::default();
        for (c, streak) in rows.streaks {
            if let Some((agent, key)) = parse(c) {
                alarms.entry(agent, key).streak = streak;
            }
        }
        for c in rows.active {
            if let Some((agent, key)) = parse(c) {
                alarms.entry(agent, key).active = true;
            }
        }
        alarms
    }

    fn entry(&mut self, agent: String, key: Key) -> &mut Tracked {
        self.tracked.entry(agent).or_default().entry(key).or_default()
    }

    fn get(&self, agent: &str, key: &Key) -> Option<Tracked> {
        self.tracked.get(agent).and_then(|m| m.get(key)).copied()
    }

    /// Whether any condition of `agent` is streaking or alarmed; when not,
    /// observations that a condition is clear change nothing.
    pub fn tracks(&self, agent: &str) -> bool {
        self.tracked.contains_key(agent)
    }

    /// Records one observation; what it changes goes to `out`.
    pub fn observe<'a>(
        &mut self,
        agent: &'a str,
        obs: Observation<'a>,
        s: &Settings,
        now: i64,
        out: &mut Vec<AlarmChange<'a>>,
    ) {
        if !obs.holds && !self.tracks(agent) {
            return; // clear and not tracked: the common case, no write
        }
        if obs.kind.is_event() {
            return self.event(agent, obs, now, out);
        }
        let key = (obs.kind, obs.subject.to_string());
        let Some(mut t) = self.get(agent, &key).or(obs.holds.then(Tracked::default)) else {
            return;
        };
        let condition = condition(obs.kind, agent, obs.subject);
        let threshold = obs.kind.threshold(s);
        if obs.holds {
            t.streak = t.streak.max(0) + 1;
            if t.active {
                out.push(AlarmChange::Touch {
                    condition: condition.clone(),
                    message: obs.message,
                    now,
                });
            } else if t.streak >= threshold {
                out.push(raise(obs.kind, condition.clone(), obs.message, now));
                t.active = true;
            }
        } else {
            t.streak = t.streak.min(0) - 1;
            if t.active && -t.streak >= threshold {
                out.push(resolve(condition.clone(), now));
                t.active = false;
            }
        }
        self.store(agent, key, t, condition, out);
    }

    /// Raises (or refreshes) an alarm without waiting for a streak.
    pub fn raise_now<'a>(
        &mut self,
        agent: &'a str,
        obs: Observation<'a>,
        now: i64,
        out: &mut Vec<AlarmChange<'a>>,
    ) {
        let key = (obs.kind, obs.subject.to_string());
        let condition = condition(obs.kind, agent, obs.subject);
        let mut t = self.raise_or_touch(agent, &key, condition.clone(), obs.message, now, out);
        t.streak = t.streak.max(1);
        self.store(agent, key, t, condition, out);
    }

    /// An event: raised at once, refreshed if it happens again. Events have
    /// no streak to store; they expire instead.
    fn event<'a>(
        &mut self,
        agent: &'a str,
        obs: Observation<'a>,
        now: i64,
        out: &mut Vec<AlarmChange<'a>>,
    ) {
        let key = (obs.kind, obs.subject.to_string());
        let condition = condition(obs.kind, agent, obs.subject);
        let t = self.raise_or_touch(agent, &key, condition, obs.message, now, out);
        *self.entry(agent.to_string(), key) = t;
    }

    /// The condition's state after raising its alarm, or refreshing it if
    /// it is already active.
    fn raise_or_touch<'a>(
        &self,
        agent: &str,
        key: &Key,
        condition: Condition<'a>,
        message: String,
        now: i64,
        out: &mut Vec<AlarmChange<'a>>,
    ) -> Tracked {
        let mut t = self.get(agent, key).unwrap_or_default();
        if t.active {
            out.push(AlarmChange::Touch { condition, message, now });
        } else {
            out.push(raise(key.0, condition, message, now));
            t.active = true;
        }
        t
    }

    /// Forgets conditions whose alarms storage expired.
    pub fn forget(&mut self, expired: &[Condition<'_>]) {
        for c in expired {
            let Some(kind) = AlarmKind::parse(&c.kind) else { continue };
            if let Some(conditions) = self.tracked.get_mut(c.agent_id.as_ref()) {
                conditions.remove(&(kind, c.subject.to_string()));
                if conditions.is_empty() {
                    self.tracked.remove(c.agent_id.as_ref());
                }
            }
        }
    }

    fn store<'a>(
        &mut self,
        agent: &str,
        key: Key,
        t: Tracked,
        condition: Condition<'a>,
        out: &mut Vec<AlarmChange<'a>>,
    ) {
        if !t.active && t.streak <= 0 {
            out.push(AlarmChange::StreakCleared { condition });
            if let Some(conditions) = self.tracked.get_mut(agent) {
                conditions.remove(&key);
                if conditions.is_empty() {
                    self.tracked.remove(agent);
                }
            }
        } else {
            out.push(AlarmChange::Streak { condition, streak: t.streak });
            *self.entry(agent.to_string(), key) = t;
        }
    }
}

/// Whether a change raises or resolves an alarm (rather than refreshing
/// one or counting).
pub fn is_transition(change: &AlarmChange<'_>) -> bool {
    matches!(change, AlarmChange::Raise { .. } | AlarmChange::Resolve { .. })
}

fn condition<'a>(kind: AlarmKind, agent: &'a str, subject: Cow<'a, str>) -> Condition<'a> {
    Condition { kind: Cow::Borrowed(kind.as_str()), agent_id: Cow::Borrowed(agent), subject }
}

fn raise(kind: AlarmKind, condition: Condition<'_>, message: String, now: i64) -> AlarmChange<'_> {
    tracing::info!(
        kind = kind.as_str(),
        agent = %condition.agent_id,
        subject = %condition.subject,
        "alarm raised"
    );
    AlarmChange::Raise { severity: kind.severity(), condition, message, now }
}

fn resolve(condition: Condition<'_>, now: i64) -> AlarmChange<'_> {
    tracing::info!(
        kind = %condition.kind,
        agent = %condition.agent_id,
        subject = %condition.subject,
        "alarm resolved"
    );
    AlarmChange::Resolve { condition, now }
}

/// A stored condition, if its kind is one this receiver knows.
fn parse(c: Condition<'static>) -> Option<(String, Key)> {
    let kind = AlarmKind::parse(&c.kind)?;
    Some((c.agent_id.into_owned(), (kind, c.subject.into_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(out: &[AlarmChange<'_>]) -> Vec<&'static str> {
        out.iter()
            .map(|c| match c {
                AlarmChange::Raise { .. } => "raise",
                AlarmChange::Touch { .. } => "touch",
                AlarmChange::Resolve { .. } => "resolve",
                AlarmChange::Streak { .. } => "streak",
                AlarmChange::StreakCleared { .. } => "cleared",
            })
            .collect()
    }

    /// Feeds observations of one condition; returns what each one changed.
    fn run(alarms: &mut Alarms, holds: &[bool]) -> Vec<Vec<&'static str>> {
        let s = Settings { alarm_threshold: 2, ..Settings::default() };
        holds
            .iter()
            .map(|&h| {
                let mut out = Vec::new();
                let obs = Observation::new(AlarmKind::InterfaceDown, "eth0", h)
                    .saying(|| "interface eth0 is down".into());
                alarms.observe("a", obs, &s, 0, &mut out);
                kinds(&out)
            })
            .collect()
    }

    #[test]
    fn raised_after_the_threshold_resolved_after_as_many_clear() {
        let mut alarms = Alarms::default();
        let steps = run(&mut alarms, &[false, true, true, true, false, false, false]);
        assert_eq!(
            steps,
            [
                vec![],                     // clear and untracked: nothing
                vec!["streak"],             // 1 < threshold
                vec!["raise", "streak"],    // 2: raised
                vec!["touch", "streak"],    // still holding
                vec!["streak"],             // one clear is not enough
                vec!["resolve", "cleared"], // two resolve
                vec![],                     // forgotten again
            ]
        );
        assert!(!alarms.tracks("a"));
    }

    #[test]
    fn a_flapping_condition_never_raises() {
        let mut alarms = Alarms::default();
        let steps = run(&mut alarms, &[true, false, true, false, true, false]);
        assert!(steps.iter().flatten().all(|k| *k != "raise"), "{steps:?}");
    }

    #[test]
    fn loaded_state_continues_a_streak_and_expired_events_are_forgotten() {
        let c = |kind: &str| Condition {
            kind: Cow::Owned(kind.into()),
            agent_id: Cow::Borrowed("a"),
            subject: Cow::Borrowed("eth0"),
        };
        let rows =
            AlarmRows { streaks: vec![(c("interface_down"), 1)], active: vec![c("interface_new")] };
        let mut alarms = Alarms::load(rows);
        assert_eq!(run(&mut alarms, &[true])[0], ["raise", "streak"], "restart keeps the streak");
        alarms.forget(&[c("interface_new")]);
        let mut out = Vec::new();
        let obs = Observation::event(AlarmKind::InterfaceNew, "eth0", "new interface eth0".into());
        alarms.observe("a", obs, &Settings::default(), 0, &mut out);
        assert_eq!(kinds(&out), ["raise"], "an expired event raises anew");
    }
}
