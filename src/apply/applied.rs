//! What `kapell apply` last made systemd run: the local stacks' unit texts it planned with, kept
//! in `/run/kapell/applied.json` until the next boot.
//!
//! The generator directory alone cannot say it: systemd reruns the generator at every reload,
//! whoever asks for one (a package upgrade, `systemctl daemon-reload` by hand, `kapell receive`),
//! so after an edit of a stack file and someone else's reload it already holds the new units,
//! while the old processes run on and a unit of a deleted service runs without a file. An apply
//! killed between its reload and its restarts leaves the same. Planned against this record, the
//! next apply still restarts what changed and stops what went away.
//!
//! A stack the record does not know (none was applied since boot: the boot's generator run
//! started it) is taken from the generator directory, as before there was a record. The record
//! of another boot is none.
//!
//! The peer's activation of a received set reads the record too ([`local_namesakes`]): a local
//! stack whose file went, and whose namesake in the fleet's set takes its place, still runs the
//! local processes until a plan restarts them, whoever reloaded in between. Once the activation
//! has run the fleet's stack, the record forgets the local one ([`forget`]).

use crate::unitset::UnitSet;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

const FILE: &str = "applied.json";

#[derive(Serialize, Deserialize, Default)]
struct Record {
    boot_id: String,
    /// Stack → unit file → text.
    stacks: BTreeMap<String, BTreeMap<String, String>>,
}

fn path() -> PathBuf {
    crate::lock::runtime_dir().join(FILE)
}

fn read() -> Option<Record> {
    let record: Record = serde_json::from_slice(&std::fs::read(path()).ok()?).ok()?;
    (record.boot_id == crate::received_sets::boot_id()).then_some(record)
}

/// What the last apply of each stack made systemd run, over `on_disk` (the generator
/// directory's units) for the stacks no apply of this boot has recorded.
pub fn current(on_disk: UnitSet) -> UnitSet {
    let Some(record) = read() else { return on_disk };
    // Only a stack whose record differs from its files is read again (the usual record is the
    // generator directory's, and parsing a thousand units twice would cost the apply).
    let differs = |(name, files): &(String, BTreeMap<String, String>)| {
        on_disk.stacks.get(name).is_none_or(|stack| stack.files != *files)
    };
    let texts = record.stacks.into_iter().filter(differs).flat_map(|(_, files)| files);
    let applied = UnitSet::from_texts(texts);
    let mut current = on_disk;
    for (name, stack) in applied.stacks {
        current.stacks.insert(name, stack);
    }
    current
}

/// The stacks of `fleet` (the received set's share of this host) that an apply of this boot ran
/// as local stacks, with the unit texts it ran: their local files went, and until a plan
/// restarts them their processes are the local ones, whatever the generator directory says.
/// Less the units of `local` (what the local stacks render now): another local stack's unit of
/// the same name is that stack's.
pub fn local_namesakes(fleet: &UnitSet, local: &std::collections::BTreeSet<String>) -> UnitSet {
    let Some(record) = read() else { return UnitSet::default() };
    let texts = record
        .stacks
        .into_iter()
        .filter(|(name, _)| fleet.stacks.contains_key(name))
        .flat_map(|(_, files)| files)
        .filter(|(path, _)| !local.contains(path));
    UnitSet::from_texts(texts)
}

/// Takes `stacks` out of the record: the fleet's set runs stacks of these names now.
pub fn forget(stacks: &std::collections::BTreeSet<String>) -> Result<()> {
    let Some(mut record) = read() else { return Ok(()) };
    let before = record.stacks.len();
    record.stacks.retain(|name, _| !stacks.contains(name));
    if record.stacks.len() == before {
        return Ok(());
    }
    write(&record)
}

fn write(record: &Record) -> Result<()> {
    let bytes = serde_json::to_vec(record).context("cannot encode the record of the apply")?;
    crate::atomic_file::replace(&path(), &bytes, crate::atomic_file::Durability::Volatile)
        .with_context(|| format!("cannot write {}", path().display()))
}

/// Records that systemd now runs `desired`'s stacks: all of them, or those of `selection`
/// (with a stack of it that is gone from `desired` dropped). `before` is what the plan started
/// from, kept for the other stacks.
pub fn save(before: &UnitSet, desired: &UnitSet, selection: Option<&std::collections::BTreeSet<String>>) -> Result<()> {
    let mut record = Record { boot_id: crate::received_sets::boot_id(), stacks: BTreeMap::new() };
    let chosen = |name: &str| selection.is_none_or(|s| s.contains(name));
    for (name, stack) in before.stacks.iter().filter(|(name, _)| !chosen(name)) {
        record.stacks.insert(name.clone(), stack.files.clone());
    }
    for (name, stack) in desired.stacks.iter().filter(|(name, _)| chosen(name)) {
        record.stacks.insert(name.clone(), stack.files.clone());
    }
    write(&record)
}
