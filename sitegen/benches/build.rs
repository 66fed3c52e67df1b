//! sitegen benchmarks: full builds of fixture fleets (cold, warm in one
//! process, warm from the on-disk layout cache), layout time per graph size
//! and watch-mode latency from commit to published site.
//!
//! cargo bench -p kattila-sitegen --bench build [-- SIZES...]
//!
//! Prints a Markdown table. Sizes default to 10 1000 10000.
//! SITEGEN_BENCH_SITE_SIZE=N makes sites (clusters) of N agents instead of
//! the fixture's five.

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use kattila_sitegen::anon::{Anon, SiteKey};
use kattila_sitegen::layout::{self, Graph};
use kattila_sitegen::Builder;
use kattila_store::open_read_only;

fn builder(out: &Path) -> Builder {
    Builder::new(out, Anon::new(&SiteKey::from_bytes([9; 32])), Default::default())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn bench_size(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    // SITEGEN_BENCH_KEEP=DIR keeps the fixture and site there for a look.
    let kept = std::env::var_os("SITEGEN_BENCH_KEEP").map(|d| Path::new(&d).join(n.to_string()));
    let dir_path = kept.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let _ = std::fs::remove_dir_all(kept.as_deref().unwrap_or(Path::new("/nonexistent")));
    std::fs::create_dir_all(&dir_path).unwrap();
    let dir = &dir_path;
    let db = dir.join("kattila.db");
    let t = Instant::now();
    let site_size = std::env::var("SITEGEN_BENCH_SITE_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fixture::SITE_SIZE);
    let spec =
        fixture::FleetSpec { resolved_alarms: n / 2 + 10, site_size, ..fixture::FleetSpec::new(n) };
    fixture::create(&db, &spec);
    let fixture_time = t.elapsed();
    let conn = open_read_only(&db).unwrap();
    let out = dir.join("site");
    let mut b = builder(&out);
    let cold = b.build(&conn, spec.now).unwrap();
    let mut warm = Vec::new();
    let mut last = None;
    for k in 0..5 {
        let r = b.build(&conn, spec.now + 1 + k).unwrap();
        assert_eq!(r.layouts_computed, 0);
        warm.push(r.elapsed);
        last = Some(r);
    }
    let last = last.unwrap();
    let mut disk = Vec::new();
    for k in 0..3 {
        let r = builder(&out).build(&conn, spec.now + 10 + k).unwrap();
        assert_eq!(r.layouts_computed, 0);
        disk.push(r.elapsed);
    }
    let phases =
        format!("{} / {} / {}", ms(last.read_time), ms(last.render_time), ms(last.publish_time));
    let bytes: u64 = walk(&std::fs::canonicalize(out.join("current")).unwrap());
    println!(
        "| {n} | {} | {} ({} layouts in {}) | {} | {} | {} | {} | {:.1} MB | {} |",
        cold.files,
        ms(cold.elapsed),
        cold.layouts_computed,
        ms(cold.layout_time),
        ms(median(warm)),
        ms(median(disk)),
        phases,
        cold.agents,
        bytes as f64 / 1e6,
        ms(fixture_time),
    );
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

fn bench_layouts() {
    println!("\n| nodes | edges | engine | layout time |\n|---:|---:|---|---:|");
    for n in [5usize, 10, 20, 40, 100, 200, 500, 1000, 2000, 5000] {
        // Site-like graphs: the fixture's mesh on n agents.
        let mesh = fixture::mesh(n);
        let g = Graph {
            nodes: (0..n).map(|i| format!("n{i:05}")).collect(),
            edges: mesh
                .iter()
                .enumerate()
                .flat_map(|(i, ps)| ps.iter().filter(move |&&p| p > i).map(move |&p| (i, p)))
                .collect(),
        };
        let t = Instant::now();
        let l = layout::compute(&g);
        println!("| {n} | {} | {} | {} |", g.edges.len(), l.engine, ms(t.elapsed()));
    }
}

fn bench_watch(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kattila.db");
    let spec = fixture::FleetSpec::new(n);
    fixture::create(&db, &spec);
    let out = dir.path().join("site");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (db, out, stop) = (db.clone(), out.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut b = builder(&out);
            let opts = kattila_sitegen::watch::WatchOptions::default();
            kattila_sitegen::watch::watch(&db, &mut b, None, &opts, || {
                stop.load(std::sync::atomic::Ordering::Relaxed)
            })
            .unwrap();
        })
    };
    let link = |out: &Path| std::fs::read_link(out.join("current")).ok();
    while link(&out).is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let writer = kattila_store::open(&db).unwrap();
    let mut samples = Vec::new();
    let mut quiet = Duration::from_millis(300);
    for k in 0..15 {
        // Let the previous build finish first: each sample is one commit
        // into an idle watcher.
        std::thread::sleep(quiet);
        let before = link(&out);
        let t = Instant::now();
        // A change of what the dashboard shows, as the receiver commits it:
        // the row and the fleet state version in one transaction.
        writer.execute_batch("BEGIN").unwrap();
        writer
            .execute(
                "UPDATE agents SET last_seen = last_seen + 1 WHERE rowid = ?1",
                [k % n as i64 + 1],
            )
            .unwrap();
        kattila_store::audit::fleet_changed(&writer).unwrap();
        writer.execute_batch("COMMIT").unwrap();
        while link(&out) == before {
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(t.elapsed());
        quiet = (t.elapsed() * 2).max(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    samples.sort();
    println!(
        "| {n} | {} | {} | {} |",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1])
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![10, 1000, 10_000] } else { args };
    println!("| agents | files | cold build | warm build (same process) | warm build (layouts from disk) | read / render / write (warm) | agents read | site size | fixture creation |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        bench_size(n);
    }
    bench_layouts();
    println!("\n| agents | commit → published p50 | p90 | max |\n|---:|---:|---:|---:|");
    for &n in sizes.iter().filter(|&&n| n <= 1000) {
        bench_watch(n);
    }
}
