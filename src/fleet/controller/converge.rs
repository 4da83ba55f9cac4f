//! One pass that brings hosts to their desired sets, shared by `kapell fleet apply` and the
//! federation daemon (see docs/fleet-protocol.md).
//!
//! - A host whose last known set is already the desired one gets one repair request, naming the
//!   set by its hash: a no-op (one round trip of a few hundred bytes over the shared connection)
//!   unless it drifted, and then the peer repairs it; a host that runs another set after all is
//!   sent the set. Every other host this controller pushed to before is asked for its set first, for the
//!   rollout's decision (not with `--no-rollout`: the install's reply says what it runs).
//! - A host whose change only adds units, or changes units no other host runs, is pushed at once
//!   with the others (the direct wave). A host where a unit that several hosts run changes (or
//!   goes away) is part of the rollout of the desired state ([`super::rollout`] decides the
//!   order): canaries first, then batches of `max_parallel` hosts, each pushed, then watched
//!   until healthy for `min_healthy_time` (within `healthy_deadline`) before the next batch
//!   starts. A failed batch fails the desired state for the whole fleet: with `auto_revert` its
//!   hosts go back to their last confirmed set, and every other host is held (never given that
//!   desired state) until the stack files change or the operator retries.
//! - Every push carries a confirm window: the controller confirms over a fresh connection once
//!   the set is active (and, in a rollout, healthy); a peer that hears nothing reverts on its
//!   own, and that set is held back on that host until it changes.
//! - A held host keeps the set it runs, and that set stays repaired: a repair request names it
//!   by its hash (a no-op unless it drifted), carrying the fleet's health.
//!
//! Progress is written to the [`State`] before each step, so a controller killed mid-rollout
//! finds the batch it was waiting on and checks it again before going on.

use super::batch::{self, Batch, Pass, Stopped};
use super::hosts::{Controller, HostResult};
use super::instance_health;
pub use super::outcomes::{HostOutcome, Outcome};
use super::outcomes::{
    Install, confirm, known_of, mark_unreachable, needs_whole_set, outcome_of, record, refusal, send_install,
    with_catalog,
};
use super::rollout;
use super::state::{Failure, Held, Rollout, State, is_foreign_set};
use crate::clock::now_usec;
use crate::discovery::pushed_health::InstanceHealth;
use crate::fleet::protocol::{Body, HostSet, Reply};
use crate::printable::printable;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Push every host at once, no batches.
    pub no_rollout: bool,
    /// Overwrite a set this controller did not push, and push a set that was held back.
    pub force: bool,
    /// Roll a failed desired state out again (`kapell fleet apply --force`; never the daemon,
    /// whose every pass would otherwise push a failed version to the next host).
    pub retry_failed: bool,
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

    // Held back: this host reverted the desired set on its own before. It is not pushed that
    // set, but like the hosts a rollout holds back the set it runs is repaired below (drift on
    // it is repaired, and it hears the fleet's health), by the hash of the set it last said it
    // runs, asked only when the controller does not know it.
    let mut todo: Vec<String> = Vec::new();
    let mut held: Vec<String> = Vec::new();
    for host in hosts {
        match state.host(host).held.clone() {
            Some(h) if h.hash == desired(host) && !options.force => {
                let why = format!(
                    "set {} is held back here ({}); change the stacks, or --force",
                    crate::fleet::protocol::short(&h.hash),
                    h.reason
                );
                report(held_back(host, why), &mut outcomes);
                held.push(host.clone());
            }
            _ => todo.push(host.clone()),
        }
    }

    let shared = rollout::shared_units(&c.sets);
    // The desired state the stack files say, with where and why, if its rollout failed: it
    // stays held for the whole fleet until the stacks change, `fleet rollout retry` or --force.
    let failed: Option<(String, Failure)> = (!options.retry_failed)
        .then_some(state.rollout.as_ref())
        .flatten()
        .and_then(|r| Some((r.desired_state.clone(), r.failed.clone()?)))
        .filter(|(failed, _)| *failed == rollout::desired_state(&c.sets, &shared));
    // A host this controller never pushed to (one that joined the fleet, a lost record) is not
    // asked what it runs, so no rollout would hold it: it is held here, if its set has any of
    // the shared services.
    if let Some((desired_state, failure)) = &failed {
        let why = rollout::held_reason(desired_state, failure);
        for host in todo.iter().filter(|h| state.hosts.get(*h).is_none_or(|s| s.known.is_empty())) {
            if c.sets[host].units().any(|u| shared.contains(u)) {
                report(held_back(host, why.clone()), &mut outcomes);
            }
        }
        todo.retain(|h| !outcomes.contains_key(h));
    }
    // `--no-rollout` pushes without batches, but not a failed desired state: its hosts go through
    // the rollout, which holds them.
    let no_rollout = options.no_rollout && failed.is_none();

    // An interrupted rollout: its in-flight batch is checked first.
    let resumed: Vec<String> = state
        .rollout
        .as_ref()
        .filter(|r| r.outcome.is_none() && r.failed.is_none())
        .map(|r| {
            r.in_flight.iter().filter(|h| todo.contains(h) && r.desired.get(*h) == Some(&desired(h))).cloned().collect()
        })
        .unwrap_or_default();

    // Hosts whose set may change are asked what they run (for the rollout decision). A host this
    // controller never pushed to is not asked: a rollout only replaces sets it pushed, and an
    // install refuses to overwrite any other set (so a first push costs one request, not two).
    // Without a rollout (`--no-rollout`) nobody asks: every host is pushed at once, and the
    // install's reply says what the host runs (a changing push costs one request, not two).
    let mut unknown: Vec<String> = todo
        .iter()
        .filter(|h| {
            let host = state.host(h);
            !no_rollout && host.current != desired(h) && !host.known.is_empty() && !resumed.contains(h)
        })
        .cloned()
        .collect();
    // A held host is asked only if the controller does not know what it runs.
    unknown.extend(held.iter().filter(|h| state.host(h).current.is_empty()).cloned());
    let mut current_files: BTreeMap<String, HostSet> = BTreeMap::new();
    for r in c.each(&unknown, &|_| {}, |host| c.request(host, Body::Status, false)) {
        // A status that failed names no files: what the host runs is not known, as for a host
        // that could not be reached (but it answered: no backoff, and its reply is kept).
        let (why, reply) = match r.outcome {
            Ok(reply) if reply.error.is_none() => {
                state.host(&r.host).saw(&reply);
                current_files.insert(r.host.clone(), reply.current_set());
                continue;
            }
            Ok(reply) => (printable(reply.error.as_deref().unwrap_or_default()).into_owned(), Some(reply)),
            Err(why) => {
                mark_unreachable(state, &r.host, &why);
                (why, None)
            }
        };
        match outcomes.get_mut(&r.host) {
            // Held back still; that it could not be asked is part of why.
            Some(HostOutcome { outcome: Outcome::HeldBack(reason), .. }) => {
                reason.push_str(&format!("; it could not be asked what it runs: {why}"));
            }
            _ => report(
                HostOutcome { host: r.host.clone(), outcome: Outcome::Failed(why), reply, took: r.took },
                &mut outcomes,
            ),
        }
    }
    todo.retain(|h| !outcomes.contains_key(h));
    // A host that runs a set this controller did not push (edited by hand, another controller's)
    // refuses an install without --force. It is held here, on its own: in a rollout batch its
    // refusal would fail the desired state for the whole fleet.
    if !options.force {
        for (host, cur) in current_files.iter().filter(|(h, _)| todo.contains(h)) {
            let known = state.hosts.get(host).map(|s| s.known.as_slice()).unwrap_or_default();
            if cur.hash != c.sets[host].hash && is_foreign_set(&cur.hash, !cur.files.is_empty(), known) {
                let why = format!(
                    "it runs set {}, which this controller did not push (edited by hand, or another controller's); \
                     `kapell fleet apply --force` replaces it",
                    crate::fleet::protocol::short(&cur.hash)
                );
                report(held_back(host, why), &mut outcomes);
            }
        }
        todo.retain(|h| !outcomes.contains_key(h));
    }
    // Nor does a failed desired state reach a host this controller manages through a shared
    // service placed there anew: that is no change of what the host runs, so no rollout would
    // hold it.
    if let Some((desired_state, failure)) = &failed {
        let why = rollout::held_reason(desired_state, failure);
        for (host, cur) in current_files.iter().filter(|(h, _)| todo.contains(h)) {
            if !rollout::shared_additions(cur, &c.sets[host], &shared).is_empty() {
                report(held_back(host, why.clone()), &mut outcomes);
            }
        }
        todo.retain(|h| !outcomes.contains_key(h));
    }

    // Held hosts were asked only to repair what they run: their difference from the desired
    // set is no part of a rollout.
    let changes: BTreeMap<String, Vec<String>> = current_files
        .iter()
        .filter(|(h, _)| !held.contains(h))
        .map(|(h, cur)| (h.clone(), rollout::shared_changes(cur, &c.sets[h], &shared)))
        .filter(|(_, units)| !units.is_empty())
        .collect();
    let (rolling, direct): (Vec<String>, Vec<String>) =
        todo.iter().cloned().partition(|h| !no_rollout && (resumed.contains(h) || changes.contains_key(h)));

    // The direct wave: everything at once. A host whose last reply said it runs its desired set
    // is asked to repair that set by its hash.
    let runs_desired: BTreeSet<&str> =
        direct.iter().filter(|h| state.host(h).current == desired(h)).map(String::as_str).collect();
    for h in &direct {
        let hash = desired(h);
        state.pushing(h, &hash);
    }
    // What is pushed is on record first: a set pushed without it would be taken for another
    // controller's by the next run (refused without --force), and a rollout's hold lost.
    if let Err(e) = state.save() {
        let why = format!("{e:#}; nothing was pushed");
        for h in direct.iter().chain(&rolling) {
            let outcome = Outcome::Failed(why.clone());
            report(HostOutcome { host: h.clone(), outcome, reply: None, took: Duration::ZERO }, &mut outcomes);
        }
        return hosts.iter().filter_map(|h| outcomes.remove(h)).collect();
    }
    let confirm_secs = c.fleet.defaults.confirm_timeout.as_std().as_secs().max(1);
    let known = known_of(state, &direct);
    // Every install carries the health of the instances no responder probes, as the replies of
    // the last contact with each host said (see docs/discovery.md).
    let health = instance_health::Word::of(c, state);
    let has_catalog = with_catalog(c, state, &direct);
    let results = c.each(&direct, &|o: &HostOutcome| progress(o), |host| {
        let install = Install {
            known: known[host].clone(),
            force: options.force,
            retry: false,
            confirm_secs,
            has_catalog: has_catalog.contains(host),
        };
        if runs_desired.contains(host) {
            repair_or_push(c, host, install, health.for_host(host))
        } else {
            push_and_confirm(c, host, install, health.for_host(host))
        }
    });
    for o in results {
        record(state, &o, &desired(&o.host));
        outcomes.insert(o.host.clone(), o);
    }

    // The rollout of the desired state of the shared services.
    if !rolling.is_empty() {
        let desired_state = rollout::desired_state(&c.sets, &shared);
        let stacks = rollout::stacks_of(changes.values().flatten(), &c.sets);
        let rolled = Rolling { hosts: &rolling, changes: &changes, resumed: &resumed };
        rollout(c, state, &desired_state, stacks, &rolled, options, &mut |o| report(o, &mut outcomes));
    }

    // Hosts the rollout holds back or keeps waiting, and hosts held back before, keep what they
    // run, and that stays repaired: a repair request names it by its hash, a no-op unless it
    // drifted.
    let runs: BTreeMap<String, Runs> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o.outcome, Outcome::HeldBack(_) | Outcome::Waiting(_)))
        .filter_map(|(h, _)| match current_files.get(h) {
            Some(set) => Some((h.clone(), Runs::Asked(set.hash.clone()))),
            None if held.contains(h) && !state.host(h).current.is_empty() => {
                Some((h.clone(), Runs::Recorded(state.host(h).current.clone())))
            }
            None => None,
        })
        .collect();
    let keep: Vec<String> = runs.keys().cloned().collect();
    let repairs =
        c.each(&keep, &|_| {}, |host| (host.to_string(), keep_repaired(c, host, &runs[host], health.for_host(host))));
    for (host, r) in repairs {
        let Some(o) = outcomes.get_mut(&host) else { continue };
        match (r.outcome, &mut o.outcome) {
            (Ok(reply), Outcome::HeldBack(why) | Outcome::Waiting(why)) if reply.error.is_none() => {
                if reply.changed {
                    // The peer's lines, each one printable line of the report.
                    let actions: Vec<_> = reply.actions.iter().map(|a| printable(a)).collect();
                    why.push_str(&format!("; the set it runs was repaired: {}", actions.join("; ")));
                }
                state.host(&host).saw(&reply);
                // Kept also for a no-op: it says which of the host's units are up.
                o.reply = Some(reply);
            }
            (Err(e), outcome) => {
                if let Outcome::HeldBack(why) = outcome {
                    // Held back still; that it could not be reached is part of why.
                    why.push_str(&format!("; the set it runs could not be repaired: {e}"));
                }
                mark_unreachable(state, &host, &e);
            }
            // Refused: it may have taken the health word all the same, which its reply names.
            (Ok(reply), _) => state.host(&host).health.clone_from(&reply.health_hash),
        }
    }
    // What the replies said of each host's units is what the next installs tell every host.
    for o in outcomes.values() {
        if let Some(units) = o.reply.as_ref().and_then(instance_health::units_of) {
            state.host(&o.host).units = units;
        }
    }
    let _ = state.save();
    hosts.iter().filter_map(|h| outcomes.remove(h)).collect()
}

/// What a host that keeps its set runs, as far as the controller knows.
enum Runs {
    /// Its reply to a status request in this pass said so.
    Asked(String),
    /// Its last reply said so, in an earlier pass: it may have changed since.
    Recorded(String),
}

/// Repairs the set `host` runs by its hash. A host that runs another set than it last said (it
/// reverted on its own since, or an operator changed it) refuses the repair; it is then asked
/// what it runs, and that set is repaired.
fn keep_repaired(c: &Controller, host: &str, runs: &Runs, health: Option<&[InstanceHealth]>) -> HostResult {
    let repair = |hash: String| c.request(host, Body::Repair { hash, health: health.map(<[_]>::to_vec) }, false);
    match runs {
        Runs::Asked(hash) => repair(hash.clone()),
        Runs::Recorded(hash) => {
            let r = repair(hash.clone());
            if !needs_whole_set(&r) {
                return r;
            }
            match c.request(host, Body::Status, false).outcome {
                Ok(status) if status.error.is_none() => repair(status.current),
                _ => r,
            }
        }
    }
}

fn held_back(host: &str, why: String) -> HostOutcome {
    HostOutcome { host: host.to_string(), outcome: Outcome::HeldBack(why), reply: None, took: Duration::ZERO }
}

/// Asks `host`, which ran its desired set at the last contact, to repair that set by its hash
/// (a few hundred bytes where the set and the fleet's catalog may be megabytes); a host that
/// runs another set after all is sent the set.
fn repair_or_push(c: &Controller, host: &str, install: Install, health: Option<&[InstanceHealth]>) -> HostOutcome {
    let start = Instant::now();
    let hash = c.sets[host].hash.clone();
    let r = c.request(host, Body::Repair { hash, health: health.map(<[_]>::to_vec) }, false);
    // Unreachable, the set would not reach it either; repaired, or failed doing it, it is told.
    if !needs_whole_set(&r) {
        let mut o = outcome_of(r);
        confirm_pending(c, host, &mut o);
        return o;
    }
    let mut o = push_and_confirm(c, host, install, health);
    o.took = start.elapsed();
    o
}

/// Pushes `host`'s set with a confirm window and confirms it once the reply says it is up.
fn push_and_confirm(c: &Controller, host: &str, install: Install, health: Option<&[InstanceHealth]>) -> HostOutcome {
    let start = Instant::now();
    let mut o = outcome_of(send_install(c, host, &install, health));
    confirm_pending(c, host, &mut o);
    o.took = start.elapsed();
    o
}

/// Confirms, over a new connection, the set `host` runs when its reply says that set is its
/// desired one and still waits for confirmation: just installed, or installed by an earlier
/// pass whose confirmation never arrived (the controller was killed between the two, the
/// connection dropped after the peer had installed, the confirmation's connection failed once).
/// Left unconfirmed, the host would revert a set the controller can reach it with, then hold it.
/// A host that cannot be reached over a new connection now is not confirmed: it reverts.
fn confirm_pending(c: &Controller, host: &str, o: &mut HostOutcome) {
    let desired = &c.sets[host].hash;
    let Some(reply) = &o.reply else { return };
    let waiting = reply.pending.as_ref().is_some_and(|(hash, _)| hash == desired) && reply.current == *desired;
    if !waiting || !matches!(o.outcome, Outcome::Converged | Outcome::UpToDate) {
        return;
    }
    match confirm(c, host, reply.current.clone()) {
        // The confirmation's reply says what the host holds now: no set pending.
        Ok(confirmed) => {
            if let Some(reply) = &mut o.reply {
                reply.pending = confirmed.pending;
                reply.confirmed = confirmed.confirmed;
            }
        }
        Err(why) => {
            o.outcome = Outcome::Failed(format!("installed, but the confirmation over a new connection failed: {why}"))
        }
    }
}

/// A host of a failed batch with `auto_revert = false`: what it runs stays, confirmed over a
/// new connection (left pending, its own timer would revert it when the window closes). A set
/// it went back to already, or one it cannot be reached to confirm, is said so.
fn leave_as_is(c: &Controller, host: &str) -> (Option<Reply>, String) {
    match confirm(c, host, c.sets[host].hash.clone()) {
        Ok(reply) => (Some(reply), "left as is (auto_revert = false)".to_string()),
        Err(why) => (None, format!("not reverted (auto_revert = false), but it could not be kept: {why}")),
    }
}

/// Rolls `host` of a failed batch back: from the pushed set (`from`, when its last reply said it
/// runs it: confirmed or not, a rollback that names it takes it back), else to its confirmed
/// set. A host the rollback does not reach, or that refuses it, may still run the failed set: it
/// is held, so that no later pass confirms that set (unless it was confirmed already, its own
/// timer takes it back when the window closes), and it is a failure rather than "rolled back".
fn roll_back(
    c: &Controller,
    state: &mut State,
    host: &str,
    from: Option<String>,
    why: String,
) -> (Option<Reply>, Outcome) {
    let named = from.is_some();
    match c.request(host, Body::Rollback { hash: from }, false).outcome.and_then(refusal) {
        Ok(reply) if !named || reply.rolled_back.is_some() => {
            (Some(reply), Outcome::RolledBack(format!("rolled back: {why}")))
        }
        // The host runs another set since (it went back on its own), which the peer leaves.
        Ok(reply) if reply.current != c.sets[host].hash => {
            (Some(reply), Outcome::RolledBack(format!("went back on its own: {why}")))
        }
        Ok(reply) => (Some(reply), Outcome::Failed(format!("{why}; the rollback changed nothing"))),
        Err(e) => {
            let reason = format!("its rollback failed: {e}");
            state.host(host).held = Some(Held { hash: c.sets[host].hash.clone(), reason });
            let outcome = Outcome::Failed(format!(
                "{why}; the rollback failed ({e}): held back; unless it was confirmed already, the host goes back \
                 to its confirmed set on its own when its confirm window closes"
            ));
            (None, outcome)
        }
    }
}

/// Takes `host`, of an earlier batch of a rollout that failed, from the set it was pushed (and
/// confirmed) back to the set it ran before. A host that cannot be taken back keeps the failed
/// version, confirmed: a failure, said so.
fn roll_back_from(c: &Controller, host: &str, pushed: String, why: String) -> (Option<Reply>, Outcome) {
    match c.request(host, Body::Rollback { hash: Some(pushed) }, false).outcome.and_then(refusal) {
        Ok(reply) if reply.rolled_back.is_some() => (Some(reply), Outcome::RolledBack(format!("rolled back: {why}"))),
        // The host runs another set since (a later push replaced it), which the peer leaves.
        Ok(reply) => {
            let runs = crate::fleet::protocol::short(&reply.current).to_string();
            (Some(reply), Outcome::Failed(format!("{why}; not rolled back: it runs set {runs} now, not the rollout's")))
        }
        Err(e) => {
            (None, Outcome::Failed(format!("{why}; it could not be rolled back ({e}): it keeps the failed version")))
        }
    }
}

/// The hosts a rollout changes.
struct Rolling<'a> {
    /// Every host whose change touches shared services.
    hosts: &'a [String],
    /// The shared units each host's change touches (a resumed host has no entry).
    changes: &'a BTreeMap<String, Vec<String>>,
    /// Those of `hosts` in flight when a previous run stopped.
    resumed: &'a [String],
}

/// The rollout of `desired_state` to `rolling` (the hosts whose change touches shared services;
/// those of `resumed` were in flight when a previous run stopped). Carries out
/// [`rollout::schedule`]: held hosts are reported, the canaries go first, the others follow
/// once promoted; the record in `state` says how far it got, before each step.
fn rollout(
    c: &Controller,
    state: &mut State,
    desired_state: &str,
    stacks: Vec<String>,
    rolling: &Rolling<'_>,
    options: &Options,
    report: &mut dyn FnMut(HostOutcome),
) {
    let policy = &c.fleet.rollout;
    let resumed = rolling.resumed;
    let mut order: Vec<String> = rolling.hosts.to_vec();
    order.sort();
    let schedule =
        rollout::schedule(policy, desired_state, &order, rolling.changes, state.rollout.as_ref(), options.retry_failed);
    let mut record = match state.rollout.take() {
        Some(r) if r.desired_state == desired_state => r,
        _ => Rollout {
            desired_state: desired_state.to_string(),
            canaries: schedule.canaries.clone(),
            started_usec: now_usec(),
            ..Default::default()
        },
    };
    record.stacks = if stacks.is_empty() { record.stacks } else { stacks };
    record.desired.extend(order.iter().map(|h| (h.clone(), c.sets[h].hash.clone())));
    if options.retry_failed && record.failed.is_some() {
        // --force pushes a failed desired state again, as `kapell fleet rollout retry` does.
        record.failed = None;
        record.outcome = None;
        record.retry = true;
    }
    let mut batches: Vec<Batch> = Vec::new();
    if !resumed.is_empty() {
        let canaries = resumed.iter().all(|h| record.canaries.contains(h)) && !record.promoted;
        batches.push(Batch { hosts: resumed.to_vec(), canaries, resumed: true });
    }
    let mut numbered: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut canaries = Vec::new();
    for (host, step) in &schedule.steps {
        if resumed.contains(host) {
            continue;
        }
        match step {
            rollout::Step::Held(why) => report(held_back(host, why.clone())),
            rollout::Step::Canary => canaries.push(host.clone()),
            rollout::Step::AfterPromotion(n) | rollout::Step::Batch(n) => {
                numbered.entry(*n).or_default().push(host.clone())
            }
        }
    }
    if schedule.steps.values().any(|s| matches!(s, rollout::Step::Held(_))) {
        state.rollout = Some(record);
        return;
    }
    if !canaries.is_empty() {
        batches.push(Batch { hosts: canaries, canaries: true, resumed: false });
    }
    batches.extend(numbered.into_values().map(|hosts| Batch { hosts, canaries: false, resumed: false }));
    record.waiting = batches.iter().flat_map(|b| b.hosts.iter().cloned()).collect();
    record.outcome = None;
    // Hosts a push could not reach, in this pass or an earlier one (and not resumed in this
    // one): still in flight, so the rollout is not complete without them. One whose desired set
    // changed since (or that left the fleet) is no longer this push's: this pass plans it anew.
    let mut set_aside: Vec<String> = record
        .in_flight
        .iter()
        .filter(|h| !resumed.contains(h))
        .filter(|h| c.sets.get(*h).is_some_and(|set| record.desired.get(*h) == Some(&set.hash)))
        .cloned()
        .collect();

    for (i, batch) in batches.iter().enumerate() {
        if !batch.canaries && !record.promoted {
            // Every canary must have been healthy before anyone follows them, whatever happened
            // in between (one set aside, a run killed while they were watched); then they are
            // promoted, or wait for `kapell fleet promote`.
            let healthy_now =
                |h: &String| state.hosts.get(h).is_some_and(|s| c.sets.get(h).is_some_and(|set| s.healthy == set.hash));
            let pending: Vec<&str> = record
                .canaries
                .iter()
                .filter(|h| c.sets.contains_key(*h) && !record.done.contains(h) && !healthy_now(h))
                .map(String::as_str)
                .collect();
            let wait = if !pending.is_empty() {
                Some(rollout::canary_wait(&pending, &state.hosts, |h| c.sets.get(h).map(|set| set.hash.as_str())))
            } else {
                let healthy = *record.canaries_healthy_usec.get_or_insert_with(now_usec);
                if policy.auto_promote || record.canaries.is_empty() {
                    record.promoted = true;
                    None
                } else {
                    Some(format!(
                        "waiting for promotion: canaries {} healthy since {}s ago; `kapell fleet promote` sends the rest",
                        record.canaries.join(", "),
                        now_usec().saturating_sub(healthy) / 1_000_000
                    ))
                }
            };
            if let Some(why) = wait {
                for h in batches[i..].iter().flat_map(|b| &b.hosts) {
                    let outcome = Outcome::Waiting(why.clone());
                    report(HostOutcome { host: h.clone(), outcome, reply: None, took: Duration::ZERO });
                }
                break;
            }
        }
        record.waiting.retain(|h| !batch.hosts.contains(h));
        record.in_flight = set_aside.iter().chain(&batch.hosts).cloned().collect();
        for h in &batch.hosts {
            state.pushing(h, &c.sets[h].hash);
        }
        state.rollout = Some(record.clone());
        if let Err(e) = state.save() {
            // Not on record, a batch could be pushed twice or its failure forgotten: it stops.
            for h in batches[i..].iter().flat_map(|b| &b.hosts) {
                let outcome = Outcome::Failed(format!("{e:#}; the rollout stopped before this batch"));
                report(HostOutcome { host: h.clone(), outcome, reply: None, took: Duration::ZERO });
            }
            return;
        }
        match batch::run_batch(c, state, batch, options.force, record.retry) {
            Ok(Pass { outcomes, set_aside: unreached, unconfirmed, held }) => {
                for o in outcomes {
                    report(o);
                }
                // A host whose confirmation failed goes back on its own: not done, so a canary
                // of it holds the others back. Nor is one held on its own (it runs a set this
                // controller did not push): it keeps that set, and a later pass plans it anew.
                let not_done = |h: &String| unreached.contains(h) || unconfirmed.contains(h) || held.contains(h);
                record.done.extend(batch.hosts.iter().filter(|h| !not_done(h)).cloned());
                record.unconfirmed.extend(unconfirmed.iter().cloned());
                if batch.canaries && unreached.is_empty() && unconfirmed.is_empty() && held.is_empty() {
                    record.canaries_healthy_usec = Some(now_usec());
                }
                set_aside.extend(unreached);
                record.in_flight.clone_from(&set_aside);
            }
            Err(stopped) => {
                let Stopped { host, why, started, run_it, not_pushed, refused } = *stopped;
                let reverted = policy.auto_revert;
                // The failure is on record before anything goes back: a controller killed during
                // the rollbacks finds the desired state failed (and holds it everywhere), not a
                // batch in flight that a later pass would resume or `--no-rollout` push.
                let failure = Failure { host: host.clone(), reason: why.clone(), at_usec: now_usec() };
                record.failed = Some(failure.clone());
                record.retry = false;
                record.outcome = Some(format!("stopped and {}", if reverted { "rolled back" } else { "not reverted" }));
                state.rollout = Some(record.clone());
                let _ = state.save();
                let held = rollout::held_reason(desired_state, &failure);
                for h in &batch.hosts {
                    if not_pushed.contains(h) {
                        report(held_back(h, held.clone()));
                        continue;
                    }
                    // One that refused the push runs what it ran: nothing goes back there. (One whose
                    // reply says it runs the pushed set goes back, whatever else it said.)
                    if let Some(own) = refused.get(h).filter(|_| !run_it.contains(h)) {
                        let mut own = own.clone();
                        if *h != host
                            && let Outcome::Failed(why_here) | Outcome::HeldBack(why_here) = &mut own.outcome
                        {
                            why_here.push_str(&format!(" (and {host} failed: {why})"));
                        }
                        super::outcomes::record(state, &own, &c.sets[h].hash);
                        report(own);
                        continue;
                    }
                    let why = if *h == host { why.clone() } else { format!("{host} failed: {why}") };
                    let (reply, outcome) = if reverted {
                        // One that runs the failed set may be confirmed already (before another
                        // host failed, or with the reply lost): the rollback names the set it
                        // leaves, which takes it back whether or not it was confirmed.
                        let from = run_it.contains(h).then(|| c.sets[h].hash.clone());
                        roll_back(c, state, h, from, why)
                    } else {
                        let (reply, what) = leave_as_is(c, h);
                        (reply, Outcome::RolledBack(format!("{what}: {why}")))
                    };
                    if let Some(r) = &reply {
                        state.host(h).saw(r);
                    }
                    report(HostOutcome { host: h.clone(), outcome, reply, took: started.elapsed() });
                }
                // The hosts of earlier batches (the canaries too) run it. With `auto_revert`, the
                // confirmed ones go back to what they ran before it (without, they keep it), and
                // so do those whose confirmation failed: they went back on their own, unless it
                // took effect unseen, and a rollback that names the set takes them back either
                // way. One that left the fleet since is no longer this controller's to roll back.
                let earlier: Vec<(String, bool)> = (record.done.iter().map(|h| (h.clone(), true)))
                    .chain(record.unconfirmed.iter().map(|h| (h.clone(), false)))
                    .filter(|(h, _)| !batch.hosts.contains(h) && c.sets.contains_key(h))
                    .collect();
                for (h, confirmed) in earlier.iter().filter(|_| reverted) {
                    // The set the rollout pushed it, not what it should run now (a later change
                    // of a service of its own may have been pushed to it since).
                    let pushed = record.desired.get(h).unwrap_or(&c.sets[h].hash).clone();
                    let why = format!("{host} failed: {why}");
                    let (reply, outcome) = if *confirmed {
                        roll_back_from(c, h, pushed, why)
                    } else {
                        roll_back(c, state, h, Some(pushed), why)
                    };
                    if let Some(r) = &reply {
                        state.host(h).saw(r);
                    }
                    if matches!(outcome, Outcome::RolledBack(_)) {
                        record.done.retain(|d| d != h);
                        record.unconfirmed.retain(|u| u != h);
                    }
                    report(HostOutcome { host: h.clone(), outcome, reply, took: started.elapsed() });
                }
                for h in batches[i + 1..].iter().flat_map(|b| &b.hosts) {
                    report(held_back(h, held.clone()));
                }
                record.in_flight.clear();
                state.rollout = Some(record);
                let _ = state.save();
                return;
            }
        }
    }
    // Nobody of this pass left to push: complete, also when every host it changed was a canary
    // (nobody waits for a promotion then). Not promoted, though: this pass may have been limited
    // (`--on`, hosts in backoff), and a host that needs this desired state later still waits for
    // `kapell fleet promote` when `auto_promote` is off.
    if record.waiting.is_empty() && record.in_flight.is_empty() {
        record.outcome = Some("completed".to_string());
        record.retry = false;
    }
    state.rollout = Some(record);
    let _ = state.save();
}
