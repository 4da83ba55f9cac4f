//! The bridge from the synchronous commands to the async D-Bus client ([`crate::systemd`]).

use anyhow::{Context, Result};

/// Runs a future to completion on a single-threaded runtime of its own: a command makes a
/// handful of D-Bus calls, which need no more.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}
