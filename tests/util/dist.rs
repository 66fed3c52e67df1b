//! The static (musl) agents of `scripts/build-agents.sh`, built with
//! KATTILA_DIST_PROFILE=quick (unoptimised, same target and linking) so
//! the tests stay fast, and reused while newer than every source they are
//! built from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn installed_targets() -> String {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Newest modification time of the files the agent binary is built from.
fn newest_source() -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for dir in ["agent", "proto", "keysource"] {
        walk(&root().join(dir), &mut newest);
    }
    for file in ["Cargo.lock", "Cargo.toml", "scripts/build-agents.sh"] {
        if let Ok(m) = std::fs::metadata(root().join(file)).and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
    }
    newest
}

/// The C tools `scripts/build-agents.sh ARCH` needs besides the Rust target.
pub fn tools(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["musl-gcc"],
        "aarch64" => &["aarch64-linux-gnu-gcc"],
        _ => panic!("no fleet architecture {arch}"),
    }
}

/// Builds (or reuses) target/dist-quick/kattila-agent-ARCH; `Err` is a
/// reason to skip. `needs` are further programs the caller will use.
pub fn fleet_binary(arch: &str, needs: &[&str]) -> Result<PathBuf, String> {
    let target = format!("{arch}-unknown-linux-musl");
    if !installed_targets().lines().any(|l| l.trim() == target) {
        return Err(format!("Rust target {target} is not installed (rustup target add {target})"));
    }
    for tool in tools(arch).iter().chain(needs) {
        if !kattila_testsupport::installed(tool) {
            return Err(format!("{tool} is not installed"));
        }
    }
    let bin = root().join(format!("target/dist-quick/kattila-agent-{arch}"));
    let fresh = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > newest_source());
    if !fresh {
        let out = Command::new(root().join("scripts/build-agents.sh"))
            .arg(arch)
            .env("KATTILA_DIST_PROFILE", "quick")
            .output()
            .expect("build script runs");
        assert!(
            out.status.success(),
            "scripts/build-agents.sh {arch} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}
