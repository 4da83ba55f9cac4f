//! What a peer accepts as a received set, checked before anything changes: file names that are
//! unit names or `<unit>.wants/<unit>` links into the set, units that are kapell's, and no unit
//! that would shadow one kapell does not own. (The hashes are checked by
//! [`crate::fleet::protocol::HostSet::verify`].)

use crate::config;
use crate::fleet::protocol::{HostSet, SetFile};
use crate::unitset::markers;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// The first reason `set` cannot be installed, if any.
pub fn check_files(set: &HostSet) -> Result<()> {
    let units: BTreeSet<&str> = set.units().collect();
    let search_path = UnitSearchPath::from_env();
    for (path, file) in &set.files {
        match file {
            SetFile::Unit { text, .. } => {
                config::syntax::check_unit_name(path).map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    markers::is_kapell_text(text),
                    "{path} is not a kapell unit (it has no {}= line)",
                    markers::STACK_KEY
                );
                // A mask of the set's own unit is drift, repaired by `drift::unmask`, not a
                // foreign unit.
                if let Some(foreign) = search_path.foreign_unit(path)
                    && std::fs::read_link(&foreign).map_or(true, |t| t != Path::new("/dev/null"))
                {
                    anyhow::bail!("{path} would shadow {}, which kapell does not own", foreign.display());
                }
            }
            SetFile::Link { target } => {
                let (dir, name) = path.split_once('/').with_context(|| format!("invalid link path {path:?}"))?;
                let ok = dir.ends_with(".wants")
                    && config::syntax::check_unit_name(dir.trim_end_matches(".wants")).is_ok()
                    && units.contains(name)
                    && target.strip_prefix("../") == Some(name);
                anyhow::ensure!(ok, "invalid link {path:?} -> {target:?} (only *.wants/ links to the set's units)");
            }
        }
    }
    Ok(())
}
