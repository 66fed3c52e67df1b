//! `kattila-agent`: builds signed reports and pushes them to the receiver.
//! The same report builder and push client serve the real agent and the
//! fleet simulator, so the simulator cannot drift from the real format.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod collect;
pub mod config;
pub mod identity;
pub mod node;
pub mod push;
pub mod report;
pub mod reset;
pub mod simulate;
pub mod spool;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
