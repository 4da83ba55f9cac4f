//! `kapell apply`: make systemd run what the stack files say (see docs/architecture.md).
//!
//! kapell's units reach systemd only through its generator, so `apply` does not write unit
//! files: it compares the unit set systemd runs now (the kapell units the generator wrote into
//! [`GENERATOR_DIR`] at the last reload) with the set the stack files render to now, and then
//! 1. stops the units that go away, while their files still exist (if one does not stop, it
//!    stops there: nothing is reloaded, so the unit keeps its file for the next try);
//! 2. `daemon-reload`s (systemd reruns the generator, which writes the new set), and checks that
//!    the generator directory now holds exactly the planned units;
//! 3. restarts the units whose text changed, starts new units and stacks that are not running.
//!
//! The rules are in [`plan`]; everything is validated first and nothing is done if any stack
//! has an error. Only units of the two unit sets are ever named, i.e. units carrying kapell's
//! `X-Kapell-Stack=` marker; units the fleet installed (`kapell receive`) are the fleet's and
//! are left out.
//!
//! What runs is taken from [`applied`]'s record of the last apply where there is one: systemd
//! reruns the generator at every reload, so the generator directory may already hold the new
//! units while the old processes still run.
//!
//! **Deleted stacks.** `kapell apply` without arguments stops the units of a stack whose file was
//! deleted from `/etc/kapell`: the reload removes their unit files, and a running unit without a
//! file is one nobody can manage any more. `kapell apply NAME` does the same for one deleted
//! stack.
//!
//! **STACK arguments** limit the plan to those stacks. The reload still loads every stack file
//! (systemd has one unit set), so a limited apply is refused when another stack has changes the
//! reload would load without anybody acting on them (a service removed or changed); new
//! services elsewhere are fine, a later apply starts what never ran.

pub mod applied;
pub mod execute;
pub mod plan;

use crate::config::DEFAULT_CONFIG_DIR;
use crate::diagnostics::did_you_mean;
use crate::host_units::{self, StackClaims};
use crate::names::{GENERATOR_DIR, GENERATOR_NAME, GENERATOR_SEARCH_PATH};
use crate::render::RenderOptions;
use crate::systemd::Systemd;
use crate::unitset::UnitSet;
use crate::validate::Checked;
use anyhow::{Result, bail};
use plan::{Plan, Verb};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What `kapell apply` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Limit the plan to these stacks (empty: every stack).
    pub stacks: Vec<String>,
    /// Print the plan, change nothing.
    pub dry_run: bool,
}

/// What an apply did, and whether the fleet's set must be run after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// Local units this apply stops or removes have namesakes in the set a fleet controller
    /// installed, which take their place at the reload (a local stack that kept the fleet's
    /// stack of its name out was removed): the fleet's set must be run again once this apply
    /// has reloaded, or they would not run before the next push.
    pub fleet_set_waits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything already matches.
    NothingToDo,
    /// `--dry-run`: the plan was printed.
    Planned,
    /// The plan was carried out; this many units failed.
    Applied { failures: usize },
    /// The request cannot be carried out as asked (one sentence why); nothing was changed.
    Refused(String),
}

/// The unit set the (valid) stacks of `config_dir` that this host runs render to now, as the
/// generator renders it (see [`crate::host_units`]).
pub fn desired(config_dir: &Path, checked: &Checked) -> UnitSet {
    UnitSet::from_rendered(&host_units::render_local(config_dir, checked, |_| true, &RenderOptions::default()))
}

/// The local stacks' units systemd loaded at the last reload: kapell units of the generator
/// directory, except those the fleet installed (which a local stack does not shadow).
pub fn installed(desired: &UnitSet, claims: &StackClaims) -> Result<UnitSet> {
    installed_and_fleet(desired, claims).map(|(installed, _)| installed)
}

/// [`installed`], and the names of the received set's units that run here (none without a
/// received set).
fn installed_and_fleet(desired: &UnitSet, claims: &StackClaims) -> Result<(UnitSet, BTreeSet<String>)> {
    let local: BTreeSet<&str> = desired.stacks.values().flat_map(|s| s.files.keys()).map(String::as_str).collect();
    let fleet = host_units::fleet_unit_names(&host_units::received_dir(), |n| local.contains(n), claims)?;
    let generator_dir = Path::new(GENERATOR_DIR);
    let written = host_units::fleet_units_written(generator_dir)?;
    let loaded = host_units::fleet_units_loaded(written, fleet.clone());
    Ok((UnitSet::read_dir(generator_dir, &loaded)?, fleet))
}

/// The installed `kapell-generator`, if systemd can find one.
pub fn find_generator() -> Option<PathBuf> {
    GENERATOR_SEARCH_PATH.iter().map(|d| Path::new(d).join(GENERATOR_NAME)).find(|p| p.exists())
}

/// Plans and (unless `--dry-run`) carries out an apply of `checked`, which must have no errors.
/// Progress and results go to `out`, one line per unit action.
pub async fn apply(
    config_dir: &Path,
    checked: &Checked,
    options: &Options,
    out: &mut dyn FnMut(String),
) -> Result<Report> {
    anyhow::ensure!(checked.is_ok(), "kapell apply needs every stack to be valid");
    let systemd = Systemd::system().await?;
    if let Some(refusal) = check_config_dir(&systemd, config_dir).await? {
        return Ok(Report { outcome: Outcome::Refused(refusal), fleet_set_waits: false });
    }
    // One writer per host: the plan is only true while nobody else (`kapell receive`, another
    // apply) changes units. A dry run changes nothing and needs no lock.
    let _lock = match options.dry_run {
        true => None,
        false => Some(crate::lock::HostLock::acquire("kapell apply", |holder| {
            out(format!("waiting for {holder} to finish"))
        })?),
    };
    let desired = desired(config_dir, checked);
    let claims = StackClaims::of(config_dir, checked);
    let refused = |why| Ok(Report { outcome: Outcome::Refused(why), fleet_set_waits: false });
    // What runs: what the last apply started, which a reload by anyone else does not change.
    let (on_disk, fleet) = installed_and_fleet(&desired, &claims)?;
    let current = applied::current(on_disk);
    let selection = match select(&options.stacks, &current, &desired, config_dir) {
        Ok(selection) => selection,
        Err(refusal) => return refused(refusal),
    };
    let states = plan::read_states(&systemd, &current, selection.as_ref()).await?;
    let plan = match plan::plan(&current, &desired, &states, selection.as_ref()) {
        Ok(plan) => plan,
        Err(conflicts) => {
            return refused(format!(
                "the reload would also load changes of stacks not named, and nothing would act on them: {}; \
                 apply those stacks too (or every stack: `kapell apply`), or undo their changes",
                conflicts.join("; ")
            ));
        }
    };
    for note in &plan.notes {
        out(format!("note: {note}"));
    }
    // A local unit that goes, where the received set has one of its name that runs here (a
    // local stack that kept the fleet's stack of its name out was removed or renamed): the
    // fleet's takes its place at the reload, and nothing would start it before the next push.
    let fleet_set_waits = plan.steps(&[Verb::Stop, Verb::Remove]).any(|s| fleet.contains(&s.unit));
    let report = |outcome| Ok(Report { outcome, fleet_set_waits });
    if plan.is_empty() {
        let (s, u) = (plan.stacks, plan.units);
        out(format!(
            "nothing to do: {s} stack{} and {u} unit{} up to date",
            if s == 1 { "" } else { "s" },
            if u == 1 { "" } else { "s" }
        ));
        return report(Outcome::NothingToDo);
    }
    let generator = find_generator();
    if options.dry_run {
        print_plan(&plan, out);
        if plan.reload && generator.is_none() {
            out(format!("warning: {}", no_generator()));
        }
        return report(Outcome::Planned);
    }
    if plan.reload && generator.is_none() {
        bail!("{}; nothing was changed", no_generator());
    }
    let failures = execute::execute(&systemd, &plan, || verify(&desired, &claims, generator.as_deref()), out).await?;
    applied::save(&current, &desired, selection.as_ref())?;
    report(Outcome::Applied { failures })
}

/// The generator reads `/etc/kapell` (or `KAPELL_CONFIG_DIR` in systemd's environment); applying
/// another directory would stop the stacks it does not contain and start nothing.
async fn check_config_dir(systemd: &Systemd, config_dir: &Path) -> Result<Option<String>> {
    let environment = systemd.environment().await?;
    let read = environment
        .iter()
        .find_map(|kv| kv.strip_prefix("KAPELL_CONFIG_DIR="))
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    Ok((!same(config_dir, &read)).then(|| {
        format!(
            "systemd's generator reads the stacks in {}, not {}: kapell apply can only apply that directory \
             (`kapell generate --out DIR` renders another one)",
            read.display(),
            config_dir.display()
        )
    }))
}

/// The stacks named on the command line, each of which must exist in the stack files or among
/// the installed units (a deleted stack). `None`: every stack.
fn select(
    names: &[String],
    current: &UnitSet,
    desired: &UnitSet,
    config_dir: &Path,
) -> Result<Option<BTreeSet<String>>, String> {
    if names.is_empty() {
        return Ok(None);
    }
    let known: BTreeSet<&str> = current.stacks.keys().chain(desired.stacks.keys()).map(String::as_str).collect();
    for name in names {
        if !known.contains(name.as_str()) {
            let hint =
                did_you_mean(name, known.iter().copied()).map(|n| format!(" (did you mean {n}?)")).unwrap_or_default();
            return Err(format!(
                "there is no stack {name}: no {} and no units of it installed{hint}",
                config_dir.join(format!("{name}.toml")).display()
            ));
        }
    }
    Ok(Some(names.iter().cloned().collect()))
}

fn no_generator() -> String {
    format!(
        "{GENERATOR_NAME} is not installed (looked in {}), so systemd would never see kapell's units; install \
         kapell's package, or copy the {GENERATOR_NAME} executable built with kapell into \
         /usr/local/lib/systemd/system-generators",
        GENERATOR_SEARCH_PATH.join(", ")
    )
}

/// `--dry-run` output: the steps in the order they would run, with the reload in its place.
fn print_plan(plan: &Plan, out: &mut dyn FnMut(String)) {
    for step in plan.steps(&[Verb::Stop, Verb::Remove]) {
        out(execute::line(step, step.verb.words().0, &step.why.to_string()));
    }
    if plan.reload {
        out(format!("{:<9} {:<32} (the generator writes the new units)", "reload", "systemd"));
    }
    for step in plan.steps(&[Verb::StopAfterReload, Verb::Restart, Verb::Start, Verb::Update]) {
        out(execute::line(step, step.verb.words().0, &step.why.to_string()));
    }
    out("dry run: nothing was changed".to_string());
}

/// After the reload: the generator directory must hold exactly the rendered units.
fn verify(desired: &UnitSet, claims: &StackClaims, generator: Option<&Path>) -> Result<()> {
    let now = installed(desired, claims)?;
    let mut missing = Vec::new();
    let mut different = Vec::new();
    let mut stale = Vec::new();
    for stack in desired.stacks.values() {
        let there = now.stacks.get(&stack.name);
        for (file, text) in &stack.files {
            match there.and_then(|s| s.files.get(file)) {
                None => missing.push(file.as_str()),
                Some(t) if t != text => different.push(file.as_str()),
                Some(_) => {}
            }
        }
    }
    for stack in now.stacks.values() {
        let wanted = desired.stacks.get(&stack.name);
        stale.extend(
            stack.files.keys().filter(|f| wanted.is_none_or(|w| !w.files.contains_key(*f))).map(String::as_str),
        );
    }
    if missing.is_empty() && different.is_empty() && stale.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    for (what, list) in [("missing", &missing), ("different", &different), ("left over", &stale)] {
        if !list.is_empty() {
            problems.push(format!("{what}: {}", list.join(", ")));
        }
    }
    let generator = generator.map_or_else(|| GENERATOR_NAME.to_string(), |g| g.display().to_string());
    let this = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "this kapell".into());
    bail!(
        "after the daemon-reload, {GENERATOR_DIR} does not hold the units kapell rendered ({}). Did {generator} \
         run, and is it the same kapell as {this}? Its messages: `journalctl -b -k --grep {GENERATOR_NAME}`. \
         Units were stopped as planned; nothing was started or restarted",
        problems.join("; ")
    )
}
