//! The receiver's SQLite database: opening it with the right pragmas and
//! bringing its schema up to date. SQL lives in this module only.

pub mod checkpoint;
mod migrations;
pub mod store;

use std::path::Path;

use anyhow::Context;
use rusqlite::Connection;

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
    // A large page cache keeps batches from spilling pages to disk before
    // the commit.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;",
    )?;
    // The writer runs a few dozen distinct statements; the default cache of
    // 16 would re-prepare them constantly.
    conn.set_prepared_statement_cache_capacity(128);
    migrations::migrate(&mut conn)
        .with_context(|| format!("migrating database {}", path.display()))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_twice_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        drop(super::open(&path).unwrap());
        let conn = super::open(&path).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, super::migrations::LATEST as i64);
    }
}
