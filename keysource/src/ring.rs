//! The live key set of a running program and the task that keeps it fresh
//! from DNS. Verifiers read it on every message; the refresh task replaces
//! the current key when the TXT value changes, keeping two previous keys.
//! With a key state file the keys outlive a restart (see [`crate::state`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kattila_proto::{KeySet, Psk};

use crate::state::KeyStateFile;
use crate::{fetch_txt, FetchError};

/// Where a program's fleet key comes from.
#[derive(Debug, Clone)]
pub enum KeyConfig {
    /// `KATTILA_PSK` or a key file: one fixed key, never refreshed.
    Fixed(Psk),
    /// A DNS TXT record, looked up every `refresh`.
    Dns {
        /// Record name, e.g. `kattila.example.com`.
        name: String,
        /// Resolver to ask; `None` uses the system configuration.
        server: Option<SocketAddr>,
        /// Time between refreshes (hourly in production).
        refresh: Duration,
        /// Bound on one lookup.
        timeout: Duration,
    },
}

/// How key refreshing is going, for health checks and metrics. Holds no
/// key material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStatus {
    /// `"fixed"` or `"dns"`.
    pub source: &'static str,
    /// Keys currently accepted (0 until the first successful lookup, unless
    /// the key state file supplied some).
    pub keys: usize,
    /// How many of the keys came from the key state file at start; 0 once a
    /// lookup succeeded (the keys are then DNS's again).
    pub from_state: usize,
    /// Unix seconds of the last successful lookup.
    pub last_success: Option<i64>,
    /// Unix seconds of the last failed lookup, if it is newer than the last success.
    pub failing_since: Option<i64>,
    /// The last lookup error (names the record and server, never the value).
    pub last_error: Option<String>,
    /// Successful lookups that brought a new key.
    pub rotations: u64,
    /// Failed lookups since start.
    pub failures: u64,
}

impl KeyStatus {
    /// Whether verification runs on keys that are not being refreshed.
    pub fn degraded(&self) -> bool {
        self.keys == 0 || self.failing_since.is_some()
    }
}

#[derive(Debug, Default)]
struct Inner {
    keys: KeySet,
    status: KeyStatus,
}

/// Where the ring saves its keys, and whether the file is behind them.
#[derive(Debug)]
struct Saved {
    file: KeyStateFile,
    /// The file does not hold the ring's keys (it was unusable at start, or
    /// the last write failed): write it at the next lookup even without a
    /// rotation.
    stale: bool,
}

/// The shared, swappable key set. Cloning is cheap; all clones see the same keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    inner: Arc<RwLock<Inner>>,
    wake: Arc<tokio::sync::Notify>,
    /// `None` for fixed keys and when no state file is configured. A mutex
    /// of its own, so that writes are ordered without holding up verifiers.
    saved: Option<Arc<Mutex<Saved>>>,
}

impl KeyRing {
    /// A ring for `config`: filled at once for a fixed key, empty until the
    /// first lookup for DNS.
    pub fn new(config: &KeyConfig) -> KeyRing {
        KeyRing::open(config, None)
    }

    /// Like [`KeyRing::new`], but for DNS keys also loads the keys saved in
    /// the key state file at `state` and saves them there whenever they
    /// change. The loaded keys verify at once, and the newest of them is the
    /// current key (the one to sign with) until a lookup says otherwise: it
    /// was the fleet key when the program stopped, so a restart while DNS is
    /// unreachable keeps working. A file that is missing is created at the
    /// first successful lookup; one that cannot be used (see
    /// [`crate::state`]) is ignored with a warning and replaced then. A fixed
    /// key is never written to disk, so `state` is unused for it.
    pub fn open(config: &KeyConfig, state: Option<&Path>) -> KeyRing {
        let (inner, saved) = match config {
            KeyConfig::Fixed(psk) => (
                Inner {
                    keys: KeySet::new(psk.clone()),
                    status: KeyStatus { source: "fixed", keys: 1, ..KeyStatus::default() },
                },
                None,
            ),
            KeyConfig::Dns { name, .. } => {
                let mut inner = Inner {
                    status: KeyStatus { source: "dns", ..KeyStatus::default() },
                    ..Inner::default()
                };
                let saved = state.map(|path| {
                    let file = KeyStateFile::new(path, name);
                    let stale = match file.load() {
                        Ok(Some(keys)) => {
                            tracing::info!(
                                path = %path.display(),
                                keys = keys.len(),
                                "fleet keys loaded from the key state file; they verify until DNS says otherwise"
                            );
                            inner.status.keys = keys.len();
                            inner.status.from_state = keys.len();
                            inner.keys = keys;
                            false
                        }
                        Ok(None) => {
                            tracing::info!(
                                path = %path.display(),
                                "no key state file yet; it is written at the first successful lookup"
                            );
                            true
                        }
                        Err(e) => {
                            tracing::warn!(
                                error = %e,
                                "ignoring the key state file; it is replaced at the next successful lookup"
                            );
                            true
                        }
                    };
                    Arc::new(Mutex::new(Saved { file, stale }))
                });
                (inner, saved)
            }
        };
        KeyRing {
            inner: Arc::new(RwLock::new(inner)),
            wake: Arc::new(tokio::sync::Notify::new()),
            saved,
        }
    }

    /// Asks the refresh task to look the key up now rather than at the next
    /// period: a MAC that failed may mean the key was rotated in DNS and this
    /// side has not seen it yet. The task rate-limits these early lookups.
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// Runs `f` with the accepted keys (the lock is held only for the call).
    pub fn with<R>(&self, f: impl FnOnce(&KeySet) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(|e| e.into_inner()).keys)
    }

    /// The key to sign with, if any is known yet.
    pub fn current(&self) -> Option<Psk> {
        self.with(|k| k.current().cloned())
    }

    /// A snapshot of the refresh status.
    pub fn status(&self) -> KeyStatus {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).status.clone()
    }

    /// Records a successful lookup; returns whether the key changed. Saves
    /// the keys to the key state file when they changed (or the file is
    /// behind); a failed write is logged and retried at the next lookup, the
    /// keys in memory stay in use.
    pub fn accept(&self, key: Psk, now: i64) -> bool {
        let rotated = {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let rotated = inner.keys.rotate(key);
            let keys = inner.keys.len();
            let status = &mut inner.status;
            status.keys = keys;
            status.from_state = 0;
            status.last_success = Some(now);
            status.failing_since = None;
            status.last_error = None;
            if rotated {
                status.rotations += 1;
            }
            rotated
        };
        if let Some(saved) = &self.saved {
            let mut saved = saved.lock().unwrap_or_else(|e| e.into_inner());
            if rotated || saved.stale {
                // Written synchronously: it happens once per rotation, and the
                // keys are copied out first so verifiers never wait for the disk.
                let keys = self.with(KeySet::clone);
                match saved.file.save(&keys) {
                    Ok(()) => saved.stale = false,
                    Err(e) => {
                        saved.stale = true;
                        tracing::warn!(
                            error = %e,
                            "could not save the fleet keys; after a restart only DNS's current key will be known until this succeeds"
                        );
                    }
                }
            }
        }
        rotated
    }

    /// Records a failed lookup; the known keys stay in use.
    pub fn fail(&self, error: &FetchError, now: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let status = &mut inner.status;
        status.failures += 1;
        status.failing_since.get_or_insert(now);
        status.last_error = Some(error.to_string());
    }
}

/// Least time between two lookups asked for by [`KeyRing::request_refresh`].
pub const MIN_EARLY_REFRESH: Duration = Duration::from_secs(5);

/// Keeps `ring` fresh from DNS until the task is dropped. Does nothing for a
/// fixed key. It looks up every `refresh`; after a failed lookup it retries
/// with exponential backoff (1 s doubling up to `refresh`) while the known
/// keys (if any) stay in use. A
/// [`KeyRing::request_refresh`] brings the next lookup forward, but never to
/// less than [`MIN_EARLY_REFRESH`] after the previous one.
pub async fn refresh_forever(ring: KeyRing, config: KeyConfig) {
    let KeyConfig::Dns { name, server, refresh, timeout } = config else { return };
    let mut backoff = Duration::from_secs(1).min(refresh);
    loop {
        let wait = match fetch_txt(&name, server, timeout).await.and_then(|value| {
            Psk::new(&value).ok_or(FetchError::Empty { name: name.clone(), server: String::new() })
        }) {
            Ok(key) => {
                if ring.accept(key, kattila_fleet::unix_now()) {
                    tracing::info!(record = %name, keys = ring.status().keys, "fleet key changed");
                }
                backoff = Duration::from_secs(1).min(refresh);
                refresh
            }
            Err(e) => {
                ring.fail(&e, kattila_fleet::unix_now());
                let status = ring.status();
                if status.keys == 0 {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?backoff,
                        "fleet key lookup failed and no key is known yet: nothing can be signed or verified, every report is refused, until a lookup succeeds"
                    );
                } else if status.from_state > 0 {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?backoff,
                        keys = status.keys,
                        "fleet key lookup failed; verifying with the keys from the key state file"
                    );
                } else {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?backoff,
                        keys = status.keys,
                        "fleet key lookup failed; verifying with the known keys"
                    );
                }
                let wait = backoff;
                backoff = (backoff * 2).min(refresh);
                wait
            }
        };
        let looked_up = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ring.wake.notified() => {
                tokio::time::sleep_until(looked_up + MIN_EARLY_REFRESH.min(wait)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ring_has_its_key_and_status_holds_no_secret() {
        let ring = KeyRing::new(&KeyConfig::Fixed(Psk::new("sekrit-value").unwrap()));
        assert!(ring.current().is_some());
        let status = ring.status();
        assert_eq!((status.source, status.keys), ("fixed", 1));
        assert!(!status.degraded());
        assert!(!format!("{ring:?}{status:?}").contains("sekrit"));
    }

    #[test]
    fn dns_ring_starts_empty_and_tracks_failures_and_rotations() {
        let config = KeyConfig::Dns {
            name: "k.example".into(),
            server: None,
            refresh: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
        };
        let ring = KeyRing::new(&config);
        assert!(ring.current().is_none());
        assert!(ring.status().degraded());
        let err = FetchError::Timeout { name: "k.example".into(), server: "x".into() };
        ring.fail(&err, 10);
        assert_eq!(ring.status().failing_since, Some(10));
        assert!(ring.accept(Psk::new("one").unwrap(), 20));
        assert!(!ring.accept(Psk::new("one").unwrap(), 30));
        assert!(ring.accept(Psk::new("two").unwrap(), 40));
        let s = ring.status();
        assert_eq!((s.keys, s.rotations, s.failures, s.failing_since), (2, 2, 1, None));
        assert!(!s.degraded());
    }
}
