//! Resource conversions every backend needs, guarded: NaN, infinite, zero,
//! negative and absurdly large requests are refused with a message naming the
//! field, never cast into a saturated or zero number.
//!
//! Each function takes the field's name as the backend spells it in its
//! messages (`resource-requirements.memory-gb`, `memory_gb`). An `Err` is an
//! invalid-request message.
//!
//! ```
//! use hpc_plugin_sdk::resources::{hours_to_seconds, memory_kubernetes, memory_slurm};
//!
//! assert_eq!(hours_to_seconds(1.1, "time_hours").unwrap(), 3960);
//! assert_eq!(memory_slurm(1.5, "memory_gb").unwrap(), "1536M");
//! assert_eq!(memory_kubernetes(16.0, "memory_gb").unwrap(), "16Gi");
//! assert!(hours_to_seconds(f64::NAN, "time_hours").is_err());
//! ```

/// A century, in hours: beyond any scheduler's limit, so a mistake.
pub const MAX_HOURS: f64 = 100.0 * 366.0 * 24.0;

/// 2^40 MiB, a petabyte per job: beyond that a request is a mistake, and
/// conversions to integers must not saturate.
pub const MAX_MIB: u64 = 1 << 40;

fn positive(value: f64, field: &str) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!(
            "`{field}` must be a positive number, not `{value}`"
        ))
    }
}

/// Hours to whole seconds, rounded up (a limit rounded down could kill a job
/// that would have finished), at least 1. Float noise below a microsecond
/// (1.1 h is 3960.0000000000005 s) is not rounded up.
pub fn hours_to_seconds(hours: f64, field: &str) -> Result<u64, String> {
    let hours = positive(hours, field)?;
    if hours > MAX_HOURS {
        return Err(format!("`{field}` is too large: `{hours}`"));
    }
    let exact = hours * 3600.0;
    let nearest = exact.round();
    let seconds = if (exact - nearest).abs() < 1e-6 {
        nearest
    } else {
        exact.ceil()
    };
    Ok((seconds as u64).max(1))
}

/// GB (1 GB = 1024 MiB, as schedulers count) to whole MiB, rounded up, at
/// least 1.
pub fn memory_mib(gb: f64, field: &str) -> Result<u64, String> {
    let gb = positive(gb, field)?;
    let mib = (gb * 1024.0).ceil();
    if mib > MAX_MIB as f64 {
        return Err(format!("`{field}` is too large: `{gb}`"));
    }
    Ok((mib as u64).max(1))
}

/// SLURM's `--mem`: whole GiB as `16G`, anything else in MiB as `1536M`.
pub fn memory_slurm(gb: f64, field: &str) -> Result<String, String> {
    let mib = memory_mib(gb, field)?;
    Ok(if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    })
}

/// A Kubernetes quantity: a whole number of GB as `16Gi`, anything else in
/// MiB as `512Mi`.
pub fn memory_kubernetes(gb: f64, field: &str) -> Result<String, String> {
    let mib = memory_mib(gb, field)?;
    Ok(if gb.fract() == 0.0 {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    })
}

/// Bytes to GB as the contract counts them (1 GB = 1024^3 bytes).
pub fn bytes_to_gb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0 * 1024.0)
}

/// CPU seconds to the contract's CPU hours.
pub fn seconds_to_hours(seconds: f64) -> f64 {
    seconds / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_up_to_seconds_without_float_noise() {
        assert_eq!(hours_to_seconds(1.5, "t").unwrap(), 5400);
        assert_eq!(hours_to_seconds(1.1, "t").unwrap(), 3960);
        assert_eq!(hours_to_seconds(0.0001, "t").unwrap(), 1);
        assert_eq!(hours_to_seconds(1.0 / 3600.0, "t").unwrap(), 1);
        assert_eq!(hours_to_seconds(MAX_HOURS, "t").unwrap(), 3_162_240_000);
    }

    #[test]
    fn bad_hours_are_refused_by_name() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let e = hours_to_seconds(bad, "time_hours").unwrap_err();
            assert!(e.starts_with("`time_hours` "), "{e}");
        }
    }

    #[test]
    fn memory_formats() {
        assert_eq!(memory_slurm(16.0, "m").unwrap(), "16G");
        assert_eq!(memory_slurm(1.5, "m").unwrap(), "1536M");
        assert_eq!(memory_slurm(1e-9, "m").unwrap(), "1M");
        assert_eq!(memory_kubernetes(16.0, "m").unwrap(), "16Gi");
        assert_eq!(memory_kubernetes(0.5, "m").unwrap(), "512Mi");
        assert_eq!(memory_kubernetes(1.0001, "m").unwrap(), "1025Mi");
        // The two formats differ where a fraction rounds up to a whole GiB.
        assert_eq!(memory_slurm(0.9995, "m").unwrap(), "1G");
        assert_eq!(memory_kubernetes(0.9995, "m").unwrap(), "1024Mi");
    }

    #[test]
    fn bad_memory_is_refused_by_name() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e30] {
            let e = memory_slurm(bad, "memory_gb").unwrap_err();
            assert!(e.starts_with("`memory_gb` "), "{e}");
            assert!(memory_kubernetes(bad, "memory_gb").is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_conversions() {
        assert_eq!(bytes_to_gb(3 << 30), 3.0);
        assert_eq!(seconds_to_hours(5400.0), 1.5);
    }
}
