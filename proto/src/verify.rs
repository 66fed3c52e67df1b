//! Verification of a received message, every relay layer included, in the
//! order docs/protocol.md gives: size → shape → MAC → clock skew; and of an
//! agent's reset request with the same checks of its one layer. Anti-replay
//! needs the receiver's stored state and is checked there, with
//! [`crate::ReplayWindow`], against the [`Layer`]s returned here.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::envelope::{DataHeader, Envelope, Kind, PROTOCOL_VERSION};
use crate::keys::KeySet;
use crate::limits::{self, ShapeError};
use crate::model::{Message, Register, Report, Reset};
use crate::{MAX_RELAY_LAYERS, MAX_SKEW_SECS};

/// Every reason a message is refused before it reaches storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    BadJson(String),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    #[error("bad message shape: {0}")]
    BadShape(String),
    #[error("more than {MAX_RELAY_LAYERS} relay layers")]
    TooManyRelays,
    #[error("agent {0} appears twice in the relay chain")]
    RelayLoop(String),
    /// Deliberately says nothing about which key or layer failed.
    #[error("message authentication failed")]
    BadMac,
    #[error("timestamp is {skew_secs} s away from the receiver's clock (limit {MAX_SKEW_SECS} s)")]
    Skew { skew_secs: i64 },
    #[error("no key is available to verify with")]
    NoKey,
}

impl VerifyError {
    /// The stable error code of docs/protocol.md.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } => "too_large",
            VerifyError::BadJson(_) => "bad_json",
            VerifyError::UnsupportedVersion(_) => "unsupported_version",
            VerifyError::BadShape(_) => "bad_shape",
            VerifyError::TooManyRelays => "too_many_relays",
            VerifyError::RelayLoop(_) => "relay_loop",
            VerifyError::BadMac => "bad_mac",
            VerifyError::Skew { .. } => "stale",
            VerifyError::NoKey => "no_key",
        }
    }

    /// The HTTP status of docs/protocol.md.
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::TooLarge { .. } => 413,
            VerifyError::BadJson(_)
            | VerifyError::UnsupportedVersion(_)
            | VerifyError::BadShape(_)
            | VerifyError::TooManyRelays
            | VerifyError::RelayLoop(_) => 400,
            VerifyError::BadMac | VerifyError::Skew { .. } => 401,
            VerifyError::NoKey => 503,
        }
    }
}

impl From<ShapeError> for VerifyError {
    fn from(e: ShapeError) -> Self {
        VerifyError::BadShape(e.0)
    }
}

/// What to check against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Unix seconds, the verifier's clock.
    pub now: i64,
    pub max_body: usize,
}

impl VerifyOptions {
    pub fn at(now: i64) -> Self {
        VerifyOptions { now, max_body: limits::MAX_BODY_BYTES }
    }
}

/// One layer of a verified chain: who signed it and its replay fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub kind: Kind,
    pub agent_id: String,
    pub timestamp: i64,
    pub tick: u64,
    pub nonce: [u8; 16],
}

/// A message that passed every check this crate can make.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Outermost layer first; the last layer is the origin's own message.
    /// More than one layer means the message was relayed, and
    /// `layers[0].agent_id` is the relay that delivered it.
    pub layers: Vec<Layer>,
    pub message: Message,
}

impl Verified {
    pub fn origin(&self) -> &Layer {
        self.layers.last().expect("a verified chain has at least one layer")
    }

    /// Number of relays the message went through (0 = direct).
    pub fn relay_hops(&self) -> usize {
        self.layers.len() - 1
    }

    /// Relaying agents, the one nearest the origin first.
    pub fn relay_path(&self) -> impl Iterator<Item = &str> {
        self.layers[..self.layers.len() - 1].iter().rev().map(|l| l.agent_id.as_str())
    }
}

struct RawLayer<'a> {
    header: DataHeader<'a>,
    data: &'a RawValue,
    mac: [u8; 32],
}

/// Verifies `body` completely (all layers). See the module docs for the order.
pub fn verify(body: &[u8], keys: &KeySet, opts: VerifyOptions) -> Result<Verified, VerifyError> {
    if body.len() > opts.max_body {
        return Err(VerifyError::TooLarge { size: body.len(), limit: opts.max_body });
    }
    let text = utf8(body)?;

    // Shape: walk the chain without checking any MAC yet.
    let mut raw_layers: Vec<RawLayer<'_>> = Vec::new();
    let mut current: &str = text;
    loop {
        let (env, mac) = open(current)?;
        let header: DataHeader<'_> = serde_json::from_str(env.data.get()).map_err(json_error)?;
        if header.kind == Kind::Reset {
            // Where an unknown kind is refused, and with the same code.
            return Err(VerifyError::BadShape(
                "a reset is addressed to an agent, never to the receiver".into(),
            ));
        }
        check_fields(&header.agent_id, &header.nonce, header.tick)?;
        if raw_layers.iter().any(|l| l.header.agent_id == header.agent_id) {
            return Err(VerifyError::RelayLoop(header.agent_id.into_owned()));
        }
        let inner = match (header.kind, header.inner) {
            (Kind::Relay, Some(inner)) => Some(inner),
            (Kind::Relay, None) => return Err(VerifyError::BadShape("relay without inner".into())),
            (_, Some(_)) => return Err(VerifyError::BadShape("only a relay has inner".into())),
            (_, None) => None,
        };
        raw_layers.push(RawLayer { header, data: env.data, mac });
        match inner {
            Some(inner) => {
                if raw_layers.len() > MAX_RELAY_LAYERS {
                    return Err(VerifyError::TooManyRelays);
                }
                current = inner.get();
            }
            None => break,
        }
    }
    let origin = raw_layers.last().expect("loop pushes before breaking");
    let message = parse_message(origin.header.kind, origin.data)?;

    // MAC: every layer must verify under one of the known keys.
    for layer in &raw_layers {
        check_mac(keys, layer.data, &layer.mac)?;
    }

    // Clock skew, per layer.
    for layer in &raw_layers {
        check_skew(layer.header.timestamp, opts.now)?;
    }

    let layers = raw_layers
        .into_iter()
        .map(|l| {
            let mut nonce = [0u8; 16];
            hex::decode_to_slice(l.header.nonce.as_bytes(), &mut nonce).expect("checked as 32 hex");
            Layer {
                kind: l.header.kind,
                agent_id: l.header.agent_id.into_owned(),
                timestamp: l.header.timestamp,
                tick: l.header.tick,
                nonce,
            }
        })
        .collect();
    Ok(Verified { layers, message })
}

/// Why an agent refuses a reset request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// A check every message goes through (shape, MAC, clock…).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("a reset request has kind \"reset\"")]
    WrongKind,
    #[error("the request names another agent")]
    WrongAgent,
}

impl ResetError {
    /// The stable error code of docs/protocol.md.
    pub fn code(&self) -> &'static str {
        match self {
            ResetError::Verify(e) => e.code(),
            ResetError::WrongKind => "wrong_kind",
            ResetError::WrongAgent => "wrong_agent",
        }
    }

    /// The HTTP status of docs/protocol.md.
    pub fn status(&self) -> u16 {
        match self {
            ResetError::Verify(e) => e.status(),
            ResetError::WrongKind | ResetError::WrongAgent => 400,
        }
    }
}

/// A reset's `data` as read: `kind` as any string, so that another kind is
/// `wrong_kind` rather than a shape error.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
struct ResetData<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    agent_id: String,
    timestamp: i64,
    nonce: String,
    tick: u64,
}

crate::object_only! {
    "a reset request" => ResetData<'a>;
}

/// Verifies a reset request addressed to `own_id` with the checks of every
/// layer — version, shape, MAC, clock skew at `now` — in that order, then
/// that it names `own_id`. One layer only: a reset is never relayed. No
/// size check (the agent's API bounds its bodies) and no replay check (a
/// reset changes the agent's id, so the same request never passes twice).
pub fn verify_reset(
    body: &[u8],
    keys: &KeySet,
    own_id: &str,
    now: i64,
) -> Result<Reset, ResetError> {
    let (env, mac) = open(utf8(body)?)?;
    let data: ResetData<'_> =
        serde_json::from_str(env.data.get()).map_err(|e| VerifyError::BadShape(e.to_string()))?;
    if data.kind != Kind::Reset.as_str() {
        return Err(ResetError::WrongKind);
    }
    check_fields(&data.agent_id, &data.nonce, data.tick)?;
    check_mac(keys, env.data, &mac)?;
    check_skew(data.timestamp, now)?;
    if data.agent_id != own_id {
        return Err(ResetError::WrongAgent);
    }
    Ok(Reset {
        kind: Kind::Reset,
        agent_id: data.agent_id,
        timestamp: data.timestamp,
        nonce: data.nonce,
        tick: data.tick,
    })
}

// The checks of one layer, shared by every kind of message.

fn utf8(body: &[u8]) -> Result<&str, VerifyError> {
    std::str::from_utf8(body).map_err(|_| VerifyError::BadJson("not UTF-8".into()))
}

/// Reads one envelope: a JSON object of protocol version 1 with a
/// well-formed MAC, which is returned as bytes.
fn open(text: &str) -> Result<(Envelope<'_>, [u8; 32]), VerifyError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(json_error)?;
    if env.version != PROTOCOL_VERSION {
        return Err(VerifyError::UnsupportedVersion(env.version));
    }
    limits::check_hmac_text(env.hmac)?;
    let mut mac = [0u8; 32];
    hex::decode_to_slice(env.hmac, &mut mac).expect("checked as 64 hex characters");
    Ok((env, mac))
}

/// The limits on the fields every `data` object carries.
fn check_fields(agent_id: &str, nonce: &str, tick: u64) -> Result<(), VerifyError> {
    limits::check_agent_id(agent_id)?;
    limits::check_nonce(nonce)?;
    limits::check_tick(tick)?;
    Ok(())
}

/// The layer's `data` bytes, exactly as received, under one of the keys.
fn check_mac(keys: &KeySet, data: &RawValue, mac: &[u8; 32]) -> Result<(), VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoKey);
    }
    if !keys.verifies(data.get().as_bytes(), mac) {
        return Err(VerifyError::BadMac);
    }
    Ok(())
}

fn check_skew(timestamp: i64, now: i64) -> Result<(), VerifyError> {
    let skew = timestamp.saturating_sub(now);
    if skew.unsigned_abs() > MAX_SKEW_SECS as u64 {
        return Err(VerifyError::Skew { skew_secs: skew });
    }
    Ok(())
}

fn parse_message(kind: Kind, data: &RawValue) -> Result<Message, VerifyError> {
    match kind {
        Kind::Report => {
            let r: Report = serde_json::from_str(data.get()).map_err(json_error)?;
            limits::check_report(&r)?;
            Ok(Message::Report(Box::new(r)))
        }
        Kind::Register => {
            let r: Register = serde_json::from_str(data.get()).map_err(json_error)?;
            limits::check_register(&r)?;
            Ok(Message::Register(r))
        }
        Kind::Relay => unreachable!("the chain walk only stops at a non-relay"),
        Kind::Reset => unreachable!("the chain walk refuses resets"),
    }
}

/// Syntax errors are `BadJson`; well-formed JSON of the wrong shape is `BadShape`.
fn json_error(e: serde_json::Error) -> VerifyError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => VerifyError::BadJson(e.to_string()),
        Category::Data => VerifyError::BadShape(e.to_string()),
    }
}
