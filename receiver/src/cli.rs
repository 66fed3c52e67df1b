//! Command line of `kattila-receiver`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use kattila_keysource::KeyConfig;
use kattila_proto::limits::MAX_BODY_BYTES;

use crate::config::{
    AdminToken, Config, DEFAULT_BODY_BUDGET, DEFAULT_BODY_MIN_RATE, DEFAULT_BODY_TIMEOUT_SECS,
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS,
};
use crate::process::Settings;

/// Kattila receiver: accepts signed reports from kattila agents, verifies
/// them, commits them to a SQLite database, infers the topology and runs
/// the alarms that sitegen publishes.
///
/// The fleet key comes from the DNS TXT record named by --dns (refreshed
/// periodically; the current and two previous keys verify, and are kept
/// across restarts in --key-state), or, overriding DNS, from the KATTILA_PSK
/// environment variable or --psk-file. The admin
/// API token comes from KATTILA_ADMIN_TOKEN or --admin-token-file; without
/// one the admin API answers 403.
///
/// Notifications (webhook, Slack/Mattermost, ntfy, e-mail) are configured
/// in one TOML file given by --notify-config; see docs/notifications.md.
/// `kattila-receiver notify check FILE` validates one, `kattila-receiver
/// notify test CHANNEL` sends a test message. SIGHUP reloads the file; a
/// bad file is refused and the configuration in use kept.
#[derive(Debug, Parser)]
#[command(name = "kattila-receiver", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Notification configuration (TOML: channels, routes, noise control,
    /// maintenance windows, silences). Without one nothing is sent. A bad
    /// file stops the receiver from starting.
    #[arg(long, env = "KATTILA_NOTIFY_CONFIG", value_name = "FILE", global = true)]
    pub notify_config: Option<PathBuf>,

    /// Address and port to listen on.
    #[arg(long, env = "KATTILA_LISTEN", default_value = "0.0.0.0:5086")]
    pub listen: SocketAddr,

    /// SQLite database file (created if missing).
    #[arg(long, env = "KATTILA_DB", default_value = "kattila.db")]
    pub db: PathBuf,

    /// DNS TXT record holding the fleet key, e.g. kattila.example.com.
    #[arg(long, env = "KATTILA_DNS")]
    pub dns: Option<String>,

    /// DNS server to ask (ip:port) instead of the system resolver.
    #[arg(long, env = "KATTILA_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,

    /// Seconds between lookups of the fleet key.
    #[arg(long, env = "KATTILA_KEY_REFRESH_SECS", default_value_t = 3600.0)]
    pub key_refresh_secs: f64,

    /// File where the fleet keys from DNS (current and two previous) are
    /// kept across restarts, so that reports signed with a key rotated out
    /// before a restart still verify after it, and so that a restart while
    /// DNS is unreachable still verifies with the saved keys. Written with
    /// mode 600; a file that group or others may read or write, that
    /// another user owns, that cannot be read or parsed, or that holds the
    /// keys of another --dns record is ignored with a warning and replaced
    /// at the next successful lookup. Unused with a fixed key.
    /// Default: the --db path with ".keys" appended.
    #[arg(long, env = "KATTILA_KEY_STATE", value_name = "PATH")]
    pub key_state: Option<PathBuf>,

    /// File holding the fleet key (overrides --dns). Keep it mode 600.
    #[arg(long, env = "KATTILA_PSK_FILE")]
    pub psk_file: Option<PathBuf>,

    /// File holding the admin API bearer token. Keep it mode 600.
    #[arg(long, env = "KATTILA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Expected seconds between two reports of one agent; an agent is
    /// silent after three intervals without a report.
    #[arg(long, env = "KATTILA_INTERVAL", default_value_t = 30)]
    pub interval_secs: i64,

    /// Consecutive observations before an alarm is raised or resolved.
    #[arg(long, env = "KATTILA_ALARM_THRESHOLD", default_value_t = 2)]
    pub alarm_threshold: i64,

    /// A WireGuard peer is stale when its newest handshake is older than
    /// this and it received nothing since the previous report.
    #[arg(long, env = "KATTILA_STALE_AFTER_SECS", default_value_t = 180)]
    pub stale_after_secs: i64,

    /// Seconds between history samples (and counter updates) per agent.
    #[arg(long, env = "KATTILA_SAMPLE_SECS", default_value_t = 60)]
    pub sample_secs: i64,

    /// Hours to keep the raw audit copy of each report.
    #[arg(long, env = "KATTILA_AUDIT_HOURS", default_value_t = 24)]
    pub audit_hours: i64,

    /// Keep the raw envelope of every report in the audit table. By default
    /// a report's raw copy is kept when it changed state, topology or alarms,
    /// and otherwise once per --audit-interval-secs per agent (every report
    /// always leaves a row with its tick, nonce, size and relay path).
    #[arg(long, env = "KATTILA_AUDIT_EVERY_REPORT")]
    pub audit_every_report: bool,

    /// See --audit-every-report.
    #[arg(long, env = "KATTILA_AUDIT_INTERVAL_SECS", default_value_t = 300)]
    pub audit_interval_secs: i64,

    /// Days to keep history samples (hourly means after the first day).
    #[arg(long, env = "KATTILA_HISTORY_DAYS", default_value_t = 7)]
    pub history_days: i64,

    /// Seconds between timer sweeps (silent agents, expiry, retention).
    #[arg(long, env = "KATTILA_SWEEP_SECS", default_value_t = 5.0)]
    pub sweep_secs: f64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KATTILA_MAX_BODY", default_value_t = MAX_BODY_BYTES)]
    pub max_body: usize,

    /// Ingest requests handled at once, counted from when a request's
    /// whole body has arrived; more are refused with 503 `overloaded`
    /// (agents retry or spool) instead of queueing without bound.
    #[arg(long, env = "KATTILA_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,

    /// Open connections at most. At the limit the receiver stops accepting
    /// until one closes (new connections wait in the kernel's listen
    /// queue). The soft open-file limit is raised to fit, within the hard
    /// limit.
    #[arg(long, env = "KATTILA_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Seconds a client has to send a complete request head; an idle
    /// keep-alive connection is closed after as long, and so is one whose
    /// client leaves an answer unread for as long.
    #[arg(long, env = "KATTILA_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: f64,

    /// Seconds a request body may pause: a body that sends nothing for
    /// this long is refused with 408 `timeout`.
    #[arg(long, env = "KATTILA_BODY_TIMEOUT_SECS", default_value_t = DEFAULT_BODY_TIMEOUT_SECS)]
    pub body_timeout_secs: f64,

    /// Slowest accepted body rate, bytes per second: a body of N bytes must
    /// be complete within --body-timeout-secs + N / this (408 `timeout`).
    #[arg(long, env = "KATTILA_BODY_MIN_RATE", default_value_t = DEFAULT_BODY_MIN_RATE)]
    pub body_min_rate: u64,

    /// Memory, in bytes, for all request bodies being received and handled
    /// together. A body that would exceed it is refused with 503
    /// `overloaded` and its connection closed. At least --max-body.
    #[arg(long, env = "KATTILA_BODY_BUDGET", default_value_t = DEFAULT_BODY_BUDGET)]
    pub body_budget: usize,

    /// Most messages committed in one database transaction.
    #[arg(long, env = "KATTILA_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Notification tools.
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum NotifyAction {
    /// Validates a notification configuration file: every error with its
    /// line; secrets are looked up (their values never printed).
    Check { file: PathBuf },
    /// Sends a test message on one channel of --notify-config, now,
    /// without the outbox; says whether the channel accepted it.
    Test { channel: String },
}

impl Args {
    /// Validates the arguments into a [`Config`]. Secrets are read from the
    /// environment here and nowhere else, so they never appear on a command line.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let psk = std::env::var("KATTILA_PSK").ok();
        let keys =
            match kattila_keysource::load_fixed_key(psk.as_deref(), self.psk_file.as_deref())? {
                Some(key) => KeyConfig::Fixed(key),
                None => match self.dns {
                    Some(name) if !name.trim().is_empty() => {
                        anyhow::ensure!(
                            self.key_refresh_secs >= 1.0,
                            "--key-refresh-secs must be at least 1"
                        );
                        KeyConfig::Dns {
                            name: name.trim().to_string(),
                            server: self.dns_server,
                            refresh: Duration::from_secs_f64(self.key_refresh_secs),
                            timeout: Duration::from_secs(5),
                        }
                    }
                    _ => anyhow::bail!(
                        "no fleet key: set --dns (KATTILA_DNS), KATTILA_PSK or --psk-file"
                    ),
                },
            };
        let admin_token = match (std::env::var("KATTILA_ADMIN_TOKEN").ok(), &self.admin_token_file)
        {
            (Some(_), Some(_)) => {
                anyhow::bail!("give either KATTILA_ADMIN_TOKEN or --admin-token-file, not both")
            }
            (Some(t), None) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading admin token file {}", path.display()))?,
            ),
            (None, None) => None,
        };
        let admin_token = match admin_token.map(|t| t.trim().to_string()) {
            Some(t) if t.len() < 16 => {
                anyhow::bail!("the admin token must be at least 16 characters")
            }
            other => other.map(AdminToken),
        };
        anyhow::ensure!(self.max_batch > 0, "--max-batch must be at least 1");
        anyhow::ensure!(self.max_body >= 1024, "--max-body must be at least 1024 bytes");
        anyhow::ensure!(self.interval_secs >= 1, "--interval-secs must be at least 1");
        anyhow::ensure!(self.alarm_threshold >= 1, "--alarm-threshold must be at least 1");
        anyhow::ensure!(self.sweep_secs >= 0.05, "--sweep-secs must be at least 0.05");
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.max_connections),
            "--max-connections must be between 1 and 1000000"
        );
        anyhow::ensure!(
            self.max_body <= 1 << 30 && self.body_budget <= 1 << 40,
            "--max-body must be at most 1 GiB and --body-budget at most 1 TiB"
        );
        anyhow::ensure!(
            self.header_timeout_secs >= 0.1 && self.header_timeout_secs <= 3600.0,
            "--header-timeout-secs must be between 0.1 and 3600"
        );
        anyhow::ensure!(
            self.body_timeout_secs >= 0.1 && self.body_timeout_secs <= 3600.0,
            "--body-timeout-secs must be between 0.1 and 3600"
        );
        anyhow::ensure!(self.body_min_rate >= 1, "--body-min-rate must be at least 1 byte/s");
        anyhow::ensure!(
            self.body_budget >= self.max_body,
            "--body-budget ({}) must be at least --max-body ({}), or a largest message could never be received",
            self.body_budget,
            self.max_body
        );
        let notify = match &self.notify_config {
            Some(path) => crate::notify::Live::new(
                Some(crate::notify::NotifyConfig::load(path)?),
                Some(path.clone()),
            ),
            None => crate::notify::Live::default(),
        };
        let key_state =
            Some(self.key_state.unwrap_or_else(|| crate::config::key_state_beside(&self.db)));
        Ok(Config {
            listen: self.listen,
            db_path: self.db,
            keys,
            key_state,
            max_body: self.max_body,
            max_batch: self.max_batch,
            admin_token,
            settings: Settings {
                interval_secs: self.interval_secs,
                alarm_threshold: self.alarm_threshold,
                stale_after_secs: self.stale_after_secs,
                sample_secs: self.sample_secs.max(0),
                event_ttl_secs: 3600,
                audit_retention_secs: self.audit_hours.max(1) * 3600,
                history_retention_secs: self.history_days.max(1) * 86_400,
                audit_every_report: self.audit_every_report,
                audit_interval_secs: self.audit_interval_secs.max(0),
            },
            sweep_secs: self.sweep_secs,
            max_in_flight: self.max_in_flight.max(1),
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs_f64(self.header_timeout_secs),
            body_timeout: Duration::from_secs_f64(self.body_timeout_secs),
            body_min_rate: self.body_min_rate,
            body_budget: self.body_budget,
            notify,
        })
    }
}

/// `version` is what `--version` prints. The binary passes it (the workspace
/// version and git revision, see build.rs), so a new commit relinks the
/// binary without recompiling this library.
pub fn main(version: &'static str) -> ExitCode {
    kattila_keysource::init_logging();
    let args = Args::from_arg_matches(&Args::command().version(version).get_matches())
        .unwrap_or_else(|e| e.exit());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kattila-receiver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Notify { action }) = &args.command {
        return notify_tool(action, args.notify_config.as_deref());
    }
    let config = args.into_config()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let wanted = config.max_connections as u64 + 256;
        match crate::transport::raise_open_file_limit(config.max_connections) {
            Some(limit) if limit < wanted => tracing::warn!(
                limit,
                max_connections = config.max_connections,
                "the open-file limit is below --max-connections plus 256: connections beyond it \
                 fail to be accepted; raise LimitNOFILE or lower --max-connections"
            ),
            _ => {}
        }
        let listener = crate::server::bind(&config).await?;
        tracing::info!(
            listen = %listener.local_addr()?,
            db = %config.db_path.display(),
            "kattila-receiver listening"
        );
        crate::server::serve(config, listener, shutdown_signal()).await
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing requests and committing the queue");
}

/// `kattila-receiver notify …`.
fn notify_tool(action: &NotifyAction, config_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    match action {
        NotifyAction::Check { file } => {
            let config = crate::notify::NotifyConfig::load(file)?;
            println!(
                "{}: ok: {} channel(s), {} route(s){}, {} window(s), {} silence(s)",
                file.display(),
                config.channels.len(),
                config.routes.len(),
                if config.default_route.is_some() { " and a default route" } else { "" },
                config.windows.len(),
                config.silences.len()
            );
            Ok(())
        }
        NotifyAction::Test { channel } => {
            let file = config_file.context(
                "give the configuration with --notify-config (or KATTILA_NOTIFY_CONFIG)",
            )?;
            let config = crate::notify::NotifyConfig::load(file)?;
            let c = config.channels.get(channel).with_context(|| {
                format!(
                    "no channel {channel:?} in {} (it has: {})",
                    file.display(),
                    config.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let now = crate::unix_now();
            let message = crate::notify::message::Message::test(channel, now)
                .for_channel(c.private, config.public_url.as_deref());
            let runtime = tokio::runtime::Runtime::new()?;
            runtime
                .block_on(async {
                    let client = reqwest::Client::new();
                    crate::notify::channels::send(&client, c, &message).await
                })
                .with_context(|| format!("channel {channel:?} ({})", c.type_name()))?;
            println!(
                "channel {channel:?} ({}) accepted the test message {}",
                c.type_name(),
                message.idempotency_key
            );
            Ok(())
        }
    }
}
