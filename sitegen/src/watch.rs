//! Watch mode: rebuild whenever the receiver committed something.
//!
//! A long-lived read connection asks `PRAGMA data_version`, which changes
//! exactly when another connection committed to the database. Polling it is
//! cheap (no I/O beyond the shared-memory index), so a short interval gives
//! prompt rebuilds without relying on file-system events.

use std::path::Path;
use std::time::Duration;

use crate::snapshot::open_read_only;

/// Rebuilds after every committed change until `stop` returns true.
/// Prints one line per build.
pub fn watch(db: &Path, out: &Path, poll: Duration, stop: impl Fn() -> bool) -> anyhow::Result<()> {
    let conn = open_read_only(db)?;
    let mut last_version: Option<i64> = None;
    while !stop() {
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if last_version != Some(version) {
            last_version = Some(version);
            match crate::build_with(&conn, out, crate::unix_now()) {
                Ok(report) => println!(
                    "built {} agents, {} files in {:.0?} -> {}",
                    report.agents,
                    report.files,
                    report.elapsed,
                    report.published.display()
                ),
                Err(e) => eprintln!("sitegen: build failed: {e:#}"),
            }
        }
        std::thread::sleep(poll);
    }
    Ok(())
}
