//! Rollouts of one desired state: which hosts get a change to a shared service, in which order,
//! and which are held. Pure decisions over the desired sets and the controller's record
//! ([`State::rollout`](super::state::State)); [`super::converge`] carries them out.
//!
//! - The **desired state** is a hash of what the stack files say for the services placed on
//!   several hosts: every shared unit's content on every host that runs it. A change to a
//!   service of one host only does not change it (such a change is pushed at once, as before).
//! - A rollout brings one desired state. Its canaries (`canary = N`: the first N hosts, in name
//!   order, of those it changes, chosen once and remembered) go first; the others wait until the
//!   canaries have been healthy for `min_healthy_time` and are promoted (`auto_promote`, or
//!   `kapell fleet promote`), then follow in batches of `max_parallel`.
//! - When a batch fails, the desired state has failed for the whole fleet: every host it would
//!   change is held, in this pass and every later one, whoever runs it (`fleet apply` or the
//!   daemon), until the stack files change (a new desired state) or the operator retries it
//!   (`kapell fleet rollout retry`, or `--force`).
//!
//! Why per desired state and not per host: docs/decisions.md ("A rollout is of one desired
//! state, fleet-wide").
//!
//! The states of a rollout, as `fleet status` names them ([`phase`]):
//! in progress → (canaries healthy, not promoted) waiting for promotion → promoted, in progress
//! → completed; any batch failing → failed (held); retry → in progress again.

use super::config::Rollout as Policy;
use super::state::{Failure, HostState, Rollout};
use crate::fleet::protocol::{HostSet, SetFile, sha256, short};
use crate::unitset::markers;
use std::collections::{BTreeMap, BTreeSet};

/// Unit files that the desired sets of two or more hosts contain.
pub fn shared_units(sets: &BTreeMap<String, HostSet>) -> BTreeSet<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for set in sets.values() {
        for unit in set.units() {
            *count.entry(unit).or_default() += 1;
        }
    }
    count.into_iter().filter(|(_, n)| *n > 1).map(|(u, _)| u.to_string()).collect()
}

/// The shared units that going from `current` to `desired` changes or removes (targets aside:
/// they follow from their services).
pub fn shared_changes(current: &HostSet, desired: &HostSet, shared: &BTreeSet<String>) -> Vec<String> {
    let diff = crate::unitset::diff(&current.to_rendered(), &desired.to_rendered());
    diff.changed.into_iter().chain(diff.removed).filter(|u| shared.contains(u) && !u.ends_with(".target")).collect()
}

/// The shared units that going from `current` to `desired` adds (a service placed on the host
/// anew; targets aside).
pub fn shared_additions(current: &HostSet, desired: &HostSet, shared: &BTreeSet<String>) -> Vec<String> {
    let diff = crate::unitset::diff(&current.to_rendered(), &desired.to_rendered());
    diff.added.into_iter().filter(|u| shared.contains(u) && !u.ends_with(".target")).collect()
}

/// The desired state of the shared services: a hash over every shared unit's name and each
/// content it has on the hosts that run it (each field length-prefixed, as set hashes are).
/// What the stack files say, not where: a host that joins the fleet, or leaves it, running
/// the same versions, does not make a new desired state (nor lift the hold of a failed one).
pub fn desired_state(sets: &BTreeMap<String, HostSet>, shared: &BTreeSet<String>) -> String {
    let mut text = String::new();
    for unit in shared {
        let contents: BTreeSet<&str> = sets
            .values()
            .filter_map(|set| match set.files.get(unit) {
                Some(SetFile::Unit { sha256, .. }) => Some(sha256.as_str()),
                _ => None,
            })
            .collect();
        for field in std::iter::once(unit.as_str()).chain(contents) {
            text.push_str(&format!("{}:{field}\n", field.len()));
        }
    }
    sha256(text.as_bytes())
}

/// The stacks the `units` belong to (their `X-Kapell-Stack=`), as found in `sets`.
pub fn stacks_of<'a>(units: impl IntoIterator<Item = &'a String>, sets: &BTreeMap<String, HostSet>) -> Vec<String> {
    let mut stacks = BTreeSet::new();
    for unit in units {
        let text = sets.values().find_map(|s| match s.files.get(unit) {
            Some(SetFile::Unit { text, .. }) => Some(text),
            _ => None,
        });
        if let Some(stack) = text.and_then(|t| markers::stack_of_text(t)) {
            stacks.insert(stack);
        }
    }
    stacks.into_iter().collect()
}

/// What a host whose change touches shared services does in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The desired state failed: not pushed; why, in one line.
    Held(String),
    /// Goes first, with the other canaries.
    Canary,
    /// In this batch (from 1) once the canaries are promoted, which needs `kapell fleet promote`.
    AfterPromotion(usize),
    /// In this batch (from 1), after the canaries if there are any.
    Batch(usize),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Held(why) => write!(f, "held ({why})"),
            Step::Canary => f.write_str("canary"),
            Step::AfterPromotion(n) => write!(f, "after promotion, batch {n}"),
            Step::Batch(n) => write!(f, "batch {n}"),
        }
    }
}

/// The steps of a pass, and the canaries (remembered with the rollout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub steps: BTreeMap<String, Step>,
    pub canaries: Vec<String>,
    pub promoted: bool,
}

/// What each of `rolling` (the hosts whose change touches shared services, in name order) does
/// for the desired state `state`, given the controller's `record` of the last rollout. `changes`
/// names the shared units each host's change touches (hosts it does not name, resumed ones,
/// count as changing one service, the same for all). `force` pushes a failed desired state again.
///
/// Per service, as `[rollout]` says: the canaries are the first `canary` hosts (by name) of each
/// service the change touches, and a batch changes at most `max_parallel` hosts of each.
pub fn schedule(
    policy: &Policy,
    state: &str,
    rolling: &[String],
    changes: &BTreeMap<String, Vec<String>>,
    record: Option<&Rollout>,
    force: bool,
) -> Schedule {
    let record = record.filter(|r| r.desired_state == state);
    let canaries: Vec<String> = match record {
        Some(r) if !r.canaries.is_empty() || r.promoted => r.canaries.clone(),
        _ => canaries_of(policy.canary, rolling, changes),
    };
    if let Some(failed) = record.and_then(|r| r.failed.as_ref()).filter(|_| !force) {
        let why = held_reason(state, failed);
        let steps = rolling.iter().map(|h| (h.clone(), Step::Held(why.clone()))).collect();
        return Schedule { steps, canaries, promoted: false };
    }
    let promoted = canaries.is_empty() || record.is_some_and(|r| r.promoted);
    let mut steps = BTreeMap::new();
    if !promoted {
        for host in rolling.iter().filter(|h| canaries.contains(h)) {
            steps.insert(host.clone(), Step::Canary);
        }
    }
    let rest: Vec<&String> = rolling.iter().filter(|h| !steps.contains_key(*h)).collect();
    let waits = !promoted && !policy.auto_promote;
    for (i, batch) in batches(&rest, changes, policy.max_parallel.max(1)).into_iter().enumerate() {
        for host in batch {
            let step = if waits { Step::AfterPromotion(i + 1) } else { Step::Batch(i + 1) };
            steps.insert(host.clone(), step);
        }
    }
    Schedule { steps, canaries, promoted }
}

/// The services (shared units) a host's change touches. Hosts `changes` does not name count as
/// changing one service, the same for all of them (as every host did before changes were told
/// apart).
fn services_of<'a>(host: &str, changes: &'a BTreeMap<String, Vec<String>>) -> Vec<&'a str> {
    match changes.get(host) {
        Some(units) if !units.is_empty() => units.iter().map(String::as_str).collect(),
        _ => vec![""],
    }
}

/// For each service the change touches, its first `n` hosts in `rolling` (name order); in name
/// order.
fn canaries_of(n: usize, rolling: &[String], changes: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let mut canaries = Vec::new();
    for host in rolling {
        let services = services_of(host, changes);
        // A canary of any of its services: it brings the new version of all of them.
        if services.iter().any(|s| taken.get(s).copied().unwrap_or(0) < n) {
            for s in services {
                *taken.entry(s).or_default() += 1;
            }
            canaries.push(host.clone());
        }
    }
    canaries
}

/// `hosts` (name order) in batches, each changing at most `max_parallel` hosts of any one
/// service: a host joins the first batch where every service it touches has room.
fn batches<'a>(
    hosts: &[&'a String],
    changes: &BTreeMap<String, Vec<String>>,
    max_parallel: usize,
) -> Vec<Vec<&'a String>> {
    let mut batches: Vec<(Vec<&'a String>, BTreeMap<&str, usize>)> = Vec::new();
    for host in hosts {
        let services = services_of(host, changes);
        let fits =
            |count: &BTreeMap<&str, usize>| services.iter().all(|s| count.get(s).copied().unwrap_or(0) < max_parallel);
        let i = match batches.iter().position(|(_, count)| fits(count)) {
            Some(i) => i,
            None => {
                batches.push((Vec::new(), BTreeMap::new()));
                batches.len() - 1
            }
        };
        let (batch, count) = &mut batches[i];
        batch.push(host);
        for s in &services {
            *count.entry(s).or_default() += 1;
        }
    }
    batches.into_iter().map(|(batch, _)| batch).collect()
}

/// Why a host is held: the failed desired state, where it failed, and what to do.
pub fn held_reason(state: &str, failed: &Failure) -> String {
    format!(
        "desired state {} failed on {}; change the stacks, or `kapell fleet rollout retry` \
         (`kapell fleet status` says why)",
        short(state),
        failed.host
    )
}

/// Why the others wait for the `pending` canaries (not yet healthy with their desired set,
/// `desired(host)`), host by host: whether time, the host or an operator has to act.
pub fn canary_wait<'a>(
    pending: &[&str],
    hosts: &BTreeMap<String, HostState>,
    desired: impl Fn(&str) -> Option<&'a str>,
) -> String {
    // Reasons in a fixed order, each with its hosts, so that the message reads the same at
    // every pass.
    let mut reasons: Vec<(String, Vec<&str>)> = Vec::new();
    for &host in pending {
        let record = hosts.get(host);
        let why = match record {
            Some(s) if s.runs_foreign_set() => "runs a set this controller did not push (undo the edit, or \
                                                `kapell fleet apply --force` replaces it)"
                .to_string(),
            Some(HostState { held: Some(held), .. }) if desired(host) == Some(held.hash.as_str()) => {
                format!("is held back ({})", held.reason)
            }
            Some(HostState { unreachable: Some(u), .. }) => format!("cannot be reached ({})", u.error),
            _ => "not healthy yet".to_string(),
        };
        match reasons.iter_mut().find(|(w, _)| *w == why) {
            Some((_, group)) => group.push(host),
            None => reasons.push((why, vec![host])),
        }
    }
    let why: Vec<String> = reasons.iter().map(|(why, group)| format!("{} {why}", group.join(", "))).collect();
    format!("waiting for canary {} ({}): the others follow once it is healthy", pending.join(", "), why.join("; "))
}

/// The rollout's state as `fleet status` and the daemon's `STATUS=` name it.
pub fn phase(r: &Rollout) -> &'static str {
    if r.failed.is_some() {
        "failed"
    } else if r.outcome.as_deref() == Some("completed") {
        "completed"
    } else if !r.canaries.is_empty() && !r.promoted && r.canaries_healthy_usec.is_some() && r.in_flight.is_empty() {
        "waiting for promotion"
    } else {
        "in progress"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Duration;

    fn policy(max_parallel: usize, canary: usize, auto_promote: bool) -> Policy {
        Policy {
            max_parallel,
            min_healthy_time: Duration::from_secs(1),
            healthy_deadline: Duration::from_secs(10),
            auto_revert: true,
            canary,
            auto_promote,
        }
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn steps(s: &Schedule) -> Vec<(String, String)> {
        s.steps.iter().map(|(h, st)| (h.clone(), st.to_string())).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn without_canaries_hosts_go_in_batches_of_max_parallel() {
        let s = schedule(&policy(2, 0, false), "d", &hosts(&["a", "b", "c"]), &BTreeMap::new(), None, false);
        assert_eq!(steps(&s), pairs(&[("a", "batch 1"), ("b", "batch 1"), ("c", "batch 2")]));
        assert!(s.promoted && s.canaries.is_empty());
    }

    #[test]
    fn canaries_go_first_and_the_rest_waits_for_promotion() {
        let s = schedule(&policy(1, 1, false), "d", &hosts(&["a", "b", "c"]), &BTreeMap::new(), None, false);
        assert_eq!(
            steps(&s),
            pairs(&[("a", "canary"), ("b", "after promotion, batch 1"), ("c", "after promotion, batch 2")])
        );
        let auto = schedule(&policy(1, 1, true), "d", &hosts(&["a", "b", "c"]), &BTreeMap::new(), None, false);
        assert_eq!(steps(&auto), pairs(&[("a", "canary"), ("b", "batch 1"), ("c", "batch 2")]));
    }

    /// Two services changed at once, db on d1–d3 and web on w1–w3: each gets its own canary,
    /// and a batch changes at most max_parallel hosts of each (d2 and w2 together).
    #[test]
    fn canaries_and_batches_are_per_service() {
        let rolling = hosts(&["d1", "d2", "d3", "w1", "w2", "w3"]);
        let mut changes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in &rolling {
            let unit = if h.starts_with('d') { "data-db.service" } else { "shop-web.service" };
            changes.insert(h.clone(), vec![unit.to_string()]);
        }
        let s = schedule(&policy(1, 1, true), "d", &rolling, &changes, None, false);
        assert_eq!(s.canaries, hosts(&["d1", "w1"]));
        assert_eq!(
            steps(&s),
            pairs(&[
                ("d1", "canary"),
                ("d2", "batch 1"),
                ("d3", "batch 2"),
                ("w1", "canary"),
                ("w2", "batch 1"),
                ("w3", "batch 2")
            ])
        );
        // A host that changes both services needs room for both in its batch.
        changes.insert("d3".into(), vec!["data-db.service".into(), "shop-web.service".into()]);
        let s = schedule(&policy(1, 0, false), "d", &rolling, &changes, None, false);
        assert_eq!(
            steps(&s),
            pairs(&[
                ("d1", "batch 1"),
                ("d2", "batch 2"),
                ("d3", "batch 3"),
                ("w1", "batch 1"),
                ("w2", "batch 2"),
                ("w3", "batch 4")
            ])
        );
    }

    #[test]
    fn the_canaries_are_remembered_and_promotion_releases_the_rest() {
        // The canary "a" already runs the new state, so it is no longer among the hosts to change.
        let mut record = Rollout {
            desired_state: "d".into(),
            canaries: hosts(&["a"]),
            canaries_healthy_usec: Some(1),
            ..Default::default()
        };
        let waiting = schedule(&policy(1, 1, false), "d", &hosts(&["b", "c"]), &BTreeMap::new(), Some(&record), false);
        assert_eq!(waiting.canaries, hosts(&["a"]));
        assert_eq!(steps(&waiting), pairs(&[("b", "after promotion, batch 1"), ("c", "after promotion, batch 2")]));
        assert_eq!(phase(&record), "waiting for promotion");
        record.promoted = true;
        let promoted = schedule(&policy(1, 1, false), "d", &hosts(&["b", "c"]), &BTreeMap::new(), Some(&record), false);
        assert_eq!(steps(&promoted), pairs(&[("b", "batch 1"), ("c", "batch 2")]));
    }

    #[test]
    fn a_failed_state_holds_every_host_until_it_changes_or_is_forced() {
        let record = Rollout {
            desired_state: "d".into(),
            failed: Some(Failure { host: "a".into(), reason: "x.service is failed".into(), at_usec: 1 }),
            ..Default::default()
        };
        let rolling = hosts(&["a", "b", "c"]);
        let held = schedule(&policy(1, 0, false), "d", &rolling, &BTreeMap::new(), Some(&record), false);
        assert!(held.steps.values().all(|s| matches!(s, Step::Held(why) if why.contains("failed on a"))));
        assert_eq!(phase(&record), "failed");
        let changed = schedule(&policy(1, 0, false), "e", &rolling, &BTreeMap::new(), Some(&record), false);
        assert_eq!(changed.steps["a"], Step::Batch(1));
        let forced = schedule(&policy(1, 0, false), "d", &rolling, &BTreeMap::new(), Some(&record), true);
        assert_eq!(forced.steps["c"], Step::Batch(3));
    }

    #[test]
    fn the_desired_state_covers_shared_units_only() {
        use crate::render::OutputFile;
        let unit = |name: &str, text: &str| OutputFile::Unit {
            name: name.into(),
            text: format!("[Unit]\nX-Kapell-Stack={}\n{text}", name.split('-').next().unwrap_or("")),
        };
        let sets = |agent: &str, db: &str| -> BTreeMap<String, HostSet> {
            BTreeMap::from([
                ("a".to_string(), HostSet::from_rendered(&[unit("agent-node.service", agent)])),
                (
                    "b".to_string(),
                    HostSet::from_rendered(&[unit("agent-node.service", agent), unit("data-db.service", db)]),
                ),
            ])
        };
        let state = |s: &BTreeMap<String, HostSet>| desired_state(s, &shared_units(s));
        assert_eq!(shared_units(&sets("1", "1")), BTreeSet::from(["agent-node.service".to_string()]));
        assert_eq!(state(&sets("1", "1")), state(&sets("1", "2")), "a service of one host is not part of it");
        assert_ne!(state(&sets("1", "1")), state(&sets("2", "1")));
        // A third host running the same version: the same desired state.
        let mut more = sets("1", "1");
        more.insert("c".to_string(), more["a"].clone());
        assert_eq!(state(&more), state(&sets("1", "1")), "where it runs is not part of it");
        assert_eq!(stacks_of(&["agent-node.service".to_string()], &sets("1", "1")), ["agent"]);
    }

    #[test]
    fn a_canary_wait_says_what_each_canary_waits_for() {
        use super::super::state::{Held, Unreachable};
        let mut hosts = BTreeMap::new();
        // Pushed, not healthy for long enough yet.
        hosts.insert(
            "a".to_string(),
            HostState { current: "d1".into(), known: vec!["d1".into()], ..Default::default() },
        );
        // Edited by hand since the last push.
        hosts
            .insert("b".to_string(), HostState { current: "x".into(), known: vec!["d1".into()], ..Default::default() });
        // Went back from the set on its own.
        let held = Held { hash: "d1".into(), reason: "rolled back by the peer: web failed".into() };
        hosts.insert("c".to_string(), HostState { held: Some(held), ..Default::default() });
        let unreachable = Unreachable { error: "ssh: connection refused".into(), ..Default::default() };
        hosts.insert("d".to_string(), HostState { unreachable: Some(unreachable), ..Default::default() });
        // Never contacted, and a host whose hold is of another set than the one it waits for.
        let held = Held { hash: "old".into(), reason: "another set".into() };
        hosts.insert("f".to_string(), HostState { held: Some(held), ..Default::default() });
        // A host without a set reports the empty set's hash: nobody's, not a set edited by hand.
        let empty = crate::fleet::protocol::HostSet::from_rendered(&[]).hash;
        hosts.insert("g".to_string(), HostState { current: empty, known: vec!["d1".into()], ..Default::default() });
        let desired = |_: &str| Some("d1");
        let wait = canary_wait(&["a", "b", "c", "d", "e", "f", "g"], &hosts, desired);
        assert_eq!(
            wait,
            "waiting for canary a, b, c, d, e, f, g (a, e, f, g not healthy yet; b runs a set this controller did not push \
             (undo the edit, or `kapell fleet apply --force` replaces it); c is held back (rolled back by the peer: \
             web failed); d cannot be reached (ssh: connection refused)): the others follow once it is healthy"
        );
        assert_eq!(
            canary_wait(&["a"], &hosts, desired),
            "waiting for canary a (a not healthy yet): the others follow once it is healthy"
        );
    }
}
