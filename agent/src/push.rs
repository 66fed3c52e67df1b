//! Sending envelopes to the receiver (or a relay) over HTTP(S).

use std::time::Duration;

use kattila_proto::Refusal;
use serde::de::DeserializeOwned;

use crate::retry::Verdict;

/// How a push ended when the receiver answered.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No answer: connection refused, timeout, DNS failure…
    #[error("could not reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The receiver answered and refused the message.
    #[error("{url} refused the message: HTTP {status} {code}: {detail}")]
    Refused { url: String, status: u16, code: String, detail: String },
}

impl PushError {
    /// What becomes of the message, by the one retry policy ([`Verdict`]).
    pub fn verdict(&self) -> Verdict {
        match self {
            PushError::Unreachable { .. } => Verdict::Unavailable,
            PushError::Refused { status, .. } => Verdict::of_status(*status),
        }
    }

    /// Whether the receiver could not take the message for now (no answer,
    /// 5xx): trying again later or through another path can help.
    pub fn is_retryable(&self) -> bool {
        self.verdict() == Verdict::Unavailable
    }
}

/// A reusable HTTP client for pushes.
#[derive(Debug, Clone)]
pub struct Pusher {
    client: reqwest::Client,
}

impl Pusher {
    pub fn new(timeout: Duration) -> anyhow::Result<Pusher> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("kattila-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Pusher { client })
    }

    /// POSTs `envelope` to `url`. `Ok` only for a 2xx answer, which the
    /// receiver sends after committing the message.
    pub async fn post(&self, url: &str, envelope: Vec<u8>) -> Result<serde_json::Value, PushError> {
        let (status, body) = self.post_raw(url, envelope).await?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
        }
        Err(refusal(url, status, &body))
    }

    /// POSTs `envelope` to `url` and returns whatever HTTP answer came back.
    pub async fn post_raw(
        &self,
        url: &str,
        envelope: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), PushError> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope)
            .send()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        Ok((status, body.to_vec()))
    }

    /// GETs `url` and parses the JSON answer of a 2xx response.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, PushError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        if !(200..300).contains(&status) {
            return Err(refusal(url, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| PushError::Refused {
            url: url.to_string(),
            status,
            code: "bad_json".into(),
            detail: e.to_string(),
        })
    }
}

/// The refusal described by a non-2xx answer.
pub fn refusal(url: &str, status: u16, body: &[u8]) -> PushError {
    let (code, detail) = match Refusal::read(body) {
        Some(e) => (e.error, e.detail),
        None => ("unknown".into(), String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    PushError::Refused { url: url.to_string(), status, code, detail }
}

/// The receiver's update endpoint under a base URL such as `http://host:5086`.
pub fn updates_url(base: &str) -> String {
    endpoint(base, "/status/updates")
}

/// `path` under a base URL, without doubling the slash.
pub fn endpoint(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}
