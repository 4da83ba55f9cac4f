//! `kapell run STACK.SERVICE`: the container supervisor systemd starts (not for people).

use crate::supervisor::{self, Target};
use anyhow::Result;
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
}

pub fn run(args: Args) -> Result<u8> {
    let target = Target::new(&args.service, args.instance.as_deref()).map_err(anyhow::Error::msg)?;
    Ok(supervisor::run(&target, args.unit_file.as_deref()))
}
