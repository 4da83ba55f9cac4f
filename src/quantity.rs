//! Durations and sizes in systemd's syntax (`500ms`, `1min 30s`; `512M`, `1G`).

use std::fmt;

/// A time span, kept in microseconds as systemd does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

const USEC_UNITS: &[(&[&str], u64)] = &[
    (&["us", "usec", "µs", "μs"], 1),
    (&["ms", "msec"], 1_000),
    (&["s", "sec", "second", "seconds"], 1_000_000),
    (&["m", "min", "minute", "minutes"], 60_000_000),
    (&["h", "hr", "hour", "hours"], 3_600_000_000),
    (&["d", "day", "days"], 86_400_000_000),
    (&["w", "week", "weeks"], 604_800_000_000),
    (&["M", "month", "months"], 2_629_800_000_000),
    (&["y", "year", "years"], 31_557_600_000_000),
];

/// The longest duration kapell takes. systemd reads spans up to about 584,000 years, but one
/// near that limit overflows when kapell adds its margins (a container's stop timeout), and
/// none that long means anything: such a number is a typo.
pub const MAX: Duration = Duration(100 * 31_557_600_000_000);

impl Duration {
    pub fn from_secs(s: u64) -> Self {
        Duration(s * 1_000_000)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0)
    }

    /// Parses systemd's time-span syntax: numbers with units, summed (`1min 30s`, `1.5s`); a bare
    /// number is seconds.
    pub fn parse(input: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {input:?} (use systemd's syntax, e.g. \"500ms\", \"5s\", \"2min\")");
        let s = input.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let too_long = || format!("the duration {input:?} is longer than 100 years");
        if let Ok(secs) = s.parse::<u64>() {
            return secs.checked_mul(1_000_000).map(Duration).filter(|d| *d <= MAX).ok_or_else(too_long);
        }
        let mut total: f64 = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            rest = rest.trim_start();
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = rest[num_len..].trim_start();
            let unit_len =
                rest.find(|c: char| c.is_ascii_digit() || c.is_whitespace() || c == '.').unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let factor = if unit.is_empty() {
                1_000_000
            } else {
                USEC_UNITS.iter().find(|(names, _)| names.contains(&unit)).map(|(_, f)| *f).ok_or_else(bad)?
            };
            total += number * factor as f64;
        }
        if !total.is_finite() {
            return Err(bad());
        }
        if total > MAX.0 as f64 {
            return Err(too_long());
        }
        Ok(Duration(total.round() as u64))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form systemd reads back (`2s`, `500ms`, `1min 30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us == 0 {
            return f.write_str("0");
        }
        if !us.is_multiple_of(1_000_000) {
            return if us.is_multiple_of(1_000) { write!(f, "{}ms", us / 1_000) } else { write!(f, "{us}us") };
        }
        let secs = us / 1_000_000;
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        // Written piece by piece, without `write!`'s parsing of a template: rendering formats a
        // few durations per unit.
        let mut separator = "";
        for (n, unit) in [(h, "h"), (m, "min"), (s, "s")] {
            if n > 0 {
                f.write_str(separator)?;
                fmt::Display::fmt(&n, f)?;
                f.write_str(unit)?;
                separator = " ";
            }
        }
        Ok(())
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// Bytes, or a number with one of the base-1024 suffixes `K`, `M`, `G`, `T`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let bad = || format!("invalid size {input:?} (use bytes or a K, M, G or T suffix, e.g. \"512M\", \"1G\")");
        let s = input.trim();
        let (digits, shift) = match s.char_indices().last() {
            Some((i, 'K')) => (&s[..i], 10),
            Some((i, 'M')) => (&s[..i], 20),
            Some((i, 'G')) => (&s[..i], 30),
            Some((i, 'T')) => (&s[..i], 40),
            _ => (s, 0),
        };
        let number: f64 = if digits.chars().all(|c| c.is_ascii_digit() || c == '.') && !digits.is_empty() {
            digits.parse().map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        let bytes = number * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Size(bytes.round() as u64))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    /// The largest exact suffix form (`1G`, `1536M`, `1000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{suffix}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_systemd_syntax() {
        assert_eq!(Duration::parse("500ms"), Ok(Duration(500_000)));
        assert_eq!(Duration::parse("5"), Ok(Duration::from_secs(5)));
        assert_eq!(Duration::parse("1min 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(Duration::parse("1min30s"), Ok(Duration::from_secs(90)));
        assert_eq!(Duration::parse("1.5s"), Ok(Duration(1_500_000)));
        assert!(Duration::parse("5 parsecs").is_err());
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("-1s").is_err());
    }

    #[test]
    fn durations_print_back_exactly() {
        for s in ["500ms", "2s", "1min 30s", "2h", "1h 1min 1s", "250us"] {
            let d = Duration::parse(s).expect(s);
            assert_eq!(d.to_string(), s);
            assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("1G"), Ok(Size(1 << 30)));
        assert_eq!(Size::parse("512M").map(|s| s.to_string()), Ok("512M".into()));
        assert_eq!(Size::parse("1.5G").map(|s| s.to_string()), Ok("1536M".into()));
        assert!(Size::parse("1GB").is_err());
        assert!(Size::parse("0").is_err());
        assert!(Size::parse("lots").is_err());
    }
}
