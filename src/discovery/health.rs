//! Which instances of the catalog are healthy now, from the best source there is for each:
//! 1. a probe from this host (the service's `http`/`tcp` check against the instance's host `ip`
//!    and the published port), where the check can be run from here ([`Prober`]);
//! 2. this host's systemd, for instances on this host (the unit is active and the supervisor
//!    does not report it starting or unhealthy);
//! 3. what the controller last saw (the catalog's `healthy`), else healthy.
//!
//! An instance leaves the answers on its first failed probe (or as soon as systemd sees it
//! stop), so within one interval plus the probe's timeout, and comes back on its first passing
//! probe: DNS must follow health closely, while restarts (which wait for `retries` failures)
//! are the supervisor's business.

use super::catalog::{Catalog, CatalogService, Check};
use super::pushed_health::Watch;
use crate::health::probe::{Target, probe};
use crate::model::{Check as ModelCheck, StatusRange};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Runs one check against one address: the boundary where the health checks' own prober plugs
/// in, so probes from the responder and from the supervisor are the same probes.
#[async_trait::async_trait]
pub trait Prober: Send + Sync {
    /// Whether the check passes at `address` within `timeout`.
    async fn probe(&self, check: &Check, address: SocketAddr, timeout: Duration) -> bool;
}

/// The health checks' own probes ([`crate::health::probe`]): an HTTP GET or a TCP connect, here
/// against the instance's host `ip` and the port published there.
pub struct HealthProber;

#[async_trait::async_trait]
impl Prober for HealthProber {
    async fn probe(&self, check: &Check, address: SocketAddr, timeout: Duration) -> bool {
        let port = address.port();
        let check = match check {
            Check::Tcp { .. } => ModelCheck::Tcp { port },
            Check::Http { path, expect, .. } => match StatusRange::parse(expect) {
                Ok(expect) => ModelCheck::Http { port, path: path.clone(), expect },
                Err(_) => return false,
            },
        };
        let target = Target { check: &check, address: Some(address.ip()), timeout, user: None };
        probe(&target).await.passed
    }
}

/// How long one probe of `service` may take: its check's own timeout, as the supervisor and
/// the host's prober allow it (a catalog from before it carried one: the interval's half, at
/// most 2 s), and never longer than the interval, so that one probe of an instance ends before
/// the next one starts.
pub fn probe_timeout(service: &CatalogService) -> Duration {
    let interval = Duration::from_millis(service.interval_ms);
    let timeout = match service.timeout_ms {
        Some(ms) => Duration::from_millis(ms),
        None => (interval / 2).min(Duration::from_secs(2)),
    };
    timeout.min(interval).max(Duration::from_millis(100))
}

/// Where an instance's health comes from (shown by `kapell status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Probe,
    Systemd,
    Controller,
}

/// One instance: its stack, service and host, by name. Not by the service's place in the
/// catalog: a new catalog (a service added before it, say) keeps each instance's health
/// ([`HealthMap::carried_over`]), and a probe that answers after a reload lands on the
/// instance it probed, never on another service that took its place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceKey {
    pub stack: String,
    pub service: String,
    pub host: String,
}

/// The key of the instance of service `i` of `catalog` on `host`.
pub fn key(catalog: &Catalog, i: usize, host: &str) -> InstanceKey {
    let service = &catalog.services[i];
    InstanceKey { stack: service.stack.clone(), service: service.service.clone(), host: host.to_string() }
}

/// The health of every instance of a catalog.
#[derive(Debug, Default, Clone)]
pub struct HealthMap {
    states: HashMap<InstanceKey, (bool, Source)>,
}

impl HealthMap {
    /// Starting values before anything was probed: probed and local instances count as
    /// unhealthy until their first result (a name never answers with an instance nobody
    /// checked), the others as the controller saw them.
    pub fn initial(catalog: &Catalog) -> HealthMap {
        let mut states = HashMap::new();
        for (i, service) in catalog.services.iter().enumerate() {
            for instance in &service.instances {
                let state = match source_of(catalog, i, &instance.host) {
                    Source::Controller => (instance.healthy.unwrap_or(true), Source::Controller),
                    source => (false, source),
                };
                states.insert(key(catalog, i, &instance.host), state);
            }
        }
        HealthMap { states }
    }

    /// Gives every instance whose health only the controller knows its word: what it pushed
    /// last ([`Watch`]), else the catalog's `healthy`, else healthy. Whether any changed.
    pub fn apply_pushed(&mut self, catalog: &Catalog, pushed: &Watch) -> bool {
        let mut changed = false;
        for (i, service) in catalog.services.iter().enumerate() {
            for instance in &service.instances {
                if source_of(catalog, i, &instance.host) != Source::Controller {
                    continue;
                }
                let word = pushed.get(&service.stack, &service.service, &instance.host);
                changed |= self.set(key(catalog, i, &instance.host), word.or(instance.healthy).unwrap_or(true));
            }
        }
        changed
    }

    /// The map for `new`, a catalog that replaces `old` (whose health this map holds): each
    /// instance that `old` had too, on the same address, with the same source of health and,
    /// if probed, the same check and ports, keeps what was known of it; the others start as in
    /// [`HealthMap::initial`]. So a reload hides no healthy instance that did not change.
    pub fn carried_over(&self, old: &Catalog, new: &Catalog) -> HealthMap {
        let mut map = HealthMap::initial(new);
        for (i, service) in new.services.iter().enumerate() {
            let Some(before) = old.services.iter().find(|o| o.stack == service.stack && o.service == service.service)
            else {
                continue;
            };
            if before.check != service.check || before.ports != service.ports {
                continue;
            }
            for instance in &service.instances {
                let same_address = before.instances.iter().any(|o| o.host == instance.host && o.ip == instance.ip);
                let key = key(new, i, &instance.host);
                if let (true, Some(&(healthy, source)), Some(now)) =
                    (same_address, self.states.get(&key), map.states.get_mut(&key))
                    && source == now.1
                {
                    now.0 = healthy;
                }
            }
        }
        map
    }

    pub fn set(&mut self, key: InstanceKey, healthy: bool) -> bool {
        match self.states.get_mut(&key) {
            Some((old, _)) if *old != healthy => {
                *old = healthy;
                true
            }
            _ => false,
        }
    }

    /// The health of the instance of service `i` of `catalog` on `host`, and its source.
    pub fn get(&self, catalog: &Catalog, i: usize, host: &str) -> Option<(bool, Source)> {
        self.states.get(&key(catalog, i, host)).copied()
    }
}

/// Where the health of the instance of service `i` on `host` comes from.
pub fn source_of(catalog: &Catalog, i: usize, host: &str) -> Source {
    if catalog.services[i].probe_port().is_some() {
        Source::Probe
    } else if host == catalog.host {
        Source::Systemd
    } else {
        Source::Controller
    }
}

/// The probes to run: one per instance with a probe port, with its address and interval.
/// One probe the responder runs, every `interval`, each allowed `timeout`.
pub struct PlannedProbe {
    pub key: InstanceKey,
    pub check: Check,
    pub address: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
}

pub fn probes(catalog: &Catalog) -> Vec<PlannedProbe> {
    let mut out = Vec::new();
    for (i, service) in catalog.services.iter().enumerate() {
        let (Some(port), Some(check)) = (service.probe_port(), service.check.as_ref()) else { continue };
        for instance in &service.instances {
            out.push(PlannedProbe {
                key: key(catalog, i, &instance.host),
                check: check.clone(),
                address: SocketAddr::new(instance.ip, port),
                interval: Duration::from_millis(service.interval_ms),
                timeout: probe_timeout(service),
            });
        }
    }
    out
}

/// The units on this host whose state decides an instance's health: unit → instance.
pub fn local_units(catalog: &Catalog) -> Vec<(String, InstanceKey)> {
    let mut out = Vec::new();
    for (i, service) in catalog.services.iter().enumerate() {
        for instance in service.instances.iter().filter(|n| n.host == catalog.host) {
            if source_of(catalog, i, &instance.host) == Source::Systemd {
                out.extend(instance.units.iter().map(|u| (u.clone(), key(catalog, i, &instance.host))));
            }
        }
    }
    out
}

/// The healthy addresses of service `i`, in host order.
pub fn healthy_ips(catalog: &Catalog, health: &HealthMap, i: usize) -> Vec<(String, IpAddr)> {
    catalog.services[i]
        .instances
        .iter()
        .filter(|n| health.get(catalog, i, &n.host).is_some_and(|(ok, _)| ok))
        .map(|n| (n.host.clone(), n.ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::catalog::{CatalogService, Instance, Protocol, PublishedPort, VERSION};

    fn catalog() -> Catalog {
        let instance = |host: &str, ip: &str, healthy| Instance {
            host: host.into(),
            ip: ip.parse().expect("ip"),
            units: vec![format!("data-db.service")],
            healthy,
        };
        let service = |name: &str, check| CatalogService {
            stack: "data".into(),
            service: name.into(),
            container: true,
            ports: vec![PublishedPort { host: 15432, target: 5432, protocol: Protocol::Tcp }],
            check,
            interval_ms: 1000,
            timeout_ms: None,
            instances: vec![instance("h1", "10.0.0.1", None), instance("h3", "10.0.0.3", Some(false))],
        };
        Catalog {
            version: VERSION,
            host: "h1".into(),
            services: vec![service("db", Some(Check::Tcp { port: 5432 })), service("cache", None)],
        }
    }

    #[test]
    fn each_instance_has_the_best_source() {
        let c = catalog();
        let health = HealthMap::initial(&c);
        assert_eq!(health.get(&c, 0, "h1"), Some((false, Source::Probe)), "unprobed: not answered yet");
        assert_eq!(health.get(&c, 0, "h3"), Some((false, Source::Probe)));
        assert_eq!(health.get(&c, 1, "h1"), Some((false, Source::Systemd)));
        assert_eq!(health.get(&c, 1, "h3"), Some((false, Source::Controller)), "the controller saw it fail");
        assert_eq!(probes(&c).len(), 2);
        assert_eq!(probes(&c)[1].address, "10.0.0.3:15432".parse().expect("addr"));
        assert_eq!(local_units(&c), [("data-db.service".to_string(), key(&c, 1, "h1"))]);
    }

    /// A probe from another host is allowed what the check allows its own probes, within one
    /// interval; a catalog without the check's timeout keeps the old allowance.
    #[test]
    fn a_probe_is_allowed_the_checks_own_timeout_within_its_interval() {
        let mut s = catalog().services.remove(0);
        s.interval_ms = 10_000;
        assert_eq!(probe_timeout(&s), Duration::from_secs(2), "no timeout carried: half the interval, at most 2 s");
        s.timeout_ms = Some(5_000);
        assert_eq!(probe_timeout(&s), Duration::from_secs(5));
        s.interval_ms = 1_000;
        assert_eq!(probe_timeout(&s), Duration::from_secs(1), "never longer than the interval");
        s.timeout_ms = Some(1);
        assert_eq!(probe_timeout(&s), Duration::from_millis(100));
    }

    #[test]
    fn the_controllers_word_decides_only_what_nobody_probes() {
        let c = catalog();
        let mut health = HealthMap::initial(&c);
        let dir = tempfile::tempdir().expect("dir");
        let path = crate::discovery::pushed_health::path_in(dir.path());
        let word = |service: &str, host: &str, healthy| crate::discovery::pushed_health::InstanceHealth {
            stack: "data".into(),
            service: service.into(),
            host: host.into(),
            healthy,
        };
        // cache on h3 failed as the catalog was written; the controller has since seen it up.
        crate::discovery::pushed_health::write(&path, &[word("cache", "h3", true), word("db", "h3", false)])
            .expect("write");
        let pushed = Watch::new(path.clone());
        assert!(health.apply_pushed(&c, &pushed));
        assert_eq!(health.get(&c, 1, "h3"), Some((true, Source::Controller)));
        assert_eq!(health.get(&c, 0, "h3"), Some((false, Source::Probe)), "probed: not the controller's to say");
        health.set(key(&c, 0, "h3"), true);
        assert!(!health.apply_pushed(&c, &pushed), "no change");
        assert_eq!(health.get(&c, 0, "h3"), Some((true, Source::Probe)));
        assert_eq!(health.get(&c, 1, "h1"), Some((false, Source::Systemd)), "this host's own: systemd's");
        crate::discovery::pushed_health::write(&path, &[]).expect("write");
        let nothing = Watch::new(path);
        assert!(health.apply_pushed(&c, &nothing));
        assert_eq!(health.get(&c, 1, "h3"), Some((false, Source::Controller)), "no word: the catalog's");
    }

    #[test]
    fn answers_follow_changes() {
        let c = catalog();
        let mut health = HealthMap::initial(&c);
        assert!(health.set(key(&c, 0, "h3"), true));
        assert!(!health.set(key(&c, 0, "h3"), true), "no change");
        assert_eq!(healthy_ips(&c, &health, 0), [("h3".to_string(), "10.0.0.3".parse().expect("ip"))]);
        assert!(health.set(key(&c, 0, "h1"), true));
        assert_eq!(healthy_ips(&c, &health, 0).len(), 2);
        assert!(health.set(key(&c, 0, "h3"), false));
        assert_eq!(healthy_ips(&c, &health, 0).len(), 1);
    }

    #[test]
    fn a_new_catalog_keeps_the_health_of_what_did_not_change_and_late_results_land_by_name() {
        let old = catalog();
        let mut health = HealthMap::initial(&old);
        health.set(key(&old, 0, "h1"), true);
        health.set(key(&old, 0, "h3"), true);
        health.set(key(&old, 1, "h1"), true);
        // A service added in front (every index moves), db's check unchanged, cache's port changed.
        let mut new = old.clone();
        let mut api = new.services[1].clone();
        api.service = "api".into();
        new.services.insert(0, api);
        new.services[2].ports[0].host = 16379;
        let carried = health.carried_over(&old, &new);
        assert_eq!(carried.get(&new, 1, "h1"), Some((true, Source::Probe)), "db kept its probe results");
        assert_eq!(carried.get(&new, 1, "h3"), Some((true, Source::Probe)));
        assert_eq!(carried.get(&new, 0, "h1"), Some((false, Source::Systemd)), "api: nothing known yet");
        assert_eq!(carried.get(&new, 2, "h1"), Some((false, Source::Systemd)), "cache changed: starts again");
        assert_eq!(healthy_ips(&new, &carried, 1).len(), 2, "the reload hid no healthy db");
        // A probe of db on h3 started under the old catalog answers now: it lands on db.
        let mut carried = carried;
        assert!(carried.set(key(&old, 0, "h3"), false));
        assert_eq!(carried.get(&new, 1, "h3"), Some((false, Source::Probe)));
        assert_eq!(carried.get(&new, 0, "h3"), Some((false, Source::Controller)), "api untouched");
        // An instance that moved to another address starts again.
        let mut moved = new.clone();
        moved.services[1].instances[0].ip = "10.0.0.9".parse().expect("ip");
        assert_eq!(carried.carried_over(&new, &moved).get(&moved, 1, "h1"), Some((false, Source::Probe)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_published_port_is_probed_not_the_checked_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listener.local_addr().expect("addr");
        // The check names the container's port 5432; the probe goes to the published one.
        let check = Check::Tcp { port: 5432 };
        assert!(HealthProber.probe(&check, open, Duration::from_secs(1)).await);
        drop(listener);
        assert!(!HealthProber.probe(&check, open, Duration::from_secs(1)).await);
    }
}
