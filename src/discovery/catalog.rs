//! The catalog: what a host's responder answers for, as data (see docs/discovery.md).
//!
//! One JSON file, `catalog.json`, next to the unit files of a received generation (so it is
//! installed, reverted and kept across reboots with them), or built from the local stacks on a
//! host without a fleet. For every service: the hosts it runs on with their `ip`, the ports it
//! publishes there, and its health check, so each host's responder can probe every instance
//! itself and keep answering when the controller is gone.

use crate::model::{Check as ModelCheck, Kind, Service, Stack};
use crate::ports::{self, PortMap};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;

/// The catalog's file name in a generation directory.
pub const FILE: &str = crate::names::CATALOG_FILE;

/// The format version; a responder refuses a catalog of another version rather than misread it.
pub const VERSION: u32 = 1;

/// The DNS domain every name lives under.
pub const DOMAIN: &str = "kapell";

/// The probe interval when a service's check does not say (the health checks' own default).
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u32,
    /// The host the catalog was made for: its own instances are also known to its systemd.
    pub host: String,
    /// Sorted by stack, then service.
    pub services: Vec<CatalogService>,
}

/// One service of the fleet (or of this host's stacks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogService {
    pub stack: String,
    pub service: String,
    /// A container on a network of its own, whose ports are published; `false`: it listens on
    /// the host's own ports (a native service, or a container with `network = "host"`).
    pub container: bool,
    /// Ports published on every host it runs on, reachable from other hosts (bindings to a
    /// loopback address are left out).
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// The service's `http`/`tcp` health check, if it has one of these kinds.
    #[serde(default)]
    pub check: Option<Check>,
    pub interval_ms: u64,
    /// The check's own timeout (its `timeout`, or the default); absent from a catalog written
    /// before it was carried (the responder then allows half the interval, at most 2 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// One per host, sorted by host name.
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// The port on the host.
    pub host: u16,
    /// The port inside the container (what a check names).
    pub target: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A health check the responder can run from any host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Check {
    Tcp { port: u16 },
    Http { port: u16, path: String, expect: String },
}

impl Check {
    pub fn port(&self) -> u16 {
        match self {
            Check::Tcp { port } | Check::Http { port, .. } => *port,
        }
    }
}

/// The service on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub host: String,
    pub ip: IpAddr,
    /// Its units there (one, or one per replica).
    pub units: Vec<String>,
    /// What the controller last saw; `None`: not known (it counts as healthy until a probe or
    /// systemd says otherwise).
    #[serde(default)]
    pub healthy: Option<bool>,
}

impl CatalogService {
    /// `<service>.<stack>.kapell.`
    pub fn name(&self) -> String {
        format!("{}.{}.{DOMAIN}.", self.service, self.stack)
    }

    /// `_<service>._tcp.<stack>.kapell.`
    pub fn srv_name(&self) -> String {
        format!("_{}._tcp.{}.{DOMAIN}.", self.service, self.stack)
    }

    /// Where the responder probes the instance on `ip`: the check's port as published on the
    /// host for a container, the port itself for a native service. `None`: no check, or a check
    /// on a port other hosts cannot reach.
    pub fn probe_port(&self) -> Option<u16> {
        let check = self.check.as_ref()?;
        if !self.container {
            return Some(check.port());
        }
        self.ports.iter().find(|p| p.protocol == Protocol::Tcp && p.target == check.port()).map(|p| p.host)
    }

    /// The TCP ports SRV records name: the published ones, else (native) the check's. A
    /// container's check port is its own, not the host's: without a published port, none.
    pub fn srv_ports(&self) -> Vec<u16> {
        let published: Vec<u16> = self.ports.iter().filter(|p| p.protocol == Protocol::Tcp).map(|p| p.host).collect();
        if published.is_empty() && !self.container { self.check.iter().map(Check::port).collect() } else { published }
    }
}

/// Where a service runs: a host's name and `ip`, and the units of the service there.
pub struct Placement<'a> {
    pub host: &'a str,
    pub ip: IpAddr,
    pub stacks: &'a [Stack],
}

/// The catalog for `host` of the services placed on `placements` (every host, this one included).
pub fn build(host: &str, placements: &[Placement<'_>]) -> Catalog {
    let mut services: Vec<CatalogService> = Vec::new();
    for placement in placements {
        for stack in placement.stacks {
            for service in stack.services() {
                let instance = Instance {
                    host: placement.host.to_string(),
                    ip: placement.ip,
                    units: service.running_units(&stack.name),
                    healthy: None,
                };
                match services.iter_mut().find(|s| s.stack == *stack.name && s.service == *service.name) {
                    Some(entry) => entry.instances.push(instance),
                    None => services.push(describe(stack, service, instance)),
                }
            }
        }
    }
    for s in &mut services {
        s.instances.sort_by(|a, b| a.host.cmp(&b.host));
    }
    services.sort_by(|a, b| (&a.stack, &a.service).cmp(&(&b.stack, &b.service)));
    Catalog { version: VERSION, host: host.to_string(), services }
}

fn describe(stack: &Stack, service: &Service, instance: Instance) -> CatalogService {
    // A container on the host's network listens on the host's ports, as a native service does:
    // Docker publishes nothing for it (`kapell check` warns of its `ports`).
    let ports = match &service.kind {
        Kind::Container(c) if !on_host_ports(service) => published(&c.ports),
        _ => Vec::new(),
    };
    let interval_ms = service.health.as_ref().map_or(DEFAULT_INTERVAL_MS, |h| h.interval().as_micros() / 1000);
    let check = check_of(service);
    let timeout_ms = check.as_ref().and(service.health.as_ref()).map(|h| (h.timeout().as_micros() / 1000).max(1));
    CatalogService {
        stack: stack.name.to_string(),
        service: service.name.to_string(),
        container: !on_host_ports(service),
        ports,
        check,
        interval_ms: interval_ms.max(1),
        timeout_ms,
        instances: vec![instance],
    }
}

/// Whether the service listens on its host's own ports rather than on published ones.
fn on_host_ports(service: &Service) -> bool {
    match &service.kind {
        Kind::Container(c) => c.network.as_deref() == Some("host"),
        Kind::Native(_) => true,
    }
}

/// The service's check, as far as the responder can run it from another host: `http` and `tcp`
/// (a `cmd` check runs inside the container or as the service's user, which only its own host
/// can do: those instances follow systemd on their host and the controller's word elsewhere).
fn check_of(service: &Service) -> Option<Check> {
    match &service.health.as_ref()?.check {
        ModelCheck::Http { port, path, expect } => {
            Some(Check::Http { port: *port, path: path.clone(), expect: expect.to_string() })
        }
        ModelCheck::Tcp { port } => Some(Check::Tcp { port: *port }),
        ModelCheck::Cmd(_) => None,
    }
}

/// The host ports of `ports` entries that other hosts can reach: fixed host ports bound to every
/// address or to a non-loopback one.
fn published(specs: &[String]) -> Vec<PublishedPort> {
    let mut map = PortMap::new();
    for spec in specs {
        // Validated when the stack was read; an entry that does not parse publishes nothing.
        let _ = ports::add(&mut map, spec);
    }
    let mut out = Vec::new();
    for (target, bindings) in &map {
        let Some((port, proto)) = target.split_once('/') else { continue };
        let (Ok(target), Some(protocol)) = (port.parse::<u16>(), protocol(proto)) else { continue };
        for binding in bindings {
            let reachable = binding.host_ip.parse::<IpAddr>().map_or(true, |ip| !ip.is_loopback());
            if let (true, Ok(host)) = (reachable, binding.host_port.parse::<u16>()) {
                out.push(PublishedPort { host, target, protocol });
            }
        }
    }
    out
}

fn protocol(s: &str) -> Option<Protocol> {
    match s {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

impl Catalog {
    /// Compact: it travels in every host's set (a 1,000-service catalog is a few hundred KB).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: encoding cannot fail.
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }

    pub fn parse(text: &str) -> Result<Catalog, String> {
        let catalog: Catalog = serde_json::from_str(text).map_err(|e| format!("not a kapell catalog: {e}"))?;
        if catalog.version != VERSION {
            return Err(format!(
                "catalog version {} is not the version {VERSION} this kapell reads: install the same kapell \
                 version on the controller and this host",
                catalog.version
            ));
        }
        Ok(catalog)
    }

    /// Reads `dir/catalog.json`, with the host's name from `dir/catalog-host` (a fleet's catalog
    /// is the same for every host); `Ok(None)` when the directory has no catalog.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Catalog>> {
        let path = dir.join(FILE);
        let mut catalog = match std::fs::read_to_string(&path) {
            Ok(text) => Catalog::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        };
        // A catalog received before the name travelled beside it carries the name itself.
        if let Some(host) = read_host(dir)? {
            catalog.host = host;
        }
        Ok(Some(catalog))
    }
}

/// The name the fleet gives this host, from `dir/catalog-host` (one line, written beside the
/// catalog of a received generation); `None` when there is no such file.
pub fn read_host(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join(crate::names::CATALOG_HOST_FILE);
    match std::fs::read_to_string(&path) {
        Ok(mut host) => {
            if host.ends_with('\n') {
                host.pop();
            }
            Ok(Some(host))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn stack(name: &str, text: &str) -> Stack {
        let parsed = crate::config::parse_stack(&PathBuf::from(format!("/etc/kapell/{name}.toml")), text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.stack.expect("stack")
    }

    /// A fleet's catalog names no host: the name beside it does; a catalog written before that
    /// (the name inside) still reads with its own.
    #[test]
    fn the_hosts_name_is_read_from_beside_the_catalog() {
        let dir = tempfile::tempdir().expect("dir");
        let fleet = Catalog { version: VERSION, host: String::new(), services: Vec::new() };
        std::fs::write(dir.path().join(FILE), fleet.to_json()).expect("write");
        std::fs::write(dir.path().join(crate::names::CATALOG_HOST_FILE), "h2\n").expect("write");
        assert_eq!(Catalog::load(dir.path()).expect("load").expect("catalog").host, "h2");
        std::fs::remove_file(dir.path().join(crate::names::CATALOG_HOST_FILE)).expect("rm");
        let old = Catalog { host: "h1".into(), ..fleet };
        std::fs::write(dir.path().join(FILE), old.to_json()).expect("write");
        assert_eq!(Catalog::load(dir.path()).expect("load").expect("catalog").host, "h1");
        std::fs::remove_file(dir.path().join(FILE)).expect("rm");
        assert_eq!(Catalog::load(dir.path()).expect("load"), None);
    }

    #[test]
    fn one_entry_per_service_with_every_host() {
        let data = stack(
            "data",
            "[services.db]\nimage = \"x\"\nports = [\"15432:5432\", \"127.0.0.1:9000:9000\", \"53:53/udp\", \"80\"]\n",
        );
        let web = stack("web", "[services.web]\nexec = [\"/bin/true\"]\nreplicas = 2\n");
        let h1: IpAddr = "10.0.0.1".parse().expect("ip");
        let h3: IpAddr = "10.0.0.3".parse().expect("ip");
        let placements = [
            Placement { host: "h3", ip: h3, stacks: std::slice::from_ref(&data) },
            Placement { host: "h1", ip: h1, stacks: &[data.clone(), web.clone()] },
        ];
        let catalog = build("h1", &placements);
        assert_eq!(catalog.host, "h1");
        let db = &catalog.services[0];
        assert_eq!(db.name(), "db.data.kapell.");
        assert_eq!(db.srv_name(), "_db._tcp.data.kapell.");
        assert_eq!(db.instances.iter().map(|i| i.host.as_str()).collect::<Vec<_>>(), ["h1", "h3"]);
        assert_eq!(
            db.ports,
            [
                PublishedPort { host: 53, target: 53, protocol: Protocol::Udp },
                PublishedPort { host: 15432, target: 5432, protocol: Protocol::Tcp },
            ]
        );
        assert_eq!(db.srv_ports(), [15432]);
        let web = &catalog.services[1];
        assert_eq!(web.instances[0].units, ["web-web@1.service", "web-web@2.service"]);
        let text = catalog.to_json();
        assert_eq!(Catalog::parse(&text).expect("parse"), catalog);
    }

    #[test]
    fn a_check_is_probed_where_other_hosts_reach_it() {
        let mut s = CatalogService {
            stack: "data".into(),
            service: "db".into(),
            container: true,
            ports: vec![PublishedPort { host: 15432, target: 5432, protocol: Protocol::Tcp }],
            check: Some(Check::Tcp { port: 5432 }),
            interval_ms: 1000,
            timeout_ms: None,
            instances: vec![],
        };
        assert_eq!(s.probe_port(), Some(15432));
        assert_eq!(s.srv_ports(), [15432]);
        s.check = Some(Check::Tcp { port: 9999 });
        assert_eq!(s.probe_port(), None, "a container port that is not published");
        s.ports.clear();
        assert_eq!(s.srv_ports(), [] as [u16; 0], "a container's own port is not the host's");
        s.container = false;
        assert_eq!(s.probe_port(), Some(9999), "a native service listens on the host's port");
        assert_eq!(s.srv_ports(), [9999]);
        s.check = None;
        assert_eq!(s.probe_port(), None);
    }

    /// A container on the host's network is probed and named at the host's own port: Docker
    /// publishes none of its `ports`, so a mapping there would send the probe to a closed port.
    #[test]
    fn a_container_on_the_host_network_listens_on_the_hosts_ports() {
        let text =
            "[services.db]\nimage = \"x\"\nnetwork = \"host\"\nports = [\"15432:5432\"]\nhealth = { tcp = 5432 }\n";
        // Read with its warning (the ignored `ports`), which the helper above does not allow.
        let data = crate::config::parse_stack(&PathBuf::from("/etc/kapell/data.toml"), text).stack.expect("stack");
        let h1: IpAddr = "10.0.0.1".parse().expect("ip");
        let catalog = build("h1", &[Placement { host: "h1", ip: h1, stacks: std::slice::from_ref(&data) }]);
        let db = &catalog.services[0];
        assert!(!db.container && db.ports.is_empty(), "{db:?}");
        assert_eq!(
            db.timeout_ms,
            Some(crate::model::Health::DEFAULT_TIMEOUT.as_micros() / 1000),
            "the check's default"
        );
        assert_eq!(db.probe_port(), Some(5432));
        assert_eq!(db.srv_ports(), [5432]);
    }

    #[test]
    fn other_versions_are_refused() {
        let text = Catalog { version: 99, ..Catalog::default() }.to_json();
        assert!(Catalog::parse(&text).expect_err("v99").contains("version 99"));
        assert!(Catalog::parse("{\"version\":1,\"host\":\"a\",\"services\":[],\"x\":1}").is_err());
    }
}
