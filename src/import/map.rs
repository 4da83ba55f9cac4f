//! Compose (as compose_spec types it) onto kapell's stack schema (see kapell.toml(5)): names, images,
//! commands, health checks, restart policies, limits, dependencies and secrets; what a container
//! sees (environment, ports, volumes, networks) is in [`super::container`].

use super::Note;
use super::container::{Networks, host_path, map_env_files, map_environment, map_network, map_ports, map_volumes};
use super::draft::{Context, Draft, Health, Svc, info, lost};
use super::names::kapell_name;
use crate::config::syntax;
use compose_spec::service::deploy::resources::Limits;
use compose_spec::service::healthcheck::{self, Healthcheck, Test};
use compose_spec::service::{ByteValue, Command, Condition, Limit, Restart};
use compose_spec::{Compose, Resource, Service, ShortOrLong};
use serde_yaml::Value;
use std::path::Path;
use std::time::Duration;

/// The most CPUs a stack's `cpus` may give a service (kapell.toml(5)).
const MAX_CPUS: f64 = 1024.0;

/// A duration in systemd's syntax.
fn duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        match d.as_secs() {
            0 => "0s".to_string(),
            s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            s if s.is_multiple_of(60) => format!("{}min", s / 60),
            s => format!("{s}s"),
        }
    }
}

/// A Compose byte value as a kapell size (`K`, `M`, `G` are powers of 1024 in both).
fn size(b: &ByteValue) -> String {
    match *b {
        ByteValue::Bytes(n) => {
            let unit =
                [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')].into_iter().find(|(shift, _)| n % (1 << shift) == 0);
            match unit {
                Some((shift, suffix)) if n > 0 => format!("{}{suffix}", n >> shift),
                _ => n.to_string(),
            }
        }
        ByteValue::Kilobytes(n) => format!("{n}K"),
        ByteValue::Megabytes(n) => format!("{n}M"),
        ByteValue::Gigabytes(n) => format!("{n}G"),
    }
}

fn split_command(cmd: Command, place: &str) -> Result<Vec<String>, String> {
    match cmd {
        Command::List(list) => Ok(list),
        Command::String(s) => shell_words::split(&s).map_err(|e| format!("{place}: cannot split {s:?}: {e}")),
    }
}

pub(super) fn map(ctx: &Context<'_>, compose: Compose, tree: &Value, notes: &mut Vec<Note>) -> Result<Draft, String> {
    if compose.services.is_empty() {
        return Err("the project has no services".into());
    }
    // Service names first: dependencies refer to them.
    let mut names: Vec<(String, String)> = Vec::new();
    for compose_name in compose.services.keys() {
        let compose_name = compose_name.to_string();
        let Some(name) = kapell_name(&compose_name) else {
            return Err(format!("service {compose_name:?} has no letters or digits kapell can name it with"));
        };
        if let Some((other, _)) = names.iter().find(|(_, n)| *n == name) {
            return Err(format!(
                "services `{other}` and `{compose_name}` would both be named `{name}` in the stack (kapell names use lowercase letters, digits and '-'); rename one"
            ));
        }
        if name != compose_name {
            let breaks_dns = name != compose_name.to_ascii_lowercase();
            let message = format!(
                "the service is named `{name}` in the stack (kapell names use lowercase letters, digits and '-'){}",
                if breaks_dns {
                    format!("; containers that reach it as `{compose_name}` must use `{name}`")
                } else {
                    String::new()
                }
            );
            notes.push(Note { lossy: breaks_dns, place: format!("services.{compose_name}"), message });
        }
        names.push((compose_name, name));
    }
    let rename = |n: &str| names.iter().find(|(c, _)| c == n).map(|(_, k)| k.clone());

    for (name, volume) in &compose.volumes {
        if let Some(Resource::Compose(v)) = volume
            && (v.driver.as_deref().is_some_and(|d| d != "local") || !v.driver_opts.is_empty() || !v.labels.is_empty())
        {
            lost(
                notes,
                format!("volumes.{name}"),
                "its driver, driver options and labels are not carried over: Docker creates a missing volume with the local driver; create it beforehand (`docker volume create --driver …`) if it must differ",
            );
        }
    }
    let networks = Networks::new(ctx, &compose, notes);
    let secrets = map_secrets(ctx, &compose, notes);
    let mut services = Vec::new();
    let mut compose = compose;
    let all = std::mem::take(&mut compose.services);
    // The services with a healthcheck of their own (one `depends_on: service_healthy` can wait for).
    let checked: std::collections::HashSet<String> = all
        .iter()
        .filter(|(_, s)| matches!(s.healthcheck, Some(Healthcheck::Command(_))))
        .map(|(name, _)| name.to_string())
        .collect();
    for (compose_name, service) in all {
        let compose_name = compose_name.to_string();
        let name = rename(&compose_name).unwrap_or_default();
        let raw = &tree["services"][compose_name.as_str()];
        let mut svc = Svc { name, compose_name: compose_name.clone(), ..Svc::default() };
        let context = Project { compose: &compose, networks: &networks, secrets: &secrets, checked: &checked };
        map_service(ctx, &context, &rename, raw, service, &mut svc, notes)?;
        services.push(svc);
    }
    if let Some(cycle) = dependency_cycle(&services) {
        return Err(format!(
            "services.{}.depends_on: the services depend on each other in a circle ({}); Compose refuses it too: remove one of these dependencies",
            cycle[0],
            cycle.join(" → ")
        ));
    }
    Ok(Draft { stack: ctx.stack.to_string(), services, secrets })
}

/// A circle of dependencies (`requires` and `wants`), as Compose names, the first name repeated
/// at the end; None when there is none.
fn dependency_cycle(services: &[Svc]) -> Option<Vec<String>> {
    let index = |name: &str| services.iter().position(|s| s.name == name);
    // Depth-first, iteratively (a file may have many services): 0 new, 1 on the path, 2 done.
    let mut state = vec![0u8; services.len()];
    for start in 0..services.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let deps: Vec<&String> = services[node].requires.iter().chain(&services[node].wants).collect();
            match deps.get(*next) {
                Some(dep) => {
                    *next += 1;
                    let Some(d) = index(dep) else { continue };
                    match state[d] {
                        0 => {
                            state[d] = 1;
                            path.push((d, 0));
                        }
                        1 => {
                            let from = path.iter().position(|(n, _)| *n == d).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path[from..].iter().map(|(n, _)| services[*n].compose_name.clone()).collect();
                            cycle.push(services[d].compose_name.clone());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                }
                None => {
                    state[node] = 2;
                    path.pop();
                }
            }
        }
    }
    None
}

/// Top-level secrets kapell can declare: those backed by a file.
fn map_secrets(ctx: &Context<'_>, compose: &Compose, notes: &mut Vec<Note>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, secret) in &compose.secrets {
        let name = name.to_string();
        let place = format!("secrets.{name}");
        if let Err(e) = syntax::check_secret_name(&name) {
            lost(notes, place.clone(), format!("not carried over: {e}"));
            continue;
        }
        match secret {
            Resource::External { .. } => lost(
                notes,
                place,
                "not carried over: an external (Swarm) secret; put its value in a root-only file and declare it as [secrets.NAME] file = \"/path\"",
            ),
            Resource::Compose(secret) => match &secret.source {
                compose_spec::secret::Source::File(path) => {
                    let path = host_path(ctx, path).display().to_string();
                    match syntax::check_path(&path) {
                        Ok(()) => out.push((name.clone(), path)),
                        Err(e) => lost(notes, place, format!("not carried over: {e}")),
                    }
                }
                compose_spec::secret::Source::Environment(var) => lost(
                    notes,
                    place,
                    format!(
                        "not carried over: a secret from the variable {var}; write its value to a root-only file (e.g. /etc/kapell/secrets/{name}) and declare [secrets.{name}] file = \"/etc/kapell/secrets/{name}\""
                    ),
                ),
            },
        }
        if let Resource::Compose(secret) = secret
            && (!secret.labels.is_empty() || secret.driver.is_some() || !secret.driver_opts.is_empty())
        {
            lost(notes, format!("secrets.{name}"), "its labels, driver and driver options are not carried over");
        }
    }
    out
}

/// What one service's mapping needs of the whole project.
struct Project<'a> {
    compose: &'a Compose,
    networks: &'a Networks,
    secrets: &'a [(String, String)],
    /// The Compose names of the services with a healthcheck of their own.
    checked: &'a std::collections::HashSet<String>,
}

fn map_service(
    ctx: &Context<'_>,
    project: &Project<'_>,
    rename: &dyn Fn(&str) -> Option<String>,
    raw: &Value,
    service: Service,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    let Project { compose, networks, secrets, checked } = *project;
    let compose_name = svc.compose_name.clone();
    let at = |key: &str| format!("services.{compose_name}.{key}");
    let build = service.extensions.iter().find(|(k, _)| k.as_str() == "x-kapell-build").map(|(_, v)| v.clone());

    // image (or the image Compose would build)
    match (service.image, build) {
        (Some(image), build) => {
            svc.image = image.to_string();
            if build.is_some() {
                lost(
                    notes,
                    at("build"),
                    format!(
                        "not carried over: build and tag the image first (`docker compose build`), the stack runs image \"{}\"",
                        svc.image
                    ),
                );
            }
        }
        (None, Some(build)) => {
            svc.image = format!("{}-{}", ctx.project, svc.compose_name);
            svc.pull = Some("never");
            let context = build
                .as_str()
                .map(str::to_string)
                .or_else(|| build.get("context").and_then(Value::as_str).map(str::to_string));
            let context = context.map_or_else(|| ctx.dir.to_path_buf(), |c| host_path(ctx, Path::new(&c)));
            svc.image_comment = Some(format!(
                "built by Compose from {}: build it first (`docker compose build` or `docker build -t {} {}`)",
                context.display(),
                svc.image,
                context.display()
            ));
            lost(
                notes,
                at("build"),
                format!(
                    "not carried over: build and tag the image first (`docker build -t {} {}`); the stack runs that local image",
                    svc.image,
                    context.display()
                ),
            );
        }
        (None, None) => return Err(format!("{}: the service has neither `image` nor `build`", at("image"))),
    }
    if let Err(e) = syntax::check_image(&svc.image) {
        return Err(format!("{}: {e}", at("image")));
    }

    // pull_policy
    if let Some(policy) = raw.get("pull_policy").and_then(Value::as_str) {
        match policy {
            "always" | "daily" | "weekly" => {
                svc.pull = Some("always");
                if policy != "always" {
                    lost(
                        notes,
                        at("pull_policy"),
                        format!("`{policy}` becomes \"always\": kapell pulls at every start"),
                    );
                }
            }
            "never" => svc.pull = Some("never"),
            "missing" | "if_not_present" => svc.pull = None,
            "build" => {
                lost(notes, at("pull_policy"), "not carried over: build the image first; kapell pulls it if missing")
            }
            other => lost(notes, at("pull_policy"), format!("not carried over: unknown policy {other:?}")),
        }
    }

    svc.command = service.command.map(|c| split_command(c, &at("command"))).transpose()?;
    svc.entrypoint = service.entrypoint.map(|c| split_command(c, &at("entrypoint"))).transpose()?;
    if svc.entrypoint.as_ref().is_some_and(Vec::is_empty) {
        lost(notes, at("entrypoint"), "an empty entrypoint (reset the image's) cannot be expressed; it is left out");
        svc.entrypoint = None;
    }
    if svc.command.as_ref().is_some_and(Vec::is_empty) {
        lost(notes, at("command"), "an empty command (reset the image's) cannot be expressed; it is left out");
        svc.command = None;
    }

    map_environment(ctx, service.environment, svc, notes, &at("environment"));
    map_env_files(ctx, service.env_file, svc, notes, &at("env_file"));
    map_ports(service.ports, svc, notes, &at("ports"));
    map_volumes(ctx, compose, service.volumes, svc, notes, &at("volumes"));
    map_network(ctx, networks, service.network_config, svc, notes, &at("networks"));
    // Docker publishes nothing on these networks (`docker run` says so and goes on).
    if let Some((network @ ("host" | "none"), _)) = svc.network.as_ref().map(|(n, c)| (n.as_str(), c))
        && !svc.ports.is_empty()
    {
        svc.ports.clear();
        let why = if network == "host" { "the container listens on the host's own ports" } else { "it has no network" };
        info(notes, at("ports"), format!("Docker publishes no port with network_mode: {network} ({why}); left out"));
    }

    if let Some(user) = service.user {
        let user = user.to_string();
        match syntax::check_user(&user) {
            Ok(()) => svc.user = Some(user),
            Err(e) => lost(notes, at("user"), format!("not carried over: {e}")),
        }
    }

    map_health(service.healthcheck, svc, notes, &at("healthcheck"))?;
    map_restart(service.restart, service.deploy.as_ref(), svc, notes, &at("restart"));
    svc.stop_timeout = service.stop_grace_period.map(duration);
    map_deploy(service.deploy, service.scale, svc, notes, &at("deploy"));
    spread_ports(svc, notes, &at("ports"));
    if let Some(m) = &service.mem_limit {
        svc.memory_max.get_or_insert_with(|| size(m));
    }
    if let Some(c) = service.cpus {
        svc.cpus.get_or_insert(f64::from(c));
    }
    if let Some(Limit::Value(p)) = service.pids_limit {
        svc.pids_max.get_or_insert(u64::from(p));
    }
    if svc.cpus.is_some_and(|c| c <= 0.0) {
        svc.cpus = None;
    }
    if let Some(c) = svc.cpus.filter(|c| *c > MAX_CPUS) {
        return Err(format!(
            "{}: {c} CPUs is more than kapell's `cpus` can hold (at most {MAX_CPUS}, a CPUQuota= of {}%)",
            at(svc.compose_key_of("cpus").unwrap_or("cpus")),
            MAX_CPUS * 100.0
        ));
    }
    if svc.pids_max == Some(0) {
        svc.pids_max = None;
    }

    // depends_on
    let deps: Vec<(String, Condition, bool, bool)> = match service.depends_on {
        ShortOrLong::Short(set) => {
            set.iter().map(|d| (d.to_string(), Condition::ServiceStarted, true, false)).collect()
        }
        ShortOrLong::Long(map) => {
            map.iter().map(|(d, dep)| (d.to_string(), dep.condition, dep.required, dep.restart)).collect()
        }
    };
    for (dep, condition, required, restart) in deps {
        let Some(target) = rename(&dep) else {
            return Err(format!("{}: depends on `{dep}`, which is not a service of the project", at("depends_on")));
        };
        if condition == Condition::ServiceHealthy && !checked.contains(&dep) {
            lost(
                notes,
                format!("{}.{dep}", at("depends_on")),
                format!(
                    "service_healthy: `{dep}` has no healthcheck in the Compose file, so kapell starts `{}` once `{target}`'s container runs (Compose waits for the image's own HEALTHCHECK, or refuses); give `{target}` a `health` check",
                    svc.name
                ),
            );
        }
        if condition == Condition::ServiceCompletedSuccessfully {
            lost(
                notes,
                format!("{}.{dep}", at("depends_on")),
                format!(
                    "service_completed_successfully: kapell starts `{}` once `{target}`'s container runs, not after it exits; make `{target}` a native oneshot (`exec` + `type = \"oneshot\"`) or let `{}` wait for it",
                    svc.name, svc.name
                ),
            );
        }
        if required {
            svc.requires.push(target);
        } else {
            if restart {
                lost(
                    notes,
                    format!("{}.{dep}", at("depends_on")),
                    "restart: true is not carried over for an optional dependency (`wants` does not propagate restarts)",
                );
            }
            svc.wants.push(target);
        }
    }

    // secrets
    for secret in service.secrets {
        let (source, long) = match secret {
            ShortOrLong::Short(s) => (s.to_string(), None),
            ShortOrLong::Long(l) => (l.source.to_string(), Some(l)),
        };
        let place = format!("{}.{source}", at("secrets"));
        if !secrets.iter().any(|(n, _)| *n == source) {
            let declared = compose.secrets.keys().any(|k| k.as_str() == source);
            if declared {
                lost(notes, place, "not carried over: its top-level secret could not be (see above)");
            } else {
                return Err(format!("{place}: there is no top-level secret `{source}`"));
            }
            continue;
        }
        if let Some(l) = long {
            let default_target = l
                .target
                .as_ref()
                .is_none_or(|t| t == Path::new(&source) || t == Path::new("/run/secrets").join(&source).as_path());
            if !default_target || l.uid.is_some() || l.gid.is_some() || l.mode.is_some() {
                lost(
                    notes,
                    place,
                    format!(
                        "target, uid, gid and mode are not carried over: kapell mounts the secret read-only at /run/secrets/{source}"
                    ),
                );
            }
        }
        svc.secrets.push(source);
    }
    Ok(())
}

fn map_health(check: Option<Healthcheck>, svc: &mut Svc, notes: &mut Vec<Note>, place: &str) -> Result<(), String> {
    let Some(check) = check else { return Ok(()) };
    let healthcheck::Command { test, interval, timeout, retries, start_period, start_interval, .. } = match check {
        Healthcheck::Disable => {
            info(notes, place, "disabled: kapell waits for no health check (it does not use the image's)");
            return Ok(());
        }
        Healthcheck::Command(c) => c,
    };
    let cmd = match test {
        Some(Test::Command(argv)) if !argv.is_empty() => argv,
        Some(Test::ShellCommand(line)) => vec!["/bin/sh".into(), "-c".into(), line],
        _ => {
            lost(
                notes,
                place,
                "not carried over: it has no test of its own (it tunes the image's); kapell needs the command: add `health.cmd`",
            );
            return Ok(());
        }
    };
    if start_interval.is_some() {
        lost(notes, format!("{place}.start_interval"), "not carried over: kapell checks at `interval` from the start");
    }
    let retries = match retries {
        Some(0) => {
            info(notes, format!("{place}.retries"), "0 means Docker's default (3); left out");
            None
        }
        Some(r) if u32::try_from(r).is_err() => {
            return Err(format!("{place}.retries: {r} is more than kapell counts (at most {})", u32::MAX));
        }
        r => r,
    };
    // A container without a network cannot be probed from the host: its check stays inside.
    let isolated = svc.network.as_ref().is_some_and(|(n, _)| n == "none");
    let host_check = super::health::host_check(&cmd).filter(|_| !isolated);
    if let Some(check) = &host_check {
        let what = match check {
            super::health::HostCheck::Http { .. } => "an `http` check",
            super::health::HostCheck::Tcp { .. } => "a `tcp` check",
        };
        info(
            notes,
            place,
            format!(
                "{} becomes {what}, probed from the host (the image needs no curl, wget or nc)",
                describe_test(&cmd)
            ),
        );
    }
    svc.health = Some(Health {
        cmd,
        host_check,
        interval: interval.map(duration),
        timeout: timeout.map(duration),
        retries,
        start_period: start_period.map(duration),
    });
    Ok(())
}

/// A healthcheck test as Compose users write it: the shell line, or the words joined.
fn describe_test(cmd: &[String]) -> String {
    match cmd {
        [sh, c, line] if sh == "/bin/sh" && c == "-c" => format!("{line:?}"),
        _ => format!("{:?}", cmd.join(" ")),
    }
}

fn map_restart(
    restart: Option<Restart>,
    deploy: Option<&compose_spec::service::Deploy>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    use compose_spec::service::deploy::RestartCondition;
    let policy = deploy.and_then(|d| d.restart_policy.as_ref());
    // docker compose applies `deploy.restart_policy`'s condition after `restart`: it wins.
    let overridden = if restart.is_some() && policy.and_then(|p| p.condition).is_some() {
        Some("Compose: deploy.restart_policy, which docker compose applies over `restart`")
    } else {
        None
    };
    (svc.restart, svc.restart_comment) = match (policy.and_then(|p| p.condition), restart) {
        (Some(RestartCondition::None), _) => ("no", overridden),
        (Some(RestartCondition::OnFailure), _) => ("on-failure", overridden),
        (Some(RestartCondition::Any), _) => ("always", overridden),
        (None, Some(Restart::No)) => ("no", None),
        (None, Some(Restart::Always)) => ("always", None),
        (None, Some(Restart::OnFailure)) => ("on-failure", None),
        (None, Some(Restart::UnlessStopped)) => ("always", Some("Compose: unless-stopped")),
        (None, None) if policy.is_some() => ("always", Some("Compose: deploy.restart_policy")),
        (None, None) => ("no", Some("Compose's default: never restarted")),
    };
    if let Some(policy) = policy {
        let place = place.replace(".restart", ".deploy.restart_policy");
        svc.restart_delay = policy.delay.map(duration);
        if policy.max_attempts.is_some() || policy.window.is_some() {
            lost(
                notes,
                place,
                "max_attempts and window are not carried over: systemd's start limit applies (StartLimitBurst=/StartLimitIntervalSec= in [services.NAME.systemd] Unit)",
            );
        }
    }
}

/// Replicas run on one host, so each binds host ports of its own (Compose's second replica fails
/// on a fixed one): a host port, or a host range too small, becomes a range of one port per
/// replica from the same start, from which Docker picks a free one for each; where that range
/// would pass 65535, or the entry pairs ranges, Docker picks any free port.
fn spread_ports(svc: &mut Svc, notes: &mut Vec<Note>, place: &str) {
    let Some(replicas) = svc.replicas.filter(|&n| n > 1) else { return };
    for spec in &mut svc.ports {
        let Ok(mut mapping) = crate::ports::parse(spec) else { continue };
        let Some(choices) = mapping.host_port_choices() else { continue };
        if u64::from(choices) >= replicas {
            continue;
        }
        let first = mapping.host.map_or(0, |(first, _)| first);
        let last = u16::try_from(replicas - 1).ok().and_then(|more| first.checked_add(more));
        mapping.host = match last {
            Some(last) if mapping.container.0 == mapping.container.1 => Some((first, last)),
            _ => None,
        };
        let spread = mapping.to_string();
        lost(
            notes,
            place,
            format!(
                "{spec}: each of the {replicas} replicas binds a host port of its own; published as {spread}, where Docker picks a free one for each"
            ),
        );
        *spec = spread;
    }
}

fn map_deploy(
    deploy: Option<compose_spec::service::Deploy>,
    scale: Option<u64>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    let replicas = deploy.as_ref().and_then(|d| d.replicas).or(scale);
    match replicas {
        Some(0) => {
            lost(notes, place, "replicas: 0 is not carried over: the service is imported and starts with one instance")
        }
        Some(1) | None => {}
        Some(n) if n > 1000 => lost(notes, place, format!("replicas: {n} is above kapell's limit of 1000; left out")),
        Some(n) => svc.replicas = Some(n),
    }
    let Some(deploy) = deploy else { return };
    let swarm_only = [
        ("mode", deploy.mode.is_some()),
        ("placement", deploy.placement.is_some()),
        ("update_config", deploy.update_config.is_some()),
        ("rollback_config", deploy.rollback_config.is_some()),
        ("endpoint_mode", deploy.endpoint_mode.is_some()),
        ("labels", !deploy.labels.is_empty()),
    ];
    for (key, set) in swarm_only {
        if set {
            lost(
                notes,
                format!("{place}.{key}"),
                "not carried over: a Swarm setting; for placement across hosts see [services.NAME.placement] in kapell.toml(5)",
            );
        }
    }
    let Some(resources) = deploy.resources else { return };
    if resources.reservations.is_some() {
        lost(
            notes,
            format!("{place}.resources.reservations"),
            "not carried over: kapell sets limits only (memory_max, cpus, pids_max)",
        );
    }
    if let Some(Limits { cpus, memory, pids, .. }) = resources.limits {
        svc.memory_max = memory.as_ref().map(size);
        svc.cpus = cpus.map(f64::from);
        if let Some(Limit::Value(p)) = pids {
            svc.pids_max = Some(u64::from(p));
        }
        let set = [
            ("memory_max", svc.memory_max.is_some()),
            ("cpus", svc.cpus.is_some()),
            ("pids_max", svc.pids_max.is_some()),
        ];
        svc.limits_from_deploy = set.into_iter().filter(|(_, set)| *set).map(|(key, _)| key).collect();
    }
}
