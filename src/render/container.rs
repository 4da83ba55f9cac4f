//! `[X-Kapell-Container]`: everything the supervisor needs, carried inside the unit file.
//!
//! The unit set is self-contained: a container service's unit says which image runs with which
//! command, environment, volumes, ports, health check and limits, so a unit set copied to another
//! host means the same thing there and `systemctl cat` shows an operator what will run. systemd
//! ignores `X-` sections; `kapell run` reads this one back with [`ContainerSpec::from_unit`].
//! Values are written with the same escaper as every other line.

use crate::model::{Container, Health, Kind, OnUnhealthy, Pull, Service, Stack};
use crate::quantity::{Duration, Size};
use crate::unitfile::escape;
use crate::unitfile::{Section, UnitFile, Value};

use crate::unitset::markers::CONTAINER_SECTION as SECTION;

/// Docker's default grace period, used when `stop_timeout` is not set.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration(10_000_000);

/// What `kapell run` needs to run one container service.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub stack: String,
    pub service: String,
    pub container: Container,
    pub user: Option<String>,
    pub env: Vec<(String, String)>,
    pub env_files: Vec<String>,
    pub memory_max: Option<Size>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
    pub secrets: Vec<String>,
    /// The grace period between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
}

impl ContainerSpec {
    /// The spec of a container service; `None` for a native one.
    pub fn from_service(stack: &Stack, service: &Service) -> Option<Self> {
        let Kind::Container(container) = &service.kind else { return None };
        Some(Self {
            stack: stack.name.to_string(),
            service: service.name.to_string(),
            container: container.clone(),
            user: service.user.clone(),
            env: service.env.clone(),
            env_files: service.env_files.clone(),
            memory_max: service.memory_max,
            cpus: service.cpus,
            pids_max: service.pids_max,
            secrets: service.secrets.clone(),
            stop_timeout: service.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        })
    }

    /// The Docker container name: `kapell-<stack>-<service>[-<instance>]`.
    pub fn container_name(&self, instance: Option<&str>) -> String {
        crate::names::container_name(&self.stack, &self.service, instance)
    }

    /// Writes the section. Each key documents the container setting it carries.
    pub fn write(&self, section: &mut Section) {
        let c = &self.container;
        section.add("Stack", Value::word(&self.stack));
        section.add("Service", Value::word(&self.service));
        section.add("Image", Value::word(&c.image));
        section.add("Pull", c.pull.as_str());
        section.add_opt("Entrypoint", c.entrypoint.as_deref().map(Value::words));
        section.add_opt("Command", c.command.as_deref().map(Value::words));
        section.add_opt("User", self.user.as_deref().map(Value::word));
        for (k, v) in &self.env {
            section.add("Environment", Value::word(&format!("{k}={v}")));
        }
        for f in &self.env_files {
            section.add("EnvironmentFile", Value::word(f));
        }
        for v in &c.volumes {
            section.add("Volume", Value::word(v));
        }
        for p in &c.ports {
            section.add("Port", Value::word(p));
        }
        section.add("Network", Value::word(&c.network));
        if let Some(h) = &c.health {
            section.add("HealthCmd", Value::words(&h.cmd));
            section.add_opt("HealthInterval", h.interval.map(|d| d.to_string()));
            section.add_opt("HealthTimeout", h.timeout.map(|d| d.to_string()));
            section.add_opt("HealthRetries", h.retries.map(|r| r.to_string()));
            section.add_opt("HealthStartPeriod", h.start_period.map(|d| d.to_string()));
            section.add("OnUnhealthy", c.on_unhealthy.as_str());
        }
        section.add_opt("MemoryMax", self.memory_max.map(|s| s.to_string()));
        section.add_opt("CPUs", self.cpus.map(|c| c.to_string()));
        section.add_opt("PidsMax", self.pids_max.map(|p| p.to_string()));
        for s in &self.secrets {
            section.add("Secret", Value::word(s));
        }
        section.add("StopTimeout", self.stop_timeout.to_string());
    }

    /// Reads the section back from a unit file.
    pub fn from_unit(unit: &UnitFile) -> Result<Self, String> {
        let section = unit.get_section(SECTION).ok_or_else(|| format!("the unit has no [{SECTION}] section"))?;
        let words = |key: &str| -> Result<Option<Vec<String>>, String> {
            section.get(key).map(|v| escape::unquote(v).map_err(|e| format!("{key}=: {e}"))).transpose()
        };
        let one = |key: &str| -> Result<Option<String>, String> {
            match words(key)? {
                None => Ok(None),
                Some(mut w) if w.len() == 1 => Ok(w.pop()),
                Some(_) => Err(format!("{key}= must be one word")),
            }
        };
        let all = |key: &str| -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            for v in section.get_all(key) {
                out.extend(escape::unquote(v).map_err(|e| format!("{key}=: {e}"))?);
            }
            Ok(out)
        };
        let required = |key: &str| one(key)?.ok_or_else(|| format!("{key}= is missing"));
        let duration = |key: &str| one(key)?.map(|d| Duration::parse(&d)).transpose();
        let number = |key: &str| one(key)?.map(|n| n.parse::<f64>().map_err(|e| format!("{key}=: {e}"))).transpose();

        let health = match words("HealthCmd")? {
            Some(cmd) => Some(Health {
                cmd,
                interval: duration("HealthInterval")?,
                timeout: duration("HealthTimeout")?,
                retries: number("HealthRetries")?.map(|r| r as u32),
                start_period: duration("HealthStartPeriod")?,
            }),
            None => None,
        };
        let env = all("Environment")?
            .into_iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or(format!("Environment={kv:?} has no '='"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stack: required("Stack")?,
            service: required("Service")?,
            container: Container {
                image: required("Image")?,
                command: words("Command")?,
                entrypoint: words("Entrypoint")?,
                volumes: all("Volume")?,
                ports: all("Port")?,
                network: one("Network")?.unwrap_or_else(|| "bridge".into()),
                pull: one("Pull")?.map_or(Some(Pull::Missing), |p| Pull::parse(&p)).ok_or("Pull= is invalid")?,
                health,
                on_unhealthy: match one("OnUnhealthy")?.as_deref() {
                    Some("ignore") => OnUnhealthy::Ignore,
                    _ => OnUnhealthy::Restart,
                },
            },
            user: one("User")?,
            env,
            env_files: all("EnvironmentFile")?,
            memory_max: one("MemoryMax")?.map(|s| Size::parse(&s)).transpose()?,
            cpus: number("CPUs")?,
            pids_max: number("PidsMax")?.map(|p| p as u64),
            secrets: all("Secret")?,
            stop_timeout: duration("StopTimeout")?.unwrap_or(DEFAULT_STOP_TIMEOUT),
        })
    }
}
