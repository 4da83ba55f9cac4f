//! The Docker Engine API calls the supervisor makes (bollard), each with an error that says what
//! failed in words an operator knows from the docker CLI.

use crate::health::probe::{Outcome, Probe};
use crate::printable::printable;
use crate::status::Health;
use anyhow::{Context as _, Result, anyhow};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, CreateImageInfo, HealthcheckResult, NetworkConnectRequest,
    NetworkCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::{Stream, StreamExt as _};
use std::collections::HashMap;
use std::pin::Pin;

/// Where bollard connects: `$DOCKER_HOST`, else the local socket.
pub fn host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// A connected engine, its API version negotiated.
pub struct Engine {
    docker: Docker,
}

/// A container kapell created: its id for the API, its name for people.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// What Docker warned about when creating it.
    pub warnings: Vec<String>,
}

/// A Docker network with a given name (Docker may hold several with one name for a moment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub id: String,
    /// Docker's creation time (RFC 3339 in UTC with nanoseconds: sorts like the time).
    pub created: String,
}

/// A container's stdout/stderr, as attached.
pub type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;

impl Engine {
    /// Connects and negotiates the API version (which also proves the engine answers).
    /// `timeout` bounds each request's wait for a response; a stop with a grace period must fit.
    pub async fn connect(timeout: std::time::Duration) -> Result<Self> {
        let host = host();
        let unreachable = || format!("Docker is not reachable at {host}");
        let docker = Docker::connect_with_defaults().map_err(cause).with_context(unreachable)?;
        let docker = docker.with_timeout(timeout).negotiate_version().await.map_err(cause).with_context(unreachable)?;
        Ok(Self { docker })
    }

    /// The networks named exactly `name`.
    pub async fn networks_named(&self, name: &str) -> Result<Vec<NetworkRef>> {
        // Docker's `name` filter also matches parts of names: keep only the exact ones.
        let filters = HashMap::from([("name", vec![name.to_string()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(cause)
            .with_context(|| format!("cannot list the networks named {name}"))?;
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some(NetworkRef { id: n.id?, created: n.created.unwrap_or_default() }))
            .collect())
    }

    /// kapell's stack networks (label `kapell.network=stack`): `(name, subnet, gateway)` of each
    /// IPAM range that has a gateway.
    pub async fn stack_networks(&self) -> Result<Vec<(String, String, String)>> {
        let filters = HashMap::from([("label", vec![format!("{}=stack", super::label::NETWORK)])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks =
            self.docker.list_networks(Some(options)).await.map_err(cause).context("cannot list kapell's networks")?;
        let mut out = Vec::new();
        for network in networks {
            let name = network.name.unwrap_or_default();
            for range in network.ipam.and_then(|i| i.config).unwrap_or_default() {
                if let (Some(subnet), Some(gateway)) = (range.subnet, range.gateway) {
                    out.push((name.clone(), subnet, gateway));
                }
            }
        }
        Ok(out)
    }

    /// The gateways of network `name` (its address on the host side of the bridge).
    pub async fn network_gateways(&self, name: &str) -> Result<Vec<String>> {
        let network = self
            .docker
            .inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map_err(cause)
            .with_context(|| format!("cannot inspect network {name}"))?;
        Ok(network.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().filter_map(|r| r.gateway).collect())
    }

    /// Creates bridge network `name` with `labels`; its id, or `None` when Docker says one of that
    /// name exists already (created by someone else a moment ago).
    pub async fn create_network(&self, name: &str, labels: HashMap<String, String>) -> Result<Option<String>> {
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            attachable: Some(true),
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(created) => Ok(Some(created.id)),
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(None),
            Err(e) => Err(cause(e)).with_context(|| format!("cannot create network {name}")),
        }
    }

    /// Removes network `id`; one that is gone already is fine.
    pub async fn remove_network(&self, id: &str) -> Result<()> {
        match self.docker.remove_network(id).await {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(cause(e)).with_context(|| format!("cannot remove network {id}")),
        }
    }

    /// Connects the (created, not yet started) container to `network` (a name or an id).
    pub async fn connect_network(&self, c: &Container, network: &str) -> Result<()> {
        let request = NetworkConnectRequest { container: c.id.clone(), endpoint_config: None };
        self.docker
            .connect_network(network, request)
            .await
            .map_err(cause)
            .with_context(|| format!("cannot connect container {} to network {network}", c.name))
    }

    /// Every running container with a kapell unit label: its unit and its address on each
    /// network (`(network, address)`, in network name order).
    pub async fn addresses(&self) -> Result<HashMap<String, Vec<(String, String)>>> {
        let filters = HashMap::from([("label", vec![super::label::UNIT.to_string()])]);
        let options = ListContainersOptionsBuilder::new().filters(&filters).build();
        let containers =
            self.docker.list_containers(Some(options)).await.map_err(cause).context("cannot list the containers")?;
        let mut out = HashMap::new();
        for c in containers {
            let Some(unit) = c.labels.as_ref().and_then(|l| l.get(super::label::UNIT)) else { continue };
            let networks = c.network_settings.and_then(|n| n.networks).unwrap_or_default();
            let mut addresses: Vec<(String, String)> = networks
                .into_iter()
                .filter_map(|(net, endpoint)| Some((net, endpoint.ip_address.filter(|a| !a.is_empty())?)))
                .collect();
            addresses.sort();
            out.insert(unit.clone(), addresses);
        }
        Ok(out)
    }

    /// The container's address on `network` (its Docker name), else on any of its networks; `None`
    /// when it has none (it stopped, or its network gives no address).
    pub async fn address(&self, c: &Container, network: &str) -> Result<Option<std::net::IpAddr>> {
        let networks = self.inspect(c).await?.network_settings.and_then(|n| n.networks).unwrap_or_default();
        let address = |endpoint: &bollard::models::EndpointSettings| {
            endpoint.ip_address.as_deref().and_then(|a| a.parse::<std::net::IpAddr>().ok())
        };
        let preferred = networks.get(network).and_then(address);
        Ok(preferred.or_else(|| {
            let mut names: Vec<&String> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|n| address(&networks[n]))
        }))
    }

    /// Pulls `image` (one tag: `:latest` when it names none); the stream ends when the pull is done.
    pub fn pull(&self, image: &str) -> impl Stream<Item = Result<CreateImageInfo>> + use<> {
        let options = CreateImageOptionsBuilder::new().from_image(&with_tag(image)).build();
        self.docker.create_image(Some(options), None, None).map(|r| r.map_err(cause))
    }

    /// Removes container `name` (or id) with its anonymous volumes, killing it if it runs.
    /// `Ok(false)` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(cause(e)).with_context(|| format!("cannot remove container {name}")),
        }
    }

    /// Creates container `name`; `None` when its image is not present.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<Option<Container>> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(Some(Container { id: created.id, name: name.to_string(), warnings: created.warnings })),
            Err(DockerError::DockerResponseServerError { status_code: 404, message })
                if message.starts_with("No such image") =>
            {
                Ok(None)
            }
            Err(e) => Err(cause(e)).with_context(|| format!("cannot create container {name}")),
        }
    }

    /// Attaches to the container's stdout and stderr (before it starts, so nothing is missed).
    pub async fn attach(&self, c: &Container) -> Result<Output> {
        let options = AttachContainerOptionsBuilder::new().stream(true).stdout(true).stderr(true).build();
        let attached = self
            .docker
            .attach_container(&c.id, Some(options))
            .await
            .map_err(cause)
            .with_context(|| format!("cannot attach to the output of container {}", c.name))?;
        Ok(attached.output)
    }

    pub async fn start(&self, c: &Container) -> Result<()> {
        self.docker
            .start_container(&c.id, None)
            .await
            .map_err(cause)
            .with_context(|| format!("cannot start container {}", c.name))
    }

    /// Waits until the container is not running; its exit code.
    pub async fn wait(&self, c: &Container) -> Result<i64> {
        let lost = || format!("lost track of container {}", c.name);
        let mut stream = self.docker.wait_container(&c.id, None::<WaitContainerOptions>);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard turns a non-zero exit into an error; Docker's message (if any) is not ours to judge.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(cause(e)).with_context(lost),
            None => Err(anyhow!("Docker ended the wait without an exit code")).with_context(lost),
        }
    }

    /// Stops the container: its stop signal, then SIGKILL after `grace_secs`.
    pub async fn stop(&self, c: &Container, grace_secs: i64) -> Result<()> {
        let t = i32::try_from(grace_secs).unwrap_or(i32::MAX);
        match self.docker.stop_container(&c.id, Some(StopContainerOptionsBuilder::new().t(t).build())).await {
            // 304: it had already stopped.
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(cause(e)).with_context(|| format!("cannot stop container {}", c.name)),
        }
    }

    /// What Docker's health log says of the container's check: the failures in a row and the
    /// latest probe, `None` before Docker has run one.
    pub async fn last_health_probe(&self, c: &Container) -> Result<Option<(u32, Probe)>> {
        let Some(health) = self.inspect(c).await?.state.and_then(|s| s.health) else { return Ok(None) };
        let failures = health.failing_streak.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        Ok(health.log.unwrap_or_default().last().and_then(probe_of).map(|probe| (failures, probe)))
    }

    async fn inspect(&self, c: &Container) -> Result<ContainerInspectResponse> {
        self.docker
            .inspect_container(&c.id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(cause)
            .with_context(|| format!("cannot inspect container {}", c.name))
    }

    /// The container's health changes from `since` (Unix time in seconds) on.
    pub fn health_events(&self, c: &Container, since: f64) -> impl Stream<Item = Result<Health>> + use<> {
        let filters = HashMap::from([
            ("container", vec![c.id.clone()]),
            ("type", vec!["container".to_string()]),
            ("event", vec!["health_status".to_string()]),
        ]);
        let options = EventsOptionsBuilder::new().since(&format!("{since:.9}")).filters(&filters).build();
        self.docker.events(Some(options)).filter_map(|event| async move {
            match event {
                // "health_status: healthy"
                Ok(e) => match e.action.as_deref().and_then(|a| a.rsplit(' ').next()) {
                    Some("starting") => Some(Ok(Health::Starting)),
                    Some("healthy") => Some(Ok(Health::Healthy)),
                    Some("unhealthy") => Some(Ok(Health::Unhealthy)),
                    _ => None,
                },
                Err(e) => Some(Err(cause(e).context("lost Docker's event stream"))),
            }
        })
    }
}

/// One entry of Docker's health log as a probe. Docker runs a `cmd` check itself and records how
/// it ended: 0 passed, 1 failed, -1 did not run or ran out of time (the reason is its output).
fn probe_of(entry: &HealthcheckResult) -> Option<Probe> {
    let at_usec = epoch_usec(entry.start.as_deref()?)?;
    let end_usec = entry.end.as_deref().and_then(epoch_usec).unwrap_or(at_usec);
    let code = entry.exit_code?;
    let outcome = match i32::try_from(code) {
        Ok(status) if status >= 0 => Outcome::ExitStatus(status),
        _ => {
            let reason = entry.output.as_deref().and_then(|o| o.lines().map(str::trim).find(|l| !l.is_empty()));
            Outcome::Error(printable(reason.unwrap_or("the check did not run")).into_owned())
        }
    };
    Some(Probe { at_usec, duration_usec: end_usec.saturating_sub(at_usec), passed: code == 0, outcome })
}

/// µs since the epoch of an RFC 3339 time as Docker writes it (`2026-12-07T02:10:11.123456789Z`,
/// or with the daemon's offset).
fn epoch_usec(text: &str) -> Option<u64> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(time.unix_timestamp_nanos() / 1000).ok()
}

/// `image` with `:latest` added when it names neither a tag nor a digest, so a pull never fetches
/// every tag of a repository.
pub fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') { image.to_string() } else { format!("{image}:latest") }
}

/// Docker's own message for API errors (it already names the object), made printable (it may
/// quote an image's or a file's name); the error itself otherwise.
fn cause(e: DockerError) -> anyhow::Error {
    match e {
        DockerError::DockerResponseServerError { message, .. } => anyhow!("{}", printable(message.trim())),
        DockerError::DockerStreamError { error } => anyhow!("{}", printable(error.trim())),
        DockerError::RequestTimeoutError => anyhow!("Docker did not answer in time"),
        e => transport_cause(&e),
    }
}

/// For connection failures the innermost cause is the clear one ("Connection refused"); the
/// layers above it repeat each other ("client error (Connect)").
fn transport_cause(e: &DockerError) -> anyhow::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return anyhow!("{io}");
        }
        innermost = s.to_string();
        source = s.source();
    }
    anyhow!("{innermost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_name_one_tag() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("busybox:1"), "busybox:1");
        assert_eq!(with_tag("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(with_tag("localhost:5000/app:2"), "localhost:5000/app:2");
        assert_eq!(with_tag("app@sha256:abc"), "app@sha256:abc");
    }

    fn entry(start: &str, end: &str, code: i64, output: &str) -> HealthcheckResult {
        HealthcheckResult {
            start: Some(start.into()),
            end: Some(end.into()),
            exit_code: Some(code),
            output: Some(output.into()),
        }
    }

    /// Docker's health log entries become probes: when, how long, and how the check ended.
    #[test]
    fn docker_health_log_entries_are_probes() {
        // 2026-12-07T02:10:11Z is 1,796,609,411 s after the epoch.
        let failed =
            probe_of(&entry("2026-12-07T02:10:11.5Z", "2026-12-07T02:10:11.523456789Z", 1, "nope\n")).expect("a probe");
        assert_eq!(
            failed,
            Probe {
                at_usec: 1_796_609_411_500_000,
                duration_usec: 23_456,
                passed: false,
                outcome: Outcome::ExitStatus(1)
            }
        );
        // The daemon's offset is honoured; exit status 0 passed.
        let passed =
            probe_of(&entry("2026-12-07T03:10:11+01:00", "2026-12-07T03:10:11.001+01:00", 0, "")).expect("a probe");
        assert_eq!((passed.at_usec, passed.duration_usec, passed.passed), (1_796_609_411_000_000, 1_000, true));
        assert_eq!(passed.outcome, Outcome::ExitStatus(0));
        // -1: Docker could not run it or it ran out of time; its output says which, on one line.
        let timed_out = probe_of(&entry(
            "2026-12-07T02:10:11Z",
            "2026-12-07T02:10:12Z",
            -1,
            "\nHealth check exceeded timeout (1s)\u{1b}[2J\n",
        ))
        .expect("a probe");
        assert_eq!(timed_out.outcome, Outcome::Error("Health check exceeded timeout (1s)\\u{1b}[2J".into()));
        assert!(!timed_out.passed);
        // No start time, or one Docker would not write: no probe.
        assert_eq!(probe_of(&HealthcheckResult { start: None, ..entry("", "", 0, "") }), None);
        assert_eq!(probe_of(&entry("yesterday", "", 0, "")), None);
    }
}
