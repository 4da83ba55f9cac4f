//! The wall clock, in the unit systemd and the fleet protocol use: µs since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in µs since the epoch (0 if the clock is before it).
pub fn now_usec() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
