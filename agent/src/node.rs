//! A running agent: identity, keys, spool, delivery (direct, then through
//! relays, then the spool), relaying for others, discovery of other agents.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use kattila_keysource::KeyRing;
use kattila_proto::limits::{check_agent_id, parse_cidr, MAX_BODY_BYTES, MAX_RELAYABLE_BYTES};
use kattila_proto::{
    signed_envelope, verify, Kind, Psk, Register, Relay, Report, VerifyError, VerifyOptions,
    MAX_RELAY_LAYERS,
};
use serde_json::{json, Value};

use crate::collect::Collector;
use crate::config::Config;
use crate::identity::{
    load_or_create_agent_id, new_agent_id, new_nonce, write_atomically, TickCounter,
};
use crate::push::{endpoint, Pusher};
use crate::report::{build_report, sign_report, Telemetry, AGENT_VERSION};
use crate::spool::{Spool, SpoolStats};
use crate::unix_now;

/// Most addresses probed when looking for relays.
pub const MAX_PROBES: usize = 256;

/// How this agent reaches the receiver, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathInfo {
    /// Nothing tried yet.
    #[default]
    Unknown,
    /// The receiver answered directly.
    Direct,
    /// Delivered through `hops` relays.
    Relay { hops: usize },
    /// Neither the receiver nor any relay could be reached.
    None,
}

impl PathInfo {
    pub fn to_json(self) -> Value {
        match self {
            PathInfo::Unknown => json!({"state": "unknown"}),
            PathInfo::Direct => json!({"state": "direct", "hops": 0}),
            PathInfo::Relay { hops } => json!({"state": "relay", "hops": hops}),
            PathInfo::None => json!({"state": "none"}),
        }
    }

    pub fn from_json(v: &Value) -> PathInfo {
        match v.get("state").and_then(Value::as_str) {
            Some("direct") => PathInfo::Direct,
            Some("relay") => match v.get("hops").and_then(Value::as_u64) {
                Some(h) => PathInfo::Relay { hops: h as usize },
                None => PathInfo::Unknown,
            },
            Some("none") => PathInfo::None,
            _ => PathInfo::Unknown,
        }
    }

    /// Relay hops between this agent and the receiver, when known.
    pub fn hops(self) -> Option<usize> {
        match self {
            PathInfo::Direct => Some(0),
            PathInfo::Relay { hops } => Some(hops),
            _ => None,
        }
    }

    /// Sort key: a direct path first, then fewer hops, unknown, none.
    fn rank(self) -> usize {
        match self {
            PathInfo::Direct => 0,
            PathInfo::Relay { hops } => hops,
            PathInfo::Unknown => 100,
            PathInfo::None => 101,
        }
    }

    pub fn describe(self) -> String {
        match self {
            PathInfo::Unknown => "unknown".into(),
            PathInfo::Direct => "direct".into(),
            PathInfo::Relay { hops } => {
                format!("via {hops} relay hop{}", if hops == 1 { "" } else { "s" })
            }
            PathInfo::None => "none".into(),
        }
    }
}

/// Another agent that answered a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub base: String,
    pub agent_id: String,
    pub path: PathInfo,
}

/// How delivering one message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed by the receiver, directly (`hops` 0) or through relays.
    Delivered { hops: usize },
    /// The receiver answered and refused it; trying again will not help.
    Refused { status: u16, code: String, detail: String },
    /// No receiver answer by any path.
    Undeliverable { reason: String },
}

/// What one path search produced.
#[derive(Debug)]
enum Routed {
    /// A final HTTP answer, from the receiver or through relays.
    Answer { status: u16, body: Vec<u8>, hops: usize },
    /// No final answer; the last refusal a relay passed back, if any.
    NoPath { last_answer: Option<(u16, Vec<u8>)>, reason: String },
}

/// Totals of one collection cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleSummary {
    pub fresh: Outcome,
    pub spooled_delivered: usize,
    pub spooled_refused: usize,
}

struct Ident {
    agent_id: String,
    ticks: TickCounter,
}

#[derive(Default)]
struct Observed {
    path: PathInfo,
    direct_failed_at: Option<Instant>,
    wg_keys: Vec<String>,
    mesh_hosts: Vec<IpAddr>,
}

/// The agent's shared state; one per process.
pub struct Node {
    pub config: Config,
    pub keys: KeyRing,
    ident: Mutex<Ident>,
    spool: Mutex<Spool>,
    observed: RwLock<Observed>,
    pusher: Pusher,
    prober: Pusher,
    candidates: tokio::sync::Mutex<Option<(Instant, Vec<Candidate>)>>,
    collector: tokio::sync::Mutex<Collector>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn error_body(code: &str, detail: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"error": code, "detail": detail})).expect("JSON")
}

/// The status and error code the protocol gives a verification failure.
pub fn verify_error_status(e: &VerifyError) -> (u16, &'static str) {
    (e.status(), e.code())
}

fn answer_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether a relay's answer means "this way does not lead to the
/// receiver" (try another way) rather than the receiver's verdict.
fn is_path_failure(status: u16, body: &[u8]) -> bool {
    if matches!(status, 502..=504) {
        return true;
    }
    matches!(
        answer_code(body).as_deref(),
        Some("no_path" | "relay_loop" | "too_many_relays" | "bad_mac" | "stale" | "no_key")
    )
}

/// Whether a refused report should stay in (or go to) the spool: refusals
/// for the key or the clock (401) and receiver trouble (5xx) can pass;
/// malformed reports (400, 413) never will.
pub fn keep_for_later(status: u16) -> bool {
    status == 401 || status >= 500
}

fn receiver_path(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "/status/register",
        _ => "/status/updates",
    }
}

/// Base URL of an agent at `ip`:`port`.
pub fn agent_base(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

impl Node {
    /// Opens the state directory (agent id, ticks, spool) for `config`.
    pub fn open(config: Config, keys: KeyRing) -> anyhow::Result<Node> {
        let dir = &config.state_dir;
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating state directory {} (set --state-dir or KATTILA_STATE_DIR)",
                dir.display()
            )
        })?;
        let agent_id = load_or_create_agent_id(&dir.join("agent_id"))?;
        let ticks = TickCounter::open(dir.join("tick"), 100)?;
        let spool = Spool::open(&dir.join("spool"), config.spool_max_bytes, config.spool_max_age)?;
        let pusher = Pusher::new(config.timeout)?;
        let prober = Pusher::new(config.timeout.min(Duration::from_secs(2)))?;
        Ok(Node {
            config,
            keys,
            ident: Mutex::new(Ident { agent_id, ticks }),
            spool: Mutex::new(spool),
            observed: RwLock::new(Observed::default()),
            pusher,
            prober,
            candidates: tokio::sync::Mutex::new(None),
            collector: tokio::sync::Mutex::new(Collector::default()),
        })
    }

    pub fn agent_id(&self) -> String {
        lock(&self.ident).agent_id.clone()
    }

    pub fn path(&self) -> PathInfo {
        self.observed.read().unwrap_or_else(|e| e.into_inner()).path
    }

    fn set_path(&self, path: PathInfo) {
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        if o.path != path {
            tracing::info!(path = %path.describe(), "path to the receiver changed");
        }
        o.path = path;
    }

    fn mark_direct(&self, ok: bool) {
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        o.direct_failed_at = if ok { None } else { Some(Instant::now()) };
    }

    fn direct_failed_recently(&self) -> bool {
        let o = self.observed.read().unwrap_or_else(|e| e.into_inner());
        o.direct_failed_at.is_some_and(|t| t.elapsed() < self.config.interval)
    }

    pub fn spool_stats(&self) -> SpoolStats {
        lock(&self.spool).stats()
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.config.state_dir.join(name)
    }

    /// Remembers what the last collection saw: this node's WireGuard keys
    /// and the host addresses of its peers (live peers first).
    pub fn observe(&self, t: &Telemetry) {
        let wg_keys = t.wireguard.iter().map(|d| d.public_key.clone()).collect();
        let hosts = mesh_hosts(t);
        let mut o = self.observed.write().unwrap_or_else(|e| e.into_inner());
        o.wg_keys = wg_keys;
        o.mesh_hosts = hosts;
    }

    /// `GET /status/peer`: who this agent is and how it reaches the receiver.
    pub fn peer_info(&self) -> Value {
        let o = self.observed.read().unwrap_or_else(|e| e.into_inner());
        json!({
            "agent_id": self.agent_id(),
            "agent_version": AGENT_VERSION,
            "wireguard_public_keys": o.wg_keys,
            "path": o.path.to_json(),
        })
    }

    /// `GET /status/healthcheck`.
    pub fn health(&self) -> Value {
        let key = self.keys.status();
        json!({
            "status": "ok",
            "agent_id": self.agent_id(),
            "agent_version": AGENT_VERSION,
            "path": self.path().to_json(),
            "spool": self.spool_stats(),
            "key": {"source": key.source, "keys": key.keys, "degraded": key.degraded()},
        })
    }

    fn next_tick(&self) -> anyhow::Result<u64> {
        lock(&self.ident).ticks.next_tick()
    }

    /// Collects and builds this cycle's unsigned report.
    pub async fn collect_report(&self) -> Report {
        let telemetry = self.collector.lock().await.collect().await;
        self.observe(&telemetry);
        build_report(&self.agent_id(), unix_now(), telemetry)
    }

    /// Signs `report` for sending now, carrying the spool's dropped count.
    pub fn sign(&self, report: &mut Report, psk: &Psk) -> anyhow::Result<Vec<u8>> {
        report.spool_dropped = lock(&self.spool).dropped();
        let mut ident = lock(&self.ident);
        sign_report(report, psk, &mut ident.ticks, unix_now())
    }

    // ---- discovery -------------------------------------------------------

    /// Agents that answer on the mesh or at the configured relay URLs,
    /// best path first, never this agent itself. Cached for one interval
    /// unless `refresh`.
    pub async fn candidates(&self, refresh: bool) -> Vec<Candidate> {
        let mut cache = self.candidates.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if !refresh && at.elapsed() < self.config.interval {
                return list.clone();
            }
        }
        let list = self.probe().await;
        *cache = Some((Instant::now(), list.clone()));
        list
    }

    async fn probe(&self) -> Vec<Candidate> {
        let hosts = self.observed.read().unwrap_or_else(|e| e.into_inner()).mesh_hosts.clone();
        let targets = targets(&self.config, &hosts);
        probe(&self.prober, targets, Some(&self.agent_id())).await
    }

    // ---- delivery --------------------------------------------------------

    fn backoff(&self, attempt: u32) -> Duration {
        let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(10));
        let cap = (self.config.interval / 3).max(Duration::from_millis(50));
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        base.min(cap).mul_f64(jitter)
    }

    /// Finds a way for `envelope`: the receiver (`attempts` tries with
    /// backoff, unless `try_direct` is false), then each relay candidate not
    /// in `chain`.
    async fn route(
        &self,
        kind: Kind,
        envelope: Vec<u8>,
        chain: &[String],
        try_direct: bool,
        attempts: u32,
    ) -> Routed {
        let mut reason = match (try_direct, &self.config.manager_url) {
            (_, None) => String::from("no receiver URL configured"),
            (false, Some(_)) => String::from("the receiver did not answer shortly before"),
            (true, Some(_)) => String::new(),
        };
        if let (true, Some(url)) = (try_direct, &self.config.manager_url) {
            let target = endpoint(url.as_str(), receiver_path(kind));
            for attempt in 0..attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(self.backoff(attempt - 1)).await;
                }
                match self.pusher.post_raw(&target, envelope.clone()).await {
                    Ok((status, body)) if status < 500 => {
                        self.mark_direct(true);
                        return Routed::Answer { status, body, hops: 0 };
                    }
                    Ok((status, body)) => {
                        let code = answer_code(&body).unwrap_or_default();
                        reason = format!("receiver answered HTTP {status} {code}");
                    }
                    Err(e) => reason = format!("{e}"),
                }
            }
            self.mark_direct(false);
        }
        let mut last_answer = None;
        let candidates = self.candidates(try_direct).await;
        if candidates.is_empty() {
            reason.push_str("; no relay found");
        }
        for c in candidates.iter().filter(|c| !chain.contains(&c.agent_id)) {
            let url = endpoint(&c.base, "/status/relay");
            match self.pusher.post_raw(&url, envelope.clone()).await {
                Ok((status, body)) if is_path_failure(status, &body) => {
                    let code = answer_code(&body).unwrap_or_default();
                    reason = format!("relay {} answered HTTP {status} {code}", c.base);
                    last_answer = Some((status, body));
                }
                Ok((status, body)) => {
                    let hops = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("relay_hops").and_then(Value::as_u64))
                        .map(|h| h as usize)
                        .unwrap_or(1 + c.path.hops().unwrap_or(0));
                    return Routed::Answer { status, body, hops };
                }
                Err(e) => reason = format!("relay {}: {e}", c.base),
            }
        }
        Routed::NoPath { last_answer, reason }
    }

    /// Delivers an envelope of this agent's own; updates the path state.
    /// `try_direct` false skips the receiver (it just failed this cycle).
    async fn deliver_envelope(&self, kind: Kind, envelope: Vec<u8>, try_direct: bool) -> Outcome {
        let routed = self.route(kind, envelope, &[], try_direct, self.config.retries).await;
        let outcome = match routed {
            Routed::Answer { status, body, hops } => {
                self.set_path(if hops == 0 { PathInfo::Direct } else { PathInfo::Relay { hops } });
                let code = answer_code(&body);
                if (200..300).contains(&status)
                    || (status == 409 && code.as_deref() == Some("replay"))
                {
                    // A replay refusal of a tick this agent used once means
                    // an earlier attempt was committed after all.
                    Outcome::Delivered { hops }
                } else {
                    if code.as_deref() == Some("bad_mac") {
                        // The receiver may have a rotated key this agent
                        // has not fetched yet: look it up again soon.
                        self.keys.request_refresh();
                    }
                    let detail = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_default();
                    Outcome::Refused {
                        status,
                        code: code.unwrap_or_else(|| "unknown".into()),
                        detail,
                    }
                }
            }
            Routed::NoPath { last_answer, reason } => {
                self.set_path(PathInfo::None);
                let reason = match last_answer {
                    Some((status, body)) => format!(
                        "{reason} (last answer HTTP {status} {})",
                        answer_code(&body).unwrap_or_default()
                    ),
                    None => reason,
                };
                Outcome::Undeliverable { reason }
            }
        };
        outcome
    }

    /// Signs and delivers one report.
    /// `try_direct` false goes straight to the relays (the receiver did
    /// not answer earlier in this cycle).
    pub async fn deliver_report(
        &self,
        report: &mut Report,
        psk: &Psk,
        try_direct: bool,
    ) -> anyhow::Result<Outcome> {
        let envelope = self.sign(report, psk)?;
        let carried = report.spool_dropped;
        let outcome = self.deliver_envelope(Kind::Report, envelope, try_direct).await;
        if matches!(outcome, Outcome::Delivered { .. }) {
            lock(&self.spool).ack_dropped(carried)?;
        }
        Ok(outcome)
    }

    /// Delivers what waits in the spool (oldest first), then `fresh`; what
    /// cannot be delivered goes (back) to the spool.
    pub async fn deliver_all(&self, mut fresh: Report) -> anyhow::Result<CycleSummary> {
        let mut summary = CycleSummary {
            fresh: Outcome::Undeliverable { reason: String::new() },
            spooled_delivered: 0,
            spooled_refused: 0,
        };
        let Some(psk) = self.keys.current() else {
            lock(&self.spool).push(&fresh, unix_now())?;
            summary.fresh = Outcome::Undeliverable { reason: "no fleet key yet".into() };
            return Ok(summary);
        };
        // Once the receiver failed to answer directly, the rest of this
        // cycle's reports go straight to the relay that worked.
        let mut try_direct = true;
        loop {
            let next = lock(&self.spool).oldest(unix_now())?;
            let Some((name, mut report)) = next else { break };
            match self.deliver_report(&mut report, &psk, try_direct).await? {
                Outcome::Delivered { hops } => {
                    try_direct &= hops == 0;
                    lock(&self.spool).remove(&name)?;
                    summary.spooled_delivered += 1;
                }
                Outcome::Refused { status, code, detail } if !keep_for_later(status) => {
                    tracing::warn!(status, %code, %detail, observed_at = report.observed_at, "spooled report refused; dropped");
                    lock(&self.spool).remove(&name)?;
                    summary.spooled_refused += 1;
                }
                outcome => {
                    // Unreachable, or refused for a reason that can pass
                    // (key rotation, clock, receiver trouble): keep it all.
                    lock(&self.spool).push(&fresh, unix_now())?;
                    summary.fresh = outcome;
                    return Ok(summary);
                }
            }
        }
        summary.fresh = self.deliver_report(&mut fresh, &psk, try_direct).await?;
        let keep = match &summary.fresh {
            Outcome::Delivered { .. } => false,
            Outcome::Refused { status, .. } => keep_for_later(*status),
            Outcome::Undeliverable { .. } => true,
        };
        if keep {
            lock(&self.spool).push(&fresh, unix_now())?;
        }
        Ok(summary)
    }

    /// Registers once per agent id (best effort; retried next cycle).
    pub async fn register_if_needed(&self, hostname: &str) -> anyhow::Result<()> {
        let marker = self.state_file("registered");
        let agent_id = self.agent_id();
        if std::fs::read_to_string(&marker).is_ok_and(|t| t.trim() == agent_id) {
            return Ok(());
        }
        let Some(psk) = self.keys.current() else { return Ok(()) };
        let register = Register {
            kind: Kind::Register,
            agent_id: agent_id.clone(),
            timestamp: unix_now(),
            nonce: new_nonce(),
            tick: self.next_tick()?,
            hostname: hostname.to_string(),
            agent_version: AGENT_VERSION.to_string(),
        };
        let envelope = signed_envelope(&psk, &register);
        match self.deliver_envelope(Kind::Register, envelope, true).await {
            Outcome::Delivered { .. } => write_atomically(&marker, agent_id.as_bytes())?,
            other => tracing::debug!(?other, "register not delivered; will retry"),
        }
        Ok(())
    }

    /// One cycle: register if needed, collect, deliver.
    pub async fn cycle(&self) -> anyhow::Result<CycleSummary> {
        let report = self.collect_report().await;
        self.register_if_needed(&report.hostname).await?;
        self.deliver_all(report).await
    }

    // ---- serving other agents -------------------------------------------

    /// `POST /status/relay`: verify, wrap, forward; the answer that came
    /// back (status, JSON body) is returned unchanged.
    pub async fn handle_relay(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let now = unix_now();
        let verified = match self.keys.with(|k| verify(body, k, VerifyOptions::at(now))) {
            Ok(v) => v,
            Err(e) => {
                let (status, code) = verify_error_status(&e);
                tracing::info!(status, code, "relay request refused");
                return (status, error_body(code, &e.to_string()));
            }
        };
        let own = self.agent_id();
        if verified.layers.iter().any(|l| l.agent_id == own) {
            tracing::info!(origin = %verified.origin().agent_id, "relay loop dropped");
            return (400, error_body("relay_loop", "this agent is already in the relay chain"));
        }
        if verified.relay_hops() >= MAX_RELAY_LAYERS {
            return (
                400,
                error_body("too_many_relays", &format!("already {MAX_RELAY_LAYERS} relay layers")),
            );
        }
        let Some(psk) = self.keys.current() else {
            return (503, error_body("no_key", "no fleet key yet"));
        };
        let text = std::str::from_utf8(body).expect("verified as UTF-8").trim().to_string();
        let inner = match serde_json::value::RawValue::from_string(text) {
            Ok(raw) => raw,
            Err(e) => return (400, error_body("bad_json", &e.to_string())),
        };
        let tick = match self.next_tick() {
            Ok(t) => t,
            Err(e) => return (500, error_body("internal", &format!("{e:#}"))),
        };
        let nonce = new_nonce();
        let data = Relay {
            kind: Kind::Relay,
            agent_id: &own,
            timestamp: now,
            nonce: &nonce,
            tick,
            inner: &inner,
        };
        let wrapped = signed_envelope(&psk, &data);
        if wrapped.len() > MAX_BODY_BYTES {
            // The receiver (or the next relay) would refuse it as too large:
            // say so here rather than send a megabyte to be refused.
            tracing::info!(origin = %verified.origin().agent_id, size = wrapped.len(), "relay refused: too large with this layer");
            return (
                413,
                error_body(
                    "too_large",
                    &format!(
                        "with this relay's layer the envelope would be {} bytes, over the limit of \
                         {MAX_BODY_BYTES}; envelopes that may be relayed should stay within \
                         {MAX_RELAYABLE_BYTES} bytes",
                        wrapped.len()
                    ),
                ),
            );
        }
        let mut chain: Vec<String> = verified.layers.iter().map(|l| l.agent_id.clone()).collect();
        chain.push(own);
        let kind = verified.message.kind();
        let try_direct = !self.direct_failed_recently();
        let origin = verified.origin().agent_id.clone();
        match self.route(kind, wrapped, &chain, try_direct, 1).await {
            Routed::Answer { status, body, hops } => {
                tracing::info!(%origin, status, hops, "relayed");
                (status, body)
            }
            Routed::NoPath { last_answer: Some(answer), reason } => {
                tracing::info!(%origin, %reason, "relay found no path");
                answer
            }
            Routed::NoPath { last_answer: None, reason } => {
                tracing::info!(%origin, %reason, "relay found no path");
                (
                    502,
                    error_body(
                        "no_path",
                        &format!("this relay cannot reach the receiver: {reason}"),
                    ),
                )
            }
        }
    }

    /// `POST /status/reset`: a signed request naming this agent makes it
    /// take a new agent id and forget its spool.
    pub fn handle_reset(&self, body: &[u8]) -> (u16, Value) {
        let own = self.agent_id();
        match crate::reset::check(body, &self.keys, &own, unix_now()) {
            Ok(()) => {}
            Err((status, code, detail)) => {
                return (status, json!({"error": code, "detail": detail}));
            }
        }
        match self.reset() {
            Ok(new_id) => {
                tracing::warn!(old = %own, new = %new_id, "agent reset by signed request");
                (200, json!({"status": "ok", "agent_id": new_id}))
            }
            Err(e) => (500, json!({"error": "internal", "detail": format!("{e:#}")})),
        }
    }

    /// New agent id, empty spool, path unknown. Ticks keep increasing.
    pub fn reset(&self) -> anyhow::Result<String> {
        let new_id = new_agent_id();
        {
            let mut ident = lock(&self.ident);
            write_atomically(&self.state_file("agent_id"), format!("{new_id}\n").as_bytes())?;
            ident.agent_id = new_id.clone();
        }
        lock(&self.spool).clear()?;
        let _ = std::fs::remove_file(self.state_file("registered"));
        self.set_path(PathInfo::Unknown);
        Ok(new_id)
    }
}

/// Host addresses (/32, /128) in the AllowedIPs of WireGuard peers, peers
/// with the most recent handshake first.
pub fn mesh_hosts(t: &Telemetry) -> Vec<IpAddr> {
    let mut peers: Vec<(i64, IpAddr)> = Vec::new();
    for dev in &t.wireguard {
        for peer in &dev.peers {
            for allowed in &peer.allowed_ips {
                if let Some((ip, prefix)) = parse_cidr(allowed) {
                    let host = if ip.is_ipv4() { 32 } else { 128 };
                    if prefix == host && !ip.is_unspecified() {
                        peers.push((peer.latest_handshake.unwrap_or(0), ip));
                    }
                }
            }
        }
    }
    peers.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut hosts: Vec<IpAddr> = Vec::new();
    for (_, ip) in peers {
        if !hosts.contains(&ip) {
            hosts.push(ip);
        }
    }
    hosts
}

/// Base URLs to probe: the configured relays, then the mesh hosts on the
/// peer port; at most [`MAX_PROBES`].
pub fn targets(config: &Config, hosts: &[IpAddr]) -> Vec<String> {
    let mut targets: Vec<String> =
        config.relays.iter().map(|u| u.as_str().trim_end_matches('/').to_string()).collect();
    for &ip in hosts {
        let base = agent_base(ip, config.peer_port);
        if !targets.contains(&base) {
            targets.push(base);
        }
    }
    targets.truncate(MAX_PROBES);
    targets
}

/// What `--discover` probes for a given collection.
pub fn probe_targets(config: &Config, t: &Telemetry) -> Vec<String> {
    targets(config, &mesh_hosts(t))
}

/// Asks every target's `GET /status/peer` at once; returns the agents that
/// answered (not `own`), best path first.
pub async fn probe(prober: &Pusher, targets: Vec<String>, own: Option<&str>) -> Vec<Candidate> {
    let mut set = tokio::task::JoinSet::new();
    for base in targets {
        let prober = prober.clone();
        set.spawn(async move {
            let info = prober.get_json(&endpoint(&base, "/status/peer")).await.ok()?;
            let agent_id = info.get("agent_id")?.as_str()?.to_string();
            check_agent_id(&agent_id).ok()?;
            let path = PathInfo::from_json(info.get("path").unwrap_or(&Value::Null));
            Some(Candidate { base, agent_id, path })
        });
    }
    let mut found: Vec<Candidate> = Vec::new();
    while let Some(res) = set.join_next().await {
        if let Ok(Some(c)) = res {
            if Some(c.agent_id.as_str()) != own && !found.iter().any(|f| f.agent_id == c.agent_id) {
                found.push(c);
            }
        }
    }
    found.sort_by(|a, b| a.path.rank().cmp(&b.path.rank()).then_with(|| a.base.cmp(&b.base)));
    found
}
