//! Atomic publishing. Each build is written to a fresh directory
//! `OUT/.builds/<id>/`; then the symlink `OUT/current` is switched to it with
//! one `rename`, so a web server rooted at `OUT/current` serves either the
//! old site or the new one, never a mix or a half-written file. The previous
//! builds are kept briefly for readers still loading a page, then removed.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Component, Path, PathBuf};

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

    pub fn publish(&mut self, out: &Path, files: &[SiteFile]) -> anyhow::Result<PathBuf> {
        self.finish_cleanup();
        let previous = self.previous.take().filter(|p| p.dir.is_dir());
        let hasher = &self.hasher;
        // The hash of each file, and whether it was linked from the
        // previous build.
        let place = |rel: &str, contents: &Contents, path: &Path| -> anyhow::Result<(u64, bool)> {
            let old = previous.as_ref().and_then(|p| {
                let hash = *p.hashes.get(rel)?;
                Some((p.dir.join(rel), hash))
            });
            match contents {
                Contents::Previous => {
                    let Some((old, hash)) = old else {
                        bail!("{rel} is not in the previous build");
                    };
                    if std::fs::hard_link(&old, path).is_err() {
                        std::fs::copy(&old, path).with_context(|| {
                            format!("copying {} to {}", old.display(), path.display())
                        })?;
                    }
                    Ok((hash, true))
                }
                Contents::Bytes(bytes) => {
                    let hash = hasher.hash_one(bytes);
                    if let Some((old, _)) = old.filter(|&(_, h)| h == hash) {
                        if std::fs::hard_link(&old, path).is_ok() {
                            return Ok((hash, true));
                        }
                    }
                    std::fs::write(path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    Ok((hash, false))
                }
            }
        };
        let (current, dir, placed) = publish_with(out, files, &place)?;
        let (builds, newest) = (out.join(".builds"), dir.clone());
        self.cleanup = Some(std::thread::spawn(move || remove_old_builds(&builds, &newest)));
        self.reused = placed.iter().filter(|&&(_, linked)| linked).count();
        let hashes =
            files.iter().zip(&placed).map(|(f, &(hash, _))| (f.path.clone(), hash)).collect();
        self.previous = Some(Previous { dir, hashes });
        Ok(current)
    }

    fn finish_cleanup(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.join();
        }
    }
}

impl Drop for Publisher {
    /// Old builds are gone when the publisher is (`--once` exits right
    /// after).
    fn drop(&mut self) {
        self.finish_cleanup();
    }
}

/// Puts one file into the new build: (path relative to the site root,
/// contents, where) → what to remember of it.
type Place<'a, T> = dyn Fn(&str, &Contents, &Path) -> anyhow::Result<T> + Sync + 'a;

fn publish_with<T: Send>(
    out: &Path,
    files: &[SiteFile],
    place: &Place<'_, T>,
) -> anyhow::Result<(PathBuf, PathBuf, Vec<T>)> {
    let builds = out.join(".builds");
    std::fs::create_dir_all(&builds).with_context(|| format!("creating {}", builds.display()))?;
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
    let mut parents = std::collections::BTreeSet::new();
    for f in files {
        if let Some(parent) = dir.join(safe_relative(&f.path)?).parent() {
            parents.insert(parent.to_path_buf());
        }
    }
    for parent in parents {
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Many small files: write them from all cores.
    let placed = files
        .par_iter()
        .map(|f| place(&f.path, &f.contents, &dir.join(&f.path)))
        .collect::<anyhow::Result<Vec<T>>>()?;
    let tmp_link = out.join(format!(".current-{id}"));
    std::os::unix::fs::symlink(Path::new(".builds").join(&id), &tmp_link)
        .with_context(|| format!("creating {}", tmp_link.display()))?;
    std::fs::rename(&tmp_link, &current)
        .with_context(|| format!("switching {} to the new build", current.display()))?;
    Ok((current, dir, placed))
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
