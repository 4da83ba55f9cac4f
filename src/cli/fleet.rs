//! `kapell fleet plan|apply|status`: the controller's commands (SPEC §8).

use super::{exit, table};
use crate::fleet::controller::{Controller, HostResult};
use crate::fleet::protocol::{self, HostSet, Reply, SetFile};
use crate::status::{SupervisorStatus, format_age};
use crate::unitset;
use anyhow::Result;
use std::io::IsTerminal as _;
use std::path::Path;

/// Push the stacks to the fleet of fleet.toml: plan, apply, status.
///
/// The controller keeps the stacks and /etc/kapell/fleet.toml (see kapell-fleet.toml(5)); each
/// service's `placement` says which hosts run it. Every host gets its own unit set, pushed over
/// SSH to `kapell receive` on the host, which installs it atomically and makes systemd run it.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Plan(PlanArgs),
    Apply(ApplyArgs),
    Status(StatusArgs),
}

/// Show, per host, the units a push would add, change and remove, with a diff; change nothing.
///
/// Asks every host (in parallel) what it runs now. Exit status: 0 every host answered, 1 a stack
/// or fleet.toml is invalid, 3 a host could not be asked.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Only these hosts (names, or @key=value for every host with that label).
    #[arg(long = "on", value_name = "HOST|@LABEL")]
    pub on: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Push every host's unit set and make its systemd run it, all hosts in parallel.
///
/// Up to `parallel` hosts (fleet.toml) at once; one unreachable or failing host never blocks,
/// slows down or rolls back the others. Ends with a table per host: result, units added,
/// changed and removed, time, and the error of a failed host. A host that already runs its set
/// is not changed (no unit restarts). Exit status: 0 every host converged, 1 a stack or
/// fleet.toml is invalid, 2 a bad --on, 3 a host failed.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Only these hosts (names, or @key=value for every host with that label).
    #[arg(long = "on", value_name = "HOST|@LABEL")]
    pub on: Vec<String>,
}

/// Show every host's services: HOST, STACK, SERVICE, GOAL, STATE, SINCE.
///
/// Asked of every host in parallel; an unreachable host is shown as such, and a host that runs
/// another set than the controller would push is marked as drifted. Exit status: 0 every host
/// answered, 3 otherwise.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these hosts (names, or @key=value for every host with that label).
    #[arg(long = "on", value_name = "HOST|@LABEL")]
    pub on: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_dir: &Path, command: Command) -> Result<u8> {
    let controller = match Controller::load(config_dir)? {
        Ok(controller) => controller,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            let n = diags.iter().filter(|d| d.is_error()).count();
            eprintln!("nothing was done: {n} error{} to fix first", if n == 1 { "" } else { "s" });
            return Ok(exit::INVALID);
        }
    };
    let on = match &command {
        Command::Plan(a) => &a.on,
        Command::Apply(a) => &a.on,
        Command::Status(a) => &a.on,
    };
    let hosts = match controller.select(on) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(exit::USAGE);
        }
    };
    match command {
        Command::Plan(a) => plan(&controller, &hosts, a.json),
        Command::Apply(_) => apply(&controller, &hosts),
        Command::Status(a) => status(&controller, &hosts, a.json),
    }
}

fn address(controller: &Controller, host: &str) -> String {
    controller.fleet.hosts[host].address.clone()
}

fn plan(controller: &Controller, hosts: &[String], json: bool) -> Result<u8> {
    let results = controller.status(hosts, &|_| {});
    let mut failed = false;
    let mut out = Vec::new();
    for result in &results {
        let desired = &controller.sets[&result.host];
        match &result.outcome {
            Ok(reply) => {
                let current = HostSet { files: reply.files.clone(), hash: reply.current.clone() };
                let diff = unitset::diff(&current.to_rendered(), &desired.to_rendered());
                // Units first, then the `*.wants/` links that follow from them.
                let units_first = |mut paths: Vec<String>| {
                    paths.sort_by_key(|p| (p.contains('/'), p.clone()));
                    paths
                };
                let (added, changed, removed) =
                    (units_first(diff.added), units_first(diff.changed), units_first(diff.removed));
                out.push(serde_json::json!({
                    "host": result.host, "address": address(controller, &result.host),
                    "current": reply.current, "desired": desired.hash,
                    "add": added, "change": changed, "remove": removed,
                }));
                if json {
                    continue;
                }
                let head = format!("{} ({})", result.host, address(controller, &result.host));
                if added.is_empty() && changed.is_empty() && removed.is_empty() {
                    println!("{head}: up to date ({} units)", desired.units().count());
                    continue;
                }
                let n = protocol::units_only;
                println!("{head}: {} to add, {} to change, {} to remove", n(&added), n(&changed), n(&removed));
                for path in &added {
                    println!("  add     {path}");
                }
                for path in &changed {
                    println!("  change  {path}");
                    print_diff(current.files.get(path), desired.files.get(path));
                }
                for path in &removed {
                    println!("  remove  {path}");
                }
            }
            Err(why) => {
                failed = true;
                out.push(serde_json::json!({ "host": result.host, "desired": desired.hash, "error": why }));
                if !json {
                    println!("{} ({}): UNREACHABLE: {why}", result.host, address(controller, &result.host));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        note_local_stacks(controller);
        println!("plan only: nothing was changed");
    }
    Ok(if failed { exit::FAILED } else { exit::OK })
}

/// The lines that change in a unit, as a unified diff with one line of context.
fn print_diff(old: Option<&SetFile>, new: Option<&SetFile>) {
    let text = |f: Option<&SetFile>| match f {
        Some(SetFile::Unit { text, .. }) => text.clone(),
        Some(SetFile::Link { target }) => format!("-> {target}\n"),
        None => String::new(),
    };
    let (old, new) = (text(old), text(new));
    let diff = similar::TextDiff::from_lines(&old, &new);
    for hunk in diff.unified_diff().context_radius(1).iter_hunks() {
        for line in hunk.to_string().lines() {
            println!("          {line}");
        }
    }
}

fn note_local_stacks(controller: &Controller) {
    if !controller.local_stacks.is_empty() {
        println!(
            "note: stacks without placement stay on this host and are not pushed: {}",
            controller.local_stacks.join(", ")
        );
    }
}

fn apply(controller: &Controller, hosts: &[String]) -> Result<u8> {
    let live = std::io::stdout().is_terminal();
    if live {
        println!(
            "pushing to {} host{} ({} at a time)…",
            hosts.len(),
            plural(hosts.len()),
            controller.fleet.defaults.parallel
        );
    }
    let results = controller.install(hosts, &|r| println!("{}", progress_line(r)));
    println!();
    let mut rows = vec![["HOST", "RESULT", "ADDED", "CHANGED", "REMOVED", "TIME"].map(String::from).to_vec()];
    let mut details = Vec::new();
    let mut failed = 0;
    for r in &results {
        let took = format!("{:.2}s", r.took.as_secs_f64());
        match &r.outcome {
            Ok(reply) => {
                let result = result_word(reply);
                if result == "FAILED" {
                    failed += 1;
                    details.push(format!("{}: {}", r.host, failure_text(reply)));
                }
                for unit in &reply.conflicts {
                    details.push(format!(
                        "{}: {unit} not installed: a local stack of the host has a unit of that name",
                        r.host
                    ));
                }
                rows.push(vec![
                    r.host.clone(),
                    result.to_string(),
                    protocol::units_only(&reply.added).to_string(),
                    protocol::units_only(&reply.updated).to_string(),
                    protocol::units_only(&reply.removed).to_string(),
                    took,
                ]);
            }
            Err(why) => {
                failed += 1;
                details.push(format!("{}: {why}", r.host));
                rows.push(vec![r.host.clone(), "FAILED".into(), "-".into(), "-".into(), "-".into(), took]);
            }
        }
    }
    table::print(&rows);
    for line in &details {
        println!("{line}");
    }
    note_local_stacks(controller);
    if failed > 0 {
        eprintln!("{failed} of {} host{} did not converge", results.len(), plural(results.len()));
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

fn result_word(reply: &Reply) -> &'static str {
    if reply.error.is_some() || reply.failures > 0 {
        "FAILED"
    } else if reply.changed {
        "converged"
    } else {
        "up to date"
    }
}

fn failure_text(reply: &Reply) -> String {
    let mut text = reply.error.clone().unwrap_or_else(|| format!("{} unit(s) failed", reply.failures));
    let failed: Vec<&String> = reply.actions.iter().filter(|a| a.starts_with("FAILED")).collect();
    for line in failed.iter().rev().take(5).rev() {
        text.push_str(&format!("\n    {line}"));
    }
    text
}

fn progress_line(r: &HostResult) -> String {
    let took = format!("{:.2}s", r.took.as_secs_f64());
    match &r.outcome {
        Ok(reply) => {
            let word = result_word(reply);
            let what = if reply.changed {
                let n = protocol::units_only;
                format!(" (+{} ~{} -{} units)", n(&reply.added), n(&reply.updated), n(&reply.removed))
            } else {
                String::new()
            };
            format!("{}: {word}{what} in {took}", r.host)
        }
        Err(_) => format!("{}: FAILED in {took}", r.host),
    }
}

fn status(controller: &Controller, hosts: &[String], json: bool) -> Result<u8> {
    let results = controller.status(hosts, &|_| {});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let mut rows = vec![["HOST", "STACK", "SERVICE", "GOAL", "STATE", "SINCE", "HEALTH"].map(String::from).to_vec()];
    let mut notes = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    for r in &results {
        let desired = &controller.sets[&r.host];
        let reply = match &r.outcome {
            Ok(reply) => reply,
            Err(why) => {
                failed = true;
                rows.push(vec![
                    r.host.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "unreachable".into(),
                    "-".into(),
                    "-".into(),
                ]);
                notes.push(format!("{}: unreachable: {why}", r.host));
                out.push(serde_json::json!({ "host": r.host, "reachable": false, "error": why }));
                continue;
            }
        };
        let drifted = reply.current != desired.hash;
        if drifted {
            notes.push(format!(
                "{}: runs set {} but the controller would push {}: `kapell fleet plan` shows the difference",
                r.host,
                protocol::short(&reply.current),
                desired.short_hash()
            ));
        }
        let wanted: std::collections::BTreeSet<&str> = desired.units().collect();
        let mut units = Vec::new();
        for u in reply.units.iter().filter(|u| !u.service.is_empty()) {
            let file = u.unit.split_once('@').map_or(u.unit.clone(), |(base, _)| format!("{base}@.service"));
            let goal =
                if wanted.contains(u.unit.as_str()) || wanted.contains(file.as_str()) { "run" } else { "remove" };
            let state = if u.sub.is_empty() { u.active.clone() } else { format!("{} ({})", u.active, u.sub) };
            let since = if u.since_usec == 0 { "-".to_string() } else { format_age(now, u.since_usec) };
            let health = SupervisorStatus::parse(&u.status).and_then(|s| s.health()).map_or("-", |h| h.as_str());
            rows.push(vec![
                r.host.clone(),
                u.stack.clone(),
                u.service.clone(),
                goal.into(),
                state.clone(),
                since,
                health.into(),
            ]);
            units.push(serde_json::json!({
                "unit": u.unit, "stack": u.stack, "service": u.service, "goal": goal,
                "active": u.active, "sub": u.sub, "since_usec": u.since_usec, "restarts": u.restarts,
                "health": (health != "-").then_some(health),
            }));
        }
        if reply.units.is_empty() {
            rows.push(vec![
                r.host.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "(nothing from the fleet)".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        out.push(serde_json::json!({
            "host": r.host, "reachable": true, "current": reply.current, "desired": desired.hash,
            "drifted": drifted, "units": units,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        table::print(&rows);
        for note in &notes {
            println!("{note}");
        }
    }
    Ok(if failed { exit::FAILED } else { exit::OK })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
