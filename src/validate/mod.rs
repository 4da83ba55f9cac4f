//! Host-wide checks: what no single stack file can know by itself.
//!
//! A host's stacks are checked together: `"<stack>.<service>"` dependencies must name a real
//! service, the dependency graph has no cycles, no two stacks produce the same unit name, and no
//! stack produces a unit name that belongs to someone else in systemd's search path. A stack with
//! any problem is dropped whole: it renders nothing. Two containers that publish one host port
//! are a warning (`host_ports`).

mod collisions;
mod graph;
mod host_ports;

pub use collisions::UnitSearchPath;

use crate::config::Parsed;
use crate::diagnostics::{self, Diagnostic, did_you_mean};
use crate::model::{DepTarget, Service, Stack};
use crate::names;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The outcome of checking a host's stacks.
#[derive(Debug, Default)]
pub struct Checked {
    /// Stacks that render, in name order.
    pub stacks: Vec<Stack>,
    /// Every problem (errors and warnings), sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Names of the stacks that have problems (and render nothing).
    pub failed: BTreeSet<String>,
}

impl Checked {
    /// No errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Checks the parse results of all stack files of a host together.
pub fn check_host(parsed: Vec<Parsed>, search_path: &UnitSearchPath) -> Checked {
    let mut checked = Checked::default();
    let mut stacks = Vec::new();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for p in parsed {
        known.insert(p.name.clone());
        checked.diagnostics.extend(p.diagnostics);
        match p.stack {
            Some(stack) => stacks.push(stack),
            None => {
                checked.failed.insert(p.name);
            }
        }
    }
    stacks.sort_by(|a, b| a.name.cmp(&b.name));

    let mut errors: Vec<Diagnostic> = Vec::new();
    check_remote_dependencies(&stacks, &known, &checked.failed, &mut errors);
    graph::check_cycles(&stacks, &mut errors);
    let units = produced_units(&stacks);
    check_duplicate_units(&units, &mut errors);
    check_replica_containers(&units, &mut errors);
    collisions::check_foreign_units(&units, search_path, &mut errors);
    host_ports::check(&stacks, &mut errors);

    // Which stack an error belongs to, by its source (one map, not a scan per error).
    let by_source: HashMap<*const diagnostics::Source, &str> =
        stacks.iter().map(|s| (Arc::as_ptr(&s.source), s.name.as_str())).collect();
    let bad: BTreeSet<String> = errors
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| by_source.get(&Arc::as_ptr(&d.source)).map(|n| n.to_string()))
        .collect();
    checked.diagnostics.extend(errors);
    checked.failed.extend(bad);
    checked.stacks = stacks.into_iter().filter(|s| !checked.failed.contains(s.name.as_str())).collect();
    diagnostics::sort(&mut checked.diagnostics);
    checked
}

fn check_remote_dependencies(
    stacks: &[Stack],
    known: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    errors: &mut Vec<Diagnostic>,
) {
    // Stacks by name; of two of one name (`kapell check` given a namesake), the later wins.
    let by_name: HashMap<&str, &Stack> = stacks.iter().map(|s| (s.name.as_str(), s)).collect();
    for stack in stacks {
        for service in stack.services() {
            let deps = service.requires.iter().map(|d| (d, true)).chain(service.wants.iter().map(|d| (d, false)));
            for (dep, required) in deps {
                let DepTarget::Remote { stack: other, service: wanted } = &dep.target else { continue };
                let verb = if required { "requires" } else { "wants" };
                if failed.contains(other) {
                    continue; // that stack's own errors are reported; don't pile on
                }
                crate::lookups::count();
                let message = match by_name.get(other.as_str()) {
                    Some(target) if target.service(wanted).is_some() => continue,
                    Some(target) => {
                        let hint = did_you_mean(wanted, target.services().iter().map(|s| s.name.as_str()))
                            .map(|n| format!(" (did you mean `{other}.{n}`?)"))
                            .unwrap_or_default();
                        format!(
                            "service `{}` {verb} `{other}.{wanted}`, but stack `{other}` has no service `{wanted}`{hint}",
                            service.name
                        )
                    }
                    None => {
                        let hint = did_you_mean(other, known.iter().map(String::as_str))
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        format!(
                            "service `{}` {verb} `{other}.{wanted}`, but there is no stack `{other}` ({other}.toml){hint}",
                            service.name
                        )
                    }
                };
                if required {
                    errors.push(Diagnostic::new(&stack.source, dep.span.clone(), message));
                } else {
                    let message = format!("{message}; it is ignored unless that unit exists");
                    errors.push(Diagnostic::warning(&stack.source, dep.span.clone(), message));
                }
            }
        }
    }
}

/// A unit a stack produces: its target or a service's unit, named once for every check of
/// unit names across the host.
pub(crate) struct ProducedUnit<'a> {
    pub stack: &'a Stack,
    /// `None`: the stack's target.
    pub service: Option<&'a Service>,
    pub name: String,
}

impl ProducedUnit<'_> {
    /// Where it is defined: the service's table, or the top of the stack's file for its target.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.service.map_or(0..0, |s| s.span.clone())
    }
}

fn produced_units(stacks: &[Stack]) -> Vec<ProducedUnit<'_>> {
    let mut units = Vec::with_capacity(stacks.iter().map(|s| s.services().len() + 1).sum());
    for stack in stacks {
        units.push(ProducedUnit { stack, service: None, name: stack.target_unit() });
        units.extend(stack.services().iter().map(|s| ProducedUnit {
            stack,
            service: Some(s),
            name: s.unit_file_name(&stack.name),
        }));
    }
    units
}

/// A replica's container (`kapell-<stack>-<service>-<n>`) must not be another service's:
/// `web` with `replicas = 2` and a service `web-2` would each remove the other's container when
/// they start or stop. Distinct unit names already give distinct plain containers, and two
/// replicas' names cannot meet (a replica's suffix is a number, a service name starts with a
/// letter), so a replica can only take the container of a plain service, whose unit is then
/// named `<stack>-<service>-<n>.service`: that is what is looked up, in the plain container
/// units' own names (nothing is formed when nothing is replicated).
fn check_replica_containers(units: &[ProducedUnit<'_>], errors: &mut Vec<Diagnostic>) {
    let containers = || units.iter().filter(|u| u.service.is_some_and(Service::is_container));
    if !containers().any(|u| u.service.is_some_and(|s| s.replicas.is_some())) {
        return;
    }
    let plain: HashMap<&str, &ProducedUnit<'_>> = containers()
        .filter(|u| u.service.is_some_and(|s| s.replicas.is_none()))
        .map(|u| (u.name.as_str(), u))
        .collect();
    for unit in containers() {
        let Some(service) = unit.service else { continue };
        for replica in 1..=service.replicas.unwrap_or(0) {
            let Some(other) = plain.get(format!("{}-{}-{replica}.service", unit.stack.name, service.name).as_str())
            else {
                continue;
            };
            let name = names::container_name(&unit.stack.name, &service.name, Some(&replica.to_string()));
            let this = format!("replica {replica} of `{}.{}`", unit.stack.name, service.name);
            let that = other.service.map_or(String::new(), |s| format!("`{}.{}`", other.stack.name, s.name));
            let msg = |a: &str, b: &str| {
                format!("the container `{name}` of {a} is also the container of {b}; rename a service")
            };
            errors.push(Diagnostic::new(&unit.stack.source, unit.span(), msg(&this, &that)));
            errors.push(Diagnostic::new(&other.stack.source, other.span(), msg(&that, &this)));
        }
    }
}

/// Two stacks must not render the same unit (`a-b` + service `c` and `a` + service `b-c`).
fn check_duplicate_units(units: &[ProducedUnit<'_>], errors: &mut Vec<Diagnostic>) {
    let mut owners: HashMap<&str, &ProducedUnit<'_>> = HashMap::with_capacity(units.len());
    for unit in units {
        match owners.entry(unit.name.as_str()) {
            Entry::Occupied(first) => {
                let first = *first.get();
                if first.stack.name != unit.stack.name {
                    let msg = |other: &str| {
                        format!(
                            "unit name `{}` is also produced by stack `{other}`; rename a stack or service",
                            unit.name
                        )
                    };
                    errors.push(Diagnostic::new(&unit.stack.source, unit.span(), msg(&first.stack.name)));
                    errors.push(Diagnostic::new(&first.stack.source, first.span(), msg(&unit.stack.name)));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(unit);
            }
        }
    }
}
