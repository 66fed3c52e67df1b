//! Compact history for sparklines: one sample per agent at most every
//! sample interval, rolled up to hourly means after a day and deleted after
//! the retention period.

use rusqlite::{params, Connection};

/// One history sample of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The report's collection time.
    pub ts: i64,
    pub load1: f64,
    /// Bytes/s over all non-loopback interfaces since the previous sample.
    pub rx_rate: Option<f64>,
    pub tx_rate: Option<f64>,
    /// Oldest handshake among the agent's peers, seconds.
    pub max_handshake_age: Option<i64>,
    pub peers_healthy: i64,
    pub peers_total: i64,
}

pub fn insert_sample(conn: &Connection, agent_id: &str, s: &Sample) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history (agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        agent_id,
        s.ts,
        s.load1,
        s.rx_rate,
        s.tx_rate,
        s.max_handshake_age,
        s.peers_healthy,
        s.peers_total
    ])?;
    Ok(())
}

/// Rolls samples older than a day into hourly means and drops samples
/// older than `delete_before`.
pub fn roll_up(conn: &Connection, now: i64, delete_before: i64) -> rusqlite::Result<()> {
    let day_ago = now - 86_400;
    conn.execute_batch(&format!(
        "INSERT OR REPLACE INTO history (agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total)
         SELECT agent_id, (ts / 3600) * 3600, avg(load1), avg(rx_rate), avg(tx_rate), max(max_handshake_age),
                min(peers_healthy), max(peers_total)
         FROM history WHERE ts < {day_ago} AND ts % 3600 != 0
         GROUP BY agent_id, ts / 3600;
         DELETE FROM history WHERE ts < {day_ago} AND ts % 3600 != 0;
         DELETE FROM history WHERE ts < {delete_before};"
    ))
}
