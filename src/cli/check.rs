//! `kapell check [PATH…]`: parse and validate; every problem as `file:line:col: message`.

use super::{exit, expand_paths};
use crate::config;
use crate::validate::UnitSearchPath;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Validate stacks and print every problem as file:line:col.
///
/// With no PATH, checks every stack of the config directory. With PATHs (files or
/// directories), checks those, against the config directory's other stacks (for
/// "<stack>.<service>" dependencies). Exits 1 if anything is invalid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stack files or directories to check instead of the whole config directory.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let paths = expand_paths(&args.paths)?;
    let checked = crate::host::load(config_dir, &paths, &UnitSearchPath::from_env())?;
    // With explicit paths, report on those stacks only; their neighbours are context.
    let wanted = |name: &str| paths.is_empty() || paths.iter().any(|p| config::stack_name(p) == name);
    let diagnostics: Vec<_> = checked.diagnostics.iter().filter(|d| wanted(&config::stack_name(d.path()))).collect();
    let stacks: Vec<_> = checked.stacks.iter().filter(|s| wanted(&s.name)).collect();
    let failed: Vec<_> = checked.failed.iter().filter(|n| wanted(n)).collect();
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();

    if args.json {
        let json = serde_json::json!({
            "ok": errors == 0,
            "stacks": stacks.iter().map(|s| serde_json::json!({
                "name": s.name.as_str(),
                "path": s.source.path,
                "services": s.services().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "failed": failed,
            "diagnostics": diagnostics.iter().map(|d| {
                let (line, column) = d.line_col();
                let severity = if d.is_error() { "error" } else { "warning" };
                serde_json::json!({ "file": d.path(), "line": line, "column": column, "severity": severity, "message": d.message })
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        for s in &stacks {
            let n = s.services().len();
            println!("ok: {} ({n} service{})", s.name, if n == 1 { "" } else { "s" });
        }
        if !failed.is_empty() {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            eprintln!("{errors} error{} in {} stack{}", plural(errors), failed.len(), plural(failed.len()));
        } else if stacks.is_empty() {
            eprintln!("no stacks found in {}", config_dir.display());
        }
    }
    Ok(if errors == 0 { exit::OK } else { exit::INVALID })
}
