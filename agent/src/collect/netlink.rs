//! Links, addresses and routes over rtnetlink (no root needed). The route
//! dump covers every table (main, local, policy tables).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::stream::TryStreamExt;
use kattila_proto::limits::{MAX_ADDRESSES_PER_INTERFACE, MAX_INTERFACES, MAX_ROUTES};
use kattila_proto::model::{Interface, Route};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkLayerType, LinkMessage, State};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::Connection;
use rtnetlink::RouteMessageBuilder;

/// What netlink reported, plus what had to be left out.
#[derive(Debug, Default)]
pub struct NetlinkView {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    /// Non-fatal problems (a failed address or route dump, truncation).
    pub problems: Vec<String>,
}

/// A route netlink socket kept open from one cycle to the next: opening a
/// socket, with the 64 KiB receive buffer that comes with it, cost more
/// than the dumps themselves.
#[derive(Default)]
pub struct Netlink {
    open: Option<(Connection<RouteNetlinkMessage>, rtnetlink::Handle)>,
}

impl Netlink {
    /// Dumps links, addresses and routes. Fails only when netlink itself is
    /// unusable; a failing address or route dump is recorded in `problems`.
    pub async fn collect(&mut self) -> anyhow::Result<NetlinkView> {
        let (connection, handle) = match &mut self.open {
            Some(open) => open,
            None => {
                let (connection, handle, _) = rtnetlink::new_connection()?;
                self.open.insert((connection, handle))
            }
        };
        // The connection is the future that does the socket's I/O. It is
        // polled here, beside the dump, instead of running as a task of its
        // own: nothing arrives between cycles (no multicast groups), and
        // one task saves a thread wake-up for every request and answer.
        let result = tokio::select! {
            result = dump(handle) => result,
            () = connection => Err(anyhow::anyhow!("the netlink socket closed")),
        };
        if result.is_err() {
            // Start again from a fresh socket next cycle.
            self.open = None;
        }
        result
    }
}

async fn dump(handle: &rtnetlink::Handle) -> anyhow::Result<NetlinkView> {
    let mut view = NetlinkView::default();
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    let mut names: HashMap<u32, usize> = HashMap::new();
    for link in &links {
        if view.interfaces.len() >= MAX_INTERFACES {
            view.problems.push(format!(
                "{} interfaces, only the first {MAX_INTERFACES} reported",
                links.len()
            ));
            break;
        }
        if let Some(iface) = interface_from(link) {
            names.insert(link.header.index, view.interfaces.len());
            view.interfaces.push(iface);
        }
    }

    match handle.address().get().execute().try_collect::<Vec<AddressMessage>>().await {
        Ok(addresses) => {
            let mut truncated = false;
            for msg in &addresses {
                let (Some(&i), Some(addr)) = (names.get(&msg.header.index), address_of(msg)) else {
                    continue;
                };
                let list = &mut view.interfaces[i].addresses;
                if list.len() >= MAX_ADDRESSES_PER_INTERFACE {
                    truncated = true;
                    continue;
                }
                list.push(format!("{addr}/{}", msg.header.prefix_len));
            }
            if truncated {
                view.problems.push(format!(
                    "an interface has more than {MAX_ADDRESSES_PER_INTERFACE} addresses; the rest are left out"
                ));
            }
        }
        Err(e) => view.problems.push(format!("address dump failed: {e}")),
    }

    let index_name = |index: u32| names.get(&index).map(|&i| view.interfaces[i].name.clone());
    let mut routes = Vec::new();
    let mut total = 0usize;
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let family = request.header.address_family;
        match handle.route().get(request).execute().try_collect::<Vec<RouteMessage>>().await {
            Ok(msgs) => {
                for msg in &msgs {
                    for route in routes_from(msg, &index_name) {
                        total += 1;
                        if routes.len() < MAX_ROUTES {
                            routes.push(route);
                        }
                    }
                }
            }
            Err(e) => view.problems.push(format!("{family:?} route dump failed: {e}")),
        }
    }
    if total > MAX_ROUTES {
        view.problems.push(format!("{total} routes, only the first {MAX_ROUTES} reported"));
    }
    view.routes = routes;
    Ok(view)
}

fn interface_from(link: &LinkMessage) -> Option<Interface> {
    let mut name = None;
    let mut kind = None;
    let mut mtu = 0;
    let mut mac = None;
    let mut state = "unknown";
    let (mut rx_bytes, mut tx_bytes, mut rx_errors, mut tx_errors) = (0, 0, 0, 0);
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(bytes) => mac = format_mac(bytes),
            LinkAttribute::OperState(s) => state = state_name(s),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            LinkAttribute::Stats64(s) => {
                (rx_bytes, tx_bytes, rx_errors, tx_errors) =
                    (s.rx_bytes, s.tx_bytes, s.rx_errors, s.tx_errors)
            }
            _ => {}
        }
    }
    let name = name.filter(|n| !n.is_empty())?;
    let kind = kind.unwrap_or_else(|| match link.header.link_layer_type {
        LinkLayerType::Loopback => "loopback".into(),
        LinkLayerType::Ether => "ether".into(),
        LinkLayerType::None => "none".into(),
        other => format!("{other:?}").to_lowercase(),
    });
    if link.header.link_layer_type == LinkLayerType::Loopback {
        mac = None;
    }
    Some(Interface {
        name,
        kind,
        state: state.into(),
        mtu,
        mac,
        addresses: Vec::new(),
        rx_bytes,
        tx_bytes,
        rx_errors,
        tx_errors,
    })
}

fn state_name(s: &State) -> &'static str {
    match s {
        State::Up => "up",
        State::Down => "down",
        State::Dormant => "dormant",
        State::LowerLayerDown => "lowerlayerdown",
        State::NotPresent => "notpresent",
        State::Testing => "testing",
        _ => "unknown",
    }
}

/// Colon-separated lowercase hex; `None` for empty or all-zero addresses.
fn format_mac(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        return None;
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// The interface's own address: IFA_LOCAL when present (point-to-point
/// links put the peer in IFA_ADDRESS), IFA_ADDRESS otherwise.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn routes_from(msg: &RouteMessage, index_name: &impl Fn(u32) -> Option<String>) -> Vec<Route> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return Vec::new(),
    };
    let mut dst = unspecified;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    let mut table = u32::from(msg.header.table);
    let mut multipath = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a).unwrap_or(unspecified),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let dst = format!("{dst}/{}", msg.header.destination_prefix_length);
    let route = |gateway: Option<IpAddr>, oif: Option<u32>| Route {
        dst: dst.clone(),
        gateway: gateway.map(|g| g.to_string()),
        dev: oif.and_then(index_name),
        metric,
        table,
    };
    match multipath {
        // One route per next hop of a multipath (ECMP) route.
        Some(hops) if !hops.is_empty() => hops
            .iter()
            .map(|hop| {
                let gw = hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => ip_of(g),
                    _ => None,
                });
                route(gw, Some(hop.interface_index))
            })
            .collect(),
        _ => vec![route(gateway, oif)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lowercase_and_zero_is_none() {
        assert_eq!(format_mac(&[0x52, 0x54, 0, 0xAB, 1, 2]).as_deref(), Some("52:54:00:ab:01:02"));
        assert_eq!(format_mac(&[0; 6]), None);
        assert_eq!(format_mac(&[]), None);
    }

    #[tokio::test]
    async fn this_host_has_a_loopback_with_its_address_and_local_routes() {
        let view = Netlink::default().collect().await.expect("netlink works without root");
        let lo = view.interfaces.iter().find(|i| i.name == "lo").expect("lo is listed");
        assert_eq!(lo.kind, "loopback");
        assert!(lo.mac.is_none());
        assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{:?}", lo.addresses);
        // The local table (255) is part of the dump.
        assert!(view.routes.iter().any(|r| r.table == 255 && r.dev.as_deref() == Some("lo")));
        for iface in &view.interfaces {
            for a in &iface.addresses {
                kattila_proto::limits::check_cidr("address", a).unwrap();
            }
        }
    }
}
