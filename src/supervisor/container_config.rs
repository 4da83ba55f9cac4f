//! The Docker container a [`ContainerSpec`] describes, as an Engine API create request. Pure.
//!
//! Environment precedence follows Docker, Compose and Podman: image defaults, then `env_files` in
//! order, then `env` (what the stack file says explicitly wins). Docker's restart policy is always
//! `no`, because systemd owns restarts. The log driver is `none`: output reaches the journal through
//! the supervisor, and Docker keeping a second, unrotated copy on disk would only fill it.

use crate::model::Check;
use crate::names::ServiceRef;
use crate::ports;
use crate::render::container::ContainerSpec;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;
use std::path::PathBuf;

/// Label keys of kapell's containers and networks.
pub mod label {
    pub const STACK: &str = "io.kapell.stack";
    pub const SERVICE: &str = "io.kapell.service";
    pub const UNIT: &str = "io.kapell.unit";
    /// Only on replicas: the instance number.
    pub const INSTANCE: &str = "io.kapell.instance";
    /// On the networks kapell creates: `stack` (a stack network `kapell-<stack>`).
    pub const NETWORK: &str = "io.kapell.network";
}

/// Everything the create request needs besides the spec.
pub struct Inputs<'a> {
    pub target: &'a ServiceRef,
    /// Variables from `env_files`, in file order.
    pub file_env: Vec<(String, String)>,
    /// Staged secrets: `(host file, path in the container)`.
    pub secret_mounts: &'a [(PathBuf, String)],
    /// The network to create the container on, as Docker should be told: the spec's network by
    /// name, or by id when [`super::network`] found the name ambiguous.
    pub network: &'a str,
    /// The container's DNS servers (`kapell dns` on its network's gateway, then the host's
    /// servers), if the responder listens there: Docker's embedded DNS still answers the
    /// network's own names and forwards the rest to them in turn. Empty: Docker's own.
    pub dns: Vec<std::net::IpAddr>,
}

/// The create request for `spec`.
pub fn create_body(spec: &ContainerSpec, inputs: &Inputs<'_>) -> Result<ContainerCreateBody, String> {
    let c = &spec.container;
    let mut port_map = ports::PortMap::new();
    for p in &c.ports {
        ports::add(&mut port_map, p)?;
    }
    let exposed: Vec<String> = port_map.keys().cloned().collect();
    let bindings: bollard::models::PortMap = port_map
        .into_iter()
        .map(|(port, binds)| {
            let binds = binds
                .into_iter()
                .map(|b| PortBinding { host_ip: Some(b.host_ip), host_port: Some(b.host_port) })
                .collect();
            (port, Some(binds))
        })
        .collect();

    let mounts = inputs
        .secret_mounts
        .iter()
        .map(|(source, target)| Mount {
            typ: Some(MountType::BIND),
            source: Some(source.display().to_string()),
            target: Some(target.clone()),
            read_only: Some(true),
            ..Default::default()
        })
        .collect();

    let host_config = HostConfig {
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        // `docker run -v` syntax, host paths and named volumes alike: Docker parses it.
        binds: Some(c.volumes.clone()).filter(|v| !v.is_empty()),
        mounts: Some(mounts).filter(|m: &Vec<Mount>| !m.is_empty()),
        port_bindings: Some(bindings).filter(|b| !b.is_empty()),
        network_mode: Some(inputs.network.to_string()),
        dns: Some(inputs.dns.iter().map(ToString::to_string).collect()).filter(|d: &Vec<String>| !d.is_empty()),
        memory: spec.memory_max.map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX)),
        nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        pids_limit: spec.pids_max.map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
        log_config: Some(HostConfigLogConfig { typ: Some("none".into()), config: None }),
        ..Default::default()
    };

    // A `cmd` check runs inside the container, as Docker's health check; `http` and `tcp` checks
    // are probed by the supervisor from the host, so the image needs nothing for them.
    let healthcheck = spec.health.as_ref().and_then(|h| {
        let Check::Cmd(cmd) = &h.health.check else { return None };
        let nanos = |d: crate::quantity::Duration| i64::try_from(d.as_micros() * 1000).unwrap_or(i64::MAX);
        let h = &h.health;
        Some(HealthConfig {
            test: Some(std::iter::once("CMD".to_string()).chain(cmd.iter().cloned()).collect()),
            interval: Some(nanos(h.interval())),
            timeout: Some(nanos(h.timeout())),
            retries: Some(i64::from(h.retries())),
            start_period: Some(nanos(h.start_period())),
            start_interval: None,
        })
    });

    // Its DNS names on a user-defined network; the networks of other stacks are joined after
    // the create (one network per create request is what every API version accepts).
    let aliases = spec.network.aliases_of(inputs.target.instance.as_deref());
    let networking_config = (spec.network.is_user_defined() && !aliases.is_empty()).then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            inputs.network.to_string(),
            EndpointSettings { aliases: Some(aliases), ..Default::default() },
        )])),
    });

    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        networking_config,
        cmd: c.command.clone(),
        entrypoint: c.entrypoint.clone(),
        env: Some(environment(&inputs.file_env, &spec.env)).filter(|e| !e.is_empty()),
        user: spec.user.as_deref().map(str::to_string),
        labels: Some(labels(spec, inputs.target)),
        exposed_ports: Some(exposed).filter(|e| !e.is_empty()),
        healthcheck,
        // `docker stop` by hand gets the same grace period as `systemctl stop`.
        stop_timeout: Some(grace_secs(spec)),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The grace period in whole seconds, as Docker counts it (rounded up, so never shorter).
pub fn grace_secs(spec: &ContainerSpec) -> i64 {
    i64::try_from(spec.stop_timeout.as_micros().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

fn labels(spec: &ContainerSpec, target: &ServiceRef) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (label::STACK.to_string(), spec.stack.to_string()),
        (label::SERVICE.to_string(), spec.service.to_string()),
        (label::UNIT.to_string(), target.unit_name()),
    ]);
    if let Some(i) = &target.instance {
        labels.insert(label::INSTANCE.to_string(), i.clone());
    }
    labels
}

/// `KEY=VALUE` list: file variables first, explicit ones override; each key once, first-seen order.
fn environment(files: &[(String, String)], explicit: &[(String, String)]) -> Vec<String> {
    let mut merged: Vec<(&str, &str)> = Vec::new();
    for (k, v) in files.iter().chain(explicit) {
        match merged.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v,
            None => merged.push((k, v)),
        }
    }
    merged.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Health, OnUnhealthy, Pull};
    use crate::quantity::{Duration, Size};
    use crate::render::container::NetworkSpec;
    use crate::render::health::HealthSpec;
    use std::borrow::Cow;

    fn spec() -> ContainerSpec<'static> {
        ContainerSpec {
            stack: "todo".into(),
            service: "db".into(),
            container: Cow::Owned(Container {
                image: "docker.io/library/postgres:16".into(),
                command: Some(vec!["postgres".into(), "-c".into(), "max_connections=200".into()]),
                entrypoint: None,
                volumes: vec!["/srv/pg:/var/lib/postgresql/data".into(), "pgdata:/backup:ro".into()],
                ports: vec!["5432:5432".into(), "127.0.0.1:8125:8125/udp".into()],
                network: Some("kapell-todo".into()),
                pull: Pull::Missing,
            }),
            health: Some(HealthSpec {
                health: Health {
                    check: Check::Cmd(vec!["pg_isready".into(), "-U".into(), "postgres".into()]),
                    interval: Some(Duration::from_secs(5)),
                    timeout: None,
                    retries: Some(5),
                    start_period: Some(Duration(1_500_000)),
                },
                on_unhealthy: OnUnhealthy::Restart,
                user: None,
            }),
            user: Some("999:999".into()),
            env: vec![("POSTGRES_DB".into(), "todo".into()), ("SHARED".into(), "explicit".into())].into(),
            env_files: vec!["/etc/kapell/todo.env".into()].into(),
            memory_max: Some(Size(1 << 30)),
            cpus: Some(1.5),
            pids_max: Some(512),
            secrets: vec!["db_password".into()].into(),
            stop_timeout: Duration(2_500_000),
            network: NetworkSpec {
                name: "kapell-todo".into(),
                aliases: vec!["db".into(), "db.todo".into(), "db-%i".into()],
                joins: vec!["kapell-other".into()],
            },
        }
    }

    #[test]
    fn create_request_carries_the_spec() -> Result<(), String> {
        let target = ServiceRef::new("todo.db", Some("2"))?;
        let mounts = [(PathBuf::from("/run/kapell/secrets/kapell-todo-db-2/db_password"), secrets_path())];
        let inputs = Inputs {
            target: &target,
            file_env: vec![("SHARED".into(), "from-file".into()), ("FROM_FILE".into(), "1".into())],
            secret_mounts: &mounts,
            network: "kapell-todo",
            dns: vec!["10.232.0.1".parse().map_err(|_| "ip")?, "10.231.0.1".parse().map_err(|_| "ip")?],
        };
        let body = create_body(&spec(), &inputs)?;
        let json = serde_json::to_value(&body).map_err(|e| e.to_string())?;
        let host = &json["HostConfig"];
        assert_eq!(json["Image"], "docker.io/library/postgres:16");
        assert_eq!(host["Dns"], serde_json::json!(["10.232.0.1", "10.231.0.1"]));
        assert_eq!(json["Cmd"], serde_json::json!(["postgres", "-c", "max_connections=200"]));
        assert_eq!(json["User"], "999:999");
        assert_eq!(json["Env"], serde_json::json!(["SHARED=explicit", "FROM_FILE=1", "POSTGRES_DB=todo"]));
        assert_eq!(json["Labels"]["io.kapell.unit"], "todo-db@2.service");
        assert_eq!(json["Labels"]["io.kapell.instance"], "2");
        assert_eq!(json["StopTimeout"], 3);
        assert_eq!(json["Healthcheck"]["Test"], serde_json::json!(["CMD", "pg_isready", "-U", "postgres"]));
        assert_eq!(json["Healthcheck"]["Interval"], 5_000_000_000i64);
        assert_eq!(json["Healthcheck"]["StartPeriod"], 1_500_000_000i64);
        assert_eq!(json["ExposedPorts"], serde_json::json!({"5432/tcp": {}, "8125/udp": {}}));
        assert_eq!(host["RestartPolicy"]["Name"], "no");
        assert_eq!(host["LogConfig"]["Type"], "none");
        assert_eq!(host["Binds"], serde_json::json!(["/srv/pg:/var/lib/postgresql/data", "pgdata:/backup:ro"]));
        assert_eq!(host["PortBindings"]["8125/udp"], serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8125"}]));
        assert_eq!(host["Mounts"][0]["Target"], "/run/secrets/db_password");
        assert_eq!(host["Mounts"][0]["ReadOnly"], true);
        assert_eq!(host["Mounts"][0]["Type"], "bind");
        assert_eq!(host["Memory"], 1i64 << 30);
        assert_eq!(host["NanoCpus"], 1_500_000_000i64);
        assert_eq!(host["PidsLimit"], 512);
        assert_eq!(host["NetworkMode"], "kapell-todo");
        assert_eq!(
            json["NetworkingConfig"]["EndpointsConfig"]["kapell-todo"]["Aliases"],
            serde_json::json!(["db", "db.todo", "db-2"])
        );
        Ok(())
    }

    fn secrets_path() -> String {
        "/run/secrets/db_password".into()
    }

    #[test]
    fn bad_port_is_an_error() {
        let mut s = spec();
        s.container.to_mut().ports = vec!["http".into()];
        let target = ServiceRef { stack: "todo".into(), service: "db".into(), instance: None };
        let inputs = Inputs {
            target: &target,
            file_env: Vec::new(),
            secret_mounts: &[],
            network: "kapell-todo",
            dns: Vec::new(),
        };
        assert!(create_body(&s, &inputs).is_err());
    }

    #[test]
    fn no_names_on_docker_default_networks() -> Result<(), String> {
        let mut s = spec();
        s.network = NetworkSpec { name: "host".into(), aliases: Vec::new(), joins: Vec::new() };
        s.container.to_mut().ports.clear();
        let target = ServiceRef::new("todo.db", None)?;
        let inputs =
            Inputs { target: &target, file_env: Vec::new(), secret_mounts: &[], network: "host", dns: Vec::new() };
        let json = serde_json::to_value(create_body(&s, &inputs)?).map_err(|e| e.to_string())?;
        assert_eq!(json["HostConfig"]["NetworkMode"], "host");
        assert!(json.get("NetworkingConfig").is_none_or(serde_json::Value::is_null), "{json}");
        Ok(())
    }
}
