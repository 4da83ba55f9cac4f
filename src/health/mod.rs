//! Health checks: probing a service, judging the probes, and publishing the result.
//!
//! - [`spec`]: the check as a unit file carries it (`[X-Kapell-Health]`).
//! - [`probe`]: one HTTP, TCP or command probe.
//! - [`Tracker`]: consecutive failures, `start_period`, and the healthy/unhealthy transitions,
//!   the same for every prober.
//! - [`state`]: the result of each unit's last probe under `/run/kapell/health/`, for
//!   `kapell status` and a fleet peer's status reply.
//! - [`ready`]: readiness of a native service: `kapell probe --until-healthy` in its
//!   `ExecStartPost=` holds the unit in "activating" until the first passing probe.
//! - [`prober`]: liveness of native services: one host-wide daemon (`kapell-prober.service`)
//!   probes every running native service with a check and has systemd restart an unhealthy one.
//!
//! Container services are probed by their supervisor (`crate::supervisor`). Why one prober per
//! host and not a unit per service: see docs/health.md.

pub mod probe;
pub mod prober;
pub mod ready;
pub mod state;

use crate::model::Health as Check;

/// The host-wide prober's unit (shipped in `units/`), wanted by every native service with a check.
pub use crate::names::PROBER_UNIT;
use probe::Probe;
use std::time::Instant;

/// A service's health, as its checks judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "starting" => Some(Health::Starting),
            "healthy" => Some(Health::Healthy),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        }
    }
}

/// Judges a run of probes: `retries` consecutive failures make a service unhealthy, one pass makes
/// it healthy; failures before the first pass within `start_period` do not count.
#[derive(Debug, Clone)]
pub struct Tracker {
    retries: u32,
    start_period: std::time::Duration,
    started: Instant,
    pub health: Health,
    pub failures: u32,
    pub been_healthy: bool,
}

impl Tracker {
    pub fn new(check: &Check) -> Self {
        Self {
            retries: check.retries(),
            start_period: check.start_period().as_std(),
            started: Instant::now(),
            health: Health::Starting,
            failures: 0,
            been_healthy: false,
        }
    }

    /// A tracker of a service that has already passed (the prober takes over after readiness).
    pub fn healthy(check: &Check) -> Self {
        Self { health: Health::Healthy, been_healthy: true, ..Self::new(check) }
    }

    /// Counts one probe; returns the new health when it changed.
    pub fn record(&mut self, probe: &Probe) -> Option<Health> {
        let before = self.health;
        if probe.passed {
            self.failures = 0;
            self.health = Health::Healthy;
            self.been_healthy = true;
        } else if self.been_healthy || self.started.elapsed() >= self.start_period {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.retries {
                self.health = Health::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Check as Kind;
    use probe::Outcome;

    fn probe(passed: bool) -> Probe {
        Probe { at_usec: 0, duration_usec: 0, passed, outcome: Outcome::Connected }
    }

    #[test]
    fn retries_in_a_row_make_it_unhealthy() {
        let check =
            Check { check: Kind::Tcp { port: 1 }, interval: None, timeout: None, retries: Some(2), start_period: None };
        let mut t = Tracker::new(&check);
        assert_eq!(t.record(&probe(false)), None, "one failure is not enough");
        assert_eq!(t.record(&probe(false)), Some(Health::Unhealthy));
        assert_eq!(t.record(&probe(true)), Some(Health::Healthy));
        assert_eq!(t.record(&probe(false)), None);
        assert_eq!(t.record(&probe(true)), None, "a pass resets the count");
        assert_eq!(t.record(&probe(false)), None);
        assert_eq!(t.record(&probe(false)), Some(Health::Unhealthy));
    }

    #[test]
    fn start_period_failures_do_not_count() {
        let check = Check {
            check: Kind::Tcp { port: 1 },
            interval: None,
            timeout: None,
            retries: Some(1),
            start_period: Some(crate::quantity::Duration(3_600_000_000)),
        };
        let mut t = Tracker::new(&check);
        assert_eq!(t.record(&probe(false)), None);
        assert_eq!((t.health, t.failures), (Health::Starting, 0));
        assert_eq!(t.record(&probe(true)), Some(Health::Healthy));
        assert_eq!(t.record(&probe(false)), Some(Health::Unhealthy), "after the first pass every failure counts");
    }
}
