//! Reading the fleet from the receiver's database: read-only, one
//! consistent snapshot per build.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// Opens the database read-only. A missing file is an error (sitegen never
/// creates the receiver's database).
pub fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    if !path.exists() {
        anyhow::bail!(
            "database {} does not exist (is the receiver running with --db pointing there?)",
            path.display()
        );
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening database {} read-only", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
    if version < 1 {
        anyhow::bail!("{} is not a Kattila database (schema version {version})", path.display());
    }
    Ok(conn)
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub relay_hops: i64,
}

/// Everything one build shows.
#[derive(Debug, Clone, Serialize)]
pub struct FleetSnapshot {
    pub agents: Vec<AgentRow>,
}

impl FleetSnapshot {
    /// Reads the whole snapshot inside one read transaction.
    pub fn read(conn: &Connection) -> anyhow::Result<FleetSnapshot> {
        conn.execute_batch("BEGIN DEFERRED")?;
        let result = Self::read_inner(conn);
        conn.execute_batch("COMMIT")?;
        result
    }

    fn read_inner(conn: &Connection) -> anyhow::Result<FleetSnapshot> {
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, hostname, agent_version, first_seen, last_seen, relay_hops
             FROM agents ORDER BY hostname, agent_id",
        )?;
        let agents = stmt
            .query_map([], |r| {
                Ok(AgentRow {
                    agent_id: r.get(0)?,
                    hostname: r.get(1)?,
                    agent_version: r.get(2)?,
                    first_seen: r.get(3)?,
                    last_seen: r.get(4)?,
                    relay_hops: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("reading agents")?;
        Ok(FleetSnapshot { agents })
    }
}
