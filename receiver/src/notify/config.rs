//! The notification configuration file (TOML): channels, routes, noise
//! control, delivery, maintenance windows and silences. Parsed and checked
//! whole before use, so a bad file is refused with the line it is wrong at
//! and the configuration in use stays as it was. Secrets come from
//! environment variables or files and are never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A secret value; `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A duration written as humantime ("30s", "5m", "4h", "1d").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn secs(self) -> i64 {
        self.0.as_secs() as i64
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"30s\" or \"4h\": {e}"))
        })
    }
}

/// An IANA time zone ("Europe/Helsinki", "UTC").
#[derive(Debug, Clone)]
pub struct Zone(pub jiff::tz::TimeZone);

impl Default for Zone {
    fn default() -> Self {
        Zone(jiff::tz::TimeZone::UTC)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        jiff::tz::TimeZone::get(&s)
            .map(Zone)
            .map_err(|_| serde::de::Error::custom(format!("unknown time zone {s:?}")))
    }
}

/// A silence matcher: `label=value`, `label!=value`, `label=~regex` or
/// `label!~regex`, on the labels kind, severity, agent, host and site.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub negate: bool,
    test: MatchTest,
    /// As written, for listing.
    pub text: String,
}

#[derive(Debug, Clone)]
enum MatchTest {
    Equal(String),
    Regex(regex::Regex),
}

pub const LABELS: [&str; 5] = ["kind", "severity", "agent", "host", "site"];

impl Matcher {
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let (at, op) = ["!~", "=~", "!=", "="]
            .iter()
            .filter_map(|op| text.find(op).map(|at| (at, *op)))
            .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())))
            .ok_or_else(|| format!("matcher {text:?} has no =, !=, =~ or !~"))?;
        let label = text[..at].trim().to_string();
        let value = text[at + op.len()..].trim().trim_matches('"').to_string();
        if !LABELS.contains(&label.as_str()) {
            return Err(format!(
                "matcher {text:?}: unknown label {label:?} (one of {})",
                LABELS.join(", ")
            ));
        }
        let test = if op.ends_with('~') {
            MatchTest::Regex(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher {text:?}: bad regex: {e}"))?,
            )
        } else {
            MatchTest::Equal(value)
        };
        Ok(Matcher { label, negate: op.starts_with('!'), test, text: text.to_string() })
    }

    /// Whether `labels` match; a label with several values (an incident's
    /// agents) matches when one of them does.
    pub fn matches(&self, labels: &Labels) -> bool {
        let values = labels.values(&self.label);
        let hit = values.iter().any(|v| match &self.test {
            MatchTest::Equal(want) => v == want,
            MatchTest::Regex(re) => re.is_match(v),
        });
        hit != self.negate
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What routes, windows and silences match an alarm or incident by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    pub kind: String,
    pub severity: String,
    pub agents: Vec<String>,
    pub hosts: Vec<String>,
    pub site: String,
}

impl Labels {
    fn values(&self, label: &str) -> Vec<&str> {
        match label {
            "kind" => vec![self.kind.as_str()],
            "severity" => vec![self.severity.as_str()],
            "agent" => self.agents.iter().map(String::as_str).collect(),
            "host" => self.hosts.iter().map(String::as_str).collect(),
            "site" => vec![self.site.as_str()],
            _ => Vec::new(),
        }
    }
}

/// How many messages a channel may send per period ("30/min").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The least time between two messages.
    pub fn spacing(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parse = || -> Option<RateLimit> {
            let (n, per) = s.split_once('/')?;
            let per = match per.trim() {
                "s" | "sec" | "second" => Duration::from_secs(1),
                "m" | "min" | "minute" => Duration::from_secs(60),
                "h" | "hour" => Duration::from_secs(3600),
                other => humantime::parse_duration(other).ok()?,
            };
            let count: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
            Some(RateLimit { count, per })
        };
        parse().ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a rate like \"30/min\" or \"5/10s\""))
        })
    }
}

/// One channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    topic: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    private: bool,
    rate_limit: Option<RateLimit>,
    timeout: Option<Dur>,
}

/// How an e-mail channel talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a server on this machine.
    None,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Webhook { url: String, secret: Option<Secret> },
    Slack { url: Secret },
    Ntfy { url: String, topic: String, token: Option<Secret> },
    Email(EmailChannel),
}

#[derive(Debug, Clone)]
pub struct EmailChannel {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// Whether messages may carry raw addresses (else they never do).
    pub private: bool,
    pub rate_limit: Option<RateLimit>,
    pub timeout: Duration,
}

impl Channel {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Email(_) => "email",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    severity: Vec<String>,
    #[serde(default)]
    kind: Vec<String>,
    #[serde(default)]
    site: Vec<String>,
    #[serde(default)]
    agent: Vec<String>,
    channels: Vec<Spanned<String>>,
    repeat_interval: Option<Dur>,
    send_resolved: Option<bool>,
    #[serde(default, rename = "continue")]
    continue_: bool,
}

/// A route: what it matches (empty lists match anything) and where it sends.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub severity: Vec<String>,
    pub kind: Vec<String>,
    pub site: Vec<String>,
    /// Agent ids or hostnames.
    pub agent: Vec<String>,
    pub channels: Vec<String>,
    /// `None`: no repeats.
    pub repeat_interval: Option<Duration>,
    pub send_resolved: bool,
    /// Go on to the next routes after this one matched.
    pub continue_: bool,
}

impl Route {
    fn matches(&self, l: &Labels) -> bool {
        let any = |want: &[String], have: &str| want.is_empty() || want.iter().any(|w| w == have);
        any(&self.severity, &l.severity)
            && any(&self.kind, &l.kind)
            && any(&self.site, &l.site)
            && (self.agent.is_empty()
                || l.agents.iter().chain(&l.hosts).any(|a| self.agent.contains(a)))
    }
}

/// Alarm and incident kinds that follow WireGuard handshakes and link
/// health. A handshake is due every two minutes on a link that carries
/// traffic (REKEY_AFTER_TIME, 120 s) and keys are refused after three
/// (REJECT_AFTER_TIME, 180 s), so these conditions come and go with that
/// cadence on a link that is merely idle or lossy; they get the link holds.
pub const LINK_KINDS: [&str; 4] = ["peer_stale", "interface_down", "relay_only", "links_stale"];

/// Every alarm and incident kind, for checking `[noise.kind.*]` names.
fn known_kinds() -> Vec<&'static str> {
    use crate::process::{alarms::AlarmKind, incidents};
    let mut kinds: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
    kinds.extend([incidents::SITE_SILENT, incidents::GATEWAY_DOWN, incidents::LINKS_STALE]);
    kinds
}

/// Noise control: how long a condition must hold or stay gone before it
/// is told, and the least time between two messages about one subject.
/// Kinds in [`LINK_KINDS`] take the `link_*` holds, any kind may be set on
/// its own under `[noise.kind.<kind>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Noise {
    /// An alarm is told once active this long (its flap suppression
    /// already held it for the alarm threshold's reports).
    pub raise_hold: Dur,
    /// Alarms of the kinds incidents group (agent_silent, relay_only,
    /// peer_stale) and incidents wait at least this long, so that what
    /// belongs to one incident goes out as that incident, once.
    pub group_wait: Dur,
    /// A resolve is told once the condition stayed gone this long; a
    /// condition back within it continues the story it was told in.
    pub resolve_hold: Dur,
    /// The least time between two messages about one subject.
    pub min_gap: Dur,
    /// `raise_hold` for the link kinds: longer than the handshake cadence,
    /// so a link that flaps with it is never told.
    pub link_raise_hold: Dur,
    /// `resolve_hold` for the link kinds: a link told down is told up
    /// once it stayed up through more than one handshake round.
    pub link_resolve_hold: Dur,
    /// Per kind: any of `raise_hold`, `resolve_hold`, `min_gap`.
    pub kind: BTreeMap<String, KindNoise>,
}

/// Noise control for one kind; what is unset comes from `[noise]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindNoise {
    pub raise_hold: Option<Dur>,
    pub resolve_hold: Option<Dur>,
    pub min_gap: Option<Dur>,
}

/// The holds that apply to one kind, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holds {
    pub raise: i64,
    pub resolve: i64,
    pub min_gap: i64,
}

impl Noise {
    /// The holds for alarms or incidents of `kind`.
    pub fn holds(&self, kind: &str) -> Holds {
        let link = LINK_KINDS.contains(&kind);
        let (raise, resolve) = if link {
            (self.link_raise_hold, self.link_resolve_hold)
        } else {
            (self.raise_hold, self.resolve_hold)
        };
        let own = self.kind.get(kind);
        Holds {
            raise: own.and_then(|k| k.raise_hold).unwrap_or(raise).secs(),
            resolve: own.and_then(|k| k.resolve_hold).unwrap_or(resolve).secs(),
            min_gap: own.and_then(|k| k.min_gap).unwrap_or(self.min_gap).secs(),
        }
    }

    /// The longest time a told subject's state must be kept for.
    pub fn longest(&self) -> i64 {
        let mut longest = [self.min_gap, self.resolve_hold, self.link_resolve_hold]
            .into_iter()
            .map(Dur::secs)
            .max()
            .unwrap_or(0);
        for k in self.kind.values() {
            for d in [k.resolve_hold, k.min_gap].into_iter().flatten() {
                longest = longest.max(d.secs());
            }
        }
        longest
    }
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            raise_hold: Dur(Duration::ZERO),
            group_wait: Dur(Duration::from_secs(30)),
            resolve_hold: Dur(Duration::from_secs(60)),
            min_gap: Dur(Duration::from_secs(60)),
            link_raise_hold: Dur(Duration::from_secs(150)),
            link_resolve_hold: Dur(Duration::from_secs(180)),
            kind: BTreeMap::new(),
        }
    }
}

/// How the delivery worker retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Per attempt, unless a channel sets its own.
    pub timeout: Dur,
    /// Attempts before a message is dead-lettered.
    pub max_tries: u32,
    /// First retry after about this long, doubling each time…
    pub retry_base: Dur,
    /// … up to this.
    pub retry_max: Dur,
    /// Messages being sent at once per channel.
    pub concurrency: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout: Dur(Duration::from_secs(10)),
            max_tries: 12,
            retry_base: Dur(Duration::from_secs(2)),
            retry_max: Dur(Duration::from_secs(600)),
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: String,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    sites: Vec<String>,
    start: Option<String>,
    end: Option<String>,
    every: Option<String>,
    #[serde(default)]
    days: Vec<String>,
    at: Option<String>,
    duration: Option<Dur>,
    #[serde(default)]
    time_zone: Option<String>,
}

/// When a maintenance window is open.
#[derive(Debug, Clone)]
pub enum When {
    Once {
        start: i64,
        end: i64,
    },
    /// Every day (or the given weekdays) from `at` for `duration`, local time.
    Recurring {
        days: Vec<jiff::civil::Weekday>,
        at: jiff::civil::Time,
        duration: i64,
    },
}

/// A maintenance window for agents, sites, or (neither given) the fleet.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub agents: Vec<String>,
    pub sites: Vec<String>,
    pub when: When,
    pub zone: Zone,
    /// The admin API's id; `None` for the file's.
    pub id: Option<i64>,
}

impl Window {
    /// Parses the JSON form the admin API takes and stores (the file's
    /// fields).
    pub fn from_json(value: &serde_json::Value, id: Option<i64>) -> anyhow::Result<Window> {
        let raw: RawWindow = serde_json::from_value(value.clone())?;
        let mut w = window(raw).map_err(anyhow::Error::msg)?;
        w.id = id;
        Ok(w)
    }

    /// Whether the window is open at `now` (Unix seconds).
    pub fn open_at(&self, now: i64) -> bool {
        match &self.when {
            When::Once { start, end } => (*start..*end).contains(&now),
            When::Recurring { days, at, duration } => {
                let Ok(ts) = jiff::Timestamp::from_second(now) else { return false };
                let today = ts.to_zoned_datetime(self.zone.0.clone()).date();
                // A window opened up to a week ago may still be open.
                (0..=7).any(|back| {
                    let Ok(date) = today.checked_sub(jiff::Span::new().days(back)) else {
                        return false;
                    };
                    if !days.is_empty() && !days.contains(&date.weekday()) {
                        return false;
                    }
                    let Ok(start) = date.to_datetime(*at).to_zoned_datetime(self.zone.0.clone())
                    else {
                        return false;
                    };
                    let start = start.timestamp().as_second();
                    (start..start + duration).contains(&now)
                })
            }
        }
    }

    /// Whether the window is about what `labels` name.
    pub fn covers(&self, labels: &Labels) -> bool {
        (self.agents.is_empty() && self.sites.is_empty())
            || self.sites.contains(&labels.site)
            || labels.agents.iter().chain(&labels.hosts).any(|a| self.agents.contains(a))
    }
}

fn weekday(s: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => return None,
    })
}

/// A local time in `zone` ("2025-06-01T02:00") or an instant with an
/// offset ("2025-06-01T02:00:00Z"), as Unix seconds.
fn instant(s: &str, zone: &jiff::tz::TimeZone) -> Result<i64, String> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    let dt: jiff::civil::DateTime =
        s.parse().map_err(|e| format!("{s:?} is not a time like 2025-06-01T02:00: {e}"))?;
    dt.to_zoned_datetime(zone.clone())
        .map(|z| z.timestamp().as_second())
        .map_err(|e| format!("{s:?} in this time zone: {e}"))
}

fn window(raw: RawWindow) -> Result<Window, String> {
    let zone = match &raw.time_zone {
        Some(name) => jiff::tz::TimeZone::get(name)
            .map_err(|_| format!("window {:?}: unknown time zone {name:?}", raw.name))?,
        None => jiff::tz::TimeZone::UTC,
    };
    let name = raw.name.clone();
    let when = match (&raw.start, &raw.end, &raw.every) {
        (Some(start), Some(end), None) => {
            let (start, end) = (instant(start, &zone)?, instant(end, &zone)?);
            if end <= start {
                return Err(format!("window {name:?}: end is not after start"));
            }
            When::Once { start, end }
        }
        (None, None, Some(every)) => {
            let days = match every.as_str() {
                "day" => Vec::new(),
                "week" => {
                    let days = raw
                        .days
                        .iter()
                        .map(|d| {
                            weekday(d)
                                .ok_or_else(|| format!("window {name:?}: {d:?} is not a weekday"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if days.is_empty() {
                        return Err(format!(
                            "window {name:?}: every = \"week\" needs days = [\"sat\", …]"
                        ));
                    }
                    days
                }
                other => {
                    return Err(format!(
                        "window {name:?}: every must be \"day\" or \"week\", not {other:?}"
                    ))
                }
            };
            let at: jiff::civil::Time = raw
                .at
                .as_deref()
                .ok_or_else(|| format!("window {name:?}: a recurring window needs at = \"HH:MM\""))?
                .parse()
                .map_err(|e| format!("window {name:?}: at: {e}"))?;
            let duration = raw
                .duration
                .ok_or_else(|| format!("window {name:?}: a recurring window needs duration"))?
                .secs();
            if !(60..=7 * 86_400).contains(&duration) {
                return Err(format!("window {name:?}: duration must be between 1m and 7d"));
            }
            When::Recurring { days, at, duration }
        }
        _ => {
            return Err(format!(
                "window {name:?}: give either start and end, or every, at and duration"
            ))
        }
    };
    Ok(Window { name, agents: raw.agents, sites: raw.sites, when, zone: Zone(zone), id: None })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    matchers: Vec<Matcher>,
    starts_at: Option<String>,
    ends_at: String,
    comment: String,
    #[serde(default)]
    created_by: Option<String>,
}

/// A silence (Alertmanager's model): every matcher must match.
#[derive(Debug, Clone)]
pub struct Silence {
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    pub id: Option<i64>,
}

impl Silence {
    pub fn active_at(&self, now: i64) -> bool {
        (self.starts_at..self.ends_at).contains(&now)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// A silence stored by the admin API; `None` when its matchers no
    /// longer parse.
    pub fn from_row(row: &kattila_store::notify::SilenceRow) -> Option<Silence> {
        Some(Silence {
            matchers: row.matchers.iter().map(|m| Matcher::parse(m).ok()).collect::<Option<_>>()?,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            comment: row.comment.clone(),
            id: Some(row.id),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    public_url: Option<String>,
    #[serde(default)]
    noise: Noise,
    #[serde(default)]
    delivery: Delivery,
    #[serde(default)]
    channels: BTreeMap<String, Spanned<RawChannel>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    default_route: Option<Spanned<RawRoute>>,
    #[serde(default)]
    windows: Vec<Spanned<RawWindow>>,
    #[serde(default)]
    silences: Vec<Spanned<RawSilence>>,
}

/// The whole notification configuration, checked.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// The published dashboard, for links in messages.
    pub public_url: Option<String>,
    pub noise: Noise,
    pub delivery: Delivery,
    pub channels: BTreeMap<String, Channel>,
    pub routes: Vec<Route>,
    pub default_route: Option<Route>,
    pub windows: Vec<Window>,
    pub silences: Vec<Silence>,
}

impl NotifyConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<NotifyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading notification configuration {}", path.display()))?;
        NotifyConfig::parse(&text, &|k| std::env::var(k).ok())
            .with_context(|| format!("in {}", path.display()))
    }

    /// Parses `text`; `env` looks up environment variables (for secrets).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<NotifyConfig> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let mut channels = BTreeMap::new();
        for (name, spanned) in raw.channels {
            let line = at(spanned.span());
            anyhow::ensure!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "line {line}: channel name {name:?}: use letters, digits, - and _"
            );
            let c = channel(&name, spanned.into_inner(), raw.delivery.timeout.0, env)
                .map_err(|e| anyhow::anyhow!("line {line}: channel {name:?}: {e}"))?;
            channels.insert(name, c);
        }
        let route = |r: Spanned<RawRoute>| -> anyhow::Result<Route> {
            let line = at(r.span());
            let r = r.into_inner();
            for c in &r.channels {
                anyhow::ensure!(
                    channels.contains_key(c.get_ref()),
                    "line {}: route names channel {:?}, which is not defined",
                    at(c.span()),
                    c.get_ref()
                );
            }
            for s in &r.severity {
                anyhow::ensure!(
                    ["critical", "warning", "info"].contains(&s.as_str()),
                    "line {line}: severity {s:?} is not critical, warning or info"
                );
            }
            Ok(Route {
                severity: r.severity,
                kind: r.kind,
                site: r.site,
                agent: r.agent,
                channels: r.channels.into_iter().map(Spanned::into_inner).collect(),
                repeat_interval: r.repeat_interval.map(|d| d.0).filter(|d| !d.is_zero()),
                send_resolved: r.send_resolved.unwrap_or(true),
                continue_: r.continue_,
            })
        };
        let routes = raw.routes.into_iter().map(route).collect::<anyhow::Result<Vec<_>>>()?;
        let default_route = raw.default_route.map(route).transpose()?;
        let windows = raw
            .windows
            .into_iter()
            .map(|w| {
                let line = at(w.span());
                window(w.into_inner()).map_err(|e| anyhow::anyhow!("line {line}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let silences = raw
            .silences
            .into_iter()
            .map(|s| {
                let line = at(s.span());
                let s = s.into_inner();
                let zone = jiff::tz::TimeZone::UTC;
                let ends_at =
                    instant(&s.ends_at, &zone).map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
                let starts_at = match &s.starts_at {
                    Some(t) => {
                        instant(t, &zone).map_err(|e| anyhow::anyhow!("line {line}: {e}"))?
                    }
                    None => i64::MIN,
                };
                anyhow::ensure!(!s.matchers.is_empty(), "line {line}: a silence needs matchers");
                let _ = s.created_by;
                Ok(Silence {
                    matchers: s.matchers,
                    starts_at,
                    ends_at,
                    comment: s.comment,
                    id: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for k in raw.noise.kind.keys() {
            anyhow::ensure!(
                known_kinds().contains(&k.as_str()),
                "[noise.kind.{k}]: no such kind (kinds: {})",
                known_kinds().join(", ")
            );
        }
        anyhow::ensure!(raw.delivery.max_tries >= 1, "delivery.max_tries must be at least 1");
        anyhow::ensure!(raw.delivery.concurrency >= 1, "delivery.concurrency must be at least 1");
        if let Some(url) = &raw.public_url {
            reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("public_url {url:?}: {e}"))?;
        }
        Ok(NotifyConfig {
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
            noise: raw.noise,
            delivery: raw.delivery,
            channels,
            routes,
            default_route,
            windows,
            silences,
        })
    }

    /// The routes an alarm or incident with `labels` takes: in order, the
    /// first match and those after it while `continue` is set; the default
    /// route when none matches.
    pub fn routes_for(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        for r in &self.routes {
            if r.matches(labels) {
                out.push(r);
                if !r.continue_ {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.extend(self.default_route.as_ref());
        }
        out
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A secret from an environment variable or a file (trimmed); errors name
/// the variable or file, never the value.
fn secret(
    what: &str,
    env_name: Option<&String>,
    file: Option<&PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    match (env_name, file) {
        (Some(_), Some(_)) => Err(format!("give {what}_env or {what}_file, not both")),
        (Some(name), None) => env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Some(Secret(v.trim().to_string())))
            .ok_or_else(|| format!("{what}_env: environment variable {name} is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| Some(Secret(v.trim().to_string())))
            .map_err(|e| format!("{what}_file {}: {e}", path.display())),
        (None, None) => Ok(None),
    }
}

fn channel(
    name: &str,
    raw: RawChannel,
    default_timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Channel, String> {
    let need = |v: Option<String>, field: &str| v.ok_or_else(|| format!("needs {field}"));
    let check_url =
        |u: &str| reqwest::Url::parse(u).map(|_| ()).map_err(|e| format!("url {u:?}: {e}"));
    let kind = match raw.kind.get_ref().as_str() {
        "webhook" => {
            let url = need(raw.url.clone(), "url")?;
            check_url(&url)?;
            let secret = secret("secret", raw.secret_env.as_ref(), raw.secret_file.as_ref(), env)?;
            ChannelKind::Webhook { url, secret }
        }
        "slack" | "mattermost" => {
            // The incoming-webhook URL is itself the secret.
            let url = match (
                &raw.url,
                secret("url", raw.url_env.as_ref(), raw.url_file.as_ref(), env)?,
            ) {
                (Some(u), None) => Secret(u.clone()),
                (None, Some(s)) => s,
                _ => return Err("needs one of url, url_env, url_file".into()),
            };
            reqwest::Url::parse(&url.0)
                .map_err(|_| "the webhook URL does not parse".to_string())?;
            ChannelKind::Slack { url }
        }
        "ntfy" => {
            let url = raw.url.clone().unwrap_or_else(|| "https://ntfy.sh".into());
            check_url(&url)?;
            let topic = need(raw.topic.clone(), "topic")?;
            let token = secret("secret", raw.secret_env.as_ref(), raw.secret_file.as_ref(), env)?;
            ChannelKind::Ntfy { url: url.trim_end_matches('/').to_string(), topic, token }
        }
        "email" => {
            let tls = match raw.tls.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpTls::StartTls,
                "tls" => SmtpTls::Tls,
                "none" => SmtpTls::None,
                other => return Err(format!("tls must be starttls, tls or none, not {other:?}")),
            };
            let password =
                secret("secret", raw.secret_env.as_ref(), raw.secret_file.as_ref(), env)?;
            if password.is_some() != raw.username.is_some() {
                return Err("give username and secret_env/secret_file together".into());
            }
            let from = need(raw.from.clone(), "from")?;
            for a in std::iter::once(&from).chain(&raw.to) {
                a.parse::<lettre::message::Mailbox>().map_err(|e| format!("address {a:?}: {e}"))?;
            }
            if raw.to.is_empty() {
                return Err("needs to = [\"…\"]".into());
            }
            ChannelKind::Email(EmailChannel {
                host: need(raw.host.clone(), "host")?,
                port: raw.port.unwrap_or(match tls {
                    SmtpTls::Tls => 465,
                    _ => 587,
                }),
                tls,
                ca_file: raw.ca_file.clone(),
                username: raw.username.clone(),
                password,
                from,
                to: raw.to.clone(),
            })
        }
        other => return Err(format!("type must be webhook, slack, ntfy or email, not {other:?}")),
    };
    Ok(Channel {
        name: name.to_string(),
        kind,
        private: raw.private,
        rate_limit: raw.rate_limit,
        timeout: raw.timeout.map(|d| d.0).unwrap_or(default_timeout),
    })
}
