//! Collects what one node sees: system facts from `/proc`, links, addresses
//! and routes over rtnetlink, WireGuard devices over wireguard-control. Never
//! by running and parsing other programs. A failing source is recorded in
//! [`Telemetry::errors`] and the rest is still reported.

pub mod netlink;
pub mod system;
pub mod wireguard;

use kattila_proto::limits::{MAX_ERRORS, MAX_ERROR_MESSAGE, MAX_SHORT_STRING};
use kattila_proto::model::CollectError;

use crate::report::Telemetry;

/// Collects one cycle after another, keeping what can be reused between
/// cycles (the netlink socket).
#[derive(Default)]
pub struct Collector {
    netlink: netlink::Netlink,
}

impl Collector {
    /// One collection cycle. Never fails: problems end up in `errors`.
    pub async fn collect(&mut self) -> Telemetry {
        let mut errors = Vec::new();
        let (hostname, system) = match system::collect() {
            Ok(s) => s,
            Err(e) => {
                errors.push(error("system", &format!("{e:#}")));
                (String::from("unknown"), Default::default())
            }
        };
        let (interfaces, routes) = match self.netlink.collect().await {
            Ok(view) => {
                for p in &view.problems {
                    errors.push(error("netlink", p));
                }
                (view.interfaces, view.routes)
            }
            Err(e) => {
                errors.push(error("netlink", &format!("{e:#}")));
                (Vec::new(), Vec::new())
            }
        };
        let links = interfaces.iter().map(|i| (i.name.clone(), i.kind.clone())).collect();
        let wg = wireguard::collect(links).await;
        for p in &wg.problems {
            errors.push(error("wireguard", p));
        }
        errors.truncate(MAX_ERRORS);
        Telemetry { hostname, system, interfaces, routes, wireguard: wg.devices, errors }
    }
}

/// One collection cycle on its own (one-shot commands).
pub async fn collect() -> Telemetry {
    Collector::default().collect().await
}

fn error(source: &str, message: &str) -> CollectError {
    CollectError {
        source: truncate(source, MAX_SHORT_STRING),
        message: truncate(message, MAX_ERROR_MESSAGE),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }

    #[tokio::test]
    async fn a_cycle_on_this_host_passes_the_protocol_limits() {
        let mut collector = Collector::default();
        for _ in 0..2 {
            // The second cycle reuses the first one's netlink socket.
            let t = collector.collect().await;
            assert!(!t.interfaces.is_empty(), "{:?}", t.errors);
            let report = crate::report::build_report("test", 1, t);
            kattila_proto::limits::check_report(&report).unwrap();
        }
    }
}
