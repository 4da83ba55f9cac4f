//! kapell's own log: the journal, with structured fields, when systemd runs kapell; stderr otherwise.
//!
//! Under systemd (stderr is the stream named by `$JOURNAL_STREAM`) records go to journald natively,
//! so they carry fields: `PRIORITY`, the extra fields given to [`init`] (e.g. `KAPELL_UNIT`), and
//! any key-value pairs of the record (`log::info!(message_id = id::CONTAINER_STARTED; "…")` becomes
//! `MESSAGE_ID=…`). Everywhere else a record is one line on stderr, prefixed by its level when it is
//! a warning or an error. The level is `info` unless `KAPELL_LOG` says `error`, `warn`, `debug` or
//! `trace`.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write as _;

/// Stable `MESSAGE_ID`s of kapell's state changes (`journalctl MESSAGE_ID=…` finds them all).
pub mod id {
    /// A container service's container started.
    pub const CONTAINER_STARTED: &str = "7a42d67a317c414196fef2fc9504cdad";
    /// A container service is ready (`READY=1`): running, or healthy when it has a health check.
    pub const CONTAINER_READY: &str = "aceec64f435b4ebda5cfdfbf6023632e";
    /// A container's health check state changed (`KAPELL_HEALTH=` says to what).
    pub const CONTAINER_HEALTH: &str = "aeea7cc893d74cc990d6b1d535a5ef2a";
    /// A container exited on its own (`KAPELL_EXIT_STATUS=` is its exit code).
    pub const CONTAINER_EXITED: &str = "b837a0bd51e2433daac6af27ced4c8aa";
    /// A container was stopped and removed because its service was stopped.
    pub const CONTAINER_STOPPED: &str = "745210dc7dbb441bb6d988d6769ae161";
    /// A container was stopped because it turned unhealthy (systemd restarts the service).
    pub const CONTAINER_UNHEALTHY_RESTART: &str = "bb66848a5d384d008dec2425e9b3e5e2";
    /// The supervisor could not do its job (Docker down, image missing, bad unit); the service fails.
    pub const SUPERVISOR_FAILED: &str = "3e65368609834fd192df6fa32ec157c1";
    /// An image was pulled.
    pub const IMAGE_PULLED: &str = "049cb675768f4f0c9e467d4221a7bc57";
    /// Federation: a host was changed: a new set, or drift repaired (the message says what).
    pub const FLEET_HOST_CONVERGED: &str = "5b0f3a2e1c9d4f7a8e6b2d4c1a3f5e70";
    /// Federation: a host could not be reached (`KAPELL_HOST=`); retried with backoff.
    pub const FLEET_HOST_UNREACHABLE: &str = "c4d1e8a7b2f34a6d9e0c5b7a3f1d2e81";
    /// Federation: a host that was unreachable answers again.
    pub const FLEET_HOST_BACK: &str = "2e7c9b4a6d1f4e3a8b5c0d9e7f6a1b92";
    /// Federation: a host refused or failed its set.
    pub const FLEET_HOST_FAILED: &str = "8f3a1d6c2b9e4d7f0a5c3e1b8d6f4a03";
    /// Federation: a set was not pushed to a host because it was rolled back there before.
    pub const FLEET_HOST_HELD: &str = "1a9e5c3f7b2d4c8e6f0a4d2b9c7e5f14";
    /// Federation: a rollout batch failed and its hosts were rolled back.
    pub const FLEET_ROLLED_BACK: &str = "6d2f8a4c1e7b4f9a3c5e0b8d2a6f1c25";
    /// Federation: fleet.toml or a stack is invalid; the last good configuration stays in use.
    pub const FLEET_CONFIG_INVALID: &str = "9c4e2a7f5d1b4e8c6a3f0d5b7e2c9a36";
    /// Federation: the configuration was reloaded (SIGHUP).
    pub const FLEET_RELOADED: &str = "3f8d6b1a9c4e4a2f7e0b5d3c8a1f6e47";
    /// Federation: a pass finished (the first, a periodic one, after a change or a reload).
    pub const FLEET_PASS: &str = "0d6a4f2c8e1b4a7d9c3f5e2b6a8d1c47";
    /// Federation: a pass failed as a whole (state directory, lock).
    pub const FLEET_PASS_FAILED: &str = "e1b7c5a3d9f24b6e8c0a7f3d5b1e9c58";
    /// A service with a health check passed its first probe and counts as started.
    pub const SERVICE_READY: &str = "5d8c1f3e9a7b4e26b0c4d2a8f6e1b937";
    /// A native service's health changed (`KAPELL_HEALTH=` says to what; the message names the probe).
    pub const SERVICE_HEALTH: &str = "a3e7c9d1b5f24a8e9c0d6b4f2e8a1c59";
    /// A native service turned unhealthy and its main process was killed so systemd restarts it.
    pub const SERVICE_UNHEALTHY_RESTART: &str = "e4b2d8f6a1c94e7b8d3f5a0c9e6b2d71";
    /// A stack network (`kapell-<stack>`) was created.
    pub const NETWORK_CREATED: &str = "0c0a784f8a424a36b12935c5bac68abd";
}

/// Installs the logger once; later calls do nothing. `fields` are added to every journal record
/// (names in journal style: upper case, digits, `_`).
pub fn init(fields: &[(&str, &str)]) {
    let level = level_from_env();
    let installed = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => journal.with_extra_fields(fields.iter().copied()).install().is_ok(),
            // The journal socket is missing (journald down): stderr still reaches the journal stream.
            Err(_) => log::set_boxed_logger(Box::new(Stderr)).is_ok(),
        }
    } else {
        log::set_boxed_logger(Box::new(Stderr)).is_ok()
    };
    if installed {
        log::set_max_level(level);
    }
}

fn level_from_env() -> LevelFilter {
    match std::env::var("KAPELL_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    }
}

/// One line per record on stderr; key-value pairs are for the journal and left out here.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        // A log line that cannot be written has nowhere else to go.
        let _ = writeln!(std::io::stderr().lock(), "{prefix}{}", record.args());
    }

    fn flush(&self) {}
}
