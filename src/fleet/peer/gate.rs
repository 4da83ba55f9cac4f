//! `kapell receive`'s request gate: one request on stdin, one JSON reply on stdout; it is the
//! only command a controller ever runs on a peer (see docs/fleet-protocol.md).
//!
//! The gate refuses what it must before anything changes (another command than
//! `kapell receive` under a pinned key, an oversized or malformed request, another protocol
//! version), takes the host lock, and hands the request to [`super::lifecycle`]. Every reply
//! ends with what the host runs now ([`super::report`]).
//!
//! The work does not depend on the connection: SIGHUP is ignored and a reply that cannot be
//! written is dropped, and the outcome is saved on disk, so a push whose connection dropped
//! still finishes, and the controller's next request reads what happened.

use super::generations::{CONFIRMED, Store};
use super::{lifecycle, report};
use crate::fleet::protocol::{Body, RECEIVE_COMMAND, Reply, Request, VERSION};
use anyhow::{Context, Result};
use std::io::Read as _;
use std::path::Path;

/// Requests larger than this are refused (a set of 10,000 units is a few MiB).
const MAX_REQUEST: u64 = 64 * 1024 * 1024;

/// Makes the controller's connection irrelevant to the outcome: SIGHUP (a closing session) is
/// ignored; SIGPIPE already is (Rust's runtime), so a lost stdout is merely an error to drop.
pub fn ignore_hangup() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // nix marks `signal` unsafe because installing a handler can be unsound; SIG_IGN runs none.
    #[expect(unsafe_code, reason = "SIG_IGN installs no handler")]
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
}

/// Reads one request of at most [`MAX_REQUEST`] bytes.
pub fn read_request(input: impl std::io::Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(MAX_REQUEST + 1).read_to_end(&mut bytes).context("cannot read the request")?;
    Ok(bytes)
}

/// Parses and carries out one request; every failure becomes a reply with `error` set.
pub fn handle(config_dir: &Path, input: &[u8]) -> Reply {
    let mut reply = report::new_reply();
    if let Err(e) = carry_out(config_dir, input, &mut reply) {
        reply.error = Some(format!("{e:#}"));
    }
    reply
}

fn carry_out(config_dir: &Path, input: &[u8], reply: &mut Reply) -> Result<()> {
    if let Ok(original) = std::env::var("SSH_ORIGINAL_COMMAND")
        && original.trim() != RECEIVE_COMMAND
    {
        anyhow::bail!("this key may only run `{RECEIVE_COMMAND}`, not {original:?}");
    }
    anyhow::ensure!(input.len() as u64 <= MAX_REQUEST, "the request is larger than {MAX_REQUEST} bytes");
    let value: serde_json::Value = serde_json::from_slice(input).context("the request is not valid JSON")?;
    let version = value.get("version").and_then(serde_json::Value::as_u64).context("the request has no version")?;
    if version != u64::from(VERSION) {
        anyhow::bail!(
            "this host's kapell speaks fleet protocol {VERSION}, the controller sent version {version}: \
             install the same kapell version on the controller and this host"
        );
    }
    let request: Request = serde_json::from_value(value).context("the request is malformed")?;
    let _lock = lifecycle::lock_host()?;
    let store = Store::open();
    lifecycle::settle_reboot(config_dir, &store, reply)?;
    match request.body {
        Body::Status => {
            reply.last_install = store.outcome().map(Box::new);
        }
        Body::Install { set, known, force, confirm_within } => {
            let result = lifecycle::install(config_dir, &store, &set, &known, force, confirm_within, reply);
            if let Err(e) = &result {
                reply.error = Some(format!("{e:#}"));
            }
            // Saved whatever happened, for a controller that lost the connection.
            let _ = store.save_outcome(reply);
            result?;
        }
        Body::Confirm { hash } => lifecycle::confirm(&store, &hash)?,
        Body::Rollback => {
            let generation = store.generation(CONFIRMED).context("this host has no confirmed set to go back to")?;
            lifecycle::revert(config_dir, &store, &generation, "rolled back at the controller's request", reply)?;
        }
    }
    report::describe(&store, reply)
}
