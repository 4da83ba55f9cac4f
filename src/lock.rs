//! One writer per host (see docs/decisions.md): `kapell apply`, `kapell receive` and the federation daemon
//! take this lock before they change what systemd runs.
//!
//! It is an `flock(2)` on `/run/kapell/lock`. The kernel drops the lock when its holder dies,
//! however it dies, so a lock left by a killed process is simply free for the next one: there is
//! no stale state to detect. The holder writes its PID and command into the file, so a second
//! writer can say whom it is waiting for.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

/// kapell's runtime directory: `/run/kapell`, or `KAPELL_RUNTIME_DIR` (tests, unprivileged runs).
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("KAPELL_RUNTIME_DIR").map_or_else(|| PathBuf::from("/run/kapell"), PathBuf::from)
}

/// The host-wide writer lock, held until dropped.
pub struct HostLock {
    file: File,
}

impl HostLock {
    /// Takes the lock for `what` (e.g. `kapell apply`), waiting for the current holder if there
    /// is one; `waiting` is told who that is, once, before the wait.
    pub fn acquire(what: &str, waiting: impl FnOnce(&str)) -> Result<HostLock> {
        let dir = runtime_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Self::acquire_at(&dir.join("lock"), what, waiting)
    }

    /// [`HostLock::acquire`] with the lock file at `path`.
    pub fn acquire_at(path: &std::path::Path, what: &str, waiting: impl FnOnce(&str)) -> Result<HostLock> {
        // Readable by its owner only: flock(2) needs no more than an open file, so a lock file
        // anyone can open is a lock any user can hold, and every apply and receive would wait.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the host lock {}", path.display()))?;
        if file.metadata().is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            // One an earlier version made.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                waiting(if holder.is_empty() { "another kapell process" } else { holder });
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0).and_then(|()| file.rewind()).with_context(|| format!("cannot write {}", path.display()))?;
        // Best effort: the lock itself is what matters, the text only helps the next waiter.
        let _ = write!(file, "PID {} ({what})", std::process::id());
        Ok(HostLock { file })
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_writer_waits_and_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let first = HostLock::acquire_at(&path, "kapell apply", |_| panic!("nobody holds it yet")).expect("first");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut told = String::new();
            let lock =
                HostLock::acquire_at(&path, "kapell receive", |holder| told = holder.to_string()).expect("second");
            tx.send(told).expect("send");
            drop(lock);
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the second writer did not wait");
        drop(first);
        let told = rx.recv_timeout(Duration::from_secs(5)).expect("the second writer got the lock");
        assert_eq!(told, format!("PID {} (kapell apply)", std::process::id()));
        waiter.join().expect("join");
    }

    /// Only its owner can open the lock file, so only its owner can hold it; a lock file an
    /// earlier version left open to all is closed.
    #[test]
    fn the_lock_file_is_its_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        drop(HostLock::acquire_at(&path, "kapell apply", |_| {}).expect("lock"));
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(HostLock::acquire_at(&path, "kapell apply", |_| {}).expect("lock"));
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    }
}
