//! The on-disk spool: reports that could not be delivered wait here, one
//! file each, and are sent oldest first when a path returns.
//!
//! Spooled reports are stored unsigned. They keep their `observed_at` and
//! are signed with a fresh `timestamp`, `nonce` and `tick` when they are
//! finally sent, so a late delivery never trips the receiver's clock-skew
//! check. The spool is bounded by total size and by age; when a limit is
//! hit the oldest reports go first, and the number dropped is carried in
//! the next delivered report's `spool_dropped`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kattila_proto::Report;

use crate::identity::write_atomically;

/// A bounded queue of reports on disk.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    /// File name → (observed_at, size). Names sort oldest first.
    entries: BTreeMap<String, (i64, u64)>,
    next_seq: u64,
    dropped: u64,
}

/// Sizes for health checks (part of the agent's health answer, hence
/// defined with the protocol's answers).
pub use kattila_proto::reply::SpoolStats;

fn parse_name(name: &str) -> Option<(u64, i64)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, observed) = stem.split_once('-')?;
    Some((seq.parse().ok()?, observed.parse().ok()?))
}

impl Spool {
    /// Opens (creating) the spool in `dir`. Leftover temporary files from a
    /// crash are removed; files that are not spool entries are left alone.
    pub fn open(dir: &Path, max_bytes: u64, max_age: Duration) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut entries = BTreeMap::new();
        let mut next_seq = 1;
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some((seq, observed)) = parse_name(&name) {
                let size = entry.metadata()?.len();
                next_seq = next_seq.max(seq + 1);
                entries.insert(name, (observed, size));
            }
        }
        let dropped = match std::fs::read_to_string(dir.join("dropped")) {
            Ok(t) => t.trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, max_age, entries, next_seq, dropped })
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            reports: self.entries.len(),
            bytes: self.entries.values().map(|&(_, s)| s).sum(),
            dropped: self.dropped,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reports dropped since the last delivery that carried the count.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A delivered report carried `n` of the dropped count.
    pub fn ack_dropped(&mut self, n: u64) -> anyhow::Result<()> {
        if n > 0 {
            self.dropped = self.dropped.saturating_sub(n);
            self.save_dropped()?;
        }
        Ok(())
    }

    fn save_dropped(&self) -> anyhow::Result<()> {
        write_atomically(&self.dir.join("dropped"), self.dropped.to_string().as_bytes())
    }

    fn drop_entry(&mut self, name: &str) -> anyhow::Result<()> {
        if self.entries.remove(name).is_some() {
            let _ = std::fs::remove_file(self.dir.join(name));
            self.dropped += 1;
        }
        Ok(())
    }

    /// Drops reports older than the age limit.
    fn expire(&mut self, now: i64) -> anyhow::Result<()> {
        let limit = now.saturating_sub(self.max_age.as_secs() as i64);
        let old: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, &(obs, _))| obs < limit)
            .map(|(n, _)| n.clone())
            .collect();
        let any = !old.is_empty();
        for name in old {
            self.drop_entry(&name)?;
        }
        if any {
            self.save_dropped()?;
        }
        Ok(())
    }

    /// Adds `report` (its signature fields are ignored), dropping the oldest
    /// reports as needed to stay within the limits.
    pub fn push(&mut self, report: &Report, now: i64) -> anyhow::Result<()> {
        self.expire(now)?;
        let bytes = serde_json::to_vec(report)?;
        let size = bytes.len() as u64;
        let mut dropped_any = false;
        if size > self.max_bytes {
            self.dropped += 1;
            self.save_dropped()?;
            tracing::warn!(
                size,
                limit = self.max_bytes,
                "report larger than the whole spool; dropped"
            );
            return Ok(());
        }
        while self.stats().bytes + size > self.max_bytes {
            let oldest =
                self.entries.keys().next().cloned().expect("non-empty when over the limit");
            self.drop_entry(&oldest)?;
            dropped_any = true;
        }
        let name = format!("{:016}-{}.json", self.next_seq, report.observed_at);
        self.next_seq += 1;
        write_atomically(&self.dir.join(&name), &bytes)?;
        self.entries.insert(name, (report.observed_at, size));
        if dropped_any {
            self.save_dropped()?;
        }
        Ok(())
    }

    /// The oldest report still within the age limit. Unreadable entries are
    /// dropped (and counted).
    pub fn oldest(&mut self, now: i64) -> anyhow::Result<Option<(String, Report)>> {
        self.expire(now)?;
        while let Some(name) = self.entries.keys().next().cloned() {
            let parsed = std::fs::read(self.dir.join(&name))
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<Report>(&b).map_err(Into::into));
            match parsed {
                Ok(report) => return Ok(Some((name, report))),
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "unreadable spooled report dropped");
                    self.drop_entry(&name)?;
                    self.save_dropped()?;
                }
            }
        }
        Ok(None)
    }

    /// Removes an entry that was delivered (or refused for good).
    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        if self.entries.remove(name).is_some() {
            std::fs::remove_file(self.dir.join(name))
                .with_context(|| format!("removing spooled report {name}"))?;
        }
        Ok(())
    }

    /// Empties the spool and forgets the dropped count (agent reset).
    pub fn clear(&mut self) -> anyhow::Result<()> {
        for name in std::mem::take(&mut self.entries).into_keys() {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        self.dropped = 0;
        self.save_dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{build_report, Telemetry};

    fn report(observed_at: i64, padding: usize) -> Report {
        let t = Telemetry { hostname: "x".repeat(padding), ..Telemetry::default() };
        build_report("abc", observed_at, t)
    }

    #[test]
    fn delivers_oldest_first_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        for t in [100, 200, 300] {
            s.push(&report(t, 1), 300).unwrap();
        }
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap();
        let mut seen = Vec::new();
        while let Some((name, r)) = s.oldest(300).unwrap() {
            seen.push(r.observed_at);
            s.remove(&name).unwrap();
        }
        assert_eq!(seen, vec![100, 200, 300]);
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn size_limit_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&report(1, 100)).unwrap().len() as u64;
        let mut s = Spool::open(dir.path(), one * 3, Duration::from_secs(3600)).unwrap();
        for t in 1..=5 {
            s.push(&report(t, 100), 5).unwrap();
        }
        assert_eq!(s.stats().reports, 3);
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.oldest(5).unwrap().unwrap().1.observed_at, 3);
        // The count survives a restart and is acknowledged once delivered.
        drop(s);
        let mut s = Spool::open(dir.path(), one * 3, Duration::from_secs(3600)).unwrap();
        assert_eq!(s.dropped(), 2);
        s.ack_dropped(2).unwrap();
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn age_limit_and_corrupt_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, Duration::from_secs(100)).unwrap();
        s.push(&report(1000, 1), 1000).unwrap();
        s.push(&report(1150, 1), 1150).unwrap();
        s.push(&report(1160, 1), 1160).unwrap();
        std::fs::write(dir.path().join("0000000000000003-1160.json"), "garbage").unwrap();
        // At 1200 the first report is over 100 s old; the third is corrupt.
        let (name, r) = s.oldest(1200).unwrap().unwrap();
        assert_eq!(r.observed_at, 1150);
        s.remove(&name).unwrap();
        assert!(s.oldest(1200).unwrap().is_none());
        assert_eq!(s.dropped(), 2);
    }
}
