//! Hostname, uptime, load and kernel release, read from `/proc`.

use anyhow::Context;
use kattila_proto::limits::{MAX_HOSTNAME, MAX_SHORT_STRING};
use kattila_proto::model::SystemInfo;

use super::truncate;

/// Reads (hostname, system info).
pub fn collect() -> anyhow::Result<(String, SystemInfo)> {
    let hostname = read("/proc/sys/kernel/hostname")?;
    let kernel = read("/proc/sys/kernel/osrelease")?;
    let uptime = parse_uptime(&read("/proc/uptime")?)?;
    let load = parse_loadavg(&read("/proc/loadavg")?)?;
    Ok((
        truncate(&hostname, MAX_HOSTNAME),
        SystemInfo { uptime_secs: uptime, load, kernel: truncate(&kernel, MAX_SHORT_STRING) },
    ))
}

fn read(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_string())
}

fn parse_uptime(text: &str) -> anyhow::Result<u64> {
    let first = text.split_whitespace().next().context("/proc/uptime is empty")?;
    let secs: f64 = first.parse().with_context(|| format!("/proc/uptime: bad value {first:?}"))?;
    anyhow::ensure!(secs.is_finite() && secs >= 0.0, "/proc/uptime: bad value {first:?}");
    Ok(secs as u64)
}

fn parse_loadavg(text: &str) -> anyhow::Result<[f64; 3]> {
    let mut load = [0.0; 3];
    let mut fields = text.split_whitespace();
    for slot in &mut load {
        let f = fields.next().context("/proc/loadavg has fewer than 3 fields")?;
        let v: f64 = f.parse().with_context(|| format!("/proc/loadavg: bad value {f:?}"))?;
        anyhow::ensure!(v.is_finite() && v >= 0.0, "/proc/loadavg: bad value {f:?}");
        *slot = v;
    }
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_uptime("12345.67 2345.00\n").unwrap(), 12345);
        assert_eq!(parse_loadavg("0.15 0.10 0.05 1/123 4567").unwrap(), [0.15, 0.10, 0.05]);
        assert!(parse_loadavg("0.1 x 0.2").is_err());
        assert!(parse_uptime("").is_err());
    }

    #[test]
    fn reads_this_host() {
        let (hostname, info) = collect().unwrap();
        assert!(!hostname.is_empty());
        assert!(!info.kernel.is_empty());
    }
}
