//! Command line of `kattila-agent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::simulate::{SimOptions, SimStats};

/// Kattila agent: reports this node's interfaces, routes and WireGuard peers
/// to a kattila-receiver, signed with the fleet key.
#[derive(Debug, Parser)]
#[command(name = "kattila-agent", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a synthetic fleet against a receiver (demo, tests, benchmarks).
    ///
    /// Each simulated agent has a stable id derived from --seed, keeps its
    /// tick counter in --state-dir, and pushes a realistic signed report
    /// (interfaces with IPv4/IPv6 addresses, routes, a wg0 whose peers are
    /// other simulated agents) once per --interval. The fleet key comes
    /// from KATTILA_PSK or --psk-file.
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,

    /// Base URL of the receiver.
    #[arg(long, env = "MANAGER_URL", default_value = "http://127.0.0.1:5086")]
    pub url: String,

    /// Seconds between two reports of one agent.
    #[arg(long, default_value_t = 30.0)]
    pub interval: f64,

    /// Seed for ids, keys and addresses: the same seed gives the same fleet.
    #[arg(long, default_value = "kattila-demo")]
    pub seed: String,

    /// Directory for the simulated agents' tick counters.
    #[arg(long, env = "KATTILA_STATE_DIR", default_value = "kattila-sim-state")]
    pub state_dir: PathBuf,

    /// Stop after each agent sent this many reports (default: run until Ctrl-C).
    #[arg(long)]
    pub rounds: Option<u64>,

    /// File holding the fleet pre-shared key (instead of KATTILA_PSK).
    #[arg(long, env = "KATTILA_PSK_FILE")]
    pub psk_file: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    kattila_keysource::init_logging();
    let args = Args::parse();
    let result = match args.command {
        Command::Simulate(sim) => simulate(sim),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kattila-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        args.interval.is_finite() && args.interval >= 0.01,
        "--interval must be at least 0.01 seconds"
    );
    let env_psk = std::env::var("KATTILA_PSK").ok();
    let psk = kattila_keysource::load_fixed_key(env_psk.as_deref(), args.psk_file.as_deref())?
        .context("no fleet key: set KATTILA_PSK or --psk-file")?;
    let opts = SimOptions {
        agents: args.agents,
        receiver_url: args.url,
        interval: Duration::from_secs_f64(args.interval),
        seed: args.seed,
        state_dir: args.state_dir,
        rounds: args.rounds,
    };
    let stats = Arc::new(SimStats::default());
    let runtime = tokio::runtime::Runtime::new()?;
    tracing::info!(agents = opts.agents, url = %opts.receiver_url, "simulated fleet starting");
    let result = runtime.block_on(async {
        tokio::select! {
            r = crate::simulate::run(opts, psk, stats.clone()) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    let (ok, refused, unreachable) = (
        stats.accepted.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.unreachable.load(Ordering::Relaxed),
    );
    eprintln!("simulate: {ok} reports accepted, {refused} refused, {unreachable} undelivered");
    result?;
    // Refusals mean the fleet and the receiver disagree (key, clock): fail loudly.
    Ok(if refused > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
