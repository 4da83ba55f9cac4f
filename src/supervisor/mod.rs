//! The supervisor, `kapell run STACK.SERVICE` (see docs/architecture.md): the main process of a container service.
//!
//! systemd starts it (`Type=notify`, `NotifyAccess=main`, `KillMode=mixed`); it reads the unit's
//! `[X-Kapell-Container]` section ([`crate::unitset::lookup`]), then through the Docker Engine API
//! ([`docker`]): removes a stale container of the same name; creates the container
//! ([`container_config`]) with the secrets staged read-only ([`secrets`]), pulling the image per
//! `pull` and extending the start timeout while a pull makes progress; starts it; copies its
//! stdout and stderr to its own, so the journal shows them under the unit; says `READY=1` once the
//! container runs, or once its health check first passes ([`notify`]): a `cmd` check is Docker's,
//! inside the container; `http` and `tcp` checks are probed by the supervisor from the host at the
//! container's address (see `crate::health`). Each result goes to the unit's health state file.
//! Then:
//! - the container exits: the supervisor exits with the container's exit code (systemd applies
//!   `Restart=`);
//! - it turns unhealthy after having been healthy, with `on_unhealthy = "restart"`: the supervisor
//!   stops it and exits with [`EXIT_FAILED`], so systemd restarts the service;
//! - SIGTERM (`systemctl stop`): it stops the container with the grace period, removes it, exits 0;
//! - Docker down, an image it cannot have, a bad unit: one error line naming the unit, what failed
//!   and why, and exit status [`EXIT_FAILED`].
//!
//! The container is removed on every way out; one tokio current-thread runtime keeps it small.

mod container_config;
mod docker;
pub mod env_file;
mod network;
mod notify;
mod secrets;

pub use crate::names::ServiceRef;
pub use container_config::label;

use crate::health::probe::{self, Probe};
use crate::health::state;
use crate::logging::id;
use crate::model::{Check, OnUnhealthy, Pull};
use crate::printable::printable;
use crate::render::container::ContainerSpec;
use crate::render::health::HealthSpec;
use crate::status::{Health, SupervisorStatus as Status};
use crate::unitfile::UnitFile;
use anyhow::{Context as _, Result, bail, ensure};
use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use docker::{Container, Engine};
use futures_util::{Stream, StreamExt as _};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Exit status when the supervisor fails (Docker, image, unit) or stops an unhealthy container.
pub const EXIT_FAILED: u8 = crate::exit::FAILED;

/// While a pull reports progress, the start timeout is pushed this far ahead…
const PULL_EXTEND_BY: Duration = Duration::from_secs(30);
/// …this often.
const PULL_EXTEND_EVERY: Duration = Duration::from_secs(5);
/// How long the container's last output may take to arrive after it stopped.
const DRAIN_OUTPUT: Duration = Duration::from_secs(2);
/// How long a change of health waits for Docker's health log before it is published without it.
const HEALTH_LOG_WAIT: Duration = Duration::from_secs(2);

/// How long a failing supervisor stays after logging why, so that journald files the line
/// under the unit (see [`run`]).
const JOURNAL_SETTLE: Duration = Duration::from_millis(200);

/// Runs the supervisor for `target` to the end; returns the process exit status.
pub fn run(target: &ServiceRef, unit_file: Option<&Path>) -> u8 {
    let unit = target.unit_name();
    crate::logging::init(&[
        ("KAPELL_UNIT", unit.as_str()),
        ("KAPELL_STACK", target.stack.as_str()),
        ("KAPELL_SERVICE", target.service.as_str()),
    ]);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(supervise(target, unit_file)));
    match result {
        Ok(code) => code,
        Err(e) => {
            log::error!(message_id = id::SUPERVISOR_FAILED; "{unit}: {e:#}");
            // journald learns which unit a message is from by reading the sender's cgroup when
            // it handles the message; a sender that has exited by then leaves the line out of
            // `journalctl -u` (systemd's known race for short-lived processes), and this is the
            // one line that says why the unit failed. A moment before exiting lets it be read.
            std::thread::sleep(JOURNAL_SETTLE);
            EXIT_FAILED
        }
    }
}

/// After the supervisor (the unit's `ExecStopPost=`): removes the container of `target` and its
/// staged secrets if they are still there. A supervisor that ends on its own has removed both;
/// one killed by SIGKILL, the OOM killer or a crash has not, and the container (in Docker's
/// cgroup, not the unit's) would otherwise keep running, ports and all, after its unit stopped.
pub fn clean_up(target: &ServiceRef, unit_file: Option<&Path>) -> u8 {
    let unit = target.unit_name();
    crate::logging::init(&[("KAPELL_UNIT", unit.as_str())]);
    let failed = |e: anyhow::Error| {
        log::error!(message_id = id::SUPERVISOR_FAILED; "{unit}: clean-up: {e:#}");
        std::thread::sleep(JOURNAL_SETTLE);
        EXIT_FAILED
    };
    // A unit file it cannot read, or a Docker it cannot reach: the supervisor said so already
    // (the unit's one error line), and a Docker that is down runs no container of ours.
    let name = match spec_of(target, unit_file) {
        Ok(spec) => spec.container_name(target.instance.as_deref()),
        Err(e) => {
            log::info!("{unit}: clean-up: nothing to check: {e:#}");
            return 0;
        }
    };
    if let Err(e) = secrets::remove_staged(&name) {
        return failed(anyhow::Error::msg(e));
    }
    let removed = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|runtime| {
        runtime.block_on(async {
            match Engine::connect(Duration::from_secs(30)).await {
                Ok(docker) => docker.remove(&name).await.map(Some),
                Err(e) => {
                    log::info!("{unit}: clean-up: no container checked: {e:#}");
                    Ok(None)
                }
            }
        })
    });
    match removed.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(Some(true)) => {
            log::warn!("{unit}: removed container {name}, which its supervisor left behind (killed?)");
            // So that journald still finds this process in the unit's cgroup (see [`run`]).
            std::thread::sleep(JOURNAL_SETTLE);
            0
        }
        Ok(_) => 0,
        Err(e) => failed(e),
    }
}

/// The addresses of kapell's running containers: unit name → `(network, address)` pairs, for
/// `kapell status`.
pub async fn container_addresses() -> Result<HashMap<String, Vec<(String, String)>>> {
    Engine::connect(Duration::from_secs(10)).await?.addresses().await
}

/// kapell's stack networks on this host's engine: `(name, subnet, gateway)`, for `kapell dns`
/// (it listens on each gateway and serves each subnet).
pub async fn stack_networks() -> Result<Vec<(String, String, String)>> {
    Engine::connect(Duration::from_secs(10)).await?.stack_networks().await
}

/// How long a container waits for a running `kapell dns` to listen on its network's gateway
/// (it looks at Docker's networks every two seconds).
const DNS_WAIT: Duration = Duration::from_secs(5);

/// The DNS servers of a container on stack network `network` when `kapell dns` runs on this
/// host: the network's gateway, so `.kapell` names resolve in it and every other name is
/// forwarded as before, then the host's servers ([`crate::dns_state::DnsState::container_servers`]).
/// Empty when no responder runs (Docker's own forwarding stays), or it does not listen there in
/// time (said in the journal).
async fn dns_servers(unit: &str, docker: &Engine, network: &str) -> Vec<std::net::IpAddr> {
    let Some(state) = crate::dns_state::read() else { return Vec::new() };
    if state.port != 53 {
        log::info!(
            "{unit}: kapell dns answers on port {}, which Docker cannot give a container as its DNS server; the \
             container resolves no .kapell names",
            state.port
        );
        return Vec::new();
    }
    let gateways = match docker.network_gateways(network).await {
        Ok(g) => g,
        Err(e) => {
            log::warn!("{unit}: {e:#}; the container resolves no .kapell names");
            return Vec::new();
        }
    };
    let gateways: Vec<std::net::IpAddr> = gateways.iter().filter_map(|g| g.parse().ok()).collect();
    let end = Instant::now() + DNS_WAIT;
    loop {
        let Some(state) = crate::dns_state::read() else { return Vec::new() };
        let servers = state.container_servers(&gateways);
        if !servers.is_empty() {
            return servers;
        }
        if Instant::now() >= end {
            log::warn!(
                "{unit}: kapell dns does not listen on network {network} ({gateways:?}) after {DNS_WAIT:?}; the \
                 container resolves no .kapell names"
            );
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What ended the supervision of a running container.
enum Outcome {
    Exited(i64),
    Terminated,
    Unhealthy,
}

/// What every step needs: the unit's name (which starts each log line) and its container spec.
struct Ctx {
    unit: String,
    spec: ContainerSpec<'static>,
}

async fn supervise(target: &ServiceRef, unit_file: Option<&Path>) -> Result<u8> {
    // From here on SIGTERM is ours to handle: it arrives as an event, never kills mid-step.
    let mut shutdown = Shutdown::new()?;
    let ctx = Ctx { unit: target.unit_name(), spec: spec_of(target, unit_file)? };
    let spec = &ctx.spec;
    let name = spec.container_name(target.instance.as_deref());
    let mut file_env = Vec::new();
    for f in spec.env_files.iter() {
        file_env.extend(env_file::read(Path::new(f)).map_err(anyhow::Error::msg)?);
    }

    let grace = container_config::grace_secs(spec);
    let request_timeout = Duration::from_secs(120.max(u64::try_from(grace).unwrap_or(0) + 60));
    let docker = Engine::connect(request_timeout).await?;

    notify::status(&Status::Starting);
    if docker.remove(&name).await? {
        log::info!("{}: removed a stale container {name}", ctx.unit);
    }
    // The stack networks, created if missing; every other network must exist.
    let mut networks = HashMap::new();
    for net in spec.network.stack_networks(&spec.stack) {
        networks.insert(net, network::ensure(&ctx.unit, &docker, net, network::owner(net)).await?);
    }
    let docker_name = |net: &str| networks.get(net).cloned().unwrap_or_else(|| net.to_string());
    let primary = docker_name(&spec.network.name);
    let joins: Vec<String> = spec.network.joins.iter().map(|n| docker_name(n)).collect();
    let staged = secrets::stage(&spec.secrets, &name, spec.user.as_deref()).map_err(anyhow::Error::msg)?;
    let dns = if networks.contains_key(spec.network.name.as_str()) {
        dns_servers(&ctx.unit, &docker, &primary).await
    } else {
        Vec::new()
    };
    let inputs = container_config::Inputs { target, file_env, secret_mounts: &staged.mounts, network: &primary, dns };
    let body = container_config::create_body(spec, &inputs).map_err(anyhow::Error::msg)?;
    // Health events are read from just before the container exists, so none is missed.
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() - 1.0);
    let created = tokio::select! {
        created = create(&ctx, &docker, &name, body) => created,
        () = shutdown.recv() => {
            // Docker may have created it before the request was dropped: leave nothing behind.
            if let Err(e) = docker.remove(&name).await {
                log::warn!("{}: {e:#}", ctx.unit);
            }
            return Ok(0);
        }
    };
    let container = created?;
    for warning in &container.warnings {
        log::warn!("{}: Docker: {}", ctx.unit, printable(warning));
    }

    let result = match join(&docker, &container, &joins).await {
        Ok(()) => supervise_container(&ctx, &docker, &container, &mut shutdown, since).await,
        Err(e) => Err(e),
    };
    // On every way out: the container goes (it has stopped by now, or is killed here).
    if let Err(e) = docker.remove(&container.id).await {
        log::warn!("{}: {e:#}", ctx.unit);
    }
    drop(staged);
    result
}

/// The container settings of `target`: from `unit_file`, or its unit found in systemd's search path.
fn spec_of(target: &ServiceRef, unit_file: Option<&Path>) -> Result<ContainerSpec<'static>> {
    let path = match unit_file {
        Some(p) => p.to_path_buf(),
        None => crate::unitset::lookup::find(target).map_err(anyhow::Error::msg)?,
    };
    load_spec(&path, target).with_context(|| format!("cannot use the unit file {}", path.display()))
}

fn load_spec(path: &Path, target: &ServiceRef) -> Result<ContainerSpec<'static>> {
    let text = std::fs::read_to_string(path)?;
    let unit = UnitFile::parse(&text).map_err(anyhow::Error::msg)?;
    let spec = ContainerSpec::from_unit(&unit).map_err(anyhow::Error::msg)?;
    ensure!(
        spec.stack == target.stack && spec.service == target.service,
        "it describes {}.{}, not {}.{}",
        spec.stack,
        spec.service,
        target.stack,
        target.service
    );
    Ok(spec)
}

/// Creates the container, pulling its image per `pull` the way `docker run --pull` does: a missing
/// image shows as the create request's "No such image", so a present one costs no extra request.
async fn create(ctx: &Ctx, docker: &Engine, name: &str, body: ContainerCreateBody) -> Result<Container> {
    let c = &ctx.spec.container;
    if c.pull == Pull::Always {
        pull(ctx, docker).await?;
        notify::status(&Status::Starting);
    }
    if let Some(container) = docker.create(name, body.clone()).await? {
        return Ok(container);
    }
    if c.pull == Pull::Never {
        bail!("image {} is not present and pull = \"never\"", c.image);
    }
    pull(ctx, docker).await?;
    notify::status(&Status::Starting);
    docker.create(name, body).await?.with_context(|| format!("image {} is missing right after its pull", c.image))
}

/// Pulls the image, pushing the start timeout ahead while the pull makes progress.
async fn pull(ctx: &Ctx, docker: &Engine) -> Result<()> {
    let image = ctx.spec.container.image.as_str();
    notify::status(&Status::Pulling(image.to_string()));
    log::info!("{}: pulling image {image}", ctx.unit);
    let started = Instant::now();
    let mut progress = std::pin::pin!(docker.pull(image));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PULL_EXTEND_EVERY, PULL_EXTEND_EVERY);
    let mut moved = false;
    loop {
        tokio::select! {
            item = progress.next() => match item {
                Some(item) => {
                    item.with_context(|| format!("cannot pull image {image}"))?;
                    moved = true;
                }
                None => break,
            },
            _ = ticks.tick() => {
                // Only a pull that is getting somewhere earns more time.
                if std::mem::take(&mut moved) {
                    notify::extend_timeout(PULL_EXTEND_BY);
                }
            }
        }
    }
    log::info!(message_id = id::IMAGE_PULLED; "{}: pulled image {image} in {:.1?}", ctx.unit, started.elapsed());
    Ok(())
}

/// Connects the created container to the networks of the stacks it depends on.
async fn join(docker: &Engine, container: &Container, networks: &[String]) -> Result<()> {
    for net in networks {
        docker.connect_network(container, net).await?;
    }
    Ok(())
}

/// Starts the created container and follows it to its end.
async fn supervise_container(
    ctx: &Ctx,
    docker: &Engine,
    container: &Container,
    shutdown: &mut Shutdown,
    since: f64,
) -> Result<u8> {
    let (unit, spec) = (&ctx.unit, &ctx.spec);
    if shutdown.pending() {
        return Ok(0); // stopped while the container was being created: never start it
    }
    let mut output = Some(docker.attach(container).await?);
    docker.start(container).await?;
    let short_id = &container.id[..container.id.len().min(12)];
    log::info!(
        message_id = id::CONTAINER_STARTED, kapell_container = container.name.as_str();
        "{unit}: started container {} ({short_id}) from {}", container.name, spec.container.image
    );

    let check = spec.health.as_ref();
    // `http`/`tcp` checks are probed from the host, `cmd` checks by Docker inside the container.
    let probing = match check {
        Some(h) if !matches!(h.health.check, Check::Cmd(_)) => {
            let address = if spec.network.name == "host" {
                Some(std::net::IpAddr::from([127, 0, 0, 1]))
            } else {
                docker.address(container, &spec.network.name).await?
            };
            Some(HostProbes::new(h, address))
        }
        _ => None,
    };
    let mut next_probe = probing.as_ref().map(|p| p.next(Duration::ZERO));
    let mut events = check.filter(|_| probing.is_none()).map(|_| Box::pin(docker.health_events(container, since)));
    let mut tracker = check.map(|h| crate::health::Tracker::new(&h.health));
    let mut health = check.map(|_| Health::Starting);
    let mut been_healthy = false;
    let published = Published::new(unit, target_ref(spec, container), check, probing.as_ref());
    if check.is_some() {
        notify::status(&Status::Running(health));
        published.write(Health::Starting, 0, None);
    } else {
        notify::ready(&Status::Running(None));
        log::info!(message_id = id::CONTAINER_READY; "{unit}: ready (container running)");
    }

    let wait = docker.wait(container);
    let mut wait = std::pin::pin!(wait);
    let outcome = loop {
        // What the health check says now, when it said something.
        let (new, why) = tokio::select! {
            code = &mut wait => break Outcome::Exited(code?),
            () = shutdown.recv() => break Outcome::Terminated,
            chunk = next(&mut output), if output.is_some() => {
                match chunk {
                    Some(Ok(chunk)) => forward(chunk),
                    Some(Err(e)) => {
                        log::warn!("{unit}: lost the container's output: {}", printable(&e.to_string()));
                        output = None;
                    }
                    None => output = None,
                }
                (None, String::new())
            }
            event = next(&mut events), if events.is_some() => match event {
                Some(Ok(new)) => {
                    // Docker's event names the new state only; the probe behind it is in the
                    // container's health log, for `kapell status` and a rollout's verdict.
                    let last = last_health_probe(unit, docker, container).await;
                    let why = match (&last, check) {
                        (Some((failures, probe)), Some(h)) => format!(
                            ": health check {} failed {failures} times in a row (last: {})",
                            h.describe(None),
                            probe.outcome
                        ),
                        _ => String::new(),
                    };
                    let (failures, probe) = last.map_or((0, None), |(f, p)| (f, Some(p)));
                    published.write(new, failures, probe);
                    (Some(new), why)
                }
                Some(Err(e)) => {
                    log::warn!("{unit}: {e:#}; the health state is no longer followed");
                    events = None;
                    (None, String::new())
                }
                None => {
                    events = None;
                    (None, String::new())
                }
            },
            probe = async { next_probe.as_mut().expect("guarded").await }, if next_probe.is_some() => {
                let (Some(p), Some(t)) = (probing.as_ref(), tracker.as_mut()) else { break Outcome::Terminated };
                next_probe = Some(p.next(p.interval));
                t.record(&probe);
                let why = format!(
                    ": health check {} failed {} times in a row (last: {})",
                    p.describe, t.failures, probe.outcome
                );
                published.write(t.health, t.failures, Some(probe));
                (Some(t.health), why)
            }
        };
        let Some(new) = new else { continue };
        if health == Some(new) {
            continue;
        }
        health = Some(new);
        let why = if new == Health::Unhealthy { why } else { String::new() };
        log::info!(
            message_id = id::CONTAINER_HEALTH, kapell_health = new.as_str();
            "{unit}: container is {}{why}", new.as_str()
        );
        if new == Health::Healthy && !been_healthy {
            been_healthy = true;
            notify::ready(&Status::Running(health));
            log::info!(message_id = id::CONTAINER_READY; "{unit}: ready (health check passed)");
        } else {
            notify::status(&Status::Running(health));
        }
        if new == Health::Unhealthy && been_healthy && check.is_some_and(|h| h.on_unhealthy == OnUnhealthy::Restart) {
            break Outcome::Unhealthy;
        }
    };

    let grace = container_config::grace_secs(spec);
    let code = match outcome {
        Outcome::Exited(code) => {
            drain(&mut output).await;
            log::info!(
                message_id = id::CONTAINER_EXITED, kapell_exit_status = code;
                "{unit}: container {} exited with status {code}", container.name
            );
            u8::try_from(code).unwrap_or(EXIT_FAILED)
        }
        Outcome::Terminated => {
            notify::stopping();
            log::info!("{unit}: stopping container {} (grace period {grace}s)", container.name);
            docker.stop(container, grace).await?;
            drain(&mut output).await;
            log::info!(message_id = id::CONTAINER_STOPPED; "{unit}: container {} stopped", container.name);
            0
        }
        Outcome::Unhealthy => {
            notify::stopping();
            log::warn!(
                message_id = id::CONTAINER_UNHEALTHY_RESTART;
                "{unit}: container {} turned unhealthy; stopping it so that systemd restarts the service",
                container.name
            );
            docker.stop(container, grace).await?;
            drain(&mut output).await;
            EXIT_FAILED
        }
    };
    Ok(code)
}

/// The failures in a row and the latest probe of a check Docker runs; `None` (and a line in the
/// log) when Docker does not say within a moment: the state itself came with the event.
async fn last_health_probe(unit: &str, docker: &Engine, container: &Container) -> Option<(u32, Probe)> {
    match tokio::time::timeout(HEALTH_LOG_WAIT, docker.last_health_probe(container)).await {
        Ok(Ok(last)) => last,
        Ok(Err(e)) => {
            log::warn!("{unit}: {e:#}");
            None
        }
        Err(_) => {
            log::warn!("{unit}: Docker did not show the container's health log within {HEALTH_LOG_WAIT:?}");
            None
        }
    }
}

/// Probes of an `http`/`tcp` check from the host, at the container's address.
struct HostProbes {
    check: Check,
    address: Option<std::net::IpAddr>,
    timeout: Duration,
    interval: Duration,
    describe: String,
}

type ProbeFuture = std::pin::Pin<Box<dyn Future<Output = Probe> + Send>>;

impl HostProbes {
    fn new(spec: &HealthSpec, address: Option<std::net::IpAddr>) -> Self {
        Self {
            check: spec.health.check.clone(),
            address,
            timeout: spec.health.timeout().as_std(),
            interval: spec.health.interval().as_std(),
            describe: spec.describe(address),
        }
    }

    /// The probe after `delay`; kept across `select!` rounds, so output does not postpone it.
    fn next(&self, delay: Duration) -> ProbeFuture {
        let (check, address, timeout) = (self.check.clone(), self.address, self.timeout);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if address.is_none() {
                let outcome = probe::Outcome::Error("the container has no address on its network".into());
                return Probe { at_usec: probe::now_usec(), duration_usec: 0, passed: false, outcome };
            }
            probe::probe(&probe::Target { check: &check, address, timeout, user: None }).await
        })
    }
}

/// The unit's health state file (`/run/kapell/health/`), for `kapell status` and fleet peers.
struct Published {
    base: Option<state::State>,
}

impl Published {
    fn new(
        unit: &str,
        target: (String, Option<String>),
        check: Option<&HealthSpec>,
        probes: Option<&HostProbes>,
    ) -> Self {
        let base = check.map(|h| state::State {
            unit: unit.to_string(),
            service: target.0,
            instance: target.1,
            owner: state::Owner::Supervisor,
            invocation: state::own_invocation(),
            health: String::new(),
            check: probes.map_or_else(|| h.describe(None), |p| p.describe.clone()),
            started_usec: probe::now_usec(),
            failures: 0,
            last_probe: None,
        });
        Self { base }
    }

    fn write(&self, health: Health, failures: u32, last_probe: Option<Probe>) {
        let Some(base) = &self.base else { return };
        let state = state::State { health: health.as_str().to_string(), failures, last_probe, ..base.clone() };
        if let Err(e) = state::write(&state::dir(), &state) {
            log::warn!("{}: cannot write its health state: {e}", base.unit);
        }
    }
}

/// `STACK.SERVICE` and the instance of the container (from its name's labels' source, the spec).
fn target_ref(spec: &ContainerSpec, container: &Container) -> (String, Option<String>) {
    let plain = spec.container_name(None);
    let instance = container.name.strip_prefix(&format!("{plain}-")).map(str::to_string);
    (crate::names::qualified(&spec.stack, &spec.service), instance)
}

/// The next item of an optional stream (the `select!` arm is disabled while it is `None`).
async fn next<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => None,
    }
}

/// Copies what is left of the output once the container has stopped.
async fn drain(output: &mut Option<docker::Output>) {
    let Some(stream) = output else { return };
    let deadline = tokio::time::Instant::now() + DRAIN_OUTPUT;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        forward(chunk);
    }
}

/// The container's stdout to ours, its stderr to ours: the journal files both under the unit.
fn forward(chunk: LogOutput) {
    let result = match chunk {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            let mut out = std::io::stdout().lock();
            out.write_all(&message).and_then(|()| out.flush())
        }
        LogOutput::StdErr { message } => std::io::stderr().lock().write_all(&message),
        LogOutput::StdIn { .. } => Ok(()),
    };
    // Nowhere to report a broken stdout but the log, which may be the same stream: drop the chunk.
    drop(result);
}

/// SIGTERM (systemd's stop) and SIGINT (Ctrl-C when run by hand).
struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    fn new() -> Result<Self> {
        let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(Self { term, int })
    }

    /// Whether a signal has arrived (consumes it).
    fn pending(&mut self) -> bool {
        futures_util::FutureExt::now_or_never(self.recv()).is_some()
    }

    /// Resolves on the next signal; cancel-safe, so every step can `select!` on it.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
