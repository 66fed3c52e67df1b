//! Health, status and severity words with their one ranking. Each type
//! reads the word it is stored as (`parse`) and writes it back (`as_str`);
//! an unknown word reads as the worst plausible value, never as healthy.

use serde::Serialize;

/// Health of a link between two agents (or an agent and an external peer),
/// ordered from worst to best so that `min` is the worse of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No handshake ever, or none for a long time and no traffic.
    Down,
    /// Nothing is known that says either way.
    Unknown,
    /// Handshakes are old and received bytes stopped growing.
    Stale,
    Healthy,
}

impl Health {
    pub const ALL: [Health; 4] = [Health::Down, Health::Unknown, Health::Stale, Health::Healthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Down => "down",
            Health::Unknown => "unknown",
            Health::Stale => "stale",
            Health::Healthy => "healthy",
        }
    }

    /// Reads a stored link health; a peer's `never` is a link that is down.
    pub fn parse(s: &str) -> Health {
        match s {
            "healthy" => Health::Healthy,
            "stale" => Health::Stale,
            "down" | "never" => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// The better of two views of one link: a link works if either end
    /// sees it working.
    pub fn better(self, other: Health) -> Health {
        self.max(other)
    }

    /// The worse of two links, for a summary of several.
    pub fn worse(self, other: Health) -> Health {
        self.min(other)
    }

    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }
}

/// Health of one peer as one agent's WireGuard device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerHealth {
    /// A recent handshake, or received bytes still growing.
    Healthy,
    /// Handshakes old and received bytes not growing.
    Stale,
    /// No handshake ever.
    Never,
    /// An agent at one end is silent, so what was last reported of this
    /// peer can no longer be trusted.
    Unknown,
}

impl PeerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerHealth::Healthy => "healthy",
            PeerHealth::Stale => "stale",
            PeerHealth::Never => "never",
            PeerHealth::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> PeerHealth {
        match s {
            "healthy" => PeerHealth::Healthy,
            "stale" => PeerHealth::Stale,
            "unknown" => PeerHealth::Unknown,
            _ => PeerHealth::Never,
        }
    }

    /// Judges one end's view of a peer: a recent handshake, or received
    /// bytes still growing, mean the link works; handshake age alone flaps
    /// on idle links (WireGuard only re-handshakes when there is traffic).
    pub fn judge(
        latest_handshake: Option<i64>,
        rx_grew: bool,
        now: i64,
        stale_after_secs: i64,
    ) -> PeerHealth {
        match latest_handshake {
            None | Some(0) => PeerHealth::Never,
            Some(hs) if now - hs <= stale_after_secs || rx_grew => PeerHealth::Healthy,
            Some(_) => PeerHealth::Stale,
        }
    }

    /// What this view says about the link.
    pub fn link(self) -> Health {
        match self {
            PeerHealth::Healthy => Health::Healthy,
            PeerHealth::Stale => Health::Stale,
            PeerHealth::Never => Health::Down,
            PeerHealth::Unknown => Health::Unknown,
        }
    }

    pub fn is_healthy(self) -> bool {
        self == PeerHealth::Healthy
    }
}

/// Whether an agent is heard from, and how. The default is the one that
/// claims least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// No report for [`crate::silent_after`] the report interval.
    #[default]
    Silent,
    /// Its newest report arrived only through other agents.
    Relay,
    Up,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Silent => "silent",
            AgentStatus::Relay => "relay",
            AgentStatus::Up => "up",
        }
    }

    pub fn parse(s: &str) -> AgentStatus {
        match s {
            "up" => AgentStatus::Up,
            "relay" => AgentStatus::Relay,
            _ => AgentStatus::Silent,
        }
    }
}

/// How urgent an alarm is, ordered from most to least urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// Reads a stored severity; an unknown word sorts after every known one.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "critical" => Some(Severity::Critical),
            "warning" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }

    /// Sort key: most urgent first, unknown words last.
    pub fn rank(s: &str) -> u8 {
        Severity::parse(s).map_or(3, |s| s as u8)
    }
}

/// Alarm kinds that incidents group: while an incident covering its agent
/// is active, an agent's alarm of these kinds is notified as that incident,
/// not on its own.
pub const INCIDENT_GROUPED_KINDS: [&str; 3] = ["agent_silent", "relay_only", "peer_stale"];

/// An alarm kind, as stored, in words a reader understands; None for a
/// kind this version does not know (shown as stored).
pub fn alarm_kind_words(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "agent_silent" => "agent silent",
        "relay_only" => "reachable only through relays",
        "interface_down" => "interface down",
        "interface_gone" => "interface disappeared",
        "interface_new" => "new interface",
        "peer_stale" => "WireGuard peer stale",
        "endpoint_changed" => "peer endpoint changed",
        "identity_conflict" => "agent id used by two hosts",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_never_healthy() {
        for h in Health::ALL {
            assert_eq!(Health::parse(h.as_str()), h);
        }
        assert_eq!(Health::parse("never"), Health::Down);
        assert_eq!(Health::parse("garbage"), Health::Unknown);
        assert_eq!(PeerHealth::parse("garbage"), PeerHealth::Never);
        assert_eq!(AgentStatus::parse("garbage"), AgentStatus::Silent);
        for s in [AgentStatus::Up, AgentStatus::Relay, AgentStatus::Silent] {
            assert_eq!(AgentStatus::parse(s.as_str()), s);
        }
    }

    #[test]
    fn one_ranking() {
        assert_eq!(Health::Down.better(Health::Stale), Health::Stale);
        assert_eq!(Health::Unknown.worse(Health::Down), Health::Down);
        assert_eq!(Health::Healthy.worse(Health::Stale), Health::Stale);
        assert!(Severity::rank("critical") < Severity::rank("warning"));
        assert!(Severity::rank("info") < Severity::rank("bogus"));
    }

    #[test]
    fn judging_a_peer() {
        let now = 10_000;
        assert_eq!(PeerHealth::judge(None, true, now, 180), PeerHealth::Never);
        assert_eq!(PeerHealth::judge(Some(0), false, now, 180), PeerHealth::Never);
        assert_eq!(PeerHealth::judge(Some(now - 100), false, now, 180), PeerHealth::Healthy);
        assert_eq!(PeerHealth::judge(Some(now - 500), false, now, 180), PeerHealth::Stale);
        assert_eq!(PeerHealth::judge(Some(now - 500), true, now, 180), PeerHealth::Healthy);
        assert_eq!(PeerHealth::Never.link(), Health::Down);
        assert_eq!(PeerHealth::parse("unknown").link(), Health::Unknown);
    }
}
