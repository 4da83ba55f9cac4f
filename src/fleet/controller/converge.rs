//! One pass that brings hosts to their desired sets, shared by `kapell fleet apply` and the
//! federation daemon (see docs/fleet-protocol.md).
//!
//! - A host whose last known set is already the desired one gets one install request: a no-op
//!   (one round trip over the shared connection) unless it drifted, and then the peer repairs
//!   it. Every other host is asked for its set first.
//! - A host whose change only adds units, or changes units no other host runs, is pushed at once
//!   with the others (the direct wave). A host where a unit that several hosts run changes (or
//!   goes away) is part of a rolling update: batches of `max_parallel` hosts, each pushed, then
//!   watched until healthy for `min_healthy_time` (within `healthy_deadline`) before the next
//!   batch starts. A failed batch stops the rollout; with `auto_revert` its hosts go back to
//!   their last confirmed set, and hosts not yet reached are never touched.
//! - Every push carries a confirm window: the controller confirms over a fresh connection once
//!   the set is active (and, in a rollout, healthy); a peer that hears nothing reverts on its
//!   own. A set that was rolled back on a host is held back there until the desired set changes.
//!
//! Progress is written to the [`State`] before each step, so a controller killed mid-rollout
//! finds the batch it was waiting on and checks it again before going on.

use super::hosts::{Controller, HostResult};
use super::state::{Held, Rollout, State, Unreachable};
use crate::clock::now_usec;
use crate::fleet::protocol::{Body, HostSet, Reply, UnitState};
use crate::status::{Health, SupervisorStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often a batch's health is polled during a rollout.
const HEALTH_POLL: Duration = Duration::from_millis(1000);
/// Backoff of an unreachable host: from this, doubling, up to [`BACKOFF_MAX`], with jitter.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Push every host at once, no batches.
    pub no_rollout: bool,
    /// Overwrite a set this controller did not push, and push a set that was held back.
    pub force: bool,
}

/// What a pass did to one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    UpToDate,
    /// Changed: new set, or drift repaired (the reply's actions say what).
    Converged,
    Failed(String),
    /// The desired set was rolled back on this host before; not pushed again until it changes.
    HeldBack(String),
    /// Pushed in a rollout batch that failed, and rolled back.
    RolledBack(String),
    /// A rollout stopped before it reached this host; nothing was changed.
    NotReached,
}

#[derive(Debug, Clone)]
pub struct HostOutcome {
    pub host: String,
    pub outcome: Outcome,
    /// The last reply of the host in this pass.
    pub reply: Option<Reply>,
    pub took: Duration,
}

impl HostOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_) | Outcome::RolledBack(_))
    }
}

/// Brings `hosts` to their desired sets; `progress` sees each host's outcome as it is known.
pub fn converge(
    c: &Controller,
    state: &mut State,
    hosts: &[String],
    options: &Options,
    progress: &(dyn Fn(&HostOutcome) + Sync),
) -> Vec<HostOutcome> {
    let mut outcomes: BTreeMap<String, HostOutcome> = BTreeMap::new();
    let report = |o: HostOutcome, outcomes: &mut BTreeMap<String, HostOutcome>| {
        progress(&o);
        outcomes.insert(o.host.clone(), o);
    };
    let desired = |host: &str| c.sets[host].hash.clone();

    // Held back: the desired set failed there before.
    let mut todo: Vec<String> = Vec::new();
    for host in hosts {
        match state.host(host).held.clone() {
            Some(held) if held.hash == desired(host) && !options.force => {
                let why = format!(
                    "set {} was rolled back here ({}); change the stacks, or --force",
                    crate::fleet::protocol::short(&held.hash),
                    held.reason
                );
                report(
                    HostOutcome {
                        host: host.clone(),
                        outcome: Outcome::HeldBack(why),
                        reply: None,
                        took: Duration::ZERO,
                    },
                    &mut outcomes,
                );
            }
            _ => todo.push(host.clone()),
        }
    }

    // An interrupted rollout: its in-flight batch is checked first.
    let resumed: Vec<String> = state
        .rollout
        .as_ref()
        .filter(|r| r.outcome.is_none())
        .map(|r| {
            r.in_flight.iter().filter(|h| todo.contains(h) && r.desired.get(*h) == Some(&desired(h))).cloned().collect()
        })
        .unwrap_or_default();

    // Hosts whose set may change are asked what they run (for the rollout decision). A host this
    // controller never pushed to is not asked: a rollout only replaces sets it pushed, and an
    // install refuses to overwrite any other set (so a first push costs one request, not two).
    let unknown: Vec<String> = todo
        .iter()
        .filter(|h| {
            let host = state.host(h);
            host.current != desired(h) && !host.known.is_empty() && !resumed.contains(h)
        })
        .cloned()
        .collect();
    let mut current_files: BTreeMap<String, HostSet> = BTreeMap::new();
    for r in c.each(&unknown, &|_| {}, |host| c.request(host, Body::Status, false)) {
        match r.outcome {
            Ok(reply) => {
                state.host(&r.host).current = reply.current.clone();
                current_files
                    .insert(r.host.clone(), HostSet { files: reply.files, catalog: None, hash: reply.current });
            }
            Err(why) => {
                mark_unreachable(state, &r.host, &why);
                report(
                    HostOutcome { host: r.host.clone(), outcome: Outcome::Failed(why), reply: None, took: r.took },
                    &mut outcomes,
                );
            }
        }
    }
    todo.retain(|h| !outcomes.contains_key(h));

    let shared = shared_units(c);
    let (rolling, direct): (Vec<String>, Vec<String>) = todo.iter().cloned().partition(|h| {
        !options.no_rollout
            && (resumed.contains(h) || current_files.get(h).is_some_and(|cur| touches_shared(cur, &c.sets[h], &shared)))
    });

    // The direct wave: everything at once.
    for h in &direct {
        let hash = desired(h);
        state.pushing(h, &hash);
    }
    let _ = state.save();
    let confirm_secs = c.fleet.defaults.confirm_timeout.as_std().as_secs().max(1);
    let known = known_of(state, &direct);
    let results = c.each(&direct, &|o: &HostOutcome| progress(o), |host| {
        push_and_confirm(c, host, known[host].clone(), options.force, confirm_secs)
    });
    for o in results {
        record(state, &o, &desired(&o.host));
        outcomes.insert(o.host.clone(), o);
    }

    // The rolling update: resumed batch first, then the rest in name order.
    if !rolling.is_empty() {
        let mut order: Vec<String> = resumed.clone();
        order.extend(rolling.iter().filter(|h| !resumed.contains(h)).cloned());
        rollout(c, state, &order, resumed.len(), options, &mut |o| report(o, &mut outcomes));
    }
    let _ = state.save();
    hosts.iter().filter_map(|h| outcomes.remove(h)).collect()
}

/// The hashes this controller pushed to each of `hosts` (what an install may replace).
fn known_of(state: &mut State, hosts: &[String]) -> BTreeMap<String, Vec<String>> {
    hosts.iter().map(|h| (h.clone(), state.host(h).known.clone())).collect()
}

/// Pushes `host`'s set with a confirm window and confirms it once the reply says it is up.
fn push_and_confirm(c: &Controller, host: &str, known: Vec<String>, force: bool, confirm_secs: u64) -> HostOutcome {
    let start = Instant::now();
    let set = c.sets[host].clone();
    let r = c.request(host, Body::Install { set, known, force, confirm_within: Some(confirm_secs) }, false);
    let mut o = outcome_of(r);
    if o.outcome == Outcome::Converged
        && let Some(reply) = &o.reply
        && reply.pending.is_some()
    {
        let hash = reply.current.clone();
        if let Err(why) = c.request(host, Body::Confirm { hash }, true).outcome.and_then(refusal) {
            o.outcome = Outcome::Failed(format!("installed, but the confirmation over a new connection failed: {why}"));
        }
    }
    o.took = start.elapsed();
    o
}

fn outcome_of(r: HostResult) -> HostOutcome {
    let (outcome, reply) = match r.outcome {
        Err(why) => (Outcome::Failed(why), None),
        Ok(reply) => {
            let outcome = match (&reply.error, reply.failures) {
                _ if reply.held.is_some() => Outcome::HeldBack(reply.held.clone().unwrap_or_default()),
                (Some(e), _) => Outcome::Failed(e.clone()),
                (None, n) if n > 0 => Outcome::Failed(failed_units(&reply)),
                (None, _) if reply.changed => Outcome::Converged,
                _ => Outcome::UpToDate,
            };
            (outcome, Some(reply))
        }
    };
    HostOutcome { host: r.host, outcome, reply, took: r.took }
}

/// A reply that carries an error is a failure too.
fn refusal(reply: Reply) -> Result<Reply, String> {
    match &reply.error {
        Some(e) => Err(e.clone()),
        None => Ok(reply),
    }
}

/// `N unit(s) failed` plus each failing unit's last journal lines.
fn failed_units(reply: &Reply) -> String {
    let mut text = format!("{} unit(s) failed", reply.failures);
    for line in reply.actions.iter().filter(|a| a.starts_with("FAILED")) {
        text.push_str(&format!("\n    {line}"));
    }
    for (unit, lines) in &reply.journal {
        text.push_str(&format!("\n    journal of {unit}:"));
        for line in lines {
            text.push_str(&format!("\n      {line}"));
        }
    }
    text
}

/// Updates the host's state from what a pass learned.
fn record(state: &mut State, o: &HostOutcome, desired: &str) {
    if let (Outcome::Failed(why), None) = (&o.outcome, &o.reply) {
        mark_unreachable(state, &o.host, why);
        return;
    }
    let host = state.host(&o.host);
    match (&o.outcome, &o.reply) {
        (Outcome::HeldBack(why), _) => {
            host.held = Some(Held { hash: desired.to_string(), reason: why.clone() });
        }
        (_, Some(reply)) => {
            host.unreachable = None;
            host.current = reply.current.clone();
            if reply.current == desired && reply.pending.is_none() && !o.is_failure() {
                host.healthy = desired.to_string();
            }
            // The peer refused the set it had rolled back on its own.
            if let Some(why) = &reply.rolled_back
                && reply.current != desired
            {
                host.held = Some(Held { hash: desired.to_string(), reason: format!("rolled back by the peer: {why}") });
            }
        }
        _ => {}
    }
}

/// Counts a failed contact and schedules the next try: exponential backoff with jitter.
fn mark_unreachable(state: &mut State, host: &str, why: &str) {
    let now = now_usec();
    let entry =
        state.host(host).unreachable.get_or_insert_with(|| Unreachable { since_usec: now, ..Default::default() });
    entry.failures += 1;
    entry.error = why.to_string();
    let exp = BACKOFF_MIN.saturating_mul(1u32 << entry.failures.min(10).saturating_sub(1)).min(BACKOFF_MAX);
    // Jitter in [0.5, 1.5): hosts that failed together do not retry together.
    let jitter = 0.5
        + (now.wrapping_mul(6364136223846793005).wrapping_add(host.len() as u64) >> 11) as f64 / (1u64 << 53) as f64;
    entry.next_try_usec = now + (exp.as_micros() as f64 * jitter) as u64;
}

/// Unit files that the desired sets of two or more hosts contain.
fn shared_units(c: &Controller) -> BTreeSet<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for set in c.sets.values() {
        for unit in set.units() {
            *count.entry(unit).or_default() += 1;
        }
    }
    count.into_iter().filter(|(_, n)| *n > 1).map(|(u, _)| u.to_string()).collect()
}

/// Does going from `current` to `desired` change or remove a unit several hosts run?
fn touches_shared(current: &HostSet, desired: &HostSet, shared: &BTreeSet<String>) -> bool {
    let diff = crate::unitset::diff(&current.to_rendered(), &desired.to_rendered());
    diff.changed.iter().chain(&diff.removed).any(|u| shared.contains(u) && !u.ends_with(".target"))
}

/// The rolling update of `order` (the first `resumed` hosts were in flight when a previous run
/// stopped: they are only watched, not pushed again).
fn rollout(
    c: &Controller,
    state: &mut State,
    order: &[String],
    resumed: usize,
    options: &Options,
    report: &mut dyn FnMut(HostOutcome),
) {
    let policy = &c.fleet.rollout;
    let batch_size = policy.max_parallel.max(1);
    let window = policy.healthy_deadline.as_std() + c.fleet.defaults.confirm_timeout.as_std();
    let mut rollout = Rollout {
        desired: order.iter().map(|h| (h.clone(), c.sets[h].hash.clone())).collect(),
        waiting: order.to_vec(),
        started_usec: now_usec(),
        ..Default::default()
    };
    let mut batches: Vec<Vec<String>> = Vec::new();
    if resumed > 0 {
        batches.push(order[..resumed].to_vec());
    }
    batches.extend(order[resumed..].chunks(batch_size).map(<[String]>::to_vec));
    for (i, batch) in batches.iter().enumerate() {
        rollout.waiting.retain(|h| !batch.contains(h));
        rollout.in_flight = batch.clone();
        for h in batch {
            state.pushing(h, &c.sets[h].hash);
        }
        state.rollout = Some(rollout.clone());
        let _ = state.save();
        let start = Instant::now();
        // Push the batch (a resumed batch is already there) and remember each unit's restarts.
        let pushed: Vec<HostOutcome> = if i == 0 && resumed > 0 {
            c.each(batch, &|_| {}, |h| outcome_of(c.request(h, Body::Status, false)))
        } else {
            let known = known_of(state, batch);
            c.each(batch, &|_| {}, |h| {
                let body = Body::Install {
                    set: c.sets[h].clone(),
                    known: known[h].clone(),
                    force: options.force,
                    confirm_within: Some(window.as_secs().max(1)),
                };
                outcome_of(c.request(h, body, false))
            })
        };
        let failure = pushed.iter().find(|o| matches!(o.outcome, Outcome::Failed(_))).map(|o| {
            let Outcome::Failed(why) = &o.outcome else { unreachable!() };
            format!("{}: {why}", o.host)
        });
        let baseline: BTreeMap<String, BTreeMap<String, u32>> =
            pushed.iter().map(|o| (o.host.clone(), o.reply.as_ref().map(restarts).unwrap_or_default())).collect();
        let verdict = match failure {
            Some(why) => Err(why),
            None => watch(c, batch, &baseline, policy.min_healthy_time.as_std(), policy.healthy_deadline.as_std()),
        };
        match verdict {
            Ok(replies) => {
                for h in batch {
                    let hash = c.sets[h].hash.clone();
                    let confirmed = c.request(h, Body::Confirm { hash: hash.clone() }, true).outcome.and_then(refusal);
                    let outcome = match confirmed {
                        Ok(_) => Outcome::Converged,
                        Err(why) => Outcome::Failed(format!("healthy, but the confirmation failed: {why}")),
                    };
                    let o =
                        HostOutcome { host: h.clone(), outcome, reply: replies.get(h).cloned(), took: start.elapsed() };
                    record(state, &o, &hash);
                    report(o);
                }
                rollout.done.extend(batch.iter().cloned());
            }
            Err(why) => {
                let reverted = c.fleet.rollout.auto_revert;
                for h in batch {
                    let hash = c.sets[h].hash.clone();
                    let mut reply = None;
                    if reverted {
                        reply = c.request(h, Body::Rollback, false).outcome.ok();
                    }
                    let host = state.host(h);
                    host.held = Some(Held { hash: hash.clone(), reason: format!("rollout failed: {why}") });
                    if let Some(r) = &reply {
                        host.current = r.current.clone();
                    }
                    let what = if reverted { "rolled back" } else { "left as is (auto_revert = false)" };
                    report(HostOutcome {
                        host: h.clone(),
                        outcome: Outcome::RolledBack(format!("{what}: {why}")),
                        reply,
                        took: start.elapsed(),
                    });
                }
                for h in &rollout.waiting {
                    report(HostOutcome {
                        host: h.clone(),
                        outcome: Outcome::NotReached,
                        reply: None,
                        took: Duration::ZERO,
                    });
                }
                rollout.in_flight.clear();
                rollout.outcome =
                    Some(format!("stopped and {}: {why}", if reverted { "rolled back" } else { "not reverted" }));
                state.rollout = Some(rollout);
                let _ = state.save();
                return;
            }
        }
    }
    rollout.in_flight.clear();
    rollout.outcome = Some("completed".to_string());
    state.rollout = Some(rollout);
    let _ = state.save();
}

/// Each service unit's restart counter.
fn restarts(reply: &Reply) -> BTreeMap<String, u32> {
    reply.units.iter().filter(|u| !u.service.is_empty()).map(|u| (u.unit.clone(), u.restarts)).collect()
}

/// Waits until every host of `batch` has been healthy for `min_healthy` without a break, or
/// fails at `deadline` naming the host, the unit and why (with its last journal lines).
fn watch(
    c: &Controller,
    batch: &[String],
    baseline: &BTreeMap<String, BTreeMap<String, u32>>,
    min_healthy: Duration,
    deadline: Duration,
) -> Result<BTreeMap<String, Reply>, String> {
    let start = Instant::now();
    let mut healthy_since: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let results = c.each(batch, &|_| {}, |h| c.request(h, Body::Status, false));
        let mut replies = BTreeMap::new();
        let mut last_problem = None;
        for r in results {
            let problem = match &r.outcome {
                Err(why) => Some(format!("{}: unreachable: {why}", r.host)),
                Ok(reply) => unhealthy(reply, baseline.get(&r.host)).map(|p| format!("{}: {p}", r.host)),
            };
            match problem {
                None => {
                    healthy_since.entry(r.host.clone()).or_insert_with(Instant::now);
                }
                Some(p) => {
                    healthy_since.remove(&r.host);
                    last_problem = Some(p);
                }
            }
            if let Ok(reply) = r.outcome {
                replies.insert(r.host, reply);
            }
        }
        let all = batch.iter().all(|h| healthy_since.get(h).is_some_and(|t| t.elapsed() >= min_healthy));
        if all {
            return Ok(replies);
        }
        if start.elapsed() > deadline {
            return Err(last_problem.unwrap_or_else(|| "not healthy for long enough before the deadline".to_string()));
        }
        std::thread::sleep(HEALTH_POLL);
    }
}

/// Why a host is not healthy: a unit not active, restarted since the push, or failing its health
/// check; `None` when healthy.
fn unhealthy(reply: &Reply, baseline: Option<&BTreeMap<String, u32>>) -> Option<String> {
    for u in reply.units.iter().filter(|u| !u.service.is_empty()) {
        let journal = |u: &UnitState| {
            reply.journal.get(&u.unit).map(|l| format!("; last lines: {}", l.join(" | "))).unwrap_or_default()
        };
        if u.active != "active" {
            return Some(format!("{} is {} ({}){}", u.unit, u.active, u.sub, journal(u)));
        }
        if let Some(before) = baseline.and_then(|b| b.get(&u.unit))
            && u.restarts > *before
        {
            return Some(format!("{} restarted {} time(s) since the push{}", u.unit, u.restarts - before, journal(u)));
        }
        let health = SupervisorStatus::parse(&u.status).and_then(|s| s.health());
        if matches!(health, Some(Health::Unhealthy) | Some(Health::Starting)) {
            return Some(format!("{}: health check {}", u.unit, health.map_or("", |h| h.as_str())));
        }
    }
    None
}
