//! The receiver's validated configuration. Built once from the command line
//! and environment; nothing re-reads the environment afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kattila_keysource::KeyConfig;
use kattila_proto::limits::MAX_BODY_BYTES;

use crate::process::Settings;

/// The bearer token for admin calls. `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db_path: PathBuf,
    pub keys: KeyConfig,
    /// Where DNS keys are kept across restarts (unused for a fixed key).
    pub key_state: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// Most messages committed in one transaction.
    pub max_batch: usize,
    /// Admin API token; `None` disables the admin API (403).
    pub admin_token: Option<AdminToken>,
    pub settings: Settings,
    /// Seconds between timer sweeps (silent agents, retention).
    pub sweep_secs: f64,
    /// Ingest requests handled at once (counted from when their whole body
    /// is in hand); more are refused with 503.
    pub max_in_flight: usize,
    /// Open connections at most; beyond, new ones wait in the listen queue.
    pub max_connections: usize,
    /// Time to send a complete request head; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// Slowest accepted average body rate, bytes per second.
    pub body_min_rate: u64,
    /// Memory for request bodies being received, in bytes.
    pub body_budget: usize,
    /// Notifications: the configuration in use (none: off) and its file.
    pub notify: crate::notify::Live,
}

/// Defaults shared by the command line and [`Config::for_test`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
pub const DEFAULT_HEADER_TIMEOUT_SECS: f64 = 10.0;
pub const DEFAULT_BODY_TIMEOUT_SECS: f64 = 10.0;
pub const DEFAULT_BODY_MIN_RATE: u64 = 4096;
pub const DEFAULT_BODY_BUDGET: usize = 64 << 20;

impl Config {
    /// A configuration for tests: port 0 on loopback, the given database and key.
    pub fn for_test(db_path: impl Into<PathBuf>, psk: &str) -> Config {
        let db_path = db_path.into();
        Config {
            listen: "127.0.0.1:0".parse().expect("valid literal"),
            db_path: db_path.clone(),
            keys: KeyConfig::Fixed(kattila_proto::Psk::new(psk).expect("non-empty test key")),
            key_state: Some(key_state_beside(&db_path)),
            max_body: MAX_BODY_BYTES,
            max_batch: 256,
            admin_token: None,
            settings: Settings::default(),
            sweep_secs: 5.0,
            max_in_flight: 2048,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs_f64(DEFAULT_HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs_f64(DEFAULT_BODY_TIMEOUT_SECS),
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            body_budget: DEFAULT_BODY_BUDGET,
            notify: crate::notify::Live::default(),
        }
    }
}

/// The default key state file: the database's name with `.keys` appended,
/// in the same directory (e.g. `kattila.db.keys`).
pub fn key_state_beside(db: &std::path::Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}
