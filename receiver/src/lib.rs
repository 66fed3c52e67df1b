//! `kattila-receiver`: verifies signed agent messages and commits them to
//! SQLite. `main` only parses the command line and calls [`cli::main`];
//! tests start the same server with [`server::serve`] on port 0.
#![forbid(unsafe_code)]

pub mod api;
pub mod body;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod process;
pub mod read;
pub mod server;
pub mod transport;
pub mod writer;

/// Seconds since the Unix epoch, the clock every check uses.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
