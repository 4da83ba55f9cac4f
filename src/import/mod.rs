//! `kapell import compose`: a Compose project becomes a stack file (kapell(8)).
//!
//! The pipeline is pure (text in, text out), like the rest of kapell's parsing:
//! YAML → `<<` merge keys applied → [`interpolate`] (`.env` and `${VAR…}`) → keys kapell does not
//! carry set aside and reported (`keys`) → [`compose_spec`] types (every short and long form
//! normalised) → `map` and `container` onto kapell's schema, recording a [`Note`] for everything
//! that has no equivalent → `write` a commented stack file → checked with kapell's own validator
//! (by the command, `kapell import compose`).
//!
//! Nothing is dropped silently: every key, option or value that the stack cannot carry is a
//! [`Note`] with what to do about it.

mod container;
mod docker_forms;
mod draft;
mod expansion;
mod health;
pub mod interpolate;
mod keys;
mod map;
mod names;
mod nesting;
mod schema;
mod sizes;
mod write;

pub use names::{compose_project_name, kapell_name, stack_name_from};

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing the import reports on standard error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// True when something of the Compose file is not in the stack (the import is not lossless).
    pub lossy: bool,
    /// Where in the Compose file: `services.web.build`, `volumes.pgdata.driver`, ….
    pub place: String,
    /// What happened and what to do about it, one sentence.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// What the import needs besides the Compose file's text.
pub struct Input<'a> {
    /// The Compose file (absolute): relative paths in it are relative to its directory.
    pub path: &'a Path,
    pub text: &'a str,
    /// The variables of the project's `.env` file, if there is one ([`interpolate::parse_dotenv`]:
    /// its errors name that file, so the caller reads it).
    pub dotenv: Option<&'a [(String, String)]>,
    /// The process environment (it takes precedence over `.env`).
    pub env: interpolate::Lookup<'a>,
    /// The stack name to use (already valid), or None for the Compose project name made valid.
    pub stack: Option<&'a str>,
    /// Compose override files beside the file that Compose would merge into it (their names).
    pub overrides: &'a [String],
}

/// A successful import: the stack file and every note.
#[derive(Debug)]
pub struct Imported {
    pub stack: String,
    /// How many services the stack has.
    pub services: usize,
    pub toml: String,
    pub notes: Vec<Note>,
}

impl Imported {
    /// Was everything carried over?
    pub fn is_lossless(&self) -> bool {
        !self.notes.iter().any(|n| n.lossy)
    }
}

/// compose_spec's errors do not say where; find the service (or top-level key) that fails.
fn locate(tree: &serde_yaml::Value, error: serde_yaml::Error) -> String {
    if let Some(services) = tree.get("services").and_then(serde_yaml::Value::as_mapping) {
        for (name, service) in services {
            if let Err(e) = serde_yaml::from_value::<compose_spec::Service>(service.clone()) {
                return format!("services.{}: {e}", name.as_str().unwrap_or_default());
            }
        }
    }
    error.to_string()
}

/// Orders notes as a reader goes through the file: top-level keys, then service by service (a
/// service's renaming first), then the rest; file order within each.
fn sort_notes(notes: &mut [Note], draft: &draft::Draft) {
    notes.sort_by_key(|n| {
        let service = draft.services.iter().position(|s| {
            n.place == format!("services.{}", s.compose_name)
                || n.place.starts_with(&format!("services.{}.", s.compose_name))
        });
        match service {
            Some(i) => (1 + i, n.place.matches('.').count() > 1),
            None if n.place.starts_with("services.")
                || n.place.starts_with('$')
                || n.place == "name"
                || n.place.contains("override") =>
            {
                (0, false)
            }
            None => (0, true),
        }
    });
}

/// Imports one Compose file. An `Err` is a Compose file that is invalid or cannot be represented
/// at all (one sentence, with where).
pub fn import(input: &Input<'_>) -> Result<Imported, String> {
    let project_dir = input.path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut notes = Vec::new();
    for name in input.overrides {
        notes.push(Note {
            lossy: true,
            place: name.clone(),
            message: format!(
                "not merged: Compose merges it into the file; merge them first (`docker compose config > merged.yaml`) and import merged.yaml, or import without {name} if it is not needed"
            ),
        });
    }

    // Later lines of `.env` win; a map keeps each lookup constant-time.
    let dotenv: std::collections::HashMap<String, String> = input.dotenv.unwrap_or_default().iter().cloned().collect();
    let lookup = |name: &str| -> Option<String> { (input.env)(name).or_else(|| dotenv.get(name).cloned()) };

    nesting::check(input.text).map_err(|line| {
        format!(
            "line {line}: `[` and `{{` nest more than {} levels deep; a Compose file nests a few",
            nesting::MAX_FLOW_NESTING
        )
    })?;
    expansion::check(input.text)?;
    let mut tree: serde_yaml::Value =
        serde_yaml::from_str(input.text).map_err(|e| format!("the file is not valid YAML: {e}"))?;
    if !tree.is_mapping() {
        return Err("the file is not a Compose file: its top level is not a mapping".into());
    }
    tree.apply_merge().map_err(|e| format!("a `<<` merge key cannot be applied: {e}"))?;
    let mut unset = Vec::new();
    interpolate::interpolate_tree(&mut tree, &lookup, &mut unset)?;
    let mut named = std::collections::HashSet::new();
    for (name, _) in unset.iter().filter(|(name, _)| named.insert(name.clone())) {
        notes.push(Note {
            lossy: false,
            place: format!("${name}"),
            message: format!(
                "the variable {name} is not set (in the environment or .env); it was replaced by an empty string, as Compose does"
            ),
        });
    }
    // An error names its place first: `services.web.volumes: …`.
    let hint = |e: String| {
        let place = e.split(": ").next().unwrap_or_default().to_string();
        with_unset_hint(e, &place, &unset)
    };
    let home = lookup("HOME").unwrap_or_else(|| "/root".into());
    keys::set_aside_unknown_keys(&mut tree, &home, &mut notes)?;
    sizes::widen(&mut tree);
    let volume_options = docker_forms::rewrite(&mut tree, &mut notes);
    check_port_ranges(&tree)?;
    check_durations(&tree)?;
    let compose: compose_spec::Compose = serde_yaml::from_value(tree.clone()).map_err(|e| hint(locate(&tree, e)))?;

    let project = compose_project_name(compose.name.as_ref().map(|n| n.as_ref()), &lookup, &project_dir);
    let stack = match input.stack {
        Some(s) => s.to_string(),
        None => {
            let (name, changed) = stack_name_from(&project)?;
            if changed {
                notes.push(Note {
                    lossy: false,
                    place: "name".into(),
                    message: format!(
                        "the Compose project `{project}` becomes the stack `{name}` (stack names use lowercase letters, digits and '-'; give another with --stack)"
                    ),
                });
            }
            name
        }
    };
    let ctx = draft::Context {
        project: &project,
        stack: &stack,
        dir: &project_dir,
        lookup: &lookup,
        volume_options: &volume_options,
    };
    let draft = map::map(&ctx, compose, &tree, &mut notes).map_err(hint)?;
    for note in notes.iter_mut().filter(|n| n.lossy) {
        note.message = with_unset_hint(std::mem::take(&mut note.message), &note.place, &unset);
    }
    sort_notes(&mut notes, &draft);
    let toml = write::write(&draft, input.path, &notes);
    schema::check(&toml, &draft).map_err(hint)?;
    Ok(Imported { stack, services: draft.services.len(), toml, notes })
}

/// Refuses a port range that runs backwards (`30-0`) or starts at 0 before the Compose parser
/// sees it: the parser computes a range's size in 16 bits by subtraction, and overflows on both
/// (found by fuzzing and by review; the inputs are kept in fuzz/regressions/ and tests/import/).
fn check_port_ranges(tree: &serde_yaml::Value) -> Result<(), String> {
    let Some(services) = tree.get("services").and_then(serde_yaml::Value::as_mapping) else { return Ok(()) };
    for (name, service) in services {
        let Some(ports) = service.get("ports").and_then(serde_yaml::Value::as_sequence) else { continue };
        let name = name.as_str().unwrap_or("?");
        for (i, port) in ports.iter().enumerate() {
            let texts: Vec<&str> = match port {
                serde_yaml::Value::String(s) => vec![s.as_str()],
                serde_yaml::Value::Mapping(m) => m.values().filter_map(serde_yaml::Value::as_str).collect(),
                _ => Vec::new(),
            };
            for text in texts {
                for part in text.split([':', '/']) {
                    let Some((start, end)) = part.split_once('-') else { continue };
                    let (Ok(start), Ok(end)) = (start.parse::<u32>(), end.parse::<u32>()) else { continue };
                    if start > end {
                        return Err(format!(
                            "services.{name}.ports[{i}]: the port range {start}-{end} runs backwards (its start must not be above its end)"
                        ));
                    }
                    // 0-65535 has 65,536 ports, one more than the parser's count can hold.
                    if start == 0 {
                        return Err(format!(
                            "services.{name}.ports[{i}]: the port range {start}-{end} starts at port 0 (ports are 1-65535)"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The keys of a service that compose_spec reads as durations (`1m30s`), as paths below it.
const DURATION_KEYS: &[&[&str]] = &[
    &["stop_grace_period"],
    &["healthcheck", "interval"],
    &["healthcheck", "timeout"],
    &["healthcheck", "start_period"],
    &["healthcheck", "start_interval"],
    &["deploy", "restart_policy", "delay"],
    &["deploy", "restart_policy", "window"],
    &["deploy", "update_config", "delay"],
    &["deploy", "update_config", "monitor"],
    &["deploy", "rollback_config", "delay"],
    &["deploy", "rollback_config", "monitor"],
];

/// A duration with a number too large for 64 bits is an error here: compose_spec reads each
/// number of a duration into a `u64` and panics on one that does not fit (found by fuzzing:
/// `interval: 1333…3m30s`).
fn check_durations(tree: &serde_yaml::Value) -> Result<(), String> {
    let Some(services) = tree.get("services").and_then(serde_yaml::Value::as_mapping) else { return Ok(()) };
    for (name, service) in services {
        for path in DURATION_KEYS {
            let mut value = Some(service);
            for key in *path {
                value = value.and_then(|v| v.get(*key));
            }
            let Some(text) = value.and_then(serde_yaml::Value::as_str) else { continue };
            let too_large =
                text.split(|c: char| !c.is_ascii_digit()).any(|n| !n.is_empty() && n.parse::<u64>().is_err());
            if too_large {
                return Err(format!(
                    "services.{}.{}: the duration {text:?} has a number too large",
                    name.as_str().unwrap_or("?"),
                    path.join(".")
                ));
            }
        }
    }
    Ok(())
}

/// The unset variables used at `place` or below it (or above it: `services.web` for a use at
/// `services.web.volumes[]`).
fn unset_at(place: &str, unset: &interpolate::UnsetUses) -> interpolate::UnsetUses {
    let related =
        |a: &str, b: &str| a.strip_prefix(b).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
    unset.iter().filter(|(_, at)| related(at, place) || related(place, at)).cloned().collect()
}

/// `message` about `place`, with the unset variables used there named: an empty value that Compose
/// put in their place is often why the value is wrong (Compose warns about them).
fn with_unset_hint(message: String, place: &str, unset: &interpolate::UnsetUses) -> String {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in unset_at(place, unset) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.as_slice() {
        [] => message,
        [one] => format!("{message} (the variable {one} is not set, so it became an empty string)"),
        many => format!("{message} (the variables {} are not set, so they became empty strings)", many.join(", ")),
    }
}
