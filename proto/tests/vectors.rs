//! The test vectors of docs/protocol.md, plus tamper, rotation and relay
//! chain checks built on them.

use kattila_proto::envelope::envelope_from_data_bytes;
use kattila_proto::{
    sign_data, verify, KeySet, Kind, Message, Psk, Relay, VerifyError, VerifyOptions,
};
use serde_json::value::RawValue;

const VECTOR_TIME: i64 = 1_767_225_600;

/// Reads the fenced block tagged `kattila-vector:<name>` from protocol.md.
fn vector(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md is readable");
    let tag = format!("kattila-vector:{name}\n");
    let start = doc.find(&tag).unwrap_or_else(|| panic!("vector {name} missing")) + tag.len();
    let end = start + doc[start..].find("\n```").expect("block is closed");
    doc[start..end].to_string()
}

fn psk() -> Psk {
    Psk::new(&vector("psk")).unwrap()
}

fn keys() -> KeySet {
    KeySet::new(psk())
}

fn at(now: i64) -> VerifyOptions {
    VerifyOptions::at(now)
}

fn report_envelope() -> Vec<u8> {
    envelope_from_data_bytes(&psk(), vector("report-data").as_bytes())
}

#[test]
fn documented_macs_match() {
    assert_eq!(sign_data(&psk(), vector("report-data").as_bytes()), vector("report-hmac"));
    assert_eq!(sign_data(&psk(), vector("register-data").as_bytes()), vector("register-hmac"));
}

#[test]
fn report_vector_verifies() {
    let v = verify(&report_envelope(), &keys(), at(VECTOR_TIME)).unwrap();
    assert_eq!(v.layers.len(), 1);
    assert_eq!(v.origin().tick, 42);
    let Message::Report(r) = v.message else { panic!("expected a report") };
    assert_eq!(r.hostname, "edge-1");
    assert_eq!(r.observed_at, VECTOR_TIME - 10);
    assert_eq!(r.interfaces[0].addresses, ["192.0.2.10/24", "2001:db8::10/64"]);
    assert_eq!(r.wireguard[0].peers[0].latest_handshake, Some(VECTOR_TIME - 20));
}

#[test]
fn register_vector_verifies() {
    let env = envelope_from_data_bytes(&psk(), vector("register-data").as_bytes());
    let v = verify(&env, &keys(), at(VECTOR_TIME)).unwrap();
    assert!(matches!(v.message, Message::Register(ref r) if r.hostname == "edge-1"));
}

#[test]
fn relay_vector_verifies_both_layers() {
    let env = vector("relay-envelope");
    let outer: serde_json::Value = serde_json::from_str(&env).unwrap();
    assert_eq!(outer["hmac"], vector("relay-hmac"));
    let v = verify(env.as_bytes(), &keys(), at(VECTOR_TIME)).unwrap();
    assert_eq!(v.relay_hops(), 1);
    assert_eq!(v.layers[0].kind, Kind::Relay);
    assert_eq!(v.layers[0].agent_id, "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5");
    assert_eq!(v.origin().agent_id, "5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50");
    assert_eq!(v.relay_path().collect::<Vec<_>>(), ["a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"]);
}

#[test]
fn every_tampered_data_byte_fails() {
    let env = report_envelope();
    let data = vector("report-data");
    let offset = br#"{"version":1,"data":"#.len();
    for i in offset..offset + data.len() {
        let mut bad = env.clone();
        // Flip one bit, keeping the byte ASCII so most changes still parse.
        bad[i] ^= 0x01;
        let result = verify(&bad, &keys(), at(VECTOR_TIME));
        assert!(result.is_err(), "tampering byte {i} ({:?}) went unnoticed", bad[i] as char);
    }
}

#[test]
fn every_tampered_mac_character_fails() {
    let env = report_envelope();
    let start = env.len() - 2 - 64;
    for i in start..start + 64 {
        let mut bad = env.clone();
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        assert_eq!(verify(&bad, &keys(), at(VECTOR_TIME)), Err(VerifyError::BadMac), "byte {i}");
    }
}

#[test]
fn wrong_or_altered_key_fails() {
    let env = report_envelope();
    let text = vector("psk");
    for key in [format!("{text}x"), text[..text.len() - 1].to_string(), text.replace('k', "K")] {
        let keys = KeySet::new(Psk::new(&key).unwrap());
        assert_eq!(verify(&env, &keys, at(VECTOR_TIME)), Err(VerifyError::BadMac));
    }
}

#[test]
fn key_rotated_out_twice_verifies_three_times_does_not() {
    let env = report_envelope();
    let mut keys = keys();
    for (n, next) in ["second", "third"].into_iter().enumerate() {
        keys.rotate(Psk::new(next).unwrap());
        assert!(verify(&env, &keys, at(VECTOR_TIME)).is_ok(), "after {} rotations", n + 1);
    }
    keys.rotate(Psk::new("fourth").unwrap());
    assert_eq!(verify(&env, &keys, at(VECTOR_TIME)), Err(VerifyError::BadMac));
}

#[test]
fn clock_skew_limit_is_600_seconds_each_way() {
    let env = report_envelope();
    assert!(verify(&env, &keys(), at(VECTOR_TIME + 600)).is_ok());
    assert!(verify(&env, &keys(), at(VECTOR_TIME - 600)).is_ok());
    assert_eq!(
        verify(&env, &keys(), at(VECTOR_TIME + 601)),
        Err(VerifyError::Skew { skew_secs: -601 })
    );
    assert_eq!(
        verify(&env, &keys(), at(VECTOR_TIME - 601)),
        Err(VerifyError::Skew { skew_secs: 601 })
    );
}

fn nonce(n: u64) -> String {
    format!("{n:032x}")
}

/// Wraps `inner` in a relay signed by `relayer`.
fn wrap(psk: &Psk, relayer: &str, tick: u64, inner: &[u8]) -> Vec<u8> {
    let inner = RawValue::from_string(String::from_utf8(inner.to_vec()).unwrap()).unwrap();
    let relay = Relay {
        kind: Kind::Relay,
        agent_id: relayer,
        timestamp: VECTOR_TIME,
        nonce: &nonce(tick),
        tick,
        inner: &inner,
    };
    kattila_proto::signed_envelope(psk, &relay)
}

fn chain(relayers: &[&str]) -> Vec<u8> {
    relayers
        .iter()
        .enumerate()
        .fold(report_envelope(), |env, (i, r)| wrap(&psk(), r, i as u64 + 1, &env))
}

#[test]
fn relays_of_one_to_three_layers_verify_four_do_not() {
    let relayers = ["relay-a", "relay-b", "relay-c", "relay-d"];
    for n in 1..=3 {
        let v = verify(&chain(&relayers[..n]), &keys(), at(VECTOR_TIME)).unwrap();
        assert_eq!(v.relay_hops(), n);
        assert_eq!(v.relay_path().collect::<Vec<_>>(), relayers[..n]);
    }
    assert_eq!(
        verify(&chain(&relayers), &keys(), at(VECTOR_TIME)),
        Err(VerifyError::TooManyRelays)
    );
}

#[test]
fn relay_loop_is_refused() {
    let looped = chain(&["relay-a", "relay-b", "relay-a"]);
    assert_eq!(
        verify(&looped, &keys(), at(VECTOR_TIME)),
        Err(VerifyError::RelayLoop("relay-a".into()))
    );
    // The origin relaying its own message is a loop too.
    let own = chain(&["5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50"]);
    assert!(matches!(verify(&own, &keys(), at(VECTOR_TIME)), Err(VerifyError::RelayLoop(_))));
}

#[test]
fn tampered_inner_layer_is_refused_even_with_a_valid_outer_mac() {
    let mut inner = report_envelope();
    let pos = inner.windows(6).position(|w| w == b"edge-1").unwrap();
    inner[pos] = b'E';
    let env = wrap(&psk(), "relay-a", 1, &inner);
    assert_eq!(verify(&env, &keys(), at(VECTOR_TIME)), Err(VerifyError::BadMac));
}

#[test]
fn relay_signed_with_unknown_key_is_refused() {
    let env = wrap(&Psk::new("not the fleet key").unwrap(), "relay-a", 1, &report_envelope());
    assert_eq!(verify(&env, &keys(), at(VECTOR_TIME)), Err(VerifyError::BadMac));
}

type Expect = fn(&VerifyError) -> bool;

#[test]
fn bad_shapes_are_refused_before_the_mac() {
    let sign = |data: &str| envelope_from_data_bytes(&psk(), data.as_bytes());
    let report = vector("report-data");
    let whole = String::from_utf8(report_envelope()).unwrap();
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (b"{\"version\":1,\"data\":{".to_vec(), |e| matches!(e, VerifyError::BadJson(_))),
        (b"\xff\xfe".to_vec(), |e| matches!(e, VerifyError::BadJson(_))),
        (b"[1,2,3]".to_vec(), |e| matches!(e, VerifyError::BadShape(_))),
        (whole.replacen("\"version\":1", "\"version\":2", 1).into_bytes(), |e| {
            matches!(e, VerifyError::UnsupportedVersion(2))
        }),
        (
            whole.replacen("\"hmac\":\"", "\"hmac\":\"A", 1).into_bytes(),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("hmac")),
        ),
        (sign(&report.replace("\"tick\":42,", "")), |e| matches!(e, VerifyError::BadShape(_))),
        (
            sign(&report.replace("00112233445566778899aabbccddeeff", "xyz")),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("nonce")),
        ),
        (
            sign(&report.replace("\"kind\":\"report\"", "\"kind\":\"relay\"")),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("inner")),
        ),
        (sign(&report.replace("\"kind\":\"report\"", "\"kind\":\"gossip\"")), |e| {
            matches!(e, VerifyError::BadShape(_))
        }),
        (
            sign(&report.replace("192.0.2.10/24", "192.0.2.10/40")),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("address")),
        ),
        (
            sign(&report.replace("\"edge-1\"", &format!("\"{}\"", "h".repeat(254)))),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("hostname")),
        ),
        (sign(&report.replace("\"tick\":42", "\"tick\":-1")), |e| {
            matches!(e, VerifyError::BadShape(_))
        }),
        (
            sign(&report.replace("\"agent_id\":\"5f1c", "\"agent_id\":\"../5f1c")),
            |e| matches!(e, VerifyError::BadShape(m) if m.contains("agent_id")),
        ),
    ];
    for (i, (body, expected)) in cases.into_iter().enumerate() {
        let err = verify(&body, &keys(), at(VECTOR_TIME)).expect_err(&format!("case {i} passed"));
        assert!(expected(&err), "case {i}: unexpected {err:?}");
    }
}

#[test]
fn oversized_body_is_refused_first() {
    let opts = VerifyOptions { now: VECTOR_TIME, max_body: 100 };
    assert_eq!(
        verify(&report_envelope(), &keys(), opts),
        Err(VerifyError::TooLarge { size: report_envelope().len(), limit: 100 })
    );
}

#[test]
fn no_key_means_nothing_verifies() {
    assert_eq!(
        verify(&report_envelope(), &KeySet::default(), at(VECTOR_TIME)),
        Err(VerifyError::NoKey)
    );
}

#[test]
fn signed_envelope_round_trips_through_verify() {
    let v = verify(&report_envelope(), &keys(), at(VECTOR_TIME)).unwrap();
    let Message::Report(report) = v.message else { unreachable!() };
    let again = kattila_proto::signed_envelope(&psk(), &*report);
    let v2 = verify(&again, &keys(), at(VECTOR_TIME)).unwrap();
    assert_eq!(v2.message, Message::Report(report));
}
