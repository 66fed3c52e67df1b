//! Delivery: getting this agent's own messages (register, reports) to the
//! receiver — directly with retries and backoff, else through the relays
//! that discovery found, else into the spool until a path returns. What is
//! kept for later and what is dropped is [`crate::retry`]'s decision.

use std::time::Duration;

use kattila_proto::{signed_envelope, Accepted, Kind, PathInfo, Psk, Refusal, Register, Report};

use super::{lock, Node};
use crate::identity::{new_nonce, write_atomically};
use crate::push::endpoint;
use crate::report::AGENT_VERSION;
use crate::retry::keep_for_later;
use crate::unix_now;

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

/// Totals of one collection cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleSummary {
    pub fresh: Outcome,
    pub spooled_delivered: usize,
    pub spooled_refused: usize,
}

/// What one path search produced.
#[derive(Debug)]
pub(super) enum Routed {
    /// A final HTTP answer, from the receiver or through relays.
    Answer { status: u16, body: Vec<u8>, hops: usize },
    /// No final answer; the last refusal a relay passed back, if any.
    NoPath { last_answer: Option<(u16, Vec<u8>)>, reason: String },
}

/// The error code of a refusal in `body`, if it is one.
fn answer_code(body: &[u8]) -> Option<String> {
    Refusal::read(body).map(|r| r.error)
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

fn receiver_path(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "/status/register",
        _ => "/status/updates",
    }
}

impl Node {
    fn backoff(&self, attempt: u32) -> Duration {
        let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(10));
        let cap = (self.config.interval / 3).max(Duration::from_millis(50));
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        base.min(cap).mul_f64(jitter)
    }

    /// Finds a way for `envelope`: the receiver (`attempts` tries with
    /// backoff, unless `try_direct` is false), then each relay candidate not
    /// in `chain`. Relaying for other agents goes the same way.
    pub(super) async fn route(
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
                    // The receiver counted the hops; a refusal does not say.
                    let hops = serde_json::from_slice::<Accepted>(&body)
                        .map(|a| a.relay_hops)
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
        match routed {
            Routed::Answer { status, body, hops } => {
                self.set_path(if hops == 0 { PathInfo::Direct } else { PathInfo::Relay { hops } });
                let refusal = Refusal::read(&body);
                let code = refusal.as_ref().map(|r| r.error.as_str());
                if (200..300).contains(&status) || (status == 409 && code == Some("replay")) {
                    // A replay refusal of a tick this agent used once means
                    // an earlier attempt was committed after all.
                    Outcome::Delivered { hops }
                } else {
                    if code == Some("bad_mac") {
                        // The receiver may have a rotated key this agent
                        // has not fetched yet: look it up again soon.
                        self.keys.request_refresh();
                    }
                    let Refusal { error, detail } =
                        refusal.unwrap_or_else(|| Refusal::new("unknown", ""));
                    Outcome::Refused { status, code: error, detail }
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
        }
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
}
