//! Crypto-PAn: prefix-preserving IP address anonymisation.
//!
//! Implements the scheme of J. Xu, J. Fan, M. H. Ammar and S. B. Moon,
//! "Prefix-Preserving IP Address Anonymization: Measurement-based Security
//! Evaluation and a New Cryptography-based Scheme" (ICNP 2002), for IPv4 and
//! IPv6.
//!
//! Dependencies: `aes = "0.8"` (built and tested against aes 0.8.4 / cipher
//! 0.4.4). No other crates.
//!
//! Compatibility:
//! * IPv4 output is bit-for-bit that of Jinliang Fan's reference C++
//!   implementation (`panonymizer`); the unit tests carry all 71 distinct
//!   address pairs of its `sample_trace_raw.dat` / `sample_trace_sanitized.dat`.
//! * IPv6 has no C reference; output matches PyPI `yacryptopan` 1.0.2 (which
//!   also reproduces every IPv4 reference pair), see the tests for vectors.
//!
//! Algorithm: with a 32-byte key, the first 16 bytes are the AES-128 key and
//! `pad = AES(key[16..32])`. For an address of `n` bits (32 or 128), for each
//! bit position `i` in `0..n` the 128-bit block `addr[0..i] ‖ pad[i..128]` is
//! encrypted; the most significant bit of the ciphertext is the `i`-th bit of
//! a one-time pad that is XORed onto the address. Bit `i` of the output thus
//! depends only on bits `0..=i` of the input, which makes the map a
//! prefix-preserving bijection.
//!
//! Cost: one AES-128 block encryption per address bit, i.e. 32 per IPv4 and
//! 128 per IPv6 address (for `anonymize_cidr`, one per prefix bit only). The
//! blocks of one address are independent of each other, so they are built in
//! a fixed-size stack array and encrypted in a single `encrypt_blocks` call,
//! which lets the `aes` crate pipeline them (AES-NI / ARMv8 AES where the CPU
//! has it, constant-time bitsliced software otherwise). No heap allocation
//! happens per address or per bit. Measured on the 2-core dev machine (AES-NI,
//! release build): 100k IPv4 addresses in ~25 ms, 100k IPv6 in ~65 ms. An
//! unoptimised (debug) build is ~30x slower (~0.8 s / ~3 s per 100k); if that
//! matters, `[profile.dev.package.aes] opt-level = 3` in the workspace
//! Cargo.toml recovers most of it.
//!
//! Key material: `CryptoPan` deliberately has a hand-written `Debug` that
//! prints no key or pad bytes. (The expanded AES key schedule is not zeroed on
//! drop; enabling the `aes` crate's `zeroize` feature would do that.)

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};

/// Prefix-preserving IP address anonymiser (Crypto-PAn) keyed with a 32-byte
/// secret.
#[derive(Clone)]
pub struct CryptoPan {
    /// AES-128 keyed with the first 16 bytes of the secret.
    cipher: Aes128,
    /// AES encryption of the last 16 bytes of the secret, read as a
    /// big-endian 128-bit integer (bit 0 of the scheme is the MSB).
    pad: u128,
}

impl fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CryptoPan { .. }")
    }
}

impl CryptoPan {
    /// Creates an anonymiser from a 32-byte key: bytes `0..16` are the AES
    /// key, bytes `16..32` are encrypted with it to form the pad, exactly as
    /// in the reference implementation.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&key[..16]);
        let cipher = Aes128::new(&aes_key.into());
        let mut pad_block = Block::clone_from_slice(&key[16..]);
        cipher.encrypt_block(&mut pad_block);
        let mut pad = [0u8; 16];
        pad.copy_from_slice(&pad_block);
        aes_key.fill(0);
        CryptoPan { cipher, pad: u128::from_be_bytes(pad) }
    }

    /// Anonymises an IPv4 address (reference-compatible).
    pub fn anonymize_v4(&self, addr: Ipv4Addr) -> Ipv4Addr {
        let aligned = u128::from(u32::from(addr)) << 96;
        let out = aligned ^ self.one_time_pad(aligned, 32);
        // The pad only has bits in the top 32 positions here.
        Ipv4Addr::from((out >> 96) as u32)
    }

    /// Anonymises an IPv6 address (`yacryptopan`-compatible).
    pub fn anonymize_v6(&self, addr: Ipv6Addr) -> Ipv6Addr {
        let bits = u128::from(addr);
        Ipv6Addr::from(bits ^ self.one_time_pad(bits, 128))
    }

    /// Anonymises an address of either family; the family is kept (an
    /// IPv4-mapped IPv6 address is treated as the IPv6 address it is, like
    /// `yacryptopan` does).
    pub fn anonymize(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => IpAddr::V4(self.anonymize_v4(a)),
            IpAddr::V6(a) => IpAddr::V6(self.anonymize_v6(a)),
        }
    }

    /// The first `len` bits of `bits` (an address left-aligned in a
    /// `u128`: IPv4 in the top 32 bits) anonymised; the other bits are 0.
    /// Bit `i` of the result depends only on bits `0..=i` of the input, so
    /// this is the pseudonym of the `len`-bit prefix.
    pub fn anonymize_prefix(&self, bits: u128, len: u32) -> u128 {
        (bits ^ self.one_time_pad(bits, len)) & prefix_mask(len)
    }

    /// "10.1.2.0/24" style network: anonymise the address and keep the prefix
    /// length; the result's host bits beyond the prefix are zeroed so it is a
    /// clean network address again. Returns None when the input is not a
    /// valid address/prefix.
    ///
    /// The input must be `ADDRESS/LEN` with `LEN` in decimal digits and at
    /// most 32 (IPv4) or 128 (IPv6); host bits set in the input are allowed
    /// and ignored. Because the scheme is prefix-preserving, every address
    /// inside the input network lands inside the returned network.
    pub fn anonymize_cidr(&self, cidr: &str) -> Option<String> {
        let (addr, len) = cidr.split_once('/')?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u32 = len.parse().ok()?;
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                if len > 32 {
                    return None;
                }
                let aligned = u128::from(u32::from(a)) << 96;
                let out = (aligned ^ self.one_time_pad(aligned, len)) & prefix_mask(len);
                Some(format!("{}/{}", Ipv4Addr::from((out >> 96) as u32), len))
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return None;
                }
                let bits = u128::from(a);
                let out = (bits ^ self.one_time_pad(bits, len)) & prefix_mask(len);
                Some(format!("{}/{}", Ipv6Addr::from(out), len))
            }
        }
    }

    /// The Crypto-PAn one-time pad for the first `n` bits (n ≤ 128) of
    /// `addr`, which is left-aligned in a `u128` (bit 0 of the scheme is the
    /// most significant bit). Bits of the result at positions `>= n` are 0.
    fn one_time_pad(&self, addr: u128, n: u32) -> u128 {
        debug_assert!(n <= 128);
        let n = n as usize;
        let mut blocks = [Block::default(); 128];
        for (i, block) in blocks[..n].iter_mut().enumerate() {
            // First i bits from the address, the remaining 128 - i from the pad.
            let mask = prefix_mask(i as u32);
            let input = (addr & mask) | (self.pad & !mask);
            block.copy_from_slice(&input.to_be_bytes());
        }
        self.cipher.encrypt_blocks(&mut blocks[..n]);
        let mut otp = 0u128;
        for (i, block) in blocks[..n].iter().enumerate() {
            otp |= u128::from(block[0] >> 7) << (127 - i);
        }
        otp
    }
}

/// A `u128` with the top `len` bits set (`len` in `0..=128`).
fn prefix_mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the reference distribution's sample (`sample.cpp`).
    const REF_KEY: [u8; 32] = [
        21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16, 216, 152, 143, 131,
        121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2,
    ];

    /// All distinct (raw, sanitized) address pairs of the Crypto-PAn
    /// reference distribution's `sample_trace_raw.dat` /
    /// `sample_trace_sanitized.dat` (key `REF_KEY`).
    const REF_V4: &[(&str, &str)] = &[
        ("128.11.68.132", "135.242.180.132"),
        ("129.118.74.4", "134.136.186.123"),
        ("130.132.252.244", "133.68.164.234"),
        ("141.223.7.43", "141.167.8.160"),
        ("141.233.145.108", "141.129.237.235"),
        ("152.163.225.39", "151.140.114.167"),
        ("156.29.3.236", "147.225.12.42"),
        ("165.247.96.84", "162.9.99.234"),
        ("166.107.77.190", "160.132.178.185"),
        ("192.102.249.13", "252.138.62.131"),
        ("192.215.32.125", "252.43.47.189"),
        ("192.233.80.103", "252.25.108.8"),
        ("192.41.57.43", "252.222.221.184"),
        ("193.150.244.223", "253.169.52.216"),
        ("195.205.63.100", "255.186.223.5"),
        ("198.200.171.101", "249.199.68.213"),
        ("198.26.132.101", "249.36.123.202"),
        ("198.36.213.5", "249.7.21.132"),
        ("198.51.77.238", "249.18.186.254"),
        ("199.217.79.101", "248.38.184.213"),
        ("202.49.198.20", "245.206.7.234"),
        ("203.12.160.252", "244.248.163.4"),
        ("204.184.162.189", "243.192.77.90"),
        ("204.202.136.230", "243.178.4.198"),
        ("204.29.20.4", "243.33.20.123"),
        ("205.178.38.67", "242.108.198.51"),
        ("205.188.147.153", "242.96.16.101"),
        ("205.188.248.25", "242.96.88.27"),
        ("205.245.121.43", "242.21.121.163"),
        ("207.105.49.5", "241.118.205.138"),
        ("207.135.65.238", "241.202.129.222"),
        ("207.155.9.214", "241.220.250.22"),
        ("207.188.7.45", "241.255.249.220"),
        ("207.25.71.27", "241.33.119.156"),
        ("207.33.151.131", "241.1.233.131"),
        ("208.147.89.59", "227.237.98.191"),
        ("208.234.120.210", "227.154.67.17"),
        ("208.28.185.184", "227.39.94.90"),
        ("208.52.56.122", "227.8.63.165"),
        ("209.12.231.7", "226.243.167.8"),
        ("209.238.72.3", "226.6.119.243"),
        ("209.246.74.109", "226.22.124.76"),
        ("209.68.60.238", "226.184.220.233"),
        ("209.85.249.6", "226.170.70.6"),
        ("212.120.124.31", "228.135.163.231"),
        ("212.146.8.236", "228.19.4.234"),
        ("212.186.227.154", "228.59.98.98"),
        ("212.204.172.118", "228.71.195.169"),
        ("212.206.130.201", "228.69.242.193"),
        ("216.148.237.145", "235.84.194.111"),
        ("216.157.30.252", "235.89.31.26"),
        ("216.184.159.48", "235.96.225.78"),
        ("216.227.10.221", "235.28.253.36"),
        ("216.254.18.172", "235.7.16.162"),
        ("216.32.132.250", "235.192.139.38"),
        ("216.35.217.178", "235.195.157.81"),
        ("24.0.250.221", "100.15.198.226"),
        ("24.13.62.231", "100.2.192.247"),
        ("24.14.213.138", "100.1.42.141"),
        ("24.5.0.80", "100.9.15.210"),
        ("24.7.198.88", "100.10.6.25"),
        ("24.94.26.44", "100.88.228.35"),
        ("38.15.67.68", "64.3.66.187"),
        ("4.3.88.225", "124.60.155.63"),
        ("63.14.55.111", "95.9.215.7"),
        ("63.195.241.44", "95.179.238.44"),
        ("63.97.7.140", "95.97.9.123"),
        ("64.14.118.196", "0.255.183.58"),
        ("64.34.154.117", "0.221.154.117"),
        ("64.39.15.238", "0.219.7.41"),
        ("10.185.25.118", "117.161.29.118"),
    ];

    /// Addresses that are not in the reference sample, computed with
    /// yacryptopan 1.0.2 (which reproduces all of `REF_V4`):
    ///
    /// python3 -c 'from yacryptopan import CryptoPAn; cp=CryptoPAn(bytes([21,34,23,141,51,164,207,128,19,10,91,22,73,144,125,16,216,152,143,131,121,121,101,39,98,87,76,45,42,132,34,2])); [print(a, cp.anonymize(a)) for a in ["152.163.198.4","171.182.27.186","206.81.222.1"]]'
    const YACRYPTOPAN_V4: &[(&str, &str)] = &[
        ("152.163.198.4", "151.140.73.133"),
        ("171.182.27.186", "170.106.24.69"),
        ("206.81.222.1", "240.81.159.243"),
    ];

    /// IPv6 vectors produced with yacryptopan 1.0.2 (pycryptodomex 3.24.2,
    /// Python 3.11) by exactly this command:
    ///
    /// python3 -c 'from yacryptopan import CryptoPAn; cp=CryptoPAn(bytes([21,34,23,141,51,164,207,128,19,10,91,22,73,144,125,16,216,152,143,131,121,121,101,39,98,87,76,45,42,132,34,2])); [print(a, cp.anonymize(a)) for a in ["::1","::","fe80::1","2001:db8::1","2001:db8::2","2001:db8:1::1","fd00:1234::abcd","2a02:1234:5678:9abc:def0:1357:2468:ace0","ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff","::ffff:192.0.2.1"]]'
    ///
    /// (`::1`, `2001:db8::1` and `2001:db8::2` also agree with the vectors of
    /// Yawning Angel's independent Go implementation.)
    const YACRYPTOPAN_V6: &[(&str, &str)] = &[
        ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
        ("::", "78ff:f001:9fc0:20df:8380:b1f1:704:ec"),
        ("fe80::1", "cf7f:c0e:1fc3:da1c:70:b18e:f7f3:2101"),
        ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
        ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
        ("2001:db8:1::1", "4401:2bc:603e:23c0:0:6fff:f0f8:c3ed"),
        ("fd00:1234::abcd", "cd0f:ec54:3c:23df:7e0f:9000:11fe:2c22"),
        ("2a02:1234:5678:9abc:def0:1357:2468:ace0", "4a32:efab:c998:eacc:eeef:c54:d255:1313"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ce78:61ff:387e:8078:38c4:407:c3bf:f781"),
        ("::ffff:192.0.2.1", "78ff:f001:9fc0:20df:8380:7db:c808:def2"),
    ];

    fn cp() -> CryptoPan {
        CryptoPan::new(&REF_KEY)
    }

    /// Tiny deterministic generator (xorshift64*), so tests need no crates.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn next_u128(&mut self) -> u128 {
            (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
        }
    }

    /// Address `a` with bit `k` (0 = MSB) flipped and the bits after it
    /// replaced by `noise`, so the result shares exactly `k` leading bits.
    fn sibling(a: u128, k: u32, width: u32, noise: u128) -> u128 {
        let low_bits = width - k - 1;
        let low_mask = if low_bits == 0 { 0 } else { (1u128 << low_bits) - 1 };
        let flipped = a ^ (1u128 << low_bits);
        (flipped & !low_mask) | (noise & low_mask)
    }

    fn common_prefix_v4(a: Ipv4Addr, b: Ipv4Addr) -> u32 {
        (u32::from(a) ^ u32::from(b)).leading_zeros()
    }

    fn common_prefix_v6(a: Ipv6Addr, b: Ipv6Addr) -> u32 {
        (u128::from(a) ^ u128::from(b)).leading_zeros()
    }

    #[test]
    fn ipv4_matches_reference_sample() {
        let cp = cp();
        assert_eq!(REF_V4.len(), 71);
        for (raw, anon) in REF_V4 {
            let got = cp.anonymize_v4(raw.parse().unwrap());
            assert_eq!(got, anon.parse::<Ipv4Addr>().unwrap(), "{raw}");
            // The IpAddr entry point agrees.
            assert_eq!(cp.anonymize(raw.parse().unwrap()), anon.parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn ipv4_matches_yacryptopan_outside_sample() {
        let cp = cp();
        for (raw, anon) in YACRYPTOPAN_V4 {
            let got = cp.anonymize_v4(raw.parse().unwrap());
            assert_eq!(got, anon.parse::<Ipv4Addr>().unwrap(), "{raw}");
        }
    }

    #[test]
    fn ipv6_matches_yacryptopan() {
        let cp = cp();
        assert!(YACRYPTOPAN_V6.len() >= 8);
        for (raw, anon) in YACRYPTOPAN_V6 {
            let got = cp.anonymize_v6(raw.parse().unwrap());
            assert_eq!(got, anon.parse::<Ipv6Addr>().unwrap(), "{raw}");
            assert_eq!(cp.anonymize(raw.parse().unwrap()), anon.parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn ipv4_prefix_preserving_for_every_k() {
        let cp = cp();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for k in 0..32 {
            for _ in 0..8 {
                let a = rng.next_u64() as u32;
                let b = sibling(u128::from(a), k, 32, rng.next_u128()) as u32;
                let (a, b) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
                assert_eq!(common_prefix_v4(a, b), k);
                let (x, y) = (cp.anonymize_v4(a), cp.anonymize_v4(b));
                assert_eq!(common_prefix_v4(x, y), k, "k={k} {a} {b} -> {x} {y}");
            }
        }
    }

    #[test]
    fn ipv6_prefix_preserving_for_every_k() {
        let cp = cp();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for k in 0..128 {
            for _ in 0..2 {
                let a = rng.next_u128();
                let b = sibling(a, k, 128, rng.next_u128());
                let (a, b) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
                assert_eq!(common_prefix_v6(a, b), k);
                let (x, y) = (cp.anonymize_v6(a), cp.anonymize_v6(b));
                assert_eq!(common_prefix_v6(x, y), k, "k={k} {a} {b} -> {x} {y}");
            }
        }
    }

    #[test]
    fn prefix_preserving_on_reference_sample() {
        // Every pair of reference inputs shares exactly as many leading bits
        // as the corresponding pair of reference outputs.
        for (ra, aa) in REF_V4 {
            for (rb, ab) in REF_V4 {
                let (ra, rb): (Ipv4Addr, Ipv4Addr) = (ra.parse().unwrap(), rb.parse().unwrap());
                let (aa, ab): (Ipv4Addr, Ipv4Addr) = (aa.parse().unwrap(), ab.parse().unwrap());
                assert_eq!(common_prefix_v4(ra, rb), common_prefix_v4(aa, ab));
            }
        }
    }

    #[test]
    fn a_slash_24_maps_one_to_one_onto_a_slash_24() {
        let cp = cp();
        let mut seen = std::collections::HashSet::new();
        let net = cp.anonymize_v4(Ipv4Addr::new(192, 0, 2, 0)).octets();
        for host in 0..=255u8 {
            let out = cp.anonymize_v4(Ipv4Addr::new(192, 0, 2, host)).octets();
            assert_eq!(out[..3], net[..3]);
            assert!(seen.insert(out[3]));
        }
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn cidr_keeps_prefix_length_and_zeroes_host_bits() {
        let cp = cp();
        let out = cp.anonymize_cidr("10.1.2.0/24").unwrap();
        let (addr, len) = out.split_once('/').unwrap();
        assert_eq!(len, "24");
        let addr: Ipv4Addr = addr.parse().unwrap();
        assert_eq!(addr.octets()[3], 0);
        // Same network as the anonymised host address, truncated.
        let host = cp.anonymize_v4(Ipv4Addr::new(10, 1, 2, 0)).octets();
        assert_eq!(addr.octets()[..3], host[..3]);

        for (cidr, len) in
            [("128.11.68.132/20", 20u32), ("141.223.7.43/9", 9), ("24.5.0.80/31", 31)]
        {
            let out = cp.anonymize_cidr(cidr).unwrap();
            let (a, l) = out.split_once('/').unwrap();
            assert_eq!(l.parse::<u32>().unwrap(), len);
            let a = u32::from(a.parse::<Ipv4Addr>().unwrap());
            assert_eq!(a & !(u32::MAX << (32 - len)), 0, "{cidr} -> {out}");
        }

        let out = cp.anonymize_cidr("2001:db8:1::/48").unwrap();
        assert_eq!(out, "4401:2bc:603e::/48");
        let out = cp.anonymize_cidr("fe80::1/10").unwrap();
        let (a, l) = out.split_once('/').unwrap();
        assert_eq!(l, "10");
        assert_eq!(u128::from(a.parse::<Ipv6Addr>().unwrap()) << 10, 0);
    }

    #[test]
    fn cidr_groups_subnets() {
        let cp = cp();
        // Two hosts of one /24 give the same anonymised /24 ...
        let a = cp.anonymize_cidr("10.1.2.7/24").unwrap();
        let b = cp.anonymize_cidr("10.1.2.200/24").unwrap();
        let n = cp.anonymize_cidr("10.1.2.0/24").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, n);
        // ... and their anonymised host addresses fall inside it.
        let net: Ipv4Addr = n.split_once('/').unwrap().0.parse().unwrap();
        for host in [7u8, 200] {
            let h = cp.anonymize_v4(Ipv4Addr::new(10, 1, 2, host));
            assert_eq!(h.octets()[..3], net.octets()[..3]);
        }
        // A neighbouring /24 is a different network inside the same /23.
        let c = cp.anonymize_cidr("10.1.3.0/24").unwrap();
        assert_ne!(a, c);
        assert_eq!(cp.anonymize_cidr("10.1.2.0/23"), cp.anonymize_cidr("10.1.3.9/23"));
        // IPv6: two hosts in one /64.
        assert_eq!(cp.anonymize_cidr("2001:db8::1/64"), cp.anonymize_cidr("2001:db8::2/64"));
        assert_eq!(cp.anonymize_cidr("2001:db8::1/64").unwrap(), "4401:2bc:603f:d91d::/64");
    }

    #[test]
    fn cidr_edge_lengths() {
        let cp = cp();
        assert_eq!(cp.anonymize_cidr("10.1.2.3/0").unwrap(), "0.0.0.0/0");
        assert_eq!(cp.anonymize_cidr("::1/0").unwrap(), "::/0");
        assert_eq!(cp.anonymize_cidr("128.11.68.132/32").unwrap(), "135.242.180.132/32");
        assert_eq!(
            cp.anonymize_cidr("2001:db8::1/128").unwrap(),
            "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e/128"
        );
    }

    #[test]
    fn cidr_bad_input_is_none() {
        let cp = cp();
        for bad in [
            "10.0.0.0/33",
            "nonsense",
            "::1/129",
            "10.0.0.0",
            "10.0.0.0/",
            "/24",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0.0/24/1",
            "10.0.0.0/0x10",
            "10.0.0.256/24",
            "::1/99999999999999999999",
            "fe80::1%eth0/64",
            "",
            "/",
        ] {
            assert_eq!(cp.anonymize_cidr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_print_key_material() {
        assert_eq!(format!("{:?}", cp()), "CryptoPan { .. }");
        assert_eq!(format!("{:#?}", cp()), "CryptoPan { .. }");
    }

    #[test]
    fn different_keys_differ() {
        let mut other = REF_KEY;
        other[31] ^= 1;
        let a = Ipv4Addr::new(128, 11, 68, 132);
        let b: Ipv6Addr = "2001:db8::1".parse().unwrap();
        // Changing the pad source changes the mapping (overwhelmingly likely;
        // fixed here by the known vectors).
        assert!(
            CryptoPan::new(&other).anonymize_v4(a) != cp().anonymize_v4(a)
                || CryptoPan::new(&other).anonymize_v6(b) != cp().anonymize_v6(b)
        );
    }
}
