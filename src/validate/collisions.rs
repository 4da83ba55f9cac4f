//! kapell never shadows a unit it does not own: a generated unit name that already exists in
//! systemd's search path (and is not marked as kapell's) is an error.

use super::ProducedUnit;
use crate::diagnostics::Diagnostic;
use crate::unitset::markers::is_kapell_unit;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// systemd's unit directories, each listed once on first use (a generator run does a handful of
/// `readdir`s, not one `stat` per unit).
pub struct UnitSearchPath {
    dirs: Vec<(PathBuf, OnceCell<HashSet<String>>)>,
}

impl UnitSearchPath {
    /// The system directories, or `KAPELL_UNIT_PATH` (colon-separated) when set, for tests.
    pub fn from_env() -> Self {
        match std::env::var_os("KAPELL_UNIT_PATH") {
            Some(list) => Self::new(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect()),
            None => Self::new(crate::names::foreign_unit_dirs().map(PathBuf::from).collect()),
        }
    }

    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs: dirs.into_iter().map(|d| (d, OnceCell::new())).collect() }
    }

    /// The path of an existing unit file named `name` that kapell does not own.
    pub fn foreign_unit(&self, name: &str) -> Option<PathBuf> {
        for (dir, listing) in &self.dirs {
            let names = listing.get_or_init(|| list_dir(dir));
            if names.contains(name) {
                let path = dir.join(name);
                if !is_kapell_unit(&path) {
                    return Some(path);
                }
            }
        }
        None
    }
}

fn list_dir(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

pub fn check_foreign_units(units: &[ProducedUnit<'_>], search_path: &UnitSearchPath, errors: &mut Vec<Diagnostic>) {
    for unit in units {
        let Some(path) = search_path.foreign_unit(&unit.name) else { continue };
        let (name, path) = (&unit.name, path.display());
        let message = match unit.service {
            None => format!(
                "stack `{}` would produce `{name}`, which already exists as {path} and is not kapell's; rename the stack (the file)",
                unit.stack.name
            ),
            Some(service) => format!(
                "service `{}` would produce `{name}`, which already exists as {path} and is not kapell's; rename the service",
                service.name
            ),
        };
        errors.push(Diagnostic::new(&unit.stack.source, unit.span(), message));
    }
}
