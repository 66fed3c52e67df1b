//! The receiver's validated configuration. Built once from the command line
//! and environment; nothing re-reads the environment afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;

use kattila_proto::limits::MAX_BODY_BYTES;

use crate::keys::KeySource;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db_path: PathBuf,
    pub keys: KeySource,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// Most messages committed in one transaction.
    pub max_batch: usize,
}

impl Config {
    /// A configuration for tests: port 0 on loopback, the given database and key.
    pub fn for_test(db_path: impl Into<PathBuf>, psk: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid literal"),
            db_path: db_path.into(),
            keys: KeySource::Fixed(kattila_proto::Psk::new(psk).expect("non-empty test key")),
            max_body: MAX_BODY_BYTES,
            max_batch: 256,
        }
    }
}
