//! Readiness of a native service: `kapell probe --until-healthy STACK.SERVICE`.
//!
//! The unit runs it as `ExecStartPost=+…`: systemd keeps the unit "activating" until it exits, so
//! `requires` dependents (ordered `After=`) and a rollout's batch wait for the first passing probe,
//! and systemd's start timeout (`TimeoutStartSec=`) bounds the wait: when it runs out, systemd
//! fails the start. It probes at the check's interval, writes each result to the unit's state file
//! and exits 0 on the first pass; from then on the host's prober ([`super::prober`]) probes the
//! service. The `+` runs it with full privileges, so that it can write `/run/kapell/health`; a `cmd`
//! check still runs as the service's user.

use super::Tracker;
use super::probe::{self, Target};
use super::state::{self, Owner, State};
use crate::model::Check;
use crate::names::ServiceRef;
use crate::render::health::HealthSpec;
use crate::unitfile::UnitFile;
use anyhow::{Context as _, Result};
use std::net::IpAddr;

/// Where a native service is probed: the host's loopback (a `cmd` check needs no address).
pub fn native_address(check: &Check) -> Option<IpAddr> {
    (!matches!(check, Check::Cmd(_))).then_some(IpAddr::from([127, 0, 0, 1]))
}

/// The health check of `target` from the unit file systemd runs it from.
pub fn load_spec(target: &ServiceRef) -> Result<HealthSpec> {
    // `KAPELL_UNIT_PATH` (colon-separated) stands for systemd's search path in tests and benchmarks,
    // as it does for the collision checks.
    let path = match std::env::var_os("KAPELL_UNIT_PATH") {
        Some(dirs) => {
            let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&dirs).collect();
            crate::unitset::lookup::find_in(&dirs, target)
                .with_context(|| format!("no unit file for {target} in KAPELL_UNIT_PATH"))?
        }
        None => crate::unitset::lookup::find(target).map_err(anyhow::Error::msg)?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let unit = UnitFile::parse(&text).map_err(anyhow::Error::msg).with_context(|| path.display().to_string())?;
    // A container's check runs in the container, by its supervisor: run here, its `cmd` would be
    // a program of this host's, run as the caller, and its port this host's loopback.
    anyhow::ensure!(
        unit.get_section(crate::unitset::markers::CONTAINER_SECTION).is_none(),
        "{target} is a container service: its supervisor probes it in its container (`kapell status` shows \
         its health)"
    );
    HealthSpec::from_unit(&unit)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot read the health check of {}", path.display()))?
        .with_context(|| format!("{} has no health check", path.display()))
}

/// Probes `target` until a probe passes; returns the exit status for systemd (0 then).
pub async fn until_healthy(target: &ServiceRef, spec: &HealthSpec) -> Result<u8> {
    let unit = target.unit_name();
    let dir = state::dir();
    let address = native_address(&spec.health.check);
    let check = spec.describe(address);
    let mut tracker = Tracker::new(&spec.health);
    let mut state = State {
        unit: unit.clone(),
        service: target.to_string(),
        instance: target.instance.clone(),
        owner: Owner::Host,
        invocation: state::own_invocation(),
        health: tracker.health.as_str().to_string(),
        check: check.clone(),
        started_usec: probe::now_usec(),
        failures: 0,
        last_probe: None,
    };
    publish(&dir, &state);
    let probe_target = Target {
        check: &spec.health.check,
        address,
        timeout: spec.health.timeout().as_std(),
        user: spec.user.as_deref(),
    };
    let mut said = String::new();
    loop {
        let probe = probe::probe(&probe_target).await;
        tracker.record(&probe);
        let outcome = probe.outcome.to_string();
        state.health = tracker.health.as_str().to_string();
        state.failures = tracker.failures;
        state.last_probe = Some(probe);
        publish(&dir, &state);
        if tracker.been_healthy {
            log::info!(
                message_id = crate::logging::id::SERVICE_READY;
                "{unit}: ready: health check {check} passed ({outcome})"
            );
            return Ok(crate::exit::OK);
        }
        // One line per new reason, not one per probe.
        if outcome != said {
            log::info!("{unit}: not ready yet: health check {check}: {outcome}");
            said = outcome;
        }
        tokio::time::sleep(spec.health.interval().as_std()).await;
    }
}

/// Writes the state file; a failure costs `kapell status` its detail, never the service its start.
fn publish(dir: &std::path::Path, state: &State) {
    if let Err(e) = state::write(dir, state) {
        log::warn!("{}: cannot write its health state in {}: {e}", state.unit, dir.display());
    }
}
