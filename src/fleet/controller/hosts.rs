//! The controller side of a push: from `fleet.toml` and the stacks to one unit set per host,
//! and requests to every host in parallel (see docs/fleet-protocol.md).
//!
//! Hosts are worked on by `parallel` threads, each running one `ssh` at a time; a slow or dead
//! host occupies one thread and nothing else, so it never delays or blocks the others, and a
//! failure on one host never rolls back another.

use super::config::{self as fleet_config, Fleet};
use super::placement::{self, Placed};
use super::ssh::{Failure, Ssh};
use crate::config::FLEET_FILE;
use crate::diagnostics::Diagnostic;
use crate::discovery::catalog::Catalog;
use crate::fleet::protocol::{self, Body, Files, HostSet, Reply, Request, SetHasher, VERSION};
use crate::model::Stack;
use crate::printable::printable;
use crate::render::{self, RenderOptions};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a status request may take.
const STATUS_DEADLINE: Duration = Duration::from_secs(60);
/// How long an install may take (image pulls and slow starts happen on the peer).
const INSTALL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Everything a fleet command needs: the fleet, each host's desired set, the transport.
pub struct Controller {
    pub fleet: Fleet,
    /// Every host of the fleet, with the set it should run (possibly empty).
    pub sets: BTreeMap<String, HostSet>,
    pub ssh: Ssh,
    /// Stacks that have no placement and so stay on the controller.
    pub local_stacks: Vec<String>,
    /// The fleet's discovery catalog; `None` when no service is placed.
    pub catalog: Option<Catalog>,
    /// The SHA-256 of the catalog's text, which every host's set carries (see
    /// [`protocol::Reply::catalog_hash`]).
    pub catalog_hash: Option<String>,
}

/// Runs `work` for every item, `parallel` items at a time; `done` sees each result as it comes.
/// Results are in the order of `items`.
fn in_parallel<I: Sync, T: Send>(
    parallel: usize,
    items: &[I],
    done: &(dyn Fn(&T) + Sync),
    work: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    let queue = Mutex::new(items.iter().enumerate());
    let results = Mutex::new(Vec::with_capacity(items.len()));
    let workers = parallel.min(items.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // The queue's lock is held only for `next()`, not across the work.
                while let Some((i, item)) = queue.lock().map(|mut q| q.next()).unwrap_or(None) {
                    let result = work(item);
                    done(&result);
                    if let Ok(mut results) = results.lock() {
                        results.push((i, result));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Every host's set. One set is rendered and hashed per placement, not per host: hosts that run
/// the same services share its files, and every host shares the catalog (see [`Placed`]), so a
/// fleet of 10,000 hosts costs one set per distinct placement and a name and a hash per host.
fn host_sets(placed: &Placed, catalog: Option<Arc<str>>) -> BTreeMap<String, HostSet> {
    let options = RenderOptions::default();
    let mut rendered: HashMap<*const Vec<Stack>, (Arc<Files>, SetHasher)> = HashMap::new();
    placed
        .iter()
        .map(|(host, stacks)| {
            let (files, hasher) = rendered.entry(Arc::as_ptr(stacks)).or_insert_with(|| {
                let files = Arc::new(protocol::files_of(&render::render_host(stacks, &options)));
                let hasher = SetHasher::new(&files, catalog.as_deref());
                (files, hasher)
            });
            (host.clone(), HostSet::hashed(files.clone(), catalog.clone(), host, hasher.finish(host)))
        })
        .collect()
}

/// What one host answered, or why it did not.
pub struct HostResult {
    pub host: String,
    pub took: Duration,
    pub outcome: Result<Reply, String>,
    /// The request never reached the host (ssh could not connect or authenticate).
    pub never_sent: bool,
}

impl Controller {
    /// Reads `fleet.toml` and the stacks of `config_dir`; `Ok(Err(_))` lists every problem.
    pub fn load(config_dir: &Path) -> Result<Result<Controller, Vec<Diagnostic>>> {
        let fleet = match fleet_config::load(&config_dir.join(FLEET_FILE)) {
            Ok(fleet) => fleet,
            Err(diags) => return Ok(Err(diags)),
        };
        let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
            .with_context(|| format!("cannot read the stacks in {}", config_dir.display()))?;
        if !checked.is_ok() {
            return Ok(Err(checked.diagnostics));
        }
        let placed = match placement::place(&fleet, &checked.stacks) {
            Ok(placed) => placed,
            Err(diags) => return Ok(Err(diags)),
        };
        let ssh = Ssh::new(&fleet.defaults)?;
        // `ssh -G` (a process each) for the hosts that need it, side by side rather than one after
        // the other: on a loaded machine each takes tens of milliseconds.
        let asked: Vec<&str> = placed
            .iter()
            .filter(|(_, stacks)| !stacks.is_empty())
            .map(|(host, _)| &fleet.hosts[host])
            .filter(|entry| entry.ip.is_none())
            .map(|entry| entry.address.as_str())
            .collect();
        let ips: BTreeMap<&str, Option<std::net::IpAddr>> = asked
            .iter()
            .copied()
            .zip(in_parallel(fleet.defaults.parallel, &asked, &|_| {}, |address| ssh.configured_ip(address)))
            .collect();
        let super::catalogs::Catalogs { fleet: catalog, text: catalog_text } =
            match super::catalogs::catalogs(&fleet, &placed, |a| ips.get(a).copied().flatten()) {
                Ok(catalogs) => catalogs,
                Err(diags) => return Ok(Err(diags)),
            };
        let catalog_hash = catalog_text.as_deref().map(|text| protocol::sha256(text.as_bytes()));
        let sets = host_sets(&placed, catalog_text);
        let local_stacks =
            checked.stacks.iter().filter(|s| !placement::is_fleet_stack(s)).map(|s| s.name.to_string()).collect();
        Ok(Ok(Controller { fleet, sets, ssh, local_stacks, catalog, catalog_hash }))
    }

    /// The hosts selected by `only` (host names, or `@key=value` labels); all when empty.
    pub fn select(&self, only: &[String]) -> Result<Vec<String>, String> {
        if only.is_empty() {
            return Ok(self.fleet.hosts.keys().cloned().collect());
        }
        let mut hosts = Vec::new();
        for item in only {
            let matching: Vec<&String> = match item.strip_prefix('@') {
                Some(label) => {
                    let (key, value) = label.split_once('=').unwrap_or((label, ""));
                    self.fleet
                        .hosts
                        .values()
                        .filter(|h| h.labels.get(key).is_some_and(|v| value.is_empty() || v == value))
                        .map(|h| &h.name)
                        .collect()
                }
                None => self.fleet.hosts.get_key_value(item).map(|(k, _)| k).into_iter().collect(),
            };
            if matching.is_empty() {
                return Err(format!("{item} matches no host of the fleet"));
            }
            hosts.extend(matching.into_iter().cloned());
        }
        hosts.sort();
        hosts.dedup();
        Ok(hosts)
    }

    /// Asks each of `hosts` for its status. A status that failed is an error: its reply names
    /// the set the host runs, but not its files or units, and would read as a host with nothing.
    pub fn status(&self, hosts: &[String], done: &(dyn Fn(&HostResult) + Sync)) -> Vec<HostResult> {
        self.each(hosts, done, |host| {
            let mut result = self.request(host, Body::Status, false);
            if let Ok(Reply { error: Some(e), .. }) = &result.outcome {
                result.outcome = Err(format!("its status failed: {}", printable(e)));
            }
            result
        })
    }

    /// Runs `work` for every host, `parallel` hosts at a time; `done` sees each result as it
    /// comes. Results are in host order.
    pub fn each<T: Send>(
        &self,
        hosts: &[String],
        done: &(dyn Fn(&T) + Sync),
        work: impl Fn(&str) -> T + Sync,
    ) -> Vec<T> {
        in_parallel(self.fleet.defaults.parallel, hosts, done, |host| work(host))
    }

    /// Sends one request to `host` and reads its reply. `fresh`: over a new connection rather
    /// than the shared master (a confirmation must prove the host is reachable now).
    pub fn request(&self, host: &str, body: Body, fresh: bool) -> HostResult {
        let start = Instant::now();
        let deadline = match body {
            Body::Install { .. } | Body::Repair { .. } | Body::Rollback { .. } => INSTALL_DEADLINE,
            Body::Status | Body::Confirm { .. } => STATUS_DEADLINE,
        };
        let address = &self.fleet.hosts[host].address;
        let kind = body.kind();
        let without_catalog = matches!(body, Body::Install { same_catalog: true, .. });
        // The host holds the fleet's health word already (see `instance_health::Word`).
        let without_health = self.catalog.is_some()
            && matches!(body, Body::Install { health: None, .. } | Body::Repair { health: None, .. });
        let mut never_sent = false;
        let outcome = (|| {
            let request = serde_json::to_vec(&Request { version: VERSION, body }).map_err(|e| e.to_string())?;
            let bytes = self.ssh.request(address, &request, deadline, fresh).map_err(|e| match e {
                Failure::NotConnected(s) | Failure::HostKey(s) => {
                    never_sent = true;
                    s
                }
                Failure::Unreachable(s) | Failure::Peer(s) => s,
            })?;
            log::debug!(
                "{host}: {kind} request of {} bytes{}{}{}, reply of {} bytes in {:.0?}",
                request.len(),
                if without_catalog { " without the catalog" } else { "" },
                if without_health { " without the health word" } else { "" },
                if fresh { " over a new connection" } else { "" },
                bytes.len(),
                start.elapsed()
            );
            let reply: Reply = serde_json::from_slice(&bytes).map_err(|e| {
                let excerpt = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                format!("the reply of {host} is not understood ({e}): {}", printable(&excerpt))
            })?;
            reply.check().map_err(|e| format!("the reply of {host} is not understood: {e}"))?;
            Ok(reply)
        })();
        HostResult { host: host.to_string(), took: start.elapsed(), outcome, never_sent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn hosts_of_one_placement_share_one_set_and_each_set_is_its_own() {
        let mut fleet_toml = String::new();
        for i in 0..6 {
            fleet_toml.push_str(&format!("[hosts.h{i}]\naddress = \"10.0.0.{i}\"\n"));
        }
        let fleet = super::super::config::parse(Path::new("fleet.toml"), &fleet_toml).expect("fleet");
        let text = "[services.agent]\nexec = [\"/bin/agent\"]\nplacement = { global = true }\n\n\
                    [services.db]\nexec = [\"/bin/db\"]\nplacement = { hosts = [\"h4\", \"h5\"] }\n";
        let parsed = crate::config::parse_stack(&PathBuf::from("/etc/kapell/data.toml"), text);
        let placed = placement::place(&fleet, &[parsed.stack.expect("stack")]).expect("placed");
        assert!(Arc::ptr_eq(&placed["h0"], &placed["h3"]) && Arc::ptr_eq(&placed["h4"], &placed["h5"]));
        assert!(!Arc::ptr_eq(&placed["h0"], &placed["h4"]));
        let catalogs = super::super::catalogs::catalogs(&fleet, &placed, |_| None).expect("catalogs");
        let sets = host_sets(&placed, catalogs.text.clone());
        for (host, set) in &sets {
            // What a host verifies: its set hashes, alone, to what the shared steps gave.
            assert_eq!(*set, HostSet::new(set.files.clone(), catalogs.text.clone(), host), "{host}");
            assert!(set.verify().is_ok(), "{host}");
            assert_eq!(set.host, *host);
            assert!(Arc::ptr_eq(set.catalog.as_ref().expect("catalog"), catalogs.text.as_ref().expect("text")));
        }
        assert!(Arc::ptr_eq(&sets["h0"].files, &sets["h3"].files), "one placement, one copy of its files");
        assert!(sets["h4"].files.contains_key("data-db.service") && !sets["h0"].files.contains_key("data-db.service"));
        assert_ne!(sets["h0"].hash, sets["h1"].hash, "the host's name is part of its set");
        // Without a catalog (nothing placed) no name is sent and the sets hash as before.
        let empty = placement::place(&fleet, &[]).expect("placed");
        let sets = host_sets(&empty, None);
        assert!(sets.values().all(|s| s.host.is_empty() && s.hash == HostSet::from_rendered(&[]).hash));
    }
}
