//! Field limits of protocol v1. A message that breaks one is refused as a
//! whole with 400; nothing of it is stored.

use std::net::IpAddr;

use crate::model::{Interface, Register, Report, Route, WgDevice, WgPeer};

/// Largest request body a receiver or relay must accept, in bytes. It also
/// bounds what a relay forwards: its own layer included.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Room to leave for one relay layer around a forwarded envelope, in bytes.
/// A layer as Kattila writes it takes at most 301 (64-character `agent_id`,
/// the longest timestamp and tick); the rest is slack for other writers.
pub const MAX_RELAY_LAYER_BYTES: usize = 512;
/// Largest envelope an origin should send if it may be relayed: it still
/// fits [`MAX_BODY_BYTES`] after [`crate::MAX_RELAY_LAYERS`] layers.
pub const MAX_RELAYABLE_BYTES: usize =
    MAX_BODY_BYTES - crate::MAX_RELAY_LAYERS * MAX_RELAY_LAYER_BYTES;
pub const MAX_AGENT_ID: usize = 64;
pub const MAX_HOSTNAME: usize = 253;
/// The operator's site label: a short human name, at most this many bytes.
pub const MAX_SITE: usize = 64;
/// Any other string field (interface names, kinds, kernel release, …).
pub const MAX_SHORT_STRING: usize = 255;
pub const MAX_ERROR_MESSAGE: usize = 1024;
pub const MAX_INTERFACES: usize = 1024;
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 256;
pub const MAX_ROUTES: usize = 8192;
pub const MAX_WG_DEVICES: usize = 64;
pub const MAX_PEERS_PER_DEVICE: usize = 4096;
pub const MAX_ALLOWED_IPS_PER_PEER: usize = 1024;
pub const MAX_ERRORS: usize = 32;
/// Largest value of any unsigned integer field (`tick`, counters, uptime):
/// 2^63 − 1. Receivers keep integers in SQLite, whose integers are signed
/// 64-bit; a larger value would come back negative, and a tick that did
/// would rebuild an agent's replay window wrongly after a restart.
pub const MAX_UINT: u64 = i64::MAX as u64;

/// Why a message's shape is unacceptable; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

type Result = std::result::Result<(), ShapeError>;

fn fail(msg: impl Into<String>) -> Result {
    Err(ShapeError(msg.into()))
}

/// `agent_id`: 1–64 characters from `[A-Za-z0-9._-]`.
pub fn check_agent_id(id: &str) -> Result {
    if id.is_empty() || id.len() > MAX_AGENT_ID {
        return fail(format!("agent_id must be 1-{MAX_AGENT_ID} characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return fail("agent_id may only contain A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// `site`: 1–[`MAX_SITE`] bytes of UTF-8 without control characters.
/// Like `hostname` any other text is allowed (published pages escape it
/// and mark hidden characters); control characters are refused because a
/// label is one line that people read, and an empty label is no label —
/// leave the member out instead.
pub fn check_site(site: &str) -> Result {
    if site.is_empty() || site.len() > MAX_SITE {
        return fail(format!("site must be 1-{MAX_SITE} bytes"));
    }
    if site.chars().any(char::is_control) {
        return fail("site may not contain control characters");
    }
    Ok(())
}

/// `nonce`: exactly 32 lowercase hex characters (16 random bytes).
pub fn check_nonce(nonce: &str) -> Result {
    if nonce.len() != 32 || !nonce.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return fail("nonce must be 32 lowercase hex characters");
    }
    Ok(())
}

/// `hmac`: exactly 64 lowercase hex characters.
pub fn check_hmac_text(mac: &str) -> Result {
    if mac.len() != 64 || !mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return fail("hmac must be 64 lowercase hex characters");
    }
    Ok(())
}

/// `tick`, in every layer: 0 ..= [`MAX_UINT`].
pub fn check_tick(tick: u64) -> Result {
    check_uint("tick", tick)
}

fn check_uint(field: &str, value: u64) -> Result {
    if value > MAX_UINT {
        return fail(format!("{field} {value} is above the largest allowed value {MAX_UINT}"));
    }
    Ok(())
}

/// Unix seconds: never before 1970.
fn check_unix_time(field: &str, value: i64) -> Result {
    if value < 0 {
        return fail(format!("{field} {value} is negative"));
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> Result {
    if value.len() > max {
        return fail(format!("{field} longer than {max} bytes"));
    }
    Ok(())
}

fn check_count<T>(field: &str, items: &[T], max: usize) -> Result {
    if items.len() > max {
        return fail(format!("more than {max} {field}"));
    }
    Ok(())
}

/// "address/prefix" with a prefix that fits the address family.
pub fn check_cidr(field: &str, value: &str) -> Result {
    if parse_cidr(value).is_none() {
        return fail(format!("{field}: {:?} is not address/prefix", truncate(value)));
    }
    Ok(())
}

/// Parses "10.0.0.1/24" or "2001:db8::1/64".
pub fn parse_cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = value.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

/// WireGuard public key: 32 bytes in standard base64, 44 characters.
pub fn check_wg_key(field: &str, key: &str) -> Result {
    let ok = key.len() == 44
        && key.ends_with('=')
        && key[..43].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !ok {
        return fail(format!("{field} is not a base64 WireGuard key"));
    }
    Ok(())
}

/// Keeps error messages short when they quote bad input.
fn truncate(value: &str) -> &str {
    match value.char_indices().nth(64) {
        Some((i, _)) => &value[..i],
        None => value,
    }
}

pub fn check_report(r: &Report) -> Result {
    check_tick(r.tick)?;
    check_unix_time("observed_at", r.observed_at)?;
    // A spooled report keeps its observed_at and is re-signed when sent, so
    // collection never comes after signing.
    if r.observed_at > r.timestamp {
        return fail(format!(
            "observed_at {} is later than timestamp {}",
            r.observed_at, r.timestamp
        ));
    }
    check_uint("system.uptime_secs", r.system.uptime_secs)?;
    check_uint("spool_dropped", r.spool_dropped)?;
    check_len("hostname", &r.hostname, MAX_HOSTNAME)?;
    check_len("agent_version", &r.agent_version, MAX_SHORT_STRING)?;
    if let Some(site) = &r.site {
        check_site(site)?;
    }
    check_len("system.kernel", &r.system.kernel, MAX_SHORT_STRING)?;
    if r.system.load.iter().any(|l| !l.is_finite() || *l < 0.0) {
        return fail("system.load must be three non-negative numbers");
    }
    check_count("interfaces", &r.interfaces, MAX_INTERFACES)?;
    r.interfaces.iter().try_for_each(check_interface)?;
    check_count("routes", &r.routes, MAX_ROUTES)?;
    r.routes.iter().try_for_each(check_route)?;
    check_count("wireguard devices", &r.wireguard, MAX_WG_DEVICES)?;
    r.wireguard.iter().try_for_each(check_wg_device)?;
    check_count("errors", &r.errors, MAX_ERRORS)?;
    for e in &r.errors {
        check_len("errors.source", &e.source, MAX_SHORT_STRING)?;
        check_len("errors.message", &e.message, MAX_ERROR_MESSAGE)?;
    }
    Ok(())
}

fn check_interface(i: &Interface) -> Result {
    if i.name.is_empty() {
        return fail("interface name is empty");
    }
    check_len("interface name", &i.name, MAX_SHORT_STRING)?;
    check_len("interface kind", &i.kind, MAX_SHORT_STRING)?;
    check_len("interface state", &i.state, MAX_SHORT_STRING)?;
    if let Some(mac) = &i.mac {
        check_len("interface mac", mac, MAX_SHORT_STRING)?;
    }
    check_uint("interface rx_bytes", i.rx_bytes)?;
    check_uint("interface tx_bytes", i.tx_bytes)?;
    check_uint("interface rx_errors", i.rx_errors)?;
    check_uint("interface tx_errors", i.tx_errors)?;
    check_count("addresses on one interface", &i.addresses, MAX_ADDRESSES_PER_INTERFACE)?;
    i.addresses.iter().try_for_each(|a| check_cidr("interface address", a))
}

fn check_route(r: &Route) -> Result {
    check_cidr("route dst", &r.dst)?;
    if let Some(gw) = &r.gateway {
        if gw.parse::<IpAddr>().is_err() {
            return fail(format!("route gateway {:?} is not an address", truncate(gw)));
        }
    }
    if let Some(dev) = &r.dev {
        check_len("route dev", dev, MAX_SHORT_STRING)?;
    }
    Ok(())
}

fn check_wg_device(d: &WgDevice) -> Result {
    if d.name.is_empty() {
        return fail("wireguard device name is empty");
    }
    check_len("wireguard device name", &d.name, MAX_SHORT_STRING)?;
    check_wg_key("wireguard public_key", &d.public_key)?;
    check_count("peers on one device", &d.peers, MAX_PEERS_PER_DEVICE)?;
    d.peers.iter().try_for_each(check_wg_peer)
}

fn check_wg_peer(p: &WgPeer) -> Result {
    check_wg_key("peer public_key", &p.public_key)?;
    if let Some(ep) = &p.endpoint {
        if ep.parse::<std::net::SocketAddr>().is_err() {
            return fail(format!("peer endpoint {:?} is not address:port", truncate(ep)));
        }
    }
    if let Some(at) = p.latest_handshake {
        check_unix_time("peer latest_handshake", at)?;
    }
    check_uint("peer rx_bytes", p.rx_bytes)?;
    check_uint("peer tx_bytes", p.tx_bytes)?;
    check_count("allowed_ips on one peer", &p.allowed_ips, MAX_ALLOWED_IPS_PER_PEER)?;
    p.allowed_ips.iter().try_for_each(|a| check_cidr("peer allowed_ips", a))
}

pub fn check_register(r: &Register) -> Result {
    check_tick(r.tick)?;
    check_len("hostname", &r.hostname, MAX_HOSTNAME)?;
    check_len("agent_version", &r.agent_version, MAX_SHORT_STRING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!(check_agent_id("0123abcd").is_ok());
        assert!(check_agent_id("node-1.site_a").is_ok());
        assert!(check_agent_id("").is_err());
        assert!(check_agent_id(&"a".repeat(65)).is_err());
        assert!(check_agent_id("../etc").is_err());
        assert!(check_agent_id("a b").is_err());
    }

    #[test]
    fn sites() {
        assert!(check_site("helsinki-dc1").is_ok());
        assert!(check_site("Tampere – Hervanta").is_ok(), "any printable UTF-8");
        assert!(check_site(&"a".repeat(MAX_SITE)).is_ok());
        assert!(check_site(&"a".repeat(MAX_SITE + 1)).is_err());
        assert!(check_site("").is_err());
        for bad in ["dc1\n", "dc\t1", "dc\u{7f}1", "dc\u{85}1"] {
            assert!(check_site(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_and_macs() {
        assert!(check_nonce(&"0f".repeat(16)).is_ok());
        assert!(check_nonce(&"0F".repeat(16)).is_err());
        assert!(check_nonce("abc").is_err());
        assert!(check_hmac_text(&"a".repeat(64)).is_ok());
        assert!(check_hmac_text(&"g".repeat(64)).is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.1/24"), Some(("10.0.0.1".parse().unwrap(), 24)));
        assert!(parse_cidr("2001:db8::1/64").is_some());
        assert!(parse_cidr("10.0.0.1/33").is_none());
        assert!(parse_cidr("::1/129").is_none());
        assert!(parse_cidr("10.0.0.1").is_none());
        assert!(parse_cidr("host/8").is_none());
    }

    #[test]
    fn wg_keys() {
        assert!(check_wg_key("k", "YJ7ToWzZ0hTmqxQ2uS0Q4Rbz2QVRx4Qy4rQb0bF1dkE=").is_ok());
        assert!(check_wg_key("k", "short=").is_err());
        assert!(check_wg_key("k", &format!("{}=", "<".repeat(43))).is_err());
    }
}
