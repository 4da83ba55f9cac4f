//! The bridge from the synchronous commands to the async D-Bus client ([`crate::systemd`]).

use crate::systemd::Systemd;
use anyhow::{Context, Result};
use std::sync::OnceLock;

/// Runs a future to completion on a single-threaded runtime of its own: a command makes a
/// handful of D-Bus calls, which need no more.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    Ok(new_runtime()?.block_on(future))
}

fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// The runtime of [`with_systemd`] and its connection, made at the first call and kept for the
/// rest of the process (statics are never dropped: the connection's tasks live on this runtime).
static SHARED: OnceLock<(tokio::runtime::Runtime, Systemd)> = OnceLock::new();

/// Runs `work` with one connection to systemd shared by every call in this process, made at the
/// first: a short-lived command such as `kapell receive` talks to systemd at several steps, with
/// one connection and one authentication rather than one per step. Calls from several threads
/// take turns on the one runtime.
pub fn with_systemd<R>(work: impl AsyncFnOnce(&Systemd) -> Result<R>) -> Result<R> {
    let (runtime, systemd) = match SHARED.get() {
        Some(shared) => shared,
        None => {
            let runtime = new_runtime()?;
            let systemd = runtime.block_on(Systemd::system())?;
            SHARED.get_or_init(|| (runtime, systemd))
        }
    };
    runtime.block_on(work(systemd))
}
