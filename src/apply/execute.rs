//! Carrying out a [`Plan`] over D-Bus: stop what goes away (while its unit files still exist),
//! `daemon-reload` (systemd reruns the generator, which writes the new unit set), check that the
//! generator wrote what was planned, then restart and start. Each unit's outcome is printed as
//! its job finishes.

use super::plan::{Plan, Step, Verb};
use crate::systemd::{Job, JobKind, JobResult, Systemd};
use anyhow::Result;

/// Carries out `plan`; `verify` runs right after the reload and aborts before any start if the
/// generator did not write the planned units. Returns the number of units that failed.
pub async fn execute(
    systemd: &Systemd,
    plan: &Plan,
    verify: impl FnOnce() -> Result<()>,
    out: &mut dyn FnMut(String),
) -> Result<usize> {
    let mut watcher = systemd.watch_jobs().await?;
    let mut failures = 0;

    let stops: Vec<&Step> = plan.steps(&[Verb::Stop]).collect();
    let jobs = enqueue(systemd, &stops, &mut failures, out).await;
    watcher.wait_all(&jobs, |job, result| report(plan, job, &result, &mut failures, out)).await?;

    if plan.reload {
        systemd.reload().await?;
        verify()?;
        out(format!("{:<9} {:<32} (the generator wrote the new units)", "reloaded", "systemd"));
    }
    for step in plan.steps(&[Verb::Remove]) {
        out(line(step, "removed", "already stopped"));
    }

    let starts: Vec<&Step> = plan.steps(&[Verb::Restart, Verb::Start]).collect();
    let jobs = enqueue(systemd, &starts, &mut failures, out).await;
    let mut done = Vec::new();
    watcher
        .wait_all(&jobs, |job, result| {
            if result.is_success() {
                done.push(job.unit.clone());
            }
            report(plan, job, &result, &mut failures, out);
        })
        .await?;
    // A start job of a simple service is done once the process runs; one that dies at once
    // shows up as failed or auto-restarting right after. Say so rather than "started".
    for info in systemd.units(&done).await? {
        if info.name.ends_with(".service") && info.is_failing() {
            failures += 1;
            let why = format!("{} ({}) right after starting", info.active_state, info.sub_state);
            out(failed(&info.name, &why));
        }
    }
    for step in plan.steps(&[Verb::Update]) {
        out(line(step, "updated", &step.why.to_string()));
    }
    Ok(failures)
}

/// Enqueues one job per step; a unit systemd refuses is reported and counted, the others go on.
async fn enqueue(systemd: &Systemd, steps: &[&Step], failures: &mut usize, out: &mut dyn FnMut(String)) -> Vec<Job> {
    let mut jobs = Vec::new();
    for step in steps {
        let job = match step.verb {
            Verb::Stop => systemd.stop(&step.unit).await,
            Verb::Restart => systemd.restart(&step.unit).await,
            _ => systemd.start(&step.unit).await,
        };
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

fn report(plan: &Plan, job: &Job, result: &JobResult, failures: &mut usize, out: &mut dyn FnMut(String)) {
    let verb = match job.kind {
        JobKind::Stop => Verb::Stop,
        JobKind::Restart => Verb::Restart,
        JobKind::Start => Verb::Start,
    };
    let Some(step) = plan.steps.iter().find(|s| s.unit == job.unit && s.verb == verb) else { return };
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
