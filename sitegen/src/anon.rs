//! Anonymisation of everything that could identify a network: every IP
//! address in any string that reaches the site is replaced by its
//! pseudonym (`pseudonym.rs`: Crypto-PAn, prefix-preserving and stable for
//! a given site key, keeping what kind of address it was), a network
//! written "addr/len" by its network's pseudonym, and MAC addresses by a
//! keyed pseudonym. `Anon::reveal()` passes everything through, for
//! private sites.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::cryptopan::CryptoPan;
use crate::pseudonym::Pseudonyms;

/// The 32-byte secret behind all pseudonyms of one site. Never printed.
#[derive(Clone)]
pub struct SiteKey([u8; 32]);

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteKey(..)")
    }
}

impl SiteKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SiteKey {
        SiteKey(bytes)
    }

    /// 64 hex digits are taken as the key itself; any other text (at least
    /// 16 characters) is hashed into one.
    pub fn parse(text: &str) -> anyhow::Result<SiteKey> {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text, &mut key).context("site key")?;
            return Ok(SiteKey(key));
        }
        if text.chars().count() < 16 {
            bail!("the site key must be 64 hex digits or a passphrase of at least 16 characters");
        }
        let mut h = Sha256::new();
        h.update(b"kattila site key\0");
        h.update(text.as_bytes());
        Ok(SiteKey(h.finalize().into()))
    }

    /// Reads the key file, or creates it (mode 0600, 32 random bytes as hex)
    /// when it does not exist yet.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SiteKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_loose(path);
                SiteKey::parse(&text).with_context(|| format!("site key file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let key: [u8; 32] = rand::random();
                let mut f = open_private(path)
                    .with_context(|| format!("creating site key file {}", path.display()))?;
                writeln!(f, "{}", hex::encode(key))?;
                f.sync_all()?;
                tracing::info!(path = %path.display(), "created a new site key");
                Ok(SiteKey(key))
            }
            Err(e) => Err(e).with_context(|| format!("reading site key file {}", path.display())),
        }
    }

    fn keyed_hash(&self, what: &[u8], data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(what);
        h.update([0]);
        h.update(data);
        h.finalize().into()
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "site key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_loose(_: &Path) {}

/// Turns raw strings into publishable ones.
#[derive(Debug)]
pub struct Anon {
    inner: Option<(Pseudonyms, SiteKey)>,
    /// Memo of text → scrubbed text; addresses repeat a lot across a fleet
    /// and across builds in watch mode.
    memo: HashMap<String, String>,
}

impl Anon {
    pub fn new(key: &SiteKey) -> Anon {
        Anon {
            inner: Some((Pseudonyms::new(CryptoPan::new(&key.0)), key.clone())),
            memo: HashMap::new(),
        }
    }

    /// Shows real addresses (private sites only).
    pub fn reveal() -> Anon {
        Anon { inner: None, memo: HashMap::new() }
    }

    pub fn is_revealing(&self) -> bool {
        self.inner.is_none()
    }

    /// Any text: every IPv4/IPv6 address inside it (with or without
    /// prefix length, port or brackets) is replaced by its pseudonym.
    pub fn text(&mut self, s: &str) -> String {
        match self.known(s) {
            Ok(done) => done,
            Err(cp) => {
                let out = scrub(cp, s);
                self.remember(s.to_string(), out.clone());
                out
            }
        }
    }

    /// `s` anonymised when that needs no work (nothing to scrub, or
    /// memoised), else what does the work.
    fn known(&self, s: &str) -> Result<String, &Pseudonyms> {
        let Some((cp, _)) = &self.inner else { return Ok(s.to_string()) };
        if !s.bytes().any(|b| b.is_ascii_digit() || b == b':') {
            return Ok(s.to_string());
        }
        self.memo.get(s).cloned().ok_or(cp)
    }

    fn remember(&mut self, s: String, out: String) {
        if self.memo.len() > 1_000_000 {
            self.memo.clear();
        }
        self.memo.insert(s, out);
    }

    pub fn opt_text(&mut self, s: Option<&str>) -> Option<String> {
        s.map(|s| self.text(s))
    }

    /// A network "addr/len": its pseudonym with host bits cleared, so
    /// networks stay networks. Anything unparseable goes through `text`.
    pub fn network(&mut self, cidr: &str) -> String {
        match &self.inner {
            None => cidr.to_string(),
            Some((p, _)) => match p.network(cidr) {
                Some(n) => n,
                None => self.text(cidr),
            },
        }
    }

    /// A MAC address: a keyed pseudonym in the locally administered range.
    pub fn mac(&self, mac: &str) -> String {
        match &self.inner {
            None => mac.to_string(),
            Some((_, key)) => {
                let h = key.keyed_hash(b"mac", mac.trim().to_ascii_lowercase().as_bytes());
                format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2], h[3], h[4])
            }
        }
    }

    /// For anonymising on many threads at once: shares the memo read-only.
    pub fn scope(&self) -> AnonScope<'_> {
        AnonScope { anon: self, learned: Vec::new() }
    }

    /// Memoises what scopes computed.
    pub fn learn(&mut self, learned: impl IntoIterator<Item = (String, String)>) {
        for (s, out) in learned {
            self.remember(s, out);
        }
    }
}

/// An [`Anon`] shared read-only, with the same results: what the memo does
/// not have is computed here and kept in `learned`, to be handed to
/// [`Anon::learn`] afterwards.
pub struct AnonScope<'a> {
    anon: &'a Anon,
    pub learned: Vec<(String, String)>,
}

impl AnonScope<'_> {
    pub fn text(&mut self, s: &str) -> String {
        match self.anon.known(s) {
            Ok(done) => done,
            Err(cp) => {
                let out = scrub(cp, s);
                self.learned.push((s.to_string(), out.clone()));
                out
            }
        }
    }

    pub fn opt_text(&mut self, s: Option<&str>) -> Option<String> {
        s.map(|s| self.text(s))
    }

    pub fn network(&mut self, cidr: &str) -> String {
        match &self.anon.inner {
            None => cidr.to_string(),
            Some((p, _)) => match p.network(cidr) {
                Some(n) => n,
                None => self.text(cidr),
            },
        }
    }

    pub fn mac(&self, mac: &str) -> String {
        self.anon.mac(mac)
    }
}

fn is_run_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b'.' || b == b':'
}

/// Replaces every address in `s`. Candidates are maximal runs of hex digits,
/// dots and colons; a run followed by "/len" whose host bits are all zero
/// is a network and replaced as one, else a run is tried as an address,
/// as `v4:port`, and finally searched for dotted quads.
fn scrub(cp: &Pseudonyms, s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if !is_run_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_run_byte(bytes[i]) {
            i += 1;
        }
        // Runs are ASCII, so these are char boundaries.
        let run = &s[start..i];
        if let Some((network, end)) = network_at(cp, s, start, i) {
            out.push_str(&s[copied..start]);
            out.push_str(&network);
            copied = end;
            i = end;
            continue;
        }
        let Some(replaced) = scrub_run(cp, run) else { continue };
        out.push_str(&s[copied..start]);
        out.push_str(&replaced);
        copied = i;
    }
    out.push_str(&s[copied..]);
    out
}

/// The run `s[start..end]` followed by "/len", when it is a network address
/// (no host bits set) — then its network pseudonym and where it ends. An
/// interface address such as "10.0.0.7/24" is not: it stays the host's
/// pseudonym with its prefix length.
fn network_at(cp: &Pseudonyms, s: &str, start: usize, end: usize) -> Option<(String, usize)> {
    let rest = s[end..].strip_prefix('/')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let cidr_end = end + 1 + digits;
    let cidr = &s[start..cidr_end];
    let (net, len) = kattila_fleet::network_of(cidr)?;
    let ip: IpAddr = s[start..end].parse().ok()?;
    (net == ip).then(|| cp.network(&format!("{net}/{len}"))).flatten().map(|n| (n, cidr_end))
}

fn scrub_run(cp: &Pseudonyms, run: &str) -> Option<String> {
    if !run.bytes().any(|b| b == b'.' || b == b':') {
        return None;
    }
    // The whole run first: IPv6 networks end in "::" ("2001:db8:a::/64"),
    // which trimming trailing punctuation would cut into a non-address.
    if let Ok(ip) = run.parse::<IpAddr>() {
        return Some(cp.address(ip).to_string());
    }
    let core = run.trim_end_matches(['.', ':']);
    let tail = &run[core.len()..];
    if let Ok(ip) = core.parse::<IpAddr>() {
        return Some(format!("{}{tail}", cp.address(ip)));
    }
    // 192.0.2.1:51820
    if let Some((host, port)) = core.rsplit_once(':') {
        if let Ok(IpAddr::V4(v4)) = host.parse::<IpAddr>() {
            return Some(format!("{}:{port}{tail}", cp.address(IpAddr::V4(v4))));
        }
    }
    // Dotted quads anywhere inside the run (e.g. "1.2.3.4.5", "::1.2.3.4:x").
    let mut changed = false;
    let mut out = String::new();
    let b = run.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()) {
            if let Some(end) = dotted_quad_end(b, i) {
                if let Ok(v4) = run[i..end].parse::<std::net::Ipv4Addr>() {
                    out.push_str(&run[copied..i]);
                    out.push_str(&cp.address(IpAddr::V4(v4)).to_string());
                    copied = end;
                    i = end;
                    changed = true;
                    continue;
                }
            }
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    out.push_str(&run[copied..]);
    Some(out)
}

/// End of `d{1,3}(.d{1,3}){3}` starting at `i`, if there is one.
fn dotted_quad_end(b: &[u8], mut i: usize) -> Option<usize> {
    for part in 0..4 {
        if part > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 3 {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if b.get(i).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon() -> Anon {
        Anon::new(&SiteKey::from_bytes([7; 32]))
    }

    #[test]
    fn every_form_of_an_address_is_replaced() {
        let mut a = anon();
        let cases = [
            "10.20.0.10",
            "10.20.0.10/24",
            "10.20.0.10:51820",
            "[2001:db8:1::a]:51820",
            "2001:db8:1::a/64",
            "2001:DB8:1::A",
            "fe80::1%eth0",
            "peer 10.20.0.10 moved to 192.0.2.7:51820.",
            "x1.2.3.4.5y",
            "::ffff:10.20.0.10",
        ];
        for c in cases {
            let out = a.text(c);
            for raw in ["10.20.0.10", "2001:db8:1::a", "2001:DB8:1::A", "fe80::1", "192.0.2.7"] {
                assert!(!out.contains(raw), "{c} -> {out}");
            }
            assert_ne!(out, c);
        }
        assert_eq!(a.text("peer 10.20.0.10 moved"), a.text("peer 10.20.0.10 moved"));
        // IPv6 networks end in "::": the whole run is an address.
        for net in ["2001:db8:a::/64", "2001:db8:a::", "fd00::"] {
            let out = a.text(net);
            let addr = net.split('/').next().unwrap();
            assert!(!out.contains(addr), "{net} -> {out}");
        }
        // The link-local prefix every interface has names no network.
        assert_eq!(a.text("fe80::/64"), "fe80::/64");
        assert!(a.text("10.20.0.10/24").ends_with("/24"));
        assert!(a.text("10.20.0.10:51820").ends_with(":51820"));
    }

    #[test]
    fn networks_in_text_are_networks_and_interface_addresses_hosts() {
        let mut a = anon();
        let subnet = a.text("shared subnet 10.20.18.0/24");
        let expected = format!("shared subnet {}", a.network("10.20.18.0/24"));
        assert_eq!(subnet, expected);
        assert!(subnet.ends_with(".0/24") && !subnet.contains("10.20.18"), "{subnet}");
        // An interface address keeps its host's pseudonym.
        let iface = a.text("10.20.18.7/24");
        assert_eq!(iface, format!("{}/24", a.text("10.20.18.7")));
        assert!(iface.starts_with("10."), "private stays private: {iface}");
        assert_eq!(a.text("lo 127.0.0.1/8 ::1/128"), "lo 127.0.0.1/8 ::1/128");
    }

    #[test]
    fn other_text_is_left_alone() {
        let mut a = anon();
        for s in [
            "site3-gw00",
            "6.1.0-28-amd64",
            "0.1.0",
            "12:30:45",
            "0123456789abcdef0123456789abcdef",
            "eth0",
            "<script>",
        ] {
            assert_eq!(a.text(s), s);
        }
    }

    #[test]
    fn prefixes_are_preserved_and_stable_per_key() {
        let mut a = anon();
        let x = a.text("10.20.3.10");
        let y = a.text("10.20.3.11");
        let net = a.network("10.20.3.0/24");
        let prefix = |s: &str| s.rsplit_once('.').unwrap().0.to_string();
        assert_eq!(prefix(&x), prefix(&y));
        assert_eq!(format!("{}.0/24", prefix(&x)), net);
        let mut other = Anon::new(&SiteKey::from_bytes([8; 32]));
        assert_ne!(other.text("10.20.3.10"), x);
        assert_eq!(anon().text("10.20.3.10"), x);
    }

    #[test]
    fn a_scope_gives_the_same_text_and_teaches_the_memo() {
        let mut a = anon();
        let texts = ["10.20.3.10/24 via 10.20.3.1", "2001:db8::1", "eth", "site3-gw00"];
        let mut scope = a.scope();
        let scoped: Vec<String> = texts.iter().map(|t| scope.text(t)).collect();
        let learned = scope.learned;
        assert_eq!(learned.len(), 3, "only what needed scrubbing: {learned:?}");
        a.learn(learned);
        assert_eq!(a.scope().network("10.20.3.0/24"), a.network("10.20.3.0/24"));
        let mut scope = a.scope();
        for (t, s) in texts.iter().zip(&scoped) {
            assert_eq!(&scope.text(t), s);
            assert_eq!(&anon().text(t), s);
        }
        assert!(scope.learned.is_empty(), "all memoised");
    }

    #[test]
    fn macs_are_pseudonymised() {
        let a = anon();
        let m = a.mac("52:54:00:12:34:56");
        assert!(m.starts_with("02:") && m.len() == 17 && !m.contains("12:34:56"));
        assert_eq!(m, a.mac("52:54:00:12:34:56"));
        assert_eq!(Anon::reveal().mac("52:54:00:12:34:56"), "52:54:00:12:34:56");
    }

    #[test]
    fn key_parsing_and_file_creation() {
        assert!(SiteKey::parse("short").is_err());
        assert!(SiteKey::parse(&"ab".repeat(32)).is_ok());
        assert!(SiteKey::parse("a long enough passphrase").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/site-key");
        let k1 = SiteKey::load_or_create(&path).unwrap();
        let k2 = SiteKey::load_or_create(&path).unwrap();
        assert_eq!(k1.0, k2.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{k1:?}").contains(&hex::encode(k1.0)));
    }
}
