//! The written stack read back with kapell's own reader and checks, before anyone sees it: a
//! value the stack schema cannot hold (a NUL in an argument, a network name Docker refuses, a
//! file above the stack size limit) is the Compose file's problem, reported at its Compose place
//! (`services.web.networks: …`), never a stack that `kapell check` then rejects.

use super::draft::Draft;
use crate::config;
use crate::config::document::{Table, Value};
use crate::validate::{self, UnitSearchPath};
use std::ops::Range;
use std::path::Path;

/// kapell's key → the Compose key it comes from (the same name when not listed).
const COMPOSE_KEYS: &[(&str, &str)] = &[
    ("env", "environment"),
    ("env_files", "env_file"),
    ("network", "networks"),
    ("health", "healthcheck"),
    ("cmd", "test"),
    ("restart_delay", "deploy.restart_policy.delay"),
    ("stop_timeout", "stop_grace_period"),
    ("memory_max", "mem_limit"),
    ("pids_max", "pids_limit"),
    ("replicas", "deploy.replicas"),
    ("requires", "depends_on"),
    ("wants", "depends_on"),
    ("pull", "pull_policy"),
];

fn compose_key(key: &str) -> &str {
    COMPOSE_KEYS.iter().find(|(k, _)| *k == key).map_or(key, |(_, c)| c)
}

/// Ok when `kapell check` accepts `toml` (the import of `draft`); else every problem, one per
/// line, at its place in the Compose file.
pub(super) fn check(toml: &str, draft: &Draft) -> Result<(), String> {
    let size = toml.len() as u64;
    if size > config::MAX_STACK_FILE_SIZE {
        return Err(format!(
            "the stack would be {size} bytes, above the {} bytes a stack file may have; the largest value is {}",
            config::MAX_STACK_FILE_SIZE,
            largest_value(toml, draft)
        ));
    }
    let path = format!("{}.toml", draft.stack);
    let parsed = config::parse_stack(Path::new(&path), toml);
    // Host-wide checks of this one stack (dependency cycles, say); units of the host it would
    // shadow are the command's to report, with a way out.
    let checked = validate::check_host(vec![parsed], &UnitSearchPath::new(Vec::new()));
    let problems: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", place(toml, draft, &d.span), d.message))
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// The Compose place of a span of the written stack: `services.<compose name>.<compose key>`.
fn place(toml: &str, draft: &Draft, span: &Range<usize>) -> String {
    let (root, errors) = crate::config::document::parse(toml);
    if !errors.is_empty() {
        return "the file".into();
    }
    let path = key_path(&root, span.start).unwrap_or_default();
    match path.as_slice() {
        [services, name, rest @ ..] if services == "services" => {
            let service = draft.services.iter().find(|s| s.name == *name);
            let compose = service.map_or(name.as_str(), |s| &s.compose_name);
            let mut out = format!("services.{compose}");
            for (i, key) in rest.iter().enumerate() {
                // Below `env` the keys are the variables' own names.
                let key = match service.and_then(|s| s.compose_key_of(key)) {
                    Some(from) if i == 0 => from,
                    _ if i > 0 && rest[0] == "env" => key.as_str(),
                    _ => compose_key(key),
                };
                out.push('.');
                out.push_str(key);
            }
            out
        }
        [] => "the file".into(),
        other => other.join("."),
    }
}

/// The keys down to the innermost key or value at `at` (the header of `[a.b]` spans only
/// itself, so every table is searched).
fn key_path(table: &Table<'_>, at: usize) -> Option<Vec<String>> {
    let inside = |s: Range<usize>| s.start <= at && at < s.end.max(s.start + 1);
    for (key, value) in table.iter() {
        let below = match value.get_ref() {
            Value::Table(t) => key_path(t, at),
            _ => None,
        };
        if let Some(mut below) = below {
            below.insert(0, key.get_ref().to_string());
            return Some(below);
        }
        if inside(key.span()) || inside(value.span()) {
            return Some(vec![key.get_ref().to_string()]);
        }
    }
    None
}

/// The place and size of the longest value of the stack.
fn largest_value(toml: &str, draft: &Draft) -> String {
    let (root, errors) = crate::config::document::parse(toml);
    if !errors.is_empty() {
        return "unknown".into();
    }
    let mut best: Option<Range<usize>> = None;
    fn walk(table: &Table<'_>, best: &mut Option<Range<usize>>) {
        for (_, value) in table.iter() {
            match value.get_ref() {
                Value::Table(t) => walk(t, best),
                _ if best.as_ref().is_none_or(|b| b.len() < value.span().len()) => *best = Some(value.span()),
                _ => {}
            }
        }
    }
    walk(&root, &mut best);
    best.map_or_else(|| "unknown".into(), |b| format!("{} ({} bytes)", place(toml, draft, &b), b.len()))
}
