//! The host's own DNS servers, where names outside `.kapell` are forwarded: the servers
//! systemd-resolved uses (`/run/systemd/resolve/resolv.conf`), else those of
//! `/etc/resolv.conf`, less the responder itself and resolved's stub (either would loop).

use std::net::IpAddr;
use std::path::Path;

/// resolved's list of the servers it really uses (not its stub).
pub const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// resolved's stub listeners.
const STUBS: [IpAddr; 2] =
    [IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53)), IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 54))];

/// The servers to forward to, in the file's order, without any of `own`.
pub fn servers(own: &[IpAddr]) -> Vec<IpAddr> {
    let text = [RESOLVED_UPSTREAMS, RESOLV_CONF]
        .iter()
        .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .unwrap_or_default();
    parse(&text).into_iter().filter(|ip| !own.contains(ip) && !STUBS.contains(ip)).collect()
}

/// The `nameserver` lines of a resolv.conf text.
pub fn parse(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // A scoped IPv6 address (`fe80::1%eth0`) is left out: a socket address cannot carry it here.
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines() {
        let text = "# generated\nnameserver 10.0.0.1\nsearch example\nnameserver   fd00::53\nnameserver fe80::1%eth0\n\
                    options edns0\nnameserver\n";
        let got: Vec<String> = parse(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1", "fd00::53"]);
    }
}
