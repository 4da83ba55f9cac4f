//! Whether a host of a rollout batch is healthy, from its status reply (see
//! docs/fleet-protocol.md): the one place that decides it.
//!
//! A service unit counts healthy when it is active, its restart counter has not moved since the
//! push, and, if it has a health check (native or container), the peer's probes say `healthy`:
//! the same results `kapell status` shows on the host, published under the runtime directory's
//! `health/` by the container supervisor, `kapell probe --until-healthy` or the host's prober.

use crate::fleet::protocol::{Reply, UnitState};
use crate::status::Health;
use std::collections::BTreeMap;

/// What a host's status reply says about the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Not healthy yet (starting, activating, failing its check): the batch fails only if this
    /// lasts past `healthy_deadline`.
    NotYet(String),
    /// A unit failed (systemd gave up on it): the batch fails now.
    Failed(String),
}

/// The verdict on `reply`'s service units; `baseline`: each unit's restart counter right after
/// the push. The first unit that is not healthy decides, and the reason names it.
pub fn judge(reply: &Reply, baseline: Option<&BTreeMap<String, u32>>) -> Verdict {
    for u in reply.units.iter().filter(|u| !u.service.is_empty()) {
        let journal =
            reply.journal.get(&u.unit).map(|l| format!("; last lines: {}", l.join(" | "))).unwrap_or_default();
        if u.active == "failed" {
            return Verdict::Failed(format!("{} failed ({}){}{journal}", u.unit, u.sub, and_probe(u)));
        }
        if let Some(before) = baseline.and_then(|b| b.get(&u.unit))
            && u.restarts > *before
        {
            // Never healthy again in this batch (the counter does not go back), but judged at the
            // deadline like the rest, by then with the journal of a unit that keeps failing.
            return Verdict::NotYet(format!(
                "{} restarted {} time(s) since the push{}{journal}",
                u.unit,
                u.restarts - before,
                and_probe(u)
            ));
        }
        if u.active != "active" {
            // A native service with a check stays "activating" until a probe passes: say what
            // the probe answers, so a version whose check never passes is recognisable.
            return Verdict::NotYet(format!("{} is {} ({}){}{journal}", u.unit, u.active, u.sub, and_probe(u)));
        }
        if let Some(Health::Starting | Health::Unhealthy) = u.health()
            && let Some(note) = probe_note(u)
        {
            return Verdict::NotYet(format!("{}: {note}", u.unit));
        }
    }
    Verdict::Healthy
}

/// `health check unhealthy (last probe: status 404)`; `None` without a check.
pub fn probe_note(u: &UnitState) -> Option<String> {
    let health = u.health.as_ref()?;
    Some(match &u.last_probe {
        Some(p) => format!("health check {health} (last probe: {})", p.outcome),
        None => format!("health check {health} (not probed yet)"),
    })
}

/// [`probe_note`] as the tail of a sentence about the unit.
fn and_probe(u: &UnitState) -> String {
    probe_note(u).map(|n| format!("; {n}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::{Outcome, Probe};

    fn unit(active: &str, restarts: u32, health: Option<&str>) -> UnitState {
        UnitState {
            unit: "s-web.service".into(),
            stack: "s".into(),
            service: "web".into(),
            active: active.into(),
            sub: if active == "active" { "running".into() } else { "start-post".into() },
            restarts,
            health: health.map(str::to_string),
            last_probe: health.map(|_| Probe {
                at_usec: 1,
                duration_usec: 1,
                passed: false,
                outcome: Outcome::Status(404),
            }),
            ..UnitState::default()
        }
    }

    fn judged(u: UnitState) -> Verdict {
        let baseline = BTreeMap::from([(u.unit.clone(), 2)]);
        judge(&Reply { units: vec![u], ..Reply::default() }, Some(&baseline))
    }

    #[test]
    fn healthy_needs_active_unmoved_restarts_and_a_passing_check() {
        assert_eq!(judged(unit("active", 2, None)), Verdict::Healthy);
        assert_eq!(judged(unit("active", 2, Some("healthy"))), Verdict::Healthy);
        let starting = judged(unit("active", 2, Some("starting")));
        assert!(matches!(&starting, Verdict::NotYet(w) if w.contains("health check starting")), "{starting:?}");
        let unhealthy = judged(unit("active", 2, Some("unhealthy")));
        assert!(
            matches!(&unhealthy, Verdict::NotYet(w) if w == "s-web.service: health check unhealthy (last probe: status 404)"),
            "{unhealthy:?}"
        );
    }

    #[test]
    fn a_failed_unit_fails_at_once_and_a_restarted_one_is_never_healthy() {
        assert!(matches!(judged(unit("failed", 2, None)), Verdict::Failed(w) if w.contains("s-web.service failed")));
        assert!(matches!(judged(unit("active", 3, Some("healthy"))), Verdict::NotYet(w) if w.contains("restarted 1")));
    }

    #[test]
    fn a_unit_held_activating_by_its_check_says_what_the_probe_answers() {
        let v = judged(unit("activating", 2, Some("starting")));
        assert!(
            matches!(&v, Verdict::NotYet(w) if w.contains("activating (start-post)") && w.contains("status 404")),
            "{v:?}"
        );
    }
}
