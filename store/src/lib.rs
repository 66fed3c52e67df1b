//! Kattila's database, and the contract between the two programs that use
//! it: the receiver writes it, sitegen and the receiver's API read it.
//! Every table, column and SQL statement lives in this crate; the
//! programs see functions and row types.
//!
//! - [`open`]: opening for writing (pragmas, migrations) or read-only.
//! - [`migrations`]: the numbered schema steps.
//! - [`audit`]: what the writer records of every accepted message (the
//!   agents row, the audit copy, anti-replay state).
//! - [`checkpoint`]: WAL checkpoints off the writer thread.
//! - [`snapshot`]: everything a dashboard build shows, read in one
//!   transaction, as row types.
//! - [`status`]: the reads behind the receiver's JSON API.
//!
//! The seam for a second engine (several receivers on PostgreSQL) is this
//! crate's public functions and row types: processing and rendering never
//! see SQL or a connection's type beyond passing it through.

pub mod audit;
pub mod checkpoint;
pub mod migrations;
mod open;
pub mod snapshot;
pub mod status;

pub use open::{data_version, open, open_read_only, readable, schema_version};
pub use rusqlite::Connection;
