//! Watch mode: rebuild whenever the receiver committed something.
//!
//! A commit in WAL mode touches only the `-wal` file (the main file changes
//! at checkpoint; `-shm` is mmapped and raises no events), `-wal` vanishes
//! when the last connection closes, and a big transaction spills into it
//! before it commits. So file events are only a wake-up: the database's
//! directory is watched with notify, and on every wake-up — or when the
//! fallback timer fires, in case an event was missed — one long-lived read
//! connection asks `PRAGMA data_version`, which changes exactly when another
//! connection committed. Bursts are debounced before building.
//!
//! Most commits of a steady fleet move only counters and times. The
//! receiver raises `fleet_state.version` in every commit that changes what
//! the dashboard shows otherwise (state, status, health, alarms): such a
//! commit is built at once, a commit of counters alone at most once per
//! `refresh`, so an unchanged fleet costs a build a minute, not one per
//! report.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::git::{GitOutcome, GitSnapshots};
use crate::Builder;
use kattila_store::{data_version, fleet_version, open_read_only};

/// After a file event, the database is checked again this often …
/// (a fleet of 10,000 agents commits hundreds of times a second, so the
/// events never stop: every 5 ms cost 2.4 % of a core in checks alone)
const RECHECK: Duration = Duration::from_millis(25);
/// … this many times.
const RECHECKS: u32 = 8;
/// A refresh (counters and times only) waits at least this many times as
/// long as the last build took, so that refreshing a large fleet stays a
/// small share of a core (at 10,000 agents every page changes with its
/// counters, and a build takes seconds).
const REFRESH_COST_FACTOR: u32 = 20;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Check the database at least this often even without file events.
    pub fallback: Duration,
    /// After a change, wait until the database has been quiet this long
    /// (at most four times as long in all) before building.
    pub debounce: Duration,
    /// Commits that change only counters and times are built at most this
    /// often.
    pub refresh: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            fallback: Duration::from_millis(500),
            debounce: Duration::from_millis(50),
            refresh: Duration::from_secs(60),
        }
    }
}

/// Waits for wake-ups until `quiet` passed without one, or `max` in all.
fn settle(rx: &mpsc::Receiver<()>, quiet: Duration, max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match rx.recv_timeout(quiet.min(left)) {
            Ok(()) => continue,
            Err(_) => return,
        }
    }
}

/// Rebuilds after every committed change until `stop` returns true.
/// Prints one line per build (and per git commit).
pub fn watch(
    db: &Path,
    builder: &mut Builder,
    mut git: Option<&mut GitSnapshots>,
    opts: &WatchOptions,
    stop: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let conn = open_read_only(db)?;
    let (tx, rx) = mpsc::channel::<()>();
    let db_name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            Ok(ev) => {
                ev.paths.is_empty()
                    || ev.paths.iter().any(|p| {
                        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&db_name))
                    })
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    });
    let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let watching = match watcher.as_mut() {
        Ok(w) => w.watch(dir, RecursiveMode::NonRecursive),
        Err(e) => Err(notify::Error::generic(&e.to_string())),
    };
    match watching {
        Ok(()) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "cannot watch {} for changes; checking every {:?} instead",
            dir.display(),
            opts.fallback
        ),
    }
    let mut last_version: Option<i64> = None;
    let mut recheck = 0u32;
    let mut pending_git: Option<(std::path::PathBuf, std::sync::Arc<crate::changes::StateDigest>)> =
        None;
    // The fleet state version of the last build, when it was, and whether
    // counters moved since.
    let mut built_fleet: Option<Option<i64>> = None;
    let mut built_at = Instant::now();
    let mut build_took = Duration::ZERO;
    let mut counters_moved = false;
    while !stop() {
        let refresh = opts.refresh.max(build_took * REFRESH_COST_FACTOR);
        let due = match data_version(&conn) {
            Ok(version) if last_version != Some(version) => {
                last_version = Some(version);
                let fleet = fleet_version(&conn).ok().flatten();
                // Databases without the version: every commit counts.
                let changed = fleet.is_none() || built_fleet != Some(fleet);
                counters_moved = true;
                changed || built_at.elapsed() >= refresh
            }
            Ok(_) => counters_moved && built_at.elapsed() >= refresh,
            Err(e) => {
                eprintln!("sitegen: cannot read the database: {e}");
                false
            }
        };
        if due {
            if built_fleet.is_some() {
                settle(&rx, opts.debounce, opts.debounce * 4);
            }
            // Read the versions again after settling: a commit after this
            // point triggers another build.
            last_version = data_version(&conn).ok().or(last_version);
            built_fleet = Some(fleet_version(&conn).ok().flatten());
            built_at = Instant::now();
            counters_moved = false;
            {
                let started = Instant::now();
                let built = builder.build(&conn, kattila_fleet::unix_now());
                build_took = started.elapsed();
                match built {
                    Ok(report) => {
                        println!("{}", report.line());
                        pending_git = Some((report.published.clone(), report.digest.clone()));
                    }
                    Err(e) => eprintln!("sitegen: build failed: {e:#}"),
                }
            }
        }
        if let (Some(g), Some((site, digest))) = (git.as_deref_mut(), &pending_git) {
            match g.after_build(site, digest, kattila_fleet::unix_now()) {
                Ok(GitOutcome::Committed(msg)) => {
                    println!("git: committed \"{msg}\"");
                    pending_git = None;
                }
                Ok(GitOutcome::Unchanged) => pending_git = None,
                Ok(GitOutcome::Deferred) => {}
                Err(e) => {
                    eprintln!("sitegen: git snapshot failed: {e:#}");
                    pending_git = None;
                }
            }
        }
        // A file event can arrive before the commit that caused it is
        // visible (the WAL is written before the wal-index is updated, and
        // the wal-index raises no event): after an event, look again a few
        // times shortly, before falling back to the timer.
        if recheck > 0 {
            recheck -= 1;
            std::thread::sleep(RECHECK);
            while rx.try_recv().is_ok() {
                recheck = RECHECKS;
            }
            continue;
        }
        if rx.recv_timeout(opts.fallback).is_ok() {
            recheck = RECHECKS;
        }
        while rx.try_recv().is_ok() {}
    }
    Ok(())
}
