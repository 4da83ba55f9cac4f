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

/// One `ports` entry, read: the host address (empty: any), the host ports (none: Docker picks a
/// free one), the container ports and the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub ip: &'a str,
    pub host: Option<(u16, u16)>,
    pub container: (u16, u16),
    pub protocol: &'a str,
}

/// Reads one `ports` entry.
pub fn parse(spec: &str) -> Result<Mapping<'_>, String> {
    let bad = |why: &str| format!("invalid port mapping {spec:?}: {why}");
    let (rest, protocol) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    if !["tcp", "udp", "sctp"].contains(&protocol) {
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
    let container = range(container).ok_or_else(|| bad("ports are numbers from 1 to 65535"))?;
    let host = match host {
        "" => None,
        host => Some(range(host).ok_or_else(|| bad("ports are numbers from 1 to 65535"))?),
    };
    // One container port may take a host range (Docker picks a free port of it); ranges on
    // both sides pair up.
    if let Some((h_first, h_last)) = host
        && container.0 != container.1
        && h_last - h_first != container.1 - container.0
    {
        return Err(bad("the host and container ranges differ in length"));
    }
    Ok(Mapping { ip, host, container, protocol })
}

impl std::fmt::Display for Mapping<'_> {
    /// The entry as `kapell check` reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports = |f: &mut std::fmt::Formatter<'_>, (first, last): (u16, u16)| {
            if first == last { write!(f, "{first}") } else { write!(f, "{first}-{last}") }
        };
        match self.ip {
            "" => {}
            ip if ip.contains(':') => write!(f, "[{ip}]:")?,
            ip => write!(f, "{ip}:")?,
        }
        if let Some(host) = self.host {
            ports(f, host)?;
            f.write_str(":")?;
        } else if !self.ip.is_empty() {
            f.write_str(":")?;
        }
        ports(f, self.container)?;
        if self.protocol != "tcp" {
            write!(f, "/{}", self.protocol)?;
        }
        Ok(())
    }
}

/// Adds the bindings of one `ports` entry to `map`.
pub fn add(map: &mut PortMap, spec: &str) -> Result<(), String> {
    let m = parse(spec)?;
    let (c_first, c_last) = m.container;
    let mut bind = |port: u16, host_port: String| {
        map.entry(format!("{port}/{}", m.protocol)).or_default().push(Binding { host_ip: m.ip.to_string(), host_port });
    };
    match m.host {
        None => (c_first..=c_last).for_each(|p| bind(p, String::new())),
        Some((h_first, h_last)) if c_first == c_last => {
            bind(c_first, if h_first == h_last { h_first.to_string() } else { format!("{h_first}-{h_last}") });
        }
        Some((h_first, h_last)) => (c_first..=c_last).zip(h_first..=h_last).for_each(|(c, h)| bind(c, h.to_string())),
    }
    Ok(())
}

/// How many host ports each container port of `spec` can be published on: 1 for a fixed host
/// port (or paired ranges), the size of a host range Docker picks a free port from; `None` when
/// Docker may pick any free port, or `spec` does not parse.
pub fn host_port_choices(spec: &str) -> Option<u32> {
    parse(spec).ok()?.host_port_choices()
}

impl Mapping<'_> {
    /// [`host_port_choices`] of this entry.
    pub fn host_port_choices(&self) -> Option<u32> {
        let (first, last) = self.host?;
        Some(if self.container.0 == self.container.1 { u32::from(last - first) + 1 } else { 1 })
    }
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
        assert_eq!(
            map(&["65534-65535:1-2"]),
            Ok(vec![("1/tcp".into(), vec![b("", "65534")]), ("2/tcp".into(), vec![b("", "65535")])])
        );
    }

    #[test]
    fn host_ports_to_choose_from() {
        assert_eq!(host_port_choices("8080:80"), Some(1));
        assert_eq!(host_port_choices("127.0.0.1:8080:80/udp"), Some(1));
        assert_eq!(host_port_choices("1000-1001:2000-2001"), Some(1), "paired: one host port each");
        assert_eq!(host_port_choices("8000-8010:80"), Some(11));
        assert_eq!(host_port_choices("80"), None);
        assert_eq!(host_port_choices("127.0.0.1::80"), None);
        assert_eq!(host_port_choices("nonsense"), None);
    }

    /// An entry reads back as what it was written as (the form of `kapell check`).
    #[test]
    fn mappings_are_written_as_read() {
        for spec in [
            "80",
            "8080:80",
            "127.0.0.1:8125:8125/udp",
            "127.0.0.1::80",
            "[::1]:80:81",
            "[::]::80/sctp",
            "1000-1001:2000-2001",
            "8000-8010:80",
        ] {
            assert_eq!(parse(spec).expect(spec).to_string(), spec);
        }
    }

    #[test]
    fn bad_specs() {
        for bad in ["", "0", "99999:80", "a:b", "80/icmp", "1:2:3:4", "1-3:1-2", "x:80:80", "[::1]80"] {
            assert!(map(&[bad]).is_err(), "{bad}");
        }
    }
}
