//! Liveness of native services: `kapell prober`, the main process of `kapell-prober.service`.
//!
//! One daemon per host probes every running native service that has a health check, once it has
//! passed its first probe ([`super::ready`] hands it over through the unit's state file). After
//! `retries` consecutive failures it says in the journal which probe failed and how (the line is
//! filed under the service's unit too, through `OBJECT_SYSTEMD_UNIT=`, so `journalctl -u` and
//! `kapell logs` show it) and, with `on_unhealthy = "restart"`, has systemd kill the service's main
//! process (SIGKILL: a hung process may not handle SIGTERM). systemd then applies the unit's
//! `Restart=`, so `NRestarts` counts the restart; with `restart = "no"` the unit stays failed. The
//! service's own process stays its unit's main process: nothing wraps it.
//!
//! Every probed unit `Wants=` this one, so it runs wherever something needs it. It learns which
//! units to probe from the state files under `/run/kapell/health/` (rescanned every second), and
//! asks systemd about a unit only when a probe of it fails (is it still running, the same run?),
//! so a thousand healthy services cost it a thousand probes per interval and nothing else. Why one
//! daemon rather than a unit per service: see docs/health.md.

use super::Health;
use super::Tracker;
use super::probe::{self, Probe, Target};
use super::state::{self, Owner, State};
use crate::logging::id;
use crate::model::{Check, OnUnhealthy};
use crate::names::ServiceRef;
use crate::render::health::HealthSpec;
use crate::systemd::Systemd;
use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How often the state directory is read for units that became ready or restarted.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// How often due probes are started (the finest interval a check gets).
const TICK: Duration = Duration::from_millis(100);

/// One unit the prober probes.
struct Watched {
    spec: HealthSpec,
    address: Option<std::net::IpAddr>,
    tracker: Tracker,
    state: State,
    due: Instant,
    in_flight: bool,
    /// Its main process was killed for being unhealthy; the next run starts over.
    killed: bool,
    /// Unhealthy, to be restarted, and the kill failed (systemd did not answer): tried again at
    /// the next probe, which goes on meanwhile.
    kill_failed: bool,
}

type Probing = Pin<Box<dyn Future<Output = (String, Probe)>>>;

/// Runs the prober until SIGTERM; returns the exit status.
pub fn main() -> Result<u8> {
    crate::logging::init(&[]);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(run(&state::dir()))
}

async fn run(dir: &Path) -> Result<u8> {
    // Connected when first needed (a failed probe): healthy services cost no D-Bus traffic.
    let mut systemd: Option<Systemd> = None;
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut seen: HashMap<PathBuf, SystemTime> = HashMap::new();
    let mut probing: FuturesUnordered<Probing> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_scan = Instant::now();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= next_scan {
                    scan(dir, &mut watched, &mut seen);
                    notify_status(&watched);
                    next_scan = Instant::now() + RESCAN_EVERY;
                }
                start_due(&mut watched, &mut probing);
            }
            Some((unit, probe)) = probing.next(), if !probing.is_empty() => {
                judge(&mut systemd, dir, &mut watched, &unit, probe).await;
            }
            _ = term.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                return Ok(crate::exit::OK);
            }
        }
    }
}

/// Picks up units whose state file changed: a native service that passed its readiness probe is
/// probed from now on; one that is starting again (restarted) is left to its readiness probe.
fn scan(dir: &Path, watched: &mut HashMap<String, Watched>, seen: &mut HashMap<PathBuf, SystemTime>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut present = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(unit) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if unit.starts_with('.') {
            continue;
        }
        present.push(unit.to_string());
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else { continue };
        if seen.get(&path) == Some(&modified) {
            continue;
        }
        seen.insert(path.clone(), modified);
        let Some(file) = state::read(dir, unit) else { continue };
        if file.owner != Owner::Host {
            continue;
        }
        let current = watched.get(unit).map(|w| w.state.invocation.as_str());
        match (file.health(), current) {
            // Our own write, or nothing new.
            (_, Some(invocation)) if invocation == file.invocation => {}
            (Some(Health::Healthy), _) => match load(&file) {
                Ok(w) => {
                    watched.insert(unit.to_string(), w);
                }
                Err(e) => log::warn!("{unit}: not probed: {e:#}"),
            },
            // A new run is starting: its readiness probe has it until the first pass.
            _ => {
                watched.remove(unit);
            }
        }
    }
    watched.retain(|unit, _| present.contains(unit));
    seen.retain(|path, _| path.exists());
}

/// A unit handed over by its readiness probe.
fn load(file: &State) -> Result<Watched> {
    let target = ServiceRef::new(&file.service, file.instance.as_deref()).map_err(anyhow::Error::msg)?;
    let spec = super::ready::load_spec(&target)?;
    let address = super::ready::native_address(&spec.health.check);
    let interval = spec.health.interval().as_std();
    Ok(Watched {
        tracker: Tracker::healthy(&spec.health),
        address,
        state: State { check: spec.describe(address), ..file.clone() },
        spec,
        due: Instant::now() + spread(&file.unit, interval),
        in_flight: false,
        killed: false,
        kill_failed: false,
    })
}

/// Where in its first interval a unit is first probed: spread evenly by its name, so a prober
/// (re)started with a thousand units does not open a thousand connections at once.
fn spread(unit: &str, interval: Duration) -> Duration {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    unit.hash(&mut h);
    interval.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

fn start_due(watched: &mut HashMap<String, Watched>, probing: &mut FuturesUnordered<Probing>) {
    let now = Instant::now();
    for (unit, w) in watched.iter_mut() {
        if w.in_flight || w.killed || w.due > now {
            continue;
        }
        w.in_flight = true;
        w.due = now + w.spec.health.interval().as_std();
        let (unit, check, address, timeout, user) = (
            unit.clone(),
            w.spec.health.check.clone(),
            w.address,
            w.spec.health.timeout().as_std(),
            w.spec.user.clone(),
        );
        probing.push(Box::pin(async move {
            let target = Target { check: &check, address, timeout, user: user.as_deref() };
            (unit, probe::probe(&target).await)
        }));
    }
}

/// Counts a probe of `unit` and acts on what it means.
async fn judge(
    systemd: &mut Option<Systemd>,
    dir: &Path,
    watched: &mut HashMap<String, Watched>,
    unit: &str,
    probe: Probe,
) {
    let Some(w) = watched.get_mut(unit) else { return };
    w.in_flight = false;
    if !probe.passed {
        // Is this run of the unit still there to be probed? Asked at every failure, not only the
        // first of a row: a run that ended meanwhile (stopped, or restarted by systemd while its
        // successor has not published its own state yet) must neither count further failures
        // nor have its successor killed for them.
        let info = match connected(systemd).await {
            Ok(s) => s.unit(unit).await,
            Err(e) => Err(e),
        };
        match info {
            Ok(info) if info.active_state == "active" && info.invocation_id == w.state.invocation => {}
            Ok(_) => {
                forget(dir, watched, unit);
                return;
            }
            Err(e) => log::warn!("{unit}: {e:#}"),
        }
    }
    let Some(w) = watched.get_mut(unit) else { return };
    let outcome = probe.outcome.to_string();
    let changed = w.tracker.record(&probe);
    w.state.health = w.tracker.health.as_str().to_string();
    w.state.failures = w.tracker.failures;
    w.state.last_probe = Some(probe);
    let check = w.state.check.clone();
    let restart = w.spec.on_unhealthy == OnUnhealthy::Restart;
    match changed {
        Some(Health::Unhealthy) => log::warn!(
            message_id = id::SERVICE_HEALTH, kapell_health = "unhealthy", object_systemd_unit = unit;
            "{unit}: unhealthy: health check {check} failed {} times in a row (last: {outcome}){}",
            w.tracker.failures,
            if restart { "" } else { "; on_unhealthy = \"ignore\": only reported" }
        ),
        Some(Health::Healthy) => log::info!(
            message_id = id::SERVICE_HEALTH, kapell_health = "healthy", object_systemd_unit = unit;
            "{unit}: healthy again: health check {check} ({outcome})"
        ),
        _ => {}
    }
    let still_unhealthy = w.kill_failed && w.tracker.health == Health::Unhealthy;
    w.kill_failed = false;
    if restart && (changed == Some(Health::Unhealthy) || still_unhealthy) {
        let killed = match connected(systemd).await {
            Ok(s) => s.kill_main(unit).await,
            Err(e) => Err(e),
        };
        match killed {
            Ok(()) => {
                // Not probed again: the next run of the unit starts over.
                w.killed = true;
                log::warn!(
                    message_id = id::SERVICE_UNHEALTHY_RESTART, object_systemd_unit = unit;
                    "{unit}: killed its main process (SIGKILL) so that systemd restarts the service"
                );
            }
            Err(e) => {
                w.kill_failed = true;
                log::error!("{unit}: cannot kill its main process (tried again at the next probe): {e:#}");
            }
        }
    }
    // A new run may have written its own state meanwhile: never overwrite it.
    let on_disk = state::read(dir, unit).map(|s| s.invocation);
    if on_disk.as_deref() == Some(w.state.invocation.as_str())
        && let Err(e) = state::write(dir, &w.state)
    {
        log::warn!("{unit}: cannot write its health state: {e}");
    }
}

/// The connection to systemd, made on first use (and again after a failed attempt).
async fn connected(slot: &mut Option<Systemd>) -> Result<&Systemd> {
    if slot.is_none() {
        *slot = Some(Systemd::system().await?);
    }
    slot.as_ref().context("no connection to systemd")
}

/// The unit stopped (or runs again under a new invocation): stop probing it and drop its file if
/// it is still the stopped run's.
fn forget(dir: &Path, watched: &mut HashMap<String, Watched>, unit: &str) {
    if let Some(w) = watched.remove(unit)
        && state::read(dir, unit).is_some_and(|s| s.invocation == w.state.invocation)
    {
        state::remove(dir, unit);
    }
}

/// `STATUS=` for `systemctl status kapell-prober`: how many services, how many unhealthy.
fn notify_status(watched: &HashMap<String, Watched>) {
    let unhealthy = watched.values().filter(|w| w.tracker.health == Health::Unhealthy).count();
    let http = watched.values().filter(|w| matches!(w.spec.health.check, Check::Http { .. })).count();
    let text = format!("probing {} services ({http} http); {unhealthy} unhealthy", watched.len());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&text)]);
}
