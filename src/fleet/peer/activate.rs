//! Makes systemd run a received set: `kapell apply`'s plan and execution against what the
//! generator wrote at the last reload, under the same host lock, plus [`super::drift`] repair.
//! Units a local stack also produces are left to the local stack ([`crate::host_units`]).

use super::drift;
use crate::apply::{self, applied, plan};
use crate::blocking::with_systemd;
use crate::fleet::protocol::{HostSet, Reply};
use crate::host_units;
use crate::names::GENERATOR_DIR;
use crate::systemd::Systemd;
use crate::unitset::UnitSet;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::Path;

/// Makes systemd run `set` (minus what local stacks shadow, listed in `reply.conflicts`).
pub fn run_set(config_dir: &Path, set: &HostSet, reply: &mut Reply) -> Result<()> {
    let (local_files, claims) = host_units::load_local(config_dir)?;
    let share = host_units::fleet_share(&local_files, &claims, set.to_rendered());
    let local: BTreeSet<String> = local_files.iter().map(|f| f.path().to_string()).collect();
    reply.conflicts = share.shadowed_names();
    let desired = UnitSet::from_rendered(&share.files);
    let mut notes = Vec::new();
    let mut responder_changed = false;
    let mut actions = Vec::new();
    let unmasked = drift::unmask(&desired, &mut actions)?;
    with_systemd(async |systemd| {
        // The responder first: containers started below get it as their DNS server only if it
        // runs. Its enablement's links are seen at the plan's reload (one reload, not two).
        let mut enabled = false;
        if set.catalog.is_some() {
            match start_responder(systemd, &mut notes).await {
                Ok(outcome) => (responder_changed, enabled) = (outcome.changed, outcome.enabled),
                Err(e) => notes.push(format!("cannot start {DNS_UNIT}: {e:#}")),
            }
        }
        let mut running =
            without_broken_local_stacks(UnitSet::read_dir(Path::new(GENERATOR_DIR), &local)?, &claims.failed)?;
        // A local stack that `kapell apply` ran, whose file went since, runs its own processes
        // under the names of the fleet's stack that takes its place, whatever a reload wrote
        // since: planned as what runs, its units are restarted as the fleet's.
        let namesakes = applied::local_namesakes(&desired, &local);
        let replaced: BTreeSet<String> = namesakes.stacks.keys().cloned().collect();
        running.stacks.extend(namesakes.stacks);
        let states = plan::read_states(systemd, &running, None).await?;
        let mut plan = plan::plan(&running, &desired, &states, None)
            .map_err(|c| anyhow::anyhow!("unexpected conflicts: {}", c.join("; ")))?;
        // A reload also when the texts are the same: the generator's list of the fleet's units
        // then names them, which `kapell apply` reads.
        plan.reload |= unmasked || enabled || !replaced.is_empty();
        drift::restore_stopped(&mut plan, &desired, &states);
        if plan.is_empty() {
            return Ok(());
        }
        reply.changed = true;
        let verify = || verify_generated(&desired, &local);
        reply.failures = apply::execute::execute(systemd, &plan, verify, &mut |line| actions.push(line)).await?;
        // Those stacks are the fleet's now: the next `kapell apply` leaves them alone. The set
        // runs either way: a record that cannot be written is said, and fails no install.
        if let Err(e) = applied::forget(&replaced) {
            notes.push(format!("note: {e:#}"));
        }
        Ok(())
    })?;
    if !actions.is_empty() {
        reply.changed = true;
    }
    reply.actions.extend(actions);
    if responder_changed {
        reply.changed = true;
    }
    // Said once, with the install that brought the catalog, not at every no-op pass.
    if reply.changed || responder_changed {
        reply.actions.extend(notes);
    }
    Ok(())
}

/// `running` without the units of local stacks whose files have errors (`broken`) that a local
/// stack wrote (the generator's list of the fleet's units does not name them): such a stack
/// still claims its name, and what it runs waits for its file to be mended, as `kapell apply`
/// waits. The fleet's units of its name stay, and stop: the claim keeps them out. Without the
/// list (a generator older than it) none of them is taken to be the fleet's.
fn without_broken_local_stacks(mut running: UnitSet, broken: &BTreeSet<String>) -> Result<UnitSet> {
    let present: Vec<&String> = broken.iter().filter(|name| running.stacks.contains_key(*name)).collect();
    if present.is_empty() {
        return Ok(running);
    }
    let fleet = host_units::fleet_units_written(Path::new(GENERATOR_DIR))?.unwrap_or_default();
    // Only those stacks are built again, from the files of theirs that the fleet wrote; every
    // other stack stays as it was read.
    let mut texts = Vec::new();
    for name in present {
        if let Some(stack) = running.stacks.remove(name) {
            texts.extend(stack.files.into_iter().filter(|(path, _)| fleet.contains(path)));
        }
    }
    // Sorted by name, as a unit directory is read.
    texts.sort();
    running.stacks.extend(UnitSet::from_texts(texts).stacks);
    Ok(running)
}

/// What [`start_responder`] did.
struct ResponderOutcome {
    /// It enabled or started the responder.
    changed: bool,
    /// It created the responder's `[Install]` links: systemd sees them at the next reload.
    enabled: bool,
}

/// The responder of a set with a catalog: enabled (so it comes back after a reboot, when the
/// catalog is still there) and started, once: a responder that runs was set up by an earlier
/// install, and costs one state read (no D-Bus call that makes systemd look at the disk). A
/// host without the unit (kapell not installed from its package) is told so in the reply; the
/// install itself stands.
async fn start_responder(systemd: &Systemd, actions: &mut Vec<String>) -> Result<ResponderOutcome> {
    let unchanged = ResponderOutcome { changed: false, enabled: false };
    let state = systemd.states(&[DNS_UNIT.to_string()]).await?.into_iter().next().unwrap_or_default();
    if state.load_state != "loaded" {
        actions.push(format!("{DNS_UNIT} is not installed: the names of the fleet's services do not resolve here"));
        return Ok(unchanged);
    }
    if state.is_up() {
        return Ok(unchanged);
    }
    let enabled = systemd.enable_no_reload(DNS_UNIT).await?;
    if enabled {
        actions.push(format!("enabled   {DNS_UNIT}"));
    }
    let mut watcher = systemd.watch_jobs().await?;
    let job = systemd.start(DNS_UNIT).await?;
    let mut outcome = None;
    watcher.wait_all(systemd, std::slice::from_ref(&job), &[], |_, r| outcome = Some(r)).await?;
    match outcome {
        Some(result) if !result.is_success() => actions.push(format!("failed    {DNS_UNIT} ({result})")),
        _ => actions.push(format!("started   {DNS_UNIT}")),
    }
    Ok(ResponderOutcome { changed: true, enabled })
}

/// The discovery responder's unit (units/kapell-dns.service).
const DNS_UNIT: &str = "kapell-dns.service";

/// After the reload: the generator directory holds exactly the set's units (but local ones).
fn verify_generated(desired: &UnitSet, local: &BTreeSet<String>) -> Result<()> {
    let now = UnitSet::read_dir(Path::new(GENERATOR_DIR), local)?;
    let want: BTreeSet<(&String, &String)> = desired.stacks.values().flat_map(|s| s.files.iter()).collect();
    let have: BTreeSet<(&String, &String)> = now.stacks.values().flat_map(|s| s.files.iter()).collect();
    if want == have {
        return Ok(());
    }
    let differ: Vec<&str> = want.symmetric_difference(&have).map(|(n, _)| n.as_str()).collect();
    anyhow::bail!(
        "after the daemon-reload, {GENERATOR_DIR} does not hold the received units ({}): is kapell-generator \
         installed and the same version as this kapell?",
        differ.join(", ")
    )
}
