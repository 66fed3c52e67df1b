//! Sizes of the simulator's reports for a 1,000-agent fleet (min, p50, p90,
//! max, mean bytes), the figures docs/benchmarks.md quotes for the ingest
//! load: `cargo run -p kattila-agent --example report_sizes`. It lives with
//! the agent because it measures only the agent's reports.

fn main() {
    let fleet = kattila_agent::simulate::SimFleet::new("bench", 1000);
    let now = 1_767_225_600;
    let mut sizes: Vec<usize> = (0..1000)
        .map(|i| {
            let r = kattila_agent::report::build_report(
                &fleet.agents[i].agent_id,
                now,
                fleet.telemetry(i, now),
            );
            serde_json::to_vec(&r).unwrap().len()
        })
        .collect();
    sizes.sort();
    println!(
        "min {} p50 {} p90 {} max {} mean {}",
        sizes[0],
        sizes[500],
        sizes[900],
        sizes[999],
        sizes.iter().sum::<usize>() / 1000
    );
}
