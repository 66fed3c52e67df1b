//! `--version` of every program: its name, the workspace version and, when
//! built from a git checkout, the revision checked out (build.rs), so a
//! binary on a node says exactly what it was built from.

mod util;

use std::process::Command;

/// The revision build.rs sees: HEAD of this checkout, if it is one.
fn revision() -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = std::fs::canonicalize(top).ok()? == std::fs::canonicalize(root).ok()?;
    same.then(|| git(&["rev-parse", "--short=12", "HEAD"])).flatten()
}

#[test]
fn every_program_names_its_version_and_revision() {
    let version = env!("CARGO_PKG_VERSION");
    let expected = match revision() {
        Some(rev) => format!("{version} (git {rev})"),
        None => version.to_string(),
    };
    for (name, bin) in [
        ("kattila-agent", util::AGENT),
        ("kattila-receiver", util::RECEIVER),
        ("sitegen", util::SITEGEN),
    ] {
        let (code, stdout, stderr) = util::run(bin, &["--version"], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim_end(), format!("{name} {expected}"));
    }
}
