//! Git snapshots: `OUT/git/` is a git repository whose work tree mirrors
//! the published site (ready to push to GitHub Pages). After a build, it
//! commits only when the fleet's *state* changed since the last commit
//! (not because a timestamp moved), at most once per interval, with a
//! message that says what changed; optionally it pushes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::changes::{Changes, StateDigest};

#[derive(Debug, Clone)]
pub struct GitOptions {
    /// At most one commit per this interval.
    pub interval: Duration,
    /// Remote (name or URL) to push to after each commit.
    pub push: Option<String>,
    pub branch: String,
}

/// The repository and what was last committed.
#[derive(Debug)]
pub struct GitSnapshots {
    repo: PathBuf,
    state: PathBuf,
    opts: GitOptions,
}

/// What `after_build` did.
#[derive(Debug, PartialEq, Eq)]
pub enum GitOutcome {
    Committed(String),
    Unchanged,
    /// State changed, but the last commit is too recent.
    Deferred,
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl GitSnapshots {
    /// Opens (creating if needed) the repository `OUT/git`.
    pub fn open(out: &Path, opts: GitOptions) -> anyhow::Result<GitSnapshots> {
        let repo = out.join("git");
        if !repo.join(".git").exists() {
            std::fs::create_dir_all(&repo)?;
            git(&repo, &["init", "--quiet", &format!("--initial-branch={}", opts.branch)])?;
        }
        Ok(GitSnapshots { repo, state: crate::state_dir(out).join("git-state.json"), opts })
    }

    pub fn repo(&self) -> &Path {
        &self.repo
    }

    fn last(&self) -> Option<(i64, StateDigest)> {
        let bytes = std::fs::read(&self.state).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Called after every build with the published site and its state.
    pub fn after_build(
        &mut self,
        site: &Path,
        digest: &StateDigest,
        now: i64,
    ) -> anyhow::Result<GitOutcome> {
        let last = self.last();
        if let Some((when, old)) = &last {
            if old == digest {
                return Ok(GitOutcome::Unchanged);
            }
            if now - when < self.opts.interval.as_secs() as i64 {
                return Ok(GitOutcome::Deferred);
            }
        }
        let changes = Changes::between(last.as_ref().map(|(_, d)| d), digest);
        let summary = if changes.first { "first snapshot".to_string() } else { changes.describe() };
        mirror(site, &self.repo)?;
        git(&self.repo, &["add", "--all", "."])?;
        let staged = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["diff", "--cached", "--quiet"])
            .status()
            .context("running git")?;
        if staged.success() && last.is_some() {
            self.remember(now, digest)?;
            return Ok(GitOutcome::Unchanged);
        }
        let message = format!("Kattila: {summary}");
        git(
            &self.repo,
            &[
                "-c",
                "user.name=Kattila sitegen",
                "-c",
                "user.email=sitegen@kattila.invalid",
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                &message,
            ],
        )?;
        self.remember(now, digest)?;
        if let Some(remote) = &self.opts.push {
            let refspec = format!("HEAD:refs/heads/{}", self.opts.branch);
            git(&self.repo, &["push", "--quiet", remote, &refspec])
                .with_context(|| format!("pushing snapshots to {remote}"))?;
        }
        Ok(GitOutcome::Committed(message))
    }

    fn remember(&self, now: i64, digest: &StateDigest) -> anyhow::Result<()> {
        if let Some(parent) = self.state.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&(now, digest))?)?;
        std::fs::rename(&tmp, &self.state)?;
        Ok(())
    }
}

/// Makes `dst` (except `.git`) an exact copy of `src`.
fn mirror(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let src = std::fs::canonicalize(src)?;
    // Remove what is no longer there.
    fn prune(src: &Path, dst: &Path, top: bool) -> std::io::Result<()> {
        for e in std::fs::read_dir(dst)? {
            let e = e?;
            let name = e.file_name();
            if top && (name == ".git" || name == ".nojekyll") {
                continue;
            }
            let s = src.join(&name);
            let ft = e.file_type()?;
            if ft.is_dir() {
                if s.is_dir() {
                    prune(&s, &e.path(), false)?;
                } else {
                    std::fs::remove_dir_all(e.path())?;
                }
            } else if !s.is_file() {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
    fn copy(src: &Path, dst: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            let to = dst.join(e.file_name());
            if e.file_type()?.is_dir() {
                copy(&e.path(), &to)?;
            } else {
                let new = std::fs::read(e.path())?;
                if std::fs::read(&to).ok().as_deref() != Some(&new[..]) {
                    std::fs::write(&to, new)?;
                }
            }
        }
        Ok(())
    }
    prune(&src, dst, true)?;
    copy(&src, dst)?;
    // GitHub Pages: serve files as they are.
    std::fs::write(dst.join(".nojekyll"), b"")?;
    Ok(())
}
