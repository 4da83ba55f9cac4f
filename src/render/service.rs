//! `<stack>-<service>.service` (or the template `<stack>-<service>@.service`).

use super::container::{self, ContainerSpec};
use super::health::health_spec;
use super::{Host, RenderOptions, Shared, dependency_units};
use crate::model::{Kind, Restart, SecretSource, Service, ServiceType, Stack};
use crate::quantity::Duration;
use crate::unitfile::escape;
use crate::unitfile::{Section, UnitFile, Value};
use crate::unitset::markers;

/// Extra time systemd allows beyond the container's grace period, so the supervisor can remove
/// the container after Docker's SIGKILL before systemd kills the supervisor.
const SUPERVISOR_STOP_MARGIN: Duration = Duration(5_000_000);

pub(super) fn service_unit(
    stack: &Stack,
    service: &Service,
    host: &Host,
    options: &RenderOptions,
    shared: &Shared,
) -> UnitFile {
    let mut unit = UnitFile { header: shared.header.clone(), ..Default::default() };
    unit_section(unit.section("Unit"), stack, service, host, shared);
    let s = unit.section("Service");
    match &service.kind {
        Kind::Container(_) => container_service(s, stack, service, options),
        Kind::Native(native) => {
            // Readiness: a oneshot is "started" once it exited successfully (dependents wait for
            // that); RemainAfterExit keeps it active so Requires= stays satisfied afterwards.
            s.add("Type", native.service_type.as_str());
            if native.service_type == ServiceType::Oneshot {
                s.add("RemainAfterExit", "yes");
            }
            s.add("ExecStart", Value::trusted(escape::exec_line(&native.exec)));
            if service.health.is_some() {
                readiness_probe(s, stack, service, options);
            }
            s.add_opt("WorkingDirectory", native.working_dir.as_deref().map(Value::text));
            if let Some(user) = &service.user {
                let (user, group) = match user.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (user.as_str(), None),
                };
                s.add("User", user.to_string());
                s.add_opt("Group", group.map(str::to_string));
            }
            for (k, v) in &service.env {
                s.add("Environment", Value::word(&[k.as_str(), "=", v].concat()));
            }
            for f in &service.env_files {
                s.add("EnvironmentFile", Value::text(f));
            }
            restart_lines(s, service, service.stop_timeout);
            s.add_opt("MemoryMax", service.memory_max.map(|m| m.to_string()));
            s.add_opt("CPUQuota", service.cpus.map(|c| format!("{}%", (c * 100.0).round())));
            s.add_opt("TasksMax", service.pids_max.map(|p| p.to_string()));
        }
    }
    credential_lines(unit.section("Service"), stack, service);
    for p in service.systemd.iter().filter(|p| p.section == "Service") {
        unit.section("Service").add(p.key.clone(), Value::trusted(p.value.clone()));
    }
    let container = ContainerSpec::from_service(stack, service);
    if let Some(spec) = &container {
        spec.write(unit.section(markers::CONTAINER_SECTION));
    }
    // A container's spec holds its check already; a native service's is made here.
    if let Some(health) = container.map_or_else(|| health_spec(service), |spec| spec.health) {
        health.write(unit.section(markers::HEALTH_SECTION));
    }
    unit
}

/// A native service with a health check is started (dependents released) once a probe passed:
/// `kapell probe --until-healthy` holds it in "activating" until then, bounded by the start
/// timeout. `+`: it runs privileged, to publish the result under /run/kapell (a `cmd` check
/// still runs as the service's user).
fn readiness_probe(s: &mut Section, stack: &Stack, service: &Service, options: &RenderOptions) {
    let argv = [
        options.kapell_path.clone(),
        "probe".into(),
        "--until-healthy".into(),
        crate::names::qualified(&stack.name, &service.name),
    ];
    let mut exec = format!("+{}", escape::exec_line(&argv));
    if service.replicas.is_some() {
        exec.push_str(" --instance %i");
    }
    s.add("ExecStartPost", Value::trusted(exec));
}

fn unit_section(u: &mut Section, stack: &Stack, service: &Service, host: &Host, shared: &Shared) {
    let qualified = crate::names::qualified(&stack.name, &service.name);
    let description = match &stack.description {
        Some(d) => [d, ": ", &service.name, " (", &qualified, ")"].concat(),
        None => qualified,
    };
    u.add("Description", Value::text(&description));
    u.add("SourcePath", shared.source_path.clone());
    u.add("PartOf", stack.target_unit());
    // Requires=/Wants= plus After=: dependents start once the dependency is ready (a container
    // service reports READY=1 when running or healthy; a oneshot when it has succeeded).
    for (key, deps) in [("Requires", &service.requires), ("Wants", &service.wants)] {
        for dep in deps.iter() {
            let units = dependency_units(stack, dep, host).join(" ");
            u.add(key, units.clone());
            u.add("After", units);
        }
    }
    if service.is_container() {
        u.add("After", "docker.service docker.socket");
    } else if service.health.is_some() {
        // The host's prober watches the service once it is ready (liveness, restarts).
        u.add("Wants", crate::names::PROBER_UNIT);
    }
    u.add(markers::STACK_KEY, stack.name.to_string());
    u.add(markers::SERVICE_KEY, service.name.to_string());
    for p in service.systemd.iter().filter(|p| p.section == "Unit") {
        u.add(p.key.clone(), Value::trusted(p.value.clone()));
    }
}

fn container_service(s: &mut Section, stack: &Stack, service: &Service, options: &RenderOptions) {
    s.add("Type", "notify");
    s.add("NotifyAccess", "main");
    let argv = [options.kapell_path.clone(), "run".into(), crate::names::qualified(&stack.name, &service.name)];
    let mut exec = escape::exec_line(&argv);
    if service.replicas.is_some() {
        // `%i` is the one specifier kapell itself writes: the instance number of a replica.
        exec.push_str(" --instance %i");
    }
    s.add("ExecStart", Value::trusted(exec));
    // The journal then names the service, not "kapell", on the container's output lines.
    s.add("SyslogIdentifier", [&stack.name, "-", &service.name].concat());
    // The supervisor gets SIGTERM and stops the container; anything left is killed after that.
    s.add("KillMode", "mixed");
    let grace = service.stop_timeout.unwrap_or(container::DEFAULT_STOP_TIMEOUT);
    restart_lines(s, service, Some(Duration(grace.as_micros() + SUPERVISOR_STOP_MARGIN.as_micros())));
}

fn restart_lines(s: &mut Section, service: &Service, stop_timeout: Option<Duration>) {
    s.add("Restart", service.restart.as_str());
    if service.restart != Restart::No {
        s.add_opt("RestartSec", service.restart_delay.map(|d| d.to_string()));
    }
    s.add_opt("TimeoutStopSec", stop_timeout.map(|d| d.to_string()));
}

/// Secrets become systemd credentials; the values never appear in the unit.
fn credential_lines(s: &mut Section, stack: &Stack, service: &Service) {
    for name in &service.secrets {
        let Some(secret) = stack.secret(name) else { continue };
        match &secret.source {
            SecretSource::File(path) => s.add("LoadCredential", Value::text(&format!("{name}:{path}"))),
            SecretSource::Encrypted(blob) => s.add("SetCredentialEncrypted", Value::trusted(format!("{name}:{blob}"))),
        };
    }
}
