//! `kapell run STACK.SERVICE`: the container supervisor systemd starts (not for people).

use crate::supervisor::{self, ServiceRef};
use anyhow::Result;
use clap::Parser as _;
use std::path::PathBuf;

/// Supervise the container of a container service (the unit's ExecStart=; not for people).
///
/// Reads the container settings from the service's unit file, runs the container through the
/// Docker Engine API, reports readiness and status to systemd, and exits with the container's exit
/// status; on SIGTERM it stops and removes the container and exits 0. Exit status 3 means the
/// supervisor itself failed (Docker unreachable, image unavailable, bad unit) or stopped a container
/// that turned unhealthy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service, as STACK.SERVICE.
    #[arg(value_name = "STACK.SERVICE")]
    pub service: String,

    /// The replica number of a replicated service (the template unit's %i).
    #[arg(long, value_name = "N")]
    pub instance: Option<String>,

    /// Read the container settings from this unit file instead of looking the unit up in systemd's
    /// unit search path.
    #[arg(long, value_name = "PATH")]
    pub unit_file: Option<PathBuf>,

    /// Remove the container and its staged secrets if a supervisor left them (the unit's
    /// ExecStopPost=: a supervisor killed with SIGKILL, or by the OOM killer, could not).
    #[arg(long)]
    pub clean_up: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let target = ServiceRef::new(&args.service, args.instance.as_deref()).map_err(anyhow::Error::msg)?;
    if args.clean_up {
        return Ok(supervisor::clean_up(&target, args.unit_file.as_deref()));
    }
    Ok(supervisor::run(&target, args.unit_file.as_deref()))
}

// `kapell run` parsed on its own, without the rest of the command line (see [`main`]). No doc
// comment: the about text is `Args`'s, as for `kapell run` parsed through the whole command line.
#[derive(Debug, clap::Parser)]
#[command(name = "run", bin_name = "kapell run", max_term_width = 100)]
struct Standalone {
    #[command(flatten)]
    args: Args,

    /// Accepted for symmetry with the other commands; the supervisor reads no stacks.
    #[arg(long, hide = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

/// `kapell run …` straight from `argv` (`argv[0]` is `run`). A supervisor lives as long as its
/// container, one per container service, so it skips building the whole command line (every
/// subcommand's arguments): the code that touches stays mapped and counts in its resident memory.
pub fn main(argv: &[String]) -> Result<u8> {
    run(Standalone::parse_from(argv).args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn standalone_definition_is_consistent() {
        Standalone::command().debug_assert();
        let parsed = Standalone::parse_from(["run", "todo.web", "--instance", "2"]);
        assert_eq!((parsed.args.service.as_str(), parsed.args.instance.as_deref()), ("todo.web", Some("2")));
    }
}
