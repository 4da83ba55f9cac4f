//! What a peer tells the controller after every request: the set it runs now, the state of its
//! units (the rows of `kapell status`, [`crate::status`]), confirmation state, and the last
//! journal lines of failing units.

use super::generations::{CONFIRMED, Store};
use super::journal;
use crate::blocking::with_systemd;
use crate::fleet::protocol::{HostSet, Reply, UnitState, VERSION};
use crate::status::Depth;
use crate::systemd::{Systemd, UnitInfo};
use crate::unitset::UnitSet;
use anyhow::Result;
use std::collections::BTreeMap;

/// Journal lines sent per failing unit.
const JOURNAL_LINES: usize = 5;

/// An empty reply from this host.
pub fn new_reply() -> Reply {
    Reply { version: VERSION, host: host_name(), ..Reply::default() }
}

/// How much of what the host runs a reply describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The set's files too: `fleet plan` shows diffs against them, and a rollout decides with
    /// them what a push would touch (the reply to `Status`).
    Files,
    /// The hashes and every unit's state, not the files: the controller knows the set it pushed
    /// (an install's reply, a no-op's included: a few hundred bytes instead of the whole set).
    States,
    /// The hashes only: a confirmation changes no unit, and the controller reads only whether
    /// it was accepted (no D-Bus reads on the way, and nothing but hashes on a connection whose
    /// key exchange may be the fastest rather than ssh's first choice: see the controller's
    /// `ssh.rs`).
    Hashes,
}

/// Fills in what the host runs now, as far as `detail` says: the set's hash, confirmation
/// state, its units' states, its files.
pub fn describe(store: &Store, reply: &mut Reply, detail: Detail) -> Result<()> {
    let current = store.current()?;
    if detail != Detail::Hashes {
        let (units, journal) = with_systemd(async |systemd| unit_states(systemd, &current).await)?;
        reply.units = units;
        reply.journal = journal;
        reply.names = crate::dns_state::read().map(|d| d.names).unwrap_or_default();
        reply.catalog_hash =
            current.catalog.as_deref().map(|c| crate::fleet::protocol::sha256(c.as_bytes())).unwrap_or_default();
        reply.health_hash = health_hash(store);
    }
    reply.current = current.hash.clone();
    if detail == Detail::Files {
        // The catalog is part of the set's hash: whoever rebuilds the set from a reply needs both.
        reply.files = current.files;
        reply.catalog = current.catalog;
        reply.set_host = current.host;
    }
    reply.confirmed = store.set_of(store.generation(CONFIRMED).as_deref())?.hash;
    reply.pending = store.pending().map(|p| (p.hash, p.deadline_usec));
    Ok(())
}

/// The SHA-256 of the health word this host holds (its file's bytes); empty without one.
pub fn health_hash(store: &Store) -> String {
    std::fs::read(store.health_path()).map(|t| crate::fleet::protocol::sha256(&t)).unwrap_or_default()
}

/// The state of every stack target and running unit of `set`, each target followed by its
/// stack's units, and the last journal lines of the failing ones.
async fn unit_states(systemd: &Systemd, set: &HostSet) -> Result<(Vec<UnitState>, BTreeMap<String, Vec<String>>)> {
    let units = UnitSet::from_rendered(&set.to_rendered());
    if units.stacks.is_empty() {
        return Ok((Vec::new(), BTreeMap::new()));
    }
    // `collect` lists the running units stack by stack, in the order of `units.stacks`.
    // Brief: a reply goes out for every request, and every pass of the federation daemon.
    let mut services = crate::status::collect(systemd, &units, None, Depth::Brief).await?.into_iter().peekable();
    let targets: Vec<String> = units.stacks.values().map(|s| s.target()).collect();
    let mut rows = Vec::new();
    for (stack, target) in units.stacks.values().zip(systemd.brief_units(&targets).await?) {
        rows.push(row(&stack.name, "", target, None));
        while let Some(service) = services.next_if(|r| r.stack == stack.name) {
            rows.push(row(&service.stack, &service.service, service.info, service.probe));
        }
    }
    let mut journal = BTreeMap::new();
    for row in rows.iter().filter(|r| r.active == "failed" || r.sub == "auto-restart") {
        journal.insert(row.unit.clone(), journal::last_lines(&row.unit, JOURNAL_LINES));
    }
    Ok((rows, journal))
}

/// `probe`: the health its prober published for this run of the unit (see `crate::health::state`).
fn row(stack: &str, service: &str, info: UnitInfo, probe: Option<crate::health::state::State>) -> UnitState {
    UnitState {
        health: probe.as_ref().map(|p| p.health.clone()),
        last_probe: probe.and_then(|p| p.last_probe),
        unit: info.name,
        stack: stack.to_string(),
        service: service.to_string(),
        active: info.active_state,
        sub: info.sub_state,
        since_usec: info.state_change_usec,
        restarts: info.restarts,
        status: info.status_text,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
