//! Who the responder serves: this host's own processes (loopback and the host's addresses) and
//! the containers of kapell's networks on this host. Everyone else is refused, for `.kapell`
//! names and forwarding alike: the responder is not an open resolver.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// This host's addresses.
    pub local: Vec<IpAddr>,
    /// The subnets of kapell's container networks on this host.
    pub networks: Vec<IpNet>,
}

impl Access {
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        source.is_loopback() || self.local.contains(&source) || self.networks.iter().any(|n| n.contains(&source))
    }
}

/// An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every address of this host's interfaces.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_its_networks_only() {
        let access = Access {
            local: vec!["10.231.0.11".parse().expect("ip")],
            networks: vec!["10.232.5.0/27".parse().expect("net")],
        };
        for ok in ["127.0.0.1", "127.0.0.153", "::1", "10.231.0.11", "10.232.5.7", "::ffff:10.232.5.7"] {
            assert!(access.allows(ok.parse().expect("ip")), "{ok}");
        }
        for refused in ["10.231.0.12", "10.232.5.33", "192.0.2.1", "fd00::1"] {
            assert!(!access.allows(refused.parse().expect("ip")), "{refused}");
        }
    }
}
