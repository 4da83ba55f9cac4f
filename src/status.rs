//! What systemd says about every service of the stacks (`kapell status`), and the supervisor's
//! status vocabulary.
//!
//! A container service's supervisor (`kapell run`) reports its phase with sd_notify `STATUS=`
//! lines from a fixed vocabulary ([`SupervisorStatus`]); systemd keeps the last one as the
//! service's `StatusText`, which is where `kapell status` reads the health from. Producing and
//! parsing the lines with the same type keeps both sides in step.

use crate::systemd::{Systemd, UnitInfo};
use crate::unitset::UnitSet;
use anyhow::Result;
use std::collections::BTreeSet;
use std::fmt;

pub use crate::health::Health;

/// The supervisor's `STATUS=` lines: `pulling <image>`, `starting`, `running`,
/// `running, health: starting|healthy|unhealthy`, `stopping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorStatus {
    Pulling(String),
    Starting,
    /// Running, with the health check's state if the service has one.
    Running(Option<Health>),
    Stopping,
}

impl SupervisorStatus {
    /// Parses a `StatusText`; `None` for anything outside the vocabulary.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "starting" => Some(Self::Starting),
            "running" => Some(Self::Running(None)),
            "stopping" => Some(Self::Stopping),
            _ => {
                if let Some(image) = text.strip_prefix("pulling ") {
                    return Some(Self::Pulling(image.to_string()));
                }
                let health = text.strip_prefix("running, health: ")?;
                Health::parse(health).map(|h| Self::Running(Some(h)))
            }
        }
    }

    pub fn health(&self) -> Option<Health> {
        match self {
            Self::Running(health) => *health,
            _ => None,
        }
    }
}

impl fmt::Display for SupervisorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pulling(image) => write!(f, "pulling {image}"),
            Self::Starting => f.write_str("starting"),
            Self::Running(None) => f.write_str("running"),
            Self::Running(Some(h)) => write!(f, "running, health: {}", h.as_str()),
            Self::Stopping => f.write_str("stopping"),
        }
    }
}

/// One running unit of one service.
#[derive(Debug, Clone)]
pub struct Row {
    pub stack: String,
    pub service: String,
    pub container: bool,
    pub info: UnitInfo,
    /// The health state its prober published for this run of the unit (see `crate::health::state`).
    pub probe: Option<crate::health::state::State>,
}

impl Row {
    /// The health check's state, for a running service with a check: what its prober published
    /// for this run, else (a container) what its supervisor last told systemd.
    pub fn health(&self) -> Option<Health> {
        if let Some(h) = self.probe.as_ref().and_then(|p| p.health()) {
            return Some(h);
        }
        if !self.container {
            return None;
        }
        SupervisorStatus::parse(&self.info.status_text).and_then(|s| s.health())
    }

    /// Reads the unit's published health state, kept only when it belongs to the unit's current run.
    pub fn load_probe(&mut self, dir: &std::path::Path) {
        self.probe = current_probe(dir, &self.info);
    }

    /// When the unit entered its current state: activation for a running unit, the last state
    /// change otherwise. µs since the epoch, 0 if never.
    pub fn since_usec(&self) -> u64 {
        if self.info.active_state == "active" && self.info.active_enter_usec != 0 {
            self.info.active_enter_usec
        } else {
            self.info.state_change_usec
        }
    }
}

/// The health state published for the current run of `info`'s unit: none for a stopped unit, nor
/// a file left by an earlier run, with two exceptions that say why a unit is failing. A failed
/// unit keeps its last run's file (systemd keeps that run's `InvocationID` until the next start).
/// A unit starting again after a failure (automatic restarts) shows its last run's check until
/// the new run publishes, unless that run was healthy: systemd starts it again 100 ms after the
/// failure, and a report read in between would otherwise say nothing of the check.
pub fn current_probe(dir: &std::path::Path, info: &UnitInfo) -> Option<crate::health::state::State> {
    let state = crate::health::state::read(dir, &info.name)?;
    let this_run = state.invocation.is_empty() || state.invocation == info.invocation_id;
    let shown = match info.active_state.as_str() {
        "active" | "reloading" | "deactivating" => this_run,
        "activating" => this_run || (info.restarts > 0 && state.health() != Some(Health::Healthy)),
        "failed" => !state.invocation.is_empty() && state.invocation == info.invocation_id,
        _ => false,
    };
    shown.then_some(state)
}

/// How much of each unit [`collect`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything `kapell status` shows ([`Systemd::units`]).
    Full,
    /// What a fleet reply carries: states, the last change, restarts, the status text and the
    /// run's invocation, for its probe ([`Systemd::brief_units`]).
    Brief,
}

/// The state of every running unit of the `selection` stacks of `units` (all if `None`), in
/// stack, service and instance order, read to `depth`.
pub async fn collect(
    systemd: &Systemd,
    units: &UnitSet,
    selection: Option<&BTreeSet<String>>,
    depth: Depth,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for stack in units.stacks.values().filter(|s| selection.is_none_or(|sel| sel.contains(&s.name))) {
        for (service, unit) in stack.running() {
            let info = UnitInfo { name: unit.to_string(), ..Default::default() };
            rows.push(Row {
                stack: stack.name.clone(),
                service: service.name.clone(),
                container: service.container,
                info,
                probe: None,
            });
        }
    }
    let names: Vec<String> = rows.iter().map(|r| r.info.name.clone()).collect();
    let dir = crate::health::state::dir();
    let infos = match depth {
        Depth::Full => systemd.units(&names).await?,
        Depth::Brief => systemd.brief_units(&names).await?,
    };
    for (row, info) in rows.iter_mut().zip(infos) {
        row.info = info;
        row.load_probe(&dir);
    }
    Ok(rows)
}

/// How long ago, the way `systemctl` says it: `42s`, `3min 5s`, `2h 10min`, `4d 3h`.
pub fn format_age(now_usec: u64, then_usec: u64) -> String {
    let s = now_usec.saturating_sub(then_usec) / 1_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}min {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}min", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// RFC 3339 in UTC, to the second: `2026-11-23T13:01:02Z`.
pub fn format_timestamp(usec: u64) -> String {
    let secs = usec / 1_000_000;
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_vocabulary_round_trips() {
        let all = [
            SupervisorStatus::Pulling("docker.io/library/postgres:16".into()),
            SupervisorStatus::Starting,
            SupervisorStatus::Running(None),
            SupervisorStatus::Running(Some(Health::Starting)),
            SupervisorStatus::Running(Some(Health::Healthy)),
            SupervisorStatus::Running(Some(Health::Unhealthy)),
            SupervisorStatus::Stopping,
        ];
        for status in all {
            assert_eq!(SupervisorStatus::parse(&status.to_string()), Some(status));
        }
        assert_eq!(SupervisorStatus::parse("running, health: great"), None);
        assert_eq!(SupervisorStatus::parse(""), None);
    }

    /// Which published probe a unit shows: its own run's, or the run that failed.
    #[test]
    fn the_probe_of_this_run_or_of_the_run_that_failed() {
        use crate::health::state::{Owner, State, write};
        let tmp = tempfile::tempdir().expect("tmp");
        let published = |invocation: &str, health: &str| {
            let state = State {
                unit: "s-web.service".into(),
                service: "s.web".into(),
                instance: None,
                owner: Owner::Host,
                invocation: invocation.into(),
                health: health.into(),
                check: "tcp 127.0.0.1:8080".into(),
                started_usec: 1,
                failures: 1,
                last_probe: None,
            };
            write(tmp.path(), &state).expect("write");
        };
        let shown = |active: &str, invocation: &str, restarts: u32| {
            let info = UnitInfo {
                name: "s-web.service".into(),
                active_state: active.into(),
                invocation_id: invocation.into(),
                restarts,
                ..Default::default()
            };
            current_probe(tmp.path(), &info).map(|s| s.health)
        };
        published("run1", "unhealthy");
        assert_eq!(shown("active", "run1", 0).as_deref(), Some("unhealthy"));
        assert_eq!(shown("active", "run2", 0), None, "an earlier run's file");
        assert_eq!(shown("failed", "run1", 0).as_deref(), Some("unhealthy"), "the run that failed");
        assert_eq!(shown("failed", "run2", 0), None);
        assert_eq!(shown("inactive", "run1", 0), None, "stopped");
        assert_eq!(shown("activating", "run2", 0), None, "a new start");
        assert_eq!(shown("activating", "run2", 1).as_deref(), Some("unhealthy"), "restarted after a failure");
        published("run1", "healthy");
        assert_eq!(shown("activating", "run2", 1), None, "a healthy run says nothing of the new one");
    }

    #[test]
    fn health_only_for_containers() {
        let info = UnitInfo { status_text: "running, health: healthy".into(), ..Default::default() };
        let mut row = Row { stack: "s".into(), service: "db".into(), container: true, info, probe: None };
        assert_eq!(row.health(), Some(Health::Healthy));
        row.container = false;
        assert_eq!(row.health(), None);
    }

    #[test]
    fn times() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_timestamp(1_795_438_862_000_000), "2026-11-23T13:01:02Z");
        assert_eq!(format_age(200_000_000, 158_000_000), "42s");
        assert_eq!(format_age(185_000_000, 0), "3min 5s");
        assert_eq!(format_age(7_800_000_000, 0), "2h 10min");
        assert_eq!(format_age(356_400_000_000, 0), "4d 3h");
    }
}
