//! Where a host keeps the unit sets a fleet controller pushed to it, as far as the generator
//! needs to know: `/etc/kapell/received` (under `/etc`, because the generator reads it at boot,
//! when `/var` may not be mounted yet: systemd.generator(7)), its `current` and `confirmed`
//! links, and the record of a set still waiting for the controller's confirmation.
//!
//! Writing there is `kapell receive`'s business ([`crate::fleet::peer::generations`]); this
//! module is the read-only part below both, so the generator does not depend on the fleet.

use crate::names::RECEIVED_DIR;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The symlink naming the generation systemd runs.
pub const CURRENT: &str = "current";

/// The symlink naming the last generation the controller confirmed: what a host reverts to, and
/// what boots after a reboot inside a confirm window.
pub const CONFIRMED: &str = "confirmed";

/// The record of a set waiting for confirmation ([`Pending`]).
pub const PENDING: &str = "pending.json";

/// A new set installed with a confirm window (see docs/fleet-protocol.md): unless the controller confirms it by
/// `deadline_usec`, the host reverts to `confirmed` on its own (a timer runs
/// `kapell receive --revert-unconfirmed <generation>`); a boot other than `boot_id` boots the
/// confirmed set instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub generation: String,
    pub hash: String,
    pub boot_id: String,
    pub deadline_usec: u64,
    /// The deadline on this boot's clock ([`crate::clock::boot_usec`]), which the revert timer
    /// goes by: the wall clock may be stepped during the window. 0 in a record from before it
    /// was kept.
    #[serde(default)]
    pub deadline_boot_usec: u64,
}

impl Pending {
    /// What is left of the window, in µs (0 once it closed).
    pub fn remaining_usec(&self) -> u64 {
        match self.deadline_boot_usec {
            0 => self.deadline_usec.saturating_sub(crate::clock::now_usec()),
            deadline => deadline.saturating_sub(crate::clock::boot_usec()),
        }
    }

    /// Has the window closed, give or take `slack_usec` (a timer may fire a little early)?
    pub fn closed(&self, slack_usec: u64) -> bool {
        self.remaining_usec() <= slack_usec
    }
}

/// [`RECEIVED_DIR`], or `KAPELL_RECEIVED_DIR` (tests).
pub fn received_dir() -> PathBuf {
    std::env::var_os("KAPELL_RECEIVED_DIR").map_or_else(|| PathBuf::from(RECEIVED_DIR), PathBuf::from)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The generation a link (`current`, `confirmed`) of `dir` names, if any.
pub fn generation(dir: &Path, link: &str) -> Option<String> {
    std::fs::read_link(dir.join(link)).ok().map(|t| t.to_string_lossy().into_owned())
}

/// The set of `dir` waiting for confirmation, if any.
pub fn pending(dir: &Path) -> Option<Pending> {
    let text = std::fs::read(dir.join(PENDING)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The directory the generator emits: `current`, except after a reboot inside a confirm window,
/// when the last confirmed set is what boots.
pub fn emitted_dir(dir: &Path) -> PathBuf {
    match pending(dir) {
        Some(p) if p.boot_id != boot_id() && generation(dir, CONFIRMED).is_some() => dir.join(CONFIRMED),
        _ => dir.join(CURRENT),
    }
}
