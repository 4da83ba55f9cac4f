//! What this host runs: the units of its own stacks (the stacks it runs itself, see
//! [`crate::host::runs_here`]) and the unit set a fleet controller installed
//! ([`crate::received_sets`]), minus the fleet's units that a local stack also produces.
//!
//! Local units win over fleet units: the operator on the host has the last word, and each
//! conflict is reported. The generator, `kapell generate`, `kapell apply` and `kapell receive`
//! all ask this module, so they cannot disagree about it (see docs/architecture.md).

use crate::model::Stack;
use crate::render::{self, OutputFile, RenderOptions};
use crate::unitset;
use crate::validate::{Checked, UnitSearchPath};
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The local units: the valid stacks of `checked` that this host runs and `wanted` selects,
/// rendered as the generator renders them (dependencies resolved against every stack).
pub fn render_local(
    config_dir: &Path,
    checked: &Checked,
    wanted: impl Fn(&Stack) -> bool,
    options: &RenderOptions,
) -> Vec<OutputFile> {
    render_local_each(config_dir, checked, wanted, options, |file| file)
}

/// [`render_local`], handing each file to `consume` on the thread that rendered it (see
/// [`render::render_each`]).
pub fn render_local_each<R: Send>(
    config_dir: &Path,
    checked: &Checked,
    wanted: impl Fn(&Stack) -> bool,
    options: &RenderOptions,
    consume: impl Fn(OutputFile) -> R + Sync,
) -> Vec<R> {
    let here = crate::host::runs_here(config_dir);
    render::render_each(&checked.stacks, |s| here(s) && wanted(s), options, consume)
}

/// Loads the stacks of `config_dir` and renders the local units, for a command that needs
/// nothing else of them (`kapell receive`); also the stack names they claim.
pub fn load_local(config_dir: &Path) -> Result<(Vec<OutputFile>, StackClaims)> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    let files = render_local(config_dir, &checked, |_| true, &RenderOptions::default());
    Ok((files, StackClaims::of(config_dir, &checked)))
}

/// The directory of the received set the generator emits: `current`, or `confirmed` after a
/// reboot inside a confirm window (see [`crate::received_sets::emitted_dir`]).
pub fn received_dir() -> PathBuf {
    crate::received_sets::emitted_dir(&crate::received_sets::received_dir())
}

/// The stack names this host's own configuration claims. A received unit of a stack with one of
/// these names gives way, whatever its unit's name: a fleet stack is not mixed into a local stack
/// of the same name, and a local stack file with an error still says what the operator means to
/// run here, so the fleet's stack of that name does not take its place while it is being mended.
#[derive(Debug, Default)]
pub struct StackClaims {
    /// The valid stacks this host runs.
    pub running: BTreeSet<String>,
    /// The stacks whose files have errors (and render nothing). Not on a fleet controller: there
    /// a stack may be the fleet's, which the controller refuses to push while it has errors, so
    /// the set it received keeps the last good version.
    pub failed: BTreeSet<String>,
}

impl StackClaims {
    /// The claims of the stacks of `config_dir`, as `checked` found them.
    pub fn of(config_dir: &Path, checked: &Checked) -> StackClaims {
        let here = crate::host::runs_here(config_dir);
        let controller = crate::host::is_controller(config_dir);
        StackClaims {
            running: checked.stacks.iter().filter(|s| here(s)).map(|s| s.name.to_string()).collect(),
            failed: if controller { BTreeSet::new() } else { checked.failed.clone() },
        }
    }

    /// Why a received unit of `stack` gives way, if it does.
    fn why(&self, stack: &str) -> Option<Shadow> {
        if self.running.contains(stack) {
            Some(Shadow::SameStack(stack.to_string()))
        } else if self.failed.contains(stack) {
            Some(Shadow::BrokenStack(stack.to_string()))
        } else {
            None
        }
    }
}

/// Why a received unit does not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shadow {
    /// A local stack produces a unit of the same name.
    SameUnit,
    /// It belongs to a stack of the same name as a local one.
    SameStack(String),
    /// It belongs to a stack of the same name as a local one that has errors.
    BrokenStack(String),
}

impl std::fmt::Display for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shadow::SameUnit => f.write_str("a local stack produces a unit of the same name"),
            Shadow::SameStack(stack) => write!(f, "this host runs its own stack {stack}"),
            Shadow::BrokenStack(stack) => {
                write!(f, "this host's own stack {stack} has errors (mend it, or remove its file to run the fleet's)")
            }
        }
    }
}

/// The part of a received set that runs here.
#[derive(Debug, Default)]
pub struct FleetShare {
    /// The received files no local file shadows.
    pub files: Vec<OutputFile>,
    /// Received units left out, and why (in the set's order).
    pub shadowed: Vec<(String, Shadow)>,
}

impl FleetShare {
    /// The names of the units left out.
    pub fn shadowed_names(&self) -> Vec<String> {
        self.shadowed.iter().map(|(name, _)| name.clone()).collect()
    }
}

/// Splits `received` into what runs here and what `local` and `claims` shadow.
pub fn fleet_share(local: &[OutputFile], claims: &StackClaims, received: Vec<OutputFile>) -> FleetShare {
    let local: HashSet<&str> = local.iter().map(OutputFile::path).collect();
    fleet_share_by(|path| local.contains(path), claims, received)
}

/// [`fleet_share`], with the local units given as a test of a path.
///
/// A link goes with the units it joins: it is left out when a local link has its path (the same
/// link from both sides is one link), or when the unit it points to or the unit whose `.wants/`
/// (`.requires/`) directory holds it is left out.
pub fn fleet_share_by(is_local: impl Fn(&str) -> bool, claims: &StackClaims, received: Vec<OutputFile>) -> FleetShare {
    let mut share = FleetShare::default();
    let mut links = Vec::new();
    for file in received {
        match &file {
            OutputFile::Unit { name, text } => {
                let why = if is_local(name) {
                    Some(Shadow::SameUnit)
                } else {
                    crate::unitset::markers::stack_of_text(text).and_then(|stack| claims.why(&stack))
                };
                match why {
                    Some(why) => share.shadowed.push((name.clone(), why)),
                    None => share.files.push(file),
                }
            }
            OutputFile::Link { .. } => links.push(file),
        }
    }
    let left_out: HashSet<&str> = share.shadowed.iter().map(|(name, _)| name.as_str()).collect();
    let joins_left_out = |path: &str, target: &str| {
        let owner = path.split_once('/').map(|(dir, _)| dir.rsplit_once('.').map_or(dir, |(unit, _)| unit));
        let pointee = Path::new(target).file_name().and_then(|n| n.to_str());
        owner.is_some_and(|o| left_out.contains(o)) || pointee.is_some_and(|t| left_out.contains(t))
    };
    let kept: Vec<OutputFile> = links
        .into_iter()
        .filter(|link| match link {
            OutputFile::Link { path, target } => !is_local(path) && !joins_left_out(path, target),
            OutputFile::Unit { .. } => true,
        })
        .collect();
    share.files.extend(kept);
    share
}

/// The files of the received set `current` names (none if nothing was received).
pub fn current_received() -> Result<Vec<OutputFile>> {
    unitset::read_files(&crate::received_sets::received_dir().join(crate::received_sets::CURRENT))
}

/// Everything this host runs: `local`, then the fleet's share of the set in `fleet_dir` (see
/// [`received_share`]).
pub fn with_received(
    mut local: Vec<OutputFile>,
    claims: &StackClaims,
    fleet_dir: &Path,
) -> (Vec<OutputFile>, Vec<String>) {
    let paths: HashSet<&str> = local.iter().map(OutputFile::path).collect();
    let (share, messages) = received_share(fleet_dir, |path| paths.contains(path), claims);
    local.extend(share);
    (local, messages)
}

/// The files of the received set in `fleet_dir` that run here: those neither a local file
/// (`is_local`, by path) nor a local stack's name (`claims`) shadows. Also one message per thing
/// left out (a received set that cannot be read, a fleet unit that gives way); neither stops the
/// local units from being written.
pub fn received_share(
    fleet_dir: &Path,
    is_local: impl Fn(&str) -> bool,
    claims: &StackClaims,
) -> (Vec<OutputFile>, Vec<String>) {
    let received = match unitset::read_files(fleet_dir) {
        Ok(files) => files,
        Err(e) => return (Vec::new(), vec![format!("fleet units ignored: {e:#}")]),
    };
    let mut share = fleet_share_by(is_local, claims, received);
    share.shadowed.sort_by(|a, b| a.0.cmp(&b.0));
    share.shadowed.dedup_by(|a, b| a.0 == b.0);
    let messages = share.shadowed.iter().map(|(name, why)| format!("fleet unit {name} ignored: {why}")).collect();
    (share.files, messages)
}

/// The names of the received set's units in `fleet_dir` that run here (see [`fleet_share_by`]):
/// the units `kapell apply` leaves to the fleet. A set that cannot be read is an error: read as
/// none, every fleet unit would pass for a local one whose stack file is gone.
pub fn fleet_unit_names(
    fleet_dir: &Path,
    is_local: impl Fn(&str) -> bool,
    claims: &StackClaims,
) -> Result<BTreeSet<String>> {
    let received = unitset::read_files(fleet_dir).context("cannot tell the fleet's units from the local ones")?;
    Ok(fleet_share_by(is_local, claims, received)
        .files
        .into_iter()
        .filter_map(|file| match file {
            OutputFile::Unit { name, .. } => Some(name),
            OutputFile::Link { .. } => None,
        })
        .collect())
}

/// The units the generator wrote from the received set at its last run into `generator_dir`
/// (its [`crate::names::FLEET_UNITS_FILE`]): `None` if it wrote no list (a generator older than
/// the list; a current one writes it at every run, empty without a received set).
pub fn fleet_units_written(generator_dir: &Path) -> Result<Option<BTreeSet<String>>> {
    let path = generator_dir.join(crate::names::FLEET_UNITS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The units of the generator directory that are the fleet's, not a local stack's: the received
/// set's units that run here now (`fleet_now`, by name; a local stack renders none of them),
/// less those a local stack wrote at the last reload, as the generator's list of what it wrote
/// from the received set says (`written`; without one, a generator older than the list, the
/// names alone decide).
///
/// So a local stack that shadowed the fleet's stack of its name when systemd last loaded its
/// units (at boot, say) stays local when its file goes, and is stopped, though the received set
/// has units of the same names. A fleet unit the received set no longer has (an activation that
/// stopped before its reload), or whose name or stack a local stack claims now, is not the
/// fleet's to keep: it is stopped before the reload takes its file away, as before there was a
/// list (and [`crate::apply::plan`] stops no target it does not see: the fleet's stack stays).
pub fn fleet_units_loaded(written: Option<BTreeSet<String>>, fleet_now: BTreeSet<String>) -> BTreeSet<String> {
    match written {
        Some(written) => fleet_now.into_iter().filter(|name| written.contains(name)).collect(),
        None => fleet_now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> OutputFile {
        OutputFile::unit(name, format!("[Unit]\nDescription={name}\n"))
    }

    fn unit_of(stack: &str, name: &str) -> OutputFile {
        OutputFile::unit(name, format!("[Unit]\nX-Kapell-Stack={stack}\n"))
    }

    fn link(path: &str, target: &str) -> OutputFile {
        OutputFile::link(path, target)
    }

    fn paths(share: &FleetShare) -> Vec<&str> {
        share.files.iter().map(OutputFile::path).collect()
    }

    /// The generator's list decides which of the received set's units that run here now were
    /// loaded from the fleet: a name a local stack wrote at the last reload is local, though the
    /// received set has it. Without a list, the names alone decide.
    #[test]
    fn the_generators_list_says_which_loaded_units_are_the_fleets() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<String>>();
        let fleet_now = set(&["good-sleep.service", "good.target", "shop.target"]);
        // At boot a local `good` shadowed the fleet's; its file is gone now.
        let written = Some(set(&["shop.target", "gone.target"]));
        assert_eq!(fleet_units_loaded(written, fleet_now.clone()), set(&["shop.target"]));
        // The fleet's `good` ran.
        let written = Some(set(&["good-sleep.service", "good.target", "shop.target"]));
        assert_eq!(fleet_units_loaded(written, fleet_now.clone()), fleet_now);
        // No list: what the received set says.
        assert_eq!(fleet_units_loaded(None, fleet_now.clone()), fleet_now);
    }

    #[test]
    fn local_units_shadow_fleet_units_of_the_same_name() {
        let local = vec![unit("web.target"), link("multi-user.target.wants/web.target", "../web.target")];
        let received = vec![
            unit("web.target"),
            link("multi-user.target.wants/web.target", "../web.target"),
            unit("db.target"),
            link("multi-user.target.wants/db.target", "../db.target"),
        ];
        let share = fleet_share(&local, &StackClaims::default(), received);
        assert_eq!(paths(&share), ["db.target", "multi-user.target.wants/db.target"]);
        assert_eq!(share.shadowed, [("web.target".to_string(), Shadow::SameUnit)]);
    }

    /// The fleet's stack `web` is not mixed into the host's own `web`: its unit the local stack
    /// lacks (`web-extra`) gives way too, with the links that join it.
    #[test]
    fn a_received_stack_with_a_local_stacks_name_gives_way_whole() {
        let local = vec![unit_of("web", "web.target"), unit_of("web", "web-app.service")];
        let claims = StackClaims { running: ["web".to_string()].into(), ..StackClaims::default() };
        let received = vec![
            unit_of("web", "web.target"),
            unit_of("web", "web-app.service"),
            unit_of("web", "web-extra.service"),
            link("web.target.wants/web-extra.service", "../web-extra.service"),
            unit_of("db", "db.target"),
            link("multi-user.target.wants/db.target", "../db.target"),
        ];
        let share = fleet_share(&local, &claims, received);
        assert_eq!(paths(&share), ["db.target", "multi-user.target.wants/db.target"]);
        let extra = share.shadowed.iter().find(|(name, _)| name == "web-extra.service").expect("web-extra");
        assert_eq!(extra.1, Shadow::SameStack("web".into()));
        assert_eq!(share.shadowed_names(), ["web.target", "web-app.service", "web-extra.service"]);
    }

    /// A local stack whose file has an error renders nothing, and still holds the fleet's stack of
    /// its name out, links and all; other received stacks run.
    #[test]
    fn a_local_stack_with_errors_holds_the_fleets_stack_of_its_name_out() {
        let claims = StackClaims { failed: ["web".to_string()].into(), ..StackClaims::default() };
        let received = vec![
            unit_of("web", "web.target"),
            link("multi-user.target.wants/web.target", "../web.target"),
            unit_of("web", "web-app.service"),
            link("web.target.requires/web-app.service", "../web-app.service"),
            unit_of("db", "db.target"),
        ];
        let share = fleet_share(&[], &claims, received);
        assert_eq!(paths(&share), ["db.target"]);
        assert!(share.shadowed.iter().all(|(_, why)| *why == Shadow::BrokenStack("web".into())), "{share:?}");
        assert!(Shadow::BrokenStack("web".into()).to_string().contains("stack web has errors"));
    }

    /// On a fleet controller a stack with errors may be one of the fleet's: the set the controller
    /// pushed to itself keeps its last good version.
    #[test]
    fn a_controllers_stacks_with_errors_claim_nothing() {
        let config = tempfile::tempdir().expect("tempdir");
        std::fs::write(config.path().join("web.toml"), "[services.app\n").expect("stack");
        let checked = crate::host::load(config.path(), &[], &UnitSearchPath::new(Vec::new())).expect("load");
        assert!(checked.failed.contains("web"));
        assert_eq!(StackClaims::of(config.path(), &checked).failed, checked.failed);
        std::fs::write(config.path().join(crate::config::FLEET_FILE), "").expect("fleet.toml");
        assert!(StackClaims::of(config.path(), &checked).failed.is_empty());
    }

    /// A received set that cannot be read is no empty one: read as none, every fleet unit would
    /// pass for a local unit whose stack file is gone, and `kapell apply` would stop it.
    #[test]
    fn a_received_set_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let claims = StackClaims::default();
        assert!(fleet_unit_names(&dir.path().join("none"), |_| false, &claims).expect("no set").is_empty());
        std::fs::write(dir.path().join("f.target"), "[Unit]\nX-Kapell-Stack=f\n").expect("write");
        let names = fleet_unit_names(dir.path(), |_| false, &claims).expect("a set");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["f.target"]);
        std::fs::write(dir.path().join("f-x.service"), b"[Unit]\n\xff\n").expect("write");
        let e = fleet_unit_names(dir.path(), |_| false, &claims).expect_err("not UTF-8");
        assert!(format!("{e:#}").contains("cannot tell the fleet's units from the local ones"), "{e:#}");
    }
}
