//! Forms docker compose takes from Docker's CLI that compose_spec refuses, rewritten to ones it
//! reads before it types the file, each with a note on what changed:
//!
//! - `restart: on-failure:3` (`docker run --restart`'s retry limit): `on-failure`; the limit is
//!   not carried over (systemd's start limit applies instead).
//! - the volume options `cached`, `delegated` and `consistent` (`src:dst:cached`): hints for
//!   Docker Desktop's file sharing, with no effect on Linux; left out.
//! - the volume options `nocopy` and the bind propagations (`rshared`, `rslave`, …), which
//!   kapell's `volumes` take too: set aside, and given back to the volume once compose_spec has
//!   read it ([`VolumeOptions`]), as their long form is (`volume: {nocopy: true}`, `bind:
//!   {propagation: …}`), unless Docker refuses it on that kind of mount (`nocopy` on a host
//!   path, a propagation on a named volume): then it is left out with a note.
//! - a host range for one container port (`8080-8082:80`), which compose_spec's short form
//!   refuses: written in the long form, which it reads (no note: nothing changes).
//! - `mem_limit: 0` (Docker: no limit) and a healthcheck's `interval: 0s` or `timeout: 0s`
//!   (Docker: its default): left out, which means the same here.

use super::Note;
use serde_yaml::Value;
use std::collections::HashMap;

/// Short-form volume options set aside for compose_spec, by Compose service name and the path the
/// volume is mounted at in the container (one mount per path: compose_spec drops a repeated
/// entry, so a position in the list would not do).
pub type VolumeOptions = HashMap<(String, String), Vec<String>>;

/// A short-form volume option that compose_spec refuses: left out (with why), or set aside to be
/// given back after it.
enum Refused {
    LeftOut(&'static str),
    SetAside,
}

fn refused(option: &str) -> Option<Refused> {
    match option {
        "cached" | "delegated" | "consistent" => {
            Some(Refused::LeftOut("only tunes Docker Desktop's file sharing and does nothing on Linux; left out"))
        }
        "nocopy" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => Some(Refused::SetAside),
        _ => None,
    }
}

/// A short-form port with a host range for one container port (`8080-8082:80`: Docker takes a
/// free port of the range), in the long form: compose_spec's short form wants ranges of one
/// length on both sides, its long form takes this one.
fn host_range_port(text: &str) -> Option<Value> {
    let mapping = crate::ports::parse(text).ok()?;
    let (first, last) = mapping.host?;
    if first == last || mapping.container.0 != mapping.container.1 {
        return None;
    }
    let mut long = serde_yaml::Mapping::new();
    long.insert("target".into(), mapping.container.0.into());
    long.insert("published".into(), format!("{first}-{last}").into());
    if !mapping.ip.is_empty() {
        long.insert("host_ip".into(), mapping.ip.into());
    }
    long.insert("protocol".into(), mapping.protocol.into());
    Some(Value::Mapping(long))
}

/// Rewrites `tree` in place; returns the volume options it set aside.
pub fn rewrite(tree: &mut Value, notes: &mut Vec<Note>) -> VolumeOptions {
    let mut set_aside = VolumeOptions::new();
    let Some(services) = tree.get_mut("services").and_then(Value::as_mapping_mut) else { return set_aside };
    for (name, service) in services.iter_mut() {
        let name = name.as_str().unwrap_or("?").to_string();
        if let Some(restart) = service.get_mut("restart")
            && let Some((policy, limit)) = restart.as_str().and_then(|r| r.split_once(':'))
            && policy == "on-failure"
        {
            notes.push(Note {
                lossy: true,
                place: format!("services.{name}.restart"),
                message: format!(
                    "the retry limit {limit} of on-failure:{limit} is not carried over: systemd's start limit applies (StartLimitBurst= in [services.NAME.systemd] Unit)"
                ),
            });
            *restart = Value::String("on-failure".into());
        }
        let zero = |v: &Value| match v {
            Value::Number(n) => n.as_u64() == Some(0),
            Value::String(t) => t.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0",
            _ => false,
        };
        if let Some(map) = service.as_mapping_mut()
            && map.get("mem_limit").is_some_and(zero)
        {
            map.remove("mem_limit");
            notes.push(Note {
                lossy: false,
                place: format!("services.{name}.mem_limit"),
                message: "0 means no limit to Docker; left out, as no memory_max means here".into(),
            });
        }
        if let Some(check) = service.get_mut("healthcheck").and_then(Value::as_mapping_mut) {
            for key in ["interval", "timeout"] {
                if check.get(key).is_some_and(zero) {
                    check.remove(key);
                    notes.push(Note {
                        lossy: false,
                        place: format!("services.{name}.healthcheck.{key}"),
                        message: "0 means Docker's default; left out, so kapell's default applies".into(),
                    });
                }
            }
        }
        if let Some(ports) = service.get_mut("ports").and_then(Value::as_sequence_mut) {
            for port in ports.iter_mut() {
                if let Some(long) = port.as_str().and_then(host_range_port) {
                    *port = long;
                }
            }
        }
        let Some(volumes) = service.get_mut("volumes").and_then(Value::as_sequence_mut) else { continue };
        for volume in volumes.iter_mut() {
            let Some(text) = volume.as_str() else { continue };
            let mut parts: Vec<&str> = text.split(':').collect();
            if parts.len() < 3 {
                continue;
            }
            let options = parts.pop().unwrap_or_default();
            let kept: Vec<&str> = options.split(',').filter(|o| refused(o).is_none()).collect();
            if kept.len() == options.split(',').count() {
                continue;
            }
            for option in options.split(',') {
                match refused(option) {
                    Some(Refused::LeftOut(why)) => notes.push(Note {
                        lossy: false,
                        place: format!("services.{name}.volumes"),
                        message: format!("{text}: `{option}` {why}"),
                    }),
                    Some(Refused::SetAside) => {
                        let target = parts.last().unwrap_or(&"").to_string();
                        set_aside.entry((name.clone(), target)).or_default().push(option.to_string());
                    }
                    None => {}
                }
            }
            let mut rewritten = parts.join(":");
            if !kept.is_empty() {
                rewritten.push(':');
                rewritten.push_str(&kept.join(","));
            }
            *volume = Value::String(rewritten);
        }
    }
    set_aside
}
