//! `kapell apply [STACK…] [--dry-run]`: make systemd run what the stack files say.

use super::exit;
use crate::apply::{self, Options, Outcome};
use crate::blocking::block_on;
use crate::fleet::peer::lifecycle;
use crate::printable::printable;
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
/// When a unit it stops or removes has a namesake in the set a fleet controller installed (a
/// local stack that kept the fleet's stack of its name out is gone), the fleet's units take
/// their place at the reload, and the set this host received is run again, which starts them.
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
    let report = block_on(apply::apply(config_dir, &checked, &options, &mut |line| println!("{line}")))??;
    let mut failures = match report.outcome {
        Outcome::NothingToDo | Outcome::Planned => 0,
        Outcome::Applied { failures } => failures,
        Outcome::Refused(why) => {
            eprintln!("error: {why}");
            return Ok(exit::USAGE);
        }
    };
    let mut fleet_error = None;
    if report.fleet_set_waits {
        if options.dry_run {
            println!("note: the fleet's units of the same names take their place, and its set is run again");
        } else {
            println!("running the fleet's set again: its units of the same names took their place");
            let reply = lifecycle::run_emitted(config_dir);
            for line in &reply.actions {
                println!("{}", printable(line));
            }
            failures += reply.failures;
            fleet_error = reply.error;
        }
    }
    if failures > 0 {
        eprintln!("{failures} unit{} failed", if failures == 1 { "" } else { "s" });
    }
    if let Some(e) = &fleet_error {
        eprintln!(
            "error: cannot run the fleet's set (the next push, or `kapell fleet apply`, runs it): {}",
            printable(e)
        );
    }
    Ok(if failures > 0 || fleet_error.is_some() { exit::FAILED } else { exit::OK })
}
