//! `kapell federate`: the federation daemon (run by kapell-federation.service).

use super::exit;
use crate::fleet::controller::federate::{self, Options};
use anyhow::Result;
use std::path::Path;

/// Keep every host of the fleet converged (run by kapell-federation.service).
///
/// Applies the fleet as `kapell fleet apply` does: at start, when a file of the configuration
/// directory changes, on SIGHUP (`systemctl reload kapell-federation`, which re-reads
/// fleet.toml) and every reconcile_interval. Repairs drift on the hosts (units stopped, edited,
/// deleted or masked by hand), retries unreachable hosts with exponential backoff, and rolls
/// changes out with canaries and batches; a failed desired state stays held back (never
/// retried by the daemon) until the stacks change or `kapell fleet rollout retry`. Logs each
/// pass (periodic, after a change naming the files, after a reload) and every change to the
/// journal with stable MESSAGE_IDs; tells systemd READY=1 after the first pass and a STATUS=
/// line after each, which says when a rollout failed or waits for promotion. State lives in
/// /var/lib/kapell/fleet.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replace sets on hosts that this controller did not push.
    #[arg(long)]
    pub force: bool,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    crate::logging::init(&[("KAPELL_COMPONENT", "federate")]);
    federate::run(config_dir, &Options { force: args.force })?;
    Ok(exit::OK)
}
