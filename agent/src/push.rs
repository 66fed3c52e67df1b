//! Sending envelopes to the receiver (or a relay) over HTTP(S).

use std::time::Duration;

use serde::Deserialize;

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
    /// Whether trying again later (or through another path) can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            PushError::Unreachable { .. } => true,
            PushError::Refused { status, .. } => *status == 503 || *status >= 500,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    detail: String,
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
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope)
            .send()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| PushError::Unreachable { url: url.to_string(), source })?;
        if status.is_success() {
            return Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
        }
        let (code, detail) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => (e.error, e.detail),
            Err(_) => {
                ("unknown".into(), String::from_utf8_lossy(&body).chars().take(200).collect())
            }
        };
        Err(PushError::Refused { url: url.to_string(), status: status.as_u16(), code, detail })
    }
}

/// The receiver's update endpoint under a base URL such as `http://host:5086`.
pub fn updates_url(base: &str) -> String {
    format!("{}/status/updates", base.trim_end_matches('/'))
}
