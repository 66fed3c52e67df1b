//! Configuration: `.env` files, then the environment, then flags (each
//! overriding the one before), parsed once into a validated [`Config`].
//! Nothing reads the environment after that.
//!
//! `.env` files are read from the working directory and then from
//! `/etc/kattila/agent.env` (or the file named by the environment variable
//! `KATTILA_ENV_FILE`); a key set in the first wins over the second. The
//! original system's keys `DNS=` and `MANAGER_URL=` are accepted (`DNS` is
//! the same as `KATTILA_DNS`). Keys that are not the agent's are ignored (the
//! original `.env` was shared with the manager); unknown `KATTILA_*` keys are
//! warned about, since they are probably typos.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use kattila_keysource::KeyConfig;
use kattila_proto::Psk;
use reqwest::Url;

/// The environment variables the agent reads (and the `.env` keys it takes).
pub const ENV_KEYS: &[&str] = &[
    "MANAGER_URL",
    "KATTILA_DNS",
    "KATTILA_DNS_SERVER",
    "KATTILA_PSK",
    "KATTILA_PSK_FILE",
    "KATTILA_KEY_REFRESH",
    "KATTILA_INTERVAL",
    "KATTILA_TIMEOUT",
    "KATTILA_RETRIES",
    "KATTILA_LISTEN",
    "KATTILA_PEER_PORT",
    "KATTILA_RELAYS",
    "KATTILA_STATE_DIR",
    "KATTILA_SPOOL_MAX_BYTES",
    "KATTILA_SPOOL_MAX_AGE",
    "KATTILA_SITE",
    "RUST_LOG",
];

/// The system-wide configuration file.
pub const SYSTEM_ENV_FILE: &str = "/etc/kattila/agent.env";

/// Parses the text of a `.env` file: `KEY=VALUE` lines, optional `export `,
/// `#` comments, values optionally in single or double quotes.
pub fn parse_env_file(text: &str, origin: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            bail!("{origin}:{}: expected KEY=VALUE", n + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{origin}:{}: {key:?} is not a valid key", n + 1);
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => match value[1..].find(q) {
                Some(end) => &value[1..1 + end],
                None => bail!("{origin}:{}: unterminated quote", n + 1),
            },
            // An unquoted value ends at " #" (a trailing comment).
            _ => value.split(" #").next().unwrap_or("").trim_end(),
        };
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// The `.env` files in precedence order (first wins) and their contents.
pub type EnvFiles = Vec<(PathBuf, Vec<(String, String)>)>;

/// Reads the `.env` files that exist. A file that exists but cannot be read
/// or parsed is an error.
pub fn read_env_files(cwd_file: &Path, system_file: &Path) -> anyhow::Result<EnvFiles> {
    let mut files = Vec::new();
    for path in [cwd_file, system_file] {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let pairs = parse_env_file(&text, &path.display().to_string())?;
                files.push((path.to_path_buf(), pairs));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(files)
}

/// Merges `.env` contents under the real environment `env` (which wins) and
/// returns the variables to add to the process environment before the
/// command line is parsed. `DNS` becomes `KATTILA_DNS`.
pub fn merge_env(
    files: &EnvFiles,
    env: &dyn Fn(&str) -> Option<String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut add: BTreeMap<String, String> = BTreeMap::new();
    let mut warnings = Vec::new();
    // The original system's `DNS` variable, when set in the environment.
    if env("KATTILA_DNS").is_none() {
        if let Some(v) = env("DNS") {
            add.insert("KATTILA_DNS".into(), v);
        }
    }
    for (path, pairs) in files {
        for (key, value) in pairs {
            let key = if key == "DNS" { "KATTILA_DNS" } else { key.as_str() };
            if !ENV_KEYS.contains(&key) {
                if key.starts_with("KATTILA_") {
                    warnings.push(format!("{}: unknown key {key} ignored", path.display()));
                }
                continue;
            }
            if env(key).is_some() || add.contains_key(key) {
                continue;
            }
            add.insert(key.to_string(), value.clone());
        }
    }
    (add, warnings)
}

/// Command-line and environment settings of the agent (not the simulator).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Print what this node sees (system, interfaces, addresses, routes,
    /// WireGuard devices and peers, collection errors) as pretty JSON and
    /// exit. Needs no key and no receiver.
    #[arg(long, group = "mode", help_heading = "Modes (default: run the agent)")]
    pub sysinfo: bool,

    /// Collect once and write one complete signed envelope, exactly as it
    /// would be sent, to FILE ("-" for standard output). Uses a tick.
    #[arg(
        long,
        value_name = "FILE",
        group = "mode",
        help_heading = "Modes (default: run the agent)"
    )]
    pub dump: Option<PathBuf>,

    /// Probe the WireGuard mesh (host addresses in peers' AllowedIPs, on
    /// --peer-port) and the --relay URLs for Kattila agents; print each one
    /// found with its path to the receiver.
    #[arg(long, group = "mode", help_heading = "Modes (default: run the agent)")]
    pub discover: bool,

    /// Collect, deliver (spooled reports first, oldest first) and exit.
    /// Exit status: 0 delivered (directly or through a relay), 2 refused by
    /// the receiver, 3 nothing reachable (the report was spooled), 1 error.
    #[arg(long, group = "mode", help_heading = "Modes (default: run the agent)")]
    pub once: bool,

    /// Print the effective configuration as JSON (secrets left out) and exit.
    #[arg(long, group = "mode", help_heading = "Modes (default: run the agent)")]
    pub show_config: bool,

    /// Benchmark: run N collect+sign cycles with a throwaway key and print
    /// the CPU time they took.
    #[arg(long, value_name = "N", group = "mode", hide = true)]
    pub bench_cycles: Option<u32>,

    /// Base URL of the receiver, e.g. https://kattila.example.com or
    /// http://10.0.0.1:5086.
    #[arg(long, env = "MANAGER_URL", value_name = "URL")]
    pub manager_url: Option<String>,

    /// DNS name whose TXT record holds the fleet key (refreshed every
    /// --key-refresh). The .env key DNS= means the same.
    #[arg(long, env = "KATTILA_DNS", value_name = "NAME")]
    pub dns: Option<String>,

    /// DNS server to ask for the key record (ADDR or ADDR:PORT); default:
    /// the system resolver.
    #[arg(long, env = "KATTILA_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<String>,

    /// File holding the fleet key (mode 600), instead of DNS. The key itself
    /// can also be given in the environment variable KATTILA_PSK, never on
    /// the command line.
    #[arg(long, env = "KATTILA_PSK_FILE", value_name = "FILE")]
    pub psk_file: Option<PathBuf>,

    /// How often to look up the DNS key record again.
    #[arg(long, env = "KATTILA_KEY_REFRESH", default_value = "1h", value_name = "DURATION")]
    pub key_refresh: String,

    /// Time between two reports (seconds, or a duration like 30s, 2m); each
    /// wait varies by ±10% so a fleet does not report in lockstep.
    #[arg(long, env = "KATTILA_INTERVAL", default_value = "30s", value_name = "DURATION")]
    pub interval: String,

    /// Timeout of one HTTP request to the receiver or a relay.
    #[arg(long, env = "KATTILA_TIMEOUT", default_value = "10s", value_name = "DURATION")]
    pub timeout: String,

    /// Direct attempts per delivery before trying relays; waits between
    /// attempts double (0.5 s, 1 s, 2 s … with jitter, at most a third of
    /// the interval).
    #[arg(long, env = "KATTILA_RETRIES", default_value_t = 3, value_name = "N")]
    pub retries: u32,

    /// Address of the agent's HTTP API (health, peer info, relay, reset);
    /// "off" disables it (and relaying for others).
    #[arg(long, env = "KATTILA_LISTEN", default_value = "0.0.0.0:5087", value_name = "ADDR")]
    pub listen: String,

    /// Port on which other agents of the mesh are probed.
    #[arg(long, env = "KATTILA_PEER_PORT", default_value_t = 5087, value_name = "PORT")]
    pub peer_port: u16,

    /// Base URL of an agent to consider as a relay, in addition to those
    /// discovered on the WireGuard mesh (repeat the flag, or separate URLs
    /// with commas in KATTILA_RELAYS). For meshes where probing cannot find
    /// agents, and for tests on one host.
    #[arg(long = "relay", env = "KATTILA_RELAYS", value_delimiter = ',', value_name = "URL")]
    pub relays: Vec<String>,

    /// Directory for the agent id, the tick counter and the spool.
    #[arg(
        long,
        env = "KATTILA_STATE_DIR",
        default_value = "/var/lib/kattila-agent",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// Largest total size of spooled reports (bytes; K, M, G suffixes);
    /// the oldest reports are dropped first.
    #[arg(long, env = "KATTILA_SPOOL_MAX_BYTES", default_value = "16M", value_name = "SIZE")]
    pub spool_max_bytes: String,

    /// Spooled reports older than this are dropped.
    #[arg(long, env = "KATTILA_SPOOL_MAX_AGE", default_value = "24h", value_name = "DURATION")]
    pub spool_max_age: String,

    /// The site this node belongs to, e.g. helsinki-dc1: sent in every
    /// report, and dashboards name the node's cluster by it. At most 64
    /// bytes, no control characters; unset (the default) sends none.
    #[arg(long, env = "KATTILA_SITE", value_name = "LABEL")]
    pub site: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub manager_url: Option<Url>,
    /// Where the key comes from; `None` when none is configured.
    pub key: Option<KeyConfig>,
    /// Human-readable key source ("KATTILA_PSK", "file …", "dns …").
    pub key_source: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub listen: Option<SocketAddr>,
    pub peer_port: u16,
    pub relays: Vec<Url>,
    pub state_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_max_age: Duration,
    /// The operator's site label for reports (`None`: not configured).
    pub site: Option<String>,
    /// `.env` files that were read.
    pub env_files: Vec<PathBuf>,
}

/// Parses "30", "0.5" (seconds) or a humantime duration ("30s", "2m", "1h").
pub fn parse_duration(what: &str, text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let d = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => bail!("{what}: {text:?} is not a valid duration"),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| anyhow::anyhow!("{what}: {text:?} is not a valid duration ({e})"))?,
    };
    Ok(d)
}

/// Parses "1048576", "512K", "16M", "1G".
pub fn parse_size(what: &str, text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (digits, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{what}: {text:?} is not a size (e.g. 16M)"))?;
    n.checked_mul(mult).with_context(|| format!("{what}: {text:?} is too large"))
}

fn parse_url(what: &str, text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{what}: {text:?} is not a URL ({e}); it must be an http:// or https:// URL"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("{what}: {text:?} must be an http:// or https:// URL with a host");
    }
    Ok(url)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Config {
    /// Validates `args`; `env_psk` is the value of `KATTILA_PSK`.
    pub fn from_args(
        args: &AgentArgs,
        env_psk: Option<&str>,
        env_files: Vec<PathBuf>,
    ) -> anyhow::Result<Config> {
        let manager_url = non_empty(&args.manager_url)
            .map(|u| parse_url("--manager-url (MANAGER_URL)", u))
            .transpose()?;
        let key_refresh = parse_duration("--key-refresh (KATTILA_KEY_REFRESH)", &args.key_refresh)?;
        anyhow::ensure!(key_refresh >= Duration::from_secs(1), "--key-refresh must be at least 1s");
        let interval = parse_duration("--interval (KATTILA_INTERVAL)", &args.interval)?;
        anyhow::ensure!(
            interval >= Duration::from_millis(50),
            "--interval (KATTILA_INTERVAL) must be at least 0.05 seconds"
        );
        let timeout = parse_duration("--timeout (KATTILA_TIMEOUT)", &args.timeout)?;
        anyhow::ensure!(
            timeout >= Duration::from_millis(100),
            "--timeout must be at least 0.1 seconds"
        );
        let listen = match args.listen.trim() {
            "off" | "none" | "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "--listen (KATTILA_LISTEN): {text:?} is not ADDRESS:PORT or \"off\""
                )
            })?),
        };
        let relays = args
            .relays
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|u| parse_url("--relay (KATTILA_RELAYS)", u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let spool_max_bytes =
            parse_size("--spool-max-bytes (KATTILA_SPOOL_MAX_BYTES)", &args.spool_max_bytes)?;
        let spool_max_age =
            parse_duration("--spool-max-age (KATTILA_SPOOL_MAX_AGE)", &args.spool_max_age)?;
        let site = non_empty(&args.site).map(parse_site).transpose()?;

        let env_psk = env_psk.filter(|v| !v.is_empty());
        let psk_file = args.psk_file.as_deref().filter(|p| !p.as_os_str().is_empty());
        let (key, key_source) = match (env_psk, psk_file, non_empty(&args.dns)) {
            (Some(_), Some(_), _) => {
                bail!("give either KATTILA_PSK or --psk-file (KATTILA_PSK_FILE), not both")
            }
            (Some(text), None, _) => {
                let psk = Psk::new(text).context("KATTILA_PSK is empty")?;
                (Some(KeyConfig::Fixed(psk)), "KATTILA_PSK".to_string())
            }
            (None, Some(path), _) => {
                let psk = kattila_keysource::read_key_file(path)?;
                (Some(KeyConfig::Fixed(psk)), format!("file {}", path.display()))
            }
            (None, None, Some(name)) => {
                let server = non_empty(&args.dns_server).map(parse_dns_server).transpose()?;
                let desc = match server {
                    Some(s) => format!("dns {name} via {s}"),
                    None => format!("dns {name}"),
                };
                let cfg = KeyConfig::Dns {
                    name: name.to_string(),
                    server,
                    refresh: key_refresh,
                    timeout: Duration::from_secs(5),
                };
                (Some(cfg), desc)
            }
            (None, None, None) => (None, "none".to_string()),
        };
        Ok(Config {
            manager_url,
            key,
            key_source,
            interval,
            timeout,
            retries: args.retries,
            listen,
            peer_port: args.peer_port,
            relays,
            state_dir: args.state_dir.clone(),
            spool_max_bytes,
            spool_max_age,
            site,
            env_files,
        })
    }

    /// The configuration as JSON, without secrets.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "manager_url": self.manager_url.as_ref().map(Url::as_str),
            "key_source": self.key_source,
            "interval_secs": self.interval.as_secs_f64(),
            "timeout_secs": self.timeout.as_secs_f64(),
            "retries": self.retries,
            "listen": self.listen.map(|a| a.to_string()),
            "peer_port": self.peer_port,
            "relays": self.relays.iter().map(Url::as_str).collect::<Vec<_>>(),
            "state_dir": self.state_dir,
            "spool_max_bytes": self.spool_max_bytes,
            "spool_max_age_secs": self.spool_max_age.as_secs(),
            "site": self.site,
            "env_files": self.env_files,
        })
    }

    /// Where fleet keys from DNS are kept across restarts (mode 0600), so a
    /// restarted agent signs and verifies relayed reports with the keys it
    /// had, even before DNS answers.
    pub fn key_state_path(&self) -> PathBuf {
        self.state_dir.join("fleet-keys")
    }

    /// A configuration for tests: no receiver, no key, state in `dir`.
    pub fn for_test(dir: &Path) -> Config {
        Config {
            manager_url: None,
            key: None,
            key_source: "none".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            retries: 1,
            listen: None,
            peer_port: 5087,
            relays: Vec::new(),
            state_dir: dir.to_path_buf(),
            spool_max_bytes: 1 << 20,
            spool_max_age: Duration::from_secs(86_400),
            site: None,
            env_files: Vec::new(),
        }
    }
}

/// A site label as reports carry it: the protocol's limits, checked here so
/// that a bad label stops the agent at start instead of every report being
/// refused by the receiver.
pub fn parse_site(text: &str) -> anyhow::Result<String> {
    kattila_proto::limits::check_site(text)
        .map_err(|e| anyhow::anyhow!("--site (KATTILA_SITE): {text:?}: {}", e.0))?;
    Ok(text.to_string())
}

fn parse_dns_server(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if text.contains(':') { text.to_string() } else { format!("{text}:53") };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("--dns-server (KATTILA_DNS_SERVER): {text:?} is not an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_syntax() {
        let text = "# comment\n\nDNS=kattila.example.com\nexport MANAGER_URL=\"http://10.0.0.1:5086\"\nKATTILA_INTERVAL=5s # fast\nX='a # b'\n";
        let pairs = parse_env_file(text, ".env").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("DNS".into(), "kattila.example.com".into()),
                ("MANAGER_URL".into(), "http://10.0.0.1:5086".into()),
                ("KATTILA_INTERVAL".into(), "5s".into()),
                ("X".into(), "a # b".into()),
            ]
        );
        let err = parse_env_file("A=1\nnot a pair\n", "f").unwrap_err();
        assert_eq!(err.to_string(), "f:2: expected KEY=VALUE");
        assert!(parse_env_file("A=\"open\n", "f").is_err());
    }

    #[test]
    fn environment_beats_files_and_first_file_beats_second() {
        let files: EnvFiles = vec![
            (PathBuf::from("./.env"), vec![("DNS".into(), "cwd.example".into())]),
            (
                PathBuf::from("/etc/kattila/agent.env"),
                vec![
                    ("KATTILA_DNS".into(), "etc.example".into()),
                    ("MANAGER_URL".into(), "http://etc:5086".into()),
                    ("KATTILA_INTERVL".into(), "5".into()),
                    ("MANAGER_DB".into(), "x".into()),
                ],
            ),
        ];
        let env = |k: &str| (k == "MANAGER_URL").then(|| "http://env:5086".to_string());
        let (add, warnings) = merge_env(&files, &env);
        assert_eq!(add.get("KATTILA_DNS").map(String::as_str), Some("cwd.example"));
        assert!(!add.contains_key("MANAGER_URL"));
        assert!(!add.contains_key("MANAGER_DB"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("KATTILA_INTERVL"));
        // The original DNS variable in the environment beats the files.
        let env = |k: &str| (k == "DNS").then(|| "env.example".to_string());
        let (add, _) = merge_env(&files, &env);
        assert_eq!(add.get("KATTILA_DNS").map(String::as_str), Some("env.example"));
    }

    #[test]
    fn site_labels() {
        assert_eq!(parse_site("helsinki-dc1").unwrap(), "helsinki-dc1");
        assert_eq!(parse_site("Tampere – Hervanta").unwrap(), "Tampere – Hervanta");
        let err = parse_site(&"x".repeat(65)).unwrap_err().to_string();
        assert!(err.contains("--site (KATTILA_SITE)") && err.contains("1-64 bytes"), "{err}");
        let err = parse_site("dc\u{1b}[31m1").unwrap_err().to_string();
        assert!(err.contains("control characters"), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("x", "30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("x", "0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "-1").is_err());
        assert!(parse_duration("x", "soon").is_err());
        assert_eq!(parse_size("x", "16M").unwrap(), 16 << 20);
        assert_eq!(parse_size("x", "100").unwrap(), 100);
        assert!(parse_size("x", "lots").is_err());
    }
}
