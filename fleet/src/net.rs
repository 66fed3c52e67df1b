//! Networks from the "address/prefix" strings agents report: the one place
//! that masks an address down to its network and says which addresses
//! belong to no network worth naming (loopback, link-local, unspecified).

use std::net::IpAddr;

/// The network of an "address/prefix" string, e.g. "10.0.0.7/24" →
/// (10.0.0.0, 24); None when it does not parse or the prefix is too long.
pub fn network_of(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let network = match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return None,
    };
    Some((network, prefix))
}

/// The network of `cidr` written as "network/prefix", when it is one that
/// can join hosts: not loopback, link-local or unspecified, and not a
/// single host (/32, /128).
pub fn masked_network(cidr: &str) -> Option<String> {
    let (network, prefix) = network_of(cidr)?;
    let single_host = match network {
        IpAddr::V4(_) => prefix >= 32,
        IpAddr::V6(_) => prefix >= 128,
    };
    (shared_scope(&network) && !single_host).then(|| format!("{network}/{prefix}"))
}

/// Whether addresses in this network can be shared between hosts.
pub fn shared_scope(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert_eq!(network_of("10.0.0.7/24"), Some(("10.0.0.0".parse().unwrap(), 24)));
        assert_eq!(network_of("fd00::1:2/64"), Some(("fd00::".parse().unwrap(), 64)));
        assert_eq!(network_of("10.0.0.7/33"), None);
        assert_eq!(network_of("10.0.0.7"), None);
        assert_eq!(masked_network("192.168.1.9/24").as_deref(), Some("192.168.1.0/24"));
        assert_eq!(masked_network("127.0.0.1/8"), None);
        assert_eq!(masked_network("169.254.3.4/16"), None);
        assert_eq!(masked_network("fe80::1/64"), None);
        assert_eq!(masked_network("10.0.0.1/32"), None);
        assert_eq!(masked_network("0.0.0.0/0"), None);
    }
}
