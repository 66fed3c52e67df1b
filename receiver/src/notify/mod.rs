//! Notifications: telling people about alarms and incidents.
//!
//! - [`config`]: the configuration file (channels, routes, noise control,
//!   delivery, maintenance windows, silences), checked whole.
//! - [`decide`]: which messages to send, as a pure step the writer runs in
//!   the transaction of the change that causes them (an outbox).
//! - [`message`]: what a message says (the webhook's JSON body) and how a
//!   public channel's copy loses its addresses.
//! - [`channels`]: one attempt on one channel (webhook, Slack, ntfy, e-mail).
//!
//! The delivery worker (`crate::delivery`) sends what the outbox holds.

pub mod channels;
pub mod config;
pub mod decide;
pub mod message;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use config::NotifyConfig;

/// The configuration in use, swapped whole on a good reload. `None`: no
/// notification configuration, nothing is decided or sent.
#[derive(Clone, Default)]
pub struct Live {
    current: Arc<RwLock<Option<Arc<NotifyConfig>>>>,
    /// The file it came from, for reloads.
    pub path: Option<PathBuf>,
}

impl Live {
    pub fn new(config: Option<NotifyConfig>, path: Option<PathBuf>) -> Live {
        Live { current: Arc::new(RwLock::new(config.map(Arc::new))), path }
    }

    pub fn get(&self) -> Option<Arc<NotifyConfig>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the file again; a bad file keeps the configuration in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let config = NotifyConfig::load(path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
        Ok(())
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("path", &self.path).finish_non_exhaustive()
    }
}
