//! Numbers compose_spec reads more narrowly than Compose, widened before it types them.
//!
//! Fractional sizes (`mem_limit: 1.5G`): Compose reads sizes as Docker does (go-units'
//! `RAMInBytes`: a decimal number, then `b`, `k`, `m`, `g`, `t` or `p`, powers of 1024, an
//! optional `b` after the unit), but compose_spec takes whole numbers only. So a fractional size
//! is turned into its number of bytes (rounded down, as Docker does) before compose_spec types it.

use serde_yaml::Value;

/// The keys of a service that hold a memory size, as paths below the service.
const SIZE_KEYS: &[&[&str]] =
    &[&["mem_limit"], &["deploy", "resources", "limits", "memory"], &["deploy", "resources", "reservations", "memory"]];

/// `1.5G` → 1610612736; None for text that is not a fractional size (compose_spec reads whole
/// sizes itself and reports what is wrong with the others).
pub fn fractional_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    if !number.contains('.') || number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
        return None;
    }
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').filter(|u| !u.is_empty()).unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let bytes = (value * 2f64.powi(shift)).floor();
    // Above 2^63 a size means nothing; compose_spec then reports the text as it is (the cast
    // below is exact for what passes: finite, 0 ≤ bytes < 2^63).
    (bytes.is_finite() && bytes < 9.2e18).then_some(bytes as u64)
}

/// CPU counts: Compose takes `cpus: 2`, compose_spec only `2.0`.
const CPU_KEYS: &[&[&str]] =
    &[&["cpus"], &["deploy", "resources", "limits", "cpus"], &["deploy", "resources", "reservations", "cpus"]];

/// Rewrites every fractional size of every service as its number of bytes, and every whole CPU
/// count as a float.
pub fn widen(tree: &mut Value) {
    let Some(services) = tree.get_mut("services").and_then(Value::as_mapping_mut) else { return };
    for (_, service) in services.iter_mut() {
        for path in SIZE_KEYS {
            let mut value = Some(&mut *service);
            for key in *path {
                value = value.and_then(|v| v.get_mut(*key));
            }
            if let Some(value) = value
                && let Some(bytes) = value.as_str().and_then(fractional_bytes)
            {
                *value = Value::from(bytes);
            }
        }
        for path in CPU_KEYS {
            let mut value = Some(&mut *service);
            for key in *path {
                value = value.and_then(|v| v.get_mut(*key));
            }
            if let Some(value) = value
                && let Some(n) = value.as_i64()
            {
                let float = n as f64; // exact: a CPU count is far below 2^53
                *value = Value::from(float);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fractional_bytes;

    #[test]
    fn fractional_sizes_are_bytes() {
        assert_eq!(fractional_bytes("1.5G"), Some(1_610_612_736));
        assert_eq!(fractional_bytes("0.5m"), Some(524_288));
        assert_eq!(fractional_bytes("1.5gb"), Some(1_610_612_736));
        assert_eq!(fractional_bytes("2.25 KiB"), Some(2304));
        assert_eq!(fractional_bytes("1.5"), Some(1));
        for whole_or_bad in ["512M", "1G", "1.5X", ".5G", "1.G", "1.2.3G", "x", "1e9.5"] {
            assert_eq!(fractional_bytes(whole_or_bad), None, "{whole_or_bad}");
        }
    }
}
