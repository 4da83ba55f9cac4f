//! `kapell graph`: the service graph as Graphviz DOT or SVG.

use super::exit;
use crate::diagnostics::did_you_mean;
use crate::model::{DepTarget, Stack};
use crate::printable::printable;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Draw the service graph: one box per stack, an arrow per dependency.
///
/// Solid arrows are `requires`, dashed ones `wants`; containers are boxes, native services
/// ellipses, plain systemd units notes. SVG output needs Graphviz's `dot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this stack (and the services it depends on in other stacks).
    #[arg(value_name = "STACK")]
    pub stack: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Dot,
    Svg,
}

pub fn run(config_dir: &Path, args: Args) -> Result<u8> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())?;
    for d in &checked.diagnostics {
        eprintln!("{d}");
    }
    let stacks: Vec<&Stack> = match &args.stack {
        Some(name) => match checked.stacks.iter().find(|s| &s.name == name) {
            Some(s) => vec![s],
            None if checked.failed.contains(name) => return Ok(exit::INVALID),
            None => {
                // A wrong name is a bad request (2), as for `status` and `logs`, not a failure (3).
                let hint = did_you_mean(name, checked.stacks.iter().map(|s| s.name.as_str()))
                    .map(|n| format!(" (did you mean {n}?)"))
                    .unwrap_or_default();
                eprintln!("error: there is no stack {} in {}{hint}", printable(name), config_dir.display());
                return Ok(exit::USAGE);
            }
        },
        None => checked.stacks.iter().collect(),
    };
    let dot = to_dot(&stacks);
    match args.format {
        Format::Dot => print!("{dot}"),
        Format::Svg => {
            let mut child = std::process::Command::new("dot")
                .arg("-Tsvg")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("cannot run Graphviz's `dot` (install the graphviz package for SVG output)")?;
            child.stdin.take().context("no stdin for dot")?.write_all(dot.as_bytes())?;
            if !child.wait()?.success() {
                bail!("Graphviz's `dot` failed");
            }
        }
    }
    Ok(if checked.is_ok() { exit::OK } else { exit::INVALID })
}

/// DOT text. Node ids are quoted DOT strings of validated names (no escaping needed beyond that).
pub fn to_dot(stacks: &[&Stack]) -> String {
    let mut out = String::from("digraph kapell {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    let mut external: Vec<String> = Vec::new();
    for stack in stacks {
        let _ = writeln!(out, "  subgraph \"cluster_{0}\" {{\n    label=\"{0}\";", stack.name);
        for service in stack.services() {
            let shape = if service.is_container() { "box" } else { "ellipse" };
            let label = match service.replicas {
                Some(n) => format!("{} ×{n}", service.name),
                None => service.name.to_string(),
            };
            let _ = writeln!(out, "    \"{}.{}\" [label=\"{label}\", shape={shape}];", stack.name, service.name);
        }
        out.push_str("  }\n");
        for service in stack.services() {
            for (deps, style) in [(&service.requires, "solid"), (&service.wants, "dashed")] {
                for dep in deps {
                    let to = match &dep.target {
                        DepTarget::Local(s) => format!("{}.{s}", stack.name),
                        DepTarget::Remote { stack, service } => crate::names::qualified(stack, service),
                        DepTarget::Unit(u) => {
                            if !external.contains(u) {
                                external.push(u.clone());
                            }
                            u.clone()
                        }
                    };
                    let _ = writeln!(out, "  \"{}.{}\" -> \"{to}\" [style={style}];", stack.name, service.name);
                }
            }
        }
    }
    for unit in external {
        let _ = writeln!(out, "  \"{unit}\" [shape=note];");
    }
    out.push_str("}\n");
    out
}
