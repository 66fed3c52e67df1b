//! The signed `data` objects. Field names are part of protocol v1: rename
//! nothing; add only optional fields.
//!
//! Every struct here is read from a JSON object only (never from an array
//! of its field values): see [`crate::object`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::{signed_envelope, Kind};
use crate::keys::Psk;
use crate::verify::VerifyError;

/// Telemetry from one agent at one moment (`kind = "report"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Report {
    pub kind: Kind,
    pub agent_id: String,
    /// Unix seconds when this envelope was signed (send time).
    pub timestamp: i64,
    /// 16 random bytes as 32 lowercase hex characters.
    pub nonce: String,
    /// Strictly increasing per agent, across restarts.
    pub tick: u64,
    /// Unix seconds when the telemetry was collected; earlier than
    /// `timestamp` when the report waited in the agent's spool.
    pub observed_at: i64,
    pub hostname: String,
    pub agent_version: String,
    /// The site the operator placed this agent in ("helsinki-dc1"), when
    /// configured; absent otherwise. Added as an optional member without a
    /// new protocol version: receivers that predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub system: SystemInfo,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub wireguard: Vec<WgDevice>,
    /// Sources that failed while collecting (no WireGuard, no permission…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CollectError>,
    /// Reports the agent's spool had to drop since the last delivery.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spool_dropped: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SystemInfo {
    pub uptime_secs: u64,
    /// 1, 5 and 15 minute load averages.
    #[serde(deserialize_with = "three_numbers")]
    pub load: [f64; 3],
    pub kernel: String,
}

/// Exactly three numbers. Reading `[f64; 3]` directly takes the first three
/// and reports a fourth as a JSON *syntax* error (trailing characters),
/// which would answer `bad_json` to well-formed JSON of the wrong shape.
fn three_numbers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
    let load = Vec::<f64>::deserialize(d)?;
    <[f64; 3]>::try_from(load.as_slice())
        .map_err(|_| serde::de::Error::invalid_length(load.len(), &"exactly 3 load averages"))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Interface {
    pub name: String,
    /// Link kind as the kernel names it: "ether", "loopback", "wireguard",
    /// "veth", "bridge", … ("unknown" when the kernel does not say).
    pub kind: String,
    /// Operational state: "up", "down", "dormant", "lowerlayerdown",
    /// "notpresent", "testing" or "unknown".
    pub state: String,
    pub mtu: u32,
    /// Hardware address, lowercase colon-separated; absent for links without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses with prefix length, e.g. "10.0.0.1/24", "2001:db8::1/64".
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    #[serde(default)]
    pub rx_errors: u64,
    #[serde(default)]
    pub tx_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Route {
    /// Destination network with prefix, e.g. "0.0.0.0/0".
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// Routing table id (254 = main, 255 = local).
    pub table: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct WgDevice {
    pub name: String,
    /// Base64 Curve25519 public key (44 characters).
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default)]
    pub peers: Vec<WgPeer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct WgPeer {
    pub public_key: String,
    /// "host:port" as WireGuard last saw it; absent when never connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Unix seconds of the latest handshake; absent when none happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_handshake: Option<i64>,
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct CollectError {
    /// What failed: "netlink", "wireguard", "system", …
    pub source: String,
    pub message: String,
}

/// First contact of an agent (`kind = "register"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Register {
    pub kind: Kind,
    pub agent_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub tick: u64,
    pub hostname: String,
    pub agent_version: String,
}

crate::object_only! {
    "a report" => Report, serialize;
    "system facts" => SystemInfo, serialize;
    "an interface" => Interface, serialize;
    "a route" => Route, serialize;
    "a WireGuard device" => WgDevice, serialize;
    "a WireGuard peer" => WgPeer, serialize;
    "a collection error" => CollectError, serialize;
    "a register" => Register, serialize;
}

/// A forwarded envelope (`kind = "relay"`), signed by the relaying agent.
/// Built only by [`relay_envelope`], so every relay layer has one form.
#[derive(Debug, Serialize)]
pub struct Relay<'a> {
    kind: Kind,
    agent_id: &'a str,
    timestamp: i64,
    nonce: &'a str,
    tick: u64,
    /// The envelope as received, byte for byte.
    inner: &'a RawValue,
}

/// The one way a relay layer is made: `inner` (an envelope as received,
/// surrounding whitespace aside) wrapped in a `relay` signed by `relayer`
/// with `psk`. Returns the bytes to send. `inner` is kept byte for byte —
/// its MAC covers its exact bytes — and is not verified here.
pub fn relay_envelope(
    psk: &Psk,
    relayer: &str,
    timestamp: i64,
    nonce: &str,
    tick: u64,
    inner: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    let text = std::str::from_utf8(inner)
        .map_err(|_| VerifyError::BadJson("the inner envelope is not UTF-8".into()))?;
    let inner: &RawValue =
        serde_json::from_str(text).map_err(|e| VerifyError::BadJson(e.to_string()))?;
    let data = Relay { kind: Kind::Relay, agent_id: relayer, timestamp, nonce, tick, inner };
    Ok(signed_envelope(psk, &data))
}

/// A signed request that an agent take a new identity (`kind = "reset"`,
/// `POST /status/reset` on the agent named by `agent_id`). Checked by
/// [`crate::verify_reset`]; the receiver refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reset {
    pub kind: Kind,
    pub agent_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub tick: u64,
}

impl Reset {
    /// A request for `agent_id`, signed with `psk`; the bytes to send.
    pub fn signed(psk: &Psk, agent_id: &str, timestamp: i64, nonce: &str, tick: u64) -> Vec<u8> {
        let data = Reset {
            kind: Kind::Reset,
            agent_id: agent_id.into(),
            timestamp,
            nonce: nonce.into(),
            tick,
        };
        signed_envelope(psk, &data)
    }
}

/// The agent's own message at the centre of a (possibly relayed) envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Report(Box<Report>),
    Register(Register),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Report(_) => Kind::Report,
            Message::Register(_) => Kind::Register,
        }
    }

    pub fn agent_id(&self) -> &str {
        match self {
            Message::Report(r) => &r.agent_id,
            Message::Register(r) => &r.agent_id,
        }
    }

    pub fn hostname(&self) -> &str {
        match self {
            Message::Report(r) => &r.hostname,
            Message::Register(r) => &r.hostname,
        }
    }

    pub fn agent_version(&self) -> &str {
        match self {
            Message::Report(r) => &r.agent_version,
            Message::Register(r) => &r.agent_version,
        }
    }
}
