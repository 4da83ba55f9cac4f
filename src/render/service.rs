//! `<stack>-<service>.service` (or the template `<stack>-<service>@.service`).

use super::container::{self, ContainerSpec};
use super::health::health_spec;
use super::{Host, RenderOptions, Shared, dependency_units};
use crate::model::{Kind, Restart, SecretSource, Service, ServiceType, Stack};
use crate::quantity::Duration;
use crate::unitfile::{SectionText, UnitText};
use crate::unitset::markers;

/// Extra time systemd allows beyond the container's grace period, so the supervisor can remove
/// the container after Docker's SIGKILL before systemd kills the supervisor.
const SUPERVISOR_STOP_MARGIN: Duration = Duration(5_000_000);

/// What a replica's command lines end with: `%i` is the one specifier kapell itself writes, the
/// instance number of a replica.
const INSTANCE_ARGUMENT: &str = " --instance %i";

pub(super) fn service_unit(
    stack: &Stack,
    service: &Service,
    host: &Host,
    options: &RenderOptions,
    shared: &Shared,
) -> String {
    let mut unit = UnitText::new(&shared.header);
    unit_section(&mut unit.section("Unit"), stack, service, host, shared);
    let s = &mut unit.section("Service");
    match &service.kind {
        Kind::Container(_) => container_service(s, stack, service, options),
        Kind::Native(native) => {
            // Readiness: a oneshot is "started" once it exited successfully (dependents wait for
            // that); RemainAfterExit keeps it active so Requires= stays satisfied afterwards.
            s.line("Type", native.service_type.as_str());
            if native.service_type == ServiceType::Oneshot {
                s.line("RemainAfterExit", "yes");
            }
            s.exec("ExecStart", "", &native.exec, "");
            if service.health.is_some() {
                readiness_probe(s, stack, service, options);
            }
            if let Some(dir) = &native.working_dir {
                s.text("WorkingDirectory", dir);
            }
            if let Some(user) = &service.user {
                let (user, group) = match user.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (user.as_str(), None),
                };
                s.line("User", user);
                if let Some(group) = group {
                    s.line("Group", group);
                }
            }
            for (k, v) in &service.env {
                s.word("Environment", &[k.as_str(), "=", v].concat());
            }
            for f in &service.env_files {
                s.text("EnvironmentFile", f);
            }
            restart_lines(s, service, service.stop_timeout);
            if let Some(memory) = service.memory_max {
                s.display("MemoryMax", memory);
            }
            if let Some(cpus) = service.cpus {
                s.display("CPUQuota", format_args!("{}%", (cpus * 100.0).round()));
            }
            if let Some(pids) = service.pids_max {
                s.display("TasksMax", pids);
            }
        }
    }
    credential_lines(s, stack, service);
    for p in service.systemd.iter().filter(|p| p.section == "Service") {
        s.line(&p.key, &p.value);
    }
    let container = ContainerSpec::from_service(stack, service);
    if let Some(spec) = &container {
        spec.write(&mut unit.section(markers::CONTAINER_SECTION));
    }
    // A container's spec holds its check already; a native service's is made here.
    if let Some(health) = container.map_or_else(|| health_spec(service), |spec| spec.health) {
        health.write(&mut unit.section(markers::HEALTH_SECTION));
    }
    unit.finish()
}

/// A native service with a health check is started (dependents released) once a probe passed:
/// `kapell probe --until-healthy` holds it in "activating" until then, bounded by the start
/// timeout. `+`: it runs privileged, to publish the result under /run/kapell (a `cmd` check
/// still runs as the service's user).
fn readiness_probe(s: &mut SectionText, stack: &Stack, service: &Service, options: &RenderOptions) {
    let qualified = crate::names::qualified(&stack.name, &service.name);
    let argv = [options.kapell_path.as_str(), "probe", "--until-healthy", &qualified];
    let suffix = if service.replicas.is_some() { INSTANCE_ARGUMENT } else { "" };
    s.exec("ExecStartPost", "+", &argv, suffix);
}

fn unit_section(u: &mut SectionText, stack: &Stack, service: &Service, host: &Host, shared: &Shared) {
    let qualified = crate::names::qualified(&stack.name, &service.name);
    match &stack.description {
        Some(d) => u.text("Description", &[d, ": ", &service.name, " (", &qualified, ")"].concat()),
        None => u.text("Description", &qualified),
    };
    u.text("SourcePath", &shared.source_path);
    u.line("PartOf", &shared.target);
    // Requires=/Wants= plus After=: dependents start once the dependency is ready (a container
    // service reports READY=1 when running or healthy; a oneshot when it has succeeded).
    for (key, deps) in [("Requires", &service.requires), ("Wants", &service.wants)] {
        for dep in deps.iter() {
            let units = dependency_units(stack, dep, host).join(" ");
            u.line(key, &units);
            u.line("After", &units);
        }
    }
    if service.is_container() {
        u.line("After", "docker.service docker.socket");
    } else if service.health.is_some() {
        // The host's prober watches the service once it is ready (liveness, restarts).
        u.line("Wants", crate::names::PROBER_UNIT);
    }
    u.line(markers::STACK_KEY, &stack.name);
    u.line(markers::SERVICE_KEY, &service.name);
    for p in service.systemd.iter().filter(|p| p.section == "Unit") {
        u.line(&p.key, &p.value);
    }
}

fn container_service(s: &mut SectionText, stack: &Stack, service: &Service, options: &RenderOptions) {
    s.line("Type", "notify");
    s.line("NotifyAccess", "main");
    let qualified = crate::names::qualified(&stack.name, &service.name);
    let suffix = if service.replicas.is_some() { INSTANCE_ARGUMENT } else { "" };
    s.exec("ExecStart", "", &[options.kapell_path.as_str(), "run", &qualified], suffix);
    // After the supervisor, however it ended: a killed one leaves its container running (in
    // Docker's cgroup, out of the unit's reach). `-`: a failed clean-up is logged, and does not
    // make a stop a failure.
    s.exec("ExecStopPost", "-", &[options.kapell_path.as_str(), "run", &qualified, "--clean-up"], suffix);
    // The journal then names the service, not "kapell", on the container's output lines.
    s.line("SyslogIdentifier", &[&stack.name, "-", &service.name].concat());
    // The supervisor gets SIGTERM and stops the container; anything left is killed after that.
    s.line("KillMode", "mixed");
    let grace = service.stop_timeout.unwrap_or(container::DEFAULT_STOP_TIMEOUT);
    restart_lines(s, service, Some(Duration(grace.as_micros().saturating_add(SUPERVISOR_STOP_MARGIN.as_micros()))));
}

fn restart_lines(s: &mut SectionText, service: &Service, stop_timeout: Option<Duration>) {
    s.line("Restart", service.restart.as_str());
    if service.restart != Restart::No
        && let Some(delay) = service.restart_delay
    {
        s.display("RestartSec", delay);
    }
    if let Some(timeout) = stop_timeout {
        s.display("TimeoutStopSec", timeout);
    }
}

/// Secrets become systemd credentials; the values never appear in the unit.
fn credential_lines(s: &mut SectionText, stack: &Stack, service: &Service) {
    for name in &service.secrets {
        let Some(secret) = stack.secret(name) else { continue };
        match &secret.source {
            SecretSource::File(path) => s.text("LoadCredential", &[name, ":", path].concat()),
            SecretSource::Encrypted(blob) => s.line("SetCredentialEncrypted", &[name, ":", blob].concat()),
        };
    }
}
