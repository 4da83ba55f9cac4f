//! `kapell fleet plan|apply|status|promote|rollout`: the controller's commands (see
//! docs/fleet-protocol.md).

use super::{exit, table};
use crate::fleet::controller::Controller;
use crate::fleet::controller::converge::{self, HostOutcome, Outcome};
use crate::fleet::controller::rollout;
use crate::fleet::controller::state::{ControllerLock, State};
use crate::fleet::protocol::{self, SetFile};
use crate::status::format_age;
use crate::unitset;
use anyhow::Result;
use std::io::IsTerminal as _;
use std::path::Path;

/// Push the stacks to the fleet of fleet.toml: plan, apply, status, promote, rollout retry.
///
/// The controller keeps the stacks and /etc/kapell/fleet.toml (see kapell-fleet.toml(5)); each
/// service's `placement` says which hosts run it. Every host gets its own unit set, pushed over
/// SSH to `kapell receive` on the host, which installs it atomically and makes systemd run it.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Plan(PlanArgs),
    Apply(ApplyArgs),
    Status(StatusArgs),
    Promote(PromoteArgs),
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

/// Show, per host, the units a push would add, change and remove, with a diff; change nothing.
///
/// Asks every host (in parallel) what it runs now. A change to a service placed on several
/// hosts says when the host would get it: as a canary, in which batch (after promotion, when
/// the canaries wait for `kapell fleet promote`), or held, and why. Exit status: 0 every host
/// answered, 1 a stack or fleet.toml is invalid, 3 a host could not be asked.
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
/// with [rollout] canary, the canaries go first and the others wait for their promotion. A
/// failed batch goes back (auto_revert) and fails that desired state for the whole fleet: no
/// other host gets it, in this apply or a later one, until the stacks change or `kapell fleet
/// rollout retry`. Every push is confirmed over a new connection once it is up; a host that
/// hears nothing reverts on its own after confirm_timeout. Ends with a table per host: result,
/// units added, changed and removed, time, and why a host failed or was held back. A host that
/// already runs its set is not changed (no unit restarts), but drift (units stopped, edited,
/// deleted or masked by hand) is repaired. Exit status: 0 every host converged, 1 a stack or
/// fleet.toml is invalid, 2 a bad --on, 3 a host failed or could not be reached, 5 a rollout
/// was rolled back or hosts were held back, 6 the canaries wait for `kapell fleet promote`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Only these hosts (names, or @key=value for every host with that label).
    #[arg(long = "on", value_name = "HOST|@LABEL")]
    pub on: Vec<String>,
    /// Push every host at once, without rolling batches (a desired state whose rollout failed
    /// stays held: --force pushes it).
    #[arg(long)]
    pub no_rollout: bool,
    /// Replace sets this controller did not push, and push sets that were rolled back (a failed
    /// desired state too).
    #[arg(long)]
    pub force: bool,
}

/// Promote the canaries of the rollout waiting for it, and roll the other hosts out.
///
/// The canaries ([rollout] canary) run the new desired state and have been healthy for
/// min_healthy_time; the other hosts get it now, in batches of max_parallel, as `kapell fleet
/// apply` does (same table, same exit status). Exit status 2 when no rollout waits for
/// promotion, or it does not change STACK.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// Promote only if the waiting rollout changes this stack.
    pub stack: Option<String>,
}

/// Rollouts of a desired state.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    Retry(RetryArgs),
}

/// Roll the failed desired state out again, from its canaries or its first batch.
///
/// A desired state whose rollout failed is held back on every host until the stack files
/// change; this lifts the hold (hosts that reverted it get it again too) and rolls it out as
/// `kapell fleet apply` does (same table, same exit status). Unlike `--force`, it overwrites no
/// set this controller did not push (edited by hand, another controller's). Exit status 2 when
/// no rollout of the current desired state failed.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {}

/// Show every host's services: HOST, STACK, SERVICE, GOAL, STATE, SINCE.
///
/// Asked of every host in parallel; an unreachable host is shown as such, and a host that runs
/// another set than the controller would push is marked as drifted. Then the rollout: its
/// desired state, canaries, whether it waits for promotion, and where and why it failed (the
/// unit and its last journal lines); and, for each host whose `kapell dns` runs, what every
/// `<service>.<stack>.kapell` name answers there now. Exit status: 0 every host answered, 3
/// otherwise.
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
    // Only `KAPELL_LOG=debug` makes these commands log anything: each request, its size and time.
    crate::logging::init(&[("KAPELL_COMPONENT", "fleet")]);
    // What changes the fleet holds the controller's lock from before it reads the configuration:
    // it pushes what the files say once its turn comes, not what they said before a daemon's
    // pass or another apply (of files edited since) ran while it waited.
    let _lock = matches!(command, Command::Apply(_) | Command::Promote(_) | Command::Rollout(_))
        .then(|| ControllerLock::acquire(|| eprintln!("waiting for another kapell fleet apply or kapell federate")))
        .transpose()?;
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
    let all = Vec::new();
    let on = match &command {
        Command::Plan(a) => &a.on,
        Command::Apply(a) => &a.on,
        Command::Status(a) => &a.on,
        Command::Promote(_) | Command::Rollout(_) => &all,
    };
    let hosts = match controller.select(on) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("error: {}", crate::printable::printable(&why.to_string()));
            return Ok(exit::USAGE);
        }
    };
    match command {
        Command::Plan(a) => plan(&controller, &hosts, a.json),
        Command::Apply(a) => apply(&controller, &hosts, &a),
        Command::Status(a) => status(&controller, &hosts, a.json),
        Command::Promote(a) => promote(&controller, &hosts, a.stack.as_deref()),
        Command::Rollout(RolloutCommand::Retry(_)) => retry(&controller, &hosts),
    }
}

/// Marks the waiting rollout promoted, then applies.
fn promote(controller: &Controller, hosts: &[String], stack: Option<&str>) -> Result<u8> {
    {
        let mut state = State::load()?;
        let current = current_state(controller);
        let Some(r) = state
            .rollout
            .as_mut()
            .filter(|r| r.desired_state == current && rollout::phase(r) == "waiting for promotion")
        else {
            eprintln!("error: no rollout waits for promotion (`kapell fleet status` shows the rollout)");
            return Ok(exit::USAGE);
        };
        if let Some(stack) = stack.filter(|s| !r.stacks.iter().any(|t| t == s)) {
            eprintln!(
                "error: the rollout waiting for promotion changes {}, not {}",
                if r.stacks.is_empty() { "no stack".to_string() } else { r.stacks.join(", ") },
                crate::printable::printable(stack)
            );
            return Ok(exit::USAGE);
        }
        r.promoted = true;
        println!("promoted canaries {} of desired state {}", r.canaries.join(", "), protocol::short(&current));
        state.save()?;
    }
    apply(controller, hosts, &ApplyArgs { on: Vec::new(), no_rollout: false, force: false })
}

/// Lifts the hold of the failed desired state, then applies.
fn retry(controller: &Controller, hosts: &[String]) -> Result<u8> {
    {
        let mut state = State::load()?;
        let current = current_state(controller);
        let Some(r) = state.rollout.as_mut().filter(|r| r.desired_state == current && r.failed.is_some()) else {
            eprintln!(
                "error: no rollout of the current desired state failed (`kapell fleet status` shows the rollout)"
            );
            return Ok(exit::USAGE);
        };
        println!(
            "retrying desired state {} (it failed on {})",
            protocol::short(&current),
            r.failed.as_ref().map_or("", |f| f.host.as_str())
        );
        r.failed = None;
        r.outcome = None;
        r.retry = true;
        r.promoted = false;
        r.canaries_healthy_usec = None;
        r.done.clear();
        // Hosts held back with this desired state's set (one whose rollback failed) get it again too.
        let desired = r.desired.clone();
        for (host, hash) in &desired {
            if let Some(h) =
                state.hosts.get_mut(host).filter(|h| h.held.as_ref().is_some_and(|held| held.hash == *hash))
            {
                h.held = None;
            }
        }
        state.save()?;
    }
    apply(controller, hosts, &ApplyArgs { on: Vec::new(), no_rollout: false, force: false })
}

/// The desired state of the shared services, as the stack files say now.
fn current_state(controller: &Controller) -> String {
    rollout::desired_state(&controller.sets, &rollout::shared_units(&controller.sets))
}

fn address(controller: &Controller, host: &str) -> String {
    controller.fleet.hosts[host].address.clone()
}

fn plan(controller: &Controller, hosts: &[String], json: bool) -> Result<u8> {
    let results = controller.status(hosts, &|_| {});
    let steps = rollout_steps(controller, &results);
    let mut failed = false;
    let mut out = Vec::new();
    for result in &results {
        let desired = &controller.sets[&result.host];
        let step = steps.get(&result.host).map(ToString::to_string);
        match &result.outcome {
            Ok(reply) => {
                let current = reply.current_set();
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
                    "desired_state": current_state(controller), "rollout": step,
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
                let when = step.map(|s| format!("{s}: ")).unwrap_or_default();
                println!("{head}: {when}{} to add, {} to change, {} to remove", n(&added), n(&changed), n(&removed));
                // The paths to remove come from the peer's reply: shown printable, as its text is.
                let shown = |path: &str| crate::printable::printable(path).into_owned();
                for path in &added {
                    println!("  add     {}", shown(path));
                }
                for path in &changed {
                    println!("  change  {}", shown(path));
                    print_diff(current.files.get(path), desired.files.get(path));
                }
                for path in &removed {
                    println!("  remove  {}", shown(path));
                }
            }
            Err(why) => {
                failed = true;
                out.push(serde_json::json!({ "host": result.host, "desired": desired.hash, "error": why }));
                if !json {
                    let line = format!("{} ({}): UNREACHABLE: {why}", result.host, address(controller, &result.host));
                    println!("{}", crate::printable::printable(&line));
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

/// When each host that answered would get a change to shared services (see
/// [`rollout::schedule`]), with what the controller remembers of the rollout.
fn rollout_steps(
    controller: &Controller,
    results: &[crate::fleet::controller::HostResult],
) -> std::collections::BTreeMap<String, rollout::Step> {
    let shared = rollout::shared_units(&controller.sets);
    let changes: std::collections::BTreeMap<String, Vec<String>> = results
        .iter()
        .filter_map(|r| {
            let reply = r.outcome.as_ref().ok()?;
            let current = reply.current_set();
            // A first push (nothing received yet) is not part of a rollout.
            let changes = rollout::shared_changes(&current, &controller.sets[&r.host], &shared);
            (!reply.files.is_empty() && !changes.is_empty()).then(|| (r.host.clone(), changes))
        })
        .collect();
    let rolling: Vec<String> = changes.keys().cloned().collect();
    let state = State::load().unwrap_or_default();
    let desired_state = rollout::desired_state(&controller.sets, &shared);
    rollout::schedule(&controller.fleet.rollout, &desired_state, &rolling, &changes, state.rollout.as_ref(), false)
        .steps
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
            println!("          {}", crate::printable::printable(line));
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
    let mut state = State::load()?;
    let options = converge::Options { no_rollout: args.no_rollout, force: args.force, retry_failed: args.force };
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
            Outcome::Failed(why) | Outcome::RolledBack(why) => details.push(format!("{}: {why}", o.host)),
            Outcome::HeldBack(why) => details.push(format!("{}: held back: {why}", o.host)),
            Outcome::Waiting(why) => details.push(format!("{}: {why}", o.host)),
            _ => {}
        }
        for unit in reply.map(|r| r.conflicts.as_slice()).unwrap_or_default() {
            details.push(format!(
                "{}: {unit} not installed: a local stack of the host claims its name or its stack's",
                o.host
            ));
        }
    }
    table::print(&rows);
    for line in &details {
        println!("{}", crate::printable::printable_lines(line));
    }
    let touched_rollout = results.iter().any(|o| {
        matches!(o.outcome, Outcome::RolledBack(_) | Outcome::Waiting(_))
            || state.rollout.as_ref().is_some_and(|r| r.in_flight.contains(&o.host) || r.done.contains(&o.host))
    });
    if let Some(r) = state.rollout.as_ref().filter(|_| touched_rollout) {
        // Its failure's reason quotes the peer (a unit, its journal): printable, as the details are.
        println!("rollout: {}", crate::printable::printable_lines(&rollout_line(r)));
    }
    note_local_stacks(controller);
    let count = |f: &dyn Fn(&Outcome) -> bool| results.iter().filter(|o| f(&o.outcome)).count();
    let held = count(&|o| matches!(o, Outcome::RolledBack(_) | Outcome::HeldBack(_)));
    let failed = count(&|o| matches!(o, Outcome::Failed(_)));
    let waiting = count(&|o| matches!(o, Outcome::Waiting(_)));
    let n = results.len();
    if held + failed + waiting > 0 {
        eprintln!("{} of {n} host{} did not converge", held + failed + waiting, plural(n));
    }
    Ok(if held > 0 {
        exit::HELD
    } else if failed > 0 {
        exit::FAILED
    } else if waiting > 0 {
        exit::WAITING
    } else {
        exit::OK
    })
}

/// The rollout in one line: its desired state, its state, canaries, and where it failed.
fn rollout_line(r: &crate::fleet::controller::state::Rollout) -> String {
    let state = protocol::short(&r.desired_state);
    let stacks = if r.stacks.is_empty() { String::new() } else { format!(" (stacks: {})", r.stacks.join(", ")) };
    let canaries = r.canaries.join(", ");
    match rollout::phase(r) {
        "failed" => {
            let f = r.failed.clone().unwrap_or_default();
            format!(
                "desired state {state} failed on {}{stacks}, held back everywhere until the stacks change or \
                 `kapell fleet rollout retry`: {}",
                f.host, f.reason
            )
        }
        "waiting for promotion" => format!(
            "desired state {state}{stacks}: canaries {canaries} healthy, waiting for `kapell fleet promote`; {} \
             host{} waiting",
            r.waiting.len(),
            plural(r.waiting.len())
        ),
        "completed" => format!("desired state {state}{stacks}: completed on {} hosts", r.done.len()),
        _ => format!(
            "desired state {state}{stacks}: in progress: {} done, {} in flight ({}), {} waiting{}",
            r.done.len(),
            r.in_flight.len(),
            r.in_flight.join(", "),
            r.waiting.len(),
            if canaries.is_empty() { String::new() } else { format!(", canaries {canaries}") }
        ),
    }
}

fn result_word(o: &HostOutcome) -> &'static str {
    match o.outcome {
        Outcome::UpToDate => "up to date",
        Outcome::Converged => "converged",
        Outcome::Failed(_) => "FAILED",
        Outcome::HeldBack(_) => "held back",
        Outcome::RolledBack(_) => "ROLLED BACK",
        Outcome::Waiting(_) => "waiting",
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
            let health = u.health().map_or("-", |h| h.as_str());
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
    let current = current_state(controller);
    if let Some(r) = &state.rollout {
        let old = if r.desired_state == current { "" } else { " (the stacks changed since)" };
        notes.push(format!("rollout started {} ago{old}: {}", format_age(now, r.started_usec), rollout_line(r)));
    }
    if json {
        let rollout = state.rollout.as_ref().map(|r| {
            serde_json::json!({
                "desired_state": r.desired_state, "current": r.desired_state == current,
                "state": rollout::phase(r), "stacks": r.stacks, "canaries": r.canaries, "promoted": r.promoted,
                "done": r.done, "in_flight": r.in_flight, "waiting": r.waiting, "failed": r.failed,
                "started_usec": r.started_usec,
            })
        });
        let json =
            serde_json::json!({ "hosts": out, "desired_state": current, "rollout": rollout, "controller": state });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        table::print(&rows);
        if names.len() > 1 {
            println!();
            table::print(&names);
        }
        for note in &notes {
            println!("{}", crate::printable::printable_lines(note));
        }
    }
    Ok(if failed { exit::FAILED } else { exit::OK })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
