//! One `[services.<name>]` table: the keys every service has, then the container or native half.

use super::document::{Spanned, Table, Value};
use super::reader::{At, Ctx};
use super::syntax;
use crate::model::*;
use crate::quantity::{Duration, Size};

const COMMON_KEYS: &[&str] = &[
    "requires",
    "wants",
    "replicas",
    "restart",
    "restart_delay",
    "stop_timeout",
    "user",
    "env",
    "env_files",
    "memory_max",
    "cpus",
    "pids_max",
    "secrets",
    "systemd",
    "placement",
    "health",
    "on_unhealthy",
];
/// The smallest memory limit Docker sets on a container (6 MiB; it refuses less at create time).
const DOCKER_MIN_MEMORY: Size = Size(6 << 20);

const CONTAINER_KEYS: &[&str] = &["image", "command", "entrypoint", "volumes", "ports", "network", "pull"];
const NATIVE_KEYS: &[&str] = &["exec", "type", "working_dir"];

/// Every key a service table may have, of either kind (joined once, not per service).
static SERVICE_KEYS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| COMMON_KEYS.iter().chain(CONTAINER_KEYS).chain(NATIVE_KEYS).copied().collect());

/// One of the format checks of [`syntax`].
type FormatCheck = fn(&str) -> Result<(), String>;

/// Docker Compose's names for service keys, and what kapell calls them: operators coming from
/// Compose write these first.
const COMPOSE_HABITS: &[(&str, &str)] = &[
    ("depends_on", "`depends_on` is Compose's name; kapell uses `requires` (or `wants`)"),
    ("environment", "`environment` is Compose's name; kapell uses `env`"),
    ("env_file", "`env_file` is Compose's name; kapell uses `env_files`"),
    ("healthcheck", "`healthcheck` is Compose's name; kapell uses `health`"),
    ("mem_limit", "`mem_limit` is Compose's name; kapell uses `memory_max`"),
    ("pids_limit", "`pids_limit` is Compose's name; kapell uses `pids_max`"),
    ("stop_grace_period", "`stop_grace_period` is Compose's name; kapell uses `stop_timeout`"),
    ("networks", "`networks` is Compose's name; kapell uses `network` (one network)"),
    ("deploy", "`deploy` is Compose's; kapell uses `replicas` (and `placement` in a fleet)"),
    ("container_name", "kapell names containers itself (`kapell-<stack>-<service>`)"),
];

/// Settings kapell writes itself; the pass-through table may not override them.
const OWNED_SETTINGS: &[&str] = &[
    "Description",
    "SourcePath",
    "PartOf",
    "Type",
    "ExecStart",
    "NotifyAccess",
    "KillMode",
    "Restart",
    "RestartSec",
    "TimeoutStopSec",
    "RemainAfterExit",
    "User",
    "Group",
    "WorkingDirectory",
    "Environment",
    "EnvironmentFile",
    "LoadCredential",
    "SetCredentialEncrypted",
    "MemoryMax",
    "CPUQuota",
    "TasksMax",
    "DefaultInstance",
];

/// List settings kapell writes lines of (`ExecStartPost=` runs a native service's readiness
/// probe, `ExecStopPost=` a container's clean-up, the dependencies order a stack): an empty
/// assignment in the pass-through table would reset them too.
const RESET_REFUSED: &[&str] = &["ExecStartPost", "ExecStopPost", "Requires", "Wants", "After"];

pub fn read_service(
    ctx: &mut Ctx,
    name: &At<String>,
    value: &Spanned<Value<'_>>,
    secrets: &[String],
) -> Option<Service> {
    if let Err(e) = crate::names::check_name("service", &name.value) {
        ctx.error(name.span.clone(), e);
    }
    let context = format!("[services.{}]", name.value);
    let table = ctx.table(value, &context)?;
    ctx.reject_unknown_keys_with(table, &SERVICE_KEYS, &context, COMPOSE_HABITS);
    let errors_before = ctx.error_count();

    let kind = match (table.get("image"), table.get("exec")) {
        (Some(image), None) => {
            reject_keys_of_other_kind(ctx, table, NATIVE_KEYS, "native services (with `exec`)");
            read_container(ctx, table, image).map(|c| Kind::Container(Box::new(c)))
        }
        (None, Some(exec)) => {
            reject_keys_of_other_kind(ctx, table, CONTAINER_KEYS, "container services (with `image`)");
            read_native(ctx, table, exec).map(Kind::Native)
        }
        (Some(_), Some(exec)) => {
            ctx.error(
                ctx.span(exec),
                format!(
                    "service `{}` has both `image` and `exec`: a service is either a container or a native command",
                    name.value
                ),
            );
            None
        }
        (None, None) => {
            ctx.error(
                name.span.clone(),
                format!("service `{}` needs `image` (a container) or `exec` (a native command)", name.value),
            );
            None
        }
    };

    let requires = table.get("requires").map(|v| read_deps(ctx, v, "requires")).unwrap_or_default();
    let wants = table.get("wants").map(|v| read_deps(ctx, v, "wants")).unwrap_or_default();
    for dep in &wants {
        if requires.iter().any(|r| r.target == dep.target) {
            ctx.error(dep.span.clone(), "this dependency is listed in both `requires` and `wants`; keep one");
        }
    }

    let replicas = table.get("replicas").and_then(|v| ctx.integer(v, "replicas")).and_then(|n| {
        if (1..=1000).contains(&n.value) {
            u32::try_from(n.value).ok()
        } else {
            ctx.error(n.span, "`replicas` must be between 1 and 1000");
            None
        }
    });
    // Every replica runs on the same host, so each needs host ports of its own.
    if let (Some(Kind::Container(_)), Some(n @ 2..), Some(value)) = (&kind, replicas, table.get("ports"))
        && let Value::Array(entries) = value.get_ref()
    {
        for entry in entries {
            let Value::String(spec) = entry.get_ref() else { continue };
            let Some(choices) = crate::ports::host_port_choices(spec).filter(|&k| k < n) else { continue };
            // A warning, not an error: the first replicas run, and an error would take the whole
            // stack off its host at the next boot.
            let message = if choices == 1 {
                format!(
                    "{spec:?} publishes one fixed host port for each of the {n} replicas, and only one container \
                     can bind it, so the others fail to start: leave the host port out, or give a host range of \
                     at least {n} ports (START-END:PORT), from which Docker picks a free one for each"
                )
            } else {
                format!(
                    "{spec:?} gives the {n} replicas a host range of {choices} ports, and each replica binds one \
                     of its own, so {} of them cannot start: give a range of at least {n}",
                    n - choices
                )
            };
            let span = ctx.span(entry);
            ctx.warn(span, message);
        }
    }
    let restart = table.get("restart").and_then(|v| ctx.string(v, "restart")).map_or(Some(Restart::OnFailure), |r| {
        match r.value.as_str() {
            "no" => Some(Restart::No),
            "on-failure" => Some(Restart::OnFailure),
            "always" => Some(Restart::Always),
            "unless-stopped" => {
                ctx.error(
                    r.span,
                    "`restart` must be \"no\", \"on-failure\" or \"always\", not \"unless-stopped\"; Compose's \
                     \"unless-stopped\" is kapell's \"always\" (a unit stopped with `systemctl stop` stays stopped)",
                );
                None
            }
            other => {
                ctx.error(r.span, format!("`restart` must be \"no\", \"on-failure\" or \"always\", not {other:?}"));
                None
            }
        }
    });
    let restart_delay = duration(ctx, table, "restart_delay");
    let stop_timeout = duration(ctx, table, "stop_timeout");
    let user = table.get("user").and_then(|v| ctx.string(v, "user")).and_then(|u| checked(ctx, u, syntax::check_user));

    // A container's environment and env files go to Docker through the supervisor; a native
    // service's to systemd, which takes less.
    let container = table.get("image").is_some();
    // Docker stops a container at once with 0; systemd reads TimeoutStopSec=0 as no limit at all,
    // so a native service that ignores SIGTERM is never stopped. A warning, not an error: such a
    // stack runs, and an error would take it off its host at the next boot.
    if !container
        && stop_timeout == Some(Duration(0))
        && let Some(value) = table.get("stop_timeout")
    {
        let span = ctx.span(value);
        ctx.warn(
            span,
            "systemd reads a native service's `stop_timeout = \"0\"` as no limit: a service that ignores SIGTERM \
             is never stopped; give a duration to bound the stop",
        );
    }
    let (env_name_check, env_file_check): (FormatCheck, FormatCheck) = if container {
        (syntax::check_container_env_name, syntax::check_path)
    } else {
        (syntax::check_env_name, syntax::check_systemd_path)
    };
    let env = table.get("env").and_then(|v| ctx.string_map(v, "env")).unwrap_or_default();
    let env =
        env.into_iter().filter_map(|(k, v)| checked(ctx, k, env_name_check).map(|k| (k.value, v.value))).collect();
    let env_files = paths(ctx, table, "env_files", env_file_check);
    let memory_max =
        table.get("memory_max").and_then(|v| ctx.string(v, "memory_max")).and_then(|s| match Size::parse(&s.value) {
            // Docker refuses a smaller limit when it creates the container; systemd takes any.
            Ok(size) if container && size.bytes() < DOCKER_MIN_MEMORY.bytes() => {
                ctx.error(
                    s.span,
                    format!("a container's `memory_max` must be at least {DOCKER_MIN_MEMORY} (Docker's minimum)"),
                );
                None
            }
            Ok(size) => Some(size),
            Err(e) => {
                ctx.error(s.span, e);
                None
            }
        });
    let cpus = table.get("cpus").and_then(|v| ctx.number(v, "cpus")).and_then(|c| {
        // CPUQuota= is whole percents: below 0.005 it would round to 0%, which systemd ignores.
        if (0.01..=1024.0).contains(&c.value) {
            Some(c.value)
        } else {
            ctx.error(c.span, "`cpus` must be a number from 0.01 to 1024 (e.g. 0.5 or 2)");
            None
        }
    });
    let pids_max = table.get("pids_max").and_then(|v| ctx.integer(v, "pids_max")).and_then(|n| {
        if n.value >= 1 {
            u64::try_from(n.value).ok()
        } else {
            ctx.error(n.span, "`pids_max` must be at least 1");
            None
        }
    });
    let service_secrets = read_secret_refs(ctx, table, secrets, &name.value);
    let systemd = table.get("systemd").map(|v| read_pass_through(ctx, v, &context)).unwrap_or_default();
    let placement = table.get("placement").map(|v| read_placement(ctx, v, &context)).unwrap_or_default();

    let (health, on_unhealthy) = read_health_keys(ctx, table, kind.as_ref());

    if let (Some(Kind::Native(native)), Some(Restart::Always)) = (&kind, restart)
        && native.service_type == ServiceType::Oneshot
    {
        let span = table.get("restart").map(|v| ctx.span(v)).unwrap_or(name.span.clone());
        ctx.error(span, "a oneshot service cannot have `restart = \"always\"`; use \"on-failure\" or \"no\"");
    }

    if ctx.error_count() > errors_before {
        return None;
    }
    Some(Service {
        name: name.value.as_str().into(),
        span: name.span.clone(),
        kind: kind?,
        requires,
        wants,
        replicas,
        restart: restart?,
        restart_delay,
        stop_timeout,
        user: user.map(|u| u.value),
        env,
        env_files,
        memory_max,
        cpus,
        pids_max,
        secrets: service_secrets,
        systemd,
        placement,
        health: health.map(Box::new),
        on_unhealthy,
    })
}

fn reject_keys_of_other_kind(ctx: &mut Ctx, table: &Table<'_>, keys: &[&str], only_for: &str) {
    for key in table.keys() {
        let k = key.get_ref().as_ref();
        if keys.contains(&k) {
            ctx.error(ctx.span(key), format!("`{k}` is only for {only_for}"));
        }
    }
}

/// Runs a format check, reporting at the value's span.
fn checked(ctx: &mut Ctx, value: At<String>, check: impl Fn(&str) -> Result<(), String>) -> Option<At<String>> {
    match check(&value.value) {
        Ok(()) => Some(value),
        Err(e) => {
            ctx.error(value.span, e);
            None
        }
    }
}

pub(super) fn duration(ctx: &mut Ctx, table: &Table<'_>, key: &str) -> Option<Duration> {
    let s = table.get(key).and_then(|v| ctx.string(v, key))?;
    match Duration::parse(&s.value) {
        Ok(d) => Some(d),
        Err(e) => {
            ctx.error(s.span, e);
            None
        }
    }
}

fn paths(ctx: &mut Ctx, table: &Table<'_>, key: &str, check: FormatCheck) -> Vec<String> {
    let values = table.get(key).and_then(|v| ctx.strings(v, key)).unwrap_or_default();
    values.into_iter().filter_map(|p| checked(ctx, p, check)).map(|p| p.value).collect()
}

fn read_deps(ctx: &mut Ctx, value: &Spanned<Value<'_>>, key: &str) -> Vec<Dependency> {
    let entries = ctx.strings(value, key).unwrap_or_default();
    let mut deps: Vec<Dependency> = Vec::with_capacity(entries.len());
    for entry in entries {
        let target = if syntax::looks_like_unit(&entry.value) {
            syntax::check_unit_name(&entry.value).map(|()| DepTarget::Unit(entry.value.clone()))
        } else if let Some((stack, service)) = entry.value.split_once('.') {
            crate::names::check_stack_name(stack)
                .and_then(|()| crate::names::check_name("service", service))
                .map(|()| DepTarget::Remote { stack: stack.into(), service: service.into() })
        } else {
            crate::names::check_name("service", &entry.value).map(|()| DepTarget::Local(entry.value.clone()))
        };
        match target {
            Ok(target) if deps.iter().any(|d| d.target == target) => {
                ctx.error(entry.span, format!("`{}` is listed twice in `{key}`", entry.value));
            }
            Ok(target) => deps.push(Dependency { target, span: entry.span }),
            Err(e) => ctx.error(entry.span, format!("in `{key}`: {e}")),
        }
    }
    deps
}

fn read_secret_refs(ctx: &mut Ctx, table: &Table<'_>, secrets: &[String], service: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for entry in table.get("secrets").and_then(|v| ctx.strings(v, "secrets")).unwrap_or_default() {
        if names.contains(&entry.value) {
            ctx.error(entry.span, format!("secret `{}` is listed twice", entry.value));
        } else if !secrets.contains(&entry.value) {
            ctx.error(
                entry.span,
                format!(
                    "service `{service}` uses secret `{}`, but there is no [secrets.{}] table",
                    entry.value, entry.value
                ),
            );
        } else {
            names.push(entry.value);
        }
    }
    names
}

fn read_pass_through(ctx: &mut Ctx, value: &Spanned<Value<'_>>, context: &str) -> Vec<PassThrough> {
    let context = format!("{context}.systemd");
    let mut out = Vec::new();
    let Some(sections) = ctx.table(value, &context) else { return out };
    ctx.reject_unknown_keys(sections, &["Unit", "Service"], &context);
    for (section, settings) in sections.iter() {
        let section = section.get_ref().to_string();
        let Some(settings) = ctx.table(settings, &format!("{context}.{section}")) else { continue };
        for (key, value) in settings.iter() {
            let name = key.get_ref().to_string();
            let valid_key = name.len() <= 256
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_key {
                ctx.error(ctx.span(key), format!("invalid systemd setting name {name:?}"));
                continue;
            }
            if OWNED_SETTINGS.contains(&name.as_str()) || name.starts_with(crate::unitset::markers::KEY_PREFIX) {
                ctx.error(ctx.span(key), format!("`{name}=` is written by kapell itself; use the stack keys instead"));
                continue;
            }
            let items: Vec<&Spanned<Value<'_>>> = match value.get_ref() {
                Value::Array(items) => items.iter().collect(),
                _ => vec![value],
            };
            for item in items {
                let text = match item.get_ref() {
                    Value::String(s) => s.to_string(),
                    // In decimal: systemd reads `0x10` as a string, not as 16.
                    Value::Integer(i) => match i.value() {
                        Some(n) => n.to_string(),
                        None => {
                            ctx.error(ctx.span(item), format!("`{name}` is too large"));
                            continue;
                        }
                    },
                    Value::Float(f) => f.as_str().to_string(),
                    Value::Boolean(b) => if *b { "yes" } else { "no" }.to_string(),
                    _ => {
                        ctx.error(
                            ctx.span(item),
                            format!("`{name}` must be a string, number, boolean or an array of them"),
                        );
                        continue;
                    }
                };
                if text.is_empty() && RESET_REFUSED.contains(&name.as_str()) {
                    ctx.error(
                        ctx.span(item),
                        format!(
                            "an empty `{name}=` would also reset the `{name}=` lines kapell writes (readiness, \
                             clean-up, dependencies); use the stack's keys for what kapell writes"
                        ),
                    );
                    continue;
                }
                if text.len() > crate::config::reader::MAX_VALUE_BYTES {
                    ctx.error(ctx.span(item), format!("the value of `{name}` is longer than 256 KiB"));
                    continue;
                }
                if text.chars().any(char::is_control) || text.ends_with('\\') {
                    ctx.error(
                        ctx.span(item),
                        format!(
                            "the value of `{name}` must be one line (no control characters, no trailing backslash)"
                        ),
                    );
                    continue;
                }
                out.push(PassThrough {
                    section: section.clone(),
                    key: name.clone(),
                    value: text,
                    span: ctx.span(item),
                });
            }
        }
    }
    out
}

fn read_placement(ctx: &mut Ctx, value: &Spanned<Value<'_>>, context: &str) -> Placement {
    let context = format!("{context}.placement");
    let Some(table) = ctx.table(value, &context) else { return Placement::default() };
    let errors_before = ctx.error_count();
    ctx.reject_unknown_keys(table, &["hosts", "labels", "global"], &context);
    let hosts = table.get("hosts").and_then(|v| ctx.strings(v, "hosts")).unwrap_or_default();
    let hosts =
        hosts.into_iter().filter_map(|h| checked(ctx, h, syntax::check_host_name)).map(|h| h.value).collect::<Vec<_>>();
    let labels = table.get("labels").and_then(|v| ctx.string_map(v, "labels")).unwrap_or_default();
    let labels = labels.into_iter().map(|(k, v)| (k.value, v.value)).collect::<Vec<_>>();
    let global = table.get("global").and_then(|v| ctx.boolean(v, "global")).unwrap_or(false);
    if global && (!hosts.is_empty() || !labels.is_empty()) {
        let span = table.get("global").map(|v| ctx.span(v)).unwrap_or(0..0);
        ctx.error(
            span,
            "`global = true` places the service on every host; it cannot be combined with `hosts` or `labels`",
        );
    }
    // An empty placement would quietly make the stack a local one (run by the controller).
    if !global && hosts.is_empty() && labels.is_empty() && ctx.error_count() == errors_before {
        ctx.error(
            ctx.span(value),
            format!(
                "{context} names no host: give `hosts`, `labels` or `global = true` (a service without `placement` runs on this host)"
            ),
        );
    }
    Placement { hosts, labels, global, span: ctx.span(value) }
}

fn read_native(ctx: &mut Ctx, table: &Table<'_>, exec: &Spanned<Value<'_>>) -> Option<Native> {
    let argv = ctx.argv(exec, "exec")?;
    if let Err(why) = syntax::check_executable(&argv[0].value) {
        ctx.error(argv[0].span.clone(), why);
    }
    let service_type = match table.get("type").and_then(|v| ctx.string(v, "type")) {
        None => ServiceType::Simple,
        Some(t) => match t.value.as_str() {
            "simple" => ServiceType::Simple,
            "notify" => ServiceType::Notify,
            "oneshot" => ServiceType::Oneshot,
            other => {
                ctx.error(t.span, format!("`type` must be \"simple\", \"notify\" or \"oneshot\", not {other:?}"));
                ServiceType::Simple
            }
        },
    };
    let working_dir = table
        .get("working_dir")
        .and_then(|v| ctx.string(v, "working_dir"))
        .and_then(|p| checked(ctx, p, syntax::check_systemd_path));
    Some(Native {
        exec: argv.into_iter().map(|a| a.value).collect(),
        service_type,
        working_dir: working_dir.map(|p| p.value),
    })
}

fn read_container(ctx: &mut Ctx, table: &Table<'_>, image: &Spanned<Value<'_>>) -> Option<Container> {
    let image = ctx.string(image, "image").and_then(|i| checked(ctx, i, syntax::check_image));
    let command = table.get("command").and_then(|v| argv_not_string(ctx, v, "command"));
    let entrypoint = table.get("entrypoint").and_then(|v| argv_not_string(ctx, v, "entrypoint"));
    let volumes = table.get("volumes").and_then(|v| ctx.strings(v, "volumes")).unwrap_or_default();
    let volumes = volumes.into_iter().filter_map(|v| checked(ctx, v, syntax::check_volume)).map(|v| v.value).collect();
    let ports = table.get("ports").and_then(|v| ctx.strings(v, "ports")).unwrap_or_default();
    let ports: Vec<String> =
        ports.into_iter().filter_map(|p| checked(ctx, p, syntax::check_port)).map(|p| p.value).collect();
    let network = table
        .get("network")
        .and_then(|v| ctx.string(v, "network"))
        .and_then(|n| checked(ctx, n, syntax::check_network));
    // Docker takes `ports` with these networks and publishes nothing (it warns on `docker run`).
    if let (Some(net), Some(ports_value)) = (&network, table.get("ports"))
        && !ports.is_empty()
    {
        let why = match net.value.as_str() {
            "host" => Some("the container listens on the host's own ports"),
            "none" => Some("the container has no network to publish them on"),
            _ => None,
        };
        if let Some(why) = why {
            let span = ctx.span(ports_value);
            ctx.warn(span, format!("`ports` is ignored with `network = \"{}\"`: {why}", net.value));
        }
    }
    let pull = match table.get("pull").and_then(|v| ctx.string(v, "pull")) {
        None => Pull::Missing,
        Some(p) => Pull::parse(&p.value).unwrap_or_else(|| {
            ctx.error(p.span, format!("`pull` must be \"missing\", \"always\" or \"never\", not {:?}", p.value));
            Pull::Missing
        }),
    };
    Some(Container {
        image: image?.value,
        command: command.map(|c| c.into_iter().map(|a| a.value).collect()),
        entrypoint: entrypoint.map(|c| c.into_iter().map(|a| a.value).collect()),
        volumes,
        ports,
        network: network.map(|n| n.value),
        pull,
    })
}

/// An argument vector; a string (Compose's shell-like form) is refused with the array to write.
fn argv_not_string(ctx: &mut Ctx, value: &Spanned<Value<'_>>, key: &str) -> Option<Vec<At<String>>> {
    if let Value::String(s) = value.get_ref() {
        let words: Vec<String> = s.split_whitespace().map(|w| format!("{w:?}")).collect();
        ctx.error(
            ctx.span(value),
            format!(
                "`{key}` must be an array of strings, found string; Compose splits a command string, kapell does \
                 not: write `{key} = [{}]`",
                words.join(", ")
            ),
        );
        return None;
    }
    ctx.argv(value, key)
}

/// `health` and `on_unhealthy`, checked against the kind of service they belong to (`None` when
/// the kind itself had errors).
fn read_health_keys(ctx: &mut Ctx, table: &Table<'_>, kind: Option<&Kind>) -> (Option<Health>, OnUnhealthy) {
    let health = table.get("health").and_then(|v| read_health(ctx, v, kind));
    let on_unhealthy = match table.get("on_unhealthy").and_then(|v| ctx.string(v, "on_unhealthy")) {
        None => OnUnhealthy::Restart,
        Some(o) => {
            if table.get("health").is_none() {
                ctx.error(o.span.clone(), "`on_unhealthy` needs a `health` check");
            }
            match o.value.as_str() {
                "restart" => OnUnhealthy::Restart,
                "ignore" => OnUnhealthy::Ignore,
                other => {
                    ctx.error(o.span, format!("`on_unhealthy` must be \"restart\" or \"ignore\", not {other:?}"));
                    OnUnhealthy::Restart
                }
            }
        }
    };
    (health, on_unhealthy)
}

/// The kinds of check; a `health` table has exactly one.
const CHECK_KEYS: [&str; 3] = ["http", "tcp", "cmd"];

fn read_health(ctx: &mut Ctx, value: &Spanned<Value<'_>>, kind: Option<&Kind>) -> Option<Health> {
    let table = ctx.table(value, "health")?;
    ctx.reject_unknown_keys(
        table,
        &["http", "path", "expect", "tcp", "cmd", "interval", "timeout", "retries", "start_period"],
        "`health`",
    );
    let errors_before = ctx.error_count();
    let given: Vec<&str> = CHECK_KEYS.into_iter().filter(|k| table.get(k).is_some()).collect();
    match given.as_slice() {
        [] => ctx.error(
            ctx.span(value),
            "`health` needs one check: `http = <port>` (an HTTP GET), `tcp = <port>` (a TCP connection) or \
             `cmd = [...]` (a command that exits 0 when the service is healthy)",
        ),
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                let span = ctx.key_span(table, other).unwrap_or(ctx.span(value));
                ctx.error(
                    span,
                    format!(
                        "`health` takes exactly one of `http`, `tcp` or `cmd`; `{other}` comes on top of `{first}`"
                    ),
                );
            }
        }
    }
    if table.get("http").is_none() {
        for key in ["path", "expect"] {
            if let Some(span) = ctx.key_span(table, key) {
                ctx.error(span, format!("`{key}` is only for `http` checks"));
            }
        }
    }
    let port = |ctx: &mut Ctx, key: &str| -> Option<u16> {
        let n = table.get(key).and_then(|v| ctx.integer(v, &format!("health.{key}")))?;
        match u16::try_from(n.value).ok().filter(|p| *p > 0) {
            Some(p) => Some(p),
            None => {
                ctx.error(n.span, format!("`{key}` must be a port from 1 to 65535, not {}", n.value));
                None
            }
        }
    };
    let check = match given.first().copied() {
        Some("http") => {
            let port = port(ctx, "http");
            let path = match table.get("path").and_then(|v| ctx.string(v, "path")) {
                None => Some("/".to_string()),
                Some(p) => checked(ctx, p, syntax::check_http_path).map(|p| p.value),
            };
            let expect = match table.get("expect").and_then(|v| ctx.string(v, "expect")) {
                None => Some(StatusRange::DEFAULT),
                Some(e) => match StatusRange::parse(&e.value) {
                    Ok(range) => Some(range),
                    Err(why) => {
                        ctx.error(e.span, why);
                        None
                    }
                },
            };
            port.zip(path).zip(expect).map(|((port, path), expect)| Check::Http { port, path, expect })
        }
        Some("tcp") => port(ctx, "tcp").map(|port| Check::Tcp { port }),
        Some(_) => {
            let cmd = table.get("cmd").and_then(|v| ctx.argv(v, "health.cmd"));
            if let (Some(cmd), Some(Kind::Native(_))) = (&cmd, kind)
                && !cmd[0].value.starts_with('/')
            {
                ctx.error(
                    cmd[0].span.clone(),
                    format!(
                        "`health.cmd[0]` of a native service must be an absolute path, not {:?} (it runs on the host, \
                         as the service's user)",
                        cmd[0].value
                    ),
                );
            }
            cmd.map(|c| Check::Cmd(c.into_iter().map(|a| a.value).collect()))
        }
        None => None,
    };
    let check_span = given.first().and_then(|k| ctx.key_span(table, k)).unwrap_or(ctx.span(value));
    match (kind, &check) {
        (Some(Kind::Container(c)), Some(Check::Http { .. } | Check::Tcp { .. }))
            if c.network.as_deref() == Some("none") =>
        {
            ctx.error(
                check_span,
                format!(
                    "an `{}` check is probed from the host, and `network = \"none\"` leaves the container unreachable; \
                     use `cmd` (run inside the container)",
                    given[0]
                ),
            );
        }
        (Some(Kind::Native(n)), Some(_)) if n.service_type == ServiceType::Oneshot => {
            ctx.error(
                ctx.span(value),
                "a oneshot service is done when it exits; `health` is for services that keep running",
            );
        }
        _ => {}
    }
    let retries = table.get("retries").and_then(|v| ctx.integer(v, "retries")).and_then(|n| {
        u32::try_from(n.value).ok().filter(|r| *r >= 1).or_else(|| {
            ctx.error(n.span, "`retries` must be at least 1");
            None
        })
    });
    let interval = duration(ctx, table, "interval");
    let timeout = duration(ctx, table, "timeout");
    let start_period = duration(ctx, table, "start_period");
    // Docker refuses a health check's interval, timeout or start period under 1ms when it creates
    // the container (a start period of 0 is none); no prober of kapell's needs one either.
    for (key, d) in [("interval", interval), ("timeout", timeout), ("start_period", start_period)] {
        let span = || table.get(key).map(|v| ctx.span(v)).unwrap_or(ctx.span(value));
        match d {
            Some(Duration(0)) if key != "start_period" => ctx.error(span(), format!("`{key}` must be longer than 0")),
            Some(Duration(us)) if us > 0 && us < 1_000 => ctx.error(span(), format!("`{key}` must be at least 1ms")),
            _ => {}
        }
    }
    if ctx.error_count() > errors_before {
        return None;
    }
    Some(Health { check: check?, interval, timeout, retries, start_period })
}
