//! Opening the database: for writing (the receiver's writer thread: WAL,
//! full sync, migrations) or read-only (the receiver's API, sitegen).

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::migrations;

/// Opens (creating if needed) the database for writing: WAL journal,
/// `synchronous=FULL` so a committed message survives power loss, a busy
/// timeout for readers such as sitegen, foreign keys on; then migrates.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let mut conn =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!("database {} refused WAL mode (got {mode})", path.display());
    }
    // The page cache holds a batch's dirty pages until the commit (a spill
    // writes them twice). 8 MiB holds a batch of 64 new agents' rows; 16
    // MiB was no faster at first contact and cost 8 MB of resident memory.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-8192; PRAGMA temp_store=MEMORY;",
    )?;
    // The writer runs a few dozen distinct statements; the default cache of
    // 16 would re-prepare them constantly.
    conn.set_prepared_statement_cache_capacity(128);
    migrations::migrate(&mut conn)
        .with_context(|| format!("migrating database {}", path.display()))?;
    Ok(conn)
}

/// Opens the database read-only and checks that it is a Kattila database.
/// A missing file is an error: readers never create the receiver's
/// database. WAL lets a reader read while the writer commits.
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
    let version = schema_version(&conn)
        .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
    if version < 1 {
        anyhow::bail!("{} is not a Kattila database (schema version {version})", path.display());
    }
    Ok(conn)
}

/// The database's schema version (`PRAGMA user_version`).
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// `PRAGMA data_version`: changes exactly when another connection commits.
pub fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// The fleet state version (see `audit::fleet_changed`), or None for a
/// database too old to keep one.
pub fn fleet_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    if schema_version(conn)? < migrations::FLEET_STATE {
        return Ok(None);
    }
    conn.query_row("SELECT version FROM fleet_state WHERE id = 1", [], |r| r.get(0))
}

/// Whether a reader can read the schema: the readiness probe's question.
pub fn readable(path: &Path) -> anyhow::Result<()> {
    let conn = open_read_only(path)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_twice_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        drop(super::open(&path).unwrap());
        let conn = super::open(&path).unwrap();
        assert_eq!(super::schema_version(&conn).unwrap(), super::migrations::LATEST as i64);
    }

    #[test]
    fn readers_never_create_the_database_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.db");
        let err = super::open_read_only(&path).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!path.exists());
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let err = format!("{:#}", super::open_read_only(&other).unwrap_err());
        assert!(err.contains("not a Kattila database"), "{err}");
    }
}
