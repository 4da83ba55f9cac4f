//! The validated model of a stack: what the renderer, the supervisor and the fleet work from.
//!
//! Everything here has passed validation: names match their patterns, paths are absolute,
//! durations and sizes are parsed. Spans are kept where host-wide checks (dependencies, unit-name
//! collisions) may still need to point at the file.

use crate::diagnostics::Source;
use crate::names::{self, Name};
use crate::quantity::{Duration, Size};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// One stack file: a service graph.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The file stem; `[a-z][a-z0-9-]{0,31}`.
    pub name: Name,
    pub source: Arc<Source>,
    /// The file's absolute path, for `SourcePath=` and the generated-by header.
    pub path: std::path::PathBuf,
    pub description: Option<String>,
    /// `WantedBy=multi-user.target` for the stack target.
    pub enable: bool,
    /// In file order; private so that [`Stack::service`]'s index always matches it.
    services: Vec<Service>,
    /// Service name → index in `services`: every lookup by name is O(1), however big the stack.
    index: HashMap<Name, usize>,
    pub secrets: Vec<Secret>,
}

impl Stack {
    pub fn new(
        name: String,
        source: Arc<Source>,
        path: std::path::PathBuf,
        description: Option<String>,
        enable: bool,
        services: Vec<Service>,
        secrets: Vec<Secret>,
    ) -> Self {
        let mut stack = Self {
            name: name.into(),
            source,
            path,
            description,
            enable,
            services: Vec::new(),
            index: HashMap::new(),
            secrets,
        };
        stack.set_services(services);
        stack
    }

    /// The services, in file order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service of that name. (Names are unique in a stack; should a list hold one twice, the
    /// first wins, as a scan would find it.)
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.service_index(name).map(|i| &self.services[i])
    }

    /// The position of the service of that name in [`Stack::services`].
    pub fn service_index(&self, name: &str) -> Option<usize> {
        crate::lookups::count();
        self.index.get(name).copied()
    }

    /// Keeps only the services `keep` accepts (a fleet host's share of a stack), in order.
    pub fn retain_services(&mut self, keep: impl FnMut(&Service) -> bool) {
        let mut services = std::mem::take(&mut self.services);
        services.retain(keep);
        self.set_services(services);
    }

    fn set_services(&mut self, services: Vec<Service>) {
        self.index.clear();
        self.index.reserve(services.len());
        for (i, s) in services.iter().enumerate() {
            self.index.entry(s.name.clone()).or_insert(i);
        }
        self.services = services;
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// Any service has a fleet placement: the stack is the fleet's (see `crate::fleet::controller::placement`).
    pub fn has_placement(&self) -> bool {
        self.services().iter().any(|s| !s.placement.is_unrestricted())
    }

    /// `<stack>.target`.
    pub fn target_unit(&self) -> String {
        names::target_unit(&self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: Name,
    /// The service's key in `[services.<name>]`.
    pub span: Range<usize>,
    pub kind: Kind,
    pub requires: Vec<Dependency>,
    pub wants: Vec<Dependency>,
    /// `None`: a plain unit; `Some(n)`: a template with instances `1..=n`.
    pub replicas: Option<u32>,
    pub restart: Restart,
    pub restart_delay: Option<Duration>,
    pub stop_timeout: Option<Duration>,
    pub user: Option<String>,
    /// In file order.
    pub env: Vec<(String, String)>,
    pub env_files: Vec<String>,
    pub memory_max: Option<Size>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
    /// Names of the stack's `[secrets.*]` this service receives.
    pub secrets: Vec<String>,
    /// `[services.<name>.systemd]` pass-through, in file order.
    pub systemd: Vec<PassThrough>,
    pub placement: Placement,
    /// `health`: the check that says the service is ready and stays healthy. Boxed, as a
    /// container is ([`Kind`]): most services have none.
    pub health: Option<Box<Health>>,
    /// What happens when the check fails `retries` times in a row (meaningful with `health`).
    pub on_unhealthy: OnUnhealthy,
}

impl Service {
    pub fn is_container(&self) -> bool {
        matches!(self.kind, Kind::Container(_))
    }

    /// The unit file name: `<stack>-<service>.service` or the template `<stack>-<service>@.service`.
    pub fn unit_file_name(&self, stack: &str) -> String {
        names::service_file(stack, &self.name, self.replicas.is_some())
    }

    /// The units that run: the plain unit, or every instance of the template.
    pub fn running_units(&self, stack: &str) -> Vec<String> {
        names::running_units(stack, &self.name, self.replicas)
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Boxed: a container's fields are most of a service's size, and a stack's services are
    /// moved into one vector as they are read (a smaller service is fewer pages to touch).
    Container(Box<Container>),
    Native(Native),
}

/// A container service, run by `kapell run` through the Docker Engine API.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub volumes: Vec<String>,
    pub ports: Vec<String>,
    /// `network`: `None` is the stack's own network `kapell-<stack>` (created by the supervisor);
    /// otherwise `bridge`, `host`, `none` or the name of an existing Docker network.
    pub network: Option<String>,
    pub pull: Pull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    Missing,
    Always,
    Never,
}

impl Pull {
    pub const NAMES: [&str; 3] = ["missing", "always", "never"];

    pub fn as_str(self) -> &'static str {
        match self {
            Pull::Missing => "missing",
            Pull::Always => "always",
            Pull::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "missing" => Some(Pull::Missing),
            "always" => Some(Pull::Always),
            "never" => Some(Pull::Never),
            _ => None,
        }
    }
}

/// A service's health check (`health = { … }`), for containers and native services alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: Check,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

impl Health {
    pub const DEFAULT_INTERVAL: Duration = Duration(10_000_000);
    pub const DEFAULT_TIMEOUT: Duration = Duration(2_000_000);
    pub const DEFAULT_RETRIES: u32 = 3;

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(Self::DEFAULT_RETRIES)
    }

    pub fn start_period(&self) -> Duration {
        self.start_period.unwrap_or(Duration(0))
    }
}

/// What a health check does: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `http = <port>`: a GET of `path` from the host; healthy on a status in `expect`.
    Http { port: u16, path: String, expect: StatusRange },
    /// `tcp = <port>`: a TCP connection from the host opens.
    Tcp { port: u16 },
    /// `cmd = [...]`: exits 0 (inside the container, or on the host as the service's user).
    Cmd(Vec<String>),
}

impl Check {
    /// The key that chose it (`http`, `tcp`, `cmd`).
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Http { .. } => "http",
            Check::Tcp { .. } => "tcp",
            Check::Cmd(_) => "cmd",
        }
    }
}

/// HTTP status codes counted as healthy: `"200-399"` (the default) or one code `"204"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub first: u16,
    pub last: u16,
}

impl StatusRange {
    pub const DEFAULT: StatusRange = StatusRange { first: 200, last: 399 };

    /// `"200-399"` or `"204"`, codes from 100 to 599, the first not above the last.
    pub fn parse(s: &str) -> Result<Self, String> {
        let code = |c: &str| c.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
        let range = match s.split_once('-') {
            Some((a, b)) => code(a).zip(code(b)).map(|(first, last)| StatusRange { first, last }),
            None => code(s).map(|c| StatusRange { first: c, last: c }),
        };
        range.filter(|r| r.first <= r.last).ok_or_else(|| {
            format!(
                "invalid `expect` {s:?}: use an HTTP status code or a range of them, e.g. \"200\" or \"200-399\" \
                 (codes from 100 to 599)"
            )
        })
    }

    pub fn contains(self, code: u16) -> bool {
        (self.first..=self.last).contains(&code)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnhealthy {
    Restart,
    Ignore,
}

impl OnUnhealthy {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnhealthy::Restart => "restart",
            OnUnhealthy::Ignore => "ignore",
        }
    }
}

/// A native service: systemd runs the process directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    pub exec: Vec<String>,
    pub service_type: ServiceType,
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Simple,
    Notify,
    Oneshot,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// One entry of `requires`/`wants`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub target: DepTarget,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DepTarget {
    /// A service of the same stack.
    Local(String),
    /// `"<stack>.<service>"`: a service of another stack on the same host.
    Remote { stack: String, service: String },
    /// A plain systemd unit (`network-online.target`).
    Unit(String),
}

/// A `[secrets.<name>]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// `LoadCredential=<name>:<path>`.
    File(String),
    /// `SetCredentialEncrypted=<name>:<base64>` (the output of `systemd-creds encrypt`).
    Encrypted(String),
}

/// One `[services.<name>.systemd]` line: `[Section] Key=value` as the operator wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct PassThrough {
    pub section: String,
    pub key: String,
    pub value: String,
    /// Where the value was written (one item of an array), for errors about it.
    pub span: Range<usize>,
}

/// Where a service runs in a fleet (ignored on a single host).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub hosts: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub global: bool,
    /// Where the `placement` table was written (empty when there is none), for fleet errors.
    pub span: std::ops::Range<usize>,
}

impl Placement {
    /// No placement given: the service runs wherever its stack is applied.
    pub fn is_unrestricted(&self) -> bool {
        self.hosts.is_empty() && self.labels.is_empty() && !self.global
    }
}
