//! Pre-shared keys and the set of keys a verifier accepts.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// One fleet pre-shared key: the UTF-8 bytes of the DNS TXT value (or of
/// `KATTILA_PSK`), trimmed. `Debug` never shows it.
#[derive(Clone)]
pub struct Psk {
    bytes: Vec<u8>,
    /// HMAC state with the key already absorbed, cloned per message so the
    /// key schedule is not redone for every report.
    keyed: HmacSha256,
}

impl Psk {
    /// Builds a key from its textual form. Surrounding whitespace is trimmed
    /// (TXT records and key files often carry a newline). Returns `None` for
    /// an empty key, which would make every MAC forgeable.
    pub fn new(text: &str) -> Option<Psk> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return None;
        }
        let bytes = trimmed.as_bytes().to_vec();
        let keyed = HmacSha256::new_from_slice(&bytes).expect("HMAC accepts keys of any length");
        Some(Psk { bytes, keyed })
    }

    /// The key's text, for the one place that must store it: the key state
    /// file that carries the key ring across restarts. Never log, format or
    /// return it in an error.
    pub fn expose_secret(&self) -> &str {
        std::str::from_utf8(&self.bytes).expect("built from a &str in Psk::new")
    }

    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Constant-time equality, so comparing a refreshed value with the
    /// current one does not leak where they differ.
    pub fn same_as(&self, other: &Psk) -> bool {
        use hmac::digest::CtOutput;
        // Compare MACs of a fixed message: equal keys give equal tags, and
        // CtOutput compares in constant time.
        let a: CtOutput<HmacSha256> = self.mac().chain_update(b"kattila-key-compare").finalize();
        let b: CtOutput<HmacSha256> = other.mac().chain_update(b"kattila-key-compare").finalize();
        a == b && self.bytes.len() == other.bytes.len()
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// The keys a verifier accepts: the current one and up to two previous ones,
/// so a rotation in DNS does not reject agents that have not refreshed yet.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    /// Newest first; at most [`KeySet::CAPACITY`] entries.
    keys: Vec<Psk>,
}

impl KeySet {
    /// Current key plus two previous ones.
    pub const CAPACITY: usize = 3;

    pub fn new(current: Psk) -> KeySet {
        KeySet { keys: vec![current] }
    }

    /// Makes `key` current. The oldest key falls out when more than
    /// [`KeySet::CAPACITY`] are known. Returns false (and changes nothing)
    /// when `key` already is the current key.
    pub fn rotate(&mut self, key: Psk) -> bool {
        if self.current().is_some_and(|c| c.same_as(&key)) {
            return false;
        }
        self.keys.retain(|k| !k.same_as(&key));
        self.keys.insert(0, key);
        self.keys.truncate(Self::CAPACITY);
        true
    }

    /// The key to sign with.
    pub fn current(&self) -> Option<&Psk> {
        self.keys.first()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether `mac` is the HMAC-SHA256 of `data` under one of the keys.
    /// Each comparison is constant-time; the answer does not say which key.
    pub fn verifies(&self, data: &[u8], mac: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| k.mac().chain_update(data).verify_slice(mac).is_ok())
    }

    /// The keys, newest (current) first.
    pub fn iter(&self) -> impl Iterator<Item = &Psk> {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_blank_key_is_refused() {
        assert!(Psk::new("").is_none());
        assert!(Psk::new(" \n\t").is_none());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = Psk::new("hunter2-secret").unwrap();
        let set = KeySet::new(k.clone());
        assert!(!format!("{k:?}").contains("hunter2"));
        assert!(!format!("{set:?}").contains("hunter2"));
    }

    #[test]
    fn rotation_keeps_current_and_two_previous() {
        let mut set = KeySet::new(Psk::new("a").unwrap());
        assert!(set.rotate(Psk::new("b").unwrap()));
        assert!(!set.rotate(Psk::new(" b\n").unwrap()), "same key again is no rotation");
        assert!(set.rotate(Psk::new("c").unwrap()));
        assert!(set.rotate(Psk::new("d").unwrap()));
        assert_eq!(set.len(), 3);
        assert!(set.current().unwrap().same_as(&Psk::new("d").unwrap()));
        assert!(!set.iter().any(|k| k.same_as(&Psk::new("a").unwrap())));
    }

    #[test]
    fn keys_of_different_length_differ() {
        assert!(!Psk::new("ab").unwrap().same_as(&Psk::new("abc").unwrap()));
    }
}
