//! Placement (`[services.*.placement]` in kapell.toml(5)): which services each host of the fleet runs.
//!
//! A stack takes part in the fleet when at least one of its services has a placement; then every
//! service of it must have one (a fleet stack's service placed nowhere is a mistake, not a
//! default). Stacks without any placement stay on the controller and are not pushed.
//!
//! Each host gets the stacks that have a service placed on it, reduced to those services, and
//! its dependencies must be satisfiable there: a service that requires another (of its own stack
//! or `"<stack>.<service>"`) needs that one on the same host, or its unit would name a unit the
//! host does not have.

use super::config::Fleet;
use crate::diagnostics::{Diagnostic, did_you_mean};
use crate::model::{DepTarget, Service, Stack};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The stacks each host runs, reduced to the services placed there. Every host of the fleet has
/// an entry (an empty list: the host runs nothing of the fleet, and what it had is removed).
/// Hosts that run the same services share one list: a fleet of 10,000 hosts with one placement
/// holds the stacks once.
pub type Placed = BTreeMap<String, Arc<Vec<Stack>>>;

/// Places every fleet stack; `Err` lists every problem, each at the placement (or dependency) it
/// is about and naming both ends.
pub fn place(fleet: &Fleet, stacks: &[Stack]) -> Result<Placed, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    // (stack, service) -> hosts
    let mut hosts_of: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for stack in stacks.iter().filter(|s| is_fleet_stack(s)) {
        for service in stack.services() {
            let hosts = hosts_for(fleet, stack, service, &mut errors);
            hosts_of.insert((&stack.name, &service.name), hosts);
        }
    }
    for stack in stacks.iter().filter(|s| is_fleet_stack(s)) {
        for service in stack.services() {
            let here = &hosts_of[&(stack.name.as_str(), service.name.as_str())];
            for dep in service.requires.iter().chain(&service.wants) {
                let (dep_stack, dep_service) = match &dep.target {
                    DepTarget::Local(name) => (stack.name.as_str(), name.as_str()),
                    DepTarget::Remote { stack, service } => (stack.as_str(), service.as_str()),
                    DepTarget::Unit(_) => continue,
                };
                let Some(there) = hosts_of.get(&(dep_stack, dep_service)) else {
                    errors.push(Diagnostic::new(
                        &stack.source,
                        dep.span.clone(),
                        format!(
                            "{}.{} depends on {dep_stack}.{dep_service}, which has no placement, so no fleet host \
                             runs it: give {dep_stack}.{dep_service} a placement that includes the same hosts",
                            stack.name, service.name
                        ),
                    ));
                    continue;
                };
                let missing: Vec<&str> = here.difference(there).copied().collect();
                if !missing.is_empty() {
                    errors.push(Diagnostic::new(
                        &stack.source,
                        dep.span.clone(),
                        format!(
                            "{}.{} is placed on {} but {dep_stack}.{dep_service}, which it depends on, is not: place \
                             {dep_stack}.{dep_service} there too (or drop the dependency)",
                            stack.name,
                            service.name,
                            missing.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Hosts are told apart by which services they run, (stack, service) in `hosts_of`'s order.
    let mut shared: HashMap<Vec<usize>, Arc<Vec<Stack>>> = HashMap::new();
    let mut placed = Placed::new();
    for host in fleet.hosts.keys() {
        let runs: Vec<usize> =
            hosts_of.values().enumerate().filter(|(_, hosts)| hosts.contains(host.as_str())).map(|(i, _)| i).collect();
        let list = shared.entry(runs).or_insert_with(|| {
            let mut list = Vec::new();
            for stack in stacks.iter().filter(|s| is_fleet_stack(s)) {
                let on_host = |s: &Service| hosts_of[&(stack.name.as_str(), s.name.as_str())].contains(host.as_str());
                if stack.services().iter().any(on_host) {
                    let mut share = stack.clone();
                    share.retain_services(on_host);
                    list.push(share);
                }
            }
            Arc::new(list)
        });
        placed.insert(host.clone(), Arc::clone(list));
    }
    Ok(placed)
}

/// A stack takes part in the fleet when any of its services has a placement.
pub fn is_fleet_stack(stack: &Stack) -> bool {
    stack.has_placement()
}

fn hosts_for<'f>(
    fleet: &'f Fleet,
    stack: &Stack,
    service: &Service,
    errors: &mut Vec<Diagnostic>,
) -> BTreeSet<&'f str> {
    let placement = &service.placement;
    let name = crate::names::qualified(&stack.name, &service.name);
    let mut error = |message: String| errors.push(Diagnostic::new(&stack.source, placement.span.clone(), message));
    if placement.is_unrestricted() {
        let span = service.span.clone();
        errors.push(Diagnostic::new(
            &stack.source,
            span,
            format!(
                "{name} has no placement, but other services of stack {} are placed on fleet hosts: add \
                 [services.{}.placement] with `hosts`, `labels` or `global = true`",
                stack.name, service.name
            ),
        ));
        return BTreeSet::new();
    }
    if placement.global {
        return fleet.hosts.keys().map(String::as_str).collect();
    }
    let mut hosts = BTreeSet::new();
    for host in &placement.hosts {
        match fleet.hosts.get_key_value(host) {
            Some((name, _)) => {
                hosts.insert(name.as_str());
            }
            None => {
                let hint = did_you_mean(host, fleet.hosts.keys().map(String::as_str))
                    .map(|h| format!(" (did you mean {h}?)"))
                    .unwrap_or_default();
                error(format!(
                    "{name} is placed on host {host}, which {} does not list{hint}",
                    fleet.source.path.display()
                ));
            }
        }
    }
    if !placement.labels.is_empty() {
        let matching: Vec<&str> = fleet
            .hosts
            .values()
            .filter(|h| placement.labels.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
            .map(|h| h.name.as_str())
            .collect();
        if matching.is_empty() {
            let wanted: Vec<String> = placement.labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
            error(format!(
                "{name} is placed on hosts labelled {}, and no host of {} has all of these labels",
                wanted.join(", "),
                fleet.source.path.display()
            ));
        }
        hosts.extend(matching);
    }
    hosts
}
