//! Signed reset requests for an agent's `POST /status/reset`.
//!
//! The request is an envelope like every other message, with
//! `data = {"kind":"reset","agent_id":<the agent to reset>,"timestamp",
//! "nonce","tick"}` signed with the fleet key ([`kattila_proto::Reset`]).
//! The agent checks it with [`kattila_proto::verify_reset`]: the layer
//! checks of every message (shape, MAC against its current and previous
//! keys, timestamp within ±600 s) and that `agent_id` is its own. After a
//! reset the agent has a new id, so replaying the same request does nothing.

use kattila_proto::{Psk, Reset};

use crate::identity::new_nonce;

/// A signed reset request for `agent_id`.
pub fn request(psk: &Psk, agent_id: &str, now: i64, tick: u64) -> Vec<u8> {
    Reset::signed(psk, agent_id, now, &new_nonce(), tick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kattila_keysource::{KeyConfig, KeyRing};
    use kattila_proto::envelope::envelope_from_data_bytes;
    use kattila_proto::{verify_reset, ResetError};

    /// What the agent answers a reset request: `(status, code)` on refusal.
    fn check(
        body: &[u8],
        keys: &KeyRing,
        own_id: &str,
        now: i64,
    ) -> Result<(), (u16, &'static str)> {
        keys.with(|k| verify_reset(body, k, own_id, now))
            .map(|_| ())
            .map_err(|e: ResetError| (e.status(), e.code()))
    }

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
