//! `kapell probe STACK.SERVICE`: a native service's health check, once or until it passes.

use crate::health::{probe, ready};
use crate::names::ServiceRef;
use anyhow::{Context as _, Result, bail};

/// Probe a native service's health check from this host, as its unit file describes it.
///
/// Without options: probes once and prints the result; exit status 0 when the probe passed, 1
/// when it failed. With --until-healthy (what a native service's ExecStartPost= runs): probes at
/// the check's interval until a probe passes, publishing each result for `kapell status`;
/// systemd's start timeout bounds the wait. Container services are probed by their supervisor.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service, as STACK.SERVICE.
    #[arg(value_name = "STACK.SERVICE")]
    pub service: String,

    /// The replica number of a replicated service (the template unit's %i).
    #[arg(long, value_name = "N")]
    pub instance: Option<String>,

    /// Probe at the check's interval until a probe passes (a native service's ExecStartPost=).
    #[arg(long)]
    pub until_healthy: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let target = ServiceRef::new(&args.service, args.instance.as_deref()).map_err(anyhow::Error::msg)?;
    let spec = ready::load_spec(&target)?;
    let unit = target.unit_name();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    if args.until_healthy {
        crate::logging::init(&[("KAPELL_UNIT", unit.as_str())]);
        return runtime.block_on(ready::until_healthy(&target, &spec));
    }
    let address = ready::native_address(&spec.health.check);
    let Some(address) = address
        .or(matches!(spec.health.check, crate::model::Check::Cmd(_)).then_some(std::net::IpAddr::from([127, 0, 0, 1])))
    else {
        bail!("{unit} has no address to probe");
    };
    let target_spec = probe::Target {
        check: &spec.health.check,
        address: Some(address),
        timeout: spec.health.timeout().as_std(),
        user: spec.user.as_deref(),
    };
    let result = runtime.block_on(probe::probe(&target_spec));
    println!(
        "{unit}: {} {}: {} in {:.1} ms",
        spec.describe(Some(address)),
        if result.passed { "passed" } else { "failed" },
        result.outcome,
        result.duration_usec as f64 / 1000.0
    );
    Ok(if result.passed { crate::exit::OK } else { 1 })
}

/// Probe every running native service's health check (kapell-prober.service; not for people).
///
/// Takes over each native service with a health check once it has passed its first probe, probes
/// it at its interval and, after `retries` failures in a row, reports it in the journal and (with
/// on_unhealthy = "restart") kills its main process so that systemd restarts the service.
#[derive(Debug, clap::Args)]
pub struct ProberArgs {}

pub fn prober(_: ProberArgs) -> Result<u8> {
    crate::health::prober::main()
}
