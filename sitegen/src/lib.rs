//! `sitegen`: turns the receiver's database into a static site. It opens
//! the database read-only, reads one consistent snapshot per build, renders
//! it with minijinja and publishes the result atomically. It makes no
//! network calls.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cryptopan;
pub mod publish;
pub mod render;
pub mod snapshot;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Instant;

/// What one build did, for the one-line report.
#[derive(Debug)]
pub struct BuildReport {
    pub agents: usize,
    pub files: usize,
    pub published: PathBuf,
    pub elapsed: std::time::Duration,
}

/// Reads the database at `db`, renders the site and publishes it under `out`.
pub fn build_once(db: &Path, out: &Path, now: i64) -> anyhow::Result<BuildReport> {
    let conn = snapshot::open_read_only(db)?;
    build_with(&conn, out, now)
}

/// Like [`build_once`] with an already open read-only connection.
pub fn build_with(
    conn: &rusqlite::Connection,
    out: &Path,
    now: i64,
) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    let snap = snapshot::FleetSnapshot::read(conn)?;
    let files = render::render_site(&snap, now)?;
    let published = publish::publish(out, &files)?;
    Ok(BuildReport {
        agents: snap.agents.len(),
        files: files.len(),
        published,
        elapsed: started.elapsed(),
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
