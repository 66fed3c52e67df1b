//! The envelope every message travels in, and the signing rule.
//!
//! ```text
//! {"version":1,"data":{...},"hmac":"<64 lowercase hex>"}
//! ```
//! The MAC is HMAC-SHA256 keyed with the PSK over the exact bytes of the
//! `data` value as they appear in the message, from its `{` to its matching
//! `}`. Verifiers never re-serialise `data`.

use hmac::Mac;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::keys::Psk;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// An envelope as received: `data` stays as the raw bytes that were signed.
/// A JSON object only (see [`crate::object`]).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Envelope<'a> {
    pub version: u64,
    #[serde(borrow)]
    pub data: &'a RawValue,
    pub hmac: &'a str,
}

/// What a message is. On the wire a string only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Report,
    Relay,
    Register,
    /// Addressed to an agent (`POST /status/reset`), never to the
    /// receiver: [`crate::verify`] refuses it, [`crate::verify_reset`]
    /// accepts nothing else.
    Reset,
}

impl Kind {
    /// The kinds the receiver takes, named when a kind is unknown.
    const NAMES: &'static [&'static str] = &["report", "relay", "register"];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Report => "report",
            Kind::Relay => "relay",
            Kind::Register => "register",
            Kind::Reset => "reset",
        }
    }
}

/// By hand because a derived enum also accepts serde_json's map form of a
/// variant, `{"report":null}`; the protocol's `kind` is a string.
impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;

        impl Visitor<'_> for KindVisitor {
            type Value = Kind;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a kind string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                match v {
                    "report" => Ok(Kind::Report),
                    "relay" => Ok(Kind::Relay),
                    "register" => Ok(Kind::Register),
                    "reset" => Ok(Kind::Reset),
                    other => Err(E::unknown_variant(other, Kind::NAMES)),
                }
            }
        }

        deserializer.deserialize_str(KindVisitor)
    }
}

/// The fields every `data` object carries, read before the rest so a relay
/// chain can be walked without parsing reports twice. A JSON object only.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct DataHeader<'a> {
    pub kind: Kind,
    #[serde(borrow)]
    pub agent_id: std::borrow::Cow<'a, str>,
    pub timestamp: i64,
    #[serde(borrow)]
    pub nonce: std::borrow::Cow<'a, str>,
    pub tick: u64,
    /// Present on relays only: the forwarded envelope, byte for byte.
    /// `"inner":null` counts as present (and is no envelope), so a report
    /// cannot carry the member at all.
    #[serde(borrow, default, deserialize_with = "present")]
    pub inner: Option<&'a RawValue>,
}

crate::object_only! {
    "an envelope" => Envelope<'a>;
    "a data object" => DataHeader<'a>;
}

/// A member that is there, whatever its value (`Option`'s own impl would
/// read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Lowercase hex HMAC-SHA256 of `data` under `psk`.
pub fn sign_data(psk: &Psk, data: &[u8]) -> String {
    hex::encode(psk.mac().chain_update(data).finalize().into_bytes())
}

/// Serialises `data` and wraps it in a signed envelope. The returned bytes
/// are what goes on the wire; the MAC covers the `data` bytes exactly as
/// they appear inside them.
pub fn signed_envelope<T: Serialize + ?Sized>(psk: &Psk, data: &T) -> Vec<u8> {
    let data = serde_json::to_vec(data).expect("protocol types always serialise");
    envelope_from_data_bytes(psk, &data)
}

/// Wraps already-serialised `data` bytes (a JSON object) in a signed
/// envelope, keeping them byte for byte.
pub fn envelope_from_data_bytes(psk: &Psk, data: &[u8]) -> Vec<u8> {
    let mac = sign_data(psk, data);
    let mut out = Vec::with_capacity(data.len() + 96);
    out.extend_from_slice(br#"{"version":1,"data":"#);
    out.extend_from_slice(data);
    out.extend_from_slice(br#","hmac":""#);
    out.extend_from_slice(mac.as_bytes());
    out.extend_from_slice(br#""}"#);
    out
}
