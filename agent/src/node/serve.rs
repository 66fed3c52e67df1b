//! Serving other agents and administrators: who this agent is
//! (`GET /status/peer`, `GET /status/healthcheck`), relaying another
//! agent's envelope one layer further (`POST /status/relay`: verify every
//! layer, add this agent's, forward by the delivery paths) and signed
//! resets (`POST /status/reset`). Refusals are [`ApiError`]s.

use kattila_proto::limits::MAX_BODY_BYTES;
use kattila_proto::reply::{AgentHealth, KeyInfo, ResetDone, StatusOk};
use kattila_proto::{
    relay_envelope, verify, verify_reset, PeerInfo, VerifyOptions, MAX_RELAY_LAYERS,
};

use super::delivery::Routed;
use super::Node;
use crate::error::ApiError;
use crate::identity::new_nonce;
use crate::report::AGENT_VERSION;
use crate::unix_now;

impl Node {
    /// `GET /status/peer`: who this agent is and how it reaches the receiver.
    pub fn peer_info(&self) -> PeerInfo {
        let o = self.observed.read().unwrap_or_else(|e| e.into_inner());
        PeerInfo {
            agent_id: self.agent_id(),
            agent_version: AGENT_VERSION.to_string(),
            path: o.path,
            wireguard_public_keys: o.wg_keys.clone(),
        }
    }

    /// `GET /status/healthcheck`.
    pub fn health(&self) -> AgentHealth {
        let key = self.keys.status();
        AgentHealth {
            agent_id: self.agent_id(),
            agent_version: AGENT_VERSION.to_string(),
            key: KeyInfo { degraded: key.degraded(), keys: key.keys, source: key.source.into() },
            path: self.path(),
            spool: self.spool_stats(),
            status: StatusOk,
        }
    }

    /// `POST /status/relay`: verify, wrap, forward; the answer that came
    /// back (status, JSON body) is returned unchanged.
    pub async fn handle_relay(&self, body: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
        let now = unix_now();
        let verified =
            self.keys.with(|k| verify(body, k, VerifyOptions::at(now))).inspect_err(|e| {
                tracing::info!(status = e.status(), code = e.code(), "relay request refused");
            })?;
        let own = self.agent_id();
        if verified.layers.iter().any(|l| l.agent_id == own) {
            tracing::info!(origin = %verified.origin().agent_id, "relay loop dropped");
            return Err(ApiError::InChain);
        }
        if verified.relay_hops() >= MAX_RELAY_LAYERS {
            return Err(ApiError::NoRoomForLayer);
        }
        let Some(psk) = self.keys.current() else {
            return Err(kattila_proto::VerifyError::NoKey.into());
        };
        let tick = self.next_tick().map_err(ApiError::Internal)?;
        let wrapped = relay_envelope(&psk, &own, now, &new_nonce(), tick, body)?;
        if wrapped.len() > MAX_BODY_BYTES {
            // The receiver (or the next relay) would refuse it as too large:
            // say so here rather than send a megabyte to be refused.
            tracing::info!(origin = %verified.origin().agent_id, size = wrapped.len(), "relay refused: too large with this layer");
            return Err(ApiError::TooLargeWithLayer { size: wrapped.len() });
        }
        let mut chain: Vec<String> = verified.layers.iter().map(|l| l.agent_id.clone()).collect();
        chain.push(own);
        let kind = verified.message.kind();
        let try_direct = !self.direct_failed_recently();
        let origin = verified.origin().agent_id.clone();
        match self.route(kind, wrapped, &chain, try_direct, 1).await {
            Routed::Answer { status, body, hops } => {
                tracing::info!(%origin, status, hops, "relayed");
                Ok((status, body))
            }
            Routed::NoPath { last_answer: Some(answer), reason } => {
                tracing::info!(%origin, %reason, "relay found no path");
                Ok(answer)
            }
            Routed::NoPath { last_answer: None, reason } => {
                tracing::info!(%origin, %reason, "relay found no path");
                Err(ApiError::NoPath(reason))
            }
        }
    }

    /// `POST /status/reset`: a signed request naming this agent makes it
    /// take a new agent id and forget its spool.
    pub fn handle_reset(&self, body: &[u8]) -> Result<ResetDone, ApiError> {
        let own = self.agent_id();
        self.keys.with(|k| verify_reset(body, k, &own, unix_now()))?;
        let new_id = self.reset().map_err(ApiError::Internal)?;
        tracing::warn!(old = %own, new = %new_id, "agent reset by signed request");
        Ok(ResetDone::new(new_id))
    }
}
