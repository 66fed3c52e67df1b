//! History samples for sparklines: at most one per agent per sample
//! interval (load, traffic rates, handshake ages). Storage rolls them up
//! and deletes them with age.

use kattila_proto::Report;
use kattila_store::history::Sample;

/// Totals behind an agent's last sample: (collection time, rx, tx).
pub type LastSample = (i64, u64, u64);

/// The sample this report makes, if the agent's last one is at least
/// `sample_secs` old; `peers_healthy` is the agent's healthy peers after
/// this report.
pub fn sample(
    last: &mut Option<LastSample>,
    r: &Report,
    peers_healthy: usize,
    sample_secs: i64,
    now: i64,
) -> Option<Sample> {
    let ts = r.observed_at;
    if last.is_some_and(|(at, _, _)| ts - at < sample_secs) {
        return None;
    }
    let (rx, tx) =
        r.interfaces.iter().filter(|i| i.kind != "loopback").fold((0u64, 0u64), |(rx, tx), i| {
            (rx.saturating_add(i.rx_bytes), tx.saturating_add(i.tx_bytes))
        });
    // Rates need a previous sample; a counter that went down (reboot) gives none.
    let (rx_rate, tx_rate) = match *last {
        Some((at, lrx, ltx)) if ts > at && rx >= lrx && tx >= ltx => {
            let dt = (ts - at) as f64;
            (Some((rx - lrx) as f64 / dt), Some((tx - ltx) as f64 / dt))
        }
        _ => (None, None),
    };
    let peers = r.wireguard.iter().flat_map(|d| &d.peers);
    let max_handshake_age =
        peers.clone().filter_map(|p| p.latest_handshake).map(|hs| (now - hs).max(0)).max();
    *last = Some((ts, rx, tx));
    Some(Sample {
        ts,
        load1: r.system.load[0],
        rx_rate,
        tx_rate,
        max_handshake_age,
        peers_healthy: peers_healthy as i64,
        peers_total: peers.count() as i64,
    })
}
