//! The current time, as every plugin needs it (submit times, wall times).
//!
//! In a component `SystemTime` is `wasi:clocks/wall-clock`; natively it is
//! the machine's clock. A clock before 1970 reads as 0 rather than failing:
//! a wrong timestamp is better than a lost job.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds (as [`crate::host::Host::now_millis`] gives them) to seconds.
pub fn millis_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_after_2020_and_converts_to_seconds() {
        let ms = now_millis();
        assert!(ms > 1_577_836_800_000, "{ms}");
        assert_eq!(millis_to_seconds(1_500), 1.5);
    }
}
