//! `ports`: `docker run -p` syntax turned into the Engine API's exposed ports and port bindings (the
//! supervisor), and into the host ports other hosts reach a service on (discovery).
//!
//! `[IP:][HOST:]CONTAINER[/PROTO]` with IPv6 addresses in brackets, as `kapell check` accepts it.
//! `80` publishes container port 80 on a random host port, `IP::80` does so on one address;
//! ranges pair up (`8000-8001:80-81`), and a host range for one container port lets Docker pick one.

use std::collections::BTreeMap;

/// One host side of a published port; empty strings mean "any address" and "a random port".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub host_ip: String,
    pub host_port: String,
}

/// Container port (`80/tcp`) → its host bindings, ordered so the request is deterministic.
pub type PortMap = BTreeMap<String, Vec<Binding>>;

/// Adds the bindings of one `ports` entry to `map`.
pub fn add(map: &mut PortMap, spec: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid port mapping {spec:?}: {why}");
    let (rest, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    if !["tcp", "udp", "sctp"].contains(&proto) {
        return Err(bad("the protocol must be tcp, udp or sctp"));
    }
    let (ip, ports) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, ports) =
                bracketed.split_once("]:").ok_or_else(|| bad("an IPv6 address must be followed by ':'"))?;
            (ip, ports)
        }
        None => match rest.matches(':').count() {
            0 | 1 => ("", rest),
            2 => rest.split_once(':').unwrap_or(("", rest)),
            _ => return Err(bad("expected [IP:][HOST:]CONTAINER[/PROTO]")),
        },
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("the address is not an IP address"));
    }
    let (host, container) = ports.split_once(':').unwrap_or(("", ports));
    let (c_first, c_last) = range(container).ok_or_else(|| bad("ports are numbers from 1 to 65535"))?;
    let mut bind = |port: u16, host_port: String| {
        map.entry(format!("{port}/{proto}")).or_default().push(Binding { host_ip: ip.to_string(), host_port });
    };
    if host.is_empty() {
        (c_first..=c_last).for_each(|p| bind(p, String::new()));
        return Ok(());
    }
    let (h_first, h_last) = range(host).ok_or_else(|| bad("ports are numbers from 1 to 65535"))?;
    if c_first == c_last {
        // One container port, maybe a host range: Docker picks a free port of the range.
        bind(c_first, host.to_string());
    } else if h_last - h_first == c_last - c_first {
        for (c, h) in (c_first..=c_last).zip(h_first..=h_last) {
            bind(c, h.to_string());
        }
    } else {
        return Err(bad("the host and container ranges differ in length"));
    }
    Ok(())
}

/// `N` or `N-M` with `0 < N <= M`.
fn range(s: &str) -> Option<(u16, u16)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
    match s.split_once('-') {
        Some((a, b)) => Some((port(a)?, port(b)?)).filter(|(a, b)| a <= b),
        None => port(s).map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flat = Vec<(String, Vec<(String, String)>)>;

    fn map(specs: &[&str]) -> Result<Flat, String> {
        let mut m = PortMap::new();
        for s in specs {
            add(&mut m, s)?;
        }
        Ok(m.into_iter().map(|(k, v)| (k, v.into_iter().map(|b| (b.host_ip, b.host_port)).collect())).collect())
    }

    fn b(ip: &str, port: &str) -> (String, String) {
        (ip.to_string(), port.to_string())
    }

    #[test]
    fn docker_run_p_syntax() {
        assert_eq!(map(&["80"]), Ok(vec![("80/tcp".into(), vec![b("", "")])]));
        assert_eq!(map(&["8080:80", "8081:80"]), Ok(vec![("80/tcp".into(), vec![b("", "8080"), b("", "8081")])]));
        assert_eq!(map(&["127.0.0.1:8125:8125/udp"]), Ok(vec![("8125/udp".into(), vec![b("127.0.0.1", "8125")])]));
        assert_eq!(map(&["127.0.0.1::80"]), Ok(vec![("80/tcp".into(), vec![b("127.0.0.1", "")])]));
        assert_eq!(map(&["[::1]:80:81"]), Ok(vec![("81/tcp".into(), vec![b("::1", "80")])]));
        assert_eq!(
            map(&["1000-1001:2000-2001"]),
            Ok(vec![("2000/tcp".into(), vec![b("", "1000")]), ("2001/tcp".into(), vec![b("", "1001")])])
        );
        assert_eq!(map(&["8000-8010:80"]), Ok(vec![("80/tcp".into(), vec![b("", "8000-8010")])]));
    }

    #[test]
    fn bad_specs() {
        for bad in ["", "0", "99999:80", "a:b", "80/icmp", "1:2:3:4", "1-3:1-2", "x:80:80", "[::1]80"] {
            assert!(map(&[bad]).is_err(), "{bad}");
        }
    }
}
