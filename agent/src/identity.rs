//! An agent's identity and tick counter, both persisted so they survive
//! restarts: the receiver refuses a tick it has seen, so a counter that went
//! backwards after a restart would silence the agent.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kattila_proto::limits::MAX_UINT as MAX_TICK;

/// Generates a new agent id: 16 random bytes as 32 lowercase hex characters.
pub fn new_agent_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Reads the agent id kept in `path`, or generates one and stores it there
/// when the file does not exist yet. A file that exists but does not hold a
/// valid id is an error, never silently replaced: the id is the agent's
/// identity at the receiver.
pub fn load_or_create_agent_id(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim().to_string();
            kattila_proto::limits::check_agent_id(&id).map_err(|e| {
                anyhow::anyhow!("agent id file {} is corrupt: {}", path.display(), e.0)
            })?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_agent_id();
            write_atomically(path, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A fresh nonce: 16 random bytes as 32 lowercase hex characters.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Strictly increasing tick. The file holds a reserved high-water mark: the
/// counter hands out ticks up to it and, when it runs out, reserves the next
/// block on disk *before* using it. After a crash the counter resumes above
/// the last reservation, so it never repeats a tick, at the cost of skipping
/// some. Ticks stay within the protocol's range (at most
/// [`MAX_UINT`](kattila_proto::limits::MAX_UINT) = 2^63 − 1): a counter that
/// reached it refuses to hand out more rather than wrap around.
#[derive(Debug)]
pub struct TickCounter {
    path: PathBuf,
    next: u64,
    reserved: u64,
    block: u64,
}

impl TickCounter {
    /// Opens (or starts) the counter stored at `path`. `block` is how many
    /// ticks one disk write reserves.
    pub fn open(path: impl Into<PathBuf>, block: u64) -> anyhow::Result<TickCounter> {
        let path = path.into();
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|r| *r <= MAX_TICK)
                .with_context(|| format!("tick file {} is corrupt", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(TickCounter { path, next: reserved + 1, reserved, block: block.max(1) })
    }

    /// The next tick, reserving a new block on disk first when needed.
    pub fn next_tick(&mut self) -> anyhow::Result<u64> {
        if self.next > self.reserved {
            anyhow::ensure!(
                self.next <= MAX_TICK,
                "tick counter {} is exhausted: the protocol's largest tick is {MAX_TICK}",
                self.path.display()
            );
            let reserve = self.next.saturating_add(self.block - 1).min(MAX_TICK);
            write_atomically(&self.path, reserve.to_string().as_bytes())?;
            self.reserved = reserve;
        }
        let tick = self.next;
        self.next += 1;
        Ok(tick)
    }
}

/// Writes `contents` to `path` so that a crash leaves either the old or the
/// new contents: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tick");
        let mut c = TickCounter::open(&path, 10).unwrap();
        let first: Vec<u64> = (0..15).map(|_| c.next_tick().unwrap()).collect();
        assert_eq!(first, (1..=15).collect::<Vec<_>>());
        drop(c);
        // A "crash" after tick 15: the reservation on disk is 20.
        let mut c = TickCounter::open(&path, 10).unwrap();
        assert_eq!(c.next_tick().unwrap(), 21);
    }

    #[test]
    fn ticks_stop_at_the_protocol_limit_instead_of_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tick");
        std::fs::write(&path, (MAX_TICK - 2).to_string()).unwrap();
        let mut c = TickCounter::open(&path, 10).unwrap();
        assert_eq!(c.next_tick().unwrap(), MAX_TICK - 1);
        assert_eq!(c.next_tick().unwrap(), MAX_TICK);
        let err = c.next_tick().unwrap_err();
        assert!(format!("{err:#}").contains("exhausted"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), MAX_TICK.to_string());
        // Reopened at the limit, it still hands out nothing.
        assert!(TickCounter::open(&path, 10).unwrap().next_tick().is_err());
        // A reservation beyond the range is no state this agent wrote.
        std::fs::write(&path, u64::MAX.to_string()).unwrap();
        let err = TickCounter::open(&path, 10).unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }

    #[test]
    fn corrupt_tick_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tick");
        std::fs::write(&path, "garbage").unwrap();
        let err = TickCounter::open(&path, 1).unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"));
    }

    #[test]
    fn agent_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent_id");
        let a = load_or_create_agent_id(&path).unwrap();
        assert_eq!(load_or_create_agent_id(&path).unwrap(), a);
        std::fs::write(&path, "not an id!\n").unwrap();
        let err = load_or_create_agent_id(&path).unwrap_err();
        assert!(format!("{err:#}").contains("corrupt"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not an id!\n");
    }

    #[test]
    fn ids_and_nonces_are_hex_and_fresh() {
        let (a, b) = (new_agent_id(), new_agent_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(kattila_proto::limits::check_nonce(&new_nonce()).is_ok());
    }
}
