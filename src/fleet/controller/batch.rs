//! One batch of a rollout: its hosts pushed side by side, each watched from its own push until
//! healthy for `min_healthy_time` (within `healthy_deadline` of that push) and confirmed then,
//! over a new connection (see docs/fleet-protocol.md).
//!
//! A host is confirmed when it is ready, not when the batch's slowest host is: its confirm
//! window opened at its own install, so a quick host waiting for another's image pull would
//! otherwise go back on its own and fail the batch. A confirmation that fails is tried again at
//! each poll until the host's deadline. The batch is done once every host it reached is
//! confirmed and healthy for `min_healthy_time` at the same time. A unit that fails, or a host
//! not healthy by its deadline, fails it, naming the host; no host is pushed after that, and the
//! hosts that run the pushed set are named, confirmed or not, since going back from a set that
//! may be confirmed takes a rollback that names it ([`super::converge`] rolls the batch back).

use super::gate::{self, Verdict};
use super::hosts::Controller;
use super::instance_health;
use super::outcomes::{
    HostOutcome, Install, Outcome, confirm, foreign_refusal, known_of, outcome_of, record, send_install, with_catalog,
};
use super::state::State;
use crate::fleet::protocol::{Body, Reply};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a batch's health is polled during a rollout.
const HEALTH_POLL: Duration = Duration::from_millis(1000);

/// One batch of a rollout.
pub(super) struct Batch {
    pub hosts: Vec<String>,
    pub canaries: bool,
    /// In flight when a previous run stopped: watched, and pushed only where it did not arrive.
    pub resumed: bool,
}

/// What a batch that did not fail gives: each host's outcome, the hosts it could not reach (set
/// aside for a later pass), those whose confirmation failed (they go back on their own), and
/// those held on their own because they run a set this controller did not push (they keep it).
pub(super) struct Pass {
    pub outcomes: Vec<HostOutcome>,
    pub set_aside: Vec<String>,
    pub unconfirmed: Vec<String>,
    pub held: Vec<String>,
}

/// Why a batch failed: the host, the reason, when the batch started, which hosts run the set it
/// pushed, and which it never pushed.
pub(super) struct Stopped {
    pub host: String,
    pub why: String,
    pub started: Instant,
    /// The hosts whose last reply said they run the pushed set, confirmed or not (a
    /// confirmation may have taken effect with its reply lost, or in a run that was killed): a
    /// rollback names the set they leave.
    pub run_it: BTreeSet<String>,
    /// The hosts the batch stopped before it pushed them: they keep what they run.
    pub not_pushed: BTreeSet<String>,
    /// The hosts that answered their push with a refusal (the peer held the set, or its checks
    /// refused it), with their outcome (held back on its own for one that runs a set this
    /// controller did not push): the push changed nothing there, and what they run is none of
    /// this rollout's business, so nothing sends them a rollback.
    pub refused: BTreeMap<String, HostOutcome>,
}

/// A push's result as it comes in: the host's outcome, whether the request never reached it,
/// and whether it was not even tried (the batch had stopped).
struct Arrival {
    outcome: HostOutcome,
    never_sent: bool,
    skipped: bool,
    /// When the push returned (the host's deadline counts from here).
    at: Instant,
}

impl Arrival {
    fn runs(&self, hash: &str) -> bool {
        self.outcome.reply.as_ref().is_some_and(|r| r.current == hash)
    }

    /// Whether the host refused the push: it failed, and its reply says it runs another set
    /// than the pushed one (refused or held: the set never became current there, or the
    /// activation that failed left it current). A peer older than replies that name what it
    /// runs on an error names nothing, and is not taken to have refused.
    fn refused(&self, hash: &str) -> bool {
        let failed = matches!(self.outcome.outcome, Outcome::Failed(_) | Outcome::HeldBack(_));
        failed && self.outcome.reply.as_ref().is_some_and(|r| !r.current.is_empty() && r.current != hash)
    }

    /// The outcome of a host that refused its push: held back on its own if it runs a set this
    /// controller did not push (see [`foreign_refusal`]: no failure of the batch), else failed
    /// or held as it answered.
    fn refusal(&self) -> HostOutcome {
        let mut o = self.outcome.clone();
        if foreign_refusal(&o)
            && let Outcome::Failed(why) = o.outcome
        {
            o.outcome = Outcome::HeldBack(why);
        }
        o
    }
}

/// The pushes' results, handed from the pushing threads to the watcher as each one returns.
#[derive(Default)]
struct Arrivals {
    queue: Mutex<Vec<Arrival>>,
    came: Condvar,
}

impl Arrivals {
    fn push(&self, arrival: Arrival) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(arrival);
        self.came.notify_one();
    }

    /// What came in, waiting until something does or `until`.
    fn take(&self, until: Instant) -> Vec<Arrival> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while queue.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.came.wait_timeout(queue, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        std::mem::take(&mut *queue)
    }
}

/// A host of the batch its push reached, as the watcher sees it.
struct Watched {
    /// What the push changed, for [`gate::judge`].
    pushed: gate::Pushed,
    /// The push's own reply: what it added, changed and removed.
    install: Option<Reply>,
    /// When its push returned: its deadline counts from here.
    arrived: Instant,
    healthy_since: Option<Instant>,
    /// Why it is not healthy, as the last status said.
    problem: Option<String>,
    /// The status seen last.
    last: Option<Reply>,
    /// How long after the batch's start its confirmation came.
    confirmed: Option<Duration>,
    /// Why its last confirmation failed (tried again at each poll until its deadline).
    unconfirmed: Option<String>,
}

impl Watched {
    fn new(c: &Controller, o: HostOutcome, arrived: Instant) -> Self {
        let reply = o.reply.as_ref();
        // A reply that names no file at all is a status (a resumed host that had its set): what
        // the push changed is not known. An install's reply names what it changed, nothing but
        // removals included.
        let changed = reply
            .filter(|r| !(r.added.is_empty() && r.updated.is_empty() && r.removed.is_empty()))
            .map(|r| r.added.iter().chain(&r.updated).filter(|p| !p.contains('/')).cloned().collect());
        let pushed = gate::Pushed {
            hash: c.sets[&o.host].hash.clone(),
            restarts: reply.map(restarts).unwrap_or_default(),
            changed,
        };
        Watched {
            pushed,
            install: o.reply,
            arrived,
            healthy_since: None,
            problem: None,
            last: None,
            confirmed: None,
            unconfirmed: None,
        }
    }

    fn healthy_for(&self, min_healthy: Duration) -> bool {
        self.healthy_since.is_some_and(|t| t.elapsed() >= min_healthy)
    }

    /// Whether its last reply says it runs the pushed set.
    fn runs_it(&self) -> bool {
        self.last.as_ref().or(self.install.as_ref()).is_some_and(|r| r.current == self.pushed.hash)
    }

    /// The outcome of a host of a batch that passed: the status seen last, with what the push
    /// itself changed, and how long it took to be confirmed.
    fn outcome(self, host: String, took: Duration) -> HostOutcome {
        let took = self.confirmed.unwrap_or(took);
        let outcome = match &self.unconfirmed {
            Some(why) => Outcome::Failed(format!("healthy, but the confirmation failed: {why}")),
            None => Outcome::Converged,
        };
        let mut reply = self.last;
        if let (Some(reply), Some(install)) = (&mut reply, &self.install) {
            (reply.added, reply.updated, reply.removed) =
                (install.added.clone(), install.updated.clone(), install.removed.clone());
            reply.actions.clone_from(&install.actions);
        }
        HostOutcome { host, outcome, reply, took }
    }
}

/// Pushes `batch` (a resumed batch is already there), watches and confirms each host from its
/// own push: each host's outcome (a confirmation that failed is that host's failure, not the
/// rollout's; a host the push could not reach is set aside). `force`: overwrite whatever a host
/// runs (`--force`); `retry`: install even a set a host rolled back before (`rollout retry`).
pub(super) fn run_batch(
    c: &Controller,
    state: &mut State,
    batch: &Batch,
    force: bool,
    retry: bool,
) -> Result<Pass, Box<Stopped>> {
    let policy = &c.fleet.rollout;
    // The controller watches a host for up to `healthy_deadline` after its push returns, then
    // confirms it within `confirm_timeout`. A peer whose activation was quick keeps the window
    // it opened before the activation (at least nine tenths of it are left once its reply is
    // sent: see the peer's `lifecycle::install`), so the window asked is a ninth longer.
    let window = (policy.healthy_deadline.as_std() + c.fleet.defaults.confirm_timeout.as_std()) * 10 / 9;
    let start = Instant::now();
    let hosts = &batch.hosts;
    let known = known_of(state, hosts);
    let has_catalog = with_catalog(c, state, hosts);
    let health = instance_health::Word::of(c, state);
    let stopped = AtomicBool::new(false);
    // A resumed host that got the set is only asked; one that never did (the run stopped before
    // its install finished) is pushed.
    let push = |h: &str| -> Arrival {
        let host_outcome = |outcome| HostOutcome { host: h.to_string(), outcome, reply: None, took: Duration::ZERO };
        if stopped.load(Ordering::SeqCst) {
            let outcome = host_outcome(Outcome::Failed("not pushed: the batch stopped".into()));
            return Arrival { outcome, never_sent: true, skipped: true, at: Instant::now() };
        }
        if batch.resumed {
            let asked = c.request(h, Body::Status, false);
            let never_sent = asked.never_sent;
            let asked = outcome_of(asked);
            // Unreachable, or it has the set: no push. A status that failed is no answer.
            if asked.reply.as_ref().is_none_or(|r| r.error.is_none() && r.current == c.sets[h].hash) {
                return Arrival { outcome: asked, never_sent, skipped: false, at: Instant::now() };
            }
        }
        let install = Install {
            known: known[h].clone(),
            force,
            // `force` covers it, and a peer older than `retry` refuses the field.
            retry: retry && !force,
            confirm_secs: window.as_millis().div_ceil(1000).max(1) as u64,
            has_catalog: has_catalog.contains(h),
        };
        let sent = send_install(c, h, &install, health.for_host(h));
        let never_sent = sent.never_sent;
        Arrival { outcome: outcome_of(sent), never_sent, skipped: false, at: Instant::now() }
    };
    let arrivals = Arrivals::default();
    let watched = std::thread::scope(|scope| {
        scope.spawn(|| {
            c.each(hosts, &|_| {}, |h| {
                // Every host arrives, or the watcher would wait for it forever.
                let arrival = std::panic::catch_unwind(AssertUnwindSafe(|| push(h))).unwrap_or_else(|_| Arrival {
                    outcome: HostOutcome {
                        host: h.to_string(),
                        outcome: Outcome::Failed("the push stopped on an internal error".into()),
                        reply: None,
                        took: Duration::ZERO,
                    },
                    never_sent: false,
                    skipped: false,
                    at: Instant::now(),
                });
                arrivals.push(arrival);
            })
        });
        let watched = watch(c, hosts.len(), &arrivals, start);
        // No host is pushed once the batch failed; the scope waits for the pushes under way.
        stopped.store(watched.is_err(), Ordering::SeqCst);
        watched
    });
    let watched = match watched {
        Ok(seen) => seen,
        Err(mut stop) => {
            // The pushes that were under way when the batch stopped.
            for a in arrivals.take(Instant::now()) {
                if a.skipped {
                    stop.not_pushed.insert(a.outcome.host.clone());
                } else if a.runs(&c.sets[&a.outcome.host].hash) {
                    stop.run_it.insert(a.outcome.host.clone());
                } else if a.refused(&c.sets[&a.outcome.host].hash) {
                    stop.refused.insert(a.outcome.host.clone(), a.refusal());
                }
            }
            return Err(stop);
        }
    };

    let mut outcomes = Vec::new();
    for o in watched.unreached {
        let o = HostOutcome {
            outcome: Outcome::Failed(format!(
                "{}; set aside ({}): a later pass resumes it once it answers",
                match &o.outcome {
                    Outcome::Failed(why) => why.as_str(),
                    _ => "not reached",
                },
                if batch.canaries { "the others wait for it" } else { "the rollout goes on without it" }
            )),
            ..o
        };
        outcomes.push(o);
    }
    let set_aside = outcomes.iter().map(|o| o.host.clone()).collect();
    let unconfirmed = watched.hosts.iter().filter(|(_, w)| w.unconfirmed.is_some()).map(|(h, _)| h.clone()).collect();
    // A batch that passed had no refusal but those of hosts held on their own.
    let held = watched.refused.keys().cloned().collect();
    outcomes.extend(watched.refused.into_values());
    outcomes.extend(watched.hosts.into_iter().map(|(h, w)| w.outcome(h, start.elapsed())));
    for o in &outcomes {
        record(state, o, &c.sets[&o.host].hash);
    }
    Ok(Pass { outcomes, set_aside, unconfirmed, held })
}

/// What the watcher of a batch that passed saw.
struct Seen {
    /// Healthy, and confirmed unless `unconfirmed` says why not.
    hosts: BTreeMap<String, Watched>,
    /// Never reached by their push.
    unreached: Vec<HostOutcome>,
    /// Refused their push (see [`Stopped::refused`]). Until the batch fails, only hosts held on
    /// their own: any other refusal fails it.
    refused: BTreeMap<String, HostOutcome>,
}

/// Watches the `expected` hosts of a batch as their pushes come in (see the module's comment).
fn watch(c: &Controller, expected: usize, arrivals: &Arrivals, started: Instant) -> Result<Seen, Box<Stopped>> {
    let policy = &c.fleet.rollout;
    let (min_healthy, deadline) = (policy.min_healthy_time.as_std(), policy.healthy_deadline.as_std());
    let mut seen = Seen { hosts: BTreeMap::new(), unreached: Vec::new(), refused: BTreeMap::new() };
    let mut came = 0;
    let mut last_arrival = Instant::now();
    let mut next_poll = Instant::now();
    // `failed`: the host whose push failed, if it runs the set all the same (its activation
    // failed, say).
    // (Hosts not pushed are known only once the pushes under way have returned: see run_batch.)
    let stop = |seen: &Seen, failed: Option<String>, host: String, why: String| {
        Box::new(Stopped {
            host,
            why,
            started,
            run_it: seen.hosts.iter().filter(|(_, w)| w.runs_it()).map(|(h, _)| h.clone()).chain(failed).collect(),
            not_pushed: BTreeSet::new(),
            refused: seen.refused.clone(),
        })
    };
    loop {
        // Polled every HEALTH_POLL, and at once when a push returns (its host's first status).
        let new = if came < expected {
            arrivals.take(next_poll)
        } else {
            std::thread::sleep(next_poll.saturating_duration_since(Instant::now()));
            Vec::new()
        };
        let fresh = !new.is_empty();
        came += new.len();
        // Every arrival is taken in before a failed one stops the batch: the others' replies
        // say whether they run the pushed set.
        let mut failure: Option<(String, String, bool)> = None;
        for arrival in new {
            if arrival.refused(&c.sets[&arrival.outcome.host].hash) {
                seen.refused.insert(arrival.outcome.host.clone(), arrival.refusal());
                // Held on its own: the push changed nothing there, and says nothing of the
                // desired state; the batch goes on without it.
                if foreign_refusal(&arrival.outcome) {
                    continue;
                }
            }
            // (None is skipped: the watcher has not stopped.)
            let Arrival { outcome, never_sent, at, .. } = arrival;
            // A host ssh could not even connect to never got the set: that says nothing of the
            // desired state, so it is set aside, retried with backoff, and resumed by a later
            // pass. A push that connected and then got no reply is another matter: the set may
            // be what cut the host off, and that fails the batch like any other failure.
            if never_sent {
                seen.unreached.push(outcome);
                continue;
            }
            if let Outcome::Failed(why) | Outcome::HeldBack(why) = &outcome.outcome {
                let runs = outcome.reply.as_ref().is_some_and(|r| r.current == c.sets[&outcome.host].hash);
                failure.get_or_insert((outcome.host.clone(), why.clone(), runs));
                continue;
            }
            last_arrival = last_arrival.max(at);
            seen.hosts.insert(outcome.host.clone(), Watched::new(c, outcome, at));
        }
        if let Some((host, why, runs)) = failure {
            let failed = runs.then(|| host.clone());
            return Err(stop(&seen, failed, host, why));
        }
        if !fresh && Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + HEALTH_POLL;

        // A host whose confirmation failed until its deadline is its own failure, and no longer
        // watched: it goes back on its own, which is no failure of the batch.
        let given_up = |w: &Watched| w.unconfirmed.is_some() && w.arrived.elapsed() > deadline;
        let polled: Vec<String> = seen.hosts.iter().filter(|(_, w)| !given_up(w)).map(|(h, _)| h.clone()).collect();
        for r in c.each(&polled, &|_| {}, |h| c.request(h, Body::Status, false)) {
            let w = seen.hosts.get_mut(&r.host).expect("a polled host is watched");
            let verdict = match &r.outcome {
                Err(why) => Verdict::NotYet(format!("unreachable: {why}")),
                Ok(reply) => gate::judge(reply, &w.pushed),
            };
            if let Ok(reply) = r.outcome {
                w.last = Some(reply);
            }
            match verdict {
                Verdict::Healthy => {
                    w.healthy_since.get_or_insert_with(Instant::now);
                    w.problem = None;
                }
                Verdict::NotYet(p) => {
                    w.healthy_since = None;
                    w.problem = Some(p);
                }
                Verdict::Failed(why) => return Err(stop(&seen, None, r.host, why)),
            }
        }

        // Each host is confirmed once healthy for long enough, side by side: a host that takes
        // its connect timeout to answer does not eat into the others' confirm windows. A
        // confirmation that fails is tried again at each poll (the peer takes the same one
        // twice) until the host's deadline.
        let ready: Vec<String> = seen
            .hosts
            .iter()
            .filter(|(_, w)| w.confirmed.is_none() && w.healthy_for(min_healthy) && !given_up(w))
            .map(|(h, _)| h.clone())
            .collect();
        for (h, confirmed) in c.each(&ready, &|_| {}, |h| (h.to_string(), confirm(c, h, c.sets[h].hash.clone()))) {
            let w = seen.hosts.get_mut(&h).expect("a confirmed host is watched");
            match confirmed {
                Ok(_) => (w.confirmed, w.unconfirmed) = (Some(started.elapsed()), None),
                Err(why) => w.unconfirmed = Some(why),
            }
        }

        // Done: every host confirmed and healthy for long enough, all at once (or given up).
        let settled = |w: &Watched| given_up(w) || (w.confirmed.is_some() && w.healthy_for(min_healthy));
        if came == expected && seen.hosts.values().all(settled) {
            return Ok(seen);
        }
        // Not healthy for long enough (no problem now: healthy again only lately) past its
        // deadline: from its own push, or, once confirmed, from the batch's last push (it only
        // waits for the others then, and a blip in between is given the same time to pass).
        let late = seen.hosts.iter().filter(|(_, w)| !given_up(w)).find(|(_, w)| {
            let from = if w.confirmed.is_some() { last_arrival } else { w.arrived };
            from.elapsed() > deadline && !w.healthy_for(min_healthy)
        });
        if let Some((host, w)) = late {
            let why = w
                .problem
                .clone()
                .unwrap_or_else(|| format!("not healthy for {min_healthy:?} without a break before the deadline"));
            return Err(stop(&seen, None, host.clone(), why));
        }
    }
}

/// Each service unit's restart counter.
fn restarts(reply: &Reply) -> BTreeMap<String, u32> {
    reply.units.iter().filter(|u| !u.service.is_empty()).map(|u| (u.unit.clone(), u.restarts)).collect()
}
