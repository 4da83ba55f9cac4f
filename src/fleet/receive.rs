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
use super::received::Store;
use crate::apply::{self, plan};
use crate::config;
use crate::lock::HostLock;
use crate::names::GENERATOR_DIR;
use crate::render::{self, RenderOptions};
use crate::systemd::Systemd;
use crate::unitset::{self, UnitSet, markers};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashMap};
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
    match request.body {
        Body::Status => {
            reply.last_install = store.outcome().map(Box::new);
        }
        Body::Install { set } => {
            let result = install(config_dir, &store, &set, reply);
            if let Err(e) = &result {
                reply.error = Some(format!("{e:#}"));
            }
            // Saved whatever happened, for a controller that lost the connection.
            let _ = store.save_outcome(reply);
            result?;
        }
    }
    let current = store.current()?;
    reply.units = block_on(unit_states(&current))??;
    reply.current = current.hash.clone();
    reply.files = current.files;
    Ok(())
}

/// Checks `set`, makes it current, and makes systemd run it.
fn install(config_dir: &Path, store: &Store, set: &HostSet, reply: &mut Reply) -> Result<()> {
    set.verify().map_err(anyhow::Error::msg).context("the set was refused; nothing was changed")?;
    check_files(set).context("the set was refused; nothing was changed")?;
    let local = local_units(config_dir)?;
    reply.conflicts = set.units().filter(|u| local.contains(*u)).map(str::to_string).collect();
    let desired = UnitSet::from_rendered(
        &set.to_rendered().into_iter().filter(|f| !local.contains(f.path())).collect::<Vec<_>>(),
    );
    let previous = store.current_generation();
    let old = store.current()?;
    let changed_files = old.hash != set.hash;
    let diff = unitset::diff(&old.to_rendered(), &set.to_rendered());
    (reply.added, reply.updated, reply.removed) = (diff.added, diff.changed, diff.removed);
    block_on(async {
        let systemd = Systemd::system().await?;
        let running = UnitSet::read_dir(Path::new(GENERATOR_DIR), &local)?;
        let names = plan::units_to_query(&running, &desired, None);
        let states: HashMap<_, _> = systemd.units(&names).await?.into_iter().map(|u| (u.name.clone(), u)).collect();
        let plan = plan::plan(&running, &desired, &states, None)
            .map_err(|c| anyhow::anyhow!("unexpected conflicts: {}", c.join("; ")))?;
        if changed_files {
            store.install(set)?;
            reply.changed = true;
        }
        if plan.is_empty() {
            return Ok(());
        }
        reply.changed = true;
        let verify = || verify_generated(&desired, &local);
        let mut actions = Vec::new();
        reply.failures = apply::execute::execute(&systemd, &plan, verify, &mut |line| actions.push(line)).await?;
        reply.actions = actions;
        Ok::<_, anyhow::Error>(())
    })??;
    store.prune(previous.as_deref())?;
    Ok(())
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
                if let Some(foreign) = search_path.foreign_unit(path) {
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
    Ok(render::render_host(&checked.stacks, &RenderOptions::default()).iter().map(|f| f.path().to_string()).collect())
}

/// The state of every running unit of `set`.
async fn unit_states(set: &HostSet) -> Result<Vec<UnitState>> {
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
        return Ok(rows);
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
    Ok(rows)
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
