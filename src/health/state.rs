//! Where probe results live: one small JSON file per unit under `/run/kapell/health/`.
//!
//! Whoever probes a service writes its file (the supervisor of a container service, `kapell
//! probe --until-healthy` while a native service starts, the host's prober after that), each write
//! a temporary file renamed over the old one, so a reader sees a whole file. `kapell status` and a
//! fleet peer's status reply read them. A file names the unit's invocation (systemd's
//! `InvocationID`): a file left from an earlier run of the unit is recognised as stale.

use super::Health;
use super::probe::Probe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Who keeps a unit's file up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// A container service's supervisor (`kapell run`).
    Supervisor,
    /// A native service's `ExecStartPost=` until the first pass, then the host's prober.
    Host,
}

/// The health of one running unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub unit: String,
    /// `STACK.SERVICE`, and the replica number of a replicated service.
    pub service: String,
    pub instance: Option<String>,
    pub owner: Owner,
    /// systemd's `InvocationID` of the run this describes (hex; empty if unknown).
    pub invocation: String,
    /// `starting`, `healthy` or `unhealthy`.
    pub health: String,
    /// The probe in words (`http://127.0.0.1:8080/healthz`).
    pub check: String,
    /// When this run of the unit started to be probed, µs since the epoch.
    pub started_usec: u64,
    /// Consecutive failed probes.
    pub failures: u32,
    pub last_probe: Option<Probe>,
}

impl State {
    pub fn health(&self) -> Option<Health> {
        Health::parse(&self.health)
    }
}

/// `/run/kapell/health` (or under `KAPELL_RUNTIME_DIR`).
pub fn dir() -> PathBuf {
    crate::lock::runtime_dir().join("health")
}

/// The file of `unit` in `dir`.
pub fn path_in(dir: &Path, unit: &str) -> PathBuf {
    dir.join(format!("{unit}.json"))
}

/// Reads the state of `unit`; `None` when there is none (or it cannot be read: a probe in flight
/// writes it again within an interval).
pub fn read(dir: &Path, unit: &str) -> Option<State> {
    let text = std::fs::read(path_in(dir, unit)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the state, replaced whole (under `/run`: a reboot clears it anyway).
pub fn write(dir: &Path, state: &State) -> std::io::Result<()> {
    let text = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    crate::atomic_file::replace(&path_in(dir, &state.unit), &text, crate::atomic_file::Durability::Volatile)
}

/// Removes the state of `unit` (it stopped).
pub fn remove(dir: &Path, unit: &str) {
    let _ = std::fs::remove_file(path_in(dir, unit));
}

/// The invocation ID systemd gave this process's unit run (`$INVOCATION_ID`), if any.
pub fn own_invocation() -> String {
    std::env::var("INVOCATION_ID").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::Outcome;

    #[test]
    fn round_trips_through_the_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = State {
            unit: "todo-web@2.service".into(),
            service: "todo.web".into(),
            instance: Some("2".into()),
            owner: Owner::Host,
            invocation: "0123abcd".into(),
            health: "healthy".into(),
            check: "http://127.0.0.1:8080/".into(),
            started_usec: 5,
            failures: 0,
            last_probe: Some(Probe { at_usec: 7, duration_usec: 120, passed: true, outcome: Outcome::Status(204) }),
        };
        write(tmp.path(), &state).expect("write");
        assert_eq!(read(tmp.path(), "todo-web@2.service"), Some(state));
        assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 1, "no temporary file is left");
        remove(tmp.path(), "todo-web@2.service");
        assert_eq!(read(tmp.path(), "todo-web@2.service"), None);
    }
}
