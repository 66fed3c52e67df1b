//! Verification of a received message, every relay layer included, in the
//! order docs/protocol.md gives: size → shape → MAC → clock skew. Anti-replay
//! needs the receiver's stored state and is checked there, with
//! [`crate::ReplayWindow`], against the [`Layer`]s returned here.

use serde_json::value::RawValue;

use crate::envelope::{DataHeader, Envelope, Kind, PROTOCOL_VERSION};
use crate::keys::KeySet;
use crate::limits::{self, ShapeError};
use crate::model::{Message, Register, Report};
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
    let text = std::str::from_utf8(body).map_err(|_| VerifyError::BadJson("not UTF-8".into()))?;

    // Shape: walk the chain without checking any MAC yet.
    let mut raw_layers: Vec<RawLayer<'_>> = Vec::new();
    let mut current: &str = text;
    loop {
        let env: Envelope<'_> = serde_json::from_str(current).map_err(json_error)?;
        if env.version != PROTOCOL_VERSION {
            return Err(VerifyError::UnsupportedVersion(env.version));
        }
        limits::check_hmac_text(env.hmac)?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(env.hmac, &mut mac).expect("checked as 64 hex characters");
        let header: DataHeader<'_> = serde_json::from_str(env.data.get()).map_err(json_error)?;
        limits::check_agent_id(&header.agent_id)?;
        limits::check_nonce(&header.nonce)?;
        limits::check_tick(header.tick)?;
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
    if keys.is_empty() {
        return Err(VerifyError::NoKey);
    }
    for layer in &raw_layers {
        if !keys.verifies(layer.data.get().as_bytes(), &layer.mac) {
            return Err(VerifyError::BadMac);
        }
    }

    // Clock skew, per layer.
    for layer in &raw_layers {
        let skew = layer.header.timestamp.saturating_sub(opts.now);
        if skew.unsigned_abs() > MAX_SKEW_SECS as u64 {
            return Err(VerifyError::Skew { skew_secs: skew });
        }
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
