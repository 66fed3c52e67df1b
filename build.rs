//! Sets `KATTILA_VERSION` for the three binaries: the workspace version, and
//! the git revision when built from a checkout, e.g. `0.1.0 (git 1a2b3c4d5e6f)`.
//!
//! Only the root package (the thin mains) reads it, so a new commit relinks
//! the binaries and recompiles nothing else. `scripts/build-agents.sh` writes
//! the same string into the static agents.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let version = match git_revision(&dir) {
        Some(rev) => format!("{version} (git {rev})"),
        None => version,
    };
    println!("cargo:rustc-env=KATTILA_VERSION={version}");
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// The revision checked out, if this package is the top of a git work tree
/// (a source tarball unpacked inside some other repository is not).
fn git_revision(dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let rev = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Run again when HEAD moves: HEAD itself (a branch switch or a detached
    // checkout), the branch's loose ref (a commit) and packed-refs. Only
    // files that exist are named: cargo would rerun for a missing one on
    // every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(rev)
}
