//! Leases: a state directory `STATE_DIR/<kind>-<id>/` owned by a live test process.
//!
//! The owner holds an exclusive lock on `<kind>-<id>.lock` for as long as the resource exists.
//! A test process killed with SIGKILL never runs `Drop`, but the kernel drops its locks, so the
//! next process that creates a resource of the same kind finds lock files it can take: those are
//! leftovers, and it cleans them up with the same code `Drop` uses. Creation and reaping hold
//! `<kind>.lock` so a reaper never mistakes a lease being set up for a leftover.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::state_dir;

/// A held lease. Dropping it removes the lock file and releases the lock; the owner removes the
/// directory first (cleanup can fail half-way, and then the lease must stay visible to reapers).
pub struct Lease {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Lease {
    /// Reaps leftovers of `kind` with `reap(id, dir)` (which must remove `dir` once nothing is
    /// mounted below it; the lock file goes only when the directory has gone), then takes a fresh lease for `id` and
    /// creates its (empty) directory.
    pub fn acquire(kind: &str, id: &str, reap: impl Fn(&str, &Path)) -> Result<Lease> {
        let _guard = kind_lock(kind)?;
        reap_leftovers(kind, &reap)?;
        let lock_path = lock_path(kind, id);
        let lock = open(&lock_path)?;
        lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let dir = state_dir().join(format!("{kind}-{id}"));
        // Never delete blindly: a stray directory may still hold mounts.
        anyhow::ensure!(!dir.exists(), "{} exists without a lease; remove it by hand", dir.display());
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Lease { dir, lock_path, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.dir.exists() {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

fn lock_path(kind: &str, id: &str) -> PathBuf {
    state_dir().join(format!("{kind}-{id}.lock"))
}

fn open(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

/// Blocks until this process holds `<kind>.lock`; the lock is released when the file is dropped.
fn kind_lock(kind: &str) -> Result<File> {
    let path = state_dir().join(format!("{kind}.lock"));
    let file = open(&path)?;
    file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// Cleans up every `<kind>-<id>` whose lock nobody holds.
fn reap_leftovers(kind: &str, reap: &impl Fn(&str, &Path)) -> Result<()> {
    let prefix = format!("{kind}-");
    let entries = std::fs::read_dir(state_dir()).with_context(|| format!("cannot list {}", state_dir().display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".lock")) else {
            continue;
        };
        let file = open(&entry.path())?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {name}"));
            }
        }
        let dir = state_dir().join(format!("{kind}-{id}"));
        eprintln!("kapell-test: reaping leftover {}", dir.display());
        reap(id, &dir);
        if !dir.exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
