//! What a running `kapell dns` tells the rest of the host, in `/run/kapell/dns.json`: the
//! addresses it listens on (the supervisor gives a container its network's gateway as DNS server
//! only while the responder listens there), whether resolved routes `.kapell` to it, and what
//! each name answers now (`kapell status`, `kapell fleet status`).
//!
//! Below both the responder ([`crate::discovery`]) and the supervisor, so neither depends on the
//! other. Written with temp file + rename, so a reader never sees half a file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

const FILE: &str = "dns.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsState {
    /// The responder's process; a file whose process is gone is stale.
    pub pid: u32,
    pub listening: Vec<IpAddr>,
    /// `Some(true)`: systemd-resolved sends `.kapell` here; `Some(false)`: this host has no
    /// resolved, so its own processes cannot resolve the names; `None`: not managed.
    pub resolved: Option<bool>,
    /// `<service>.<stack>.kapell` → the hosts (name and ip) it answers with now.
    pub names: BTreeMap<String, Vec<Answer>>,
    /// Where the catalog came from: a received generation's file, or the local stacks.
    pub catalog: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub host: String,
    pub ip: IpAddr,
    /// How its health is known: `probe`, `systemd` or `controller`.
    pub source: String,
}

pub fn path() -> PathBuf {
    crate::lock::runtime_dir().join(FILE)
}

/// The state of the responder running now, if one is.
pub fn read() -> Option<DnsState> {
    let text = std::fs::read(path()).ok()?;
    let state: DnsState = serde_json::from_slice(&text).ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(state.pid).ok()?), None).is_ok();
    alive.then_some(state)
}

/// Writes the state, replaced whole (under the runtime directory: a reboot clears it anyway).
pub fn write(state: &DnsState) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::atomic_file::replace(&path(), &text, crate::atomic_file::Durability::Volatile)
}

pub fn remove() {
    let _ = std::fs::remove_file(path());
}
