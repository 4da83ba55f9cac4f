//! A host's stacks, loaded: the files of the config directory read and parsed ([`crate::config`])
//! and then checked together ([`crate::validate`]). Above both, so neither depends on the other's
//! caller: parse → validate is the only edge between them.

use crate::config::{load_stack, stack_files, stack_name};
use crate::validate::{self, Checked, UnitSearchPath};
use std::path::{Path, PathBuf};

/// Loads and checks every stack of a host: the files of `dir`, with `extra` files taking the
/// place of same-named stacks (so `kapell check new.toml` is checked against its neighbours).
/// The checked stacks are what [`crate::render::render_host`] renders.
pub fn load(dir: &Path, extra: &[PathBuf], search_path: &UnitSearchPath) -> std::io::Result<Checked> {
    let mut files = stack_files(dir)?;
    files.retain(|f| !extra.iter().any(|e| stack_name(e) == stack_name(f)));
    files.extend(extra.iter().cloned());
    let parsed = crate::parallel::map(&files, |f| load_stack(f));
    Ok(validate::check_host(parsed, search_path))
}
