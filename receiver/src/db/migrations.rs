//! Numbered schema steps keyed on `PRAGMA user_version`. Append new steps;
//! never edit a released one.

use rusqlite::{Connection, TransactionBehavior};

const STEPS: &[&str] = &[
    // 1: agents, replay state, raw report audit.
    r#"
    CREATE TABLE agents (
        agent_id         TEXT PRIMARY KEY,
        hostname         TEXT NOT NULL,
        agent_version    TEXT NOT NULL,
        first_seen       INTEGER NOT NULL,  -- unix seconds, receiver clock
        last_seen        INTEGER NOT NULL,
        last_observed_at INTEGER,           -- collection time of the newest report
        last_tick        INTEGER NOT NULL,
        relay_hops       INTEGER NOT NULL DEFAULT 0,  -- of the newest message
        via_agent        TEXT               -- relay that delivered the newest message
    );
    -- Anti-replay: per agent the highest tick and the recent (tick, nonce) pairs.
    CREATE TABLE replay_state (
        agent_id     TEXT PRIMARY KEY,
        highest_tick INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE replay_seen (
        agent_id TEXT NOT NULL,
        tick     INTEGER NOT NULL,
        nonce    BLOB NOT NULL,
        PRIMARY KEY (agent_id, tick)
    ) WITHOUT ROWID;
    -- Audit copy of every accepted message, exactly as received.
    CREATE TABLE reports (
        id          INTEGER PRIMARY KEY,
        agent_id    TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,
        tick        INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        observed_at INTEGER,
        relay_path  TEXT,                   -- relays, nearest the origin first, space-separated
        raw         BLOB NOT NULL
    );
    CREATE INDEX reports_by_agent ON reports(agent_id, id);
    "#,
];

pub const LATEST: usize = STEPS.len();

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > LATEST {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this receiver ({LATEST}); upgrade kattila-receiver"
        )));
    }
    for (i, step) in STEPS.iter().enumerate().skip(current) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}
