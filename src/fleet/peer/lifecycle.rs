//! The life of a received set on a peer, under the host lock: installed (pending while a confirm
//! window runs, else confirmed at once), confirmed, reverted (on the controller's request, when
//! the window closes unconfirmed, or after a reboot inside it). See docs/fleet-protocol.md.
//!
//! An install is `kapell apply` for a set that came from elsewhere ([`super::activate`]). Before
//! anything changes, the set is checked ([`super::set_check`]); then it becomes the current
//! generation ([`super::generations`]) and systemd is told. The `pending` record is what decides
//! whether a revert timer ([`super::revert_timer`]) still has work when it fires, so a timer that
//! could not be stopped reverts nothing that was confirmed or replaced.

use super::generations::{CONFIRMED, CURRENT, Pending, Store, boot_id, received_dir};
use super::refusal::{Kind, Refusal};
use super::{activate, report, revert_timer, set_check};
use crate::fleet::protocol::{HostSet, RECEIVE_COMMAND, Reply, short};
use crate::lock::HostLock;
use crate::unitset;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// How early a revert timer may fire and still close its window (systemd's clock against the
/// pending record's).
const WINDOW_SLACK_USEC: u64 = 1_000_000;

/// One writer per host: `kapell receive`, `kapell apply` and the revert timer take turns. `who`
/// names the command that waits, and the holder others wait for.
pub fn lock_host(who: &str) -> Result<HostLock> {
    HostLock::acquire(who, |holder| eprintln!("{who}: waiting for {holder}"))
}

/// Runs the set the generator emits again, as a repair of it would, without a controller: what
/// `kapell apply` asks once a local stack that kept some of its units out has gone, since
/// nothing else would start them before the next push.
pub fn run_emitted(config_dir: &Path) -> Reply {
    let mut reply = report::new_reply();
    let result = (|| {
        let _lock = lock_host("kapell apply")?;
        let store = Store::open();
        let set = super::generations::read_set(&store.emitted_dir())?;
        activate::run_set(config_dir, &set, &mut reply)
    })();
    if let Err(e) = result {
        reply.error = Some(format!("{e:#}"));
    }
    reply
}

/// What an install starts from, once [`admit`] let it through.
pub struct Admitted {
    /// The set the host ran before.
    old: HostSet,
}

/// What an install may override: `force`, whatever the host runs and a set it rolled back;
/// `retry`, only a set it rolled back.
#[derive(Debug, Clone, Copy)]
pub struct Overrides {
    pub force: bool,
    pub retry: bool,
}

/// Decides whether `set` may replace `old`, the set the host runs ([`Store::current`]),
/// changing nothing: `Err` refuses it (bad names, hashes or units, a set this controller did not
/// push running here), `Ok(None)` holds it (this host rolled that very set back before;
/// `reply.held` says so). Only an admitted install is a "real" one whose outcome is recorded for
/// a controller that lost the connection.
pub fn admit(
    store: &Store,
    old: HostSet,
    set: &HostSet,
    known: &[String],
    overrides: Overrides,
    reply: &mut Reply,
) -> Result<Option<Admitted>> {
    set.verify().map_err(anyhow::Error::msg).context("the set was refused; nothing was changed")?;
    let own: BTreeSet<&str> = old.units().collect();
    set_check::check_files(set, &own).context("the set was refused; nothing was changed")?;
    let rejected = store.rejected().into_iter().find(|(h, _)| *h == set.hash).map(|(_, why)| why);
    if let Some(held) = held_or_refused(&old, set, rejected.as_deref(), known, overrides)? {
        reply.held = Some(held);
        return Ok(None);
    }
    Ok(Some(Admitted { old }))
}

/// Whether `set` may replace `old`: `Err` refuses it (`old` is a set this controller did not
/// push, named by none of the `known` hashes), `Ok(Some(why))` holds it (this host rolled it
/// back before, `rejected` says why), `Ok(None)` admits it.
fn held_or_refused(
    old: &HostSet,
    set: &HostSet,
    rejected: Option<&str>,
    known: &[String],
    overrides: Overrides,
) -> Result<Option<String>> {
    if let Some(why) = rejected
        && !overrides.force
        && !overrides.retry
        && old.hash != set.hash
    {
        return Ok(Some(format!(
            "this host rolled set {} back ({why}); it is not installed again until it changes",
            set.short_hash()
        )));
    }
    if !old.files.is_empty() && old.hash != set.hash && !known.contains(&old.hash) && !overrides.force {
        return Err(Refusal::new(
            Kind::ForeignSet,
            format!(
                "this host runs set {}, which this controller did not push (edited by hand in {}, or \
                 another controller's); it was not overwritten (`kapell fleet apply --force` replaces it)",
                old.short_hash(),
                received_dir().display()
            ),
        )
        .into());
    }
    Ok(None)
}

/// Makes the admitted `set` current and makes systemd run it. With `confirm_within`, the set is
/// pending until the controller confirms it, and a timer reverts it otherwise.
pub fn install(
    config_dir: &Path,
    store: &Store,
    set: &HostSet,
    admitted: Admitted,
    confirm_within: Option<u64>,
    reply: &mut Reply,
) -> Result<()> {
    let Admitted { old } = admitted;
    // What ran before the first confirmed push counts as confirmed: it is what a revert restores.
    if store.generation(CONFIRMED).is_none()
        && let Some(generation) = store.current_generation()
    {
        store.set_link(CONFIRMED, &generation)?;
    }
    let diff = unitset::diff(&old.to_rendered(), &set.to_rendered());
    (reply.added, reply.updated, reply.removed) = (diff.added, diff.changed, diff.removed);
    let previous = store.current_generation();
    let window = confirm_within.map(Duration::from_secs);
    // The window opens before `current` moves: from the instant the new set could be booted
    // or run, it is pending and a timer of systemd's will revert it. A reboot during the
    // activation boots the confirmed set; a `kapell receive` killed, or an activation that
    // fails, half-way leaves a set that reverts on its own unless the controller confirms it.
    // The window's clock, started before its first arming below (staging counts too, so the
    // window is armed again a little sooner rather than later).
    let armed = Instant::now();
    let generation = if old.hash != set.hash {
        // What a rollback from it goes back to: the last set the controller confirmed here
        // (set just above when none was), not a pending one this push replaces.
        let staged = store.stage(set, store.generation(CONFIRMED).as_deref())?;
        if let Some(window) = window {
            open_window(store, &staged, set, window)?;
        }
        store.make_current(&staged)?;
        Some(staged)
    } else {
        None
    };
    reply.changed = generation.is_some();
    activate::run_set(config_dir, set, reply)?;
    match (generation, window) {
        // Armed again from now when the activation took more than a tenth of the window (an
        // image pull, a slow start): the controller keeps at least nine tenths of its window,
        // however long the activation took. A quick one keeps the timer it has: arming again
        // would cost systemd a second transient timer, and the stop of the first, on every push.
        (Some(generation), Some(window)) if armed.elapsed() > window / 10 => {
            open_window(store, &generation, set, window)?
        }
        (Some(_), Some(_)) => {}
        (Some(generation), None) => {
            store.set_link(CONFIRMED, &generation)?;
            settle_pending(store)?;
        }
        (None, _) => {}
    }
    store.prune(previous.as_deref())?;
    Ok(())
}

/// Makes `generation` (holding `set`) pending until `window` from now, with its revert timer,
/// and stops the timer of the window it replaces (an earlier arming, or another set's).
fn open_window(store: &Store, generation: &str, set: &HostSet, window: Duration) -> Result<()> {
    let replaced = store.pending();
    let window_usec = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    let pending = Pending {
        generation: generation.to_string(),
        hash: set.hash.clone(),
        boot_id: boot_id(),
        deadline_usec: crate::clock::now_usec().saturating_add(window_usec),
        deadline_boot_usec: crate::clock::boot_usec().saturating_add(window_usec),
    };
    // The timer first: if it cannot be armed, the record (and the timer) of the window this one
    // would replace stay as they were. A timer that fires before the record is written waits
    // for the host lock, held here, and then finds it.
    revert_timer::schedule(&pending)?;
    store.set_pending(Some(&pending))?;
    if let Some(replaced) = replaced.filter(|r| *r != pending) {
        revert_timer::cancel(&replaced)?;
    }
    Ok(())
}

/// The controller saw the set `hash` active and healthy: it stays, even across a reboot.
pub fn confirm(store: &Store, hash: &str) -> Result<()> {
    let current = store.current()?;
    anyhow::ensure!(
        current.hash == hash,
        "cannot confirm set {}: this host runs {} (it went back on its own, or another push replaced it)",
        short(hash),
        current.short_hash()
    );
    if let Some(generation) = store.current_generation() {
        store.set_link(CONFIRMED, &generation)?;
    }
    settle_pending(store)
}

/// No set waits for confirmation any more: the record goes first (a timer that still fires
/// finds nothing to do), then its timer.
fn settle_pending(store: &Store) -> Result<()> {
    match store.pending() {
        Some(pending) => {
            store.set_pending(None)?;
            revert_timer::cancel(&pending)
        }
        None => Ok(()),
    }
}

/// Makes `generation` current again and makes systemd run it; `why` is recorded as the reason.
pub fn revert(config_dir: &Path, store: &Store, generation: &str, why: &str, reply: &mut Reply) -> Result<()> {
    let set = store.set_of(Some(generation))?;
    let old = store.current()?;
    if old.hash != set.hash {
        store.reject(&old.hash, why)?;
        let diff = unitset::diff(&old.to_rendered(), &set.to_rendered());
        (reply.added, reply.updated, reply.removed) = (diff.added, diff.changed, diff.removed);
        store.set_link(CURRENT, generation)?;
        reply.changed = true;
    }
    // A timer that cannot be stopped does not stop the revert; it is reported after it.
    let settled = settle_pending(store);
    reply.rolled_back = Some(format!("{why}: back to set {}", set.short_hash()));
    let result = activate::run_set(config_dir, &set, reply).and(settled);
    if let Err(e) = &result {
        reply.error = Some(format!("{e:#}"));
    }
    let _ = store.save_outcome(reply);
    result
}

/// Goes back from the set `hash`, confirmed or not, to the set that was confirmed here when it
/// came ([`Store::generation_before`]), which becomes the confirmed one again (a host of an
/// earlier batch of a rollout that failed later: its confirmed set is the failed one). A host
/// that runs another set changes nothing; one that kept no set from before `hash` says so.
pub fn roll_back_from(config_dir: &Path, store: &Store, hash: &str, reply: &mut Reply) -> Result<()> {
    let Some(current) = store.current_generation() else { return Ok(()) };
    if store.current()?.hash != hash {
        return Ok(());
    }
    let before = store
        .generation_before(&current)
        .with_context(|| format!("this host kept no set from before set {} to go back to", short(hash)))?;
    let reverted =
        revert(config_dir, store, &before, "rolled back at the controller's request (the rollout failed later)", reply);
    // Confirmed again once it is current, also when its activation failed: left on the failed
    // set, `confirmed` would be where a later unconfirmed push goes back to.
    if store.current_generation().as_deref() == Some(before.as_str()) {
        store.set_link(CONFIRMED, &before)?;
    }
    reverted
}

/// The timer's side of a confirm window: reverts `generation` if it is still current and still
/// unconfirmed. Run by `kapell receive --revert-unconfirmed GENERATION`.
pub fn revert_unconfirmed(config_dir: &Path, generation: &str) -> Reply {
    let mut reply = report::new_reply();
    let result = (|| {
        let _lock = lock_host(RECEIVE_COMMAND)?;
        let store = Store::open();
        // A timer of an earlier arming of the window (see `install`) whose cancel did not
        // happen finds the window still open, and leaves it to the timer of the last arming.
        let still_pending = store.pending().is_some_and(|p| p.generation == generation && p.closed(WINDOW_SLACK_USEC))
            && store.current_generation().as_deref() == Some(generation);
        let Some(confirmed) = store.generation(CONFIRMED).filter(|_| still_pending) else {
            return Ok(()); // confirmed, or replaced by a later push: nothing to do
        };
        revert(config_dir, &store, &confirmed, "not confirmed by the controller in time", &mut reply)
    })();
    if let Err(e) = result {
        reply.error = Some(format!("{e:#}"));
    }
    reply
}

/// A reboot inside a confirm window booted the confirmed set (see [`Store::emitted_dir`]); make
/// `current` say so before anything else happens.
pub fn settle_reboot(config_dir: &Path, store: &Store, reply: &mut Reply) -> Result<()> {
    let Some(pending) = store.pending() else { return Ok(()) };
    if pending.boot_id == boot_id() {
        return Ok(());
    }
    match store.generation(CONFIRMED) {
        Some(confirmed) => {
            let mut outcome = report::new_reply();
            revert(
                config_dir,
                store,
                &confirmed,
                "rebooted before the controller confirmed the new set",
                &mut outcome,
            )?;
            reply.rolled_back = outcome.rolled_back;
            Ok(())
        }
        None => store.set_pending(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitset::OutputFile;

    fn set(description: &str) -> HostSet {
        HostSet::from_rendered(&[
            OutputFile::unit("a.target", "[Unit]\nX-Kapell-Stack=a\n"),
            OutputFile::unit("a-x.service", format!("[Unit]\nDescription={description}\nX-Kapell-Stack=a\n")),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
        ])
    }

    /// What `held_or_refused` says of `set` over `running`: "refused", "held" or "admitted".
    fn verdict(
        running: &HostSet,
        set: &HostSet,
        rolled_back: bool,
        known: &[String],
        force: bool,
        retry: bool,
    ) -> &'static str {
        let rejected = rolled_back.then_some("it failed here");
        match held_or_refused(running, set, rejected, known, Overrides { force, retry }) {
            // Its only refusal is of a set the controller did not push, which the reply flags.
            Err(e) if Refusal::kind_of(&e) == Some(Kind::ForeignSet) => "refused",
            Err(e) => panic!("refused for another reason: {e:#}"),
            Ok(Some(_)) => "held",
            Ok(None) => "admitted",
        }
    }

    /// `retry` installs a set this host rolled back, and nothing more: a set this controller did
    /// not push is overwritten only by `force`.
    #[test]
    fn a_retry_overrides_a_rollback_and_only_force_a_foreign_set() {
        let running = set("running");
        let (rolled_back, other) = (set("rolled back"), set("other"));
        let ours = std::slice::from_ref(&running.hash);
        assert_eq!(verdict(&running, &rolled_back, true, ours, false, false), "held");
        assert_eq!(verdict(&running, &rolled_back, true, ours, false, true), "admitted");
        assert_eq!(verdict(&running, &rolled_back, true, ours, true, false), "admitted");
        assert_eq!(verdict(&running, &other, false, ours, false, false), "admitted");
        // The set the host runs is not this controller's (edited by hand, another controller's).
        for (set, rolled_back) in [(&rolled_back, true), (&other, false)] {
            assert_eq!(verdict(&running, set, rolled_back, &[], false, true), "refused");
            assert_eq!(verdict(&running, set, rolled_back, &[], true, false), "admitted");
        }
        assert_eq!(verdict(&running, &other, false, &[], false, false), "refused");
        // The set the host runs already is no replacement.
        assert_eq!(verdict(&running, &running, true, &[], false, false), "admitted");
    }
}
