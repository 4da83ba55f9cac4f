//! Exit statuses, documented in kapell(8). They belong to the library, not to the command line:
//! the supervisor's status is what systemd's `Restart=` acts on, and every command returns one.

/// Everything worked.
pub const OK: u8 = 0;
/// A stack (or the fleet file) is invalid; nothing was changed.
pub const INVALID: u8 = 1;
/// The request was wrong or refused: bad usage (clap's own status), an unknown stack, or an
/// apply that would act on something the operator did not ask for.
pub const USAGE: u8 = 2;
/// The operation failed (I/O, D-Bus, Docker, SSH, a unit that did not start).
pub const FAILED: u8 = 3;
/// `kapell import`: the stack is written (except with --strict), but something of the imported
/// project could not be carried over; each is reported on standard error.
pub const LOSSY: u8 = 4;
/// `kapell fleet`: a rollout failed (its batch was rolled back) or its desired state is held
/// back on hosts because it failed before; the table says which hosts and why. Change the
/// stacks, or `kapell fleet rollout retry`.
pub const HELD: u8 = 5;
/// `kapell fleet`: the canaries run the new desired state and the other hosts wait for
/// `kapell fleet promote`.
pub const WAITING: u8 = 6;
