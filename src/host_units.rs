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
/// nothing else of them (`kapell receive`).
pub fn load_local(config_dir: &Path) -> Result<Vec<OutputFile>> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    Ok(render_local(config_dir, &checked, |_| true, &RenderOptions::default()))
}

/// The directory of the received set the generator emits: `current`, or `confirmed` after a
/// reboot inside a confirm window (see [`crate::received_sets::emitted_dir`]).
pub fn received_dir() -> PathBuf {
    crate::received_sets::emitted_dir(&crate::received_sets::received_dir())
}

/// The part of a received set that runs here.
#[derive(Debug, Default)]
pub struct FleetShare {
    /// The received files no local file shadows.
    pub files: Vec<OutputFile>,
    /// Received units left out because a local stack produces a unit of the same name.
    pub shadowed: Vec<String>,
}

/// Splits `received` into what runs here and what `local` shadows.
pub fn fleet_share(local: &[OutputFile], received: Vec<OutputFile>) -> FleetShare {
    let local: HashSet<&str> = local.iter().map(OutputFile::path).collect();
    fleet_share_by(|path| local.contains(path), received)
}

/// [`fleet_share`], with the local units given as a test of a path.
pub fn fleet_share_by(is_local: impl Fn(&str) -> bool, received: Vec<OutputFile>) -> FleetShare {
    let mut share = FleetShare::default();
    for file in received {
        match &file {
            OutputFile::Unit { name, .. } if is_local(name) => share.shadowed.push(name.clone()),
            // The same link from both sides is one link.
            OutputFile::Link { path, .. } if is_local(path) => {}
            _ => share.files.push(file),
        }
    }
    share
}

/// The files of the received set `current` names (none if nothing was received).
pub fn current_received() -> Result<Vec<OutputFile>> {
    unitset::read_files(&crate::received_sets::received_dir().join(crate::received_sets::CURRENT))
}

/// Everything this host runs: `local`, then the fleet's share of the set in `fleet_dir` (see
/// [`received_share`]).
pub fn with_received(mut local: Vec<OutputFile>, fleet_dir: &Path) -> (Vec<OutputFile>, Vec<String>) {
    let paths: HashSet<&str> = local.iter().map(OutputFile::path).collect();
    let (share, messages) = received_share(fleet_dir, |path| paths.contains(path));
    local.extend(share);
    (local, messages)
}

/// The files of the received set in `fleet_dir` that run here: those no local file (`is_local`,
/// by path) shadows. Also one message per thing left out (a received set that cannot be read, a
/// fleet unit a local one shadows); neither stops the local units from being written.
pub fn received_share(fleet_dir: &Path, is_local: impl Fn(&str) -> bool) -> (Vec<OutputFile>, Vec<String>) {
    let received = match unitset::read_files(fleet_dir) {
        Ok(files) => files,
        Err(e) => return (Vec::new(), vec![format!("fleet units ignored: {e:#}")]),
    };
    let share = fleet_share_by(is_local, received);
    let shadowed: BTreeSet<String> = share.shadowed.into_iter().collect();
    let messages = shadowed
        .into_iter()
        .map(|name| format!("fleet unit {name} ignored: a local stack produces a unit of the same name"))
        .collect();
    (share.files, messages)
}

/// The names of the received set's units in `fleet_dir` that no local unit shadows: the units
/// `kapell apply` leaves to the fleet. Only names are read, not contents.
pub fn fleet_unit_names(fleet_dir: &Path, is_local: impl Fn(&str) -> bool) -> BTreeSet<String> {
    std::fs::read_dir(fleet_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !is_local(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> OutputFile {
        OutputFile::unit(name, format!("[Unit]\nDescription={name}\n"))
    }

    #[test]
    fn local_units_shadow_fleet_units_of_the_same_name() {
        let local = vec![unit("web.target"), OutputFile::link("multi-user.target.wants/web.target", "../web.target")];
        let received = vec![
            unit("web.target"),
            OutputFile::link("multi-user.target.wants/web.target", "../web.target"),
            unit("db.target"),
            OutputFile::link("multi-user.target.wants/db.target", "../db.target"),
        ];
        let share = fleet_share(&local, received);
        let paths: Vec<&str> = share.files.iter().map(OutputFile::path).collect();
        assert_eq!(paths, ["db.target", "multi-user.target.wants/db.target"]);
        assert_eq!(share.shadowed, ["web.target"]);
    }
}
