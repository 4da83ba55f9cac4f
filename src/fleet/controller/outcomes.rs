//! What one host is sent and what becomes of it, shared by a pass ([`super::converge`]) and a
//! rollout's batches ([`super::batch`]): the install of its set (with its confirm window, and
//! without the fleet's catalog when the host has it), the confirmation over a new connection,
//! the host's outcome as the report shows it, and what the controller's state keeps of it
//! (backoff for a host that cannot be reached).

use super::gate;
use super::hosts::{Controller, HostResult};
use super::state::{Held, State, Unreachable};
use crate::clock::now_usec;
use crate::discovery::pushed_health::InstanceHealth;
use crate::fleet::protocol::{Body, HostSet, Reply};
use crate::printable::printable;
use crate::status::Health;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Backoff of an unreachable host: from this, doubling, up to [`BACKOFF_MAX`], with jitter.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
    /// Not pushed: the canaries wait for `kapell fleet promote`.
    Waiting(String),
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

/// The hashes this controller pushed to each of `hosts` (what an install may replace).
pub(super) fn known_of(state: &mut State, hosts: &[String]) -> BTreeMap<String, Vec<String>> {
    hosts.iter().map(|h| (h.clone(), state.host(h).known.clone())).collect()
}

/// How a host's set is installed: the hashes it may replace, `--force`, `rollout retry`, the
/// confirm window, and whether the host has the fleet's catalog already.
pub(super) struct Install {
    pub known: Vec<String>,
    pub force: bool,
    /// Install the set even where it was rolled back (a set this controller did not push is
    /// still refused: only `force` overwrites that).
    pub retry: bool,
    pub confirm_secs: u64,
    /// The host's last reply named the fleet's catalog by its hash: the install leaves it out.
    pub has_catalog: bool,
}

/// The hosts among `hosts` whose last reply said their set has the fleet's catalog (its hash):
/// an install to them leaves the catalog out ([`send_install`]).
pub(super) fn with_catalog(c: &Controller, state: &mut State, hosts: &[String]) -> BTreeSet<String> {
    let Some(catalog) = c.catalog_hash.as_deref() else { return BTreeSet::new() };
    hosts.iter().filter(|h| state.host(h).catalog == catalog).cloned().collect()
}

/// Sends `host` the install of its desired set. The fleet's catalog is left out when the host
/// has it (`install.has_catalog`), and sent after all when the host refuses that install (its
/// catalog changed since its last reply, or an older peer): the catalog grows with the fleet,
/// most pushes leave it as it is, and the catalog is most of a large fleet's install.
pub(super) fn send_install(
    c: &Controller,
    host: &str,
    install: &Install,
    health: Option<&[InstanceHealth]>,
) -> HostResult {
    let body = |same_catalog: bool| {
        let set = &c.sets[host];
        Body::Install {
            set: if same_catalog { HostSet { catalog: None, ..set.clone() } } else { set.clone() },
            known: install.known.clone(),
            force: install.force,
            retry: install.retry,
            confirm_within: Some(install.confirm_secs),
            health: health.map(<[_]>::to_vec),
            same_catalog,
        }
    };
    if install.has_catalog {
        let r = c.request(host, body(true), false);
        if !needs_whole_set(&r) {
            return r;
        }
    }
    c.request(host, body(false), false)
}

/// The host refused the request because it named what the host does not hold (the set to
/// repair, the catalog left out), changing nothing: the whole set is what it needs. Any other
/// error (an activation that failed, a set another controller pushed) is reported, not sent
/// again another way.
pub(super) fn needs_whole_set(r: &HostResult) -> bool {
    r.outcome.as_ref().is_ok_and(|reply| reply.needs_whole_set)
}

pub(super) fn outcome_of(r: HostResult) -> HostOutcome {
    let (outcome, reply) = match r.outcome {
        Err(why) => (Outcome::Failed(why), None),
        Ok(reply) => {
            let outcome = match (&reply.error, reply.failures) {
                _ if reply.held.is_some() => {
                    Outcome::HeldBack(printable(reply.held.as_deref().unwrap_or_default()).into_owned())
                }
                // A peer's words: one printable line (the report may add lines of its own).
                (Some(e), _) => Outcome::Failed(printable(e).into_owned()),
                (None, n) if n > 0 => Outcome::Failed(failed_units(&reply)),
                (None, _) if reply.changed => Outcome::Converged,
                _ => Outcome::UpToDate,
            };
            (outcome, Some(reply))
        }
    };
    HostOutcome { host: r.host, outcome, reply, took: r.took }
}

/// Whether an install's outcome is a refusal because the host runs a set this controller did
/// not push (edited by hand, another controller's), as its reply says ([`Reply::foreign_set`]).
/// Such a host is held on its own, as the plan's check would have held it had the set been there
/// then: the push changed nothing, so it says nothing of the desired state. (A peer older than
/// the flag never says so: its refusal fails the batch, as any other does.)
pub(super) fn foreign_refusal(o: &HostOutcome) -> bool {
    matches!(o.outcome, Outcome::Failed(_)) && o.reply.as_ref().is_some_and(|r| r.error.is_some() && r.foreign_set)
}

/// Confirms set `hash` on `host` over a new connection (proof that the host can still be
/// reached); the peer's refusal is a failure too.
pub(super) fn confirm(c: &Controller, host: &str, hash: String) -> Result<Reply, String> {
    c.request(host, Body::Confirm { hash }, true).outcome.and_then(refusal)
}

/// A reply that carries an error is a failure too (the peer's words: one printable line).
pub(super) fn refusal(reply: Reply) -> Result<Reply, String> {
    match &reply.error {
        Some(e) => Err(printable(e).into_owned()),
        None => Ok(reply),
    }
}

/// `N unit(s) failed` plus what the health probes of units not yet healthy answered (a native
/// service whose check never passed fails its start) and each failing unit's last journal lines.
fn failed_units(reply: &Reply) -> String {
    // Every piece comes from the peer: each is one printable line, so it cannot add lines of
    // its own to the report.
    let mut text = format!("{} unit(s) failed", reply.failures);
    for line in reply.actions.iter().filter(|a| a.starts_with("FAILED")) {
        text.push_str(&format!("\n    {}", printable(line)));
    }
    for u in reply.units.iter().filter(|u| u.health() != Some(Health::Healthy)) {
        if let Some(note) = gate::probe_note(u) {
            text.push_str(&format!("\n    {}: {}", printable(&u.unit), printable(&note)));
        }
    }
    for (unit, lines) in &reply.journal {
        text.push_str(&format!("\n    journal of {}:", printable(unit)));
        for line in lines {
            text.push_str(&format!("\n      {}", printable(line)));
        }
    }
    text
}

/// Updates the host's state from what a pass learned.
pub(super) fn record(state: &mut State, o: &HostOutcome, desired: &str) {
    if let (Outcome::Failed(why), None) = (&o.outcome, &o.reply) {
        mark_unreachable(state, &o.host, why);
        return;
    }
    let host = state.host(&o.host);
    match (&o.outcome, &o.reply) {
        // Held on its own by its refusal: it runs a set this controller did not push, which its
        // error reply names. That is on record, not held: the next pass asks it again, and the
        // pre-push check holds it as long as that set is there (see `foreign_refusal`).
        (Outcome::HeldBack(_), Some(reply)) if reply.foreign_set => {
            host.unreachable = None;
            host.saw(reply);
        }
        (Outcome::HeldBack(why), reply) => {
            // A held host's reply still says what it runs: the next pass repairs that set. It
            // answered, so it is not in backoff any more.
            if reply.is_some() {
                host.unreachable = None;
            }
            if let Some(reply) = reply.as_ref() {
                host.saw(reply);
            }
            host.held = Some(Held { hash: desired.to_string(), reason: why.clone() });
        }
        (_, Some(reply)) => {
            host.unreachable = None;
            host.saw(reply);
            if reply.current == desired && reply.pending.is_none() && !o.is_failure() {
                host.healthy = desired.to_string();
                // It runs the set it was held back from (pushed with --force): held no more, or
                // every later pass would say so, and the canaries' wait with it.
                if host.held.as_ref().is_some_and(|h| h.hash == desired) {
                    host.held = None;
                }
            }
            // The peer refused the set it had rolled back on its own.
            if let Some(why) = &reply.rolled_back
                && reply.current != desired
            {
                host.held = Some(Held {
                    hash: desired.to_string(),
                    reason: format!("rolled back by the peer: {}", printable(why)),
                });
            }
        }
        _ => {}
    }
}

/// Counts a failed contact and schedules the next try: exponential backoff with jitter.
pub(super) fn mark_unreachable(state: &mut State, host: &str, why: &str) {
    let now = now_usec();
    // A request that got no reply may have written the health word before it failed: whatever
    // the host held, the next request tells it again.
    state.host(host).health.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that answers is out of backoff, also when it is held back (a failed desired state,
    /// a rollout waiting for promotion): its retry time would otherwise stay in the past, and
    /// the daemon would wake for it at once, pass after pass.
    #[test]
    fn a_held_host_that_answers_is_reachable_again() {
        let mut state = State::default();
        mark_unreachable(&mut state, "web1", "connection refused");
        let reply = Reply { current: "a".repeat(64), ..Reply::default() };
        let o = HostOutcome {
            host: "web1".into(),
            outcome: Outcome::HeldBack("waiting for promotion".into()),
            reply: Some(reply),
            took: Duration::ZERO,
        };
        record(&mut state, &o, &"b".repeat(64));
        assert!(state.hosts["web1"].unreachable.is_none());
        assert_eq!(state.hosts["web1"].current, "a".repeat(64));
    }

    /// A held host that was pushed its set with --force, and confirmed it, is held no more; one
    /// that still runs another set stays held.
    #[test]
    fn a_host_pushed_past_its_hold_is_held_no_more() {
        let (desired, other) = ("d".repeat(64), "o".repeat(64));
        let outcome = |current: &str, pending: Option<(String, u64)>| HostOutcome {
            host: "web1".into(),
            outcome: Outcome::Converged,
            reply: Some(Reply { current: current.to_string(), pending, ..Reply::default() }),
            took: Duration::ZERO,
        };
        let mut state = State::default();
        state.host("web1").held = Some(Held { hash: desired.clone(), reason: "rolled back by the peer".into() });
        record(&mut state, &outcome(&other, None), &desired);
        assert!(state.hosts["web1"].held.is_some(), "repaired in its own set: still held");
        record(&mut state, &outcome(&desired, Some((desired.clone(), 60))), &desired);
        assert!(state.hosts["web1"].held.is_some(), "not confirmed yet: still held");
        record(&mut state, &outcome(&desired, None), &desired);
        assert_eq!(state.hosts["web1"].held, None);
        assert_eq!(state.hosts["web1"].healthy, desired);
        // A hold of another desired set stays, whatever the host runs now.
        state.host("web1").held = Some(Held { hash: other.clone(), reason: "rolled back by the peer".into() });
        record(&mut state, &outcome(&desired, None), &desired);
        assert!(state.hosts["web1"].held.is_some(), "a hold of another set was cleared");
    }

    /// A peer's error, actions and journal lines are its own words: each becomes one printable
    /// line of the report, so none can send escapes to the terminal or add lines of its own.
    #[test]
    fn a_peers_words_are_one_printable_line_each() {
        let reply = Reply {
            failures: 1,
            actions: vec!["FAILED a.service\n  forged: all good\u{1b}[2J".into()],
            journal: BTreeMap::from([("a.service".into(), vec!["x\u{1b}]0;owned\u{7}".into()])]),
            ..Reply::default()
        };
        let text = failed_units(&reply);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
        assert_eq!(text.lines().count(), 4, "one line per piece: {text}");
        let error = Reply { error: Some("refused\n  forged line".into()), ..Reply::default() };
        let outcome =
            outcome_of(HostResult { host: "h".into(), outcome: Ok(error), took: Duration::ZERO, never_sent: false });
        assert_eq!(outcome.outcome, Outcome::Failed("refused\\n  forged line".into()));
    }
}
