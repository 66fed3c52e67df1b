//! The fleet's vocabulary: what the words of fleet state mean, in one
//! place for both programs. The receiver decides every agent's status and
//! every peer's and link's health and stores the words defined here;
//! sitegen reads and shows them and never decides them again.
//!
//! No I/O except reading the clock in [`unix_now`].

mod health;
mod net;
mod site;

pub use health::{
    alarm_kind_words, AgentStatus, Health, PeerHealth, Severity, INCIDENT_GROUPED_KINDS,
};
pub use net::{masked_network, network_of, shared_scope, AddressClass};
pub use site::{site_network, site_of};

/// Reports an agent may miss before it counts as silent: three intervals
/// ride out one lost report and one slow relay without crying wolf.
pub const SILENT_AFTER_INTERVALS: i64 = 3;

/// Seconds without a report after which an agent reporting every
/// `interval_secs` is silent.
pub fn silent_after(interval_secs: i64) -> i64 {
    SILENT_AFTER_INTERVALS * interval_secs
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is set
/// before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
