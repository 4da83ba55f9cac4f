//! sd_notify(3) for the supervisor: readiness, `STATUS=` lines, start-timeout extension, stopping.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing, so the same code runs by hand
//! and in tests. A failed notification is logged, never fatal: the container matters more.
//! `STATUS=` texts come from [`Status`] (`crate::status::SupervisorStatus`), the vocabulary
//! `kapell status` parses back, so both sides stay in step.

use crate::status::SupervisorStatus as Status;
use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// `STATUS=<status>`.
pub fn status(status: &Status) {
    send(&[NotifyState::Status(&status.to_string())]);
}

/// `READY=1` together with `STATUS=<status>`.
pub fn ready(status: &Status) {
    send(&[NotifyState::Ready, NotifyState::Status(&status.to_string())]);
}

/// `STOPPING=1` and `STATUS=stopping`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status(&Status::Stopping.to_string())]);
}

/// `EXTEND_TIMEOUT_USEC=`: the start may take `by` longer from now (systemd never shortens it).
pub fn extend_timeout(by: std::time::Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}
