//! Signed reset requests for `POST /status/reset`.
//!
//! The body is an envelope like every other message, with
//! `data = {"kind":"reset","agent_id":<the agent to reset>,"timestamp",
//! "nonce","tick"}` signed with the fleet key. The agent checks the MAC
//! against its current and two previous keys, the timestamp against its clock (±600 s) and
//! that `agent_id` is its own. After a reset the agent has a new id, so
//! replaying the same request does nothing.

use kattila_keysource::KeyRing;
use kattila_proto::envelope::{envelope_from_data_bytes, Envelope, PROTOCOL_VERSION};
use kattila_proto::limits::{check_agent_id, check_hmac_text, check_nonce, check_tick};
use kattila_proto::{Psk, MAX_SKEW_SECS};
use serde::{Deserialize, Serialize};

use crate::identity::new_nonce;

#[derive(Debug, Serialize, Deserialize)]
#[serde(remote = "Self")]
struct ResetData {
    kind: String,
    agent_id: String,
    timestamp: i64,
    nonce: String,
    tick: u64,
}

// A JSON object only, like every protocol message.
kattila_proto::object_only! {
    "a reset request" => ResetData, serialize;
}

/// A signed reset request for `agent_id`.
pub fn request(psk: &Psk, agent_id: &str, now: i64, tick: u64) -> Vec<u8> {
    let data = ResetData {
        kind: "reset".into(),
        agent_id: agent_id.into(),
        timestamp: now,
        nonce: new_nonce(),
        tick,
    };
    envelope_from_data_bytes(psk, &serde_json::to_vec(&data).expect("JSON"))
}

/// Checks a reset request addressed to `own_id`; `Err((status, code, detail))`.
pub fn check(
    body: &[u8],
    keys: &KeyRing,
    own_id: &str,
    now: i64,
) -> Result<(), (u16, &'static str, String)> {
    let bad = |code, detail: String| Err((400, code, detail));
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(_) => return bad("bad_json", "not UTF-8".into()),
    };
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(e) => e,
        // Well-formed JSON of the wrong shape (an array, say) is bad_shape.
        Err(e) if e.is_data() => return bad("bad_shape", e.to_string()),
        Err(e) => return bad("bad_json", e.to_string()),
    };
    if env.version != PROTOCOL_VERSION {
        return bad("unsupported_version", format!("unsupported protocol version {}", env.version));
    }
    if let Err(e) = check_hmac_text(env.hmac) {
        return bad("bad_shape", e.0);
    }
    let data: ResetData = match serde_json::from_str(env.data.get()) {
        Ok(d) => d,
        Err(e) => return bad("bad_shape", e.to_string()),
    };
    if data.kind != "reset" {
        return bad("wrong_kind", "a reset request has kind \"reset\"".into());
    }
    let shape = check_agent_id(&data.agent_id)
        .and_then(|_| check_nonce(&data.nonce))
        .and_then(|_| check_tick(data.tick));
    if let Err(e) = shape {
        return bad("bad_shape", e.0);
    }
    if keys.current().is_none() {
        return Err((503, "no_key", "no fleet key yet".into()));
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(env.hmac, &mut mac).expect("checked as 64 hex characters");
    // Current and previous keys, as for every other message.
    if !keys.with(|k| k.verifies(env.data.get().as_bytes(), &mac)) {
        return Err((401, "bad_mac", "message authentication failed".into()));
    }
    let skew = data.timestamp.saturating_sub(now);
    if skew.unsigned_abs() > MAX_SKEW_SECS as u64 {
        return Err((401, "stale", format!("timestamp is {skew} s away from this agent's clock")));
    }
    if data.agent_id != own_id {
        return bad("wrong_agent", "the request names another agent".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kattila_keysource::KeyConfig;

    #[test]
    fn only_a_fresh_request_signed_for_this_agent_passes() {
        let psk = Psk::new("reset-key").unwrap();
        let ring = KeyRing::new(&KeyConfig::Fixed(psk.clone()));
        let ok = request(&psk, "agent1", 1000, 5);
        assert!(check(&ok, &ring, "agent1", 1000).is_ok());
        assert_eq!(check(&ok, &ring, "agent2", 1000).unwrap_err().1, "wrong_agent");
        assert_eq!(check(&ok, &ring, "agent1", 3000).unwrap_err().1, "stale");
        let forged = request(&Psk::new("other").unwrap(), "agent1", 1000, 5);
        assert_eq!(check(&forged, &ring, "agent1", 1000).unwrap_err().0, 401);
        assert_eq!(check(b"{}", &ring, "agent1", 1000).unwrap_err().0, 400);
        let mut tampered = ok.clone();
        let pos = tampered.windows(6).position(|w| w == b"agent1").unwrap();
        tampered[pos + 5] = b'2';
        assert_eq!(check(&tampered, &ring, "agent2", 1000).unwrap_err().1, "bad_mac");
    }

    #[test]
    fn a_reset_is_an_object_with_a_tick_in_range() {
        let psk = Psk::new("reset-key").unwrap();
        let ring = KeyRing::new(&KeyConfig::Fixed(psk.clone()));
        let nonce = "0123456789abcdef0123456789abcdef";
        let array = format!(r#"["reset","agent1",1000,"{nonce}",5]"#);
        let refused =
            check(&envelope_from_data_bytes(&psk, array.as_bytes()), &ring, "agent1", 1000);
        assert_eq!(refused.unwrap_err().1, "bad_shape");
        let data = format!(
            r#"{{"kind":"reset","agent_id":"agent1","timestamp":1000,"nonce":"{nonce}","tick":5}}"#
        );
        let mac = kattila_proto::sign_data(&psk, data.as_bytes());
        let array_envelope = format!(r#"[1,{data},"{mac}"]"#);
        let refused = check(array_envelope.as_bytes(), &ring, "agent1", 1000);
        assert_eq!(refused.unwrap_err().1, "bad_shape");
        for tick in [1u64 << 63, u64::MAX] {
            let req = request(&psk, "agent1", 1000, tick);
            assert_eq!(check(&req, &ring, "agent1", 1000).unwrap_err().1, "bad_shape", "{tick}");
        }
        assert!(
            check(&request(&psk, "agent1", 1000, i64::MAX as u64), &ring, "agent1", 1000).is_ok()
        );
    }
}
