//! The clocks, in the unit systemd and the fleet protocol use: µs. The wall clock (since the
//! epoch) for what is shown and sent; the boot clock for a deadline within one boot, which a
//! step of the wall clock (NTP at boot) does not move.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in µs since the epoch (0 if the clock is before it).
pub fn now_usec() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Now on `CLOCK_BOOTTIME`, in µs since this boot (0 if it cannot be read): steady, and counting
/// time suspended, so a deadline on it is never reached later than a systemd timer's.
pub fn boot_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map_or(0, |t| (t.tv_sec() as u64).saturating_mul(1_000_000).saturating_add(t.tv_nsec() as u64 / 1_000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_boot_clock_runs() {
        let (a, b) = (super::boot_usec(), super::boot_usec());
        assert!(a > 0 && b >= a);
    }
}
