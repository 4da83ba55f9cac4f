//! kapell never shadows a unit it does not own: a generated unit name that already exists in
//! systemd's search path (and is not marked as kapell's) is an error.

use crate::diagnostics::Diagnostic;
use crate::model::Stack;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The marker every kapell unit carries in `[Unit]`.
pub const OWNER_MARKER: &str = "X-Kapell-Stack=";

/// The system unit directories whose units kapell must not shadow. The generator directories are
/// left out: they are rebuilt by systemd on every reload, kapell's own output lives there.
const SYSTEM_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

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
            None => Self::new(SYSTEM_UNIT_DIRS.iter().map(PathBuf::from).collect()),
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

/// A unit kapell wrote carries the owner marker in its text. (`/dev/null` masks are not ours.)
pub fn is_kapell_unit(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.lines().any(|l| l.trim_start().starts_with(OWNER_MARKER)))
}

pub fn check_foreign_units(stacks: &[Stack], search_path: &UnitSearchPath, errors: &mut Vec<Diagnostic>) {
    for stack in stacks {
        if let Some(path) = search_path.foreign_unit(&stack.target_unit()) {
            errors.push(Diagnostic::new(
                &stack.source,
                0..0,
                format!("stack `{}` would produce `{}`, which already exists as {} and is not kapell's; rename the stack (the file)", stack.name, stack.target_unit(), path.display()),
            ));
        }
        for service in &stack.services {
            let unit = service.unit_file_name(&stack.name);
            if let Some(path) = search_path.foreign_unit(&unit) {
                errors.push(Diagnostic::new(
                    &stack.source,
                    service.span.clone(),
                    format!("service `{}` would produce `{unit}`, which already exists as {} and is not kapell's; rename the service", service.name, path.display()),
                ));
            }
        }
    }
}

/// Is `rel` (relative to a unit directory) a kapell unit, or a `*.wants/` link to one? Used to
/// decide what kapell may remove: nothing else is ever touched.
pub fn is_kapell_link_or_unit(dir: &Path, rel: &str) -> bool {
    let path = dir.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            // A wants link made by kapell points at a sibling unit of `dir` that kapell owns (or
            // owned: a dangling link into `dir` left by a removed stack).
            let Ok(target) = std::fs::read_link(&path) else { return false };
            let Some(name) = target.file_name() else { return false };
            let unit = dir.join(name);
            target.starts_with("..") && (!unit.exists() || is_kapell_unit(&unit))
        }
        Ok(m) if m.is_file() => is_kapell_unit(&path),
        _ => false,
    }
}
