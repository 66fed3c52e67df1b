//! Which site an agent belongs to: the one rule by which the receiver
//! groups alarms into incidents and sitegen groups agents into clusters,
//! so that an incident's site is a cluster of the dashboard.

use crate::net::{network_of, shared_scope};

/// The site of an agent: the site label it reports when it has one, else
/// the network it is clustered by ([`site_network`]). None when it has
/// neither.
pub fn site_of<'a>(
    label: Option<&str>,
    interfaces: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Option<String> {
    match label.filter(|l| !l.is_empty()) {
        Some(label) => Some(label.to_string()),
        None => site_network(interfaces),
    }
}

/// The network an agent without a site label is clustered by, as
/// "network/prefix": its first LAN IPv4 network, else its first global
/// IPv6 network, else its WireGuard IPv4 network. A LAN says where a host
/// stands better than the overlay does, which every agent shares.
/// `interfaces` are (kind, addresses) in the order the agent's interfaces
/// are stored (by name).
pub fn site_network<'a>(
    interfaces: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Option<String> {
    // The first candidate of each rank, best rank first.
    let mut best: [Option<String>; 3] = [None, None, None];
    for (kind, addresses) in interfaces {
        if kind == "loopback" {
            continue;
        }
        let wireguard = kind == "wireguard";
        for address in addresses {
            let Some((net, len)) = network_of(address) else { continue };
            if !shared_scope(&net) || len == 0 {
                continue;
            }
            let rank = match (wireguard, net.is_ipv4()) {
                (false, true) => 0,
                (false, false) => 1,
                (true, true) => 2,
                (true, false) => continue,
            };
            best[rank].get_or_insert_with(|| format!("{net}/{len}"));
        }
    }
    best.into_iter().flatten().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces(list: &[(&'static str, &[&str])]) -> Vec<(&'static str, Vec<String>)> {
        list.iter().map(|(k, a)| (*k, a.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn site(label: Option<&str>, list: &[(&'static str, &[&str])]) -> Option<String> {
        let owned = ifaces(list);
        site_of(label, owned.iter().map(|(k, a)| (*k, a.as_slice())))
    }

    #[test]
    fn the_label_names_the_site_else_the_best_network() {
        let lan = [
            ("loopback", &["127.0.0.1/8"][..]),
            ("wireguard", &["10.99.0.3/24"][..]),
            ("ethernet", &["fe80::1/64", "2001:db8:5::7/64", "192.168.7.20/24"][..]),
        ];
        assert_eq!(site(Some("Helsinki"), &lan).as_deref(), Some("Helsinki"));
        // An empty label is no label.
        assert_eq!(site(Some(""), &lan).as_deref(), Some("192.168.7.0/24"));
        // LAN IPv4 before LAN IPv6, even when listed later.
        assert_eq!(site(None, &lan).as_deref(), Some("192.168.7.0/24"));
        let v6 = [("wireguard", &["10.99.0.3/24"][..]), ("ethernet", &["2001:db8:5::7/64"][..])];
        assert_eq!(site(None, &v6).as_deref(), Some("2001:db8:5::/64"));
        let wg_only = [("wireguard", &["fd00::3/64", "10.99.0.3/24"][..])];
        assert_eq!(site(None, &wg_only).as_deref(), Some("10.99.0.0/24"));
        let nothing = [("ethernet", &["169.254.1.1/16", "0.0.0.0/0"][..])];
        assert_eq!(site(None, &nothing), None);
    }
}
