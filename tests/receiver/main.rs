//! The receiver against simulated agents: a real receiver (the same `serve`
//! the binary runs) on port 0, fed by the agent's own report builder, signer
//! and push client.
//!
//! These tests live in the root package, not in `receiver/tests/`, because
//! they need the agent's code: a program crate never depends on another one,
//! not even as a dev-dependency (`tests/architecture.rs`). One binary with a
//! module per topic links once instead of nine times.

mod common;

mod alarms;
mod audit;
mod batches;
mod dns_keys;
mod http_api;
mod replay_ticks;
mod shapes;
mod slow_clients;
mod topology;
