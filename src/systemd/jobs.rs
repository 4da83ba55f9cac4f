//! Waiting for systemd jobs, the way `systemctl` does it, robust to any number of jobs.
//!
//! Finished jobs are announced by the `JobRemoved` signal. zbus queues a match rule's incoming
//! signals in a bounded channel (64 by default) and stops reading the bus socket while one is
//! full, so a client that enqueues hundreds of jobs before reading any signal stalls: the
//! replies to its own `StartUnit` calls sit behind the unread signals. A task started with the
//! watcher therefore drains the signal stream into an unbounded channel from the first moment.
//!
//! A signal can still be missed (a connection hiccup, a job that ends while the match rule is
//! being set up), so while jobs are pending and no signal comes, the watcher asks systemd which
//! jobs it still has (`ListJobs`, one call for all): a job it no longer lists has finished, and
//! its unit's state says how. Waiting stops when no job has finished for longer than the longest
//! finite start/stop timeout of the pending units: then the units still waited for are named.

use super::proxy::JobRemovedStream;
use super::{Job, JobKind, JobResult, Systemd, UnitInfo, dbus_error};
use crate::clock::now_usec;
use anyhow::{Context, Result, bail};
use futures_util::StreamExt as _;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zbus::OwnedObjectPath;

/// With jobs pending and no signal for this long, ask systemd which jobs are still there.
const QUIET_POLL: Duration = Duration::from_millis(1000);

/// Added to the units' own timeouts before giving up on them (systemd's timers are not exact,
/// and a stop after a failed start takes its own time).
const DEADLINE_SLACK: Duration = Duration::from_secs(10);

/// systemd's "infinity" for a `usec` property.
const INFINITY_USEC: u64 = u64::MAX;

/// Finished jobs, as systemd announces them. Created by [`Systemd::watch_jobs`].
pub struct JobWatcher {
    signals: mpsc::UnboundedReceiver<(OwnedObjectPath, JobResult)>,
    /// Jobs seen finishing that nobody waited for yet.
    finished: HashMap<OwnedObjectPath, JobResult>,
    /// When the watcher was created, in µs of CLOCK_REALTIME like systemd's timestamps: a unit
    /// that left `inactive` after this moment ran for one of our jobs.
    since_usec: u64,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for JobWatcher {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl JobWatcher {
    pub(super) fn new(mut stream: JobRemovedStream) -> Self {
        let (sender, signals) = mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            while let Some(signal) = stream.next().await {
                // A malformed signal cannot be matched to a job; the ListJobs check covers it.
                if let Ok(args) = signal.args() {
                    let finished = (args.job().clone().into(), JobResult::parse(args.result()));
                    if sender.send(finished).is_err() {
                        break;
                    }
                }
            }
        });
        JobWatcher { signals, finished: HashMap::new(), since_usec: now_usec(), drain }
    }

    /// Waits for every job of `jobs`, calling `on_done` for each as it finishes (in the order
    /// they finish, so progress shows while slow units start). `pulled_in` are units whose jobs
    /// systemd adds itself (the services a target wants): their timeouts count when deciding how
    /// long is too long, and their running jobs as progress. Fails, naming the units, when no job
    /// finished and none ran for longer than the pending units' own timeouts allow (a running job
    /// is under systemd's own timeout, which its unit may extend: an image pull).
    pub async fn wait_all(
        &mut self,
        systemd: &Systemd,
        jobs: &[Job],
        pulled_in: &[String],
        mut on_done: impl FnMut(&Job, JobResult),
    ) -> Result<()> {
        let mut pending: HashMap<&OwnedObjectPath, &Job> = jobs.iter().map(|j| (&j.path, j)).collect();
        for job in jobs {
            if let Some(result) = self.finished.remove(&job.path) {
                pending.remove(&job.path);
                log_signalled(job, &result);
                on_done(job, result);
            }
        }
        let mut last_progress = Instant::now();
        let mut patience: Option<Option<Duration>> = None;
        while !pending.is_empty() {
            match tokio::time::timeout(QUIET_POLL, self.signals.recv()).await {
                Ok(Some((path, result))) => {
                    // Any finished job is progress: ours may wait for units systemd pulled in.
                    last_progress = Instant::now();
                    match pending.remove(&path) {
                        Some(job) => {
                            log_signalled(job, &result);
                            on_done(job, result)
                        }
                        None => {
                            self.finished.insert(path, result);
                        }
                    }
                }
                Ok(None) => bail!("the system bus connection closed while waiting for jobs"),
                Err(_quiet) => {
                    let (gone, running) = self.vanished(systemd, &pending, pulled_in).await?;
                    // A job systemd runs is under its unit's own timeout, which the unit may
                    // extend (the supervisor does while an image is pulled): systemd ends it.
                    if !gone.is_empty() || running {
                        last_progress = Instant::now();
                    }
                    for (path, result) in gone {
                        if let Some(job) = pending.remove(&path) {
                            log::debug!(
                                "{} {}: {result}, judged from its state: no JobRemoved signal came",
                                job.kind,
                                job.unit
                            );
                            on_done(job, result);
                        }
                    }
                    if pending.is_empty() {
                        break;
                    }
                    // The pending units' timeouts are read once, the first time waiting is slow.
                    let limit = match patience {
                        Some(limit) => limit,
                        None => *patience.insert(patience_for(systemd, pending.values().copied(), pulled_in).await?),
                    };
                    if let Some(limit) = limit
                        && last_progress.elapsed() > limit
                    {
                        let mut units: Vec<String> =
                            pending.values().map(|j| format!("{} ({})", j.unit, j.kind)).collect();
                        units.sort();
                        bail!(
                            "no job finished for {}s, longer than the units' own timeouts allow; still waiting for {} \
                             (see `systemctl list-jobs` and `journalctl -u UNIT`)",
                            last_progress.elapsed().as_secs(),
                            units.join(", ")
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The pending jobs systemd no longer has, each with the result its unit's state implies;
    /// and whether systemd is running a job of ours or of a unit in `pulled_in` (not only
    /// waiting for one).
    async fn vanished(
        &self,
        systemd: &Systemd,
        pending: &HashMap<&OwnedObjectPath, &Job>,
        pulled_in: &[String],
    ) -> Result<(Vec<(OwnedObjectPath, JobResult)>, bool)> {
        let listed = systemd.manager.list_jobs().await.map_err(dbus_error).context("cannot list systemd's jobs")?;
        let running = listed.iter().any(|(_, unit, _, state, path, _)| {
            state == "running" && (pending.contains_key(path) || pulled_in.iter().any(|p| p == unit))
        });
        let queued: HashSet<OwnedObjectPath> = listed.into_iter().map(|(_, _, _, _, path, _)| path).collect();
        let gone: Vec<&Job> = pending.values().copied().filter(|j| !queued.contains(&j.path)).collect();
        if gone.is_empty() {
            return Ok((Vec::new(), running));
        }
        let names: Vec<String> = gone.iter().map(|j| j.unit.clone()).collect();
        let states = systemd.units(&names).await?;
        let gone =
            gone.iter().zip(states).map(|(job, info)| (job.path.clone(), self.outcome(job.kind, &info))).collect();
        Ok((gone, running))
    }

    /// How a job of `kind` ended, judged from its unit's state once the job is gone (the signal
    /// that said so was missed, or the unit was started by another job, e.g. pulled in by a target).
    pub fn outcome(&self, kind: JobKind, info: &UnitInfo) -> JobResult {
        match kind {
            JobKind::Stop if info.is_down() => JobResult::Done,
            JobKind::Stop => JobResult::Other(format!("still {}", info.active_state)),
            JobKind::Start | JobKind::Restart => self.start_outcome(info),
        }
    }

    fn start_outcome(&self, info: &UnitInfo) -> JobResult {
        if info.is_failing() {
            return JobResult::Failed;
        }
        match info.active_state.as_str() {
            "active" | "reloading" | "refreshing" | "activating" => JobResult::Done,
            // A oneshot that ran to success goes back to inactive; one that never ran was held
            // back by a dependency.
            _ if info.result == "success" && info.inactive_exit_usec >= self.since_usec => JobResult::Done,
            _ if info.result != "success" && !info.result.is_empty() => JobResult::Failed,
            _ => JobResult::Dependency,
        }
    }
}

/// Says at debug level how a job's end was learned, so a test (or an operator with
/// `KAPELL_LOG=debug`) can tell signals arriving from the slower fallback.
fn log_signalled(job: &Job, result: &JobResult) {
    log::debug!("{} {}: {result}, from its JobRemoved signal", job.kind, job.unit);
}

/// How long to wait without progress for `jobs`: the longest finite start (or stop) timeout of
/// their units, plus slack; `None` when a unit may take forever (`TimeoutStartSec=infinity`,
/// the default of a oneshot), as `systemctl start` would wait for it too.
async fn patience_for<'a>(
    systemd: &Systemd,
    jobs: impl Iterator<Item = &'a Job>,
    pulled_in: &[String],
) -> Result<Option<Duration>> {
    let mut kinds: Vec<JobKind> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for job in jobs {
        kinds.push(job.kind);
        names.push(job.unit.clone());
    }
    kinds.extend(pulled_in.iter().map(|_| JobKind::Start));
    names.extend(pulled_in.iter().cloned());
    let mut longest = Duration::ZERO;
    for (kind, info) in kinds.into_iter().zip(systemd.units(&names).await?) {
        let usec = match kind {
            JobKind::Stop => info.timeout_stop_usec,
            JobKind::Start => info.timeout_start_usec,
            JobKind::Restart => info.timeout_stop_usec.saturating_add(info.timeout_start_usec),
        };
        if usec == INFINITY_USEC {
            return Ok(None);
        }
        longest = longest.max(Duration::from_micros(usec));
    }
    Ok(Some(longest + DEADLINE_SLACK))
}
