//! Atomic publishing. Each build is written to a fresh directory
//! `OUT/.builds/<id>/`; then the symlink `OUT/current` is switched to it with
//! one `rename`, so a web server rooted at `OUT/current` serves either the
//! old site or the new one, never a mix or a half-written file. The previous
//! builds are kept briefly for readers still loading a page, then removed.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use crate::render::SiteFile;

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
    previous: Option<(PathBuf, HashMap<String, u64>)>,
    /// Files linked rather than written by the last publish.
    pub reused: usize,
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

impl Publisher {
    pub fn publish(&mut self, out: &Path, files: &[SiteFile]) -> anyhow::Result<PathBuf> {
        let hashes: HashMap<String, u64> =
            files.iter().map(|(rel, c)| (rel.clone(), content_hash(c))).collect();
        let previous = self.previous.take().filter(|(dir, _)| dir.is_dir());
        let reuse = |rel: &str| -> Option<PathBuf> {
            let (dir, old) = previous.as_ref()?;
            (old.get(rel)? == hashes.get(rel)?).then(|| dir.join(rel))
        };
        let (current, dir, reused) = publish_with(out, files, &reuse)?;
        self.reused = reused;
        self.previous = Some((dir, hashes));
        Ok(current)
    }
}

fn publish_with(
    out: &Path,
    files: &[SiteFile],
    reuse: &(dyn Fn(&str) -> Option<PathBuf> + Sync),
) -> anyhow::Result<(PathBuf, PathBuf, usize)> {
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
    for (rel, _) in files {
        if let Some(parent) = dir.join(safe_relative(rel)?).parent() {
            parents.insert(parent.to_path_buf());
        }
    }
    for parent in parents {
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Many small files: write them from all cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let per_thread = files.len().div_ceil(threads).max(1);
    let reused = std::thread::scope(|scope| -> anyhow::Result<usize> {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| {
                let dir = &dir;
                scope.spawn(move || -> anyhow::Result<usize> {
                    let mut reused = 0;
                    for (rel, contents) in chunk {
                        let path = dir.join(rel);
                        if let Some(old) = reuse(rel) {
                            if std::fs::hard_link(&old, &path).is_ok() {
                                reused += 1;
                                continue;
                            }
                        }
                        std::fs::write(&path, contents)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    Ok(reused)
                })
            })
            .collect();
        let mut reused = 0;
        for h in handles {
            reused += h.join().expect("write thread")?;
        }
        Ok(reused)
    })?;
    let tmp_link = out.join(format!(".current-{id}"));
    std::os::unix::fs::symlink(Path::new(".builds").join(&id), &tmp_link)
        .with_context(|| format!("creating {}", tmp_link.display()))?;
    std::fs::rename(&tmp_link, &current)
        .with_context(|| format!("switching {} to the new build", current.display()))?;
    remove_old_builds(&builds, &id);
    Ok((current, dir, reused))
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

fn remove_old_builds(builds: &Path, newest: &str) {
    let Ok(entries) = std::fs::read_dir(builds) else { return };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.as_str() != newest)
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
            ("index.html".into(), text.as_bytes().to_vec()),
            ("static/a.css".into(), b"x".to_vec()),
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
        let bad = vec![("../escape.html".to_string(), vec![])];
        assert!(publish(dir.path(), &bad).is_err());
        assert!(!dir.path().parent().unwrap().join("escape.html").exists());
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join("current")).unwrap();
        let err = publish(other.path(), &files("x")).unwrap_err();
        assert!(err.to_string().contains("not a symlink"));
    }
}
