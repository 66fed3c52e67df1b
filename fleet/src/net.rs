//! Networks from the "address/prefix" strings agents report: the one place
//! that masks an address down to its network and says what kind of
//! address an address is (host on the internet, private, link-local, or
//! one that names no host at all).

use std::net::{IpAddr, Ipv6Addr};

/// What kind of address an address is; the dashboard keeps this meaning
/// when it replaces addresses by pseudonyms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Names no host: unspecified, loopback, multicast, broadcast and the
    /// reserved ranges (0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3, ::, ::1,
    /// ff00::/8). Every machine has the same ones.
    NoHost,
    /// Link-local (169.254.0.0/16, fe80::/10): valid on one link only.
    /// `prefix` is how much of it says only "link-local" (/16, /64).
    LinkLocal { prefix: u8 },
    /// Private and shared space (RFC 1918, 100.64.0.0/10, fc00::/7):
    /// `prefix` is the length of the block.
    Private { prefix: u8 },
    /// An IPv4 address written as IPv6 (::ffff:0:0/96).
    Ipv4Mapped,
    /// Anything else: a host on the internet.
    Public,
}

impl AddressClass {
    pub fn of(ip: &IpAddr) -> AddressClass {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                match (a, b) {
                    (0, _) | (127, _) | (224..=255, _) => AddressClass::NoHost,
                    (169, 254) => AddressClass::LinkLocal { prefix: 16 },
                    (10, _) => AddressClass::Private { prefix: 8 },
                    (172, 16..=31) => AddressClass::Private { prefix: 12 },
                    (192, 168) => AddressClass::Private { prefix: 16 },
                    (100, 64..=127) => AddressClass::Private { prefix: 10 },
                    _ => AddressClass::Public,
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if v6.is_unspecified() || v6.is_loopback() || first >= 0xff00 {
                    AddressClass::NoHost
                } else if v6.to_ipv4_mapped().is_some() {
                    AddressClass::Ipv4Mapped
                } else if first & 0xffc0 == 0xfe80 {
                    AddressClass::LinkLocal { prefix: 64 }
                } else if first & 0xfe00 == 0xfc00 {
                    AddressClass::Private { prefix: 7 }
                } else {
                    AddressClass::Public
                }
            }
        }
    }

    /// Whether a public address's pseudonym may start with these 16 bits:
    /// not when they would make it look like another class. Every class
    /// but `Public` is decided within the first 16 bits (IPv4-mapped
    /// addresses start with 16 zero bits, which are `NoHost`-adjacent and
    /// excluded too).
    pub fn public_top16(top16: u16, v4: bool) -> bool {
        if v4 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(u32::from(top16) << 16));
            AddressClass::of(&ip) == AddressClass::Public
        } else {
            let ip = IpAddr::from(Ipv6Addr::from(u128::from(top16) << 112));
            top16 != 0 && AddressClass::of(&ip) == AddressClass::Public
        }
    }
}

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

/// Whether addresses in this network can join hosts beyond one link (not
/// link-local, and naming hosts at all).
pub fn shared_scope(ip: &IpAddr) -> bool {
    !matches!(AddressClass::of(ip), AddressClass::NoHost | AddressClass::LinkLocal { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let class = |s: &str| AddressClass::of(&s.parse().unwrap());
        for no_host in
            ["0.0.0.0", "127.0.0.1", "224.0.0.251", "255.255.255.255", "::", "::1", "ff02::1"]
        {
            assert_eq!(class(no_host), AddressClass::NoHost, "{no_host}");
        }
        assert_eq!(class("169.254.1.2"), AddressClass::LinkLocal { prefix: 16 });
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal { prefix: 64 });
        assert_eq!(class("10.1.2.3"), AddressClass::Private { prefix: 8 });
        assert_eq!(class("172.31.0.1"), AddressClass::Private { prefix: 12 });
        assert_eq!(class("172.32.0.1"), AddressClass::Public);
        assert_eq!(class("192.168.9.9"), AddressClass::Private { prefix: 16 });
        assert_eq!(class("100.100.1.1"), AddressClass::Private { prefix: 10 });
        assert_eq!(class("fd12::1"), AddressClass::Private { prefix: 7 });
        assert_eq!(class("::ffff:10.0.0.1"), AddressClass::Ipv4Mapped);
        assert_eq!(class("203.0.113.7"), AddressClass::Public);
        assert_eq!(class("2001:db8::1"), AddressClass::Public);
        assert!(AddressClass::public_top16(0xcb00, true));
        assert!(!AddressClass::public_top16(0x0a14, true));
        assert!(!AddressClass::public_top16(0, false));
        assert!(!AddressClass::public_top16(0xfd12, false));
        assert!(AddressClass::public_top16(0x2001, false));
    }

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
