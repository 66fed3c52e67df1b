//! A page says when what it shows is old: built long ago (the receiver or
//! sitegen stopped) or open since long ago. Checked in headless Chromium
//! with the shipped script, over HTTP behind nginx (the script asks the
//! site for its newest build) and from file:// (it cannot, and judges by
//! the page alone).

mod browser;

#[path = "../sitegen/tests/common/fixture.rs"]
mod fixture;

use std::path::Path;
use std::process::Command;

use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::Builder;

/// Builds the fixture fleet as it was at `now`.
fn site(dir: &Path, now: i64) {
    let db = dir.join("kattila.db");
    fixture::create(&db, &fixture::FleetSpec { now, ..fixture::FleetSpec::new(12) });
    let conn = kattila_store::open_read_only(&db).unwrap();
    let mut builder = Builder::new(
        &dir.join("site"),
        Anon::new(&SiteKey::from_bytes([3; 32])),
        Default::default(),
    );
    builder.build(&conn, now).unwrap();
}

/// The page's DOM after its scripts ran.
fn dom(url: &str) -> String {
    let out = Command::new(browser::CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(url)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn banner(dom: &str) -> Option<String> {
    let at = dom.find("<p class=\"stale-banner\"")?;
    let text = &dom[dom[at..].find('>')? + at + 1..];
    let text = &text[..text.find("</p>")?];
    (!dom[at..at + 80].contains("hidden")).then(|| text.to_string())
}

#[test]
fn pages_say_when_what_they_show_is_old() {
    if let Some(reason) = browser::skip_reason() {
        kattila_testsupport::skip("pages_say_when_what_they_show_is_old", &reason);
        return;
    }
    let now = kattila_fleet::unix_now();
    let fresh = tempfile::tempdir().unwrap();
    site(fresh.path(), now);
    let stale = tempfile::tempdir().unwrap();
    site(stale.path(), now - 3600);

    let fresh_server = browser::Nginx::start(&fresh.path().join("site"));
    let stale_server = browser::Nginx::start(&stale.path().join("site"));
    let agent_page = |dir: &Path| {
        let agents = std::fs::read_dir(dir.join("site/current/agents")).unwrap();
        let name = agents.map(|e| e.unwrap().file_name()).next().unwrap();
        format!("agents/{}", name.to_string_lossy())
    };

    // A fresh site: no warning, ages are current.
    let page = dom(&fresh_server.url("/index.html"));
    assert!(page.contains("class=\"stale-banner\""), "the script ran: {page}");
    assert_eq!(banner(&page), None, "fresh site warned");
    // A silent agent's page shows old data, but nothing newer exists.
    let page = dom(&fresh_server.url(&format!("/{}", agent_page(fresh.path()))));
    assert_eq!(banner(&page), None, "fresh agent page warned");

    // A site not updated for an hour says so, on every page.
    for path in ["/index.html".to_string(), format!("/{}", agent_page(stale.path()))] {
        let page = dom(&stale_server.url(&path));
        let text = banner(&page).unwrap_or_else(|| panic!("{path}: no warning"));
        assert!(text.contains("not been updated for 60 min"), "{path}: {text}");
    }
    // From a file the site cannot be asked: the page judges by itself.
    let file = format!("file://{}/site/current/index.html", stale.path().display());
    let text = banner(&dom(&file)).expect("a stale file warns");
    assert!(text.contains("as of 60 min ago"), "{text}");
    let file = format!("file://{}/site/current/index.html", fresh.path().display());
    assert_eq!(banner(&dom(&file)), None);
}
