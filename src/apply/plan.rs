//! The plan of an apply: pure, from three inputs — the unit set systemd runs now (the
//! generator directory), the unit set the stack files render to now, and the state of each unit
//! involved — to the list of unit actions. No I/O, so every rule is unit-tested.
//!
//! Rules, per stack:
//! - a service (instance) that is no longer rendered is stopped, while its file still exists; a
//!   deleted stack's target and services are all stopped;
//! - an instance dropped by lowering `replicas` is stopped after the reload instead: its
//!   template stays, and by then no dependent's `Requires=` names it, so stopping it does not
//!   stop the services that require the service;
//! - a service whose unit text changed is restarted if it runs (or failed); if it is stopped it
//!   is started only when the stack is being started or it never ran; otherwise it just gets the
//!   new definition (someone stopped it on purpose);
//! - a service whose text changed only in its dependencies (`Requires=`, `Wants=`, `After=`,
//!   `Before=`: a `requires` edited, or a dependency's `replicas`) is not restarted: systemd reads
//!   dependencies when it queues a job, so the reload is all they need;
//! - a new service is started;
//! - a stack whose target is not active is started (the target and its stopped services):
//!   `apply` brings stacks up whether or not `enable` puts them in the boot;
//! - a service that never ran since boot is started (e.g. added by a hand `daemon-reload`);
//! - a daemon-reload happens only when some selected stack's files changed;
//! - nothing else is touched: no unit outside the two unit sets is ever named.

use crate::systemd::UnitInfo;
use crate::unitfile::UnitFile;
use crate::unitset::{StackUnits, UnitSet};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// What happens to one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Stop it before the reload (its file disappears at the reload).
    Stop,
    /// Nothing runs; its file disappears at the reload.
    Remove,
    /// Stop it after the reload: an instance whose template stays (`replicas` lowered).
    StopAfterReload,
    /// Restart it after the reload.
    Restart,
    /// Start it after the reload.
    Start,
    /// Its new definition is loaded by the reload; it is not (re)started.
    Update,
}

impl Verb {
    /// The verb as planned (`--dry-run`) and as done.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            Verb::Stop => ("stop", "stopped"),
            Verb::Remove => ("remove", "removed"),
            Verb::StopAfterReload => ("stop", "stopped"),
            Verb::Restart => ("restart", "restarted"),
            Verb::Start => ("start", "started"),
            Verb::Update => ("update", "updated"),
        }
    }
}

/// Why a unit gets its verb, shown after the unit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    StackRemoved,
    /// A unit of the fleet's stack that the received set no longer has (seen without its
    /// stack's target, which is the fleet's).
    DroppedByFleet,
    ServiceRemoved,
    /// An instance beyond the service's new `replicas`.
    ReplicaRemoved,
    NewStack,
    NewService,
    Changed,
    /// Only its `Requires=`/`Wants=`/`After=`/`Before=` changed: loaded by the reload.
    DependenciesChanged,
    /// Changed, but stopped by someone: it keeps the new definition for its next start.
    ChangedStopped,
    StackNotRunning,
    NeverStarted,
    TargetChanged,
    /// A fleet unit found stopped while its stack runs (drift): the fleet restores it.
    StoppedOutside,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::StackRemoved => "stack file deleted",
            Why::DroppedByFleet => "no longer in the fleet's set",
            Why::ServiceRemoved => "service removed from the stack",
            Why::ReplicaRemoved => "replicas lowered",
            Why::NewStack => "new stack",
            Why::NewService => "new service",
            Why::Changed => "unit changed",
            Why::DependenciesChanged => "only its dependencies changed: the reload applies them, no restart",
            Why::ChangedStopped => "unit changed; it is stopped, so it is not started",
            Why::StackNotRunning => "stack not running",
            Why::NeverStarted => "never started",
            Why::TargetChanged => "stack target changed",
            Why::StoppedOutside => "stopped outside kapell; the fleet's set runs it",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub verb: Verb,
    pub unit: String,
    pub stack: String,
    pub why: Why,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order: stops and removals, then (after the reload) stops of dropped
    /// instances, restarts, starts and updates.
    pub steps: Vec<Step>,
    /// A `daemon-reload` is needed: some selected stack's unit files changed.
    pub reload: bool,
    /// Things the operator should know that are not actions (a failed unit left alone, …).
    pub notes: Vec<String>,
    /// Stacks and units considered, for the "nothing to do" line.
    pub stacks: usize,
    pub units: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && !self.reload
    }

    pub fn steps(&self, verbs: &[Verb]) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| verbs.contains(&s.verb))
    }
}

/// What systemd says of the installed units the plan looks at (see [`units_to_query`]), by name:
/// states in one bulk read, details only where [`needs_details`] asks for them.
pub async fn read_states(
    systemd: &crate::systemd::Systemd,
    current: &UnitSet,
    selection: Option<&BTreeSet<String>>,
) -> anyhow::Result<HashMap<String, UnitInfo>> {
    let names = units_to_query(current, selection);
    Ok(systemd.states_then_units(&names, needs_details).await?.into_iter().map(|u| (u.name.clone(), u)).collect())
}

/// The units whose state the plan needs: the target and running units of every selected stack
/// that is installed now. A stack or service that is not installed yet is started whatever its
/// state, so it is not asked about (and asking would make systemd search the disk for each).
pub fn units_to_query(current: &UnitSet, selection: Option<&BTreeSet<String>>) -> Vec<String> {
    let selected = |name: &String| selection.is_none_or(|s| s.contains(name));
    let mut names: Vec<String> = current
        .stacks
        .values()
        .filter(|s| selected(&s.name))
        .flat_map(|s| std::iter::once(s.target()).chain(s.running().map(|(_, u)| u.to_string())))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether the plan needs more of a unit than its states: when it is stopped, whether it ever
/// ran since boot (a stopped unit that never ran is started, one stopped on purpose is not).
pub fn needs_details(state: &UnitInfo) -> bool {
    state.is_down()
}

/// Computes the plan. `selection` limits it to those stacks; `Err` lists the stacks outside the
/// selection whose changes the reload would load without acting on them (units removed or
/// changed), which would be lost to every later apply: the caller refuses and says why.
pub fn plan(
    current: &UnitSet,
    desired: &UnitSet,
    states: &HashMap<String, UnitInfo>,
    selection: Option<&BTreeSet<String>>,
) -> Result<Plan, Vec<String>> {
    let mut plan = Plan::default();
    let mut before: Vec<Step> = Vec::new();
    let mut after: Vec<Step> = Vec::new();
    let mut conflicts = Vec::new();
    let empty = StackUnits::default();
    let down = UnitInfo::default();
    let state = |unit: &str| states.get(unit).unwrap_or(&down);
    let names: BTreeSet<&String> = current.stacks.keys().chain(desired.stacks.keys()).collect();

    for name in names {
        let cur = current.stacks.get(name);
        let new = desired.stacks.get(name);
        let old_files = &cur.unwrap_or(&empty).files;
        let changed = old_files != &new.unwrap_or(&empty).files;
        if !selection.is_none_or(|s| s.contains(name)) {
            if changed && let Some(why) = lost_change(cur, new) {
                conflicts.push(format!("stack {name}: {why}"));
            }
            continue;
        }
        plan.stacks += 1;
        plan.reload |= changed;
        let mut step = |verb: Verb, unit: &str, why: Why| {
            let s = Step { verb, unit: unit.to_string(), stack: name.clone(), why };
            if matches!(verb, Verb::Stop | Verb::Remove) { before.push(s) } else { after.push(s) }
        };
        let stop = |unit: &str| if state(unit).is_down() { Verb::Remove } else { Verb::Stop };

        let Some(new) = new else {
            // The stack file was deleted: stop everything it ran, then its target. A stack seen
            // without its target is a part of the fleet's stack of its name (a unit the received
            // set dropped, while its activation stopped before its reload): the target is the
            // fleet's, and stopping it would stop every service of the stack (`PartOf=`).
            let cur = cur.unwrap_or(&empty);
            let whole = cur.files.contains_key(&cur.target());
            let why = if whole { Why::StackRemoved } else { Why::DroppedByFleet };
            for (_, unit) in cur.running() {
                step(stop(unit), unit, why);
            }
            if whole {
                step(stop(&cur.target()), &cur.target(), why);
            }
            continue;
        };
        plan.units += new.running().count();
        if let Some(cur) = cur {
            for (service, unit) in cur.running().filter(|(_, u)| new.service_of(u).is_none()) {
                if new.files.contains_key(&service.file) {
                    // An instance of a template that stays: stopped once the reload has taken it
                    // out of its dependents' `Requires=` (before, the stop would spread to them).
                    let verb = if state(unit).is_down() { Verb::Remove } else { Verb::StopAfterReload };
                    step(verb, unit, Why::ReplicaRemoved);
                } else {
                    step(stop(unit), unit, Why::ServiceRemoved);
                }
            }
        }
        let target = new.target();
        let stack_down = !state(&target).is_up();
        for (service, unit) in new.running() {
            let s = state(unit);
            let old = cur.and_then(|c| c.service_of(unit));
            // Changed beyond its dependencies: what runs is not what the file says any more.
            let redefined =
                old.is_some_and(|o| o.text != service.text && !only_dependencies_differ(&o.text, &service.text));
            match old {
                None => step(Verb::Start, unit, if cur.is_none() { Why::NewStack } else { Why::NewService }),
                Some(_) if redefined => {
                    if !s.is_down() || s.active_state == "failed" {
                        step(Verb::Restart, unit, Why::Changed);
                    } else if stack_down || !s.ever_started() {
                        step(Verb::Start, unit, Why::Changed);
                    } else {
                        step(Verb::Update, unit, Why::ChangedStopped);
                    }
                }
                Some(_) if s.is_down() && stack_down => step(Verb::Start, unit, Why::StackNotRunning),
                Some(_) if s.is_down() && !s.ever_started() => step(Verb::Start, unit, Why::NeverStarted),
                Some(old) => {
                    if old.text != service.text {
                        step(Verb::Update, unit, Why::DependenciesChanged);
                    }
                    if s.active_state == "failed" {
                        plan.notes.push(format!(
                            "{unit} is failed and its definition unchanged, so it is left alone (`systemctl restart \
                             {unit}` retries it; `journalctl -u {unit}` says why)"
                        ));
                    }
                }
            }
        }
        match cur {
            None => step(Verb::Start, &target, Why::NewStack),
            Some(_) if stack_down => step(Verb::Start, &target, Why::StackNotRunning),
            Some(cur) if cur.files.get(&target) != new.files.get(&target) => {
                step(Verb::Update, &target, Why::TargetChanged);
            }
            Some(_) => {}
        }
    }
    if plan.reload && !conflicts.is_empty() {
        return Err(conflicts);
    }
    // Restarts before starts, so a restarted dependency is not started twice; updates last.
    after.sort_by_key(|s| s.verb);
    plan.steps = before;
    plan.steps.extend(after);
    Ok(plan)
}

/// Keys whose change systemd applies at a reload, without a restart: it reads dependencies and
/// ordering when it queues a job, never from a running process.
const DEPENDENCY_KEYS: &[&str] = &["Requires", "Wants", "After", "Before"];

/// Whether two texts of a unit differ only in the dependencies of their `[Unit]` section. A
/// text that does not parse is taken as changed.
fn only_dependencies_differ(old: &str, new: &str) -> bool {
    let without_dependencies = |text: &str| {
        UnitFile::parse(text).ok().map(|mut unit| {
            for section in unit.sections.iter_mut().filter(|s| s.name == "Unit") {
                section.entries.retain(|(key, _)| !DEPENDENCY_KEYS.contains(&key.as_str()));
            }
            unit
        })
    };
    match (without_dependencies(old), without_dependencies(new)) {
        (Some(old), Some(new)) => old == new,
        _ => false,
    }
}

/// Why a change of an unselected stack cannot simply ride along with the reload: removed units
/// would lose their files while running, changed units would keep running their old definition
/// with nothing left to tell a later apply. New services are fine (a later apply starts what
/// never ran), and so are a changed target and changed dependencies (the reload is all they
/// need).
fn lost_change(cur: Option<&StackUnits>, new: Option<&StackUnits>) -> Option<String> {
    let cur = cur?;
    let Some(new) = new else { return Some("its file was deleted; its units would keep running without files".into()) };
    let removed: Vec<&str> = cur.running().map(|(_, u)| u).filter(|u| new.service_of(u).is_none()).collect();
    if !removed.is_empty() {
        return Some(format!("{} removed from the stack", removed.join(", ")));
    }
    let changed: Vec<&str> = new
        .services()
        .iter()
        .filter(|s| {
            cur.service(&s.name).is_some_and(|old| {
                old.file == s.file && old.text != s.text && !only_dependencies_differ(&old.text, &s.text)
            })
        })
        .map(|s| s.file.as_str())
        .collect();
    (!changed.is_empty()).then(|| format!("{} changed", changed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitset::view_tests::{service, target};

    fn set(files: Vec<(String, String)>) -> UnitSet {
        UnitSet::from_rendered(
            &files.into_iter().map(|(name, text)| crate::unitset::OutputFile::Unit { name, text }).collect::<Vec<_>>(),
        )
    }

    /// Stack `s` with services a, b, c (c's command given).
    fn three(c_exec: &str) -> Vec<(String, String)> {
        vec![
            target("s", "s-a.service s-b.service s-c.service"),
            service("s", "s-a.service", "a", "/bin/a"),
            service("s", "s-b.service", "b", "/bin/b"),
            service("s", "s-c.service", "c", c_exec),
        ]
    }

    fn running(units: &[&str]) -> HashMap<String, UnitInfo> {
        units
            .iter()
            .map(|u| {
                let info = UnitInfo {
                    name: u.to_string(),
                    active_state: "active".into(),
                    inactive_exit_usec: 1,
                    ..Default::default()
                };
                (u.to_string(), info)
            })
            .collect()
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| format!("{} {}", s.verb.words().0, s.unit)).collect()
    }

    const ALL: &[&str] = &["s.target", "s-a.service", "s-b.service", "s-c.service"];

    #[test]
    fn first_apply_starts_everything() {
        let plan = plan(&UnitSet::default(), &set(three("/bin/c")), &HashMap::new(), None).expect("plan");
        assert!(plan.reload);
        assert_eq!(lines(&plan), ["start s-a.service", "start s-b.service", "start s-c.service", "start s.target"]);
    }

    #[test]
    fn no_change_is_nothing_to_do() {
        let plan = plan(&set(three("/bin/c")), &set(three("/bin/c")), &running(ALL), None).expect("plan");
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!((plan.stacks, plan.units), (1, 3));
    }

    #[test]
    fn only_the_changed_service_restarts() {
        let plan = plan(&set(three("/bin/c")), &set(three("/bin/c2")), &running(ALL), None).expect("plan");
        assert!(plan.reload);
        assert_eq!(lines(&plan), ["restart s-c.service"]);
    }

    #[test]
    fn removed_service_is_stopped_before_the_reload() {
        let mut new = three("/bin/c");
        new.truncate(3);
        new[0] = target("s", "s-a.service s-b.service");
        let plan = plan(&set(three("/bin/c")), &set(new), &running(ALL), None).expect("plan");
        assert_eq!(lines(&plan), ["stop s-c.service", "update s.target"]);
    }

    #[test]
    fn deleted_stack_stops_everything_and_inactive_units_are_just_removed() {
        let mut states = running(ALL);
        states.remove("s-b.service");
        let plan = plan(&set(three("/bin/c")), &UnitSet::default(), &states, None).expect("plan");
        assert_eq!(lines(&plan), ["stop s-a.service", "remove s-b.service", "stop s-c.service", "stop s.target"]);
    }

    /// A stack seen without its target is a part of the fleet's stack of its name: its units go,
    /// and the target (the fleet's, which every service is `PartOf=`) is not stopped.
    #[test]
    fn a_stack_seen_without_its_target_stops_its_units_only() {
        let dropped = vec![service("s", "s-c.service", "c", "/bin/c")];
        let plan = plan(&set(dropped), &UnitSet::default(), &running(ALL), None).expect("plan");
        assert_eq!(lines(&plan), ["stop s-c.service"]);
        assert_eq!(plan.steps[0].why, Why::DroppedByFleet);
    }

    #[test]
    fn stopped_stack_is_started_and_changed_stopped_service_is_not() {
        let mut states = running(ALL);
        states.get_mut("s-c.service").expect("c").active_state = "inactive".into();
        let plan1 = plan(&set(three("/bin/c")), &set(three("/bin/c2")), &states, None).expect("plan");
        assert_eq!(lines(&plan1), ["update s-c.service"]);
        states.get_mut("s.target").expect("target").active_state = "inactive".into();
        let plan2 = plan(&set(three("/bin/c")), &set(three("/bin/c")), &states, None).expect("plan");
        assert_eq!(lines(&plan2), ["start s-c.service", "start s.target"]);
        assert!(!plan2.reload);
    }

    #[test]
    fn failed_unchanged_service_is_noted_not_touched() {
        let mut states = running(ALL);
        states.get_mut("s-a.service").expect("a").active_state = "failed".into();
        let plan = plan(&set(three("/bin/c")), &set(three("/bin/c")), &states, None).expect("plan");
        assert!(plan.steps.is_empty());
        assert_eq!(plan.notes.len(), 1);
    }

    /// Stack `r`: `db` with `n` replicas, and `web`, which requires them all (as rendered).
    fn scaled(n: usize, web_exec: &str) -> UnitSet {
        let instances: Vec<String> = (1..=n).map(|i| format!("r-db@{i}.service")).collect();
        let instances = instances.join(" ");
        let (name, text) = service("r", "r-web.service", "web", web_exec);
        let web = text.replacen("[Unit]\n", &format!("[Unit]\nRequires={instances}\nAfter={instances}\n"), 1);
        set(vec![
            target("r", &format!("{instances} r-web.service")),
            service("r", "r-db@.service", "db", "/bin/db"),
            (name, web),
        ])
    }

    fn running_scaled(n: usize) -> HashMap<String, UnitInfo> {
        let mut units: Vec<String> = (1..=n).map(|i| format!("r-db@{i}.service")).collect();
        units.extend(["r.target".to_string(), "r-web.service".to_string()]);
        running(&units.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn scaling_down_stops_the_instance_after_the_reload_and_keeps_its_dependents() {
        let plan = plan(&scaled(3, "/bin/web"), &scaled(2, "/bin/web"), &running_scaled(3), None).expect("plan");
        assert!(plan.reload);
        assert_eq!(lines(&plan), ["stop r-db@3.service", "update r-web.service", "update r.target"]);
        assert_eq!(plan.steps[0].verb, Verb::StopAfterReload, "stopped before the reload, it would stop web");
        assert_eq!(plan.steps[1].why, Why::DependenciesChanged);
    }

    #[test]
    fn scaling_up_starts_the_new_instance_and_does_not_restart_dependents() {
        let plan = plan(&scaled(2, "/bin/web"), &scaled(4, "/bin/web"), &running_scaled(2), None).expect("plan");
        assert_eq!(
            lines(&plan),
            ["start r-db@3.service", "start r-db@4.service", "update r-web.service", "update r.target"]
        );
    }

    #[test]
    fn a_dependent_changed_beyond_its_dependencies_restarts() {
        let plan = plan(&scaled(2, "/bin/web"), &scaled(3, "/bin/web2"), &running_scaled(2), None).expect("plan");
        assert_eq!(lines(&plan), ["restart r-web.service", "start r-db@3.service", "update r.target"]);
    }

    #[test]
    fn dependencies_are_compared_in_the_unit_section_only() {
        let unit = |extra: &str| format!("[Unit]\nRequires=a.service\n\n[Service]\nExecStart=/bin/x\n{extra}");
        assert!(only_dependencies_differ(&unit(""), &unit("").replace("a.service", "b.service")));
        // `After=` in [Service] is no dependency (systemd would ignore it; the text still changed).
        assert!(!only_dependencies_differ(&unit(""), &unit("After=b.service\n")));
        assert!(!only_dependencies_differ(&unit(""), &unit("").replace("/bin/x", "/bin/y")));
        assert!(!only_dependencies_differ(&unit(""), "not a unit"));
    }

    #[test]
    fn a_stopped_instance_beyond_replicas_is_just_removed() {
        let mut states = running_scaled(3);
        states.get_mut("r-db@3.service").expect("db@3").active_state = "inactive".into();
        let plan = plan(&scaled(3, "/bin/web"), &scaled(2, "/bin/web"), &states, None).expect("plan");
        assert_eq!(lines(&plan), ["remove r-db@3.service", "update r-web.service", "update r.target"]);
    }

    #[test]
    fn replicas_scale_by_instance() {
        let cur = set(vec![target("r", "r-w@1.service r-w@2.service"), service("r", "r-w@.service", "w", "/bin/w")]);
        let new = set(vec![target("r", "r-w@1.service"), service("r", "r-w@.service", "w", "/bin/w")]);
        let states = running(&["r.target", "r-w@1.service", "r-w@2.service"]);
        let plan = plan(&cur, &new, &states, None).expect("plan");
        assert_eq!(lines(&plan), ["stop r-w@2.service", "update r.target"]);
        assert_eq!(plan.steps[0].verb, Verb::StopAfterReload);
        // The service removed with its template is stopped before the reload, while its file exists.
        let gone = set(vec![target("r", "")]);
        let removed = super::plan(&cur, &gone, &states, None).expect("plan");
        assert_eq!(removed.steps[0].verb, Verb::Stop);
    }

    #[test]
    fn selection_limits_and_refuses_to_lose_other_changes() {
        let mut both = three("/bin/c");
        both.push(target("o", "o-x.service"));
        both.push(service("o", "o-x.service", "x", "/bin/x"));
        let mut states = running(ALL);
        states.extend(running(&["o.target", "o-x.service"]));
        let only_s = BTreeSet::from(["s".to_string()]);

        // o changed, s did not: no reload, nothing to do for s, no conflict.
        let mut o_changed = three("/bin/c");
        o_changed.push(target("o", "o-x.service"));
        o_changed.push(service("o", "o-x.service", "x", "/bin/x2"));
        let plan1 = plan(&set(both.clone()), &set(o_changed.clone()), &states, Some(&only_s)).expect("plan");
        assert!(plan1.is_empty());

        // Both changed: the reload would load o's change with nobody restarting it.
        o_changed[3] = service("s", "s-c.service", "c", "/bin/c2");
        let err = plan(&set(both.clone()), &set(o_changed), &states, Some(&only_s)).expect_err("conflict");
        assert_eq!(err, ["stack o: o-x.service changed"]);

        // o deleted while s changes: refused too.
        let mut o_gone = three("/bin/c2");
        o_gone.truncate(4);
        let err = plan(&set(both), &set(o_gone), &states, Some(&only_s)).expect_err("conflict");
        assert!(err[0].contains("deleted"), "{err:?}");
    }

    /// Units of stacks and services that are not installed yet are started whatever their state,
    /// so their state is not read (a read makes systemd search the disk for each new name).
    #[test]
    fn only_installed_units_are_queried() {
        let mut both = three("/bin/c");
        both.push(target("o", "o-x.service"));
        both.push(service("o", "o-x.service", "x", "/bin/x"));
        let current = set(three("/bin/c"));
        let names = units_to_query(&current, None);
        assert_eq!(names, ["s-a.service", "s-b.service", "s-c.service", "s.target"]);
        // Planning with only those states still starts the new stack.
        let states = running(ALL);
        let plan = plan(&current, &set(both), &states, None).expect("plan");
        assert_eq!(lines(&plan), ["start o-x.service", "start o.target"]);
        let only_o = BTreeSet::from(["o".to_string()]);
        assert!(units_to_query(&current, Some(&only_o)).is_empty());
    }

    #[test]
    fn never_started_service_is_started() {
        let mut states = running(ALL);
        let b = states.get_mut("s-b.service").expect("b");
        b.active_state = "inactive".into();
        b.inactive_exit_usec = 0;
        let plan = plan(&set(three("/bin/c")), &set(three("/bin/c")), &states, None).expect("plan");
        assert_eq!(lines(&plan), ["start s-b.service"]);
    }
}
