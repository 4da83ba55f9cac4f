//! The peer's own clock for a confirm window: a transient systemd timer that runs
//! `kapell receive --revert-unconfirmed GENERATION` when the window closes, created and stopped
//! through the project's D-Bus client ([`crate::systemd`]). systemd keeps the time, so the
//! revert happens whatever becomes of `kapell receive` or the controller's connection.

use crate::blocking::with_systemd;
use crate::received_sets::Pending;
use anyhow::{Context, Result};
use std::time::Duration;

/// How late the revert may run: a confirm window is seconds to minutes long.
const ACCURACY: Duration = Duration::from_millis(100);

/// Starts the timer that reverts `pending`'s generation at its deadline, unless [`cancel`]led
/// first. Each arming of a window has a timer of its own (the deadline is in its name), so a
/// window re-armed later never collides with the one it replaces.
pub fn schedule(pending: &Pending) -> Result<()> {
    let kapell = std::env::current_exe().context("cannot find this kapell binary")?;
    let generation = &pending.generation;
    let argv = [kapell.to_string_lossy().as_ref(), "receive", "--revert-unconfirmed", generation].map(String::from);
    let description = format!("kapell: revert generation {generation} unless the controller confirms it");
    let within = Duration::from_micros(pending.remaining_usec());
    with_systemd(async |systemd| {
        systemd.start_transient_timer(&unit(pending), within, ACCURACY, &description, &argv).await
    })
    .context("cannot schedule the revert of the unconfirmed set")
}

/// Stops the timer of `pending`; one that fired already or never existed is no error.
pub fn cancel(pending: &Pending) -> Result<()> {
    with_systemd(async |systemd| systemd.stop_if_loaded(&format!("{}.timer", unit(pending))).await)
        .with_context(|| format!("cannot stop the revert timer of generation {}", pending.generation))
}

/// The timer's and its service's name, without the suffix.
fn unit(pending: &Pending) -> String {
    format!("kapell-revert-{}-{}", pending.generation, pending.deadline_usec)
}
