//! Atomic publishing. Each build is written to a fresh directory
//! `OUT/.builds/<id>/`; then the symlink `OUT/current` is switched to it with
//! one `rename`, so a web server rooted at `OUT/current` serves either the
//! old site or the new one, never a mix or a half-written file. The previous
//! builds are kept briefly for readers still loading a page, then removed.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use rayon::prelude::*;

use crate::files::{Contents, SiteFile};

/// Builds kept besides the current one.
const KEEP_OLD_BUILDS: usize = 2;

/// The directory a web server should serve: `OUT/current`.
pub fn current_dir(out: &Path) -> PathBuf {
    out.join("current")
}

/// Writes `files` as a new build under `out` and switches `out/current` to
/// it. Returns the path of `out/current`.
pub fn publish(out: &Path, files: &[SiteFile]) -> anyhow::Result<PathBuf> {
    Publisher::default().publish(out, files)
}

/// Publishes builds one after another, remembering what the previous one
/// held: a file whose contents did not change is hard-linked from the
/// previous build instead of written again (builds never modify a file
/// once published, so sharing one is safe).
#[derive(Debug, Default)]
pub struct Publisher {
    previous: Option<Previous>,
    /// Keyed per process, so agent-supplied text cannot be chosen to make
    /// a changed file look unchanged.
    hasher: std::hash::RandomState,
    /// Files linked rather than written by the last publish.
    pub reused: usize,
    /// Removes the builds before the last one, after it was switched in:
    /// no reader waits for that, and it overlaps the next build's reading
    /// of the database (which uses one core).
    cleanup: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Previous {
    dir: PathBuf,
    /// Content hash by path.
    hashes: HashMap<String, u64>,
}

impl Publisher {
    /// The previous build is still there to take files from
    /// ([`Contents::Previous`]).
    pub fn has_previous(&self) -> bool {
        self.previous.as_ref().is_some_and(|p| p.dir.is_dir())
    }

    /// Writes `files` as a new build and switches `out/current` to it.
    pub fn publish(&mut self, out: &Path, files: &[SiteFile]) -> anyhow::Result<PathBuf> {
        let staging = self.begin(out)?;
        // Many small files: write them from all cores.
        let placed = files.par_iter().map(|f| staging.place(f)).collect::<anyhow::Result<Vec<_>>>();
        match placed {
            Ok(placed) => self.finish(out, staging, &placed),
            Err(e) => {
                staging.abandon();
                Err(e)
            }
        }
    }

    /// Starts a new build under `out`: files are written into it as they
    /// are made ([`Staging::place`]), so a build never holds every file in
    /// memory at once, and it is switched in by [`Publisher::finish`].
    pub fn begin(&mut self, out: &Path) -> anyhow::Result<Staging> {
        self.finish_cleanup();
        let builds = out.join(".builds");
        std::fs::create_dir_all(&builds)
            .with_context(|| format!("creating {}", builds.display()))?;
        let current = current_dir(out);
        if let Ok(meta) = std::fs::symlink_metadata(&current) {
            if !meta.file_type().is_symlink() {
                bail!(
                    "{} exists and is not a symlink made by sitegen; move it away",
                    current.display()
                );
            }
        }
        let id = build_id();
        let dir = builds.join(&id);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let previous = self.previous.take().filter(|p| p.dir.is_dir());
        // A new process (`--once` from cron) knows no hashes of the build it
        // follows, but the files are on disk: the same bytes there are
        // linked rather than written again.
        let on_disk = match previous {
            None => std::fs::canonicalize(&current).ok().filter(|d| d.is_dir()),
            Some(_) => None,
        };
        Ok(Staging {
            dirs: Mutex::new(HashSet::from([dir.clone()])),
            dir,
            id,
            previous,
            on_disk,
            hasher: self.hasher.clone(),
        })
    }

    /// Switches `out/current` to the build of `staging`, whose files are
    /// `placed`. Returns the path of `out/current`.
    pub fn finish(
        &mut self,
        out: &Path,
        staging: Staging,
        placed: &[Placed],
    ) -> anyhow::Result<PathBuf> {
        let current = current_dir(out);
        let tmp_link = out.join(format!(".current-{}", staging.id));
        let switched =
            std::os::unix::fs::symlink(Path::new(".builds").join(&staging.id), &tmp_link)
                .with_context(|| format!("creating {}", tmp_link.display()))
                .and_then(|()| {
                    std::fs::rename(&tmp_link, &current).with_context(|| {
                        format!("switching {} to the new build", current.display())
                    })
                });
        if let Err(e) = switched {
            staging.abandon();
            return Err(e);
        }
        let dir = staging.dir;
        let (builds, newest) = (out.join(".builds"), dir.clone());
        self.cleanup = Some(std::thread::spawn(move || remove_old_builds(&builds, &newest)));
        self.reused = placed.iter().filter(|p| p.linked).count();
        let hashes = placed.iter().map(|p| (p.path.clone(), p.hash)).collect();
        self.previous = Some(Previous { dir, hashes });
        Ok(current)
    }

    fn finish_cleanup(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.join();
        }
    }
}

/// A build being written (from [`Publisher::begin`]): not yet visible.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    id: String,
    previous: Option<Previous>,
    /// The published build, when this process has not published one
    /// (`previous` is None): files are compared with it byte for byte.
    on_disk: Option<PathBuf>,
    hasher: std::hash::RandomState,
    /// Directories known to exist in the build.
    dirs: Mutex<HashSet<PathBuf>>,
}

/// What publishing keeps of one file once it is written: its path, page
/// key and content hash, not its bytes.
#[derive(Debug, Clone)]
pub struct Placed {
    pub path: String,
    pub key: Option<u64>,
    hash: u64,
    /// Linked from the previous build rather than written.
    linked: bool,
}

impl Staging {
    /// Writes `f` into the build, or links it from the previous build when
    /// its contents did not change. Safe to call from many threads.
    pub fn place(&self, f: &SiteFile) -> anyhow::Result<Placed> {
        let path = self.dir.join(safe_relative(&f.path)?);
        if let Some(parent) = path.parent() {
            let known = self.dirs.lock().unwrap_or_else(|e| e.into_inner()).contains(parent);
            if !known {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                self.dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(parent.to_path_buf());
            }
        }
        let rel = f.path.as_str();
        let old = self.previous.as_ref().and_then(|p| {
            let hash = *p.hashes.get(rel)?;
            Some((p.dir.join(rel), hash))
        });
        let (hash, linked) = match &f.contents {
            Contents::Previous => {
                let Some((old, hash)) = old else {
                    bail!("{rel} is not in the previous build");
                };
                if std::fs::hard_link(&old, &path).is_err() {
                    std::fs::copy(&old, &path).with_context(|| {
                        format!("copying {} to {}", old.display(), path.display())
                    })?;
                }
                (hash, true)
            }
            Contents::Bytes(bytes) => {
                let hash = self.hasher.hash_one(bytes);
                let same = match (old, &self.on_disk) {
                    (Some((old, h)), _) => (h == hash).then_some(old),
                    (None, Some(dir)) => Some(dir.join(rel)).filter(|old| same_bytes(old, bytes)),
                    (None, None) => None,
                };
                let linked = same.is_some_and(|old| std::fs::hard_link(&old, &path).is_ok());
                if !linked {
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                (hash, linked)
            }
        };
        Ok(Placed { path: f.path.clone(), key: f.key, hash, linked })
    }

    /// Removes what was written of a build that will not be published.
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Publisher {
    /// Old builds are gone when the publisher is (`--once` exits right
    /// after).
    fn drop(&mut self) {
        self.finish_cleanup();
    }
}

/// The file at `path` holds exactly `bytes`. Reading a file back (mostly
/// from the page cache) costs less than writing it again, and a warm build
/// changes few files.
fn same_bytes(path: &Path, bytes: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|old| old == bytes)
}

/// Sortable and unique: nanoseconds since the epoch plus the process id.
fn build_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:020}-{}", std::process::id())
}

/// Output paths come from our own code, but they may include agent ids;
/// refuse anything that could leave the build directory.
fn safe_relative(rel: &str) -> anyhow::Result<&Path> {
    let path = Path::new(rel);
    if rel.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("refusing to write unsafe site path {rel:?}");
    }
    Ok(path)
}

/// Removes all builds but `newest` and the `KEEP_OLD_BUILDS` before it.
fn remove_old_builds(builds: &Path, newest: &Path) {
    let Ok(entries) = std::fs::read_dir(builds) else { return };
    let newest = newest.file_name();
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| newest != Some(std::ffi::OsStr::new(n)))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP_OLD_BUILDS);
    for name in &names[..excess] {
        if let Err(e) = std::fs::remove_dir_all(builds.join(name)) {
            tracing::warn!(build = %name, error = %e, "could not remove an old build");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> Vec<SiteFile> {
        vec![
            SiteFile::new("index.html", text.as_bytes().to_vec()),
            SiteFile::new("static/a.css", b"x".to_vec()),
        ]
    }

    #[test]
    fn publishes_and_switches() {
        let dir = tempfile::tempdir().unwrap();
        let current = publish(dir.path(), &files("one")).unwrap();
        assert_eq!(std::fs::read_to_string(current.join("index.html")).unwrap(), "one");
        publish(dir.path(), &files("two")).unwrap();
        assert_eq!(std::fs::read_to_string(current.join("index.html")).unwrap(), "two");
        assert!(current.join("static/a.css").exists());
    }

    #[test]
    fn unchanged_files_are_linked_from_the_previous_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Publisher::default();
        p.publish(dir.path(), &files("one")).unwrap();
        assert_eq!(p.reused, 0);
        p.publish(dir.path(), &files("two")).unwrap();
        assert_eq!(p.reused, 1, "style sheet unchanged");
        assert_eq!(std::fs::read_to_string(dir.path().join("current/index.html")).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(dir.path().join("current/static/a.css")).unwrap(), "x");
        // Old builds go away; the shared file stays.
        for i in 0..4 {
            p.publish(dir.path(), &files(&i.to_string())).unwrap();
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("current/static/a.css")).unwrap(), "x");
    }

    #[test]
    fn a_new_publisher_links_unchanged_files_from_the_published_build() {
        let dir = tempfile::tempdir().unwrap();
        publish(dir.path(), &files("one")).unwrap();
        let mut p = Publisher::default();
        p.publish(dir.path(), &files("two")).unwrap();
        assert_eq!(p.reused, 1, "style sheet unchanged, index changed");
        assert_eq!(std::fs::read_to_string(dir.path().join("current/index.html")).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(dir.path().join("current/static/a.css")).unwrap(), "x");
    }

    #[test]
    fn old_builds_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            publish(dir.path(), &files(&i.to_string())).unwrap();
        }
        let builds = std::fs::read_dir(dir.path().join(".builds")).unwrap().count();
        assert_eq!(builds, KEEP_OLD_BUILDS + 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("current/index.html")).unwrap(), "5");
    }

    #[test]
    fn refuses_unsafe_paths_and_foreign_current() {
        let dir = tempfile::tempdir().unwrap();
        let bad = vec![SiteFile::new("../escape.html", vec![])];
        assert!(publish(dir.path(), &bad).is_err());
        assert!(!dir.path().parent().unwrap().join("escape.html").exists());
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join("current")).unwrap();
        let err = publish(other.path(), &files("x")).unwrap_err();
        assert!(err.to_string().contains("not a symlink"));
    }
}
