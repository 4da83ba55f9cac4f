//! `kapell fleet plan|apply|status`: the controller's commands (SPEC §8).

use super::{exit, table};
use crate::fleet::controller::Controller;
use crate::fleet::controller::converge::{self, HostOutcome, Outcome};
use crate::fleet::controller::state::{ControllerLock, State};
use crate::fleet::protocol::{self, HostSet, SetFile};
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
/// slows down or rolls back the others. A change to a unit that several hosts run rolls out in
/// batches of [rollout] max_parallel hosts, each healthy for min_healthy_time before the next;
/// a failed batch stops the rollout and (auto_revert) goes back, and later hosts are not
/// touched. Every push is confirmed over a new connection once it is up; a host that hears
/// nothing reverts on its own after confirm_timeout. Ends with a table per host: result, units
/// added, changed and removed, time, and why a host failed. A host that already runs its set is
/// not changed (no unit restarts), but drift (units stopped, edited, deleted or masked by hand)
/// is repaired. Exit status: 0 every host converged, 1 a stack or fleet.toml is invalid, 2 a bad
/// --on, 3 a host failed or was not reached.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Only these hosts (names, or @key=value for every host with that label).
    #[arg(long = "on", value_name = "HOST|@LABEL")]
    pub on: Vec<String>,
    /// Push every host at once, without rolling batches.
    #[arg(long)]
    pub no_rollout: bool,
    /// Replace sets this controller did not push, and push sets that were rolled back.
    #[arg(long)]
    pub force: bool,
}

/// Show every host's services: HOST, STACK, SERVICE, GOAL, STATE, SINCE.
///
/// Asked of every host in parallel; an unreachable host is shown as such, and a host that runs
/// another set than the controller would push is marked as drifted. Then, for each host whose
/// `kapell dns` runs, what every `<service>.<stack>.kapell` name answers there now. Exit status:
/// 0 every host answered, 3 otherwise.
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
        Command::Apply(a) => apply(&controller, &hosts, &a),
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
                let current = HostSet { files: reply.files.clone(), catalog: None, hash: reply.current.clone() };
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

fn apply(controller: &Controller, hosts: &[String], args: &ApplyArgs) -> Result<u8> {
    let _lock = ControllerLock::acquire(|| eprintln!("waiting for another kapell fleet apply or kapell federate"))?;
    let mut state = State::load()?;
    let options = converge::Options { no_rollout: args.no_rollout, force: args.force };
    // On a terminal, a live line counts the hosts done while each finished host is printed above
    // it; otherwise (logs, CI) just the plain lines.
    let live = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(hosts.len() as u64);
        let style = indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} hosts done, {elapsed} {msg}");
        bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()));
        bar.set_message(format!("({} at a time)", controller.fleet.defaults.parallel));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let report = |o: &HostOutcome| match &live {
        Some(bar) => {
            bar.println(progress_line(o));
            bar.inc(1);
        }
        None => println!("{}", progress_line(o)),
    };
    let results = converge::converge(controller, &mut state, hosts, &options, &report);
    if let Some(bar) = live {
        bar.finish_and_clear();
    }
    state.save()?;
    println!();
    let mut rows = vec![["HOST", "RESULT", "ADDED", "CHANGED", "REMOVED", "TIME"].map(String::from).to_vec()];
    let mut details = Vec::new();
    let mut failed = 0;
    for o in &results {
        let n = |paths: Option<&Vec<String>>| paths.map_or("-".to_string(), |p| protocol::units_only(p).to_string());
        let reply = o.reply.as_ref();
        rows.push(vec![
            o.host.clone(),
            result_word(o).to_string(),
            n(reply.map(|r| &r.added)),
            n(reply.map(|r| &r.updated)),
            n(reply.map(|r| &r.removed)),
            format!("{:.2}s", o.took.as_secs_f64()),
        ]);
        match &o.outcome {
            Outcome::Failed(why) | Outcome::RolledBack(why) => {
                failed += 1;
                details.push(format!("{}: {why}", o.host));
            }
            Outcome::HeldBack(why) => details.push(format!("{}: held back: {why}", o.host)),
            _ => {}
        }
        for unit in reply.map(|r| r.conflicts.as_slice()).unwrap_or_default() {
            details
                .push(format!("{}: {unit} not installed: a local stack of the host has a unit of that name", o.host));
        }
    }
    table::print(&rows);
    for line in &details {
        println!("{line}");
    }
    if let Some(rollout) = state
        .rollout
        .as_ref()
        .filter(|r| r.started_usec != 0 && !r.done.is_empty() || r.outcome.as_deref().is_some_and(|o| o != "completed"))
    {
        println!("rollout: {}", rollout.outcome.as_deref().unwrap_or("in progress"));
    }
    note_local_stacks(controller);
    let not_reached = results.iter().filter(|o| o.outcome == Outcome::NotReached).count();
    if failed + not_reached > 0 {
        eprintln!("{} of {} host{} did not converge", failed + not_reached, results.len(), plural(results.len()));
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

fn result_word(o: &HostOutcome) -> &'static str {
    match o.outcome {
        Outcome::UpToDate => "up to date",
        Outcome::Converged => "converged",
        Outcome::Failed(_) => "FAILED",
        Outcome::HeldBack(_) => "held back",
        Outcome::RolledBack(_) => "ROLLED BACK",
        Outcome::NotReached => "not reached",
    }
}

fn progress_line(o: &HostOutcome) -> String {
    let took = format!("{:.2}s", o.took.as_secs_f64());
    let what = match (&o.outcome, &o.reply) {
        (Outcome::Converged, Some(reply)) => {
            let n = protocol::units_only;
            format!(" (+{} ~{} -{} units)", n(&reply.added), n(&reply.updated), n(&reply.removed))
        }
        _ => String::new(),
    };
    format!("{}: {}{what} in {took}", o.host, result_word(o))
}

fn status(controller: &Controller, hosts: &[String], json: bool) -> Result<u8> {
    let results = controller.status(hosts, &|_| {});
    let now = crate::clock::now_usec();
    let mut rows = vec![["HOST", "STACK", "SERVICE", "GOAL", "STATE", "SINCE", "HEALTH"].map(String::from).to_vec()];
    let mut notes = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    // What each host's `kapell dns` answers now.
    let mut names = vec![["HOST", "NAME", "ANSWERS"].map(String::from).to_vec()];
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
        for (name, answers) in &reply.names {
            let text: Vec<String> = answers.iter().map(|a| format!("{} ({})", a.ip, a.host)).collect();
            names.push(vec![r.host.clone(), name.clone(), if text.is_empty() { "-".into() } else { text.join(", ") }]);
        }
        out.push(serde_json::json!({
            "host": r.host, "reachable": true, "current": reply.current, "desired": desired.hash,
            "drifted": drifted, "units": units, "names": reply.names,
        }));
    }
    // What the controller remembers (kapell federate, earlier applies): backoff, held sets, rollout.
    let state = State::load().unwrap_or_default();
    for (host, h) in state.hosts.iter().filter(|(h, _)| hosts.contains(h)) {
        if let Some(u) = &h.unreachable {
            let next = u.next_try_usec.saturating_sub(now) / 1_000_000;
            notes.push(format!(
                "{host}: unreachable for {} ({} failed tries), next try in {next}s: {}",
                format_age(now, u.since_usec),
                u.failures,
                u.error
            ));
        }
        if let Some(held) = &h.held {
            notes.push(format!("{host}: set {} held back: {}", protocol::short(&held.hash), held.reason));
        }
    }
    if let Some(r) = &state.rollout {
        let progress = match &r.outcome {
            Some(outcome) => outcome.clone(),
            None => format!(
                "in progress: {} done, {} in flight ({}), {} waiting",
                r.done.len(),
                r.in_flight.len(),
                r.in_flight.join(", "),
                r.waiting.len()
            ),
        };
        notes.push(format!("rollout started {} ago: {progress}", format_age(now, r.started_usec)));
    }
    if json {
        let json = serde_json::json!({ "hosts": out, "controller": state });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        table::print(&rows);
        if names.len() > 1 {
            println!();
            table::print(&names);
        }
        for note in &notes {
            println!("{note}");
        }
    }
    Ok(if failed { exit::FAILED } else { exit::OK })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
