//! WAL checkpoints off the writer thread. SQLite's automatic checkpoint
//! runs on the committing connection: every thousand pages one batch
//! stalls while the WAL is copied into the database file and that file is
//! synced, and every request waiting behind it pays. Here a thread with its
//! own connection copies the WAL continuously (a PASSIVE checkpoint never
//! blocks the writer). It cannot let the WAL start over while the writer
//! keeps appending, so when the WAL has grown past a limit it asks the
//! writer to copy the last few frames itself between two batches; the
//! writer's next transaction then rewinds the WAL to its start.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

/// How often the WAL is copied into the database file.
const EVERY: Duration = Duration::from_millis(100);
/// WAL frames (pages) past which the writer is asked to let it rewind:
/// 16 MiB with 4 KiB pages.
const REWIND_AFTER_FRAMES: i64 = 4096;

/// The checkpointing thread; stops when dropped.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Set when the writer should finish a checkpoint between batches.
    pub rewind_wanted: Arc<AtomicBool>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening database {} for checkpoints", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let rewind_wanted = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, rewind_wanted) = (stop.clone(), rewind_wanted.clone());
            std::thread::Builder::new()
                .name("kattila-checkpoint".into())
                .spawn(move || run(conn, &stop, &rewind_wanted))?
        };
        Ok(Checkpointer { stop, thread: Some(thread), rewind_wanted })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, stop: &AtomicBool, rewind_wanted: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(EVERY);
        match passive_checkpoint(&conn) {
            Ok(frames) if frames >= REWIND_AFTER_FRAMES => {
                rewind_wanted.store(true, Ordering::Relaxed)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
        }
    }
}

/// Copies what it can of the WAL into the database file without waiting
/// for anyone; returns the number of frames in the WAL.
pub fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// Turns off SQLite's checkpoints on the committing connection; the
/// [`Checkpointer`] does them instead.
pub fn disable_automatic(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_autocheckpoint=0", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `total` bytes in small transactions, as the writer thread
    /// does, and returns the largest WAL size seen.
    fn write_continuously(conn: &Connection, path: &Path, rewind: Option<&AtomicBool>) -> u64 {
        let wal = path.with_extension("db-wal");
        let row = vec![7u8; 24 * 1024];
        let mut largest = 0;
        for i in 0..4000 {
            conn.execute("INSERT INTO filler (data) VALUES (?1)", [&row]).unwrap();
            if i % 50 == 0 {
                conn.execute(
                    "DELETE FROM filler WHERE id < (SELECT max(id) - 100 FROM filler)",
                    [],
                )
                .unwrap();
            }
            if rewind.is_some_and(|r| r.swap(false, Ordering::Relaxed)) {
                passive_checkpoint(conn).unwrap();
            }
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        largest
    }

    fn database(dir: &Path) -> (Connection, std::path::PathBuf) {
        let path = dir.join("k.db");
        let conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB);",
        )
        .unwrap();
        disable_automatic(&conn).unwrap();
        (conn, path)
    }

    #[test]
    fn the_wal_stays_bounded_when_the_writer_helps() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = database(dir.path());
        let checkpointer = Checkpointer::start(&path).unwrap();
        let largest = write_continuously(&conn, &path, Some(&checkpointer.rewind_wanted));
        drop(checkpointer);
        // ~100 MB written; the WAL rewinds after 16 MiB plus what arrives
        // before the next check.
        assert!(largest < 48 << 20, "WAL reached {largest} bytes");
        let count: i64 = conn.query_row("SELECT count(*) FROM filler", [], |r| r.get(0)).unwrap();
        assert!(count > 0);
    }

    #[test]
    fn without_the_writer_the_wal_would_grow() {
        // Why the writer must take part: checkpoints from another
        // connection alone never let a busy WAL start over.
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = database(dir.path());
        let checkpointer = Checkpointer::start(&path).unwrap();
        let largest = write_continuously(&conn, &path, None);
        drop(checkpointer);
        assert!(largest >= 48 << 20, "WAL reached only {largest} bytes");
    }
}
