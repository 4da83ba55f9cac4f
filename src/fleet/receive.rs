//! `kapell receive`: the peer side of a push (SPEC §8). One request on stdin, one JSON reply on
//! stdout; it is the only command a controller ever runs on a peer.
//!
//! An install is `kapell apply` for a set that came from elsewhere: the same plan (compare what
//! the generator wrote at the last reload with what it will write), the same execution (stop
//! what goes away, reload, restart what changed, start what is new), under the same host lock.
//! Before anything changes, the set is checked: its hashes, its file names, that every unit is
//! kapell's, and that no unit would shadow one kapell does not own. Then it becomes the current
//! generation (see [`super::received`]) and systemd is told.
//!
//! The work does not depend on the connection: SIGHUP is ignored and a reply that cannot be
//! written is dropped, and the outcome is saved on disk, so a push whose connection dropped
//! still finishes, and the controller's next request reads what happened.

use super::protocol::{Body, HostSet, Reply, Request, SetFile, UnitState, VERSION};
use super::received::{CONFIRMED, CURRENT, Pending, Store, boot_id};
use crate::apply::{self, plan};
use crate::config;
use crate::lock::HostLock;
use crate::names::GENERATOR_DIR;
use crate::render::{self, RenderOptions};
use crate::systemd::Systemd;
use crate::unitset::{self, UnitSet, markers};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::Path;

/// The remote command a controller runs; a key pinned with `command="kapell receive"` runs
/// nothing else.
pub const COMMAND: &str = "kapell receive";

/// Requests larger than this are refused (a set of 10,000 units is a few MiB).
const MAX_REQUEST: u64 = 64 * 1024 * 1024;

/// Makes the controller's connection irrelevant to the outcome: SIGHUP (a closing session) is
/// ignored; SIGPIPE already is (Rust's runtime), so a lost stdout is merely an error to drop.
pub fn ignore_hangup() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // nix marks `signal` unsafe because installing a handler can be unsound; SIG_IGN runs none.
    #[expect(unsafe_code, reason = "SIG_IGN installs no handler")]
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
}

/// Reads one request of at most [`MAX_REQUEST`] bytes.
pub fn read_request(input: impl std::io::Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(MAX_REQUEST + 1).read_to_end(&mut bytes).context("cannot read the request")?;
    Ok(bytes)
}

/// Parses and carries out one request; every failure becomes a reply with `error` set.
pub fn handle(config_dir: &Path, input: &[u8]) -> Reply {
    let mut reply = Reply { version: VERSION, host: host_name(), ..Reply::default() };
    if let Err(e) = carry_out(config_dir, input, &mut reply) {
        reply.error = Some(format!("{e:#}"));
    }
    reply
}

fn carry_out(config_dir: &Path, input: &[u8], reply: &mut Reply) -> Result<()> {
    if let Ok(original) = std::env::var("SSH_ORIGINAL_COMMAND")
        && original.trim() != COMMAND
    {
        anyhow::bail!("this key may only run `{COMMAND}`, not {original:?}");
    }
    anyhow::ensure!(input.len() as u64 <= MAX_REQUEST, "the request is larger than {MAX_REQUEST} bytes");
    let value: serde_json::Value = serde_json::from_slice(input).context("the request is not valid JSON")?;
    let version = value.get("version").and_then(serde_json::Value::as_u64).context("the request has no version")?;
    if version != u64::from(VERSION) {
        anyhow::bail!(
            "this host's kapell speaks fleet protocol {VERSION}, the controller sent version {version}: \
             install the same kapell version on the controller and this host"
        );
    }
    let request: Request = serde_json::from_value(value).context("the request is malformed")?;
    let _lock = HostLock::acquire(COMMAND, |holder| eprintln!("kapell receive: waiting for {holder}"))?;
    let store = Store::open();
    settle_reboot(config_dir, &store, reply)?;
    match request.body {
        Body::Status => {
            reply.last_install = store.outcome().map(Box::new);
        }
        Body::Install { set, known, force, confirm_within } => {
            let result = install(config_dir, &store, &set, &known, force, confirm_within, reply);
            if let Err(e) = &result {
                reply.error = Some(format!("{e:#}"));
            }
            // Saved whatever happened, for a controller that lost the connection.
            let _ = store.save_outcome(reply);
            result?;
        }
        Body::Confirm { hash } => confirm(&store, &hash)?,
        Body::Rollback => {
            let generation = store.generation(CONFIRMED).context("this host has no confirmed set to go back to")?;
            revert(config_dir, &store, &generation, "rolled back at the controller's request", reply)?;
        }
    }
    describe(&store, reply)
}

/// Fills in what the host runs now: the set, its units' states, confirmation state.
fn describe(store: &Store, reply: &mut Reply) -> Result<()> {
    let current = store.current()?;
    let (units, journal) = block_on(unit_states(&current))??;
    reply.units = units;
    reply.journal = journal;
    reply.current = current.hash.clone();
    reply.files = current.files;
    reply.confirmed = store.set_of(store.generation(CONFIRMED).as_deref())?.hash;
    reply.pending = store.pending().map(|p| (p.hash, p.deadline_usec));
    Ok(())
}

/// Checks `set`, makes it current, and makes systemd run it. With `confirm_within`, the set is
/// pending until the controller confirms it, and a timer reverts it otherwise.
fn install(
    config_dir: &Path,
    store: &Store,
    set: &HostSet,
    known: &[String],
    force: bool,
    confirm_within: Option<u64>,
    reply: &mut Reply,
) -> Result<()> {
    set.verify().map_err(anyhow::Error::msg).context("the set was refused; nothing was changed")?;
    check_files(set).context("the set was refused; nothing was changed")?;
    let old = store.current()?;
    if let Some((_, why)) = store.rejected().into_iter().find(|(h, _)| *h == set.hash)
        && !force
        && old.hash != set.hash
    {
        reply.held = Some(format!(
            "this host rolled set {} back ({why}); it is not installed again until it changes",
            set.short_hash()
        ));
        return Ok(());
    }
    if !old.files.is_empty() && old.hash != set.hash && !known.contains(&old.hash) && !force {
        anyhow::bail!(
            "this host runs set {}, which this controller did not push (edited by hand in {}, or another \
             controller's); it was not overwritten (`kapell fleet apply --force` replaces it)",
            old.short_hash(),
            super::received::received_dir().display()
        );
    }
    // What ran before the first confirmed push counts as confirmed: it is what a revert restores.
    if store.generation(CONFIRMED).is_none()
        && let Some(generation) = store.current_generation()
    {
        store.set_link(CONFIRMED, &generation)?;
    }
    let diff = unitset::diff(&old.to_rendered(), &set.to_rendered());
    (reply.added, reply.updated, reply.removed) = (diff.added, diff.changed, diff.removed);
    let previous = store.current_generation();
    let generation = if old.hash != set.hash { Some(store.install(set)?) } else { None };
    reply.changed = generation.is_some();
    run_set(config_dir, set, reply)?;
    match (generation, confirm_within) {
        (Some(generation), Some(secs)) => {
            let old_pending = store.pending();
            let deadline_usec = now_usec() + secs * 1_000_000;
            let pending =
                Pending { generation: generation.clone(), hash: set.hash.clone(), boot_id: boot_id(), deadline_usec };
            store.set_pending(Some(&pending))?;
            if let Some(old) = old_pending {
                cancel_revert_timer(&old.generation);
            }
            schedule_revert(&generation, secs)?;
        }
        (Some(generation), None) => {
            store.set_link(CONFIRMED, &generation)?;
            if let Some(old) = store.pending() {
                cancel_revert_timer(&old.generation);
                store.set_pending(None)?;
            }
        }
        (None, _) => {}
    }
    store.prune(previous.as_deref())?;
    Ok(())
}

/// The controller saw the set `hash` active and healthy: it stays, even across a reboot.
fn confirm(store: &Store, hash: &str) -> Result<()> {
    let current = store.current()?;
    anyhow::ensure!(
        current.hash == hash,
        "cannot confirm set {}: this host runs {} (it went back on its own, or another push replaced it)",
        super::protocol::short(hash),
        current.short_hash()
    );
    if let Some(generation) = store.current_generation() {
        store.set_link(CONFIRMED, &generation)?;
    }
    if let Some(pending) = store.pending() {
        cancel_revert_timer(&pending.generation);
        store.set_pending(None)?;
    }
    Ok(())
}

/// Makes `generation` current again and makes systemd run it; `why` is recorded as the reason.
fn revert(config_dir: &Path, store: &Store, generation: &str, why: &str, reply: &mut Reply) -> Result<()> {
    let set = store.set_of(Some(generation))?;
    let old = store.current()?;
    if old.hash != set.hash {
        store.reject(&old.hash, why)?;
        let diff = unitset::diff(&old.to_rendered(), &set.to_rendered());
        (reply.added, reply.updated, reply.removed) = (diff.added, diff.changed, diff.removed);
        store.set_link(CURRENT, generation)?;
        reply.changed = true;
    }
    if let Some(pending) = store.pending() {
        cancel_revert_timer(&pending.generation);
        store.set_pending(None)?;
    }
    reply.rolled_back = Some(format!("{why}: back to set {}", set.short_hash()));
    let result = run_set(config_dir, &set, reply);
    if let Err(e) = &result {
        reply.error = Some(format!("{e:#}"));
    }
    let _ = store.save_outcome(reply);
    result
}

/// The timer's side of a confirm window: reverts `generation` if it is still current and still
/// unconfirmed. Run by `kapell receive --revert-unconfirmed GENERATION`.
pub fn revert_unconfirmed(config_dir: &Path, generation: &str) -> Reply {
    let mut reply = Reply { version: VERSION, host: host_name(), ..Reply::default() };
    let result = (|| {
        let _lock = HostLock::acquire(COMMAND, |holder| eprintln!("kapell receive: waiting for {holder}"))?;
        let store = Store::open();
        let still_pending = store.pending().is_some_and(|p| p.generation == generation)
            && store.current_generation().as_deref() == Some(generation);
        let Some(confirmed) = store.generation(CONFIRMED).filter(|_| still_pending) else {
            return Ok(()); // confirmed, or replaced by a later push: nothing to do
        };
        revert(config_dir, &store, &confirmed, "not confirmed by the controller in time", &mut reply)
    })();
    if let Err(e) = result {
        reply.error = Some(format!("{e:#}"));
    }
    reply
}

/// A reboot inside a confirm window booted the confirmed set (see [`Store::emitted_dir`]); make
/// `current` say so before anything else happens.
fn settle_reboot(config_dir: &Path, store: &Store, reply: &mut Reply) -> Result<()> {
    let Some(pending) = store.pending() else { return Ok(()) };
    if pending.boot_id == boot_id() {
        return Ok(());
    }
    match store.generation(CONFIRMED) {
        Some(confirmed) => {
            let mut outcome = Reply { version: VERSION, host: host_name(), ..Reply::default() };
            revert(
                config_dir,
                store,
                &confirmed,
                "rebooted before the controller confirmed the new set",
                &mut outcome,
            )?;
            reply.rolled_back = outcome.rolled_back;
            Ok(())
        }
        None => store.set_pending(None),
    }
}

/// Starts a transient timer that runs `kapell receive --revert-unconfirmed GENERATION` in
/// `secs` seconds: systemd keeps the time, so the revert happens whatever becomes of this process
/// or the controller's connection.
fn schedule_revert(generation: &str, secs: u64) -> Result<()> {
    let kapell = std::env::current_exe().context("cannot find this kapell binary")?;
    let output = std::process::Command::new("systemd-run")
        .arg(format!("--unit={}", revert_unit(generation)))
        .arg(format!("--on-active={secs}s"))
        .arg("--timer-property=AccuracySec=100ms")
        .arg("--quiet")
        .arg("--")
        .arg(kapell)
        .args(["receive", "--revert-unconfirmed", generation])
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run systemd-run to schedule the revert")?;
    anyhow::ensure!(
        output.status.success(),
        "systemd-run could not schedule the revert: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Stops the revert timer of `generation` (it may have fired or never existed).
fn cancel_revert_timer(generation: &str) {
    let _ = std::process::Command::new("systemctl")
        .args(["stop", &format!("{}.timer", revert_unit(generation))])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn revert_unit(generation: &str) -> String {
    format!("kapell-revert-{generation}")
}

fn now_usec() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Makes systemd run `set` (minus what local stacks shadow): `kapell apply`'s plan and execution
/// against what the generator wrote at the last reload, plus drift repair: a masked unit of the
/// set is unmasked, and a unit of the set stopped outside kapell is started again.
fn run_set(config_dir: &Path, set: &HostSet, reply: &mut Reply) -> Result<()> {
    let local = local_units(config_dir)?;
    reply.conflicts = set.units().filter(|u| local.contains(*u)).map(str::to_string).collect();
    let desired = UnitSet::from_rendered(
        &set.to_rendered().into_iter().filter(|f| !local.contains(f.path())).collect::<Vec<_>>(),
    );
    let mut actions = Vec::new();
    let unmasked = unmask(&desired, &mut actions)?;
    block_on(async {
        let systemd = Systemd::system().await?;
        let running = UnitSet::read_dir(Path::new(GENERATOR_DIR), &local)?;
        let names = plan::units_to_query(&running, None);
        let states: HashMap<_, _> = systemd.units(&names).await?.into_iter().map(|u| (u.name.clone(), u)).collect();
        let mut plan = plan::plan(&running, &desired, &states, None)
            .map_err(|c| anyhow::anyhow!("unexpected conflicts: {}", c.join("; ")))?;
        plan.reload |= unmasked;
        restore_stopped(&mut plan, &desired, &states);
        if plan.is_empty() {
            return Ok(());
        }
        reply.changed = true;
        let verify = || verify_generated(&desired, &local);
        reply.failures = apply::execute::execute(&systemd, &plan, verify, &mut |line| actions.push(line)).await?;
        Ok::<_, anyhow::Error>(())
    })??;
    if !actions.is_empty() {
        reply.changed = true;
    }
    reply.actions.extend(actions);
    Ok(())
}

/// Removes `/etc/systemd/system/<unit>` and `/run/systemd/system/<unit>` masks (links to
/// `/dev/null`) of the set's units: a mask of a unit kapell owns is drift, not a foreign unit.
fn unmask(desired: &UnitSet, actions: &mut Vec<String>) -> Result<bool> {
    let mut any = false;
    for stack in desired.stacks.values() {
        for unit in stack.files.keys() {
            for dir in ["/etc/systemd/system", "/run/systemd/system"] {
                let path = Path::new(dir).join(unit);
                let masked = std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"));
                if masked {
                    std::fs::remove_file(&path).with_context(|| format!("cannot unmask {}", path.display()))?;
                    actions.push(format!("{:<9} {unit:<32} (masked outside kapell: {})", "unmasked", path.display()));
                    any = true;
                }
            }
        }
    }
    Ok(any)
}

/// A unit of the set that is stopped while its stack runs was stopped outside kapell: the fleet
/// is declarative, so it is started again (`kapell apply` on a host leaves such a unit alone).
fn restore_stopped(plan: &mut plan::Plan, desired: &UnitSet, states: &HashMap<String, crate::systemd::UnitInfo>) {
    let planned: std::collections::HashSet<String> = plan.steps.iter().map(|s| s.unit.clone()).collect();
    let mut extra = Vec::new();
    for stack in desired.stacks.values() {
        for (_, unit) in stack.running() {
            let down = states.get(unit).is_some_and(|s| s.is_down() && s.active_state != "failed");
            if down && !planned.contains(unit) {
                extra.push(plan::Step {
                    verb: plan::Verb::Start,
                    unit: unit.to_string(),
                    stack: stack.name.clone(),
                    why: plan::Why::StoppedOutside,
                });
            }
        }
    }
    let at = plan.steps.iter().position(|s| s.verb == plan::Verb::Update).unwrap_or(plan.steps.len());
    plan.steps.splice(at..at, extra);
}

/// After the reload: the generator directory holds exactly the set's units (but local ones).
fn verify_generated(desired: &UnitSet, local: &BTreeSet<String>) -> Result<()> {
    let now = UnitSet::read_dir(Path::new(GENERATOR_DIR), local)?;
    let want: BTreeSet<(&String, &String)> = desired.stacks.values().flat_map(|s| s.files.iter()).collect();
    let have: BTreeSet<(&String, &String)> = now.stacks.values().flat_map(|s| s.files.iter()).collect();
    if want == have {
        return Ok(());
    }
    let differ: Vec<&str> = want.symmetric_difference(&have).map(|(n, _)| n.as_str()).collect();
    anyhow::bail!(
        "after the daemon-reload, {GENERATOR_DIR} does not hold the received units ({}): is kapell-generator \
         installed and the same version as this kapell?",
        differ.join(", ")
    )
}

/// Names must be unit names or `<unit>.wants/<unit>` links into the set; units must be kapell's
/// and must not shadow a unit kapell does not own.
fn check_files(set: &HostSet) -> Result<()> {
    let units: BTreeSet<&str> = set.units().collect();
    let search_path = UnitSearchPath::from_env();
    for (path, file) in &set.files {
        match file {
            SetFile::Unit { text, .. } => {
                config::syntax::check_unit_name(path).map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    markers::is_kapell_text(text),
                    "{path} is not a kapell unit (it has no {}= line)",
                    markers::STACK_KEY
                );
                // A mask of the set's own unit is drift, repaired by `unmask`, not a foreign unit.
                if let Some(foreign) = search_path.foreign_unit(path)
                    && std::fs::read_link(&foreign).map_or(true, |t| t != Path::new("/dev/null"))
                {
                    anyhow::bail!("{path} would shadow {}, which kapell does not own", foreign.display());
                }
            }
            SetFile::Link { target } => {
                let (dir, name) = path.split_once('/').with_context(|| format!("invalid link path {path:?}"))?;
                let ok = dir.ends_with(".wants")
                    && config::syntax::check_unit_name(dir.trim_end_matches(".wants")).is_ok()
                    && units.contains(name)
                    && target.strip_prefix("../") == Some(name);
                anyhow::ensure!(ok, "invalid link {path:?} -> {target:?} (only *.wants/ links to the set's units)");
            }
        }
    }
    Ok(())
}

/// Unit names this host's own stacks produce (those win over the fleet's).
fn local_units(config_dir: &Path) -> Result<BTreeSet<String>> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    let here = crate::host::runs_here(config_dir);
    let files = render::render_host_only(&checked.stacks, here, &RenderOptions::default());
    Ok(files.iter().map(|f| f.path().to_string()).collect())
}

/// The state of every running unit of `set`, and the last journal lines of the failing ones.
async fn unit_states(set: &HostSet) -> Result<(Vec<UnitState>, BTreeMap<String, Vec<String>>)> {
    let units = UnitSet::from_rendered(&set.to_rendered());
    let mut rows: Vec<UnitState> = Vec::new();
    for stack in units.stacks.values() {
        rows.push(UnitState { unit: stack.target(), stack: stack.name.clone(), ..Default::default() });
        for (service, unit) in stack.running() {
            rows.push(UnitState {
                unit: unit.to_string(),
                stack: stack.name.clone(),
                service: service.name.clone(),
                ..Default::default()
            });
        }
    }
    if rows.is_empty() {
        return Ok((rows, BTreeMap::new()));
    }
    let systemd = Systemd::system().await?;
    let names: Vec<String> = rows.iter().map(|r| r.unit.clone()).collect();
    for (row, info) in rows.iter_mut().zip(systemd.units(&names).await?) {
        row.active = info.active_state;
        row.sub = info.sub_state;
        row.since_usec = info.state_change_usec;
        row.restarts = info.restarts;
        row.status = info.status_text;
    }
    let mut journal = BTreeMap::new();
    for row in rows.iter().filter(|r| r.active == "failed" || r.sub == "auto-restart") {
        journal.insert(row.unit.clone(), last_journal_lines(&row.unit, 5));
    }
    Ok((rows, journal))
}

/// The unit's last `n` journal lines (what `journalctl -u UNIT -n N` shows), best effort.
fn last_journal_lines(unit: &str, n: usize) -> Vec<String> {
    let output = std::process::Command::new("journalctl")
        .args(["--no-pager", "-o", "short", "-n", &n.to_string(), "-u", unit])
        .stdin(std::process::Stdio::null())
        .output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
