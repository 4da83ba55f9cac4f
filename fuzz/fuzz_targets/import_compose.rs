//! `kapell import compose` on any bytes: it refuses, or writes a stack that parses, has as many
//! services as it says, and passes kapell's own reader and checks; it never panics, overflows
//! the stack or runs away (libFuzzer's -timeout and -rss_limit_mb catch the last two).
#![no_main]

use kapell::import::{Input, import};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first line, if it starts with `#env `, is the project's `.env` (a line per `\n`).
    let (dotenv, compose) = match text.strip_prefix("#env ").and_then(|t| t.split_once('\n')) {
        Some((env, rest)) => (Some(env.replace("\\n", "\n")), rest),
        None => (None, text),
    };
    let no_env = |_: &str| None;
    let input = Input {
        path: Path::new("/srv/project/compose.yaml"),
        text: compose,
        dotenv: dotenv.as_deref(),
        env: &no_env,
        stack: Some("project"),
        overrides: &[],
    };
    let Ok(imported) = import(&input) else { return };
    let table: toml::Table = imported.toml.parse().expect("the stack is TOML");
    let services = table["services"].as_table().expect("a services table");
    assert_eq!(services.len(), imported.services);
    let parsed = kapell::config::parse_stack(Path::new("project.toml"), &imported.toml);
    let checked = kapell::validate::check_host(vec![parsed], &kapell::validate::UnitSearchPath::new(Vec::new()));
    assert!(!checked.diagnostics.iter().any(|d| d.is_error()), "kapell check refuses:\n{}", imported.toml);
});
