//! Kattila wire protocol v1, defined once for the agent, the receiver and
//! every test: the envelope, the bytes that get signed, verification of a
//! whole relay chain and of an agent's reset request, the anti-replay
//! window, the report data model and the JSON answers of both HTTP APIs.
//!
//! This crate does no I/O: callers pass in bytes, keys and the current time.
//! `docs/protocol.md` is the prose version of this crate; its test vectors
//! are checked by `tests/vectors.rs`.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod keys;
pub mod limits;
pub mod model;
pub mod object;
pub mod replay;
pub mod reply;
pub mod verify;

pub use envelope::{sign_data, signed_envelope, DataHeader, Envelope, Kind, PROTOCOL_VERSION};
pub use keys::{KeySet, Psk};
pub use model::{relay_envelope, Message, Register, Relay, Report, Reset};
pub use replay::{ReplayError, ReplayWindow, REPLAY_WINDOW};
pub use reply::{Accepted, PathInfo, PeerInfo, Refusal};
pub use verify::{verify, verify_reset, Layer, ResetError, Verified, VerifyError, VerifyOptions};

/// Largest number of relay layers around an agent's own message.
pub const MAX_RELAY_LAYERS: usize = 3;

/// Largest allowed difference between a layer's `timestamp` and the
/// verifier's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 600;
