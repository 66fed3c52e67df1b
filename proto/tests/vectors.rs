//! The test vectors of docs/protocol.md, plus tamper, rotation and relay
//! chain checks built on them.

use kattila_proto::envelope::envelope_from_data_bytes;
use kattila_proto::{
    relay_envelope, sign_data, verify, KeySet, Kind, Message, Psk, VerifyError, VerifyOptions,
};

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
    for name in ["max-tick", "tick-out-of-range"] {
        let data = vector(&format!("{name}-data"));
        assert_eq!(sign_data(&psk(), data.as_bytes()), vector(&format!("{name}-hmac")), "{name}");
    }
}

#[test]
fn the_largest_tick_verifies_and_the_next_is_refused_with_a_valid_mac() {
    let env = envelope_from_data_bytes(&psk(), vector("max-tick-data").as_bytes());
    assert_eq!(verify(&env, &keys(), at(VECTOR_TIME)).unwrap().origin().tick, i64::MAX as u64);
    let env = envelope_from_data_bytes(&psk(), vector("tick-out-of-range-data").as_bytes());
    assert!(matches!(
        verify(&env, &keys(), at(VECTOR_TIME)),
        Err(VerifyError::BadShape(m)) if m.contains("tick")
    ));
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
fn the_relay_constructor_writes_the_documented_relay_vector() {
    let relay = relay_envelope(
        &psk(),
        "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        VECTOR_TIME + 1,
        "0123456789abcdef0123456789abcdef",
        7,
        &report_envelope(),
    )
    .unwrap();
    assert_eq!(String::from_utf8(relay).unwrap(), vector("relay-envelope"));
    // Whitespace around the received envelope is not part of it.
    let mut padded = b" \n".to_vec();
    padded.extend(report_envelope());
    padded.extend(b"\r\n");
    let relay = relay_envelope(
        &psk(),
        "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        VECTOR_TIME + 1,
        "0123456789abcdef0123456789abcdef",
        7,
        &padded,
    )
    .unwrap();
    assert_eq!(String::from_utf8(relay).unwrap(), vector("relay-envelope"));
    for bad in [&b"{\"version\":"[..], b"\xff"] {
        let err = relay_envelope(&psk(), "r", 0, &nonce(1), 1, bad).unwrap_err();
        assert_eq!(err.code(), "bad_json");
    }
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
    relay_envelope(psk, relayer, VECTOR_TIME, &nonce(tick), tick, inner).unwrap()
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

/// Signs `data` as is, so only the checks after the MAC can refuse it.
fn signed(data: &str) -> Vec<u8> {
    envelope_from_data_bytes(&psk(), data.as_bytes())
}

/// Vector 1's data with one member's value replaced (`"name":<old>` →
/// `"name":<new>`, first occurrence).
fn report_with(name: &str, old: &str, new: &str) -> String {
    let report = vector("report-data");
    let from = format!("\"{name}\":{old}");
    assert!(report.contains(&from), "vector 1 has no {from}");
    report.replacen(&from, &format!("\"{name}\":{new}"), 1)
}

fn assert_bad_shape(body: &[u8], mentions: &str, case: &str) {
    match verify(body, &keys(), at(VECTOR_TIME)) {
        Err(VerifyError::BadShape(m)) => {
            assert!(m.contains(mentions), "{case}: detail {m:?} does not mention {mentions:?}")
        }
        other => panic!("{case}: expected bad_shape, got {other:?}"),
    }
}

#[test]
fn arrays_where_the_protocol_says_object_are_refused() {
    let report = vector("report-data");
    let mac = vector("report-hmac");
    // The envelope itself as [version, data, hmac]: every byte the MAC
    // covers is intact.
    let array_envelope = format!("[1,{report},\"{mac}\"]");
    assert_bad_shape(array_envelope.as_bytes(), "JSON object", "envelope as array");

    // `data` as an array of the report's field values in declaration order
    // (the order serde's derived code reads them in), validly signed.
    let system = r#"{"uptime_secs":86400,"load":[0.15,0.1,0.05],"kernel":"6.1.0-28-amd64"}"#;
    let system_array = r#"[86400,[0.15,0.1,0.05],"6.1.0-28-amd64"]"#;
    let array_data = format!(
        r#"["report","5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50",1767225600,"00112233445566778899aabbccddeeff",42,1767225590,"edge-1","0.1.0",{system_array}]"#
    );
    assert_bad_shape(&signed(&array_data), "JSON object", "data as array");

    // Each nested object of vector 1 in the same array form.
    let interface = r#"{"name":"eth0","kind":"ether","state":"up","mtu":1500,"mac":"52:54:00:12:34:56","addresses":["192.0.2.10/24","2001:db8::10/64"],"rx_bytes":123456,"tx_bytes":654321,"rx_errors":0,"tx_errors":0}"#;
    let route =
        r#"{"dst":"0.0.0.0/0","gateway":"192.0.2.1","dev":"eth0","metric":100,"table":254}"#;
    let peer = r#"{"public_key":"TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=","endpoint":"198.51.100.7:51820","allowed_ips":["10.99.0.2/32"],"latest_handshake":1767225580,"rx_bytes":2048,"tx_bytes":4096,"persistent_keepalive":25}"#;
    let device_head = r#"{"name":"wg0","public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","listen_port":51820,"peers":["#;
    let nested = [
        ("system", report.replacen(system, system_array, 1)),
        (
            "interface",
            report.replacen(interface, r#"["eth0","ether","up",1500,"52:54:00:12:34:56",["192.0.2.10/24","2001:db8::10/64"],123456,654321,0,0]"#, 1),
        ),
        ("route", report.replacen(route, r#"["0.0.0.0/0","192.0.2.1","eth0",100,254]"#, 1)),
        (
            "WireGuard device",
            report.replacen(
                &format!("{device_head}{peer}]}}"),
                &format!(r#"["wg0","xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",51820,[{peer}]]"#),
                1,
            ),
        ),
        (
            "WireGuard peer",
            report.replacen(peer, r#"["TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=","198.51.100.7:51820",["10.99.0.2/32"],1767225580,2048,4096,25]"#, 1),
        ),
        (
            "collection error",
            report.replacen("\"routes\":", r#""errors":[["netlink","failed"]],"routes":"#, 1),
        ),
    ];
    for (what, data) in nested {
        assert_ne!(data, report, "{what}: the replacement happened");
        assert_bad_shape(&signed(&data), "JSON object", what);
    }

    // A relay whose inner envelope is an array, and a register as an array.
    let relayed = wrap(&psk(), "relay-a", 1, array_envelope.as_bytes());
    assert_bad_shape(&relayed, "JSON object", "inner envelope as array");
    let inner = String::from_utf8(report_envelope()).unwrap();
    let relay_array =
        format!(r#"["relay","relay-a",1767225600,"0123456789abcdef0123456789abcdef",7,{inner}]"#);
    assert_bad_shape(&signed(&relay_array), "JSON object", "relay data as array");
    let register = r#"["register","5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50",1767225600,"ffeeddccbbaa99887766554433221100",1,"edge-1","0.1.0"]"#;
    assert_bad_shape(&signed(register), "JSON object", "register as array");
}

#[test]
fn kind_is_a_string_and_inner_belongs_to_relays_only() {
    let report = vector("report-data");
    // serde's derived enums also read the map form of a variant.
    let map_kind = report_with("kind", "\"report\"", r#"{"report":null}"#);
    assert_bad_shape(&signed(&map_kind), "kind", "kind as a map");
    // A null inner is still an inner: no member a report may carry.
    let null_inner = report.replacen("\"tick\":42,", "\"tick\":42,\"inner\":null,", 1);
    assert_bad_shape(&signed(&null_inner), "inner", "report with a null inner");
    let relay_null = r#"{"kind":"relay","agent_id":"relay-a","timestamp":1767225600,"nonce":"0123456789abcdef0123456789abcdef","tick":1,"inner":null}"#;
    assert_bad_shape(&signed(relay_null), "JSON object", "relay with a null inner");
}

#[test]
fn load_is_exactly_three_numbers_and_a_fourth_is_a_shape_error() {
    for (load, case) in [("[0.15,0.1,0.05,0.01]", "four"), ("[0.15,0.1]", "two")] {
        let data = report_with("load", "[0.15,0.1,0.05]", load);
        assert_bad_shape(&signed(&data), "3 load averages", case);
    }
}

#[test]
fn observed_at_is_not_negative_nor_after_timestamp() {
    let at_timestamp = report_with("observed_at", "1767225590", "1767225600");
    assert!(verify(&signed(&at_timestamp), &keys(), at(VECTOR_TIME)).is_ok());
    let a_day_late = report_with("observed_at", "1767225590", &(VECTOR_TIME + 86_400).to_string());
    assert_bad_shape(&signed(&a_day_late), "observed_at", "observed a day after signing");
    let one_second = report_with("observed_at", "1767225590", "1767225601");
    assert_bad_shape(&signed(&one_second), "observed_at", "observed a second after signing");
    let negative = report_with("observed_at", "1767225590", "-5");
    assert_bad_shape(&signed(&negative), "observed_at", "negative observed_at");
    let handshake = report_with("latest_handshake", "1767225580", "-1");
    assert_bad_shape(&signed(&handshake), "latest_handshake", "negative handshake");
}

const MAX_TICK: u64 = i64::MAX as u64;

#[test]
fn ticks_above_2_pow_63_minus_1_are_refused_in_every_layer() {
    let with_tick = |t: u64| report_with("tick", "42", &t.to_string());
    let v = verify(&signed(&with_tick(MAX_TICK)), &keys(), at(VECTOR_TIME)).unwrap();
    assert_eq!(v.origin().tick, MAX_TICK);
    for tick in [MAX_TICK + 1, MAX_TICK + 5, u64::MAX] {
        assert_bad_shape(&signed(&with_tick(tick)), "tick", &format!("report tick {tick}"));
        let register =
            vector("register-data").replacen("\"tick\":1,", &format!("\"tick\":{tick},"), 1);
        assert_bad_shape(&signed(&register), "tick", &format!("register tick {tick}"));
        // A valid origin inside a relay layer whose own tick is too large.
        let relayed = wrap(&psk(), "relay-a", tick, &report_envelope());
        assert_bad_shape(&relayed, "tick", &format!("relay tick {tick}"));
    }
    let relayed = wrap(&psk(), "relay-a", MAX_TICK, &report_envelope());
    assert_eq!(verify(&relayed, &keys(), at(VECTOR_TIME)).unwrap().layers[0].tick, MAX_TICK);
}

#[test]
fn counters_above_2_pow_63_minus_1_are_refused() {
    let too_big = (MAX_TICK + 1).to_string();
    for (name, old) in [
        ("uptime_secs", "86400"),
        ("rx_bytes", "123456"),
        ("tx_bytes", "654321"),
        ("rx_errors", "0"),
        ("tx_errors", "0"),
    ] {
        assert_bad_shape(&signed(&report_with(name, old, &too_big)), name, name);
        let largest = report_with(name, old, &MAX_TICK.to_string());
        assert!(verify(&signed(&largest), &keys(), at(VECTOR_TIME)).is_ok(), "{name} at max");
    }
    // The peer's counters come after the interface's of the same name.
    let peer =
        vector("report-data").replacen("\"rx_bytes\":2048", &format!("\"rx_bytes\":{too_big}"), 1);
    assert_bad_shape(&signed(&peer), "peer rx_bytes", "peer rx_bytes");
    let dropped = vector("report-data").replacen(
        "\"tick\":42,",
        &format!("\"tick\":42,\"spool_dropped\":{too_big},"),
        1,
    );
    assert_bad_shape(&signed(&dropped), "spool_dropped", "spool_dropped");
}

#[test]
fn the_largest_relay_layer_fits_its_budget() {
    use kattila_proto::limits::{MAX_RELAY_LAYER_BYTES, MAX_UINT};
    let inner = report_envelope();
    let agent_id = "a".repeat(kattila_proto::limits::MAX_AGENT_ID);
    let relay = relay_envelope(&psk(), &agent_id, i64::MIN, &nonce(1), MAX_UINT, &inner).unwrap();
    let layer = relay.len() - inner.len();
    assert!(layer <= MAX_RELAY_LAYER_BYTES, "a relay layer takes {layer} bytes");
}

#[test]
fn a_reset_passes_the_layer_checks_of_every_message_and_only_for_its_agent() {
    use kattila_proto::{verify_reset, Reset};
    let id = "5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50";
    let ok = Reset::signed(&psk(), id, VECTOR_TIME, &nonce(9), 9);
    let reset = verify_reset(&ok, &keys(), id, VECTOR_TIME + 600).unwrap();
    assert_eq!((reset.kind, reset.agent_id.as_str(), reset.tick), (Kind::Reset, id, 9));
    let data = format!(
        r#"{{"kind":"reset","agent_id":"{id}","timestamp":{VECTOR_TIME},"nonce":"{}","tick":9}}"#,
        nonce(9)
    );
    assert_eq!(ok, envelope_from_data_bytes(&psk(), data.as_bytes()), "the documented form");
    let code = |body: &[u8], own: &str, now: i64| {
        let e = verify_reset(body, &keys(), own, now).unwrap_err();
        (e.status(), e.code())
    };
    assert_eq!(code(&ok, "another", VECTOR_TIME), (400, "wrong_agent"));
    assert_eq!(code(&ok, id, VECTOR_TIME + 601), (401, "stale"));
    let wrong_key = Reset::signed(&Psk::new("another key").unwrap(), id, VECTOR_TIME, &nonce(9), 9);
    assert_eq!(code(&wrong_key, id, VECTOR_TIME), (401, "bad_mac"));
    assert_eq!(code(&report_envelope(), id, VECTOR_TIME), (400, "wrong_kind"));
    let bogus = data.replace(r#""kind":"reset""#, r#""kind":"bogus""#);
    assert_eq!(
        code(&envelope_from_data_bytes(&psk(), bogus.as_bytes()), id, VECTOR_TIME),
        (400, "wrong_kind")
    );
    let v2 = String::from_utf8(ok.clone()).unwrap().replacen(r#""version":1"#, r#""version":2"#, 1);
    assert_eq!(code(v2.as_bytes(), id, VECTOR_TIME), (400, "unsupported_version"));
    assert_eq!(code(b"{", id, VECTOR_TIME), (400, "bad_json"));
    assert_eq!(code(b"[]", id, VECTOR_TIME), (400, "bad_shape"));
    let no_keys = KeySet::default();
    assert_eq!(verify_reset(&ok, &no_keys, id, VECTOR_TIME).unwrap_err().code(), "no_key");
}

#[test]
fn the_receiver_refuses_a_reset_as_bad_shape_even_validly_signed() {
    use kattila_proto::Reset;
    let reset =
        Reset::signed(&psk(), "5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50", VECTOR_TIME, &nonce(9), 9);
    let direct = verify(&reset, &keys(), at(VECTOR_TIME)).unwrap_err();
    assert_eq!((direct.status(), direct.code()), (400, "bad_shape"));
    let relayed = wrap(&psk(), "relay-a", 1, &reset);
    assert_eq!(verify(&relayed, &keys(), at(VECTOR_TIME)).unwrap_err().code(), "bad_shape");
}

/// Vector 6 carries `site`. Receivers and relays that predate the member
/// accept it too: a report's unknown members are ignored (this test passed
/// against the model without `site`). The MAC covers the exact bytes,
/// `site` included.
#[test]
fn report_with_a_site_verifies() {
    let data = vector("report-site-data");
    assert_eq!(sign_data(&psk(), data.as_bytes()), vector("report-site-hmac"));
    let env = envelope_from_data_bytes(&psk(), data.as_bytes());
    let v = verify(&env, &keys(), at(VECTOR_TIME)).unwrap();
    let Message::Report(r) = v.message else { panic!("expected a report") };
    assert_eq!(r.hostname, "edge-1");
    assert_eq!(r.site.as_deref(), Some("helsinki-dc1"));
    // Without the member there is no site, and none is written back.
    let v = verify(&report_envelope(), &keys(), at(VECTOR_TIME)).unwrap();
    let Message::Report(r) = v.message else { panic!("expected a report") };
    assert_eq!(r.site, None);
    assert!(!serde_json::to_string(&*r).unwrap().contains("\"site\""));
}

/// A label that breaks the limits is refused as a whole, validly signed
/// or not, before anything is stored.
#[test]
fn a_bad_site_is_refused_with_bad_shape() {
    let good = vector("report-site-data");
    let long = format!("\"site\":\"{}\"", "x".repeat(kattila_proto::limits::MAX_SITE + 1));
    for bad in [r#""site":"dc\n1""#, r#""site":"""#, long.as_str(), r#""site":7"#] {
        let data = good.replace(r#""site":"helsinki-dc1""#, bad);
        let env = envelope_from_data_bytes(&psk(), data.as_bytes());
        let err = verify(&env, &keys(), at(VECTOR_TIME)).unwrap_err();
        assert_eq!(err.code(), "bad_shape", "{bad}: {err}");
    }
}
