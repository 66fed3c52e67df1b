//! Writing verified messages. Called only by the writer thread, inside its
//! batch transaction.

use kattila_fleet::AgentStatus;
use kattila_proto::{Layer, Message, ReplayWindow, Verified, REPLAY_WINDOW};
use rusqlite::{params, Connection};

/// Loads an agent's persisted anti-replay window (empty if unknown).
///
/// A message's own (tick, nonce) is persisted by its audit row in `reports`
/// and its tick by `agents.last_tick`, both written anyway, so accepting a
/// direct report costs no extra write. Relay layers are the exception: a
/// relayer's wrapper leaves no audit row of its own, so those pairs go to
/// `replay_seen`/`replay_state` ([`record_relay_layer`]). Audit rows are
/// kept at least an hour, far longer than the ±600 s clock-skew window, so
/// a pair can only leave the table once the timestamp check refuses its
/// envelope anyway.
pub fn load_replay_window(conn: &Connection, agent_id: &str) -> rusqlite::Result<ReplayWindow> {
    let highest: i64 = conn
        .prepare_cached(
            "SELECT max(coalesce((SELECT last_tick FROM agents WHERE agent_id = ?1), 0),
                        coalesce((SELECT highest_tick FROM replay_state WHERE agent_id = ?1), 0))",
        )?
        .query_row([agent_id], |r| r.get(0))?;
    // Ticks at or below the floor are refused by the window itself; with
    // nothing above 0 accepted yet, tick 0 may be in use.
    let floor =
        if highest == 0 { -1 } else { (highest as u64).saturating_sub(REPLAY_WINDOW) as i64 };
    let mut seen = Vec::new();
    for sql in [
        "SELECT tick, nonce FROM reports WHERE agent_id = ?1 AND tick > ?2",
        "SELECT tick, nonce FROM replay_seen WHERE agent_id = ?1 AND tick > ?2",
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![agent_id, floor], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
        })?;
        for row in rows {
            let (tick, nonce) = row?;
            seen.extend(stored_pair(tick, nonce));
        }
    }
    Ok(ReplayWindow::from_parts(highest as u64, seen))
}

/// A stored (tick, nonce) as a window takes it. Audit rows from before
/// nonces were recorded have none; their pairs are in replay_seen, where
/// every layer used to go.
fn stored_pair(tick: i64, nonce: Option<Vec<u8>>) -> Option<(u64, [u8; 16])> {
    Some((tick as u64, <[u8; 16]>::try_from(nonce?).ok()?))
}

/// The anti-replay window (as [`load_replay_window`] loads one) of every
/// agent heard from since `since`, in one pass per table: the receiver
/// loads them when it starts.
pub fn load_replay_windows(
    conn: &Connection,
    since: i64,
    mut f: impl FnMut(String, ReplayWindow),
) -> rusqlite::Result<()> {
    let mut highest = conn.prepare(
        "SELECT a.agent_id, max(a.last_tick, coalesce(s.highest_tick, 0))
         FROM agents a LEFT JOIN replay_state s ON s.agent_id = a.agent_id
         WHERE a.last_seen >= ?1 ORDER BY a.agent_id",
    )?;
    // Rows below a window's floor (where replay_state is ahead of
    // last_tick) are dropped by the window itself.
    let mut reports = conn.prepare(
        "SELECT a.agent_id, r.tick, r.nonce FROM agents a
             JOIN reports r ON r.agent_id = a.agent_id AND r.tick > a.last_tick - ?1
         WHERE a.last_seen >= ?2 ORDER BY a.agent_id",
    )?;
    let mut relayed =
        conn.prepare("SELECT agent_id, tick, nonce FROM replay_seen ORDER BY agent_id, tick")?;
    let pair = |r: &rusqlite::Row<'_>| {
        Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, Option<Vec<u8>>>(2)?)))
    };
    let mut reports = reports.query_map([REPLAY_WINDOW as i64, since], pair)?.peekable();
    let mut relayed = relayed.query_map([], pair)?.peekable();
    for row in highest.query_map([since], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (agent, highest) = row?;
        let mut pairs = crate::state::rows_of(&mut reports, &agent)?;
        pairs.extend(crate::state::rows_of(&mut relayed, &agent)?);
        let pairs = pairs.into_iter().filter_map(|(tick, nonce)| stored_pair(tick, nonce));
        f(agent, ReplayWindow::from_parts(highest as u64, pairs));
    }
    Ok(())
}

/// Persists the (tick, nonce) of a relayer's layer and drops the pairs that
/// left its window. The origin layer needs no call: see [`load_replay_window`].
pub fn record_relay_layer(
    conn: &Connection,
    layer: &Layer,
    window: &ReplayWindow,
    dropped: &[u64],
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO replay_seen (agent_id, tick, nonce) VALUES (?1, ?2, ?3)")?
        .execute(params![layer.agent_id, layer.tick as i64, &layer.nonce[..]])?;
    conn.prepare_cached(
        "INSERT INTO replay_state (agent_id, highest_tick) VALUES (?1, ?2)
         ON CONFLICT(agent_id) DO UPDATE SET highest_tick = excluded.highest_tick",
    )?
    .execute(params![layer.agent_id, window.highest() as i64])?;
    let mut del =
        conn.prepare_cached("DELETE FROM replay_seen WHERE agent_id = ?1 AND tick = ?2")?;
    for tick in dropped {
        del.execute(params![layer.agent_id, *tick as i64])?;
    }
    Ok(())
}

/// Records the agent behind a message: its `agents` row, including the
/// system facts of a report and its status, in one statement. Returns the
/// number of its reports, this one included: at most 1 means no report of
/// it was processed before, so it has no stored state yet.
pub fn upsert_agent(
    conn: &Connection,
    verified: &Verified,
    received_at: i64,
) -> rusqlite::Result<i64> {
    let origin = verified.origin();
    let msg = &verified.message;
    let report = match msg {
        Message::Report(r) => Some(r),
        Message::Register(_) => None,
    };
    let via = (verified.relay_hops() > 0).then(|| verified.layers[0].agent_id.as_str());
    let errors = report.map(|r| serde_json::to_string(&r.errors).unwrap_or_else(|_| "[]".into()));
    // A message proves the agent is heard from; how it arrived says how.
    let status = if verified.relay_hops() > 0 { AgentStatus::Relay } else { AgentStatus::Up };
    conn.prepare_cached(
        "INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen,
                             last_observed_at, last_tick, relay_hops, via_agent, reachability,
                             kernel, uptime_secs, load1, load5, load15, spool_dropped, collect_errors, reports,
                             status, site)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9,
                 ?10, ?11, ?12, ?13, ?14, ?15, coalesce(?16, '[]'), ?17, ?18, ?19)
         ON CONFLICT(agent_id) DO UPDATE SET
             hostname = excluded.hostname,
             agent_version = excluded.agent_version,
             last_seen = excluded.last_seen,
             last_observed_at = coalesce(max(excluded.last_observed_at, agents.last_observed_at),
                                         excluded.last_observed_at, agents.last_observed_at),
             last_tick = max(agents.last_tick, excluded.last_tick),
             relay_hops = excluded.relay_hops,
             via_agent = excluded.via_agent,
             reachability = excluded.reachability,
             kernel = coalesce(excluded.kernel, agents.kernel),
             uptime_secs = coalesce(excluded.uptime_secs, agents.uptime_secs),
             load1 = coalesce(excluded.load1, agents.load1),
             load5 = coalesce(excluded.load5, agents.load5),
             load15 = coalesce(excluded.load15, agents.load15),
             spool_dropped = agents.spool_dropped + excluded.spool_dropped,
             collect_errors = CASE WHEN ?16 IS NULL THEN agents.collect_errors ELSE excluded.collect_errors END,
             reports = agents.reports + excluded.reports,
             status = excluded.status,
             site = CASE WHEN ?17 = 1 THEN excluded.site ELSE agents.site END
         RETURNING reports",
    )?
    .query_row(params![
        origin.agent_id,
        msg.hostname(),
        msg.agent_version(),
        received_at,
        report.map(|r| r.observed_at),
        origin.tick as i64,
        verified.relay_hops() as i64,
        via,
        if verified.relay_hops() > 0 { "relay" } else { "direct" },
        report.map(|r| r.system.kernel.as_str()),
        report.map(|r| r.system.uptime_secs as i64),
        report.map(|r| r.system.load[0]),
        report.map(|r| r.system.load[1]),
        report.map(|r| r.system.load[2]),
        report.map_or(0, |r| r.spool_dropped as i64),
        errors,
        i64::from(report.is_some()),
        status.as_str(),
        // A report says the site (or that there is none); a registration
        // leaves it as it was.
        report.and_then(|r| r.site.as_deref()),
    ], |r| r.get(0))
}

/// Appends the message to the audit table: always its metadata, and the
/// raw envelope when `keep_raw` (an empty blob otherwise).
pub fn insert_report(
    conn: &Connection,
    verified: &Verified,
    raw: &[u8],
    keep_raw: bool,
    received_at: i64,
) -> rusqlite::Result<()> {
    let origin = verified.origin();
    let msg = &verified.message;
    let observed_at = match msg {
        Message::Report(r) => Some(r.observed_at),
        Message::Register(_) => None,
    };
    let relay_path: Vec<&str> = verified.relay_path().collect();
    let relay_path = (!relay_path.is_empty()).then(|| relay_path.join(" "));
    conn.prepare_cached(
        "INSERT INTO reports (agent_id, kind, tick, received_at, observed_at, relay_path, raw, size, nonce)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        origin.agent_id,
        msg.kind().as_str(),
        origin.tick as i64,
        received_at,
        observed_at,
        relay_path,
        if keep_raw { raw } else { &[][..] },
        raw.len() as i64,
        &origin.nonce[..],
    ])?;
    Ok(())
}

/// Marks agents without a report since `heard_before` silent; returns
/// every silent agent with its `last_seen`.
pub fn mark_silent(conn: &Connection, heard_before: i64) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare_cached("UPDATE agents SET status = ?2 WHERE last_seen < ?1 AND status != ?2")?
        .execute(params![heard_before, AgentStatus::Silent.as_str()])?;
    let mut stmt =
        conn.prepare_cached("SELECT agent_id, last_seen FROM agents WHERE last_seen < ?1")?;
    let silent = stmt.query_map([heard_before], |r| Ok((r.get(0)?, r.get(1)?)))?;
    silent.collect()
}

/// Records that this transaction changes what the dashboard shows (more
/// than counters and ages): readers see `fleet_state.version` move.
pub fn fleet_changed(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE fleet_state SET version = version + 1 WHERE id = 1")?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window loaded in one pass is the window loaded alone: audit
    /// rows inside and below the window, relayed pairs, a replay_state
    /// ahead of last_tick, an agent without nonces, a fresh agent.
    #[test]
    fn the_windows_load_as_each_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open(&dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO agents (agent_id, hostname, agent_version, first_seen, last_seen, last_tick) VALUES
                 ('a', 'h', 'v', 1, 500, 300), ('b', 'h', 'v', 1, 500, 5), ('c', 'h', 'v', 1, 500, 0),
                 ('old', 'h', 'v', 1, 10, 7);
             INSERT INTO reports (agent_id, kind, tick, received_at, raw, nonce) VALUES
                 ('a', 'report', 300, 1, x'', randomblob(16)), ('a', 'report', 250, 1, x'', randomblob(16)),
                 ('a', 'report', 100, 1, x'', randomblob(16)), ('b', 'report', 4, 1, x'', randomblob(16)),
                 ('b', 'report', 5, 1, x'', NULL), ('old', 'report', 7, 1, x'', randomblob(16));
             INSERT INTO replay_state (agent_id, highest_tick) VALUES ('b', 200), ('c', 3);
             INSERT INTO replay_seen (agent_id, tick, nonce) VALUES
                 ('b', 150, randomblob(16)), ('b', 60, randomblob(16)), ('c', 3, randomblob(16));",
        )
        .unwrap();
        let mut loaded = Vec::new();
        load_replay_windows(&conn, 100, |id, w| loaded.push((id, w))).unwrap();
        let ids: Vec<&str> = loaded.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        for (id, window) in &loaded {
            assert_eq!(*window, load_replay_window(&conn, id).unwrap(), "agent {id}");
        }
        let ticks = |i: usize| loaded[i].1.ticks().collect::<Vec<_>>();
        assert_eq!(ticks(0), [250, 300], "tick 100 is below a's floor");
        assert_eq!(ticks(1), [150], "b's floor is 200 - 120: tick 4, 5 and 60 are below it");
        assert_eq!(ticks(2), [3]);
    }
}
