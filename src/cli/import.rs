//! `kapell import compose [FILE]`: a Compose project as a stack file (kapell(8)).

use super::exit;
use crate::config;
use crate::import::{self, Imported, Input};
use crate::printable::{printable, printable_lines};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Turn another tool's project into a stack file.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    Compose(ComposeArgs),
}

/// Turn a Docker Compose project into a stack file, reporting everything it cannot carry over.
///
/// Reads FILE (default: the first file COMPOSE_FILE names, from the environment, the --env-file
/// or the .env file of the current directory; else compose.yaml, compose.yml, docker-compose.yaml or
/// docker-compose.yml in the current directory), with the project's .env file and the environment for ${VAR}
/// interpolation as Compose does, and writes a commented stack that passes `kapell check`. The
/// stack is named after the Compose project (COMPOSE_PROJECT_NAME, the top-level `name`, or the
/// directory), made a valid kapell name. Services keep their names where kapell allows them
/// (`Web_App` becomes `web-app`, with a warning); the project's networks become the stack
/// network kapell-<stack>, where services reach each other by service name; named volumes keep
/// the Docker volumes Compose created (<project>_<volume>), so their data carries over.
///
/// Every key, option or value without a kapell equivalent is reported on standard error, one
/// line each, as `warning: <where>: <what to do>`; `note:` lines change nothing. Exit status: 0
/// everything was carried over; 4 something was not (the stack is written, except with
/// --strict); 1 the Compose file is invalid or cannot be represented (nothing written); 2 bad
/// usage or a refused write; 3 a file could not be read or written.
#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// The Compose file.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Name of the stack (default: the Compose project name, made a valid stack name).
    #[arg(long, value_name = "NAME")]
    pub stack: Option<String>,

    /// Write the stack here instead of to standard output: a file whose name is <stack>.toml,
    /// or a directory (such as /etc/kapell) to write <stack>.toml into.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Replace the file --out names if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,

    /// Treat everything that cannot be carried over as an error: report each, write nothing,
    /// exit 4.
    #[arg(long)]
    pub strict: bool,

    /// The file of variables for interpolation (default: .env beside the Compose file, if any).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
}

/// Compose's own search order for a project's file.
/// The files Compose looks for, and the override files it merges into the one it found, each in
/// Compose's order of preference (compose-go's `DefaultFileNames`, `DefaultOverrideFileNames`).
const DEFAULT_FILES: &[&str] = &["compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"];
const DEFAULT_OVERRIDES: &[&str] =
    &["compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml"];

/// The files `COMPOSE_FILE` names, as Compose reads it: from the environment, else from
/// `env_file` (`--env-file`, or `.env` in the current directory); separated by
/// `COMPOSE_PATH_SEPARATOR` (`:` unless set). The first is the project's file, the others files
/// Compose merges into it. `None` when it is unset or empty.
fn compose_file_variable(env_file: &Path) -> Option<Vec<String>> {
    let env = |name: &str| std::env::var(name).ok();
    // A `.env` that cannot be read here is reported by the import itself, which reads it again.
    let dotenv: Vec<(String, String)> = std::fs::read_to_string(env_file)
        .ok()
        .and_then(|text| import::interpolate::parse_dotenv(&text, &env).ok())
        .unwrap_or_default();
    let lookup =
        |name: &str| env(name).or_else(|| dotenv.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let value = lookup("COMPOSE_FILE").filter(|v| !v.is_empty())?;
    let separator = lookup("COMPOSE_PATH_SEPARATOR").filter(|s| !s.is_empty()).unwrap_or_else(|| ":".into());
    let files: Vec<String> = value.split(separator.as_str()).filter(|f| !f.is_empty()).map(String::from).collect();
    (!files.is_empty()).then_some(files)
}

fn usage(message: String) -> Result<u8> {
    // Paths from the command line: escapes in them reach the terminal as text.
    eprintln!("error: {}", printable_lines(&message));
    Ok(exit::USAGE)
}

pub fn run(args: Args) -> Result<u8> {
    match args.what {
        What::Compose(a) => compose(a),
    }
}

fn compose(args: ComposeArgs) -> Result<u8> {
    // Compose merges an override file only into the file it finds itself.
    let mut overrides = Vec::new();
    // The file of variables Compose reads before it knows the project's file (for COMPOSE_FILE).
    let first_env_file = args.env_file.clone().unwrap_or_else(|| PathBuf::from(".env"));
    let mut named_by_env_file = false;
    let file = match args.file {
        Some(f) => f,
        // COMPOSE_FILE names the project's files instead of the names Compose looks for.
        None if let Some(mut files) = compose_file_variable(&first_env_file) => {
            let first = files.remove(0);
            overrides = files;
            named_by_env_file = std::env::var_os("COMPOSE_FILE").is_none();
            PathBuf::from(first)
        }
        None => match DEFAULT_FILES.iter().map(PathBuf::from).find(|f| f.is_file()) {
            Some(f) => {
                // The first override of Compose's list, whatever the main file is called
                // (compose.yaml gets docker-compose.override.yml too).
                overrides.extend(DEFAULT_OVERRIDES.iter().find(|o| Path::new(o).is_file()).map(|o| o.to_string()));
                f
            }
            None => return usage(format!("no Compose file here ({}); name one", DEFAULT_FILES.join(", "))),
        },
    };
    let file = std::path::absolute(&file).with_context(|| format!("cannot resolve {}", file.display()))?;

    // The stack name: --stack, or the file name --out gives, or the project's.
    let mut stack = args.stack.clone();
    let mut out_file = None;
    if let Some(out) = &args.out {
        if out.is_dir() {
            out_file = Some(out.clone());
        } else {
            if out.extension().is_none_or(|e| e != "toml") {
                return usage(format!("--out {}: a stack file's name is <stack>.toml", out.display()));
            }
            let stem = config::stack_name(out);
            match &stack {
                Some(s) if *s != stem => {
                    return usage(format!(
                        "--out {} names the stack `{stem}` (a stack is named by its file), but --stack is `{s}`",
                        out.display()
                    ));
                }
                _ => stack = Some(stem),
            }
            out_file = Some(out.clone());
        }
    }
    if let Some(s) = &stack
        && let Err(e) = crate::names::check_stack_name(s)
    {
        return usage(e);
    }

    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    // The file that named the project's file is the one its variables come from, wherever the
    // project's file is (Compose reads the current directory's `.env` first).
    let env_path = args
        .env_file
        .clone()
        .or_else(|| named_by_env_file.then(|| first_env_file.clone()))
        .or_else(|| Some(file.parent()?.join(".env")).filter(|p| p.is_file()));
    let env = |name: &str| std::env::var(name).ok();
    let dotenv = match &env_path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            // Its errors are its own: `FILE:LINE: why`, not the Compose file's.
            match import::interpolate::parse_dotenv(&text, &env) {
                Ok(vars) => Some(vars),
                Err(e) => {
                    eprintln!("error: {}:{}", printable(&p.display().to_string()), printable(&e));
                    return Ok(exit::INVALID);
                }
            }
        }
        None => None,
    };
    let input = Input {
        path: &file,
        text: &text,
        dotenv: dotenv.as_deref(),
        env: &env,
        stack: stack.as_deref(),
        overrides: &overrides,
    };
    let imported = match import::import(&input) {
        Ok(i) => i,
        Err(e) => {
            // One problem per line; each shown printable (it may quote any text of the file).
            for problem in e.lines() {
                eprintln!("error: {}: {}", printable(&file.display().to_string()), printable(problem));
            }
            return Ok(exit::INVALID);
        }
    };
    if let Some(code) = self_check(&imported)? {
        return Ok(code);
    }

    let lossy = imported.notes.iter().filter(|n| n.lossy).count();
    for note in &imported.notes {
        let level = match (note.lossy, args.strict) {
            (true, true) => "error",
            (true, false) => "warning",
            (false, _) => "note",
        };
        eprintln!("{level}: {}", printable(&note.to_string()));
    }
    let services = imported.services;
    if args.strict && lossy > 0 {
        eprintln!("{lossy} setting{} cannot be carried over (--strict): nothing written", plural(lossy));
        return Ok(exit::LOSSY);
    }
    let summary = format!("stack `{}` ({services} service{})", imported.stack, plural(services));
    match out_file {
        None => {
            std::io::stdout().write_all(imported.toml.as_bytes()).context("cannot write to standard output")?;
            eprintln!("imported {} as {summary}", printable(&file.display().to_string()));
        }
        Some(out) => {
            let path = if out.is_dir() { out.join(format!("{}.toml", imported.stack)) } else { out };
            if path.exists() && !args.force {
                return usage(format!("{} exists; remove it, choose another --out, or add --force", path.display()));
            }
            write_atomically(&path, &imported.toml).with_context(|| format!("cannot write {}", path.display()))?;
            let (file, path) = (file.display().to_string(), path.display().to_string());
            eprintln!("imported {} as {summary}: {}", printable(&file), printable(&path));
        }
    }
    if lossy > 0 {
        eprintln!("{lossy} setting{} not carried over (see the warnings above)", plural(lossy));
        return Ok(exit::LOSSY);
    }
    Ok(exit::OK)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The import checked the stack with kapell's own validator (an error there would be a bug of the
/// import). Here the checks against this host: a stack or service whose unit would shadow one of
/// this host's units is refused (2), with the way out.
fn self_check(imported: &Imported) -> Result<Option<u8>> {
    let path = PathBuf::from(format!("{}.toml", imported.stack));
    let parsed = config::parse_stack(&path, &imported.toml);
    let errors: Vec<String> = parsed.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    if !errors.is_empty() {
        anyhow::bail!(
            "the imported stack does not pass `kapell check` (a bug in kapell import; please report it):\n{}",
            errors.join("\n")
        )
    }
    let checked = crate::validate::check_host(vec![parsed], &UnitSearchPath::from_env());
    let host_errors: Vec<_> = checked.diagnostics.iter().filter(|d| d.is_error()).collect();
    if host_errors.is_empty() {
        return Ok(None);
    }
    for d in host_errors {
        eprintln!("error: {}", d.message);
    }
    eprintln!("nothing written: choose another stack name with --stack, or rename the service in the Compose file");
    Ok(Some(exit::USAGE))
}

/// A stack replaced with --force keeps its mode: one kept 0600 for the secrets in it stays so.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    crate::atomic_file::replace_keeping_mode(path, text.as_bytes(), crate::atomic_file::Durability::Durable)
}
