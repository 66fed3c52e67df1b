//! Kattila's database, and the contract between the two programs that use
//! it: the receiver writes it, sitegen and the receiver's API read it.
//! Every table, column and SQL statement lives in this crate; the
//! programs see functions and row types.
//!
//! - [`open`]: opening for writing (pragmas, migrations) or read-only.
//! - [`migrations`]: the numbered schema steps.
//! - [`audit`]: what the writer records of every accepted message (the
//!   agents row, the audit copy, anti-replay state).
//! - [`state`]: an agent's current state (interfaces, routes, WireGuard
//!   devices and peers): loading it, and applying what one message changed
//!   ([`Changes`], [`apply`]).
//! - [`topology`]: the edges, and what the topology model is loaded from.
//! - [`alarms`]: alarms and their streaks.
//! - [`incidents`]: related alarms of one site grouped into one.
//! - [`history`]: history samples and their roll-up.
//! - [`notify`]: the notification outbox, what each subject was told,
//!   silences and maintenance windows.
//! - [`admin`]: resets, acknowledgements, retention.
//! - [`checkpoint`]: WAL checkpoints off the writer thread.
//! - [`snapshot`]: everything a dashboard build shows, read in one
//!   transaction, as row types.
//! - [`status`]: the reads behind the receiver's JSON API.
//!
//! The seam for a second engine (several receivers on PostgreSQL) is this
//! crate's public functions, row types and change types: processing decides
//! changes as plain values and rendering reads row types, and neither sees
//! SQL or a connection's type beyond passing it through.

pub mod admin;
pub mod alarms;
pub mod audit;
pub mod checkpoint;
pub mod history;
pub mod incidents;
pub mod migrations;
pub mod notify;
mod open;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod topology;

pub use open::{data_version, fleet_version, open, open_read_only, readable, schema_version};
pub use rusqlite::Connection;
pub use state::{apply, Changes};
