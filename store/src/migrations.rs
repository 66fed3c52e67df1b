//! Numbered schema steps keyed on `PRAGMA user_version`. Append new steps;
//! never edit a released one. Readers of older databases check the
//! version constants below before reading what a step added.

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
    // 2: current state, topology, alarms and history. Snapshot tables hold
    // what each agent reported last; history keeps compact samples.
    r#"
    ALTER TABLE agents ADD COLUMN kernel TEXT;
    ALTER TABLE agents ADD COLUMN uptime_secs INTEGER;
    ALTER TABLE agents ADD COLUMN load1 REAL;
    ALTER TABLE agents ADD COLUMN load5 REAL;
    ALTER TABLE agents ADD COLUMN load15 REAL;
    ALTER TABLE agents ADD COLUMN spool_dropped INTEGER NOT NULL DEFAULT 0;
    -- JSON array of {source, message}: telemetry sources that failed last time.
    ALTER TABLE agents ADD COLUMN collect_errors TEXT NOT NULL DEFAULT '[]';
    -- 'direct' or 'relay' (reached only through relays in the newest report).
    ALTER TABLE agents ADD COLUMN reachability TEXT NOT NULL DEFAULT 'direct';
    ALTER TABLE agents ADD COLUMN reports INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE interfaces (
        agent_id   TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        state      TEXT NOT NULL,
        mtu        INTEGER NOT NULL,
        mac        TEXT,
        addresses  TEXT NOT NULL,           -- JSON array of "addr/prefix"
        rx_bytes   INTEGER NOT NULL,
        tx_bytes   INTEGER NOT NULL,
        rx_errors  INTEGER NOT NULL,
        tx_errors  INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        PRIMARY KEY (agent_id, name)
    ) WITHOUT ROWID;

    CREATE TABLE routes (
        agent_id TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        dst      TEXT NOT NULL,
        gateway  TEXT,
        dev      TEXT,
        metric   INTEGER,
        table_id INTEGER NOT NULL
    );
    CREATE INDEX routes_by_agent ON routes(agent_id);

    CREATE TABLE wg_devices (
        agent_id    TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        listen_port INTEGER,
        PRIMARY KEY (agent_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX wg_devices_by_key ON wg_devices(public_key);

    CREATE TABLE wg_peers (
        agent_id             TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        device               TEXT NOT NULL,
        public_key           TEXT NOT NULL,
        peer_agent_id        TEXT,          -- the agent owning public_key, NULL = external peer
        endpoint             TEXT,
        allowed_ips          TEXT NOT NULL, -- JSON array of "addr/prefix"
        latest_handshake     INTEGER,       -- unix seconds, NULL = never
        rx_bytes             INTEGER NOT NULL,
        tx_bytes             INTEGER NOT NULL,
        persistent_keepalive INTEGER,
        rx_grew_at           INTEGER,       -- last report in which rx_bytes increased
        health               TEXT NOT NULL, -- 'healthy' | 'stale' | 'never'
        first_seen           INTEGER NOT NULL,
        last_seen            INTEGER NOT NULL,
        PRIMARY KEY (agent_id, device, public_key)
    ) WITHOUT ROWID;
    CREATE INDEX wg_peers_by_key ON wg_peers(public_key);

    -- Inferred links. Agent-to-agent edges are stored once with a_agent < b_agent.
    -- kind 'wireguard': external peers have b_agent '' and b_external = their public key.
    -- kind 'relay': a relayed for b (direction: a_agent delivered b_agent's reports).
    -- kind 'physical': both agents have an address in the same subnet (detail = subnet).
    CREATE TABLE topology_edges (
        id             INTEGER PRIMARY KEY,
        kind           TEXT NOT NULL CHECK (kind IN ('wireguard', 'relay', 'physical')),
        a_agent        TEXT NOT NULL,
        b_agent        TEXT NOT NULL DEFAULT '', -- '' for an external peer
        b_external     TEXT NOT NULL DEFAULT '', -- external peer's public key, else ''
        both_ends      INTEGER NOT NULL DEFAULT 0, -- wireguard: both agents list each other
        health         TEXT NOT NULL,              -- 'healthy' | 'stale' | 'down' | 'unknown'
        handshake_age  INTEGER,                    -- seconds, newest handshake of either end
        detail         TEXT,
        first_seen     INTEGER NOT NULL,
        last_seen      INTEGER NOT NULL,
        UNIQUE (kind, a_agent, b_agent, b_external)
    );
    CREATE INDEX edges_by_b ON topology_edges(b_agent);

    CREATE TABLE alarms (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,   -- interface_down, interface_gone, interface_new, peer_stale,
                                     -- endpoint_changed, agent_silent, relay_only, identity_conflict
        severity    TEXT NOT NULL,   -- 'critical' | 'warning' | 'info'
        agent_id    TEXT NOT NULL,
        subject     TEXT NOT NULL,   -- what inside the agent: interface name, peer key, '' for the agent
        message     TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('active', 'resolved')),
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        resolved_at INTEGER,
        acked_at    INTEGER
    );
    CREATE UNIQUE INDEX one_active_alarm ON alarms(kind, agent_id, subject) WHERE state = 'active';
    CREATE INDEX alarms_by_state ON alarms(state, first_seen);

    -- Flap suppression: consecutive observations of a condition (positive
    -- count: holding; negative: cleared) before raising or resolving.
    CREATE TABLE alarm_streaks (
        kind     TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        subject  TEXT NOT NULL,
        streak   INTEGER NOT NULL,
        PRIMARY KEY (kind, agent_id, subject)
    ) WITHOUT ROWID;

    -- Compact samples per agent for sparklines: one row per report at most
    -- every sample interval, rolled up to coarser rows as they age.
    CREATE TABLE history (
        agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        ts                INTEGER NOT NULL,
        load1             REAL,
        rx_rate           REAL,   -- bytes/s over all non-loopback interfaces
        tx_rate           REAL,
        max_handshake_age INTEGER,-- oldest handshake among the agent's peers, seconds
        peers_healthy     INTEGER,
        peers_total       INTEGER,
        PRIMARY KEY (agent_id, ts)
    ) WITHOUT ROWID;
    "#,
    // 3: indexes for lookups the writer and the retention sweep make.
    r#"
    CREATE INDEX wg_peers_by_peer_agent ON wg_peers(peer_agent_id);
    CREATE INDEX edges_by_external ON topology_edges(b_external) WHERE b_external != '';
    CREATE INDEX reports_by_time ON reports(received_at);
    "#,
    // 4: audit rows keep size and nonce of every message; the raw copy
    // (column raw) may be empty for reports that changed nothing.
    r#"
    ALTER TABLE reports ADD COLUMN size INTEGER;
    ALTER TABLE reports ADD COLUMN nonce BLOB;
    "#,
    // 5: sitegen reads recent history fleet-wide by time.
    r#"
    CREATE INDEX history_by_time ON history(ts);
    "#,
    // 6: alarms by agent (agent pages, the fleet API).
    r#"
    CREATE INDEX alarms_by_agent ON alarms(agent_id, state);
    "#,
    // 7: the audit rows are the anti-replay memory of direct messages (see
    // store::load_replay_window), looked up by agent and tick.
    r#"
    DROP INDEX reports_by_agent;
    CREATE INDEX reports_by_agent ON reports(agent_id, tick);
    "#,
    // 8: the receiver decides each agent's status ('up' | 'relay' |
    // 'silent', kattila_fleet::AgentStatus) and stores it, so that every
    // reader shows the same answer instead of judging last_seen itself.
    r#"
    ALTER TABLE agents ADD COLUMN status TEXT NOT NULL DEFAULT 'up';
    UPDATE agents SET status = 'relay' WHERE reachability = 'relay';
    UPDATE agents SET status = 'silent' WHERE agent_id IN
        (SELECT agent_id FROM alarms WHERE kind = 'agent_silent' AND state = 'active');
    "#,
    // 9: the site label an agent reports (its operator's name for where it
    // is); NULL when it reports none.
    r#"
    ALTER TABLE agents ADD COLUMN site TEXT;
    "#,
    // 10: a counter the receiver raises in every transaction that changes
    // what the dashboard shows beyond counters and ages (state, status,
    // health, alarms), so a reader can tell at a glance whether anything
    // it shows changed.
    r#"
    CREATE TABLE fleet_state (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    );
    INSERT INTO fleet_state (id, version) VALUES (1, 0);
    "#,
    // 11: incidents: related alarms of one site grouped by the receiver
    // (a whole site silent, a gateway down with its site relayed, many
    // links stale at once), one active incident per (kind, site).
    r#"
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,   -- site_silent, gateway_down, links_stale
        site        TEXT NOT NULL,   -- kattila_fleet::site_of: site label, else network
        severity    TEXT NOT NULL,   -- 'critical' | 'warning' | 'info'
        summary     TEXT NOT NULL,   -- what is wrong, without the site's name
        agents      TEXT NOT NULL,   -- JSON array of the agent ids involved
        state       TEXT NOT NULL CHECK (state IN ('active', 'resolved')),
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        resolved_at INTEGER
    );
    CREATE UNIQUE INDEX one_active_incident ON incidents(kind, site) WHERE state = 'active';
    CREATE INDEX incidents_by_state ON incidents(state, first_seen);
    "#,
    // 12: notifications. The outbox holds every message decided, written
    // in the transaction of the alarm or incident change that caused it;
    // notify_subjects what each subject (an alarm's condition, an incident's
    // kind and site) was last told, so a flapping condition continues one
    // story; silences and maintenance windows made through the admin API
    // (those of the configuration file live in the receiver's memory).
    r#"
    CREATE TABLE notify_outbox (
        id          INTEGER PRIMARY KEY,
        event_key   TEXT NOT NULL,   -- idempotency key, the same on every channel
        channel     TEXT NOT NULL,
        subject     TEXT NOT NULL,   -- 'alarm:kind:agent:subject' | 'incident:kind:site' | 'test'
        event       TEXT NOT NULL CHECK (event IN ('raised', 'resolved', 'repeat', 'test')),
        payload     TEXT NOT NULL,   -- JSON: what the message says, before a channel renders it
        state       TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'dead')),
        tries       INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        next_try    INTEGER NOT NULL,  -- unix milliseconds
        last_error  TEXT,
        sent_at     INTEGER,
        UNIQUE (event_key, channel)
    );
    CREATE INDEX notify_outbox_due ON notify_outbox(state, next_try);
    CREATE TABLE notify_subjects (
        subject     TEXT PRIMARY KEY,
        row_id      INTEGER NOT NULL,  -- the alarm or incident told of
        state       TEXT NOT NULL CHECK (state IN ('raised', 'resolved')),
        told_at     INTEGER NOT NULL,  -- when the raise was decided
        last_sent   INTEGER NOT NULL,  -- the newest message decided
        payload     TEXT NOT NULL      -- JSON of the raise, for its repeats and its resolve
    ) WITHOUT ROWID;
    CREATE TABLE silences (
        id         INTEGER PRIMARY KEY,
        matchers   TEXT NOT NULL,    -- JSON array of "label=value" | "label!=value" | "label=~regex"
        starts_at  INTEGER NOT NULL,
        ends_at    INTEGER NOT NULL,
        comment    TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE maintenance_windows (
        id         INTEGER PRIMARY KEY,
        spec       TEXT NOT NULL,    -- JSON: name, scope, one-off or recurring times, time zone
        created_at INTEGER NOT NULL
    );
    ALTER TABLE alarms ADD COLUMN notified_at INTEGER;
    ALTER TABLE alarms ADD COLUMN muted TEXT;     -- 'silenced: …' | 'maintenance: …' while held back
    ALTER TABLE incidents ADD COLUMN notified_at INTEGER;
    ALTER TABLE incidents ADD COLUMN muted TEXT;
    "#,
    // 13: an incident can be acknowledged, which stops its repeats.
    r#"
    ALTER TABLE incidents ADD COLUMN acked_at INTEGER;
    "#,
    // 14: fewer indexes for a new agent's rows to land in. Every index keyed
    // by something random (agent ids, WireGuard keys) costs a new agent one
    // page of its own per row, written to the WAL at its commit; these four
    // served no lookup worth that. Peers listing an agent are found through
    // its device keys (wg_peers_by_key, dropped by 16), devices by agent, and only
    // physical edges are looked up by their b end.
    r#"
    DROP INDEX wg_peers_by_peer_agent;
    DROP INDEX wg_devices_by_key;
    DROP INDEX edges_by_b;
    DROP INDEX edges_by_external;
    CREATE INDEX physical_edges_by_b ON topology_edges(b_agent) WHERE kind = 'physical';
    "#,
    // 15: history keyed by time first. Samples arrive in time order, so a
    // new one goes to the right-hand end of the table instead of to a page
    // of its agent's among the fleet's; readers take a time range
    // (sitegen's recent window, the roll-up), and history_by_time is the
    // table itself now.
    r#"
    CREATE TABLE history_by_ts (
        agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
        ts                INTEGER NOT NULL,
        load1             REAL,
        rx_rate           REAL,
        tx_rate           REAL,
        max_handshake_age INTEGER,
        peers_healthy     INTEGER,
        peers_total       INTEGER,
        PRIMARY KEY (ts, agent_id)
    ) WITHOUT ROWID;
    INSERT INTO history_by_ts
        SELECT agent_id, ts, load1, rx_rate, tx_rate, max_handshake_age, peers_healthy, peers_total
        FROM history ORDER BY ts, agent_id;
    DROP TABLE history;
    ALTER TABLE history_by_ts RENAME TO history;
    "#,
    // 16: no index on the peers' keys. It cost every new agent a WAL page
    // per peer (7 on average), a third of the pages its first report
    // dirtied. Who lists a key the receiver knows from its topology model
    // (the agents linked to the key's owner, or with an edge to the key as
    // an external peer), and finds their rows by their own agent id; only a
    // key moving from one agent to another, or one its owner gave up, scans
    // the table.
    r#"
    DROP INDEX wg_peers_by_key;
    "#,
];

/// The first schema version with the state, topology, alarm and history
/// tables (readers of older databases see agents only).
pub const STATE_TABLES: i64 = 2;
/// The first schema version with `agents.status`.
pub const AGENT_STATUS: i64 = 8;
/// The first schema version with `agents.site`.
pub const AGENT_SITE: i64 = 9;
/// The first schema version with `fleet_state`.
pub const FLEET_STATE: i64 = 10;
/// The first schema version with `incidents`.
pub const INCIDENTS: i64 = 11;
/// The first schema version with notifications (outbox, silences, windows,
/// `alarms.notified_at` and `alarms.muted`).
pub const NOTIFICATIONS: i64 = 12;
/// The first schema version with `incidents.acked_at`.
pub const INCIDENT_ACK: i64 = 13;

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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// A database of step 14 with history keeps every sample through step
    /// 15, and the table is then in time order.
    #[test]
    fn history_moves_to_time_order_and_keeps_every_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("k.db")).unwrap();
        for step in &super::STEPS[..14] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 14).unwrap();
        conn.execute_batch(
            "INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen, last_tick)
                 VALUES ('b', 'hb', 'v', 1, 1, 1), ('a', 'ha', 'v', 1, 1, 1);
             INSERT INTO history (agent_id, ts, load1, peers_healthy, peers_total)
                 VALUES ('b', 60, 0.5, 1, 2), ('a', 120, 1.5, 2, 2), ('a', 60, 2.5, 0, 2);",
        )
        .unwrap();
        super::migrate(&mut conn).unwrap();
        let rows: Vec<(String, i64, f64)> = conn
            .prepare("SELECT agent_id, ts, load1 FROM history")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [("a".into(), 60, 2.5), ("b".into(), 60, 0.5), ("a".into(), 120, 1.5)],
            "every sample, in (time, agent) order"
        );
        let plan: String = conn
            .query_row("EXPLAIN QUERY PLAN SELECT * FROM history WHERE ts >= 100", [], |r| r.get(3))
            .unwrap();
        assert!(plan.contains("SEARCH history USING PRIMARY KEY (ts>?)"), "{plan}");
    }
    /// The writer's lookups that steps 14 and 16 moved to other indexes
    /// still seek instead of scanning a fleet-sized table, and a new agent's
    /// peer and WireGuard edge rows go into no index but their own keys'.
    #[test]
    fn writer_lookups_seek_after_the_dropped_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open(&dir.path().join("k.db")).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(["a", "b", "c"], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        // A lister's peers of a silenced agent, and a lister's peer of a
        // claimed key: by the lister's own rows.
        for sql in [
            "UPDATE wg_peers SET health = ?3
             WHERE agent_id = ?1 AND public_key IN (SELECT public_key FROM wg_devices WHERE agent_id = ?2)",
            "UPDATE wg_peers SET peer_agent_id = ?3 WHERE agent_id = ?1 AND public_key = ?2",
        ] {
            let seek = plan(sql);
            assert!(seek.contains("SEARCH wg_peers USING PRIMARY KEY (agent_id=?)"), "{seek}");
            assert!(!seek.contains("SCAN"), "{seek}");
        }
        let physical = plan(
            "DELETE FROM topology_edges INDEXED BY physical_edges_by_b
             WHERE b_agent = ?1 AND kind = 'physical' AND ?2 = ?3",
        );
        assert!(physical.contains("USING INDEX physical_edges_by_b"), "{physical}");

        let indexed: Vec<String> = conn
            .prepare(
                "SELECT il.name FROM pragma_index_list('wg_peers') il
                 UNION ALL SELECT il.name FROM pragma_index_list('topology_edges') il",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut indexed: Vec<&str> = indexed.iter().map(String::as_str).collect();
        indexed.sort();
        assert_eq!(
            indexed,
            [
                "physical_edges_by_b",
                "sqlite_autoindex_topology_edges_1",
                "sqlite_autoindex_wg_peers_1",
            ],
            "an index on these tables costs every new agent pages of the WAL"
        );
    }
}
