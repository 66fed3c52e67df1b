//! Fetches the Kattila fleet pre-shared key (PSK) from a DNS TXT record.
//!
//! Agents and the receiver both call [`fetch_txt`] so that rotating the PSK is a
//! single DNS change. The value is a secret, so nothing in this crate ever puts
//! it into an error, a `Debug` string or a log line.
//!
//! # Key state file
//!
//! A [`KeyRing`] fed from DNS can keep its keys in a key state file
//! ([`KeyRing::open`], [`state`]), so that keys rotated out before a restart
//! still verify after it and a restart while DNS is down still has keys.
//! That file is the one place a key is written; it is mode 0600 and only
//! the keys' count and the file's path are ever logged.
//!
//! # Logging caveat
//!
//! hickory itself logs every DNS response in full at `DEBUG` level (target
//! `hickory_net::error`, from `DnsError::from_response`), TXT data included.
//! Processes that fetch the PSK must keep the `hickory_net` and
//! `hickory_resolver` targets at `INFO` or above, or the key ends up in the log.
//!
//! # Test server
//!
//! With the `test-server` feature, [`test_server::TestDnsServer`] is a tiny
//! in-process authoritative server so that this crate and its users can test
//! rotation, outages and missing records without a real DNS setup.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

pub mod file;
mod logging;
pub mod ring;
pub mod state;
#[cfg(feature = "test-server")]
pub mod test_server;

pub use file::{load_fixed_key, read_key_file, FixedKeyError};
pub use logging::init_logging;
pub use ring::{refresh_forever, KeyConfig, KeyRing, KeyStatus};
pub use state::{KeyStateFile, StateError};

/// Why the PSK could not be fetched.
///
/// Every variant names the record and the server that was asked, so that an
/// operator can act on the message, but never the record's value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name does not exist (NXDOMAIN) or has no TXT record.
    #[error("TXT record {name} not found (asked {server})")]
    NotFound {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
    },
    /// The TXT record exists but is empty or only whitespace.
    #[error("TXT record {name} is empty (asked {server})")]
    Empty {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
    },
    /// No answer arrived within the caller's timeout.
    #[error("timed out looking up TXT record {name} (asked {server})")]
    Timeout {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
    },
    /// Several TXT records with different values: refusing to guess which is the key.
    #[error(
        "TXT record {name} has {count} different values; expected exactly one (asked {server})"
    )]
    Ambiguous {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
        /// How many distinct values were seen.
        count: usize,
    },
    /// The TXT record is not valid UTF-8.
    #[error("TXT record {name} is not valid UTF-8 (asked {server})")]
    NotUtf8 {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
    },
    /// Any other resolver failure: bad name, unreadable resolv.conf, SERVFAIL, I/O error, ...
    #[error("looking up TXT record {name} failed (asked {server}): {message}")]
    Resolver {
        /// The record name that was looked up.
        name: String,
        /// The server(s) that were asked.
        server: String,
        /// hickory's description of the failure (it never contains answer data).
        message: String,
    },
}

/// Looks up the TXT record `name` and returns its value.
///
/// * `server`: `None` uses the system resolver configuration (`/etc/resolv.conf`,
///   re-read on every call); `Some(addr)` asks only that server (UDP, falling
///   back to TCP when the answer is truncated).
/// * `timeout`: bound on the whole call, whatever hickory's attempts and
///   per-attempt timeouts would add up to.
///
/// `name` is always treated as fully qualified: search domains from
/// resolv.conf are never appended, so a typo cannot silently pick up a record
/// from some other zone.
///
/// The character-strings of the TXT record are concatenated (values over 255
/// bytes arrive split) and surrounding whitespace is trimmed. If the name has
/// several TXT records, they must all carry the same value, otherwise the call
/// fails with [`FetchError::Ambiguous`]: during a rotation a stale and a new
/// value could coexist, and picking one by some rule would make agents and the
/// receiver disagree silently.
///
/// Each call builds a fresh resolver with its cache disabled, so a rotated
/// value is seen on the very next call regardless of the record's TTL.
pub async fn fetch_txt(
    name: &str,
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<String, FetchError> {
    let mut ctx = Ctx {
        name: name.to_owned(),
        server: server.map_or_else(|| "system resolver".to_owned(), |a| a.to_string()),
    };
    let (config, opts) = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for conn in &mut ns.connections {
                conn.port = addr.port();
            }
            let config = ResolverConfig::from_name_servers(vec![ns]);
            (config, ResolverOpts::default())
        }
        None => {
            // Read on every call so that a changed resolv.conf takes effect too.
            let (config, opts) =
                hickory_resolver::system_conf::read_system_conf().map_err(|e| ctx.resolver(e))?;
            ctx.server = describe_system_servers(&config);
            (config, opts)
        }
    };
    match tokio::time::timeout(timeout, lookup(&ctx, config, opts, timeout)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ctx.timeout()),
    }
}

/// Record name and server description, carried into every error.
struct Ctx {
    name: String,
    server: String,
}

impl Ctx {
    fn timeout(&self) -> FetchError {
        FetchError::Timeout { name: self.name.clone(), server: self.server.clone() }
    }

    fn resolver(&self, message: impl ToString) -> FetchError {
        FetchError::Resolver {
            name: self.name.clone(),
            server: self.server.clone(),
            message: message.to_string(),
        }
    }
}

async fn lookup(
    ctx: &Ctx,
    config: ResolverConfig,
    opts: ResolverOpts,
    timeout: Duration,
) -> Result<String, FetchError> {
    let mut fqdn = Name::from_utf8(&ctx.name).map_err(|e| ctx.resolver(e))?;
    fqdn.set_fqdn(true);

    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts);
    let opts = builder.options_mut();
    // Two tries of half the budget each: one lost exchange can be recovered
    // from, and the outer tokio timeout still bounds the total.
    opts.attempts = 1;
    opts.timeout = timeout / 2;
    // The resolver is dropped after this call anyway; no cache means nothing
    // can ever serve a pre-rotation value.
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    let resolver = builder.build().map_err(|e| ctx.resolver(e))?;

    tracing::debug!(name = %ctx.name, server = %ctx.server, "fetching TXT record");
    let lookup = resolver.txt_lookup(fqdn).await.map_err(|e| map_net_error(ctx, e))?;
    let records = lookup.answers().iter().filter_map(|r| match &r.data {
        RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| &s[..])),
        _ => None,
    });
    let value = choose_value(ctx, records)?;
    tracing::debug!(name = %ctx.name, server = %ctx.server, len = value.len(), "fetched TXT record");
    Ok(value)
}

/// Joins each record's character-strings, trims, and requires all records to agree.
fn choose_value<'a, R, S>(ctx: &Ctx, records: R) -> Result<String, FetchError>
where
    R: IntoIterator<Item = S>,
    S: IntoIterator<Item = &'a [u8]>,
{
    let mut values: Vec<String> = Vec::new();
    for strings in records {
        let bytes: Vec<u8> = strings.into_iter().flatten().copied().collect();
        let text = String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8 {
            name: ctx.name.clone(),
            server: ctx.server.clone(),
        })?;
        let text = text.trim().to_owned();
        if !values.contains(&text) {
            values.push(text);
        }
    }
    match values.len() {
        0 => Err(FetchError::NotFound { name: ctx.name.clone(), server: ctx.server.clone() }),
        1 if values[0].is_empty() => {
            Err(FetchError::Empty { name: ctx.name.clone(), server: ctx.server.clone() })
        }
        1 => Ok(values.remove(0)),
        count => {
            Err(FetchError::Ambiguous { name: ctx.name.clone(), server: ctx.server.clone(), count })
        }
    }
}

fn map_net_error(ctx: &Ctx, e: NetError) -> FetchError {
    if e.is_no_records_found() {
        FetchError::NotFound { name: ctx.name.clone(), server: ctx.server.clone() }
    } else if matches!(e, NetError::Timeout) {
        ctx.timeout()
    } else {
        ctx.resolver(e)
    }
}

fn describe_system_servers(config: &ResolverConfig) -> String {
    let ips: Vec<String> = config.name_servers().iter().map(|ns| ns.ip.to_string()).collect();
    format!("system resolver [{}]", ips.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx { name: "psk.example.".into(), server: "127.0.0.1:53".into() }
    }

    fn choose(records: &[&[&[u8]]]) -> Result<String, FetchError> {
        choose_value(&ctx(), records.iter().map(|r| r.iter().copied()))
    }

    #[test]
    fn joins_character_strings_and_trims() {
        assert_eq!(choose(&[&[b" ab", b"cd ", b"\n"]]).unwrap(), "abcd");
    }

    #[test]
    fn identical_records_are_accepted() {
        assert_eq!(choose(&[&[b"k"], &[b" k "]]).unwrap(), "k");
    }

    #[test]
    fn differing_records_are_ambiguous() {
        let err = choose(&[&[b"k1"], &[b"k2"]]).unwrap_err();
        assert!(matches!(err, FetchError::Ambiguous { count: 2, .. }), "{err:?}");
    }

    #[test]
    fn empty_and_missing_and_binary() {
        assert!(matches!(choose(&[&[b"  "]]), Err(FetchError::Empty { .. })));
        assert!(matches!(choose(&[]), Err(FetchError::NotFound { .. })));
        assert!(matches!(choose(&[&[b"\xff"]]), Err(FetchError::NotUtf8 { .. })));
    }
}
