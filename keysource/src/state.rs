//! The key state file: the keys of a DNS-fed [`KeyRing`](crate::KeyRing)
//! saved across restarts.
//!
//! Without it a restarted program knows only the TXT value it finds at
//! start, so a report signed with a key rotated out a moment before the
//! restart is refused although the protocol accepts the current and two
//! previous keys; and a restart while DNS is unreachable leaves it with no
//! key at all. The file holds the ring's keys (newest first) and the TXT
//! record they came from, as JSON; it is written with mode 0600, through a
//! temporary file, `fsync` and `rename`, so a crash leaves the old file or
//! the new one, never a torn one.
//!
//! A file that cannot be trusted is never used: one that group or others may
//! read or write, that another user owns, that is not a regular file, that
//! does not parse, or that was written for another TXT record. It is reported
//! as a [`StateError`] (which names the file and the reason, never a key) and
//! replaced at the next successful lookup.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kattila_proto::{KeySet, Psk};
use serde::{Deserialize, Serialize};

/// The only format version so far.
const VERSION: u32 = 1;

/// Far more than three keys of any sensible length; a bigger file is not
/// ours and is not read into memory.
const MAX_BYTES: u64 = 1 << 20;

/// Why the key state file was not used or not written. Names the file and
/// the reason; never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but is not safe to take keys from.
    #[error("key state file {path} is not used: {reason}")]
    Untrusted {
        /// The file.
        path: String,
        /// What is wrong with it (mode, owner, type).
        reason: String,
    },
    /// The file could not be read.
    #[error("reading key state file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file does not hold a key state this version understands.
    #[error("key state file {path} is not used: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with the content (never the content itself).
        reason: String,
    },
    /// The file holds the keys of another TXT record, e.g. after `--dns`
    /// was changed: those keys are not this fleet's.
    #[error(
        "key state file {path} is not used: it holds keys of TXT record {found}, not {expected}"
    )]
    OtherRecord {
        /// The file.
        path: String,
        /// The record this program looks up.
        expected: String,
        /// The record the file was written for.
        found: String,
    },
    /// The file could not be written.
    #[error("writing key state file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// On-disk form. Keys newest first; the first one is the current key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    record: String,
    keys: Vec<String>,
}

/// The key state file of one TXT record.
#[derive(Debug, Clone)]
pub struct KeyStateFile {
    path: PathBuf,
    record: String,
}

impl KeyStateFile {
    /// The file at `path` for the keys of TXT record `record`.
    pub fn new(path: impl Into<PathBuf>, record: &str) -> KeyStateFile {
        KeyStateFile { path: path.into(), record: normalise(record) }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// The saved keys; `Ok(None)` when there is no file yet.
    pub fn load(&self) -> Result<Option<KeySet>, StateError> {
        let shown = self.shown();
        let untrusted = |reason: String| StateError::Untrusted { path: shown.clone(), reason };
        let read_err = |source| StateError::Read { path: shown.clone(), source };
        // Not following a symlink: whoever can plant one could point it at
        // a file of their choosing.
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(untrusted("it is a symbolic link".into()))
            }
            Ok(_) => {}
        }
        let mut file = File::open(&self.path).map_err(read_err)?;
        // Checked on the open file, so the answer is about what is read.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(untrusted("it is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            // Readable by others: the keys may be known outside. Writable by
            // others: someone may have added a key of their own.
            return Err(untrusted(format!(
                "its mode is {mode:03o}, group or others may read or change it (the program writes it as 600)"
            )));
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(untrusted(format!(
                "it is owned by uid {}, not by this program's uid {euid}",
                meta.uid()
            )));
        }
        let mut bytes = Vec::new();
        (&mut file).take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(self.corrupt(format!("it is larger than {MAX_BYTES} bytes")));
        }
        self.parse(&bytes).map(Some)
    }

    fn corrupt(&self, reason: String) -> StateError {
        StateError::Corrupt { path: self.shown(), reason }
    }

    fn parse(&self, bytes: &[u8]) -> Result<KeySet, StateError> {
        // serde_json's messages quote the offending value, which may be a
        // key: only its category and position are passed on.
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not valid JSON",
                serde_json::error::Category::Data => "not a key state",
                serde_json::error::Category::Eof => "cut short",
            };
            self.corrupt(format!("{what} (line {}, column {})", e.line(), e.column()))
        })?;
        if stored.version != VERSION {
            return Err(self.corrupt(format!(
                "format version {} is not {VERSION} (written by another Kattila version?)",
                stored.version
            )));
        }
        let found = normalise(&stored.record);
        if found != self.record {
            return Err(StateError::OtherRecord {
                path: self.shown(),
                expected: self.record.clone(),
                found,
            });
        }
        if stored.keys.is_empty() || stored.keys.len() > KeySet::CAPACITY {
            return Err(self.corrupt(format!(
                "it holds {} keys; expected 1 to {}",
                stored.keys.len(),
                KeySet::CAPACITY
            )));
        }
        let mut set = KeySet::default();
        // Oldest first, so that the newest ends up current.
        for text in stored.keys.iter().rev() {
            let key = Psk::new(text).ok_or_else(|| self.corrupt("it holds an empty key".into()))?;
            set.rotate(key);
        }
        if set.len() != stored.keys.len() {
            return Err(self.corrupt("it holds the same key twice".into()));
        }
        Ok(set)
    }

    /// Replaces the file with `keys`, atomically and durably, mode 0600.
    pub fn save(&self, keys: &KeySet) -> Result<(), StateError> {
        let write_err = |source| StateError::Write { path: self.shown(), source };
        let stored = Stored {
            version: VERSION,
            record: self.record.clone(),
            keys: keys.iter().map(|k| k.expose_secret().to_owned()).collect(),
        };
        let mut text = serde_json::to_vec(&stored).expect("strings always serialise");
        text.push(b'\n');
        let dir =
            self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Created 0600 from the start (not chmod-ed after), in the same
        // directory so that the rename is atomic.
        let mut tmp = tempfile::Builder::new()
            .prefix(".kattila-keys.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(write_err)?;
        tmp.write_all(&text).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&self.path).map_err(|e| write_err(e.error))?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir).and_then(|d| d.sync_all()).map_err(write_err)?;
        Ok(())
    }
}

/// Record names compare case-insensitively and with or without the final dot.
fn normalise(record: &str) -> String {
    record.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(texts: &[&str]) -> KeySet {
        let mut set = KeySet::default();
        for t in texts.iter().rev() {
            set.rotate(Psk::new(t).unwrap());
        }
        set
    }

    fn texts(set: &KeySet) -> Vec<String> {
        set.iter().map(|k| k.expose_secret().to_owned()).collect()
    }

    #[test]
    fn round_trip_keeps_order_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyStateFile::new(dir.path().join("k"), "Psk.Example.");
        assert!(file.load().unwrap().is_none());
        file.save(&keys(&["new", "mid", "old\nline"])).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = KeyStateFile::new(file.path(), "psk.example");
        assert_eq!(texts(&again.load().unwrap().unwrap()), ["new", "mid", "old\nline"]);
        // Only the file itself is left: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_content_is_an_error_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let file = KeyStateFile::new(&path, "psk.example");
        let secret = "SECRET-VALUE";
        let cases = [
            format!("{{\"version\":1,\"record\":\"psk.example\",\"keys\":\"{secret}\"}}"),
            format!("{{\"version\":1,\"record\":\"psk.example\",\"keys\":[\"{secret}\",7]}}"),
            format!("{{\"version\":1,\"record\":\"psk.example\",\"keys\":[\"{secret}\""),
            format!("{{\"version\":2,\"record\":\"psk.example\",\"keys\":[\"{secret}\"]}}"),
            format!("{{\"version\":1,\"record\":\"other\",\"keys\":[\"{secret}\"]}}"),
            format!(
                "{{\"version\":1,\"record\":\"psk.example\",\"keys\":[\"{secret}\",\"{secret}\"]}}"
            ),
            "{\"version\":1,\"record\":\"psk.example\",\"keys\":[\"a\",\"b\",\"c\",\"d\"]}".into(),
            "{\"version\":1,\"record\":\"psk.example\",\"keys\":[]}".into(),
            "{\"version\":1,\"record\":\"psk.example\",\"keys\":[\"  \"]}".into(),
            format!("{secret}\n"),
            String::new(),
        ];
        for text in cases {
            std::fs::write(&path, &text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = file.load().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
    }

    #[test]
    fn loose_mode_and_symlinks_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let file = KeyStateFile::new(&path, "psk.example");
        file.save(&keys(&["one"])).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = file.load().unwrap_err();
            assert!(matches!(err, StateError::Untrusted { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains(&format!("{mode:03o}")), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = KeyStateFile::new(&link, "psk.example").load().unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = KeyStateFile::new(dir.path(), "psk.example").load().unwrap_err();
        assert!(matches!(err, StateError::Untrusted { .. } | StateError::Read { .. }), "{err}");
    }
}
