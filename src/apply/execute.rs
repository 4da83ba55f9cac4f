//! Carrying out a [`Plan`] over D-Bus: stop what goes away (while its unit files still exist),
//! `daemon-reload` (systemd reruns the generator, which writes the new unit set), check that the
//! generator wrote what was planned, stop the instances that lowered `replicas` dropped (their
//! template stays), then restart and start. A unit that does not stop holds everything after it
//! back: reloaded away, its file would be gone while it runs on. Each unit's outcome is printed as
//! its job finishes.

use super::plan::{Plan, Step, Verb};
use crate::systemd::{Job, JobKind, JobResult, Systemd};
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// Jobs kapell has pending at once. systemd watches the bus client of every job it runs with a
/// match rule on the bus, and the bus daemon allows a connection 512 of them
/// (`max_match_rules_per_connection`); past that, it disconnects systemd from the bus and calls
/// in flight fail. Stops and restarts beyond this go in rounds.
const MAX_PENDING_JOBS: usize = 256;

/// Carries out `plan`; `verify` runs right after the reload and aborts before any start if the
/// generator did not write the planned units. Returns the number of units that failed.
///
/// A stack that is being started gets one start job, for its target: the target wants every
/// service of the stack and is ordered after them, so systemd pulls the services in itself and
/// the target's job ends once theirs have. Their outcome is then read from their state. This
/// keeps the number of jobs (and D-Bus calls) per apply at the number of stacks, not services.
pub async fn execute(
    systemd: &Systemd,
    plan: &Plan,
    verify: impl FnOnce() -> Result<()>,
    out: &mut dyn FnMut(String),
) -> Result<usize> {
    let mut watcher = systemd.watch_jobs().await?;
    let steps: HashMap<(&str, JobKind), &Step> =
        plan.steps.iter().filter_map(|s| Some(((s.unit.as_str(), job_kind(s.verb)?), s))).collect();
    let mut failures = 0;

    let stops: Vec<&Step> = plan.steps(&[Verb::Stop]).collect();
    for chunk in stops.chunks(MAX_PENDING_JOBS) {
        let jobs = enqueue(systemd, chunk, &mut failures, out).await;
        watcher.wait_all(systemd, &jobs, &[], |job, result| report(&steps, job, &result, &mut failures, out)).await?;
    }
    // A unit that did not stop keeps its file: the reload would take the file away and leave the
    // unit running with nothing that knows of it any more (the new set has no place for it).
    // So nothing goes further, and the next apply tries the stop again.
    if failures > 0 && plan.reload {
        anyhow::bail!(
            "{failures} unit{} did not stop (above), so systemd was not reloaded: {} unit files stay until \
             they are stopped; nothing was started or restarted",
            if failures == 1 { "" } else { "s" },
            if failures == 1 { "its" } else { "their" },
        );
    }

    if plan.reload {
        systemd.reload().await?;
        verify()?;
        out(format!("{:<9} {:<32} (the generator wrote the new units)", "reloaded", "systemd"));
    }
    for step in plan.steps(&[Verb::Remove]) {
        out(line(step, "removed", "already stopped"));
    }
    let late_stops: Vec<&Step> = plan.steps(&[Verb::StopAfterReload]).collect();
    for chunk in late_stops.chunks(MAX_PENDING_JOBS) {
        let jobs = enqueue(systemd, chunk, &mut failures, out).await;
        watcher.wait_all(systemd, &jobs, &[], |job, result| report(&steps, job, &result, &mut failures, out)).await?;
    }

    let started_stacks: HashSet<&str> =
        plan.steps(&[Verb::Start]).filter(|s| is_target(&s.unit)).map(|s| s.stack.as_str()).collect();
    let (pulled, own): (Vec<&Step>, Vec<&Step>) = plan
        .steps(&[Verb::Restart, Verb::Start])
        .partition(|s| s.verb == Verb::Start && !is_target(&s.unit) && started_stacks.contains(s.stack.as_str()));
    let pulled_units: Vec<String> = pulled.iter().map(|s| s.unit.clone()).collect();
    let mut done = Vec::new();
    let mut targets = Vec::new();
    for chunk in own.chunks(MAX_PENDING_JOBS) {
        let jobs = enqueue(systemd, chunk, &mut failures, out).await;
        watcher
            .wait_all(systemd, &jobs, &pulled_units, |job, result| {
                if result.is_success() && is_target(&job.unit) {
                    // Reported after the services it pulled in.
                    targets.push(job.clone());
                } else {
                    if result.is_success() {
                        done.push(job.unit.clone());
                    }
                    report(&steps, job, &result, &mut failures, out);
                }
            })
            .await?;
    }
    // A start job of a simple service is done once the process runs; one that dies at once
    // shows up as failed or auto-restarting right after. Say so rather than "started".
    for info in systemd.states(&done).await? {
        if info.name.ends_with(".service") && info.is_failing() {
            failures += 1;
            let why = format!("{} ({}) right after starting", info.active_state, info.sub_state);
            out(failed(&info.name, &why));
        }
    }
    // A unit that is up or failing tells its outcome by its states; one that is down but not
    // failed (a oneshot that finished, or one held back by a dependency) by its result.
    let pulled_states = systemd.states_then_units(&pulled_units, |i| !i.is_up() && !i.is_failing()).await?;
    for (step, info) in pulled.iter().zip(pulled_states) {
        match watcher.outcome(JobKind::Start, &info) {
            JobResult::Done => out(line(step, "started", &step.why.to_string())),
            result => {
                failures += 1;
                let why = format!("start {result}: {} ({})", info.active_state, info.sub_state);
                out(failed(&step.unit, &why));
            }
        }
    }
    for job in &targets {
        report(&steps, job, &JobResult::Done, &mut failures, out);
    }
    for step in plan.steps(&[Verb::Update]) {
        out(line(step, "updated", &step.why.to_string()));
    }
    Ok(failures)
}

fn is_target(unit: &str) -> bool {
    unit.ends_with(".target")
}

/// The job a step enqueues; `None` for steps that only report (removals, updates).
fn job_kind(verb: Verb) -> Option<JobKind> {
    match verb {
        Verb::Stop | Verb::StopAfterReload => Some(JobKind::Stop),
        Verb::Restart => Some(JobKind::Restart),
        Verb::Start => Some(JobKind::Start),
        Verb::Remove | Verb::Update => None,
    }
}

/// Enqueues one job per step; a unit systemd refuses is reported and counted, the others go on.
async fn enqueue(systemd: &Systemd, steps: &[&Step], failures: &mut usize, out: &mut dyn FnMut(String)) -> Vec<Job> {
    let steps: Vec<(&Step, JobKind)> = steps.iter().filter_map(|s| Some((*s, job_kind(s.verb)?))).collect();
    let requests: Vec<(JobKind, &str)> = steps.iter().map(|(step, kind)| (*kind, step.unit.as_str())).collect();
    let mut jobs = Vec::new();
    for ((step, _), job) in steps.iter().zip(systemd.enqueue_all(&requests).await) {
        match job {
            Ok(job) => jobs.push(job),
            Err(e) => {
                *failures += 1;
                out(failed(&step.unit, &format!("cannot {}: {e:#}", step.verb.words().0)));
            }
        }
    }
    jobs
}

fn report(
    steps: &HashMap<(&str, JobKind), &Step>,
    job: &Job,
    result: &JobResult,
    failures: &mut usize,
    out: &mut dyn FnMut(String),
) {
    let Some(step) = steps.get(&(job.unit.as_str(), job.kind)) else { return };
    if result.is_success() {
        out(line(step, step.verb.words().1, &step.why.to_string()));
    } else {
        *failures += 1;
        out(failed(&step.unit, &format!("{} job: {result}", step.verb.words().0)));
    }
}

/// `FAILED    shop-web.service   (start job: failed; see …)`.
fn failed(unit: &str, why: &str) -> String {
    format!("{:<9} {unit:<32} ({why}; see `journalctl -u {unit}`)", "FAILED")
}

/// `started   shop-web.service   (new service)`: verb, unit, reason, aligned.
pub fn line(step: &Step, verb: &str, why: &str) -> String {
    format!("{verb:<9} {:<32} ({why})", step.unit)
}
