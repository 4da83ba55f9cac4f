//! The controller's word on the instances no responder can probe (see docs/discovery.md): those
//! of services whose check is `cmd`, on a port other hosts cannot reach, or absent. Each reply
//! tells the controller which units of the host's set are up; every install and repair it sends
//! carries what that makes of each such instance (unless the host holds that word already:
//! [`Word`]), so every host's responder follows their health between pushes. The word is not part of any set: it never changes a set's hash, so a change
//! of health never causes a push, a restart or a rollout.

use super::hosts::Controller;
use super::state::State;
use crate::discovery::catalog::Catalog;
use crate::discovery::pushed_health::{self, InstanceHealth};
use crate::fleet::protocol::{Reply, UnitState};
use crate::status::Health;
use std::collections::{BTreeMap, BTreeSet};

/// Whether a unit counts as up: active, and its check (if it has one) neither starting nor
/// failing, as the host's own prober or supervisor last saw it.
pub fn is_up(unit: &UnitState) -> bool {
    unit.active == "active" && matches!(unit.health(), None | Some(Health::Healthy))
}

/// Each service unit of `reply` (not the stack targets), up or not; `None` when the reply does
/// not describe the host's units (a request that was refused or failed as a whole).
pub fn units_of(reply: &Reply) -> Option<BTreeMap<String, bool>> {
    if reply.error.is_some() {
        return None;
    }
    Some(reply.units.iter().filter(|u| !u.service.is_empty()).map(|u| (u.unit.clone(), is_up(u))).collect())
}

/// The word of one pass, and the hosts that hold it already (their last reply named its hash): a
/// request to those leaves it out, as an install leaves out a catalog the host has. The word has
/// an entry per unprobed instance of the whole fleet and goes to every host: sent whole at every
/// pass, that is bytes in the square of the fleet's size.
pub struct Word {
    instances: Option<Vec<InstanceHealth>>,
    held_by: BTreeSet<String>,
}

impl Word {
    pub fn of(c: &Controller, state: &State) -> Word {
        Word::held(word(c, state), state)
    }

    /// `instances`, and the hosts of `state` whose last reply named its hash.
    fn held(instances: Option<Vec<InstanceHealth>>, state: &State) -> Word {
        let held_by = match instances.as_deref().and_then(hash) {
            Some(hash) => state.hosts.iter().filter(|(_, s)| s.health == hash).map(|(h, _)| h.clone()).collect(),
            None => BTreeSet::new(),
        };
        Word { instances, held_by }
    }

    /// What a request to `host` carries: the word, unless the host holds it already.
    pub fn for_host(&self, host: &str) -> Option<&[InstanceHealth]> {
        self.instances.as_deref().filter(|_| !self.held_by.contains(host))
    }
}

/// The SHA-256 of the file a peer writes for `instances`.
fn hash(instances: &[InstanceHealth]) -> Option<String> {
    pushed_health::text(instances).ok().map(|t| crate::fleet::protocol::sha256(&t))
}

/// What every host is told: each unprobed instance of the fleet whose host reported its units,
/// healthy while any of them (one per replica) is up. An instance whose host never answered is
/// left out: the responders count it healthy until the controller knows better. `None` when the
/// fleet places no service: nothing to say, and a peer older than discovery is not sent a field
/// it would refuse.
pub fn word(c: &Controller, state: &State) -> Option<Vec<InstanceHealth>> {
    c.catalog.as_ref().map(|catalog| of_catalog(catalog, state))
}

fn of_catalog(catalog: &Catalog, state: &State) -> Vec<InstanceHealth> {
    let mut out = Vec::new();
    for service in catalog.services.iter().filter(|s| s.probe_port().is_none()) {
        for instance in &service.instances {
            let Some(units) = state.hosts.get(&instance.host).map(|h| &h.units) else { continue };
            let seen: Vec<bool> = instance.units.iter().filter_map(|u| units.get(u).copied()).collect();
            if seen.is_empty() {
                continue;
            }
            out.push(InstanceHealth {
                stack: service.stack.clone(),
                service: service.service.clone(),
                host: instance.host.clone(),
                healthy: seen.contains(&true),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::catalog::{CatalogService, Check, Instance, VERSION};

    /// The word goes to every host but those whose last reply named its hash, which is the
    /// hash of the file the peer writes for it, whatever the order of its entries.
    #[test]
    fn a_host_that_holds_the_word_is_not_sent_it() {
        let entry = |host: &str, healthy| InstanceHealth {
            stack: "data".into(),
            service: "worker".into(),
            host: host.into(),
            healthy,
        };
        let word = vec![entry("h2", false), entry("h1", true)];
        let dir = tempfile::tempdir().expect("tempdir");
        let file = pushed_health::path_in(dir.path());
        let reversed: Vec<_> = word.iter().rev().cloned().collect();
        pushed_health::write(&file, &reversed).expect("write");
        let mut state = State::default();
        state.host("h1").health = crate::fleet::protocol::sha256(&std::fs::read(&file).expect("read"));
        state.host("h2").health = hash(&word[..1]).expect("a hash");
        let sent = Word::held(Some(word.clone()), &state);
        assert_eq!(sent.for_host("h1"), None, "h1 holds it");
        assert_eq!(sent.for_host("h2"), Some(&word[..]), "h2 holds another word");
        assert_eq!(sent.for_host("h3"), Some(&word[..]), "h3 never said");
        assert_eq!(Word::held(None, &state).for_host("h2"), None, "no word without a catalog");
    }

    fn catalog() -> Catalog {
        let instance = |host: &str, units: &[&str]| Instance {
            host: host.into(),
            ip: "10.0.0.1".parse().expect("ip"),
            units: units.iter().map(|u| u.to_string()).collect(),
            healthy: None,
        };
        let service = |name: &str, check, instances| CatalogService {
            stack: "data".into(),
            service: name.into(),
            container: false,
            ports: vec![],
            check,
            interval_ms: 1000,
            timeout_ms: None,
            instances,
        };
        Catalog {
            version: VERSION,
            host: String::new(),
            services: vec![
                service("db", Some(Check::Tcp { port: 5432 }), vec![instance("h3", &["data-db.service"])]),
                service(
                    "worker",
                    None,
                    vec![
                        instance("h1", &["data-worker@1.service", "data-worker@2.service"]),
                        instance("h2", &["data-worker@1.service"]),
                        instance("h3", &["data-worker@1.service"]),
                    ],
                ),
            ],
        }
    }

    fn unit(name: &str, active: &str, health: Option<&str>) -> UnitState {
        UnitState {
            unit: name.into(),
            stack: "data".into(),
            service: "worker".into(),
            active: active.into(),
            health: health.map(String::from),
            ..UnitState::default()
        }
    }

    #[test]
    fn a_unit_is_up_when_active_and_not_failing_its_check() {
        assert!(is_up(&unit("a", "active", None)));
        assert!(is_up(&unit("a", "active", Some("healthy"))));
        assert!(!is_up(&unit("a", "active", Some("unhealthy"))));
        assert!(!is_up(&unit("a", "active", Some("starting"))));
        assert!(!is_up(&unit("a", "failed", None)));
        let target = UnitState { unit: "data.target".into(), active: "active".into(), ..UnitState::default() };
        let reply = Reply { units: vec![target, unit("data-worker@1.service", "inactive", None)], ..Reply::default() };
        assert_eq!(units_of(&reply), Some(BTreeMap::from([("data-worker@1.service".to_string(), false)])));
        assert_eq!(units_of(&Reply { error: Some("refused".into()), ..reply }), None, "says nothing of units");
    }

    #[test]
    fn only_unprobed_instances_whose_host_answered() {
        let mut state = State::default();
        state.host("h1").units =
            BTreeMap::from([("data-worker@1.service".into(), false), ("data-worker@2.service".into(), true)]);
        state.host("h3").units =
            BTreeMap::from([("data-worker@1.service".into(), false), ("data-db.service".into(), false)]);
        let word = of_catalog(&catalog(), &state);
        let one = |host: &str, healthy| InstanceHealth {
            stack: "data".into(),
            service: "worker".into(),
            host: host.into(),
            healthy,
        };
        // db is probed by every responder; h2 never answered; one replica up is enough.
        assert_eq!(word, [one("h1", true), one("h3", false)]);
    }
}
