//! Reading request bodies under limits. A body is refused when it is larger
//! than the size limit, when it stops arriving (no bytes for the body
//! timeout), when it arrives slower than the minimum average rate, or when
//! the bodies being received together would use more memory than the
//! receiver's body budget. The budget is charged for the memory actually
//! allocated as bytes arrive, never for a length a client merely announces,
//! so a client that stalls holds only what it sent.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a body was not read. Every one of them leaves the rest of the body
/// unread, so the answer closes the connection (see [`crate::transport`]).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive in time ({received} bytes received)")]
    Timeout { received: usize },
    #[error("request bodies being received use the whole memory budget; retry later")]
    OverBudget,
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// Size and time limits for one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// Longest wait for the next bytes of a body (and for its first ones).
    pub timeout: Duration,
    /// Slowest accepted average rate in bytes per second, held all along:
    /// `timeout + N / min_rate` after its start, a body must have sent more
    /// than N bytes (so a body of N bytes is complete within that time).
    pub min_rate: u64,
}

/// Memory shared by all bodies being received; clones share it.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    capacity: usize,
}

impl BodyBudget {
    pub fn new(capacity: usize) -> BodyBudget {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        BodyBudget { bytes: Arc::new(Semaphore::new(capacity)), capacity }
    }

    /// Bytes currently held by bodies.
    pub fn in_use(&self) -> usize {
        self.capacity - self.bytes.available_permits()
    }

    /// Takes `n` more bytes for `held`, a body that will then hold `total`
    /// bytes, or fails at once when they are not free: waiting would let
    /// slow clients queue up memory and time. A body larger than
    /// [`SMALL_BODY`] may not take the last [`RESERVE_SHARE`] of the budget:
    /// that stays for bodies of an agent's size, so large bodies (which
    /// agents do not send) cannot crowd every report out.
    fn charge(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        n: usize,
        total: usize,
    ) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        let reserve = self.capacity / RESERVE_SHARE;
        if total > SMALL_BODY && self.bytes.available_permits() < n + reserve {
            return Err(BodyError::OverBudget);
        }
        let n = u32::try_from(n).map_err(|_| BodyError::OverBudget)?;
        let permit =
            self.bytes.clone().try_acquire_many_owned(n).map_err(|_| BodyError::OverBudget)?;
        match held {
            Some(p) => p.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// A complete body. Its bytes stay charged to the budget until this is
/// dropped, that is, until the request that read it has been answered.
#[derive(Debug)]
pub struct Body {
    pub bytes: Bytes,
    _charged: Option<OwnedSemaphorePermit>,
}

/// Reads `body` completely under `limits`, charging `budget`.
pub async fn read(
    body: axum::body::Body,
    headers: &HeaderMap,
    limits: &BodyLimits,
    budget: &BodyBudget,
) -> Result<Body, BodyError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Refuse an announced oversize before reading a byte; with
    // `Expect: 100-continue` the client then never sends the body.
    if announced.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyError::TooLarge { limit: limits.max_bytes });
    }
    let expected = announced.map_or(limits.max_bytes, |n| n as usize);
    let start = Instant::now();
    let min_rate = limits.min_rate.max(1) as f64;
    let rate_time = |bytes: usize| Duration::from_secs_f64((bytes as f64 / min_rate).min(1e6));
    let complete_by = start + limits.timeout + rate_time(expected);

    let mut body = body;
    // Bytes are copied out of hyper's frames at once (a kept frame would
    // pin hyper's whole read buffer) into chunks of at most CHUNK bytes,
    // each charged when it is allocated: what a body holds in the budget is
    // what it sent plus less than one chunk (and at most twice what it
    // sent), never a buffer sized by a length only announced.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut received = 0usize;
    let mut charged = None;
    loop {
        // The next bytes are due within the body timeout, and the body as a
        // whole must keep up the minimum average rate all along (not only
        // by its final deadline): holding a connection costs a client
        // `min_rate` bytes a second.
        let keep_up_by = start + limits.timeout + rate_time(received);
        let deadline = complete_by.min(keep_up_by).min(Instant::now() + limits.timeout);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout { received }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(error_chain(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing the receiver uses.
        let Ok(data) = frame.into_data() else { continue };
        if received + data.len() > limits.max_bytes {
            return Err(BodyError::TooLarge { limit: limits.max_bytes });
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let full = chunks.last().is_none_or(|c: &Vec<u8>| c.len() == c.capacity());
            if full {
                // A chunk holds at least the bytes in hand (a report in one
                // piece is one allocation) and grows with what arrived, so
                // a trickle needs few chunks; it never exceeds what arrived
                // so far, the announced rest, or CHUNK, so nothing is
                // allocated far ahead of the bytes.
                let in_hand = rest.len().min(CHUNK);
                let announced_rest = expected.saturating_sub(received);
                let size = received.min(announced_rest).min(CHUNK).max(in_hand);
                budget.charge(&mut charged, size, received + size)?;
                chunks.push(Vec::with_capacity(size));
            }
            let chunk = chunks.last_mut().expect("a chunk with room was just ensured");
            let n = rest.len().min(chunk.capacity() - chunk.len());
            chunk.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            received += n;
        }
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => Bytes::from(chunks.pop().expect("one chunk")),
        // Joined once the body is complete; the join lives as long as the
        // chunks would have, under the same charge.
        _ => Bytes::from(chunks.concat()),
    };
    Ok(Body { bytes, _charged: charged })
}

/// Largest piece of a body held in one allocation.
const CHUNK: usize = 16 * 1024;

/// Bodies up to this size (agents' reports are a few KB; a hub's tens of
/// KB) may use the whole budget; larger ones leave it a reserve.
const SMALL_BODY: usize = 64 * 1024;

/// The share of the budget (one in this many bytes) kept for small bodies.
const RESERVE_SHARE: usize = 8;

/// An error with its causes, for the `detail` of a 400 answer.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BodyLimits {
        BodyLimits { max_bytes: 64 * 1024, timeout: Duration::from_secs(5), min_rate: 1024 }
    }

    #[tokio::test]
    async fn reads_a_body_and_releases_its_budget_when_dropped() {
        let budget = BodyBudget::new(1 << 20);
        let body = read(axum::body::Body::from("hello"), &HeaderMap::new(), &limits(), &budget)
            .await
            .unwrap();
        assert_eq!(&body.bytes[..], b"hello");
        assert!(budget.in_use() >= 5);
        drop(body);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn refuses_an_oversized_body_and_an_exhausted_budget() {
        let budget = BodyBudget::new(1 << 20);
        let big = axum::body::Body::from(vec![b' '; 64 * 1024 + 1]);
        let e = read(big, &HeaderMap::new(), &limits(), &budget).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { limit: 65536 }), "{e}");
        assert_eq!(budget.in_use(), 0, "a refused body releases what it held");

        let small = BodyBudget::new(4096);
        let e =
            read(axum::body::Body::from(vec![b' '; 5000]), &HeaderMap::new(), &limits(), &small)
                .await
                .unwrap_err();
        assert!(matches!(e, BodyError::OverBudget), "{e}");
    }

    #[tokio::test]
    async fn large_bodies_leave_a_reserve_that_small_ones_may_use() {
        let budget = BodyBudget::new(1 << 20);
        let limits = BodyLimits { max_bytes: 1 << 20, ..limits() };
        let body = |n: usize| axum::body::Body::from(vec![b' '; n]);
        let held = read(body(800 * 1024), &HeaderMap::new(), &limits, &budget).await.unwrap();
        assert!(budget.in_use() < 800 * 1024 + CHUNK, "charged what arrived: {}", budget.in_use());
        // 224 KiB are left, but a large body may not eat into the last 128 KiB.
        let e = read(body(200 * 1024), &HeaderMap::new(), &limits, &budget).await.unwrap_err();
        assert!(matches!(e, BodyError::OverBudget), "{e}");
        // An agent-sized body may.
        let small = read(body(60 * 1024), &HeaderMap::new(), &limits, &budget).await.unwrap();
        assert_eq!(small.bytes.len(), 60 * 1024);
        drop((held, small));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn an_announced_oversize_is_refused_before_reading() {
        let budget = BodyBudget::new(1 << 20);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "999999999".parse().unwrap());
        let e = read(axum::body::Body::from("x"), &headers, &limits(), &budget).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { .. }), "{e}");
        assert_eq!(budget.in_use(), 0);
    }
}
