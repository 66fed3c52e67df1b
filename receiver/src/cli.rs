//! Command line of `kattila-receiver`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kattila_proto::limits::MAX_BODY_BYTES;

use crate::config::Config;
use crate::keys::KeySource;

/// Kattila receiver: accepts signed reports from kattila agents, verifies
/// them and commits them to a SQLite database that sitegen publishes.
#[derive(Debug, Parser)]
#[command(name = "kattila-receiver", version)]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "KATTILA_LISTEN", default_value = "0.0.0.0:5086")]
    pub listen: SocketAddr,

    /// SQLite database file (created if missing).
    #[arg(long, env = "KATTILA_DB", default_value = "kattila.db")]
    pub db: PathBuf,

    /// File holding the fleet pre-shared key (instead of KATTILA_PSK).
    /// Keep it mode 600.
    #[arg(long, env = "KATTILA_PSK_FILE")]
    pub psk_file: Option<PathBuf>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KATTILA_MAX_BODY", default_value_t = MAX_BODY_BYTES)]
    pub max_body: usize,

    /// Most messages committed in one database transaction.
    #[arg(long, env = "KATTILA_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
}

impl Args {
    /// Validates the arguments into a [`Config`]. The key itself is read
    /// from `KATTILA_PSK` here and nowhere else, so it never appears on a
    /// command line.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let psk = std::env::var("KATTILA_PSK").ok();
        let keys = KeySource::from_options(psk.as_deref(), self.psk_file.as_deref())?;
        anyhow::ensure!(self.max_batch > 0, "--max-batch must be at least 1");
        anyhow::ensure!(self.max_body >= 1024, "--max-body must be at least 1024 bytes");
        Ok(Config {
            listen: self.listen,
            db_path: self.db,
            keys,
            max_body: self.max_body,
            max_batch: self.max_batch,
        })
    }
}

pub fn main() -> ExitCode {
    kattila_keysource::init_logging();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kattila-receiver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
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
