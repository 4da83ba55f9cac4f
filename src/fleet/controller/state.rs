//! What a controller remembers between runs: per host, the sets it pushed (so a set it
//! did not push is recognised and left alone), the set last seen healthy, a set a peer reverted
//! on its own, and when an unreachable host is tried next; and the rollout of the current
//! desired state (see [`super::rollout`]): its canaries, whether they were promoted, the batch in
//! flight (so a controller killed half-way resumes it instead of forgetting it), and whether it
//! failed, which holds that desired state back on every host until the stack files change or
//! the operator retries it.
//!
//! One JSON file, `/var/lib/kapell/fleet/state.json` (`KAPELL_STATE_DIR` for tests), written
//! through a temporary file, fsync and rename(2). `kapell fleet apply` and `kapell federate`
//! share it; an flock on `state.lock` makes them take turns.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// How many pushed hashes are remembered per host (older ones are not "known" any more).
const KNOWN_PER_HOST: usize = 32;

/// The controller's state directory.
pub fn state_dir() -> PathBuf {
    std::env::var_os("KAPELL_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/kapell/fleet"), PathBuf::from)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub hosts: BTreeMap<String, HostState>,
    /// The rollout in progress, if one was interrupted or is running.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostState {
    /// The set the host ran at the last contact.
    pub current: String,
    /// Sets pushed to the host, newest last; written *before* each push.
    pub known: Vec<String>,
    /// The last set confirmed healthy on the host.
    pub healthy: String,
    /// A desired set this host reverted on its own (not confirmed in time): not pushed again
    /// until it changes, or a push of it with `--force` is confirmed there.
    pub held: Option<Held>,
    /// Set while the host cannot be reached.
    pub unreachable: Option<Unreachable>,
    /// Each service unit of its set, and whether it was up (active and not failing its health
    /// check) in the host's last reply: where the health the controller sends for instances no
    /// responder probes comes from ([`super::instance_health`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, bool>,
    /// The SHA-256 of the catalog of the set the host ran at the last contact (empty: none, or
    /// a peer that does not say): an install of a set with that very catalog leaves it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog: String,
    /// The SHA-256 of the health word the host held at the last contact (empty: none, or a peer
    /// that does not say): a request leaves that very word out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
}

impl HostState {
    /// What a reply says the host runs now.
    pub fn saw(&mut self, reply: &crate::fleet::protocol::Reply) {
        self.current.clone_from(&reply.current);
        self.catalog.clone_from(&reply.catalog_hash);
        self.health.clone_from(&reply.health_hash);
    }

    /// Whether the host ran, at the last contact, a set this controller never pushed there
    /// (edited by hand, another controller's): the peer refuses to replace it without `--force`.
    /// A host without a set reports the empty set's hash, which is nobody's.
    pub fn runs_foreign_set(&self) -> bool {
        static EMPTY_SET: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| crate::fleet::protocol::HostSet::from_rendered(&[]).hash);
        let has_units = !self.current.is_empty() && self.current != *EMPTY_SET;
        is_foreign_set(&self.current, has_units, &self.known)
    }
}

/// Whether set `hash`, which a host runs, is one this controller never pushed there (`known`):
/// the rule by which a peer refuses to replace it without `--force`. `has_units`: the set has
/// any unit file (a host without a set reports the empty set, which is nobody's).
pub fn is_foreign_set(hash: &str, has_units: bool, known: &[String]) -> bool {
    has_units && !known.iter().any(|k| k == hash)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Held {
    pub hash: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Unreachable {
    pub since_usec: u64,
    pub failures: u32,
    pub next_try_usec: u64,
    pub error: String,
}

/// The rollout of one desired state: the set per host it brings, its canaries, which hosts are
/// done and which are changing, and how it ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    /// The desired state this rollout brings ([`super::rollout::desired_state`]).
    #[serde(default)]
    pub desired_state: String,
    /// The stacks whose shared services it changes.
    #[serde(default)]
    pub stacks: Vec<String>,
    pub desired: BTreeMap<String, String>,
    /// The hosts that get it first (chosen once per desired state).
    #[serde(default)]
    pub canaries: Vec<String>,
    /// When the canaries had been healthy for `min_healthy_time` (µs since the epoch).
    #[serde(default)]
    pub canaries_healthy_usec: Option<u64>,
    /// The canaries were promoted (automatically or by `kapell fleet promote`): the others follow.
    #[serde(default)]
    pub promoted: bool,
    /// The batch that failed: this desired state goes to no other host.
    #[serde(default)]
    pub failed: Option<Failure>,
    /// `kapell fleet rollout retry`: push the desired state again even where it was rolled back.
    #[serde(default)]
    pub retry: bool,
    /// Hosts in the batch being pushed or waited on.
    pub in_flight: Vec<String>,
    /// Hosts updated and confirmed healthy.
    pub done: Vec<String>,
    /// Hosts updated and healthy whose confirmation failed: they go back on their own, unless the
    /// confirmation took effect with its reply lost (so a failure later takes them back too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
    /// Hosts left, in order.
    pub waiting: Vec<String>,
    pub started_usec: u64,
    /// How the last rollout ended, for `fleet status` ("completed", "rolled back: …").
    pub outcome: Option<String>,
}

/// Where and why a rollout failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub host: String,
    /// The unit, its state and its last journal lines.
    pub reason: String,
    pub at_usec: u64,
}

impl State {
    /// Reads the state; a missing file is the empty state.
    pub fn load() -> Result<State> {
        let path = state_dir().join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state atomically and durably.
    pub fn save(&self) -> Result<()> {
        let path = state_dir().join("state.json");
        let bytes = serde_json::to_vec_pretty(self).context("cannot encode the state")?;
        crate::atomic_file::replace(&path, &bytes, crate::atomic_file::Durability::Durable)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn host(&mut self, name: &str) -> &mut HostState {
        self.hosts.entry(name.to_string()).or_default()
    }

    /// Records that `hash` is about to be pushed to `host` (before the push: a controller
    /// killed mid-push still knows the set it may have left there).
    pub fn pushing(&mut self, host: &str, hash: &str) {
        let known = &mut self.host(host).known;
        known.retain(|h| h != hash);
        known.push(hash.to_string());
        let excess = known.len().saturating_sub(KNOWN_PER_HOST);
        known.drain(..excess);
    }
}

/// The controller's lock: one `fleet apply` or `federate` at a time.
pub struct ControllerLock {
    _file: File,
}

impl ControllerLock {
    /// Takes the lock, waiting (and saying so through `waiting`) if another holds it.
    pub fn acquire(waiting: impl FnOnce()) -> Result<ControllerLock> {
        let dir = state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("state.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            waiting();
            file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(ControllerLock { _file: file })
    }
}
