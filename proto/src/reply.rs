//! The JSON answers of the receiver's and the agent's HTTP APIs: what an
//! accepted message, a refusal, a reset or an acknowledgement answers, and
//! what an agent tells other agents about itself (`GET /status/peer`,
//! `GET /status/healthcheck`). The side that writes an answer and the side
//! that reads it share these definitions instead of building and looking up
//! members by name.
//!
//! Members are declared in alphabetical order because that is the byte
//! order the answers have always had (they were built as `serde_json`
//! maps, which sort their keys); the tests below pin the exact bytes.
//! Every struct is read from a JSON object only (see [`crate::object`]).

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// The `"status":"ok"` member of every answer that reports success. On the
/// wire the string `"ok"` and nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusOk;

impl Serialize for StatusOk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("ok")
    }
}

impl<'de> Deserialize<'de> for StatusOk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OkVisitor;

        impl Visitor<'_> for OkVisitor {
            type Value = StatusOk;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the string \"ok\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusOk, E> {
                match v {
                    "ok" => Ok(StatusOk),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }

        deserializer.deserialize_str(OkVisitor)
    }
}

/// `200`: the message was committed (sent only after the commit). A relay
/// passes it back to the origin unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Accepted {
    /// The origin of the message, not the relay that delivered it.
    pub agent_id: String,
    /// Relays the message went through (0 = direct).
    pub relay_hops: usize,
    pub status: StatusOk,
    /// The origin's tick.
    pub tick: u64,
}

impl Accepted {
    pub fn new(agent_id: impl Into<String>, tick: u64, relay_hops: usize) -> Accepted {
        Accepted { agent_id: agent_id.into(), relay_hops, status: StatusOk, tick }
    }
}

/// Every refusal, from the receiver and from agents alike:
/// `{"error":"<code>","detail":"<human-readable reason>"}`. The codes are
/// the stable ones of docs/protocol.md and docs/api.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Refusal {
    /// For people; may change between versions. Absent reads as empty.
    #[serde(default)]
    pub detail: String,
    /// For programs: the stable error code.
    pub error: String,
}

impl Refusal {
    pub fn new(code: &str, detail: impl Into<String>) -> Refusal {
        Refusal { detail: detail.into(), error: code.to_string() }
    }

    /// The refusal in an answer's body, if the body is one.
    pub fn read(body: &[u8]) -> Option<Refusal> {
        serde_json::from_slice(body).ok()
    }
}

/// An agent's answer to an accepted `POST /status/reset`: the new id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ResetDone {
    pub agent_id: String,
    pub status: StatusOk,
}

impl ResetDone {
    pub fn new(agent_id: impl Into<String>) -> ResetDone {
        ResetDone { agent_id: agent_id.into(), status: StatusOk }
    }
}

/// The receiver's answer to `POST /status/admin/reset`: how many agents'
/// topology state was reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct AdminReset {
    pub reset: usize,
    pub status: StatusOk,
}

impl AdminReset {
    pub fn new(reset: usize) -> AdminReset {
        AdminReset { reset, status: StatusOk }
    }
}

/// The receiver's answer to `POST /status/admin/alarms/{id}/ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct AlarmAcked {
    /// The id of the acknowledged alarm.
    pub acked: i64,
    pub status: StatusOk,
}

impl AlarmAcked {
    pub fn new(alarm_id: i64) -> AlarmAcked {
        AlarmAcked { acked: alarm_id, status: StatusOk }
    }
}

/// How an agent reaches the receiver, as far as it knows. On the wire
/// `{"state":"unknown"}`, `{"hops":0,"state":"direct"}`,
/// `{"hops":2,"state":"relay"}` or `{"state":"none"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathInfo {
    /// Nothing tried yet.
    #[default]
    Unknown,
    /// The receiver answered directly.
    Direct,
    /// Delivered through `hops` relays.
    Relay { hops: usize },
    /// Neither the receiver nor any relay could be reached.
    None,
}

impl PathInfo {
    /// Relay hops between the agent and the receiver, when known.
    pub fn hops(self) -> Option<usize> {
        match self {
            PathInfo::Direct => Some(0),
            PathInfo::Relay { hops } => Some(hops),
            _ => None,
        }
    }

    /// For log lines and people.
    pub fn describe(self) -> String {
        match self {
            PathInfo::Unknown => "unknown".into(),
            PathInfo::Direct => "direct".into(),
            PathInfo::Relay { hops } => {
                format!("via {hops} relay hop{}", if hops == 1 { "" } else { "s" })
            }
            PathInfo::None => "none".into(),
        }
    }

    /// Reads a path leniently: whatever an agent of another version says
    /// that this one cannot read is "unknown", never a reason to ignore
    /// the agent that said it.
    pub fn from_value(v: &serde_json::Value) -> PathInfo {
        use serde_json::Value;
        match v.get("state").and_then(Value::as_str) {
            Some("direct") => PathInfo::Direct,
            Some("relay") => match v.get("hops").and_then(Value::as_u64) {
                Some(h) => PathInfo::Relay { hops: h as usize },
                None => PathInfo::Unknown,
            },
            Some("none") => PathInfo::None,
            _ => PathInfo::Unknown,
        }
    }
}

/// By hand: the members of each state, in the order described above.
impl Serialize for PathInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (state, hops) = match *self {
            PathInfo::Unknown => ("unknown", None),
            PathInfo::Direct => ("direct", Some(0)),
            PathInfo::Relay { hops } => ("relay", Some(hops)),
            PathInfo::None => ("none", None),
        };
        let mut map = serializer.serialize_map(Some(1 + usize::from(hops.is_some())))?;
        if let Some(hops) = hops {
            map.serialize_entry("hops", &hops)?;
        }
        map.serialize_entry("state", state)?;
        map.end()
    }
}

/// Lenient, see [`PathInfo::from_value`].
impl<'de> Deserialize<'de> for PathInfo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| PathInfo::from_value(&v))
    }
}

/// An agent's `GET /status/peer`: who it is and how it reaches the
/// receiver, for agents looking for a relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct PeerInfo {
    pub agent_id: String,
    /// Only `agent_id` is needed to use an agent as a relay; the rest may
    /// be missing from agents of other versions.
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub path: PathInfo,
    #[serde(default)]
    pub wireguard_public_keys: Vec<String>,
}

/// What an agent's spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SpoolStats {
    pub bytes: u64,
    /// Reports dropped (size or age limit) and not yet reported as dropped.
    pub dropped: u64,
    pub reports: usize,
}

/// Where an agent's keys come from and how many it holds; never a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct KeyInfo {
    /// No key, or key refreshes failing.
    pub degraded: bool,
    pub keys: usize,
    /// `"fixed"` or `"dns"`.
    pub source: String,
}

/// An agent's `GET /status/healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct AgentHealth {
    pub agent_id: String,
    pub agent_version: String,
    pub key: KeyInfo,
    pub path: PathInfo,
    pub spool: SpoolStats,
    pub status: StatusOk,
}

crate::object_only! {
    "an accepted answer" => Accepted, serialize;
    "a refusal" => Refusal, serialize;
    "a reset answer" => ResetDone, serialize;
    "an admin reset answer" => AdminReset, serialize;
    "an acknowledgement" => AlarmAcked, serialize;
    "peer information" => PeerInfo, serialize;
    "spool statistics" => SpoolStats, serialize;
    "key information" => KeyInfo, serialize;
    "an agent health answer" => AgentHealth, serialize;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `typed` serialises to the same bytes as `before`, the `json!` value
    /// the answer used to be built from, and reads back to itself.
    fn same_bytes<T>(typed: &T, before: serde_json::Value)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let bytes = serde_json::to_vec(typed).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
        assert_eq!(&serde_json::from_slice::<T>(&bytes).unwrap(), typed);
    }

    #[test]
    fn answers_are_byte_identical_to_the_maps_they_replace() {
        same_bytes(
            &Accepted::new("a1", 42, 2),
            json!({ "status": "ok", "agent_id": "a1", "tick": 42, "relay_hops": 2 }),
        );
        same_bytes(
            &Refusal::new("bad_mac", "message authentication failed"),
            json!({ "error": "bad_mac", "detail": "message authentication failed" }),
        );
        same_bytes(&ResetDone::new("n1"), json!({ "status": "ok", "agent_id": "n1" }));
        same_bytes(&AdminReset::new(3), json!({ "status": "ok", "reset": 3 }));
        same_bytes(&AlarmAcked::new(-7), json!({ "status": "ok", "acked": -7 }));
    }

    #[test]
    fn paths_are_byte_identical_and_read_leniently() {
        let before = [
            (PathInfo::Unknown, json!({"state": "unknown"})),
            (PathInfo::Direct, json!({"state": "direct", "hops": 0})),
            (PathInfo::Relay { hops: 2 }, json!({"state": "relay", "hops": 2})),
            (PathInfo::None, json!({"state": "none"})),
        ];
        for (path, value) in before {
            same_bytes(&path, value);
        }
        for odd in [json!(null), json!(5), json!({"state": "relay"}), json!({"state": 1})] {
            assert_eq!(serde_json::from_value::<PathInfo>(odd).unwrap(), PathInfo::Unknown);
        }
    }

    #[test]
    fn agent_info_is_byte_identical_and_peers_need_only_an_id() {
        let peer = PeerInfo {
            agent_id: "a1".into(),
            agent_version: "0.1.0".into(),
            path: PathInfo::Relay { hops: 1 },
            wireguard_public_keys: vec!["k=".into()],
        };
        same_bytes(
            &peer,
            json!({
                "agent_id": "a1",
                "agent_version": "0.1.0",
                "wireguard_public_keys": ["k="],
                "path": {"state": "relay", "hops": 1},
            }),
        );
        let bare: PeerInfo = serde_json::from_str(r#"{"agent_id":"a2","path":7}"#).unwrap();
        assert_eq!((bare.agent_id.as_str(), bare.path), ("a2", PathInfo::Unknown));
        assert!(serde_json::from_str::<PeerInfo>(r#"["a2"]"#).is_err());

        let spool = SpoolStats { reports: 2, bytes: 300, dropped: 1 };
        let health = AgentHealth {
            agent_id: "a1".into(),
            agent_version: "0.1.0".into(),
            key: KeyInfo { degraded: false, keys: 1, source: "fixed".into() },
            path: PathInfo::Direct,
            spool,
            status: StatusOk,
        };
        same_bytes(
            &health,
            json!({
                "status": "ok",
                "agent_id": "a1",
                "agent_version": "0.1.0",
                "path": {"state": "direct", "hops": 0},
                "spool": {"reports": 2, "bytes": 300, "dropped": 1},
                "key": {"source": "fixed", "keys": 1, "degraded": false},
            }),
        );
    }

    #[test]
    fn refusals_read_what_the_agents_read_before() {
        let r = Refusal::read(br#"{"error":"replay"}"#).unwrap();
        assert_eq!((r.error.as_str(), r.detail.as_str()), ("replay", ""));
        assert_eq!(Refusal::read(br#"{"status":"ok","agent_id":"a","tick":1}"#), None);
        assert_eq!(Refusal::read(b"<html>"), None);
        assert!(serde_json::from_str::<Accepted>(
            r#"{"status":"fine","agent_id":"a","tick":1,"relay_hops":0}"#
        )
        .is_err());
    }
}
