//! Compose (as compose_spec types it) onto kapell's stack schema (SPEC §3).
//!
//! Keys kapell carries are typed by compose_spec, which normalises their short and long forms;
//! every other key is taken out of the tree first ([`set_aside_unknown_keys`]) and reported with
//! what to do, so a key kapell does not need can never make an otherwise good file fail to parse.

use super::Note;
use super::names::kapell_name;
use crate::config::syntax;
use compose_spec::service::deploy::resources::Limits;
use compose_spec::service::healthcheck::{self, Healthcheck, Test};
use compose_spec::service::network_config::{NetworkConfig, NetworkMode};
use compose_spec::service::ports::{self, Port, ShortPort};
use compose_spec::service::volumes::mount::Mount;
use compose_spec::service::volumes::{ShortOptions, ShortVolume, Source};
use compose_spec::service::{ByteValue, Command, Condition, Limit, Restart};
use compose_spec::{Compose, ListOrMap, Resource, Service, ShortOrLong};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) struct Context<'a> {
    /// The Compose project name (named volumes and built images carry it).
    pub project: &'a str,
    pub stack: &'a str,
    /// The project directory: relative paths are relative to it.
    pub dir: &'a Path,
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// The stack to write: kapell's keys with the comments a person needs.
pub(super) struct Draft {
    pub stack: String,
    pub services: Vec<Svc>,
    pub secrets: Vec<(String, String)>,
}

#[derive(Default)]
pub(super) struct Svc {
    pub name: String,
    pub compose_name: String,
    pub image: String,
    /// Why the image is what it is, when it is not the file's `image`.
    pub image_comment: Option<String>,
    pub pull: Option<&'static str>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub env_files: Vec<String>,
    /// Each volume with a comment (where a named volume's data lives).
    pub volumes: Vec<(String, Option<String>)>,
    pub ports: Vec<String>,
    pub network: Option<(String, String)>,
    pub user: Option<String>,
    pub health: Option<Health>,
    pub restart: &'static str,
    pub restart_comment: Option<&'static str>,
    pub restart_delay: Option<String>,
    pub stop_timeout: Option<String>,
    pub memory_max: Option<String>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
    pub replicas: Option<u64>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub secrets: Vec<String>,
}

pub(super) struct Health {
    pub cmd: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u64>,
    pub start_period: Option<String>,
}

fn lost(notes: &mut Vec<Note>, place: impl Into<String>, message: impl Into<String>) {
    notes.push(Note { lossy: true, place: place.into(), message: message.into() });
}

fn info(notes: &mut Vec<Note>, place: impl Into<String>, message: impl Into<String>) {
    notes.push(Note { lossy: false, place: place.into(), message: message.into() });
}

/// Service keys kapell carries over; compose_spec types them.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "user",
    "restart",
    "healthcheck",
    "depends_on",
    "deploy",
    "scale",
    "secrets",
    "networks",
    "network_mode",
    "stop_grace_period",
    "pull_policy",
    "mem_limit",
    "cpus",
    "pids_limit",
];

/// Top-level keys kapell reads.
const TOP_KEYS: &[&str] = &["version", "name", "services", "networks", "volumes", "secrets"];

/// What to do about a service key that has no kapell equivalent. `false`: the key changes
/// nothing when a stack runs, so losing it is not a loss.
fn service_key_hint(key: &str) -> (bool, &'static str) {
    match key {
        "build" => (true, "build and tag the image first (`docker compose build`), then set `image`"),
        "working_dir" => (
            true,
            "kapell container services have no working directory setting: set WORKDIR in the image, or start the command with `sh -c 'cd DIR && exec …'`",
        ),
        "container_name" => {
            (true, "kapell names the container kapell-<stack>-<service>; other containers reach it by its service name")
        }
        "hostname" | "domainname" => {
            (true, "other containers reach it as <service> or <service>.<stack>; the container keeps Docker's hostname")
        }
        "profiles" => (
            true,
            "kapell has no profiles: the service is imported and starts with the stack; delete it from the stack if you do not want that",
        ),
        "extends" => (true, "resolve it first (`docker compose config > resolved.yaml`) and import the resolved file"),
        "labels" | "annotations" | "label_file" => {
            (true, "kapell sets its own container labels (stack, service, unit); put yours in the image")
        }
        "logging" => {
            (true, "the container's output goes to the journal; read it with `kapell logs` or `journalctl -u`")
        }
        "configs" => (true, "bind-mount the file read-only with `volumes` instead"),
        "links" | "external_links" => {
            (true, "containers of the stack reach each other by service name; use those names")
        }
        "volumes_from" => (true, "mount the same named volumes in both services with `volumes`"),
        "expose" => (false, "not needed: containers on the stack network reach each other's ports directly"),
        "stop_signal" => (true, "set STOPSIGNAL in the image; kapell stops the container with the image's stop signal"),
        "develop" | "attach" => (false, "used by `docker compose watch`/`up` only; nothing runs differently"),
        "platform" => (true, "kapell pulls the image for the host's platform; pull or tag the one you need beforehand"),
        "mem_reservation" | "memswap_limit" | "mem_swappiness" | "cpu_shares" | "cpu_count" | "cpu_percent"
        | "cpu_period" | "cpu_quota" | "cpu_rt_runtime" | "cpu_rt_period" | "cpuset" | "blkio_config"
        | "oom_kill_disable" | "oom_score_adj" | "shm_size" | "ulimits" => (
            true,
            "kapell limits containers only with memory_max, cpus and pids_max; drop this limit or set it in the image's start script",
        ),
        _ => (
            true,
            "kapell has no equivalent for this container setting; the container runs without it (check the service still works)",
        ),
    }
}

/// Does a removed value carry nothing (a default like `false`, `null`, an empty list)?
fn is_default(key: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => *b == (key == "attach"),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

/// Takes every key kapell does not carry out of the tree, reporting each (in file order) with
/// what to do. `x-` extensions are Compose's own comments and anchors: dropped without a word.
pub(super) fn set_aside_unknown_keys(tree: &mut Value, notes: &mut Vec<Note>) -> Result<(), String> {
    let Some(root) = tree.as_mapping_mut() else { return Ok(()) };
    let top_keys: Vec<Value> = root.keys().cloned().collect();
    for key in top_keys {
        let name = key.as_str().unwrap_or_default().to_string();
        if TOP_KEYS.contains(&name.as_str()) {
            continue;
        }
        let value = root.remove(&key).unwrap_or(Value::Null);
        if name.starts_with("x-") || is_default(&name, &value) {
            continue;
        }
        let hint = match name.as_str() {
            "configs" => "bind-mount the files with `volumes` instead",
            "include" => "import each included project on its own, or merge them first with `docker compose config`",
            _ => "kapell does not know this top-level key",
        };
        lost(notes, name, format!("not carried over: {hint}"));
    }
    let Some(services) = root.get_mut("services").and_then(Value::as_mapping_mut) else {
        return Err("the file has no `services`".into());
    };
    for (service_name, service) in services.iter_mut() {
        let service_name = service_name.as_str().unwrap_or_default().to_string();
        let Some(service) = service.as_mapping_mut() else { continue };
        let keys: Vec<Value> = service.keys().cloned().collect();
        for key in keys {
            let name = key.as_str().unwrap_or_default().to_string();
            if SERVICE_KEYS.contains(&name.as_str()) {
                continue;
            }
            let value = service.remove(&key).unwrap_or(Value::Null);
            if name.starts_with("x-") || is_default(&name, &value) {
                continue;
            }
            let place = format!("services.{service_name}.{name}");
            if name == "build" {
                // Reported where the image is chosen, with the image name.
                service.insert("x-kapell-build".into(), value);
                continue;
            }
            let (lossy, hint) = service_key_hint(&name);
            notes.push(Note { lossy, place, message: format!("not carried over: {hint}") });
        }
    }
    Ok(())
}

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

/// Resolves a host path as Compose does: `~` is the home directory, a relative path is relative
/// to the project directory.
fn host_path(ctx: &Context<'_>, path: &Path) -> PathBuf {
    let home = (ctx.lookup)("HOME").unwrap_or_else(|| "/root".into());
    let path = match path.strip_prefix("~") {
        Ok(rest) => Path::new(&home).join(rest),
        Err(_) => ctx.dir.join(path),
    };
    // Lexical normalisation: `./a/../b` → `b`, like Compose's filepath.Clean.
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub(super) fn map(ctx: &Context<'_>, compose: Compose, tree: &Value, notes: &mut Vec<Note>) -> Result<Draft, String> {
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

    let networks = Networks::new(ctx, &compose, notes);
    let secrets = map_secrets(ctx, &compose, notes);
    let mut services = Vec::new();
    let mut compose = compose;
    let all = std::mem::take(&mut compose.services);
    for (compose_name, service) in all {
        let compose_name = compose_name.to_string();
        let name = rename(&compose_name).unwrap_or_default();
        let raw = &tree["services"][compose_name.as_str()];
        let mut svc = Svc { name, compose_name: compose_name.clone(), ..Svc::default() };
        map_service(ctx, &compose, &networks, &secrets, &rename, raw, service, &mut svc, notes)?;
        services.push(svc);
    }
    Ok(Draft { stack: ctx.stack.to_string(), services, secrets })
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

/// The project's networks: which are Compose's own (they become the stack network) and which are
/// external (used by name).
struct Networks {
    /// Compose network name → the Docker network name, for external networks.
    external: Vec<(String, String)>,
    /// How many networks Compose would create for the project (default included when used).
    own: usize,
}

impl Networks {
    fn new(ctx: &Context<'_>, compose: &Compose, notes: &mut Vec<Note>) -> Networks {
        let mut external = Vec::new();
        let mut own = 0;
        let mut default_used = false;
        for service in compose.services.values() {
            match &service.network_config {
                None => default_used = true,
                Some(NetworkConfig::Networks(n)) => {
                    let names: Vec<String> = match n {
                        ShortOrLong::Short(s) => s.iter().map(ToString::to_string).collect(),
                        ShortOrLong::Long(l) => l.keys().map(ToString::to_string).collect(),
                    };
                    default_used |= names.is_empty() || names.iter().any(|n| n == "default");
                }
                Some(NetworkConfig::NetworkMode(_)) => {}
            }
        }
        for (name, network) in &compose.networks {
            let place = format!("networks.{name}");
            match network {
                Some(Resource::External { name: real }) => {
                    external.push((name.to_string(), real.clone().unwrap_or_else(|| name.to_string())));
                }
                Some(Resource::Compose(n)) => {
                    if name.as_str() != "default" {
                        own += 1;
                    }
                    let custom = n.driver.is_some()
                        || !n.driver_opts.is_empty()
                        || n.ipam.is_some()
                        || n.internal
                        || n.attachable
                        || n.enable_ipv6
                        || !n.labels.is_empty()
                        || n.name.is_some();
                    if custom {
                        lost(
                            notes,
                            place,
                            format!(
                                "its settings (driver, IPAM, internal, IPv6, labels, name) are not carried over: services on it use the stack network kapell-{}",
                                ctx.stack
                            ),
                        );
                    }
                }
                None => {
                    if name.as_str() != "default" {
                        own += 1;
                    }
                }
            }
        }
        if default_used {
            own += 1;
        }
        Networks { external, own }
    }
}

#[expect(clippy::too_many_arguments, reason = "one service's mapping needs the whole project's context")]
fn map_service(
    ctx: &Context<'_>,
    compose: &Compose,
    networks: &Networks,
    secrets: &[(String, String)],
    rename: &dyn Fn(&str) -> Option<String>,
    raw: &Value,
    service: Service,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
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

fn map_environment(ctx: &Context<'_>, env: ListOrMap, svc: &mut Svc, notes: &mut Vec<Note>, place: &str) {
    let entries: Vec<(String, Option<String>)> = match env {
        ListOrMap::List(list) => list
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (e, None),
            })
            .collect(),
        ListOrMap::Map(map) => map.into_iter().map(|(k, v)| (k.to_string(), v.map(|v| v.to_string()))).collect(),
    };
    for (key, value) in entries {
        if let Err(e) = syntax::check_env_name(&key) {
            lost(notes, format!("{place}.{key}"), format!("not carried over: {e}"));
            continue;
        }
        // A variable without a value is taken from the environment Compose runs in.
        let value = match value {
            Some(v) => v,
            None => match (ctx.lookup)(&key) {
                Some(v) => {
                    info(
                        notes,
                        format!("{place}.{key}"),
                        "has no value in the file; the value of the import's environment is written into the stack",
                    );
                    v
                }
                None => {
                    info(
                        notes,
                        format!("{place}.{key}"),
                        "has no value and is not set in the environment; it stays unset, as with Compose",
                    );
                    continue;
                }
            },
        };
        svc.env.retain(|(k, _)| *k != key);
        svc.env.push((key, value));
    }
}

fn map_env_files(
    ctx: &Context<'_>,
    env_file: Option<compose_spec::service::EnvFile>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    let Some(env_file) = env_file else { return };
    for entry in env_file.into_list() {
        let (path, required) = match entry {
            ShortOrLong::Short(p) => (p, true),
            ShortOrLong::Long(c) => (c.path, c.required),
        };
        let path = host_path(ctx, &path);
        let text = path.display().to_string();
        if let Err(e) = syntax::check_path(&text) {
            lost(notes, place, format!("{text} is not carried over: {e}"));
            continue;
        }
        if !required {
            if path.exists() {
                lost(notes, place, format!("{text} is optional in Compose; kapell requires it (it exists now)"));
            } else {
                info(notes, place, format!("{text} is optional and does not exist; it is left out"));
                continue;
            }
        }
        svc.env_files.push(text);
    }
}

fn port_text(
    host_ip: Option<std::net::IpAddr>,
    host: Option<String>,
    container: String,
    protocol: Option<&str>,
) -> String {
    let mut out = String::new();
    match host_ip {
        Some(std::net::IpAddr::V6(ip)) => out.push_str(&format!("[{ip}]:")),
        Some(ip) => out.push_str(&format!("{ip}:")),
        None => {}
    }
    match (host, host_ip.is_some()) {
        (Some(h), _) => out.push_str(&format!("{h}:")),
        (None, true) => out.push(':'),
        (None, false) => {}
    }
    out.push_str(&container);
    if let Some(p) = protocol.filter(|p| *p != "tcp") {
        out.push('/');
        out.push_str(p);
    }
    out
}

fn map_ports(ports: ports::Ports, svc: &mut Svc, notes: &mut Vec<Note>, place: &str) {
    for port in ports::into_short_iter(ports) {
        let text = match port {
            Ok(ShortPort { host_ip, ranges, protocol }) => port_text(
                host_ip,
                ranges.host().map(|h| h.to_string()),
                ranges.container().to_string(),
                protocol.as_ref().map(AsRef::as_ref),
            ),
            Err(Port { name, target, published, host_ip, protocol, app_protocol, mode, .. }) => {
                if name.is_some() || app_protocol.is_some() {
                    info(
                        notes,
                        place,
                        format!("port {target}: `name` and `app_protocol` are descriptions only; left out"),
                    );
                }
                if mode.as_ref().is_some_and(|m| m.as_ref() == "ingress") {
                    info(
                        notes,
                        place,
                        format!("port {target}: `mode: ingress` is for Swarm; the port is published on this host"),
                    );
                }
                port_text(
                    host_ip,
                    published.map(|p| p.to_string()),
                    target.to_string(),
                    protocol.as_ref().map(AsRef::as_ref),
                )
            }
        };
        match syntax::check_port(&text) {
            Ok(()) => svc.ports.push(text),
            Err(e) => lost(notes, place, format!("not carried over: {e}")),
        }
    }
}

/// The Docker volume behind a Compose volume name: its `name`, or `<project>_<volume>`.
fn volume_name(ctx: &Context<'_>, compose: &Compose, volume: &str) -> Result<String, String> {
    match compose.volumes.iter().find(|(k, _)| k.as_str() == volume).map(|(_, v)| v) {
        None => Err(format!("`{volume}` is not declared in the top-level `volumes`")),
        Some(Some(Resource::External { name })) => Ok(name.clone().unwrap_or_else(|| volume.to_string())),
        Some(Some(Resource::Compose(v))) => Ok(v.name.clone().unwrap_or_else(|| format!("{}_{volume}", ctx.project))),
        Some(None) => Ok(format!("{}_{volume}", ctx.project)),
    }
}

fn map_volumes(
    ctx: &Context<'_>,
    compose: &Compose,
    volumes: compose_spec::service::Volumes,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    for (index, volume) in volumes.into_iter().enumerate() {
        let short = match volume {
            ShortOrLong::Short(s) => s,
            ShortOrLong::Long(mount) => match long_volume(mount, notes, place) {
                Some(s) => s,
                None => continue,
            },
        };
        let target = short.container_path.as_path().display().to_string();
        let mut options = Vec::new();
        let (source, comment) = match short.options {
            None => {
                let name = format!("{}-{}-{}", ctx.stack, svc.name, index + 1);
                lost(
                    notes,
                    place,
                    format!(
                        "{target}: an anonymous volume becomes the named volume `{name}` (kapell needs a name); data in the old anonymous volume is not reused"
                    ),
                );
                (name, Some("was an anonymous volume in Compose".to_string()))
            }
            Some(ShortOptions { source, read_only, selinux }) => {
                if read_only {
                    options.push("ro");
                }
                match selinux {
                    Some(compose_spec::service::volumes::SELinux::Shared) => options.push("z"),
                    Some(compose_spec::service::volumes::SELinux::Private) => options.push("Z"),
                    None => {}
                }
                match source {
                    Source::HostPath(p) => (host_path(ctx, p.as_path()).display().to_string(), None),
                    Source::Volume(v) => match volume_name(ctx, compose, v.as_str()) {
                        Ok(docker) => {
                            let comment =
                                format!("Compose volume `{v}`: the same Docker volume, so its data carries over");
                            (docker, Some(comment))
                        }
                        Err(e) => {
                            lost(notes, place, format!("{target}: not carried over: {e}"));
                            continue;
                        }
                    },
                }
            }
        };
        let mut text = format!("{source}:{target}");
        if !options.is_empty() {
            text.push(':');
            text.push_str(&options.join(","));
        }
        match syntax::check_volume(&text) {
            Ok(()) => svc.volumes.push((text, comment)),
            Err(e) => lost(notes, place, format!("not carried over: {e}")),
        }
    }
}

/// A long-form mount as the short form kapell writes, reporting what the short form cannot say.
fn long_volume(mount: Mount, notes: &mut Vec<Note>, place: &str) -> Option<ShortVolume> {
    let target = mount.common().target.as_path().display().to_string();
    if mount.common().consistency.is_some() {
        info(notes, place, format!("{target}: `consistency` has no effect on Linux; left out"));
    }
    match mount {
        Mount::Volume(mut v) => {
            if let Some(opts) = v.volume.take() {
                if opts.nocopy {
                    lost(
                        notes,
                        place,
                        format!(
                            "{target}: `nocopy` is not carried over: Docker copies the image's files into a new volume"
                        ),
                    );
                }
                if opts.subpath.is_some() {
                    lost(notes, place, format!("{target}: `subpath` is not carried over: the whole volume is mounted"));
                }
            }
            match Mount::Volume(v).into_short() {
                Ok(s) => Some(s),
                Err(_) => {
                    lost(notes, place, format!("{target}: a volume without a source is not carried over"));
                    None
                }
            }
        }
        Mount::Bind(mut b) => {
            if let Some(opts) = b.bind.take() {
                if opts.propagation.is_some() {
                    lost(notes, place, format!("{target}: bind `propagation` is not carried over"));
                }
                if opts.create_host_path {
                    info(
                        notes,
                        place,
                        format!("{target}: Docker creates a missing host path for kapell's bind mounts"),
                    );
                }
                b.bind = opts.selinux.map(|selinux| compose_spec::service::volumes::mount::BindOptions {
                    selinux: Some(selinux),
                    ..Default::default()
                });
            }
            Mount::Bind(b).into_short().ok()
        }
        Mount::Tmpfs(_) => {
            lost(notes, place, format!("{target}: tmpfs mounts are not carried over; kapell has no tmpfs setting"));
            None
        }
        Mount::NamedPipe(_) | Mount::Cluster(_) => {
            lost(notes, place, format!("{target}: npipe and cluster mounts are not carried over"));
            None
        }
    }
}

fn map_network(
    ctx: &Context<'_>,
    networks: &Networks,
    config: Option<NetworkConfig>,
    svc: &mut Svc,
    notes: &mut Vec<Note>,
    place: &str,
) {
    let stack_network = format!("kapell-{}", ctx.stack);
    let names: Vec<(String, bool)> = match config {
        None => return,
        Some(NetworkConfig::NetworkMode(mode)) => {
            let place = place.replace(".networks", ".network_mode");
            match mode {
                NetworkMode::Host => svc.network = Some(("host".into(), "the host's network".into())),
                NetworkMode::None => svc.network = Some(("none".into(), "no network".into())),
                NetworkMode::Other(bridge) if bridge == "bridge" => {
                    svc.network = Some(("bridge".into(), "Docker's default bridge".into()));
                }
                NetworkMode::Other(other) if syntax::check_network(&other).is_ok() => {
                    svc.network = Some((other, "an existing Docker network".into()));
                }
                other => lost(
                    notes,
                    place,
                    format!(
                        "`{other}` is not carried over: kapell attaches a container to a network, not to another container; the service uses {stack_network}"
                    ),
                ),
            }
            return;
        }
        Some(NetworkConfig::Networks(ShortOrLong::Short(set))) => set.iter().map(|n| (n.to_string(), false)).collect(),
        Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => {
            map.iter().map(|(n, opts)| (n.to_string(), opts.as_ref().is_some_and(|o| !o.is_empty()))).collect()
        }
    };
    for (name, _) in names.iter().filter(|(_, options)| *options) {
        lost(
            notes,
            format!("{place}.{name}"),
            format!(
                "aliases, fixed addresses and other per-network options are not carried over; other containers reach this one as `{}` or `{}.{}`",
                svc.name, svc.name, ctx.stack
            ),
        );
    }
    let external: Vec<&(String, String)> =
        networks.external.iter().filter(|(n, _)| names.iter().any(|(m, _)| m == n)).collect();
    match (external.as_slice(), names.len()) {
        ([(compose, docker)], 1) => {
            svc.network = Some((docker.clone(), format!("the external network `{compose}`")));
        }
        ([], _) => {
            if networks.own > 1 {
                let list: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
                lost(
                    notes,
                    place,
                    format!(
                        "on {}: the project's networks all become the stack network {stack_network}, so services that Compose kept apart can reach each other",
                        list.join(", ")
                    ),
                );
            }
        }
        _ => lost(
            notes,
            place,
            format!(
                "a kapell container joins one network; of {} it joins the stack network {stack_network}",
                names.len()
            ),
        ),
    }
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
        r => r,
    };
    svc.health = Some(Health {
        cmd,
        interval: interval.map(duration),
        timeout: timeout.map(duration),
        retries,
        start_period: start_period.map(duration),
    });
    Ok(())
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
    (svc.restart, svc.restart_comment) = match (restart, policy.and_then(|p| p.condition)) {
        (Some(Restart::No), _) => ("no", None),
        (Some(Restart::Always), _) => ("always", None),
        (Some(Restart::OnFailure), _) => ("on-failure", None),
        (Some(Restart::UnlessStopped), _) => ("always", Some("Compose: unless-stopped")),
        (None, Some(RestartCondition::None)) => ("no", None),
        (None, Some(RestartCondition::OnFailure)) => ("on-failure", None),
        (None, Some(RestartCondition::Any)) => ("always", None),
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
    }
}
