//! What Kattila's tests share across crates: [`skip`], what every test
//! that needs something from the machine (root, network namespaces, Debian
//! packages, a cross target) uses to say that it cannot run here; and
//! [`dump_db`], to show that a refused message changed nothing.
//!
//! A skipped test still counts as "passed" for the test runner, so a skip
//! must be impossible to miss:
//! - the line `SKIPPED: <test>: <reason>` goes straight to the process's
//!   standard error, past libtest's output capture, so it shows in the
//!   output of `cargo test` even though the test passes;
//! - `scripts/test.sh` (the README's test command) repeats every such line
//!   in a closing summary;
//! - with `KATTILA_REQUIRE_ALL_TESTS=1` (set by `.ci/run`, which installs
//!   everything the tests need) a skip is a failure instead.
#![forbid(unsafe_code)]

use std::io::Write;

/// The environment variable that turns every skip into a failure.
pub const REQUIRE_ALL_TESTS: &str = "KATTILA_REQUIRE_ALL_TESTS";

/// Reports that `test` cannot run on this machine because of `reason`, and
/// returns so the caller can `return`. Panics instead when
/// `KATTILA_REQUIRE_ALL_TESTS=1`, because then the machine was set up to
/// run every test and a skip means a broken setup.
pub fn skip(test: &str, reason: &str) {
    if require_all_tests() {
        panic!(
            "{test} cannot run here: {reason} \
             ({REQUIRE_ALL_TESTS}=1: every test must run on this machine)"
        );
    }
    let line = format!("SKIPPED: {test}: {reason}\n");
    // `eprintln!` would be captured by libtest and only shown on failure;
    // writing to the stderr handle directly is not captured.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Every row of every table of the SQLite database at `path`, as text, rows
/// sorted within each table (some tables are WITHOUT ROWID, so there is no
/// natural order): equal dumps mean nothing changed.
pub fn dump_db(path: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = String::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let cols = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok((0..cols).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect::<Vec<_>>())
            })
            .unwrap()
            .map(|row| format!("{table}: {}\n", row.unwrap().join("|")))
            .collect();
        rows.sort();
        out.extend(rows);
    }
    out
}

/// Whether skipping is forbidden (`KATTILA_REQUIRE_ALL_TESTS=1`).
pub fn require_all_tests() -> bool {
    std::env::var(REQUIRE_ALL_TESTS).is_ok_and(|v| v == "1")
}

/// Whether `program` is an executable file on `PATH` or in the system
/// binary directories (which a non-login root shell may leave off `PATH`).
pub fn installed(program: &str) -> bool {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_finds_a_program_every_machine_has_and_not_a_made_up_one() {
        assert!(installed("sh"));
        assert!(!installed("kattila-no-such-program"));
    }

    /// Runs only as the child of the tests below (the variable set), so
    /// that it sees the environment it is given without racing other tests.
    #[test]
    fn child_that_skips() {
        if std::env::var_os("KATTILA_TESTSUPPORT_CHILD").is_some() {
            skip("child_that_skips", "needs a machine that does not exist");
        }
    }

    fn run_child(require_all: Option<&str>) -> std::process::Output {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "tests::child_that_skips", "--test-threads=1"])
            .env("KATTILA_TESTSUPPORT_CHILD", "1")
            .env_remove(REQUIRE_ALL_TESTS);
        if let Some(value) = require_all {
            command.env(REQUIRE_ALL_TESTS, value);
        }
        command.output().unwrap()
    }

    #[test]
    fn a_skip_is_printed_past_the_output_capture() {
        let out = run_child(None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a skip passes: {stderr}");
        assert!(
            stderr.contains("SKIPPED: child_that_skips: needs a machine that does not exist"),
            "the skip is visible although the test passed and its output was captured: {stderr:?}"
        );
    }

    #[test]
    fn a_skip_fails_when_every_test_must_run() {
        let out = run_child(Some("1"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{REQUIRE_ALL_TESTS}=1 turns a skip into a failure");
        assert!(
            stdout.contains("cannot run here: needs a machine that does not exist"),
            "{stdout}"
        );
    }
}
