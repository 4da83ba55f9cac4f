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
use super::refusal::{Kind, Refusal};
use super::{lifecycle, report, request};
use crate::discovery::pushed_health;
use crate::discovery::pushed_health::InstanceHealth;
use crate::fleet::protocol::{self, Body, HostSet, RECEIVE_COMMAND, Reply};
use anyhow::{Context, Result};
use std::io::Read as _;
use std::path::Path;

/// Makes the controller's connection irrelevant to the outcome: SIGHUP (a closing session) is
/// ignored; SIGPIPE already is (Rust's runtime), so a lost stdout is merely an error to drop.
pub fn ignore_hangup() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // nix marks `signal` unsafe because installing a handler can be unsound; SIG_IGN runs none.
    #[expect(unsafe_code, reason = "SIG_IGN installs no handler")]
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
}

/// Reads one request of at most [`request::MAX_REQUEST`] bytes (one more, to tell a larger one).
pub fn read_request(input: impl std::io::Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(request::MAX_REQUEST + 1).read_to_end(&mut bytes).context("cannot read the request")?;
    Ok(bytes)
}

/// Parses and carries out one request; every failure becomes a reply with `error` set. The
/// request's bytes are freed once parsed (a set near the size limit is held once, not twice).
pub fn handle(config_dir: &Path, input: Vec<u8>) -> Reply {
    let mut reply = report::new_reply();
    if let Err(e) = carry_out(config_dir, input, &mut reply) {
        Refusal::flag(&e, &mut reply);
        reply.error = Some(format!("{e:#}"));
        // The request may have written the word before it failed: the controller must not take
        // the host to hold the word it held before. And what the host runs now, so the
        // controller can tell a refusal (the pushed set is not current) from an activation that
        // failed (it is, and must go back).
        let store = Store::open();
        reply.health_hash = report::health_hash(&store);
        let _ = report::describe(&store, &mut reply, report::Detail::Hashes);
    }
    reply
}

/// The fields of an install request; a repair is the install of the set the host runs.
struct Install {
    set: HostSet,
    known: Vec<String>,
    force: bool,
    retry: bool,
    confirm_within: Option<u64>,
    health: Option<Vec<InstanceHealth>>,
    /// The set came without its catalog: it is the one of the set the host runs.
    same_catalog: bool,
}

/// Installs `request.set` over `old`, the set the host runs, with the controller's word on the
/// health of instances no responder probes.
fn install(config_dir: &Path, store: &Store, old: HostSet, request: Install, reply: &mut Reply) -> Result<()> {
    let Install { mut set, known, force, retry, confirm_within, health, same_catalog } = request;
    if same_catalog {
        with_catalog_of(&mut set, &old)?;
    }
    let set = &set;
    // A refused or held install changed nothing: the record of the last real one stays.
    let admitted = lifecycle::admit(store, old, set, &known, lifecycle::Overrides { force, retry }, reply)?;
    // The controller's word on instances no responder probes travels with every install it
    // sends, and is kept apart from the set (see docs/discovery.md).
    if let Some(health) = health {
        let path = store.health_path();
        pushed_health::write(&path, &health).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(admitted) = admitted {
        let result = lifecycle::install(config_dir, store, set, admitted, confirm_within, reply);
        if let Err(e) = &result {
            reply.error = Some(format!("{e:#}"));
        }
        // Saved whatever happened, for a controller that lost the connection.
        let _ = store.save_outcome(reply);
        result?;
    }
    Ok(())
}

/// Puts the catalog of `old`, the set the host runs, into `set`, which came without its own
/// (`same_catalog`): refused, changing nothing, unless the set is then whole (its hash holds),
/// so a host whose catalog is not the one the controller meant gets the catalog sent.
fn with_catalog_of(set: &mut HostSet, old: &HostSet) -> Result<()> {
    anyhow::ensure!(set.catalog.is_none(), "an install with `same_catalog` carries no catalog of its own");
    set.catalog.clone_from(&old.catalog);
    if old.catalog.is_none() || set.compute_hash() != set.hash {
        return Err(Refusal::new(
            Kind::NeedsWholeSet,
            format!(
                "the catalog of the set this host runs ({}) is not the one the controller meant: the set was \
                 refused, nothing was changed (the controller sends the catalog)",
                if old.catalog.is_some() { "another one" } else { "it has none" }
            ),
        )
        .into());
    }
    Ok(())
}

fn carry_out(config_dir: &Path, input: Vec<u8>, reply: &mut Reply) -> Result<()> {
    if let Ok(original) = std::env::var("SSH_ORIGINAL_COMMAND")
        && original.trim() != RECEIVE_COMMAND
    {
        anyhow::bail!("this key may only run `{RECEIVE_COMMAND}`, not {original:?}");
    }
    let request = request::parse(&input)?;
    drop(input);
    let _lock = lifecycle::lock_host(crate::fleet::protocol::RECEIVE_COMMAND)?;
    let store = Store::open();
    lifecycle::settle_reboot(config_dir, &store, reply)?;
    let detail = match request.body {
        Body::Status => report::Detail::Files,
        Body::Install { .. } | Body::Repair { .. } | Body::Rollback { .. } => report::Detail::States,
        Body::Confirm { .. } => report::Detail::Hashes,
    };
    match request.body {
        Body::Status => {
            reply.last_install = store.outcome().map(Box::new);
        }
        Body::Install { set, known, force, retry, confirm_within, health, same_catalog } => {
            let request = Install { set, known, force, retry, confirm_within, health, same_catalog };
            install(config_dir, &store, store.current()?, request, reply)?;
        }
        Body::Repair { hash, health } => {
            let current = store.current()?;
            if current.hash != hash {
                return Err(Refusal::new(
                    Kind::NeedsWholeSet,
                    format!(
                        "this host runs set {}, not set {}: the repair was not carried out (the controller sends \
                         the set)",
                        current.short_hash(),
                        protocol::short(&hash)
                    ),
                )
                .into());
            }
            // The set this controller pushed here, or it would not name its hash: known. It is
            // read once, as the set to install and as the set the host runs.
            let request = Install {
                set: current.clone(),
                known: Vec::new(),
                force: false,
                retry: false,
                confirm_within: None,
                health,
                same_catalog: false,
            };
            install(config_dir, &store, current, request, reply)?;
        }
        Body::Confirm { hash } => lifecycle::confirm(&store, &hash)?,
        Body::Rollback { hash: None } => {
            let generation = store.generation(CONFIRMED).context("this host has no confirmed set to go back to")?;
            lifecycle::revert(config_dir, &store, &generation, "rolled back at the controller's request", reply)?;
        }
        Body::Rollback { hash: Some(hash) } => lifecycle::roll_back_from(config_dir, &store, &hash, reply)?,
    }
    report::describe(&store, reply, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitset::OutputFile;
    use std::sync::Arc;

    fn set_with(unit_text: &str, catalog: Option<&str>) -> HostSet {
        let files = Arc::new(crate::fleet::protocol::files_of(&[OutputFile::Unit {
            name: "a-web.service".into(),
            text: unit_text.into(),
        }]));
        HostSet::new(files, catalog.map(Arc::from), "h1")
    }

    /// What the controller sends with `same_catalog`: the set, hashed with its catalog, without it.
    fn without_catalog(set: &HostSet) -> HostSet {
        HostSet { catalog: None, ..set.clone() }
    }

    #[test]
    fn a_set_sent_without_its_catalog_takes_the_one_the_host_has() {
        let old = set_with("[Service]\nExecStart=/bin/web 1\n", Some(r#"{"services":[1]}"#));
        let new = set_with("[Service]\nExecStart=/bin/web 2\n", Some(r#"{"services":[1]}"#));
        let mut sent = without_catalog(&new);
        with_catalog_of(&mut sent, &old).expect("the same catalog");
        assert_eq!(sent, new);
        assert!(sent.verify().is_ok());
    }

    #[test]
    fn a_host_whose_catalog_is_another_refuses_a_set_sent_without_one() {
        let new = set_with("[Service]\nExecStart=/bin/web 2\n", Some(r#"{"services":[1,2]}"#));
        for old in [
            set_with("[Service]\nExecStart=/bin/web 1\n", Some(r#"{"services":[1]}"#)),
            set_with("[Service]\nExecStart=/bin/web 1\n", None),
        ] {
            let mut sent = without_catalog(&new);
            let e = with_catalog_of(&mut sent, &old).expect_err("another catalog");
            assert!(e.to_string().contains("is not the one the controller meant"), "{e}");
            // The reply says so, and the controller sends the catalog.
            assert!(Refusal::kind_of(&e) == Some(Kind::NeedsWholeSet), "{e}");
        }
        // A set that carries a catalog of its own is not completed from the host's, and sending
        // it again with its catalog would not mend that request.
        let old = set_with("[Service]\nExecStart=/bin/web 1\n", Some(r#"{"services":[1,2]}"#));
        let e = with_catalog_of(&mut new.clone(), &old).expect_err("a catalog of its own");
        assert!(e.to_string().contains("carries no catalog of its own"), "{e}");
        assert!(Refusal::kind_of(&e).is_none(), "{e}");
    }
}
