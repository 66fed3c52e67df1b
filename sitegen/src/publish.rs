//! Atomic publishing. Each build is written to a fresh directory
//! `OUT/.builds/<id>/`; then the symlink `OUT/current` is switched to it with
//! one `rename`, so a web server rooted at `OUT/current` serves either the
//! old site or the new one, never a mix or a half-written file. The previous
//! builds are kept briefly for readers still loading a page, then removed.

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
    for (rel, contents) in files {
        let path = dir.join(safe_relative(rel)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    let tmp_link = out.join(format!(".current-{id}"));
    std::os::unix::fs::symlink(Path::new(".builds").join(&id), &tmp_link)
        .with_context(|| format!("creating {}", tmp_link.display()))?;
    std::fs::rename(&tmp_link, &current)
        .with_context(|| format!("switching {} to the new build", current.display()))?;
    remove_old_builds(&builds, &id);
    Ok(current)
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
