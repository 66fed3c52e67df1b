//! `kattila-receiver`: verifies signed agent messages and commits them to
//! SQLite. `main` only parses the command line and calls [`cli::main`];
//! tests start the same server with [`server::serve`] on port 0.
#![forbid(unsafe_code)]

pub mod api;
pub mod body;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod error;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod server;
pub mod transport;
pub mod writer;

/// Seconds since the Unix epoch, the clock every check uses.
pub use kattila_fleet::unix_now;
