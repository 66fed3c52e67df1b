//! The dashboard in a real web server and a real browser: a fleet of
//! simulated agents reports to the real receiver, `sitegen --once` builds
//! the site, nginx serves it with the shipped server block (at `/` and under
//! `/kattila/`), and headless Chromium crawls it there and from `file://`.
//! Screenshots are kept under `target/tmp/artefacts/mesh_browser/`.
//!
//! Needs nginx, chromium and node/npm; skips with the reason otherwise. (The
//! same checks run on the site of a real WireGuard mesh at the end of
//! `tests/mesh_scenario.rs`.)

mod browser;
mod util;

use util::*;

const PSK: &str = "browser-test-fleet-key";

#[test]
fn site_of_a_simulated_fleet_works_in_chromium_behind_nginx_and_from_files() {
    if let Some(reason) = browser::skip_reason() {
        return kattila_testsupport::skip(
            "site_of_a_simulated_fleet_works_in_chromium_behind_nginx_and_from_files",
            &reason,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let receiver = Receiver::start(&db, PSK);
    // Two sites and a hub, so the site has several cluster maps.
    let (code, _, stderr) = run(
        AGENT,
        &[
            "simulate",
            "--agents",
            "24",
            "--rounds",
            "2",
            "--interval",
            "0.2",
            "--seed",
            "browser-test",
            "--url",
            &receiver.url(),
            "--state-dir",
            dir.path().join("sim").to_str().unwrap(),
        ],
        &[("KATTILA_PSK", PSK)],
    );
    assert_eq!(code, 0, "{stderr}");
    let out = dir.path().join("site");
    let (code, _, stderr) = run(
        SITEGEN,
        &["--once", "--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    receiver.stop();
    browser::check_site(&out, "mesh_browser");
}
