//! Which Compose keys kapell carries, and what to do about the others.
//!
//! Keys kapell does not carry are taken out of the YAML tree before compose_spec types it, each
//! reported with what to do, so a key kapell does not need can never make a good file fail.

use super::Note;
use serde_yaml::Value;

fn lost(notes: &mut Vec<Note>, place: impl Into<String>, message: impl Into<String>) {
    notes.push(Note { lossy: true, place: place.into(), message: message.into() });
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
        "labels" | "annotations" | "label_file" => (
            true,
            "kapell sets only its own container labels; tools that read these (Traefik routing, monitoring) need another source, e.g. Traefik's file provider, or LABEL in the image",
        ),
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
pub(super) fn set_aside_unknown_keys(tree: &mut Value, home: &str, notes: &mut Vec<Note>) -> Result<(), String> {
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
            let what = if lossy { "not carried over" } else { "left out" };
            notes.push(Note { lossy, place, message: format!("{what}: {hint}") });
        }
        if let Some(Value::Sequence(volumes)) = service.get_mut("volumes") {
            volumes.iter_mut().for_each(|v| expand_home(v, home));
        }
    }
    Ok(())
}

/// Compose reads a volume source `~/x` as the home directory's `x`; compose_spec does not.
fn expand_home(volume: &mut Value, home: &str) {
    let source = match volume {
        Value::String(s) => s,
        Value::Mapping(m) => match m.get_mut("source") {
            Some(Value::String(s)) => s,
            _ => return,
        },
        _ => return,
    };
    if source == "~" || source.starts_with("~/") || source.starts_with("~:") {
        source.replace_range(..1, home.trim_end_matches('/'));
    }
}
