//! Builds the test fixture's fleet (sites of five agents with silent
//! agents, a silent site, relays, stale, down and one-sided links, external
//! peers and alarms) into a database and a published site, for looking at
//! pages and taking screenshots:
//!
//! cargo run -p kattila-sitegen --example fixture_site -- AGENTS OUT_DIR [SITE_SIZE [CROSS_LINKS]]
//!
//! Writes OUT_DIR/kattila.db and the site under OUT_DIR/site (open
//! OUT_DIR/site/current/index.html). SITE_SIZE: agents per site (and so
//! per cluster), five unless given. CROSS_LINKS: peers in other sites per
//! agent besides the gateways' (0 unless given), for meshes dense across
//! sites.

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::Builder;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fixture_site AGENTS OUT_DIR [SITE_SIZE [CROSS_LINKS]]";
    let agents: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let out = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let site_size = match args.next() {
        Some(s) => s.parse()?,
        None => fixture::SITE_SIZE,
    };
    let cross_links = match args.next() {
        Some(s) => s.parse()?,
        None => 0,
    };
    std::fs::create_dir_all(&out)?;
    let db = out.join("kattila.db");
    let _ = std::fs::remove_file(&db);
    let spec = fixture::FleetSpec {
        silent_site: (agents >= 20).then_some(3),
        site_size,
        cross_links,
        ..fixture::FleetSpec::new(agents)
    };
    fixture::create(&db, &spec);
    let conn = kattila_store::open_read_only(&db)?;
    let site = out.join("site");
    let mut builder =
        Builder::new(&site, Anon::new(&SiteKey::from_bytes([7; 32])), Default::default());
    let report = builder.build(&conn, spec.now)?;
    println!("{} agents, {} files in {:?}", report.agents, report.files, report.elapsed);
    println!("{}", site.join("current/index.html").display());
    Ok(())
}
