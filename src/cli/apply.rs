//! `kapell apply [STACK…] [--dry-run]`: make systemd run what the stack files say.

use super::exit;
use crate::apply::{self, Options, Outcome};
use crate::blocking::block_on;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::path::Path;

/// Make systemd run what the stack files say, and print what was done.
///
/// Validates every stack first; if anything is invalid, prints every error as file:line:col and
/// changes nothing. Otherwise stops the units of services (and stacks) that were removed, runs
/// a daemon-reload (systemd reruns kapell-generator, which writes the new units), restarts
/// exactly the services whose unit changed and that run, and starts new services and stacks
/// that are not running. A service whose dependencies alone changed (its requires or wants, or
/// a dependency's replicas) keeps running: the reload applies them. Instances beyond a lowered
/// replicas are stopped after the reload, so the services that require them keep running. A
/// second run with no change does nothing and says so.
///
/// Without STACK, applies every stack, and stops the units of stacks whose file was deleted.
/// With STACK, the plan is limited to those stacks; it is refused if the reload would load
/// changes of other stacks that nothing would act on (apply those too, or all).
///
/// Exit status: 0 done (or nothing to do), 1 a stack is invalid, 2 the request was refused
/// (nothing changed), 3 a unit failed to stop or start, or systemd could not be reached.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stacks to apply (default: every stack, including deleted ones).
    #[arg(value_name = "STACK")]
    pub stacks: Vec<String>,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    // Only `KAPELL_LOG=debug` makes apply log anything (how each job's end was learned); its
    // report is the lines it prints.
    crate::logging::init(&[("KAPELL_COMPONENT", "apply")]);
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read the stacks in {}", config_dir.display()))?;
    for d in &checked.diagnostics {
        eprintln!("{d}");
    }
    if !checked.is_ok() {
        let n = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        eprintln!("nothing was changed: {n} error{} to fix first", if n == 1 { "" } else { "s" });
        return Ok(exit::INVALID);
    }
    let options = Options { stacks: args.stacks, dry_run: args.dry_run };
    let outcome = block_on(apply::apply(config_dir, &checked, &options, &mut |line| println!("{line}")))??;
    Ok(match outcome {
        Outcome::NothingToDo | Outcome::Planned | Outcome::Applied { failures: 0 } => exit::OK,
        Outcome::Applied { failures } => {
            eprintln!("{failures} unit{} failed", if failures == 1 { "" } else { "s" });
            exit::FAILED
        }
        Outcome::Refused(why) => {
            eprintln!("error: {why}");
            exit::USAGE
        }
    })
}
