//! The discovery catalog each host's set carries (see docs/discovery.md): every service the
//! fleet places, on every host it runs on, with that host's `ip`. One catalog for the fleet, the
//! same text in every host's set (the set names the host, so its responder knows which instances
//! are its own), and only when the fleet places any service. It grows with the fleet, so it is
//! encoded once and shared, never copied per host.

use super::config::Fleet;
use super::placement::Placed;
use crate::diagnostics::Diagnostic;
use crate::discovery::catalog::{self, Catalog, Placement};
use std::sync::Arc;

/// The catalogs of a fleet; `None` and empty when no service is placed.
#[derive(Debug, Default, PartialEq)]
pub struct Catalogs {
    /// The fleet's catalog, no host's name in it (what the controller reads health against).
    pub fleet: Option<Catalog>,
    /// The same as JSON, as every host's set carries it.
    pub text: Option<Arc<str>>,
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
    let text = Some(Arc::from(fleet_catalog.to_json()));
    Ok(Catalogs { fleet: Some(fleet_catalog), text })
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
    fn one_catalog_of_the_whole_fleet_for_every_host() {
        let fleet = super::super::config::parse(
            Path::new("fleet.toml"),
            "[hosts.h1]\naddress = \"10.0.0.1\"\n[hosts.h2]\naddress = \"10.0.0.2\"\n\
             [hosts.h3]\naddress = \"h3.internal\"\nip = \"10.0.0.3\"\n[hosts.idle]\naddress = \"idle.internal\"\n",
        )
        .expect("fleet");
        let placed = super::super::placement::place(&fleet, &[stack("data", DATA)]).expect("placed");
        let Catalogs { fleet: whole, text } = catalogs(&fleet, &placed, |_| None).expect("catalogs");
        let whole = whole.expect("services placed");
        assert_eq!(whole.host, "", "the fleet's catalog is no host's");
        let parsed = Catalog::parse(&text.expect("text")).expect("parse");
        assert_eq!(parsed, whole, "the text is the fleet's catalog");
        let hosts = |i: usize| whole.services[i].instances.iter().map(|n| n.ip.to_string()).collect::<Vec<_>>();
        assert_eq!((whole.services[0].service.as_str(), hosts(0)), ("db", vec!["10.0.0.3".to_string()]));
        assert_eq!((whole.services[1].service.as_str(), hosts(1)), ("web", vec!["10.0.0.1".into(), "10.0.0.2".into()]));
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
        assert!(via_ssh.text.expect("text").contains("10.0.0.3"));
    }
}
