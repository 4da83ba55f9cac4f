//! Whether a host of a rollout batch is healthy, from its status reply (see
//! docs/fleet-protocol.md): the one place that decides it.
//!
//! A service unit counts healthy when it is active, its restart counter has not moved since the
//! push, and, if it has a health check (native or container), the peer's probes say `healthy`:
//! the same results `kapell status` shows on the host, published under the runtime directory's
//! `health/` by the container supervisor, `kapell probe --until-healthy` or the host's prober.

use crate::fleet::protocol::{Reply, UnitState, short};
use crate::names;
use crate::printable::printable;
use crate::status::Health;
use std::collections::{BTreeMap, BTreeSet};

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

/// What the controller knows of a batch host right after its push.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// The set it was pushed.
    pub hash: String,
    /// Each unit's restart counter right after the push.
    pub restarts: BTreeMap<String, u32>,
    /// The units the push added or changed (none for a push that only removed units). `None`
    /// when not known (a resumed host that had its set already): then every unit counts.
    pub changed: Option<BTreeSet<String>>,
}

/// The verdict on `reply`, a status of a host pushed `pushed`: the set it runs must be the one
/// pushed (a host that went back on its own, after a reboot or an unconfirmed window, fails
/// at once), and each service unit the push added or changed healthy. A unit the push did not
/// touch (one that had failed before the rollout, say) is no part of it. The first unit that
/// is not healthy decides, and the reason names it.
pub fn judge(reply: &Reply, pushed: &Pushed) -> Verdict {
    // A status that failed (systemd too busy to answer, say) names no unit states: not healthy
    // yet, asked again at the next poll, unless it says the host runs another set.
    if let Some(e) = &reply.error
        && (reply.current.is_empty() || reply.current == pushed.hash)
    {
        return Verdict::NotYet(format!("its status failed: {}", printable(e)));
    }
    if reply.current != pushed.hash {
        return Verdict::Failed(format!(
            "runs set {}, not the set {} it was pushed: it went back on its own (a reboot, or a window that \
             closed unconfirmed)",
            short(&reply.current),
            short(&pushed.hash)
        ));
    }
    let judged =
        |u: &&UnitState| !u.service.is_empty() && pushed.changed.as_ref().is_none_or(|changed| touched(u, changed));
    for u in reply.units.iter().filter(judged) {
        // Every piece of the reason is the peer's own words: each one printable, so a journal
        // line cannot add lines of its own to the report (or escapes to a terminal).
        let journal = reply
            .journal
            .get(&u.unit)
            .map(|l| format!("; last lines: {}", l.iter().map(|l| printable(l)).collect::<Vec<_>>().join(" | ")))
            .unwrap_or_default();
        let (unit, sub, active) = (printable(&u.unit), printable(&u.sub), printable(&u.active));
        if u.active == "failed" {
            return Verdict::Failed(format!("{unit} failed ({sub}){}{journal}", and_probe(u)));
        }
        if let Some(before) = pushed.restarts.get(&u.unit)
            && u.restarts > *before
        {
            // Never healthy again in this batch (the counter does not go back), but judged at the
            // deadline like the rest, by then with the journal of a unit that keeps failing.
            return Verdict::NotYet(format!(
                "{unit} restarted {} time(s) since the push{}{journal}",
                u.restarts - before,
                and_probe(u)
            ));
        }
        if u.active != "active" {
            // A native service with a check stays "activating" until a probe passes: say what
            // the probe answers, so a version whose check never passes is recognisable.
            return Verdict::NotYet(format!("{unit} is {active} ({sub}){}{journal}", and_probe(u)));
        }
        if let Some(Health::Starting | Health::Unhealthy) = u.health()
            && let Some(note) = probe_note(u)
        {
            return Verdict::NotYet(format!("{unit}: {note}"));
        }
    }
    Verdict::Healthy
}

/// Whether the push touched unit `u`: its file was added or changed, or, for an instance of a
/// replicated service (`s-web@2.service`), its template's file (`s-web@.service`) or its stack's
/// target, which says how many instances run (a replica added by the push is judged too).
fn touched(u: &UnitState, changed: &BTreeSet<String>) -> bool {
    changed.contains(&u.unit)
        || names::template_of(&u.unit)
            .is_some_and(|template| changed.contains(&template) || changed.contains(&names::target_unit(&u.stack)))
}

/// `health check unhealthy (last probe: status 404)`; `None` without a check. The peer's words,
/// printable.
pub fn probe_note(u: &UnitState) -> Option<String> {
    let health = printable(u.health.as_ref()?);
    Some(match &u.last_probe {
        Some(p) => format!("health check {health} (last probe: {})", printable(&p.outcome.to_string())),
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

    fn pushed(units: &[&str]) -> Pushed {
        Pushed {
            hash: "a1".into(),
            restarts: units.iter().map(|u| (u.to_string(), 2)).collect(),
            changed: Some(units.iter().map(|u| u.to_string()).collect()),
        }
    }

    fn judged(u: UnitState) -> Verdict {
        let pushed = pushed(&[&u.unit]);
        judge(&Reply { current: "a1".into(), units: vec![u], ..Reply::default() }, &pushed)
    }

    #[test]
    fn a_host_that_went_back_to_another_set_fails_at_once() {
        let reply = Reply { current: "b2".into(), units: vec![unit("active", 2, None)], ..Reply::default() };
        let v = judge(&reply, &pushed(&["s-web.service"]));
        assert!(matches!(&v, Verdict::Failed(w) if w.contains("went back on its own")), "{v:?}");
    }

    /// A status that failed names what the host runs, and no unit: not healthy, asked again
    /// (unless it runs another set). An older peer names nothing on an error.
    #[test]
    fn a_status_that_failed_is_not_healthy_yet() {
        let error = Some("cannot connect to the system bus".to_string());
        for current in ["a1", ""] {
            let reply = Reply { current: current.into(), error: error.clone(), ..Reply::default() };
            let v = judge(&reply, &pushed(&["s-web.service"]));
            assert!(matches!(&v, Verdict::NotYet(w) if w.contains("system bus")), "{current}: {v:?}");
        }
        let gone = Reply { current: "b2".into(), error, ..Reply::default() };
        assert!(matches!(judge(&gone, &pushed(&["s-web.service"])), Verdict::Failed(_)));
    }

    #[test]
    fn only_the_units_the_push_changed_are_judged() {
        let other = UnitState { unit: "t-old.service".into(), service: "old".into(), ..unit("failed", 0, None) };
        let reply = Reply { current: "a1".into(), units: vec![other, unit("active", 2, None)], ..Reply::default() };
        assert_eq!(judge(&reply, &pushed(&["s-web.service"])), Verdict::Healthy);
        // Not known what changed (a resumed host): every unit counts.
        let all = Pushed { changed: None, ..pushed(&["s-web.service"]) };
        assert!(matches!(judge(&reply, &all), Verdict::Failed(w) if w.contains("t-old.service failed")));
        // A push that only removed units judges none of those left.
        let removal = Pushed { changed: Some(BTreeSet::new()), ..pushed(&["s-web.service"]) };
        assert_eq!(judge(&reply, &removal), Verdict::Healthy);
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

    /// A replicated service's file is its template (`s-web@.service`); what runs, and what the
    /// reply names, are its instances. They are judged when the push changed the template, or
    /// the stack's target (how many instances run).
    #[test]
    fn the_instances_of_a_changed_template_are_judged() {
        let instance = |n: u32, active: &str| UnitState { unit: format!("s-web@{n}.service"), ..unit(active, 2, None) };
        let reply = Reply {
            current: "a1".into(),
            units: vec![instance(1, "active"), instance(2, "failed")],
            ..Reply::default()
        };
        for changed in ["s-web@.service", "s.target"] {
            let v = judge(&reply, &pushed(&[changed]));
            assert!(matches!(&v, Verdict::Failed(w) if w.starts_with("s-web@2.service failed")), "{changed}: {v:?}");
        }
        // Another stack's target, or another service's template, is not this service's change.
        for changed in ["t.target", "s-db@.service", "s-web.service"] {
            assert_eq!(judge(&reply, &pushed(&[changed])), Verdict::Healthy, "{changed}");
        }
    }

    /// The reason is the peer's words: a journal line (or a state) with a line break or an
    /// escape sequence stays on the reason's one line, shown as escapes.
    #[test]
    fn a_peers_words_stay_on_one_printable_line() {
        let u = UnitState { sub: "dead\u{1b}[2J".into(), ..unit("failed", 2, None) };
        let mut reply = Reply { current: "a1".into(), units: vec![u], ..Reply::default() };
        reply.journal.insert("s-web.service".into(), vec!["boom\nFAKE: all healthy\u{1b}[31m".into()]);
        let Verdict::Failed(why) = judge(&reply, &pushed(&["s-web.service"])) else { panic!("failed") };
        assert!(!why.chars().any(char::is_control), "{why:?}");
        assert!(why.contains("boom\\nFAKE: all healthy\\u{1b}[31m"), "{why}");
        assert!(why.contains("(dead\\u{1b}[2J)"), "{why}");
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
