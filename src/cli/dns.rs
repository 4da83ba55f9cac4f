//! `kapell dns`: the responder for `<service>.<stack>.kapell` (run by kapell-dns.service).

use super::exit;
use crate::discovery::daemon::{self, LOOPBACK, Options};
use crate::discovery::health::HealthProber;
use anyhow::Result;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// Answer `<service>.<stack>.kapell` with the hosts where the service runs and is healthy.
///
/// A/AAAA for `<service>.<stack>.kapell`, SRV for `_<service>._tcp.<stack>.kapell` (host and
/// published port), from the catalog of the set this host received from its fleet, or, on a
/// host without a fleet, from the local stacks (the names then resolve to this host). Instances
/// leave the answers when their check fails or their unit stops, and come back when healthy.
/// Listens on --listen for this host's processes (and, when systemd-resolved runs, routes the
/// `~kapell` domain there through a link of its own, `kapell-dns`, deleted when it stops; the
/// host's other DNS settings are left as they are) and on the gateway of each of kapell's Docker
/// networks for containers; every other name is forwarded to the host's own DNS servers, and
/// clients outside this host and its container networks are refused.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address this host's processes ask.
    #[arg(long, default_value_t = LOOPBACK)]
    pub listen: IpAddr,
    /// The DNS port on every address. systemd-resolved is told another port than 53; containers
    /// are not (Docker names a container's DNS servers without a port): they keep Docker's own
    /// forwarding.
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// This host's address in answers when the catalog comes from the local stacks
    /// (default: the source address of its default route).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Do not route `.kapell` through systemd-resolved (no `kapell-dns` link).
    #[arg(long)]
    pub no_resolved: bool,
    /// Do not listen on kapell's Docker networks.
    #[arg(long)]
    pub no_containers: bool,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let options = Options {
        config_dir: config_dir.to_path_buf(),
        listen: args.listen,
        port: args.port,
        ip: args.ip,
        no_resolved: args.no_resolved,
        containers: !args.no_containers,
    };
    daemon::run(options, Arc::new(HealthProber))?;
    Ok(exit::OK)
}
