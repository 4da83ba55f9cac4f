//! Integration-test rig: real systemd hosts (systemd-nspawn on an overlay of a debootstrapped
//! Debian tree), private bridges, ssh between them, and private Docker engines.
//!
//! Everything here needs root and the packages `.ci/deps` installs; a missing piece is an error,
//! never a silent skip. Every object cleans up in `Drop` (also when a test panics), and resources
//! left behind by a test process that was killed are reaped by the next one (see [`lease`]).
//!
//! State lives under [`STATE_DIR`]: `base/` (the cached tree), `host-<id>/`, `docker-<id>/`,
//! `nets/` (subnet locks) and `logs/` (boot and daemon logs, kept when a test fails).
#![allow(dead_code, unused_imports, reason = "each test binary compiles this module and uses only part of it")]

mod base;
mod cgroup;
mod cmd;
mod container_rig;
pub mod dns;
mod docker;
pub mod fleet;
mod footprint;
mod fs;
mod host;
mod journal;
mod lease;
mod net;
pub mod scenarios;
mod ssh;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub use base::{Flavor, base_tree, tree};
pub use cmd::{Run, eventually, run, run_ok};
pub use container_rig::ContainerRig;
pub use docker::{Dockerd, HOST_DOCKER_HOST, free_port};
pub use footprint::Footprint;
pub use host::{Host, HostBuilder, Source};
pub use journal::Entry;
pub use net::Net;
pub use scenarios::Scenario;
pub use ssh::Ssh;

/// Root of everything the rig creates on the machine. `/var/tmp` survives reboots, so the base
/// tree is built once per machine; paths stay short because unix socket paths must fit 108 bytes.
pub const STATE_DIR: &str = "/var/tmp/kapell-test";

/// Prefix of the cgroup directories the rig creates, so a leftover is easy to recognise.
pub const CGROUP_PREFIX: &str = "kapell-test-";

/// The rig boots hosts, creates bridges and cgroups and runs dockerd: it needs root. Said in one
/// line, first, instead of whatever the first `mkdir` or `mount` would fail with.
pub fn require_root() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it boots systemd hosts (systemd-nspawn), bridges and a dockerd; run it as root \
         (e.g. `sudo -E cargo test --test <name>`), or run the tests that need no root: \
         `cargo test --lib --test golden --test cli --test properties --test manpages --test generator_kill`"
    );
    Ok(())
}

fn state_dir() -> &'static Path {
    Path::new(STATE_DIR)
}

fn logs_dir() -> anyhow::Result<PathBuf> {
    let dir = state_dir().join("logs");
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A short id unique across the test processes running now: `k<pid>-<counter>`, at most 12
/// characters, because it becomes an nspawn machine name and `vb-<id>` must fit an interface name.
fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("k{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Last `lines` lines of a log file, for error messages (empty if it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
