//! Compact history for sparklines: at most one sample per agent per sample
//! interval (load, traffic rates, handshake ages), rolled up to hourly means
//! after a day and deleted after the retention period.

use kattila_proto::Report;
use rusqlite::{params, Connection};

use super::{AgentCache, Settings};

/// Writes a sample if the agent's last one is at least `sample_secs` old.
pub(super) fn maybe_sample(
    conn: &Connection,
    agent_id: &str,
    cache: &mut AgentCache,
    r: &Report,
    s: &Settings,
    now: i64,
) -> rusqlite::Result<bool> {
    let ts = r.observed_at;
    if cache.last_sample.is_some_and(|(last, _, _)| ts - last < s.sample_secs) {
        return Ok(false);
    }
    let (rx, tx) =
        r.interfaces.iter().filter(|i| i.kind != "loopback").fold((0u64, 0u64), |(rx, tx), i| {
            (rx.saturating_add(i.rx_bytes), tx.saturating_add(i.tx_bytes))
        });
    // Rates need a previous sample; a counter that went down (reboot) gives none.
    let (rx_rate, tx_rate) = match cache.last_sample {
        Some((last, lrx, ltx)) if ts > last && rx >= lrx && tx >= ltx => {
            let dt = (ts - last) as f64;
            (Some((rx - lrx) as f64 / dt), Some((tx - ltx) as f64 / dt))
        }
        _ => (None, None),
    };
    let peers: Vec<_> = r.wireguard.iter().flat_map(|d| &d.peers).collect();
    let max_age = peers.iter().filter_map(|p| p.latest_handshake).map(|hs| (now - hs).max(0)).max();
    let healthy = cache.peers.values().flatten().filter(|(_, p)| p.health == "healthy").count();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history (agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![agent_id, ts, r.system.load[0], rx_rate, tx_rate, max_age, healthy as i64, peers.len() as i64])?;
    cache.last_sample = Some((ts, rx, tx));
    Ok(true)
}

/// Rolls samples older than a day into hourly means and drops samples older
/// than the retention period.
pub(super) fn roll_up(conn: &Connection, now: i64, retention: i64) -> rusqlite::Result<()> {
    let day_ago = now - 86_400;
    conn.execute_batch(&format!(
        "INSERT OR REPLACE INTO history (agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total)
         SELECT agent_id, (ts / 3600) * 3600, avg(load1), avg(rx_rate), avg(tx_rate), max(max_handshake_age),
                min(peers_healthy), max(peers_total)
         FROM history WHERE ts < {day_ago} AND ts % 3600 != 0
         GROUP BY agent_id, ts / 3600;
         DELETE FROM history WHERE ts < {day_ago} AND ts % 3600 != 0;
         DELETE FROM history WHERE ts < {};",
        now - retention
    ))
}
