//! Command line of `sitegen`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// sitegen: turns the Kattila receiver's database into a static HTML
/// dashboard. The site is written to a fresh directory under --out and
/// switched in atomically: serve OUT/current with any web server, or open
/// OUT/current/index.html in a browser.
#[derive(Debug, Parser)]
#[command(name = "sitegen", version)]
pub struct Args {
    /// The receiver's SQLite database (opened read-only).
    #[arg(long, env = "KATTILA_DB", default_value = "kattila.db")]
    pub db: PathBuf,

    /// Output directory; the site appears as OUT/current.
    #[arg(long, env = "KATTILA_SITE_DIR", default_value = "site")]
    pub out: PathBuf,

    /// Build once and exit (for cron).
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,

    /// Keep running and rebuild after every change to the database.
    #[arg(long)]
    pub watch: bool,

    /// In --watch mode, how often to check the database for changes (ms).
    #[arg(long, default_value_t = 250)]
    pub poll_ms: u64,
}

pub fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitegen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.once && !args.watch {
        anyhow::bail!("say --once (build and exit) or --watch (keep rebuilding)");
    }
    if args.once {
        let report = crate::build_once(&args.db, &args.out, crate::unix_now())?;
        println!(
            "built {} agents, {} files in {:.0?} -> {}",
            report.agents,
            report.files,
            report.elapsed,
            report.published.display()
        );
        return Ok(());
    }
    // Runs until killed: publishing is atomic, so an interrupted build only
    // leaves an unused directory under OUT/.builds that the next build removes.
    let poll = Duration::from_millis(args.poll_ms.clamp(10, 10_000));
    crate::watch::watch(&args.db, &args.out, poll, || false)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
