//! `kapell generate --out DIR`: write the units the generator would write.

use super::{exit, expand_paths};
use crate::config;
use crate::host_units;
use crate::render::{self, RenderOptions};
use crate::unitset;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Render stacks into unit files in DIR, as the generator would.
///
/// Without PATH arguments, DIR gets exactly the units the generator writes: every stack this host
/// runs, and the unit set a fleet controller installed on it (/etc/kapell/received; a fleet unit
/// that a local stack also produces, or of a stack named as a local one, is left out, and said
/// so).
///
/// Valid stacks are written even when others are invalid (as the generator does); the exit
/// status is 1 if any stack was skipped. Rerunning replaces kapell's files in DIR and removes
/// those of stacks and services that are gone; other files in DIR are never touched.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the units into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Stack files or directories to render instead of the whole config directory.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Path of the kapell binary on the hosts that run the units (in container services' ExecStart=).
    #[arg(long, value_name = "PATH", default_value = render::DEFAULT_KAPELL_PATH)]
    pub kapell_path: String,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let paths = expand_paths(&args.paths)?;
    let checked = crate::host::load(config_dir, &paths, &UnitSearchPath::from_env())?;
    // With explicit paths, render those stacks only; their neighbours resolve dependencies.
    let wanted = |name: &str| paths.is_empty() || paths.iter().any(|p| config::stack_name(p) == name);
    let diagnostics: Vec<_> = checked.diagnostics.iter().filter(|d| wanted(&config::stack_name(d.path()))).collect();
    for d in &diagnostics {
        eprintln!("{d}");
    }
    let options = RenderOptions { kapell_path: args.kapell_path };
    let local = host_units::render_local(config_dir, &checked, |s| wanted(&s.name), &options);
    // The whole host, as the generator writes it, includes the set a fleet controller installed.
    let files = if paths.is_empty() {
        let claims = host_units::StackClaims::of(config_dir, &checked);
        let (files, left_out) = host_units::with_received(local, &claims, &host_units::received_dir());
        for message in &left_out {
            eprintln!("warning: {message}");
        }
        files
    } else {
        local
    };
    unitset::write(&args.out, &files, unitset::Strategy::Replace)
        .with_context(|| format!("cannot write units into {}", args.out.display()))?;
    for f in &files {
        println!("{}", args.out.join(f.path()).display());
    }
    Ok(if diagnostics.iter().any(|d| d.is_error()) { exit::INVALID } else { exit::OK })
}
