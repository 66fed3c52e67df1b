//! Where the receiver's keys come from, and the shared, swappable key set
//! that request handlers verify against.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::bail;
use kattila_proto::{KeySet, Psk};

/// The origin of the fleet key.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `KATTILA_PSK` or a key file: one fixed key.
    Fixed(Psk),
}

impl KeySource {
    /// Resolves the configured options: `psk` (the value of `KATTILA_PSK`)
    /// or `psk_file`. Exactly one must be given.
    pub fn from_options(psk: Option<&str>, psk_file: Option<&Path>) -> anyhow::Result<KeySource> {
        match kattila_keysource::load_fixed_key(psk, psk_file)? {
            Some(key) => Ok(KeySource::Fixed(key)),
            None => bail!("no fleet key: set KATTILA_PSK or --psk-file"),
        }
    }

    /// The key set to start with.
    pub fn initial(&self) -> KeySet {
        match self {
            KeySource::Fixed(psk) => KeySet::new(psk.clone()),
        }
    }
}

/// The keys request handlers verify against; replaced whole on rotation.
#[derive(Debug, Clone, Default)]
pub struct SharedKeys(Arc<RwLock<KeySet>>);

impl SharedKeys {
    pub fn new(keys: KeySet) -> Self {
        SharedKeys(Arc::new(RwLock::new(keys)))
    }

    /// Runs `f` with the current key set (held only for the call).
    pub fn with<R>(&self, f: impl FnOnce(&KeySet) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `key` current; returns whether anything changed.
    pub fn rotate(&self, key: Psk) -> bool {
        self.0.write().unwrap_or_else(|e| e.into_inner()).rotate(key)
    }
}
