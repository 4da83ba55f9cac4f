//! `[X-Kapell-Container]`: everything the supervisor needs, carried inside the unit file.
//!
//! The unit set is self-contained: a container service's unit says which image runs with which
//! command, environment, volumes, ports, health check and limits, so a unit set copied to another
//! host means the same thing there and `systemctl cat` shows an operator what will run. systemd
//! ignores `X-` sections; `kapell run` reads this one back with [`ContainerSpec::from_unit`].
//! Values are written with the same escaper as every other line.

use crate::model::{Container, DepTarget, Kind, Pull, Service, Stack};
use crate::quantity::{Duration, Size};
use crate::render::health::HealthSpec;
#[cfg(test)]
use crate::unitfile::UnitText;
use crate::unitfile::escape;
use crate::unitfile::{SectionText, UnitFile};

use crate::unitset::markers::CONTAINER_SECTION as SECTION;
use std::borrow::Cow;

/// Docker's default grace period, used when `stop_timeout` is not set.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration(10_000_000);

/// What `kapell run` needs to run one container service.
///
/// Rendering borrows the model's values (a generator run makes one spec per container service
/// and drops it once the section is written); reading a unit back gives an owned spec
/// (`ContainerSpec<'static>`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec<'a> {
    pub stack: Cow<'a, str>,
    pub service: Cow<'a, str>,
    /// The container. Its `network` is the stack file's choice (if any) when rendering, and
    /// the network written in the unit when read back; either way the network the container
    /// joins, and the one the unit carries, is [`ContainerSpec::network`].
    pub container: Cow<'a, Container>,
    pub user: Option<Cow<'a, str>>,
    pub env: Cow<'a, [(String, String)]>,
    pub env_files: Cow<'a, [String]>,
    pub memory_max: Option<Size>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
    pub secrets: Cow<'a, [String]>,
    /// The grace period between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    /// The networks the container joins and its names there.
    pub network: NetworkSpec,
    /// The health check (`[X-Kapell-Health]`, a section of its own shared with native services).
    pub health: Option<HealthSpec>,
}

/// The networks of a container and its DNS names on them.
///
/// By default a container joins its stack's network `kapell-<stack>`, where it answers to
/// `<service>` and `<service>.<stack>` (and each replica also to `<service>-<n>`), and the
/// networks of the other stacks it `requires` or `wants` a service of, so that
/// `<service>.<other stack>` resolves from it. The supervisor creates the stack networks it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// `Network=`: Docker's network mode, the network the container is created on.
    pub name: String,
    /// `NetworkAlias=`: its DNS names on that network; `%i` stands for the replica number.
    pub aliases: Vec<String>,
    /// `JoinNetwork=`: networks of the other stacks it depends on, joined before it starts.
    pub joins: Vec<String>,
}

/// The specifier in an alias that the supervisor replaces with the replica number.
const INSTANCE: &str = "%i";

impl NetworkSpec {
    /// The network of stack `stack`: `kapell-<stack>`.
    pub fn of_stack(stack: &str) -> String {
        ["kapell-", stack].concat()
    }

    /// The settings of `service` of `stack` per the stack file.
    pub fn for_service(stack: &str, service: &Service, network: Option<&str>) -> Self {
        let name = network.map_or_else(|| Self::of_stack(stack), str::to_string);
        let mut spec = Self { name, aliases: Vec::new(), joins: Vec::new() };
        if !spec.is_user_defined() {
            // Docker gives no DNS names on its default bridge, and host/none join nothing.
            return spec;
        }
        spec.aliases = vec![service.name.to_string(), [&service.name, ".", stack].concat()];
        if service.replicas.is_some() {
            spec.aliases.push([&service.name, "-", INSTANCE].concat());
        }
        let mut joins: Vec<String> = service
            .requires
            .iter()
            .chain(&service.wants)
            .filter_map(|d| match &d.target {
                DepTarget::Remote { stack: other, .. } if other != stack => Some(Self::of_stack(other)),
                _ => None,
            })
            .filter(|n| *n != spec.name)
            .collect();
        joins.sort();
        joins.dedup();
        spec.joins = joins;
        spec
    }

    /// Whether the network is a user-defined one (with DNS names), not `bridge`, `host` or `none`.
    pub fn is_user_defined(&self) -> bool {
        !matches!(self.name.as_str(), "bridge" | "host" | "none" | "default")
    }

    /// The aliases of replica `instance` (`%i` replaced); a plain service's as written.
    pub fn aliases_of(&self, instance: Option<&str>) -> Vec<String> {
        self.aliases
            .iter()
            .filter_map(|a| match instance {
                Some(i) => Some(a.replace(INSTANCE, i)),
                None => (!a.contains(INSTANCE)).then(|| a.clone()),
            })
            .collect()
    }

    /// The networks kapell creates when they are missing: the stack's own (when the container is
    /// on it) and those of the stacks it depends on. Any other network must exist already.
    pub fn stack_networks(&self, stack: &str) -> Vec<&str> {
        let own = (self.name == Self::of_stack(stack)).then_some(self.name.as_str());
        own.into_iter().chain(self.joins.iter().map(String::as_str)).collect()
    }
}

impl<'a> ContainerSpec<'a> {
    /// The spec of a container service; `None` for a native one.
    pub fn from_service(stack: &'a Stack, service: &'a Service) -> Option<Self> {
        let Kind::Container(container) = &service.kind else { return None };
        let network = NetworkSpec::for_service(&stack.name, service, container.network.as_deref());
        Some(Self {
            stack: Cow::Borrowed(&stack.name),
            service: Cow::Borrowed(&service.name),
            container: Cow::Borrowed(container),
            network,
            user: service.user.as_deref().map(Cow::Borrowed),
            env: Cow::Borrowed(&service.env),
            env_files: Cow::Borrowed(&service.env_files),
            memory_max: service.memory_max,
            cpus: service.cpus,
            pids_max: service.pids_max,
            secrets: Cow::Borrowed(&service.secrets),
            stop_timeout: service.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            health: super::health::health_spec(service),
        })
    }

    /// The Docker container name: `kapell-<stack>-<service>[-<instance>]`.
    pub fn container_name(&self, instance: Option<&str>) -> String {
        crate::names::container_name(&self.stack, &self.service, instance)
    }

    /// Writes the section's entries (the caller began it). Each key documents the container
    /// setting it carries.
    pub fn write(&self, section: &mut SectionText) {
        let c = &self.container;
        section.word("Stack", &self.stack);
        section.word("Service", &self.service);
        section.word("Image", &c.image);
        section.line("Pull", c.pull.as_str());
        if let Some(entrypoint) = &c.entrypoint {
            section.words("Entrypoint", entrypoint);
        }
        if let Some(command) = &c.command {
            section.words("Command", command);
        }
        if let Some(user) = &self.user {
            section.word("User", user);
        }
        for (k, v) in self.env.iter() {
            section.word("Environment", &[k.as_str(), "=", v].concat());
        }
        for f in self.env_files.iter() {
            section.word("EnvironmentFile", f);
        }
        for v in &c.volumes {
            section.word("Volume", v);
        }
        for p in &c.ports {
            section.word("Port", p);
        }
        section.word("Network", &self.network.name);
        for a in &self.network.aliases {
            // Service and stack names are validated (`[a-z0-9-]`); `%i` is written as the
            // specifier it stands for, so `systemctl cat` reads `NetworkAlias=web-%i`.
            section.line("NetworkAlias", a);
        }
        for j in &self.network.joins {
            section.word("JoinNetwork", j);
        }
        if let Some(memory) = self.memory_max {
            section.display("MemoryMax", memory);
        }
        if let Some(cpus) = self.cpus {
            section.display("CPUs", cpus);
        }
        if let Some(pids) = self.pids_max {
            section.display("PidsMax", pids);
        }
        for s in self.secrets.iter() {
            section.word("Secret", s);
        }
        section.display("StopTimeout", self.stop_timeout);
    }

    /// Reads the section back from a unit file.
    pub fn from_unit(unit: &UnitFile) -> Result<ContainerSpec<'static>, String> {
        let section = unit.get_section(SECTION).ok_or_else(|| format!("the unit has no [{SECTION}] section"))?;
        let words = |key: &str| section.words(key);
        let one = |key: &str| section.word(key);
        let all = |key: &str| section.all_words(key);
        let required = |key: &str| one(key)?.ok_or_else(|| format!("{key}= is missing"));
        let duration = |key: &str| one(key)?.map(|d| Duration::parse(&d)).transpose();
        let number = |key: &str| one(key)?.map(|n| n.parse::<f64>().map_err(|e| format!("{key}=: {e}"))).transpose();

        let stack = required("Stack")?;
        let network = NetworkSpec {
            name: one("Network")?.unwrap_or_else(|| NetworkSpec::of_stack(&stack)),
            aliases: {
                let mut aliases = Vec::new();
                for v in section.get_all("NetworkAlias") {
                    let v = v.replace(INSTANCE, "%%i");
                    aliases.extend(escape::unquote(&v).map_err(|e| format!("NetworkAlias=: {e}"))?);
                }
                aliases
            },
            joins: all("JoinNetwork")?,
        };
        let env: Vec<(String, String)> = all("Environment")?
            .into_iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or(format!("Environment={kv:?} has no '='"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ContainerSpec {
            stack: stack.into(),
            service: required("Service")?.into(),
            container: Cow::Owned(Container {
                image: required("Image")?,
                command: words("Command")?,
                entrypoint: words("Entrypoint")?,
                volumes: all("Volume")?,
                ports: all("Port")?,
                network: Some(network.name.clone()),
                pull: one("Pull")?.map_or(Some(Pull::Missing), |p| Pull::parse(&p)).ok_or("Pull= is invalid")?,
            }),
            user: one("User")?.map(Cow::Owned),
            env: Cow::Owned(env),
            env_files: all("EnvironmentFile")?.into(),
            memory_max: one("MemoryMax")?.map(|s| Size::parse(&s)).transpose()?,
            cpus: number("CPUs")?,
            pids_max: number("PidsMax")?.map(|p| p as u64),
            secrets: all("Secret")?.into(),
            stop_timeout: duration("StopTimeout")?.unwrap_or(DEFAULT_STOP_TIMEOUT),
            network,
            health: HealthSpec::from_unit(unit)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_aliases_name_the_instance() {
        let spec = NetworkSpec {
            name: "kapell-shop".into(),
            aliases: vec!["web".into(), "web.shop".into(), "web-%i".into()],
            joins: Vec::new(),
        };
        assert_eq!(spec.aliases_of(Some("3")), ["web", "web.shop", "web-3"]);
        assert_eq!(spec.aliases_of(None), ["web", "web.shop"]);
        assert_eq!(spec.stack_networks("shop"), ["kapell-shop"]);
        assert!(spec.stack_networks("other").is_empty(), "another stack's network is not created for it");
    }

    #[test]
    fn the_section_reads_back() -> Result<(), String> {
        let network = NetworkSpec {
            name: "kapell-shop".into(),
            aliases: vec!["web".into(), "web.shop".into(), "web-%i".into()],
            joins: vec!["kapell-pay".into()],
        };
        let spec = ContainerSpec {
            stack: "shop".into(),
            service: "web".into(),
            container: Cow::Owned(Container {
                image: "shop:2".into(),
                command: None,
                entrypoint: None,
                volumes: Vec::new(),
                ports: Vec::new(),
                network: Some("kapell-shop".into()),
                pull: Pull::Missing,
            }),
            user: None,
            env: Vec::new().into(),
            env_files: Vec::new().into(),
            memory_max: None,
            cpus: None,
            pids_max: None,
            secrets: Vec::new().into(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            network,
            health: None,
        };
        let mut unit = UnitText::default();
        spec.write(&mut unit.section(SECTION));
        let text = unit.finish();
        assert!(text.contains("\nNetworkAlias=web-%i\n"), "{text}");
        assert_eq!(ContainerSpec::from_unit(&UnitFile::parse(&text)?)?, spec);
        Ok(())
    }
}
