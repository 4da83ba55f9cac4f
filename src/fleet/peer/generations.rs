//! The sets a peer received, on disk: `/etc/kapell/received/` (see docs/host-layout.md).
//!
//! ```text
//! /etc/kapell/received/
//!   current -> g1733042212345678-3f2a9c0d1b2e   the set systemd runs (the generator emits it)
//!   g1733042212345678-3f2a9c0d1b2e/             one generation: unit files and *.wants/ links
//!   g1733040000000000-0a1b2c3d4e5f/             the previous one, kept for a rollback
//!   confirmed -> g1733040000000000-0a1b2c3d4e5f the last set the controller confirmed
//!   pending.json                                a new set's confirm deadline (while one runs)
//!   last-install.json                           the outcome of the last install
//! ```
//!
//! It lives under `/etc` because the generator reads it at boot, when `/var` may not be mounted
//! yet (systemd.generator(7)). A new set is written into a staging directory, every file and the
//! directory fsynced, the directory renamed to its generation name, and then `current` is
//! replaced by a new symlink with rename(2). A kill at any instant leaves `current` naming either
//! the old generation or the new one, each complete; what a killed run left behind (a staging
//! directory, a generation nobody points to) is removed by the next install.

use crate::atomic_file::Durability;
use crate::fleet::protocol::{self, HostSet, Reply};
use crate::names::{CATALOG_FILE, CATALOG_HOST_FILE};
use crate::received_sets::PENDING;
pub use crate::received_sets::{CONFIRMED, CURRENT, Pending, boot_id, received_dir};
use crate::unitset::{self, OutputFile};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const REJECTED: &str = "rolled-back.json";
/// In a generation's directory: the generation a rollback from it goes back to, the last
/// confirmed one when it was staged. (Its name starts with a dot: not a unit of the set.)
const PREVIOUS: &str = ".previous";
const OUTCOME: &str = "last-install.json";
const STAGING_PREFIX: &str = ".staging-";
const GENERATION_PREFIX: &str = "g";

/// The directory of received generations.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn open() -> Store {
        Store::new(received_dir())
    }

    /// Where the controller's word on unprobed instances is kept (beside the generations, not
    /// in one: see [`crate::discovery::pushed_health`]).
    pub fn health_path(&self) -> PathBuf {
        crate::discovery::pushed_health::path_in(&self.dir)
    }

    /// The directory the generator emits (`current`, followed).
    pub fn current_dir(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// The directory the generator emits: `current`, except after a reboot inside a confirm
    /// window, when the last confirmed set is what boots (see docs/fleet-protocol.md).
    pub fn emitted_dir(&self) -> PathBuf {
        crate::received_sets::emitted_dir(&self.dir)
    }

    /// The generation `current` names, if any.
    pub fn current_generation(&self) -> Option<String> {
        self.generation(CURRENT)
    }

    /// The generation a link (`current`, `confirmed`) names, if any.
    pub fn generation(&self, link: &str) -> Option<String> {
        crate::received_sets::generation(&self.dir, link)
    }

    /// The set `current` names, read back from its files (empty if none was received).
    pub fn current(&self) -> Result<HostSet> {
        self.set_of(self.current_generation().as_deref())
    }

    /// The set of a generation (`None`: the empty set).
    pub fn set_of(&self, generation: Option<&str>) -> Result<HostSet> {
        match generation {
            Some(generation) => read_set(&self.dir.join(generation)),
            None => Ok(HostSet::from_rendered(&[])),
        }
    }

    /// Points `link` at `generation` (an existing one), atomically: a new symlink renamed over
    /// the old one, then the directory fsynced.
    pub fn set_link(&self, link: &str, generation: &str) -> Result<()> {
        let tmp = self.dir.join(format!("{STAGING_PREFIX}{link}-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(generation, &tmp)
            .with_context(|| format!("cannot create the symlink {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join(link))
            .with_context(|| format!("cannot point {link} at {generation} in {}", self.dir.display()))?;
        sync_dir(&self.dir)
    }

    /// Sets this host rolled back, with why (newest last, at most 16): not installed again
    /// unless forced.
    pub fn rejected(&self) -> Vec<(String, String)> {
        std::fs::read(self.dir.join(REJECTED)).ok().and_then(|t| serde_json::from_slice(&t).ok()).unwrap_or_default()
    }

    pub fn reject(&self, hash: &str, why: &str) -> Result<()> {
        let mut list = self.rejected();
        list.retain(|(h, _)| h != hash);
        list.push((hash.to_string(), why.to_string()));
        let excess = list.len().saturating_sub(16);
        list.drain(..excess);
        write_atomic(&self.dir, REJECTED, &serde_json::to_vec(&list).context("cannot encode")?)
    }

    /// The new set waiting for the controller's confirmation, if any.
    pub fn pending(&self) -> Option<Pending> {
        crate::received_sets::pending(&self.dir)
    }

    pub fn set_pending(&self, pending: Option<&Pending>) -> Result<()> {
        match pending {
            Some(p) => write_atomic(&self.dir, PENDING, &serde_json::to_vec(p).context("cannot encode")?),
            None => match std::fs::remove_file(self.dir.join(PENDING)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {PENDING}"))
                }
                _ => sync_dir(&self.dir),
            },
        }
    }

    /// Writes `set` as a new generation and makes it current, atomically (see the module
    /// documentation). Returns the generation's name.
    pub fn install(&self, set: &HostSet) -> Result<String> {
        let generation = self.stage(set, self.generation(CONFIRMED).as_deref())?;
        self.make_current(&generation)?;
        Ok(generation)
    }

    /// Makes `generation` the one the host runs: one rename of the `current` link.
    pub fn make_current(&self, generation: &str) -> Result<()> {
        self.set_link(CURRENT, generation)
    }

    /// Writes `set` as a new generation, fsynced and published under its final name, without
    /// making it current; `previous` is recorded in it as what a rollback from it goes back to.
    /// Returns the generation's name.
    pub fn stage(&self, set: &HostSet, previous: Option<&str>) -> Result<String> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let stamp = crate::clock::now_usec();
        let generation = format!("{GENERATION_PREFIX}{stamp}-{}", set.short_hash());
        let staging = self.dir.join(format!("{STAGING_PREFIX}{generation}"));
        std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        let final_dir = self.dir.join(&generation);
        // The catalog in the same directory as the units, before the rename that publishes both.
        let published = write_set(&staging, &set.to_rendered())
            .and_then(|()| write_catalog(&staging, set))
            .and_then(|()| write_previous(&staging, previous))
            .and_then(|()| {
                std::fs::rename(&staging, &final_dir)
                    .with_context(|| format!("cannot rename {} to {}", staging.display(), final_dir.display()))
            });
        if let Err(e) = published {
            // Nothing of a failed install stays behind (a killed one is pruned by the next).
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(generation)
    }

    /// The generation a rollback from `generation` goes back to, if it is kept: the one that
    /// was confirmed when `generation` was staged (not the newest older one, which may be a set
    /// this host reverted). A generation staged before this was recorded falls back to the
    /// newest older one by the time in the names.
    pub fn generation_before(&self, generation: &str) -> Option<String> {
        let names: Vec<String> = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        self.previous_of(&names, generation)
    }

    /// [`Self::generation_before`], among `names` (the directory's, listed once).
    fn previous_of(&self, names: &[String], generation: &str) -> Option<String> {
        match std::fs::read_to_string(self.dir.join(generation).join(PREVIOUS)) {
            Ok(text) => Some(text.trim()).filter(|p| names.iter().any(|n| n == p)).map(str::to_string),
            Err(_) => newest_before(names, generation).map(str::to_string),
        }
    }

    /// Removes generations other than `current`, `confirmed`, `keep` (the previous one) and the
    /// one before `current` (what a rollout that fails later takes a host back to), and whatever
    /// a killed install left behind.
    pub fn prune(&self, keep: Option<&str>) -> Result<()> {
        let current = self.current_generation();
        let confirmed = self.generation(CONFIRMED);
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(()) };
        let entries: Vec<(String, std::fs::DirEntry)> =
            entries.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e)).collect();
        let names: Vec<String> = entries.iter().map(|(name, _)| name.clone()).collect();
        let before = current.as_deref().and_then(|c| self.previous_of(&names, c));
        for (name, entry) in entries {
            let wanted =
                [current.as_deref(), confirmed.as_deref(), keep, before.as_deref()].contains(&Some(name.as_str()));
            let ours = name.starts_with(STAGING_PREFIX)
                || name.starts_with(GENERATION_PREFIX)
                || crate::atomic_file::is_temporary(&name);
            if wanted || !ours {
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Records the outcome of an install, so a controller whose connection dropped learns it.
    /// Replaced atomically but not fsynced: it is a report, not state (the sets and links
    /// are durable), written before every reply; a crash can lose it, and a lost or unreadable
    /// record reads as none.
    pub fn save_outcome(&self, reply: &Reply) -> Result<()> {
        let text = serde_json::to_vec_pretty(reply).context("cannot encode the outcome")?;
        replace(&self.dir, OUTCOME, &text, Durability::Volatile)
    }

    /// The outcome of the last install, if one was recorded.
    pub fn outcome(&self) -> Option<Reply> {
        let text = std::fs::read(self.dir.join(OUTCOME)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Writes the set's discovery catalog, if it has one, and the host's name in it into the
/// staging directory, fsynced.
fn write_catalog(dir: &Path, set: &HostSet) -> Result<()> {
    let Some(catalog) = &set.catalog else { return Ok(()) };
    for (name, text) in [(CATALOG_FILE, catalog.as_bytes()), (CATALOG_HOST_FILE, format!("{}\n", set.host).as_bytes())]
    {
        let path = dir.join(name);
        let mut file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(text)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    sync_dir(dir)
}

/// Records `previous` in the staging directory, fsynced (nothing when there is none).
fn write_previous(dir: &Path, previous: Option<&str>) -> Result<()> {
    let Some(previous) = previous else { return Ok(()) };
    let path = dir.join(PREVIOUS);
    let mut file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{previous}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a generation directory back into a set.
pub fn read_set(dir: &Path) -> Result<HostSet> {
    let path = dir.join(CATALOG_FILE);
    let catalog = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // A generation from before the catalog's host had a file of its own has the name inside
    // its catalog, and an empty `host`.
    let host = crate::discovery::catalog::read_host(dir)?.unwrap_or_default();
    let files = protocol::files_of(&unitset::read_files(dir)?);
    Ok(HostSet::new(Arc::new(files), catalog.map(Arc::from), &host))
}

/// Writes `files` into the empty directory `dir` with the one unit-set writer, then makes them
/// durable: every file and directory fsynced, so the rename that publishes the generation
/// never publishes data still in the page cache.
fn write_set(dir: &Path, files: &[OutputFile]) -> Result<()> {
    unitset::write(dir, files, unitset::Strategy::Replace)?;
    let mut dirs = vec![dir.to_path_buf()];
    for file in files {
        let path = dir.join(file.path());
        if let OutputFile::Unit { .. } = file {
            File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", path.display()))?;
        } else if let Some(parent) = path.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            dirs.push(parent.to_path_buf());
        }
    }
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    Ok(())
}

/// The newest generation of `names` older than `generation`, by the time in their names.
fn newest_before<'a>(names: &'a [String], generation: &str) -> Option<&'a str> {
    let stamp = |name: &str| name.strip_prefix(GENERATION_PREFIX)?.split_once('-')?.0.parse::<u64>().ok();
    let limit = stamp(generation)?;
    names
        .iter()
        .filter_map(|name| Some((stamp(name)?, name.as_str())))
        .filter(|(s, _)| *s < limit)
        .max()
        .map(|(_, n)| n)
}

/// Writes `name` in `dir`, replaced whole and fsynced: state a later run acts on.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace(dir, name, bytes, Durability::Durable)
}

/// Writes `name` in `dir`, replaced whole ([`crate::atomic_file`]).
fn replace(dir: &Path, name: &str, bytes: &[u8], durability: Durability) -> Result<()> {
    let path = dir.join(name);
    crate::atomic_file::replace(&path, bytes, durability).with_context(|| format!("cannot write {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> HostSet {
        HostSet::from_rendered(&[
            OutputFile::unit("a.target", text),
            OutputFile::unit("a-x.service", format!("{text}x")),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
            OutputFile::link("a.target.requires/a-x.service", "../a-x.service"),
        ])
    }

    /// The names in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        sorted(std::fs::read_dir(dir).expect("ls").flatten().map(|e| e.file_name().to_string_lossy().into()).collect())
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn a_failed_install_leaves_no_staging_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().to_path_buf());
        // A unit file and a links directory of the same name cannot both be written: the write
        // fails half-way (the set checks refuse such a set before it gets here).
        let clash = HostSet::from_rendered(&[
            OutputFile::unit("x.wants", "[Unit]\n"),
            OutputFile::link("x.wants/a.target", "../a.target"),
        ]);
        store.install(&clash).expect_err("cannot be written");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn install_swaps_whole_generations_and_prunes_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().to_path_buf());
        assert_eq!(store.current().expect("empty").files.len(), 0);
        let one = set("[Unit]\n");
        let first = store.install(&one).expect("install");
        assert_eq!(store.current().expect("read"), one);
        // The catalog and the host's name in it are read back as they came: the same set.
        let two = set("[Unit]\nDescription=two\n");
        let two = HostSet::new(two.files, Some(Arc::from("{\"version\":1,\"host\":\"\",\"services\":[]}\n")), "h1");
        // A killed install's leftovers: a staging dir and an orphan generation.
        std::fs::create_dir(dir.path().join(".staging-gX")).expect("mkdir");
        std::fs::create_dir(dir.path().join("g1-orphan")).expect("mkdir");
        let second = store.install(&two).expect("install");
        assert_eq!(store.current().expect("read"), two);
        let generation = dir.path().join(CURRENT);
        assert_eq!(std::fs::read_to_string(generation.join(CATALOG_HOST_FILE)).expect("host"), "h1\n");
        assert_eq!(crate::discovery::catalog::Catalog::load(&generation).expect("load").expect("some").host, "h1");
        store.prune(Some(&first)).expect("prune");
        assert_eq!(names_in(dir.path()), sorted(vec![first, second, CURRENT.to_string()]));
    }

    /// The generation before the current one stays through every prune (a rollout that fails
    /// later takes the host back to it); a temporary file a killed write left goes.
    #[test]
    fn the_generation_before_the_current_one_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().to_path_buf());
        let first = store.install(&set("[Unit]\n")).expect("install");
        let second = store.install(&set("[Unit]\nDescription=2\n")).expect("install");
        let third = store.install(&set("[Unit]\nDescription=3\n")).expect("install");
        assert_eq!(store.generation_before(&third).as_deref(), Some(second.as_str()));
        assert_eq!(store.generation_before(&first), None);
        std::fs::write(dir.path().join(".pending.json.tmp-1"), "{").expect("write");
        store.prune(None).expect("prune");
        assert_eq!(names_in(dir.path()), sorted(vec![second, third, CURRENT.to_string()]));
    }

    /// A rollback goes back to the set that was confirmed when the current one came, not to the
    /// newest older generation: that one may be a set this host ran for a while and reverted.
    #[test]
    fn the_generation_before_is_the_one_confirmed_when_it_came() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().to_path_buf());
        let good = store.install(&set("[Unit]\n")).expect("install");
        store.set_link(CONFIRMED, &good).expect("confirm");
        let reverted = store.install(&set("[Unit]\nDescription=reverted\n")).expect("install");
        store.make_current(&good).expect("revert");
        let next = store.install(&set("[Unit]\nDescription=next\n")).expect("install");
        store.set_link(CONFIRMED, &next).expect("confirm");
        assert_eq!(store.generation_before(&next).as_deref(), Some(good.as_str()), "not {reverted}");
        // It is what a prune keeps; the reverted set goes.
        store.prune(None).expect("prune");
        assert_eq!(names_in(dir.path()), sorted(vec![good, next, CONFIRMED.to_string(), CURRENT.to_string()]));
        // The record is not a unit of the set.
        assert_eq!(store.current().expect("read"), set("[Unit]\nDescription=next\n"));
    }
}
