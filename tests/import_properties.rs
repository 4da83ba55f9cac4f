//! `kapell import compose` on arbitrary Compose documents (issue 16): whatever the key names and
//! string values hold — newlines, `[`, `"`, `#`, `\`, control characters, unicode — the import
//! either refuses, or writes TOML that parses, whose services are exactly the Compose file's
//! services, and that kapell's own reader and checks accept (what `kapell check` runs).
//!
//! The default run is short enough for every `cargo test`. For a long run (the equivalent of a
//! fuzzer; see the README's test section):
//!
//!     KAPELL_IMPORT_CASES=200000 cargo test --release --test import_properties -- --ignored

use kapell::import::{Input, import};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Text that is hostile to TOML, YAML, shells and terminals, and plain text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_-]{0,8}",
        "\\PC{0,12}",
        "[\\x00-\\x1f\\x7f\"'\\\\#\\[\\]{}=.$:\n\r\t \u{2028}\u{202e}a-zA-Z0-9]{0,16}",
        Just("x\n[services.evil]\nexec = [\"/bin/sh\"]\n#".to_string()),
        Just("\"]\n[services.evil]\nimage = \"x\"".to_string()),
    ]
}

/// A string value: `$` doubled nine times in ten, so that interpolation keeps it (else the
/// document is usually refused as an invalid interpolation).
fn value() -> impl Strategy<Value = Value> {
    (text(), proptest::bool::weighted(0.9))
        .prop_map(|(t, escape)| Value::from(if escape { t.replace('$', "$$") } else { t }))
}

/// Ports: mostly valid ones (arbitrary text is refused or set aside as a port kapell cannot
/// carry, which the values of other keys already exercise).
fn ports() -> impl Strategy<Value = Value> {
    proptest::collection::vec(mostly("8080:80"), 0..3).prop_map(Value::Sequence)
}

/// Mostly `valid`, sometimes arbitrary (compose_spec refuses most arbitrary images, users and
/// volumes, and one refusal refuses the whole document).
fn mostly(valid: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![9 => Just(Value::from(valid)), 1 => value()]
}

/// A health check test: `CMD` then arbitrary arguments, mostly.
fn health_test() -> impl Strategy<Value = Value> {
    prop_oneof![
        9 => proptest::collection::vec(value(), 1..3).prop_map(|mut args| {
            args.insert(0, Value::from("CMD"));
            Value::Sequence(args)
        }),
        1 => list(),
    ]
}

fn list() -> impl Strategy<Value = Value> {
    proptest::collection::vec(value(), 0..4).prop_map(Value::Sequence)
}

/// An environment: mostly names compose_spec takes (it refuses a key with a line break).
fn map() -> impl Strategy<Value = Value> {
    let key = prop_oneof![4 => "[A-Za-z_][A-Za-z0-9_.]{0,8}", 1 => text()];
    proptest::collection::vec((key, value()), 0..4)
        .prop_map(|pairs| Value::Mapping(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect()))
}

/// One service: an image and any of the keys kapell carries (and some it does not), with
/// arbitrary names and values.
fn service(names: Vec<String>) -> impl Strategy<Value = Value> {
    (
        mostly("docker.io/library/nginx:1.27"),
        proptest::option::of(list()),
        proptest::option::of(map()),
        proptest::option::of(proptest::collection::vec(mostly("./data:/data"), 0..3).prop_map(Value::Sequence)),
        proptest::option::of(ports()),
        proptest::option::of((text(), value())),
        proptest::option::of(proptest::sample::subsequence(names.clone(), 0..=names.len())),
        proptest::option::of(health_test()),
        proptest::option::of(mostly("1000:1000")),
    )
        .prop_map(|(image, command, environment, volumes, ports, extra, depends_on, health, user)| {
            let mut s = Mapping::new();
            s.insert("image".into(), image);
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    s.insert(k.into(), v);
                }
            };
            put("command", command);
            put("environment", environment);
            put("volumes", volumes);
            put("ports", ports);
            put("depends_on", depends_on.map(|d| Value::Sequence(d.into_iter().map(Value::from).collect())));
            put("healthcheck", health.map(|t| Value::Mapping([("test".into(), t)].into_iter().collect())));
            put("user", user);
            if let Some((k, v)) = extra {
                s.insert(Value::from(k), v);
            }
            Value::Mapping(s)
        })
}

/// A Compose document: services with arbitrary names, and arbitrary top-level keys.
fn document() -> impl Strategy<Value = (Vec<String>, Value)> {
    // Compose service names are identifiers (compose_spec refuses others): mostly those.
    let name = prop_oneof![8 => "[a-zA-Z0-9][a-zA-Z0-9._-]{0,10}", 1 => text()];
    proptest::collection::btree_set(name, 1..4)
        .prop_flat_map(|names| {
            let names: Vec<String> = names.into_iter().collect();
            let services = names.iter().map(|_| service(names.clone())).collect::<Vec<_>>();
            (Just(names), services, proptest::option::of((text(), value())))
        })
        .prop_map(|(names, services, top)| {
            let mut root = Mapping::new();
            root.insert(
                "services".into(),
                Value::Mapping(names.iter().cloned().map(Value::from).zip(services).collect()),
            );
            if let Some((k, v)) = top {
                root.entry(Value::from(k)).or_insert(v);
            }
            (names, Value::Mapping(root))
        })
}

/// The property, for one Compose text: Ok(true) when it was imported, Ok(false) when refused.
fn check(names: &[String], yaml: &str) -> Result<bool, TestCaseError> {
    let no_env = |_: &str| None;
    let input = Input {
        path: Path::new("/srv/project/compose.yaml"),
        text: yaml,
        dotenv: None,
        env: &no_env,
        stack: Some("project"),
        overrides: &[],
    };
    let Ok(imported) = import(&input) else { return Ok(false) };
    let toml = &imported.toml;
    let table: toml::Table = toml.parse().map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}\n---\n{toml}")))?;
    let keys: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    prop_assert!(keys.iter().all(|k| ["services", "secrets"].contains(k)), "{keys:?}\n{toml}");
    let services = table["services"].as_table().ok_or_else(|| TestCaseError::fail("no services"))?;
    let written: BTreeSet<String> = services.keys().cloned().collect();
    let expected: BTreeSet<String> = names.iter().filter_map(|n| kapell::import::kapell_name(n)).collect();
    prop_assert_eq!(&written, &expected, "{}\n---\n{}", yaml, toml);
    prop_assert_eq!(imported.services, names.len());
    let parsed = kapell::config::parse_stack(Path::new("project.toml"), toml);
    let checked = kapell::validate::check_host(vec![parsed], &kapell::validate::UnitSearchPath::new(Vec::new()));
    let errors: Vec<String> = checked.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    prop_assert!(errors.is_empty(), "kapell check: {errors:?}\n{yaml}\n---\n{toml}");
    // Comments are one line each: every line is blank, a comment, a table, a key or inside a
    // value the parser read (checked above), so no comment text can start a line of its own.
    for line in toml.lines() {
        prop_assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "{line:?}");
    }
    Ok(true)
}

/// Runs `cases` documents; returns how many were imported (the rest were refused).
fn run(cases: u32) -> u32 {
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let imported = std::cell::Cell::new(0);
    let result = runner.run(&document(), |(names, doc)| {
        let yaml = serde_yaml::to_string(&doc).expect("yaml");
        if check(&names, &yaml)? {
            imported.set(imported.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    imported.get()
}

#[test]
fn any_compose_document_is_refused_or_imported_exactly() {
    let imported = run(256);
    // Most documents must get through, or the property checks only refusals.
    assert!(imported >= 32, "only {imported} of 256 documents were imported");
}

/// The long run: as many cases as `KAPELL_IMPORT_CASES` says (see the head of the file).
#[test]
#[ignore = "a long run; see the head of tests/import_properties.rs"]
fn any_compose_document_long_run() {
    let cases = std::env::var("KAPELL_IMPORT_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let started = std::time::Instant::now();
    let imported = run(cases);
    println!("{cases} documents, {imported} imported, {} refused, in {:.0?}", cases - imported, started.elapsed());
}
