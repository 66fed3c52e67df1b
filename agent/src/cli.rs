//! Command line of `kattila-agent`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use kattila_keysource::{KeyConfig, KeyRing};
use kattila_proto::Psk;

use crate::config::{self, AgentArgs, Config};
use crate::identity::write_atomically;
use crate::node::{CycleSummary, Node, Outcome};
use crate::report::{build_report, sign_report, Telemetry, AGENT_VERSION};
use crate::simulate::{Scenario, SimOptions, SimStats};
use crate::unix_now;

/// Kattila agent: reports this node's interfaces, routes and WireGuard peers
/// to a kattila-receiver, signed with the fleet key; relays for other agents
/// of its mesh when they cannot reach the receiver.
///
/// Without a mode flag it runs the agent: collect every --interval, sign,
/// deliver (directly, else through a relay found on the mesh, else into the
/// spool), and serve the API on --listen. Settings come from `.env` in the
/// working directory, then /etc/kattila/agent.env (DNS= and MANAGER_URL=
/// accepted), then the environment, then these flags; each overrides the
/// one before.
#[derive(Debug, Parser)]
#[command(name = "kattila-agent", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a synthetic fleet against a receiver (demo, tests, benchmarks).
    ///
    /// Each simulated agent has a stable id derived from --seed, keeps its
    /// tick counter in --state-dir, and pushes a realistic signed report
    /// (interfaces with IPv4/IPv6 addresses, routes, a wg0 whose peers are
    /// other simulated agents, its site's label) once per --interval. Sites
    /// of five agents each have a gateway. --faults puts failures on the
    /// fleet. The fleet key comes from KATTILA_PSK or --psk-file.
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

    /// Failures to put on the fleet. "demo" repeats a cycle of 48 rounds
    /// (one round = one --interval): a site silent, a gateway down with its
    /// site's reports relayed by the next site's gateway, stale links, a
    /// peer removed at one end, an endpoint change and flapping interfaces,
    /// each recovering once per cycle; the targets follow from --seed.
    #[arg(long, value_enum, default_value_t = Scenario::None, value_name = "SCENARIO")]
    pub faults: Scenario,
}

/// Exit status of `--once` when the receiver refused the report.
pub const EXIT_REFUSED: u8 = 2;
/// Exit status of `--once` when nothing was reachable (report spooled).
pub const EXIT_UNDELIVERABLE: u8 = 3;

/// `version` is what `--version` prints. The binary passes it (the workspace
/// version and git revision, see build.rs), so a new commit relinks the
/// binary without recompiling this library.
pub fn main(version: &'static str) -> ExitCode {
    // The simulator reads only its flags and the environment; the agent
    // also reads .env files, which must be merged in before clap reads env.
    let simulate = std::env::args_os().nth(1).is_some_and(|a| a == "simulate");
    let mut env_files = Vec::new();
    let mut warnings = Vec::new();
    if !simulate {
        match load_env_files() {
            Ok((files, w)) => (env_files, warnings) = (files, w),
            Err(e) => {
                eprintln!("kattila-agent: error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    kattila_keysource::init_logging();
    for w in warnings {
        tracing::warn!("{w}");
    }
    let args = Args::from_arg_matches(&Args::command().version(version).get_matches())
        .unwrap_or_else(|e| e.exit());
    let result = match args.command {
        Some(Command::Simulate(sim)) => simulate_main(sim),
        None => agent_main(args.agent, env_files),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kattila-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the `.env` files and adds their settings to the environment where
/// it has none; returns the files read and warnings.
fn load_env_files() -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let system = std::env::var_os("KATTILA_ENV_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::SYSTEM_ENV_FILE));
    let files = config::read_env_files(Path::new(".env"), &system)?;
    let (add, warnings) = config::merge_env(&files, &|k| std::env::var(k).ok());
    for (k, v) in add {
        // Single-threaded here: no runtime or logger thread exists yet.
        std::env::set_var(k, v);
    }
    Ok((files.into_iter().map(|(p, _)| p).collect(), warnings))
}

fn agent_main(args: AgentArgs, env_files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let env_psk = std::env::var("KATTILA_PSK").ok();
    let config = Config::from_args(&args, env_psk.as_deref(), env_files)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    if args.show_config {
        println!("{}", serde_json::to_string_pretty(&config.to_json())?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.sysinfo {
        let telemetry = runtime.block_on(quiet_collect());
        println!("{}", sysinfo_json(&telemetry));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(n) = args.bench_cycles {
        return runtime.block_on(bench(n));
    }
    if args.discover {
        return runtime.block_on(discover(config));
    }
    let key_config = config.key.clone().context(
        "no fleet key: set KATTILA_DNS (DNS= in .env), KATTILA_PSK or --psk-file (KATTILA_PSK_FILE)",
    )?;
    if let Some(file) = args.dump {
        return runtime.block_on(dump(config, key_config, &file));
    }
    anyhow::ensure!(
        config.manager_url.is_some(),
        "no receiver: set MANAGER_URL (in .env or the environment) or --manager-url"
    );
    if args.once {
        return runtime.block_on(once(config, key_config));
    }
    runtime.block_on(daemon(config, key_config))
}

/// Collects with standard output silenced: wireguard-control prints
/// unknown UAPI keys there, and stdout carries the JSON of --sysinfo and
/// --dump.
async fn quiet_collect() -> Telemetry {
    let gag = gag::Gag::stdout().ok();
    let telemetry = crate::collect::collect().await;
    drop(gag);
    telemetry
}

/// What --sysinfo prints: the telemetry as it goes into a report, in the
/// report's field order.
pub fn sysinfo_json(t: &Telemetry) -> String {
    #[derive(serde::Serialize)]
    struct SysInfo<'a> {
        hostname: &'a str,
        agent_version: &'a str,
        system: &'a kattila_proto::model::SystemInfo,
        interfaces: &'a [kattila_proto::model::Interface],
        routes: &'a [kattila_proto::model::Route],
        wireguard: &'a [kattila_proto::model::WgDevice],
        errors: &'a [kattila_proto::model::CollectError],
    }
    serde_json::to_string_pretty(&SysInfo {
        hostname: &t.hostname,
        agent_version: AGENT_VERSION,
        system: &t.system,
        interfaces: &t.interfaces,
        routes: &t.routes,
        wireguard: &t.wireguard,
        errors: &t.errors,
    })
    .expect("telemetry serialises")
}

/// A key ring filled once: fixed keys at once, DNS with one lookup. When
/// the lookup fails, the keys saved in the key state file by an earlier run
/// are used (with a warning); without any, it is an error.
async fn ring_now(config: &Config, key_config: &KeyConfig) -> anyhow::Result<KeyRing> {
    let state = config.key_state_path();
    if let KeyConfig::Dns { .. } = key_config {
        // The state file lives in the state directory, which Node::open
        // would create only after the lookup.
        std::fs::create_dir_all(&config.state_dir).with_context(|| {
            format!(
                "creating state directory {} (set --state-dir or KATTILA_STATE_DIR)",
                config.state_dir.display()
            )
        })?;
    }
    let ring = KeyRing::open(key_config, Some(&state));
    if let KeyConfig::Dns { name, server, timeout, .. } = key_config {
        match kattila_keysource::fetch_txt(name, *server, *timeout).await {
            Ok(value) => {
                let psk =
                    Psk::new(&value).with_context(|| format!("TXT record {name} is empty"))?;
                ring.accept(psk, unix_now());
            }
            Err(e) if ring.current().is_some() => {
                tracing::warn!(error = %e, "fleet key lookup failed; signing with the key saved by the last run");
            }
            Err(e) => return Err(anyhow::Error::new(e).context("fetching the fleet key")),
        }
    }
    Ok(ring)
}

async fn dump(config: Config, key_config: KeyConfig, file: &Path) -> anyhow::Result<ExitCode> {
    let ring = ring_now(&config, &key_config).await?;
    let psk = ring.current().context("no fleet key")?;
    let node = Node::open(config, ring)?;
    let gag = gag::Gag::stdout().ok();
    let mut report = node.collect_report().await;
    drop(gag);
    let envelope = node.sign(&mut report, &psk)?;
    if file == Path::new("-") {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&envelope)?;
        out.write_all(b"\n")?;
    } else {
        write_atomically(file, &envelope)?;
        eprintln!(
            "kattila-agent: wrote a signed report (tick {}) to {}",
            report.tick,
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn once(config: Config, key_config: KeyConfig) -> anyhow::Result<ExitCode> {
    let ring = ring_now(&config, &key_config).await?;
    let node = Node::open(config, ring)?;
    let gag = gag::Gag::stdout().ok();
    let report = node.collect_report().await;
    drop(gag);
    let summary = node.deliver_all(report).await?;
    if summary.spooled_delivered + summary.spooled_refused > 0 {
        eprintln!(
            "kattila-agent: spool: {} delivered, {} refused",
            summary.spooled_delivered, summary.spooled_refused
        );
    }
    Ok(match summary.fresh {
        Outcome::Delivered { hops: 0 } => {
            eprintln!("kattila-agent: delivered directly");
            ExitCode::SUCCESS
        }
        Outcome::Delivered { hops } => {
            eprintln!("kattila-agent: delivered through {hops} relay hop(s)");
            ExitCode::SUCCESS
        }
        Outcome::Refused { status, code, detail } => {
            let kept =
                if crate::retry::keep_for_later(status) { " (kept in the spool)" } else { "" };
            eprintln!(
                "kattila-agent: refused by the receiver{kept}: HTTP {status} {code}: {detail}"
            );
            ExitCode::from(EXIT_REFUSED)
        }
        Outcome::Undeliverable { reason } => {
            let stats = node.spool_stats();
            eprintln!(
                "kattila-agent: undeliverable, kept in the spool ({} waiting): {reason}",
                stats.reports
            );
            ExitCode::from(EXIT_UNDELIVERABLE)
        }
    })
}

async fn discover(config: Config) -> anyhow::Result<ExitCode> {
    let own = std::fs::read_to_string(config.state_dir.join("agent_id"))
        .map(|s| s.trim().to_string())
        .ok();
    let telemetry = quiet_collect().await;
    let targets = crate::node::probe_targets(&config, &telemetry);
    if targets.is_empty() {
        eprintln!(
            "kattila-agent: nothing to probe: no WireGuard peer with a host address in its AllowedIPs, and no --relay"
        );
        return Ok(ExitCode::from(EXIT_UNDELIVERABLE));
    }
    let prober = crate::push::Pusher::new(config.timeout.min(Duration::from_secs(2)))?;
    let found = crate::node::probe(&prober, targets.clone(), own.as_deref()).await;
    eprintln!(
        "kattila-agent: probed {} address(es), {} agent(s) answered",
        targets.len(),
        found.len()
    );
    for c in &found {
        println!("{}\t{}\t{}", c.base, c.agent_id, c.path.describe());
    }
    Ok(if found.is_empty() { ExitCode::from(EXIT_UNDELIVERABLE) } else { ExitCode::SUCCESS })
}

async fn daemon(config: Config, key_config: KeyConfig) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = match config.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--listen, KATTILA_LISTEN)"))?,
        ),
        None => None,
    };
    // Node::open creates the state directory before the refresh task can
    // write the key state file into it.
    let ring = KeyRing::open(&key_config, Some(&config.key_state_path()));
    let node = Arc::new(Node::open(config, ring.clone())?);
    tokio::spawn(kattila_keysource::refresh_forever(ring, key_config));
    if let Some(listener) = listener {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve(listener, node).await {
                tracing::error!(error = %format!("{e:#}"), "API server stopped");
            }
        });
    }
    tracing::info!(
        agent_id = %node.agent_id(),
        receiver = %node.config.manager_url.as_ref().map(|u| u.as_str()).unwrap_or(""),
        listen = ?node.config.listen,
        key = %node.config.key_source,
        "agent started"
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut first = true;
    loop {
        // The first cycle waits for the DNS key a moment; later ones use what is known.
        if first && node.keys.current().is_none() {
            for _ in 0..50 {
                if node.keys.current().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        first = false;
        tokio::select! {
            r = node.cycle() => match r {
                Ok(summary) => log_cycle(&summary, &node),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cycle failed"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        let wait = node.config.interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

fn log_cycle(summary: &CycleSummary, node: &Node) {
    if summary.spooled_delivered > 0 {
        tracing::info!(delivered = summary.spooled_delivered, "spooled reports delivered");
    }
    match &summary.fresh {
        Outcome::Delivered { hops } => tracing::debug!(hops, "report delivered"),
        Outcome::Refused { status, code, detail } => {
            tracing::warn!(status, %code, %detail, "report refused by the receiver")
        }
        Outcome::Undeliverable { reason } => {
            let stats = node.spool_stats();
            tracing::warn!(%reason, spooled = stats.reports, dropped = stats.dropped, "report spooled")
        }
    }
}

/// `--bench-cycles N`: N collect+build+sign cycles; prints CPU per cycle.
async fn bench(n: u32) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(n > 0, "--bench-cycles must be at least 1");
    let dir = std::env::temp_dir().join(format!("kattila-bench-{}", std::process::id()));
    let mut ticks = crate::identity::TickCounter::open(dir.join("tick"), 1_000_000)?;
    let psk = Psk::new("benchmark-key").expect("non-empty");
    let gag = gag::Gag::stdout().ok();
    // One collector for all cycles, as in the daemon. Warm-up: the netlink
    // socket, first page faults.
    let mut collector = crate::collect::Collector::default();
    let warm = collector.collect().await;
    let (cpu0, wall0) = (cpu_seconds()?, std::time::Instant::now());
    let mut bytes = 0;
    for _ in 0..n {
        let now = unix_now();
        let telemetry = collector.collect().await;
        let mut report = build_report("bench", now, telemetry);
        bytes = sign_report(&mut report, &psk, &mut ticks, now)?.len();
    }
    let (cpu, wall) = (cpu_seconds()? - cpu0, wall0.elapsed().as_secs_f64());
    drop(gag);
    let _ = std::fs::remove_dir_all(&dir);
    let peers: usize = warm.wireguard.iter().map(|d| d.peers.len()).sum();
    println!(
        "{n} cycles: {} interfaces, {} routes, {} WireGuard devices, {peers} peers, {bytes} bytes signed; \
         CPU {:.3} ms/cycle, wall {:.3} ms/cycle; errors: {}",
        warm.interfaces.len(),
        warm.routes.len(),
        warm.wireguard.len(),
        cpu * 1000.0 / n as f64,
        wall * 1000.0 / n as f64,
        warm.errors.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// User + system CPU seconds of this process (all threads), from
/// /proc/self/stat (clock ticks of 1/100 s, the Linux user ABI).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').context("unexpected /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

fn simulate_main(args: SimulateArgs) -> anyhow::Result<ExitCode> {
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
        faults: args.faults,
    };
    let stats = Arc::new(SimStats::default());
    let runtime = tokio::runtime::Runtime::new()?;
    tracing::info!(agents = opts.agents, url = %opts.receiver_url, faults = ?opts.faults, "simulated fleet starting");
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
    let (relayed, withheld) =
        (stats.relayed.load(Ordering::Relaxed), stats.withheld.load(Ordering::Relaxed));
    eprintln!(
        "simulate: {ok} reports accepted, {refused} refused, {unreachable} undelivered; \
         {relayed} sent through a relay, {withheld} not sent (agent down by a fault)"
    );
    result?;
    // Refusals mean the fleet and the receiver disagree (key, clock): fail loudly.
    Ok(if refused > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
