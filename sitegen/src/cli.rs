//! Command line of `sitegen`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::anon::{Anon, SiteKey};
use crate::git::{GitOptions, GitOutcome, GitSnapshots};

/// sitegen: turns the Kattila receiver's database into a static HTML
/// dashboard with JSON files. The site is written to a fresh directory under
/// --out and switched in atomically: serve OUT/current with any web server,
/// or open OUT/current/index.html in a browser. IP addresses are replaced by
/// keyed, prefix-preserving pseudonyms unless --reveal-addresses is given.
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

    /// In --watch mode, check the database at least this often (ms), even
    /// when no file event arrived.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,

    /// In --watch mode, wait for this much quiet (ms) after a change before
    /// building, so a burst of commits gives one build.
    #[arg(long, default_value_t = 50)]
    pub debounce_ms: u64,

    /// In --watch mode, commits that change only counters and times (a
    /// steady fleet reporting) are built at most this often (seconds), and
    /// no sooner than 20 times the last build's duration (so that a large
    /// fleet's refreshes stay a small share of a core); changes of state,
    /// status, health or alarms are built at once.
    #[arg(long, env = "KATTILA_REFRESH", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh_secs: u64,

    /// How long to wait for a locked database (ms).
    #[arg(long, default_value_t = 5000)]
    pub busy_timeout_ms: u64,

    /// Directory with templates (and static/) that replace the built-in
    /// ones file by file.
    #[arg(long, env = "KATTILA_TEMPLATES")]
    pub templates: Option<PathBuf>,

    /// File with the site key (64 hex digits); created with mode 600 when
    /// missing. Default: OUT/.sitegen/site-key. KATTILA_SITE_KEY (64 hex
    /// digits or a passphrase) takes precedence.
    #[arg(long, env = "KATTILA_SITE_KEY_FILE")]
    pub site_key_file: Option<PathBuf>,

    /// Show real IP and MAC addresses. For private sites only.
    #[arg(long)]
    pub reveal_addresses: bool,

    /// Seconds after which a page says that what it shows is old (the
    /// dashboard not updated, or the page open since and not reloaded).
    /// Pages check in the browser (static/fresh.js) and stay complete
    /// without scripts.
    #[arg(long, env = "KATTILA_STALE_AFTER", default_value_t = crate::render::STALE_AFTER_SECS,
          value_parser = clap::value_parser!(i64).range(10..=86_400))]
    pub stale_after: i64,

    /// No effect: the receiver decides when an agent is silent (after three
    /// of its `--interval-secs` without a report). Still accepted, so that
    /// existing cron lines and units keep working.
    #[arg(long, hide = true)]
    pub silent_after: Option<i64>,

    /// Keep OUT/git as a git repository of the site and commit after builds
    /// that changed the fleet's state.
    #[arg(long)]
    pub git: bool,

    /// At most one git commit per this many seconds.
    #[arg(long, default_value_t = 300, requires = "git")]
    pub git_interval: u64,

    /// Push each commit to this remote (name or URL).
    #[arg(long, requires = "git")]
    pub git_push: Option<String>,

    /// Branch of the snapshots.
    #[arg(long, default_value = "main", requires = "git")]
    pub git_branch: String,
}

/// `version` is what `--version` prints. The binary passes it (the workspace
/// version and git revision, see build.rs), so a new commit relinks the
/// binary without recompiling this library.
pub fn main(version: &'static str) -> ExitCode {
    init_logging();
    let args = Args::from_arg_matches(&Args::command().version(version).get_matches())
        .unwrap_or_else(|e| e.exit());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitegen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn anonymiser(args: &Args) -> anyhow::Result<Anon> {
    if args.reveal_addresses {
        return Ok(Anon::reveal());
    }
    if let Ok(text) = std::env::var("KATTILA_SITE_KEY") {
        return Ok(Anon::new(&SiteKey::parse(&text).context("KATTILA_SITE_KEY")?));
    }
    let path =
        args.site_key_file.clone().unwrap_or_else(|| crate::state_dir(&args.out).join("site-key"));
    Ok(Anon::new(&SiteKey::load_or_create(&path)?))
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.once && !args.watch {
        anyhow::bail!("say --once (build and exit) or --watch (keep rebuilding)");
    }
    if let Some(t) = &args.templates {
        if !t.is_dir() {
            anyhow::bail!("--templates {} is not a directory", t.display());
        }
    }
    if args.silent_after.is_some() {
        tracing::warn!(
            "--silent-after has no effect and can be dropped: the receiver decides when an \
             agent is silent (after three of kattila-receiver's --interval-secs, KATTILA_INTERVAL, \
             without a report)"
        );
    }
    // The database first: a mistyped --db must fail before anything is
    // created (the site key, the output directory).
    let conn = args.once.then(|| kattila_store::open_read_only(&args.db)).transpose()?;
    let anon = anonymiser(&args)?;
    let mut builder = crate::Builder::new(
        &args.out,
        anon,
        crate::render::RenderOptions {
            templates: args.templates.clone(),
            stale_after_secs: Some(args.stale_after),
        },
    );
    let mut git = if args.git {
        Some(GitSnapshots::open(
            &args.out,
            GitOptions {
                interval: Duration::from_secs(args.git_interval),
                push: args.git_push.clone(),
                branch: args.git_branch.clone(),
            },
        )?)
    } else {
        None
    };
    if let Some(conn) = conn {
        builder.recall_previous_state();
        conn.busy_timeout(Duration::from_millis(args.busy_timeout_ms))?;
        let report = builder.build(&conn, kattila_fleet::unix_now()).with_context(|| {
            format!("building from {} (locked by another program?)", args.db.display())
        })?;
        println!("{}", report.line());
        builder.keep_state()?;
        if let Some(g) = git.as_mut() {
            match g.after_build(&report.published, &report.digest, kattila_fleet::unix_now())? {
                GitOutcome::Committed(msg) => println!("git: committed \"{msg}\""),
                GitOutcome::Unchanged => println!("git: fleet state unchanged, nothing to commit"),
                GitOutcome::Deferred => println!(
                    "git: state changed, but the last commit is under {} s old; not committing yet",
                    args.git_interval
                ),
            }
        }
        return Ok(());
    }
    // Runs until killed: publishing is atomic, so an interrupted build only
    // leaves an unused directory under OUT/.builds that the next build removes.
    let opts = crate::watch::WatchOptions {
        fallback: Duration::from_millis(args.poll_ms.clamp(10, 60_000)),
        debounce: Duration::from_millis(args.debounce_ms.min(5_000)),
        refresh: Duration::from_secs(args.refresh_secs),
    };
    crate::watch::watch(&args.db, &mut builder, git.as_mut(), &opts, || false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_after_is_still_accepted_but_no_longer_offered() {
        let args = Args::try_parse_from(["sitegen", "--once", "--silent-after", "6"]).unwrap();
        assert_eq!(args.silent_after, Some(6));
        let help = Args::command().render_long_help().to_string();
        assert!(!help.contains("silent-after"), "{help}");
    }
}
