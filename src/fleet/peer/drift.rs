//! Drift repair: the fleet is declarative, so what was changed by hand on a peer to a unit of
//! the received set is put back on every install (`kapell apply` on a host leaves such units
//! alone). Edited and deleted unit files are rewritten by the generator at the reload.

use crate::apply::plan;
use crate::systemd::UnitInfo;
use crate::unitset::UnitSet;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Removes `/etc/systemd/system/<unit>` and `/run/systemd/system/<unit>` masks (links to
/// `/dev/null`) of the set's units: a mask of a unit kapell owns is drift, not a foreign unit.
/// Returns whether any was removed (systemd must then reload).
pub fn unmask(desired: &UnitSet, actions: &mut Vec<String>) -> Result<bool> {
    let mut any = false;
    for stack in desired.stacks.values() {
        for unit in stack.files.keys() {
            for dir in ["/etc/systemd/system", "/run/systemd/system"] {
                let path = Path::new(dir).join(unit);
                let masked = std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"));
                if masked {
                    std::fs::remove_file(&path).with_context(|| format!("cannot unmask {}", path.display()))?;
                    actions.push(format!("{:<9} {unit:<32} (masked outside kapell: {})", "unmasked", path.display()));
                    any = true;
                }
            }
        }
    }
    Ok(any)
}

/// A unit of the set that is stopped while its stack runs was stopped outside kapell: it is
/// started again, before the updates of the plan.
pub fn restore_stopped(plan: &mut plan::Plan, desired: &UnitSet, states: &HashMap<String, UnitInfo>) {
    let planned: HashSet<String> = plan.steps.iter().map(|s| s.unit.clone()).collect();
    let mut extra = Vec::new();
    for stack in desired.stacks.values() {
        for (_, unit) in stack.running() {
            let down = states.get(unit).is_some_and(|s| s.is_down() && s.active_state != "failed");
            if down && !planned.contains(unit) {
                extra.push(plan::Step {
                    verb: plan::Verb::Start,
                    unit: unit.to_string(),
                    stack: stack.name.clone(),
                    why: plan::Why::StoppedOutside,
                });
            }
        }
    }
    let at = plan.steps.iter().position(|s| s.verb == plan::Verb::Update).unwrap_or(plan.steps.len());
    plan.steps.splice(at..at, extra);
}
