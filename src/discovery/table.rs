//! The answers, ready to send: every name of the catalog with its records, rebuilt whenever an
//! instance's health changes, so a query costs one hash lookup and no allocation of records.
//!
//! - `<service>.<stack>.kapell` A/AAAA: the `ip` of every host with a healthy instance;
//! - `_<service>._tcp.<stack>.kapell` SRV: one record per healthy host and published TCP port,
//!   its target `<host>.host.kapell`, whose address comes along in the additional section;
//! - `<host>.host.kapell` A/AAAA: that host's `ip` (the SRV targets).
//!
//! A name of the catalog with no healthy instance is answered with no records (NOERROR); a name
//! under `kapell.` that the catalog does not know, with NXDOMAIN.

use super::catalog::{Catalog, DOMAIN};
use super::health::{HealthMap, healthy_ips};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Seconds a resolver may keep an answer: short, so health changes reach clients quickly.
pub const TTL: u32 = 2;

/// The records of one name.
#[derive(Debug, Default)]
pub struct Entry {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    pub srv: Vec<Record>,
    /// Addresses of the SRV targets.
    pub additional: Vec<Record>,
}

impl Entry {
    pub fn answers(&self, kind: RecordType) -> &[Record] {
        match kind {
            RecordType::A => &self.a,
            RecordType::AAAA => &self.aaaa,
            RecordType::SRV => &self.srv,
            _ => &[],
        }
    }
}

/// Every name the responder answers, lower case with the trailing dot.
#[derive(Debug, Default)]
pub struct Table {
    names: HashMap<String, Entry>,
    /// Name → the addresses it answers now, for `kapell status` (only service names).
    pub summary: BTreeMap<String, Vec<(String, IpAddr)>>,
}

impl Table {
    pub fn build(catalog: &Catalog, health: &HealthMap) -> Table {
        let mut table = Table::default();
        for (i, service) in catalog.services.iter().enumerate() {
            let healthy = healthy_ips(catalog, health, i);
            let name = service.name();
            let entry = table.names.entry(name.clone()).or_default();
            if let Ok(owner) = Name::from_ascii(&name) {
                for (_, ip) in &healthy {
                    push_address(entry, &owner, *ip);
                }
            }
            let srv_entry_name = service.srv_name();
            let mut srv = Entry::default();
            if let Ok(owner) = Name::from_ascii(&srv_entry_name) {
                for (host, ip) in &healthy {
                    let Ok(target) = Name::from_ascii(host_name(host)) else { continue };
                    for port in service.srv_ports() {
                        srv.srv.push(Record::from_rdata(
                            owner.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, 0, port, target.clone())),
                        ));
                    }
                    push_address(&mut srv, &target, *ip);
                }
            }
            // push_address filled a/aaaa of the SRV name: those belong in the additional section.
            srv.additional = std::mem::take(&mut srv.a);
            srv.additional.append(&mut srv.aaaa);
            table.names.insert(srv_entry_name, srv);
            table.summary.insert(name.trim_end_matches('.').to_string(), healthy);
            for instance in &service.instances {
                let host = host_name(&instance.host);
                if let (Ok(owner), false) = (Name::from_ascii(&host), table.names.contains_key(&host)) {
                    let entry = table.names.entry(host).or_default();
                    push_address(entry, &owner, instance.ip);
                }
            }
        }
        // A name with names below it exists (`kapell.`, `data.kapell.`, `_tcp.data.kapell.`):
        // NOERROR with no records, not NXDOMAIN, which says that nothing below it exists either
        // (RFC 8020) and lets a resolver that trusts it stop asking for every name below.
        let mut parents: Vec<String> = vec![format!("{DOMAIN}.")];
        for name in table.names.keys() {
            parents.extend(ancestors(name).map(str::to_string));
        }
        for parent in parents {
            table.names.entry(parent).or_default();
        }
        table
    }

    /// The entry of `name` (lower case, with the trailing dot), if the catalog has it.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.names.get(name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The names above `name` up to `kapell.` itself: `db.data.kapell.` → `data.kapell.`, `kapell.`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..]).filter(|parent| {
        let under = parent.strip_suffix('.').and_then(|p| p.strip_suffix(DOMAIN));
        under.is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    })
}

/// `<host>.host.kapell.`, the name of a host's address.
pub fn host_name(host: &str) -> String {
    format!("{}.host.{DOMAIN}.", host.to_ascii_lowercase())
}

fn push_address(entry: &mut Entry, owner: &Name, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => entry.a.push(Record::from_rdata(owner.clone(), TTL, RData::A(A(v4)))),
        IpAddr::V6(v6) => entry.aaaa.push(Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(v6)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_above_a_name_exist_up_to_the_apex() {
        assert_eq!(
            ancestors("_db._tcp.data.kapell.").collect::<Vec<_>>(),
            ["_tcp.data.kapell.", "data.kapell.", "kapell."]
        );
        assert_eq!(ancestors("kapell.").count(), 0);
        assert_eq!(ancestors("a.notkapell.").count(), 0);
    }
    use crate::discovery::catalog::{CatalogService, Instance, Protocol, PublishedPort, VERSION};

    fn catalog() -> Catalog {
        let instance = |host: &str, ip: &str| Instance {
            host: host.into(),
            ip: ip.parse().expect("ip"),
            units: vec!["data-db.service".into()],
            healthy: None,
        };
        Catalog {
            version: VERSION,
            host: "h9".into(),
            services: vec![CatalogService {
                stack: "data".into(),
                service: "db".into(),
                container: true,
                ports: vec![PublishedPort { host: 15432, target: 5432, protocol: Protocol::Tcp }],
                check: None,
                interval_ms: 1000,
                timeout_ms: None,
                instances: vec![instance("h1", "10.0.0.1"), instance("h3", "fd00::3")],
            }],
        }
    }

    #[test]
    fn names_answer_healthy_hosts_only() {
        let c = catalog();
        let mut health = HealthMap::initial(&c);
        let table = Table::build(&c, &health);
        let db = table.get("db.data.kapell.").expect("db");
        assert_eq!(db.a.len(), 1);
        assert_eq!(db.aaaa.len(), 1);
        let srv = table.get("_db._tcp.data.kapell.").expect("srv");
        assert_eq!(srv.srv.len(), 2);
        assert_eq!(srv.additional.len(), 2);
        assert!(
            matches!(&srv.srv[0].data, RData::SRV(s) if s.port == 15432 && s.target.to_ascii() == "h1.host.kapell.")
        );
        assert!(table.get("h3.host.kapell.").is_some());
        health.set(super::super::health::key(&c, 0, "h3"), false);
        let table = Table::build(&c, &health);
        let db = table.get("db.data.kapell.").expect("db");
        assert_eq!((db.a.len(), db.aaaa.len()), (1, 0));
        assert_eq!(table.summary["db.data.kapell"], [("h1".to_string(), "10.0.0.1".parse().expect("ip"))]);
        health.set(super::super::health::key(&c, 0, "h1"), false);
        let table = Table::build(&c, &health);
        assert!(table.get("db.data.kapell.").expect("still known").a.is_empty());
        assert!(table.get("web.data.kapell.").is_none());
    }
}
