//! How each kind of address is replaced, so that a pseudonym keeps the
//! meaning of the address it replaces (kattila_fleet::AddressClass):
//!
//! - addresses that name no host (unspecified, loopback, multicast,
//!   broadcast, reserved) are shown as they are: every machine has them;
//! - private and shared addresses (10/8, 172.16/12, 192.168/16,
//!   100.64/10, fc00::/7) keep their block and link-local ones
//!   (169.254/16, fe80::/64) their link-local prefix; the rest of the
//!   address is Crypto-PAn's, so a reader still sees "a private address"
//!   and which ones share a subnet;
//! - an IPv4 address written as IPv6 (::ffff:a.b.c.d) is its IPv4
//!   address's pseudonym, written the same way;
//! - public addresses get Crypto-PAn's pseudonym, except that its first 16
//!   bits are walked on (Crypto-PAn applied again to them) while they
//!   would make it look private, link-local or special. That keeps the
//!   map one-to-one and prefix-preserving for every prefix of 16 bits or
//!   more, and a private-looking pseudonym always stands for a private
//!   address.
//!
//! Networks ("addr/len") follow the same rules, so a subnet's pseudonym
//! contains the pseudonyms of its hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kattila_fleet::AddressClass;

use crate::cryptopan::CryptoPan;

/// Pseudonyms of addresses and networks under one site key.
#[derive(Debug, Clone)]
pub struct Pseudonyms {
    cp: CryptoPan,
}

/// Bits of an IPv4 address, left-aligned as Crypto-PAn takes them.
fn v4_bits(v4: Ipv4Addr) -> u128 {
    u128::from(u32::from(v4)) << 96
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl Pseudonyms {
    pub fn new(cp: CryptoPan) -> Pseudonyms {
        Pseudonyms { cp }
    }

    /// The pseudonym of one address.
    pub fn address(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(self.v4(v4)),
            IpAddr::V6(v6) => match AddressClass::of(&ip) {
                AddressClass::Ipv4Mapped => {
                    let v4 = v6.to_ipv4_mapped().expect("classified as mapped");
                    IpAddr::V6(self.v4(v4).to_ipv6_mapped())
                }
                _ => IpAddr::V6(Ipv6Addr::from(self.bits(u128::from(v6), 128, &ip))),
            },
        }
    }

    fn v4(&self, v4: Ipv4Addr) -> Ipv4Addr {
        let ip = IpAddr::V4(v4);
        Ipv4Addr::from((self.bits(v4_bits(v4), 32, &ip) >> 96) as u32)
    }

    /// The pseudonym of the first `len` bits of `bits` (of an address of
    /// `width` bits, left-aligned), by the class of `ip`.
    fn prefix_bits(&self, bits: u128, len: u32, width: u32, ip: &IpAddr) -> u128 {
        match AddressClass::of(ip) {
            AddressClass::NoHost => bits & mask(len),
            AddressClass::LinkLocal { prefix } | AddressClass::Private { prefix }
                if len >= u32::from(prefix) =>
            {
                let keep = mask(u32::from(prefix));
                (bits & keep) | (self.cp.anonymize_prefix(bits, len) & !keep)
            }
            AddressClass::LinkLocal { .. } | AddressClass::Private { .. } => {
                // A network wider than its block: nothing to keep.
                self.cp.anonymize_prefix(bits, len)
            }
            AddressClass::Ipv4Mapped | AddressClass::Public => {
                let out = self.cp.anonymize_prefix(bits, len);
                if len < 16 {
                    return out;
                }
                let top = |b: u128| (b >> 112) as u16;
                let mut first = top(out);
                while !AddressClass::public_top16(first, width == 32) {
                    first = top(self.cp.anonymize_prefix(u128::from(first) << 112, 16));
                }
                (u128::from(first) << 112) | (out & !mask(16))
            }
        }
    }

    fn bits(&self, bits: u128, width: u32, ip: &IpAddr) -> u128 {
        self.prefix_bits(bits, width, width, ip)
    }

    /// The pseudonym of a network "addr/len" (host bits cleared), or None
    /// when it is not one.
    pub fn network(&self, cidr: &str) -> Option<String> {
        let (addr, len) = cidr.split_once('/')?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u32 = len.parse().ok()?;
        let ip: IpAddr = addr.parse().ok()?;
        Some(match ip {
            IpAddr::V4(v4) if len <= 32 => {
                let out = self.prefix_bits(v4_bits(v4) & mask(len), len, 32, &ip);
                format!("{}/{len}", Ipv4Addr::from((out >> 96) as u32))
            }
            IpAddr::V6(v6) if len <= 128 => match (AddressClass::of(&ip), v6.to_ipv4_mapped()) {
                (AddressClass::Ipv4Mapped, Some(v4)) if len >= 96 => {
                    let v4_ip = IpAddr::V4(v4);
                    let out = self.prefix_bits(v4_bits(v4) & mask(len - 96), len - 96, 32, &v4_ip);
                    format!("{}/{len}", Ipv4Addr::from((out >> 96) as u32).to_ipv6_mapped())
                }
                _ => {
                    let out = self.prefix_bits(u128::from(v6) & mask(len), len, 128, &ip);
                    format!("{}/{len}", Ipv6Addr::from(out))
                }
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Pseudonyms {
        Pseudonyms::new(CryptoPan::new(&[7; 32]))
    }

    fn addr(p: &Pseudonyms, s: &str) -> String {
        p.address(s.parse().unwrap()).to_string()
    }

    #[test]
    fn addresses_that_name_no_host_stay() {
        let p = p();
        for s in ["127.0.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255", "::", "::1", "ff02::1"]
        {
            assert_eq!(addr(&p, s), s);
        }
        assert_eq!(p.network("127.0.0.0/8").unwrap(), "127.0.0.0/8");
        assert_eq!(p.network("0.0.0.0/0").unwrap(), "0.0.0.0/0");
    }

    #[test]
    fn private_and_link_local_keep_their_block_and_nothing_else() {
        let p = p();
        let cases =
            [("10.20.0.10", "10."), ("192.168.7.9", "192.168."), ("169.254.3.4", "169.254.")];
        for (raw, block) in cases {
            let out = addr(&p, raw);
            assert!(out.starts_with(block) && out != raw, "{raw} -> {out}");
        }
        let out = addr(&p, "172.20.1.1");
        let second: u8 = out.split('.').nth(1).unwrap().parse().unwrap();
        assert!(out.starts_with("172.") && (16..32).contains(&second), "{out}");
        let out = addr(&p, "100.101.102.103");
        let second: u8 = out.split('.').nth(1).unwrap().parse().unwrap();
        assert!(out.starts_with("100.") && (64..128).contains(&second), "{out}");
        let out = p.address("fe80::1c2b:3ff:fe4d:5e6f".parse().unwrap());
        let IpAddr::V6(v6) = out else { panic!() };
        assert_eq!(v6.segments()[..4], [0xfe80, 0, 0, 0]);
        assert_ne!(out.to_string(), "fe80::1c2b:3ff:fe4d:5e6f");
        assert_eq!(p.network("fe80::/64").unwrap(), "fe80::/64", "the prefix every link has");
        let IpAddr::V6(ula) = p.address("fd12:3456::1".parse().unwrap()) else { panic!() };
        assert_eq!(ula.segments()[0] & 0xfe00, 0xfc00);
        assert_eq!(addr(&p, "::ffff:10.20.0.10"), format!("::ffff:{}", addr(&p, "10.20.0.10")));
    }

    #[test]
    fn public_pseudonyms_never_look_private_or_special() {
        let p = p();
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            let raw = Ipv4Addr::from(i.wrapping_mul(2_654_435_761));
            if AddressClass::of(&IpAddr::V4(raw)) != AddressClass::Public {
                continue;
            }
            let out = p.address(IpAddr::V4(raw));
            assert_eq!(AddressClass::of(&out), AddressClass::Public, "{raw} -> {out}");
            assert!(seen.insert(out), "two addresses share the pseudonym {out}");
        }
        for s in ["2001:db8::1", "2a01:4f8::2", "2600::"] {
            let out = p.address(s.parse().unwrap());
            assert_eq!(AddressClass::of(&out), AddressClass::Public, "{s} -> {out}");
        }
    }

    #[test]
    fn networks_contain_their_hosts_pseudonyms() {
        let p = p();
        for (net, host) in [
            ("10.20.18.0/24", "10.20.18.7"),
            ("192.168.1.0/24", "192.168.1.200"),
            ("203.0.113.0/24", "203.0.113.9"),
            ("198.51.100.0/22", "198.51.101.1"),
            ("2001:db8:a::/64", "2001:db8:a::5"),
            ("fd00:1::/64", "fd00:1::5"),
        ] {
            let pnet = p.network(net).unwrap();
            let (pnet_addr, len) = pnet.split_once('/').unwrap();
            let len: u32 = len.parse().unwrap();
            let host = p.address(host.parse().unwrap());
            let bits = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4_bits(v4),
                IpAddr::V6(v6) => u128::from(v6),
            };
            let pnet_addr: IpAddr = pnet_addr.parse().unwrap();
            assert_eq!(bits(host) & mask(len), bits(pnet_addr), "{net}: {pnet} vs {host}");
        }
    }
}
