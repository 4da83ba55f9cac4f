//! The command line (kapell(8)): one file per subcommand, each with a `run()`.

mod apply;
mod check;
mod dns;
mod federate;
mod fleet;
mod generate;
mod graph;
mod import;
mod logs;
mod probe;
mod receive;
mod run;
mod status;
mod table;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub use crate::exit;

/// Service graphs in TOML become ordinary systemd units.
///
/// Stacks live in /etc/kapell/<stack>.toml. `kapell check` validates them, `kapell generate`
/// shows the units the boot-time generator writes.
#[derive(Debug, Parser)]
#[command(name = "kapell", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Directory holding the stacks (*.toml) and, on a controller, fleet.toml.
    #[arg(long, global = true, env = "KAPELL_CONFIG_DIR", default_value = crate::config::DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(check::Args),
    Generate(generate::Args),
    Graph(graph::Args),
    Apply(apply::Args),
    Status(status::Args),
    Logs(logs::Args),
    #[command(subcommand)]
    Fleet(fleet::Command),
    Federate(federate::Args),
    Dns(dns::Args),
    Receive(receive::Args),
    Import(import::Args),
    Probe(probe::Args),
    #[command(hide = true)]
    Prober(probe::ProberArgs),
    #[command(hide = true)]
    Run(run::Args),
}

/// The whole program: the generator when started as `kapell-generator` (a link made by hand; the
/// packages install the generator's own executable), else the subcommand.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    if invoked_as == "kapell-generator" {
        return generator_main();
    }
    if args.get(1).is_some_and(|a| a == "run") {
        return report(run::main(&args[1..]));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check::run(&cli.config_dir, a),
        Command::Generate(a) => generate::run(&cli.config_dir, a),
        Command::Graph(a) => graph::run(&cli.config_dir, a),
        Command::Apply(a) => apply::run(&cli.config_dir, a),
        Command::Status(a) => status::run(&cli.config_dir, a),
        Command::Logs(a) => logs::run(&cli.config_dir, a),
        Command::Fleet(c) => fleet::run(&cli.config_dir, c),
        Command::Federate(a) => federate::run(&cli.config_dir, a),
        Command::Dns(a) => dns::run(&cli.config_dir, a),
        Command::Receive(a) => receive::run(&cli.config_dir, a),
        Command::Import(a) => import::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Prober(a) => probe::prober(a),
        Command::Run(a) => run::run(a),
    };
    report(result)
}

/// The generator's program (`src/bin/kapell-generator.rs`, and `kapell` started under that name).
pub fn generator_main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    report(crate::generator::main(&args).map(|()| exit::OK))
}

/// Prints an error chain once (`error: …` then ` -> cause` lines) and picks the exit status.
fn report(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // An error may quote what a file or another host said: shown, never obeyed.
            let shown = |text: String| crate::printable::printable_lines(&text);
            eprintln!("error: {}", shown(e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!(" -> {}", shown(cause.to_string()));
            }
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Stack paths given on the command line: files, or directories meaning their stack files.
fn expand_paths(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(crate::config::stack_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
