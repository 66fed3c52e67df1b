//! WireGuard devices through wireguard-control: kernel devices (links of
//! kind `wireguard`, read over generic netlink) and userspace devices
//! (wireguard-go and friends, read over their UAPI socket in
//! `/var/run/wireguard/NAME.sock`).
//!
//! wireguard-control's own userspace listing finds nothing on Linux (it
//! looks for `.name` files), so the sockets are enumerated here. The sockets
//! directory is shared by all network namespaces, so only sockets whose
//! interface exists in this namespace are read. Calls block, so they run on
//! the blocking pool. The `Device` they return holds the private key: it is
//! turned into the report's [`WgDevice`] at once and dropped; private and
//! preshared keys are never copied out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use kattila_proto::limits::{MAX_ALLOWED_IPS_PER_PEER, MAX_PEERS_PER_DEVICE, MAX_WG_DEVICES};
use kattila_proto::model::{WgDevice, WgPeer};
use wireguard_control::{Backend, Device, InterfaceName};

/// Where userspace implementations put their UAPI sockets.
pub const SOCKET_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];

/// The devices found, and what could not be read.
#[derive(Debug, Default)]
pub struct WireguardView {
    pub devices: Vec<WgDevice>,
    pub problems: Vec<String>,
}

/// Reads every WireGuard device of this namespace. `links` are the
/// (name, kind) pairs netlink listed.
pub async fn collect(links: Vec<(String, String)>) -> WireguardView {
    tokio::task::spawn_blocking(move || collect_blocking(&links, &SOCKET_DIRS))
        .await
        .unwrap_or_else(|e| WireguardView {
            devices: Vec::new(),
            problems: vec![format!("WireGuard collection failed: {e}")],
        })
}

fn collect_blocking(links: &[(String, String)], socket_dirs: &[&str]) -> WireguardView {
    let mut view = WireguardView::default();
    let present: HashSet<&str> = links.iter().map(|(n, _)| n.as_str()).collect();
    let mut targets: Vec<(String, Backend)> = links
        .iter()
        .filter(|(_, kind)| kind == "wireguard")
        .map(|(name, _)| (name.clone(), Backend::Kernel))
        .collect();
    let mut seen_dir = false;
    for dir in socket_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        seen_dir = true;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
            .filter(|n| present.contains(n.as_str()))
            .collect();
        names.sort();
        for name in names {
            if !targets.iter().any(|(n, _)| *n == name) {
                targets.push((name, Backend::Userspace));
            }
        }
        // /var/run is usually a symlink to /run: one directory is enough.
        if !targets.is_empty() {
            break;
        }
    }
    if targets.is_empty() {
        let where_ =
            if seen_dir { "no socket of a local interface" } else { "no socket directory" };
        view.problems.push(format!(
            "no WireGuard device: no kernel wireguard link, {where_} in {}",
            socket_dirs.join(" or ")
        ));
        return view;
    }
    if targets.len() > MAX_WG_DEVICES {
        view.problems.push(format!(
            "{} WireGuard devices, only the first {MAX_WG_DEVICES} reported",
            targets.len()
        ));
        targets.truncate(MAX_WG_DEVICES);
    }
    for (name, backend) in targets {
        match read_device(&name, backend) {
            Ok(Some(dev)) => view.devices.push(dev),
            Ok(None) => view.problems.push(format!("{name}: no private key configured yet")),
            Err(e) => view.problems.push(e),
        }
    }
    view
}

fn read_device(name: &str, backend: Backend) -> Result<Option<WgDevice>, String> {
    let iface: InterfaceName =
        name.parse().map_err(|e| format!("{name}: not a valid WireGuard interface name: {e}"))?;
    let device = Device::get(&iface, backend).map_err(|e| {
        let how = match backend {
            Backend::Userspace => "userspace socket",
            _ => "kernel netlink",
        };
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "{name} ({how}): permission denied; reading WireGuard needs root or CAP_NET_ADMIN"
            )
        } else {
            format!("{name} ({how}): {e}")
        }
    })?;
    Ok(to_report(name, device))
}

/// Converts and drops `device` (which holds the private key).
fn to_report(name: &str, device: Device) -> Option<WgDevice> {
    let public_key = device.public_key.as_ref()?.to_base64();
    let peers = device
        .peers
        .iter()
        .take(MAX_PEERS_PER_DEVICE)
        .map(|p| WgPeer {
            public_key: p.config.public_key.to_base64(),
            endpoint: p.config.endpoint.map(|e| e.to_string()),
            allowed_ips: p
                .config
                .allowed_ips
                .iter()
                .take(MAX_ALLOWED_IPS_PER_PEER)
                .map(|a| format!("{}/{}", a.address, a.cidr))
                .collect(),
            latest_handshake: p
                .stats
                .last_handshake_time
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .filter(|&s| s > 0),
            rx_bytes: p.stats.rx_bytes,
            tx_bytes: p.stats.tx_bytes,
            persistent_keepalive: p.config.persistent_keepalive_interval.filter(|&k| k > 0),
        })
        .collect();
    Some(WgDevice { name: name.to_string(), public_key, listen_port: device.listen_port, peers })
}

/// The socket a userspace device `name` would have, if any exists.
pub fn socket_path(name: &str) -> Option<PathBuf> {
    SOCKET_DIRS.iter().map(|d| Path::new(d).join(format!("{name}.sock"))).find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_device_is_recorded_as_a_problem_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A socket file of an interface that is not in this namespace is ignored.
        std::fs::write(dir.path().join("wgelsewhere.sock"), "").unwrap();
        let d = dir.path().to_str().unwrap();
        let view = collect_blocking(&[("lo".into(), "loopback".into())], &[d]);
        assert!(view.devices.is_empty());
        assert_eq!(view.problems.len(), 1);
        assert!(view.problems[0].contains("no WireGuard device"), "{:?}", view.problems);
    }
}
