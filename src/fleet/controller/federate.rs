//! `kapell federate`: the federation daemon, run by `kapell-federation.service` (see
//! docs/fleet-protocol.md).
//!
//! It runs the pass of [`super::converge`] over every host: at start, whenever a file of the
//! configuration directory changes (inotify, debounced), on `systemctl reload` (SIGHUP, which
//! also re-reads `fleet.toml`), and every `reconcile_interval`. A pass over hosts that are in
//! step costs one request per host over the shared connection; drift found there is repaired
//! by the peer and logged with what was wrong. An unreachable host is retried with exponential
//! backoff and jitter and never delays the others. When the daemon is away, peers keep running
//! what they have: nothing on a peer depends on the controller being there.
//!
//! systemd sees `READY=1` after the first pass, a `STATUS=` line after each (saying when a
//! rollout failed or waits for promotion), and watchdog pings while it waits and while a pass
//! runs (`WatchdogSec=`).
//! Each pass is logged as what started it (the first, a periodic one, one after a change of
//! the files, naming them, or after a reload), and every state change with a stable
//! `MESSAGE_ID`.

use super::converge::{self, HostOutcome, Outcome};
use super::hosts::Controller;
use super::rollout;
use super::state::{ControllerLock, State};
use crate::clock::now_usec;
use crate::logging::id;
use anyhow::{Context, Result};
use sd_notify::NotifyState;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// Changes within this long of each other are one change (an editor's save is several events).
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Why the daemon wakes up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// These files of the configuration directory changed.
    Changed(BTreeSet<String>),
    /// SIGHUP (`systemctl reload`).
    Reload,
    /// `reconcile_interval` (or a host's retry) is due.
    Interval,
    /// SIGTERM or SIGINT.
    Stop,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Overwrite sets this controller did not push (see `kapell fleet apply --force`).
    pub force: bool,
}

/// Runs the daemon until SIGTERM. Errors of a pass (an invalid stack, a host down) are logged and
/// the daemon goes on; only a failure to start (no runtime, no state directory) returns.
pub fn run(config_dir: &Path, options: &Options) -> Result<()> {
    let (tx, rx) = channel();
    watch_signals(tx.clone())?;
    watch_dir(config_dir, tx)?;
    let mut controller = load(config_dir);
    let mut ready = false;
    let mut why = "first";
    loop {
        let interval =
            controller.as_ref().map_or(Duration::from_secs(30), |c| c.fleet.defaults.reconcile_interval.as_std());
        if controller.is_some() {
            let started = Instant::now();
            match keeping_systemd_patient(!ready, || pass(config_dir, &mut controller, options)) {
                Ok(summary) => {
                    notify(&[NotifyState::Status(&summary)]);
                    let took = started.elapsed().as_secs_f64();
                    log::info!(message_id = id::FLEET_PASS; "{why} pass ({took:.1}s): {summary}");
                }
                Err(e) => log::error!(message_id = id::FLEET_PASS_FAILED; "fleet pass failed: {e:#}"),
            }
        }
        if !ready {
            ready = true;
            notify(&[NotifyState::Ready]);
        }
        // Wait for the next pass: the interval, the next retry of a host in backoff, or an event.
        let next = next_wake(interval, controller.as_ref());
        match wait(&rx, next) {
            Event::Stop => {
                notify(&[NotifyState::Stopping]);
                log::info!("stopping");
                return Ok(());
            }
            Event::Reload => {
                log::info!(message_id = id::FLEET_RELOADED; "reload (SIGHUP): re-reading fleet.toml and the stacks");
                controller = load(config_dir).or(controller);
                why = "reload";
            }
            Event::Changed(files) => {
                let files: Vec<String> = files.into_iter().collect();
                log::info!("changed: {}; re-reading the configuration", files.join(", "));
                controller = load(config_dir).or(controller);
                why = "change";
            }
            Event::Interval => why = "periodic",
        }
        // Changed/Reload/interval all lead to a pass.
    }
}

/// Loads fleet.toml and the stacks; logs why not (the previous configuration stays in use).
fn load(config_dir: &Path) -> Option<Controller> {
    match Controller::load(config_dir) {
        Ok(Ok(c)) => Some(c),
        Ok(Err(diags)) => {
            for d in &diags {
                log::error!(message_id = id::FLEET_CONFIG_INVALID; "{d}");
            }
            log::error!(message_id = id::FLEET_CONFIG_INVALID; "the configuration has errors; the last good one stays in use");
            None
        }
        Err(e) => {
            log::error!(message_id = id::FLEET_CONFIG_INVALID; "cannot load the configuration: {e:#}");
            None
        }
    }
}

/// One pass over the hosts that are due, with `controller` (read again if the pass had to wait
/// for the lock); returns the `STATUS=` line.
fn pass(config_dir: &Path, controller: &mut Option<Controller>, options: &Options) -> Result<String> {
    let mut waited = false;
    let _lock = ControllerLock::acquire(|| {
        waited = true;
        log::info!("waiting for a kapell fleet apply to finish");
    })?;
    // A `fleet apply` ran while this pass waited, perhaps of files edited after this daemon read
    // them (their change event still on its way): the pass pushes what the files say now, or it
    // would undo that apply and replace its rollout's record.
    if waited && let Some(reloaded) = load(config_dir) {
        *controller = Some(reloaded);
    }
    let c = controller.as_ref().context("no valid configuration")?;
    let mut state = State::load()?;
    let now = now_usec();
    let all: Vec<String> = c.fleet.hosts.keys().cloned().collect();
    let due: Vec<String> = all
        .iter()
        .filter(|h| state.hosts.get(*h).and_then(|s| s.unreachable.as_ref()).is_none_or(|u| u.next_try_usec <= now))
        .cloned()
        .collect();
    let was_unreachable: Vec<String> =
        due.iter().filter(|h| state.hosts.get(*h).is_some_and(|s| s.unreachable.is_some())).cloned().collect();
    let options = converge::Options { no_rollout: false, force: options.force, retry_failed: false };
    let outcomes = converge::converge(c, &mut state, &due, &options, &|_| {});
    state.save()?;
    for o in &outcomes {
        log_outcome(o, &state, was_unreachable.contains(&o.host));
    }
    let count = |f: &dyn Fn(&HostOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let in_step = count(&|o| matches!(o.outcome, Outcome::UpToDate | Outcome::Converged));
    let repaired = count(&|o| o.outcome == Outcome::Converged);
    let unreachable = all.len() - due.len() + count(&|o| matches!(o.outcome, Outcome::Failed(_)) && o.reply.is_none());
    let failed = count(&|o| o.is_failure() || matches!(o.outcome, Outcome::HeldBack(_)))
        - count(&|o| matches!(o.outcome, Outcome::Failed(_)) && o.reply.is_none());
    let rolling =
        state.rollout.as_ref().filter(|r| r.outcome.is_none()).map_or(0, |r| r.in_flight.len() + r.waiting.len());
    let current = rollout::desired_state(&c.sets, &rollout::shared_units(&c.sets));
    let rollout = match state.rollout.as_ref().filter(|r| r.desired_state == current) {
        Some(r) if rollout::phase(r) == "failed" => format!(
            "; rollout failed on {} (desired state {}): held back",
            r.failed.as_ref().map_or("", |f| f.host.as_str()),
            crate::fleet::protocol::short(&r.desired_state)
        ),
        Some(r) if rollout::phase(r) == "waiting for promotion" => {
            format!("; rollout waits for `kapell fleet promote` (canaries {})", r.canaries.join(", "))
        }
        _ => String::new(),
    };
    Ok(format!(
        "{} hosts: {in_step} converged ({repaired} updated this pass), {failed} failing, {unreachable} unreachable, \
         {rolling} rolling out{rollout}",
        all.len()
    ))
}

fn log_outcome(o: &HostOutcome, state: &State, was_unreachable: bool) {
    let host = o.host.as_str();
    match &o.outcome {
        Outcome::UpToDate if was_unreachable => {
            log::info!(message_id = id::FLEET_HOST_BACK, kapell_host = host; "{host} is reachable again and in step")
        }
        Outcome::UpToDate => {}
        Outcome::Converged => {
            let what = o.reply.as_ref().map(|r| r.actions.join("; ")).unwrap_or_default();
            log::info!(message_id = id::FLEET_HOST_CONVERGED, kapell_host = host; "{host} converged: {what}");
        }
        Outcome::Failed(why) if o.reply.is_none() => {
            let retry = state
                .hosts
                .get(host)
                .and_then(|s| s.unreachable.as_ref())
                .map_or(0, |u| u.next_try_usec.saturating_sub(now_usec()) / 1_000_000);
            log::warn!(message_id = id::FLEET_HOST_UNREACHABLE, kapell_host = host; "{host} is unreachable (next try in {retry}s): {why}");
        }
        Outcome::Failed(why) => {
            log::error!(message_id = id::FLEET_HOST_FAILED, kapell_host = host; "{host} failed: {why}")
        }
        Outcome::HeldBack(why) => {
            log::warn!(message_id = id::FLEET_HOST_HELD, kapell_host = host; "{host} held back: {why}")
        }
        Outcome::RolledBack(why) => {
            log::error!(message_id = id::FLEET_ROLLED_BACK, kapell_host = host; "{host} rolled back: {why}")
        }
        Outcome::Waiting(why) => log::info!(kapell_host = host; "{host} not changed: {why}"),
    }
}

/// When the next pass is due: the interval, or earlier if the retry of a host of the fleet comes
/// first.
fn next_wake(interval: Duration, controller: Option<&Controller>) -> Instant {
    let wait = State::load()
        .ok()
        .map_or(interval, |state| until_next_pass(&state, controller.map(|c| &c.fleet.hosts), interval, now_usec()));
    Instant::now() + wait
}

/// The wait before the next pass: `interval`, or less if a host in backoff is due earlier. Only
/// hosts of `fleet` count: the state keeps hosts that left fleet.toml (what this controller
/// pushed them, should they come back), and one of those in backoff is never tried again, so
/// its retry time stays in the past.
fn until_next_pass<V>(state: &State, fleet: Option<&BTreeMap<String, V>>, interval: Duration, now: u64) -> Duration {
    state
        .hosts
        .iter()
        .filter(|(host, _)| fleet.is_none_or(|f| f.contains_key(*host)))
        .filter_map(|(_, h)| h.unreachable.as_ref().map(|u| u.next_try_usec))
        .min()
        .map_or(interval, |t| Duration::from_micros(t.saturating_sub(now)).min(interval))
}

/// How often systemd hears from a pass that runs (at most): the watchdog's half-period is
/// shorter when `WatchdogSec=` is.
const PASS_BEAT: Duration = Duration::from_secs(10);

/// Runs `pass`, pinging the watchdog meanwhile (and, for the first pass, `starting`, extending
/// the start timeout, since the daemon is ready after it): a pass may rightly last longer than
/// `WatchdogSec=` or the start timeout (a rollout waits `min_healthy_time` per batch, up to
/// `healthy_deadline`). Every step of a pass is bounded (ssh deadlines, the rollout's
/// deadlines), so these pings hide no hang of the pass; between passes [`wait`] pings.
fn keeping_systemd_patient<T>(starting: bool, pass: impl FnOnce() -> T) -> T {
    let watchdog = sd_notify::watchdog_enabled();
    let beat = watchdog.map_or(PASS_BEAT, |w| (w / 2).min(PASS_BEAT));
    let extend_usec = u32::try_from((beat * 3).as_micros()).unwrap_or(u32::MAX);
    let (done, beats) = channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = beats.recv_timeout(beat) {
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
                if starting {
                    notify(&[NotifyState::ExtendTimeoutUsec(extend_usec)]);
                }
            }
        });
        let result = pass();
        drop(done);
        result
    })
}

/// Waits for `until` or an event, pinging the watchdog meanwhile; a burst of changes is one.
fn wait(rx: &Receiver<Event>, until: Instant) -> Event {
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    loop {
        let now = Instant::now();
        if now >= until {
            return Event::Interval;
        }
        let slice = watchdog.map_or(until - now, |w| w.min(until - now));
        match rx.recv_timeout(slice) {
            Ok(Event::Changed(mut files)) => {
                // Debounce: what follows within DEBOUNCE is the same change (a stop or a reload,
                // which re-reads everything anyway, wins).
                while let Ok(next) = rx.recv_timeout(DEBOUNCE) {
                    match next {
                        Event::Changed(more) => files.extend(more),
                        Event::Interval => {}
                        other => return other,
                    }
                }
                return Event::Changed(files);
            }
            Ok(event) => return event,
            Err(RecvTimeoutError::Timeout) => {
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Event::Stop,
        }
    }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// SIGHUP → [`Event::Reload`], SIGTERM/SIGINT → [`Event::Stop`], from a thread of its own.
fn watch_signals(tx: Sender<Event>) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
                    (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                else {
                    let _ = tx.send(Event::Stop);
                    return;
                };
                loop {
                    let event = tokio::select! {
                        _ = hup.recv() => Event::Reload,
                        _ = term.recv() => Event::Stop,
                        _ = int.recv() => Event::Stop,
                    };
                    let stop = event == Event::Stop;
                    if tx.send(event).is_err() || stop {
                        return;
                    }
                }
            });
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Sends [`Event::Changed`] when a file in `dir` is written, created, moved or deleted.
fn watch_dir(dir: &Path, tx: Sender<Event>) -> Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).context("cannot start inotify")?;
    let flags = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE;
    inotify.add_watch(dir, flags).with_context(|| format!("cannot watch {}", dir.display()))?;
    let dir: PathBuf = dir.to_path_buf();
    std::thread::Builder::new()
        .name("inotify".into())
        .spawn(move || {
            while let Ok(events) = inotify.read_events() {
                // Only stack and fleet files matter (not an editor's swap files).
                let files: BTreeSet<String> = events
                    .iter()
                    .filter_map(|e| e.name.as_ref().map(|n| n.to_string_lossy().into_owned()))
                    .filter(|n| n.ends_with(".toml") && !n.starts_with('.'))
                    .collect();
                if !files.is_empty() && tx.send(Event::Changed(files)).is_err() {
                    return;
                }
            }
            log::warn!("stopped watching {}", dir.display());
        })
        .context("cannot start the inotify thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::controller::state::{HostState, Unreachable};

    fn in_backoff(next_try_usec: u64) -> HostState {
        HostState { unreachable: Some(Unreachable { next_try_usec, ..Default::default() }), ..Default::default() }
    }

    /// A host that left fleet.toml while in backoff is never tried again: its retry time, long
    /// past, must not wake the daemon at once forever.
    #[test]
    fn only_hosts_of_the_fleet_bring_the_next_pass_forward() {
        let interval = Duration::from_secs(30);
        let now = 1_000_000_000;
        let mut state = State::default();
        state.hosts.insert("gone".into(), in_backoff(now - 5_000_000));
        state.hosts.insert("web1".into(), in_backoff(now + 4_000_000));
        let fleet: BTreeMap<String, ()> = BTreeMap::from([("web1".to_string(), ())]);
        assert_eq!(until_next_pass(&state, Some(&fleet), interval, now), Duration::from_secs(4));
        let empty: BTreeMap<String, ()> = BTreeMap::new();
        assert_eq!(until_next_pass(&state, Some(&empty), interval, now), interval);
        // Without a configuration every host the state knows counts.
        assert_eq!(until_next_pass::<()>(&state, None, interval, now), Duration::ZERO);
    }
}
