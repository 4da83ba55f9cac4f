//! The discovery catalog each host's set carries (see docs/discovery.md): every service the
//! fleet places, on every host it runs on, with that host's `ip`. One catalog for the fleet,
//! written for each host (its own name in it, so its responder knows which instances are its
//! own), and only when the fleet places any service.

use super::config::Fleet;
use super::placement::Placed;
use crate::diagnostics::Diagnostic;
use crate::discovery::catalog::{self, Catalog, Placement};
use std::collections::BTreeMap;

/// The catalogs of a fleet; `None` and empty when no service is placed.
#[derive(Debug, Default, PartialEq)]
pub struct Catalogs {
    /// The fleet's catalog, no host's name in it (what the controller reads health against).
    pub fleet: Option<Catalog>,
    /// Host → its catalog as JSON.
    pub per_host: BTreeMap<String, String>,
}

/// The fleet's catalog and each host's. Every host that runs a service
/// needs an `ip`: given, or its `address` when that is an IP, or what `ssh_ip` says ssh connects
/// to for it (`HostName` of an alias in the ssh configuration). Each host without one is a
/// diagnostic at its table.
pub fn catalogs(
    fleet: &Fleet,
    placed: &Placed,
    ssh_ip: impl Fn(&str) -> Option<std::net::IpAddr>,
) -> Result<Catalogs, Vec<Diagnostic>> {
    let mut placements = Vec::new();
    let mut errors = Vec::new();
    for (host, stacks) in placed.iter().filter(|(_, stacks)| !stacks.is_empty()) {
        let entry = &fleet.hosts[host];
        match entry.ip.or_else(|| ssh_ip(&entry.address)) {
            Some(ip) => placements.push(Placement { host, ip, stacks }),
            None => errors.push(Diagnostic::new(
                &fleet.source,
                entry.span.clone(),
                format!(
                    "[hosts.{host}] needs an `ip`: its `address` {:?} is not an IP address (nor the `HostName` \
                     ssh's configuration gives it), and the names of the services it runs \
                     (<service>.<stack>.kapell) resolve to the address other hosts reach it at",
                    entry.address
                ),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if placements.is_empty() {
        return Ok(Catalogs::default());
    }
    let fleet_catalog = catalog::build("", &placements);
    let mut catalog = fleet_catalog.clone();
    let per_host = fleet
        .hosts
        .keys()
        .map(|host| {
            catalog.host.clone_from(host);
            (host.clone(), catalog.to_json())
        })
        .collect();
    Ok(Catalogs { fleet: Some(fleet_catalog), per_host })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn stack(name: &str, text: &str) -> crate::model::Stack {
        let parsed = crate::config::parse_stack(&PathBuf::from(format!("/etc/kapell/{name}.toml")), text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.stack.expect("stack")
    }

    const DATA: &str = "[services.db]\nimage = \"x\"\nports = [\"15432:5432\"]\nplacement = { hosts = [\"h3\"] }\n\n\
                        [services.web]\nexec = [\"/bin/web\"]\nplacement = { hosts = [\"h1\", \"h2\"] }\n";

    #[test]
    fn every_host_gets_the_whole_fleet_under_its_own_name() {
        let fleet = super::super::config::parse(
            Path::new("fleet.toml"),
            "[hosts.h1]\naddress = \"10.0.0.1\"\n[hosts.h2]\naddress = \"10.0.0.2\"\n\
             [hosts.h3]\naddress = \"h3.internal\"\nip = \"10.0.0.3\"\n[hosts.idle]\naddress = \"idle.internal\"\n",
        )
        .expect("fleet");
        let placed = super::super::placement::place(&fleet, &[stack("data", DATA)]).expect("placed");
        let Catalogs { fleet: whole, per_host: catalogs } = catalogs(&fleet, &placed, |_| None).expect("catalogs");
        assert_eq!(whole.expect("services placed").host, "", "the fleet's catalog is no host's");
        assert_eq!(
            catalogs.keys().collect::<Vec<_>>(),
            ["h1", "h2", "h3", "idle"],
            "a host that runs nothing asks too"
        );
        let h1 = Catalog::parse(&catalogs["h1"]).expect("parse");
        assert_eq!(h1.host, "h1");
        let hosts = |i: usize| h1.services[i].instances.iter().map(|n| n.ip.to_string()).collect::<Vec<_>>();
        assert_eq!((h1.services[0].service.as_str(), hosts(0)), ("db", vec!["10.0.0.3".to_string()]));
        assert_eq!((h1.services[1].service.as_str(), hosts(1)), ("web", vec!["10.0.0.1".into(), "10.0.0.2".into()]));
        assert_eq!(Catalog::parse(&catalogs["h3"]).expect("parse").services, h1.services);
    }

    #[test]
    fn a_host_that_runs_a_service_needs_an_ip() {
        let fleet = super::super::config::parse(
            Path::new("/etc/kapell/fleet.toml"),
            "[hosts.h1]\naddress = \"10.0.0.1\"\n[hosts.h2]\naddress = \"10.0.0.2\"\n[hosts.h3]\naddress = \"h3.internal\"\n",
        )
        .expect("fleet");
        let placed = super::super::placement::place(&fleet, &[stack("data", DATA)]).expect("placed");
        let errors: Vec<String> =
            catalogs(&fleet, &placed, |_| None).expect_err("h3 has no ip").iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("/etc/kapell/fleet.toml:5:8: [hosts.h3] needs an `ip`"), "{errors:?}");
        // Without services nobody asks for names: no catalog, no `ip` needed.
        let placed = super::super::placement::place(&fleet, &[]).expect("placed");
        assert_eq!(catalogs(&fleet, &placed, |_| None).expect("no services"), Catalogs::default());
        // An ssh alias whose HostName is an address will do.
        let placed = super::super::placement::place(&fleet, &[stack("data", DATA)]).expect("placed");
        let via_ssh = catalogs(&fleet, &placed, |a| (a == "h3.internal").then(|| [10, 0, 0, 3].into())).expect("ok");
        assert!(via_ssh.per_host["h1"].contains("10.0.0.3"));
    }
}
