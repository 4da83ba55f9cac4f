//! `kapell logs STACK.SERVICE [-f]`: the service's journal.
//!
//! This runs `journalctl` rather than reading the journal itself: journalctl is the journal's
//! reader, it knows every storage format and access rule (journal files, namespaces, the
//! `systemd-journal` group), and operators get exactly the output, paging-free, that they know
//! from `journalctl -u`. kapell only works out which units a service has.

use super::exit;
use crate::apply;
use crate::diagnostics::did_you_mean;
use crate::printable::printable;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

/// Show a service's journal (every instance of a replicated service).
///
/// Runs `journalctl -u UNIT… --no-pager`, so the output is what `journalctl -u` shows.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service, as STACK.SERVICE (e.g. todo.web).
    #[arg(value_name = "STACK.SERVICE")]
    pub service: String,

    /// Keep printing new entries as they arrive (journalctl -f).
    #[arg(short, long)]
    pub follow: bool,

    /// Show only the last N entries (journalctl -n).
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let Some((stack_name, service_name)) = args.service.split_once('.') else {
        eprintln!("error: expected STACK.SERVICE (e.g. todo.web), got {:?}", args.service);
        return Ok(exit::USAGE);
    };
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read the stacks in {}", config_dir.display()))?;
    let desired = apply::desired(config_dir, &checked);
    let claims = crate::host_units::StackClaims::of(config_dir, &checked);
    let units = desired.merged(&apply::installed(&desired, &claims)?);
    let Some(stack) = units.stacks.get(stack_name) else {
        let hint = did_you_mean(stack_name, units.stacks.keys().map(String::as_str))
            .map(|n| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        eprintln!("error: there is no stack {}{hint}", printable(stack_name));
        return Ok(exit::USAGE);
    };
    let Some(service) = stack.service(service_name).filter(|s| !s.running.is_empty()) else {
        let hint = did_you_mean(service_name, stack.services().iter().map(|s| s.name.as_str()))
            .map(|n| format!(" (did you mean {stack_name}.{n}?)"))
            .unwrap_or_default();
        eprintln!("error: stack {stack_name} has no service {service_name}{hint}");
        return Ok(exit::USAGE);
    };
    let mut journalctl = Command::new("journalctl");
    journalctl.arg("--no-pager");
    if args.follow {
        journalctl.arg("--follow");
    }
    if let Some(n) = args.lines {
        journalctl.arg(format!("--lines={n}"));
    }
    for unit in &service.running {
        journalctl.arg(format!("--unit={unit}"));
    }
    // Replaces this process: Ctrl-C, exit status and `-f` behave exactly as journalctl's own.
    let error = journalctl.exec();
    Err(error).context("cannot run journalctl")
}
