//! Human-readable durations: `"100ms"`, `"2s"`, `"1.5s"`, `"5m"`, and heartbeat's bare seconds.
//!
//! Parsing is exact to the nanosecond (no floating point), so [`format_duration`] followed by
//! [`parse_duration`] gives back the same [`Duration`].

use std::time::Duration;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;

/// Units accepted after the number, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", NS_PER_US),
    ("µs", NS_PER_US),
    ("ms", NS_PER_MS),
    ("s", NS_PER_S),
    ("sec", NS_PER_S),
    ("secs", NS_PER_S),
    ("m", NS_PER_M),
    ("min", NS_PER_M),
    ("h", NS_PER_H),
];

/// Units used by [`format_duration`], largest first.
const FORMAT_UNITS: &[(&str, u128)] = &[
    ("h", NS_PER_H),
    ("m", NS_PER_M),
    ("s", NS_PER_S),
    ("ms", NS_PER_MS),
    ("us", NS_PER_US),
    ("ns", 1),
];

/// What to do with a number written without a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNumber {
    /// Reject it (the TOML schema: a unit makes the file self-explaining). `0` is still accepted.
    Reject,
    /// Read it as seconds (heartbeat's ha.cf: `deadtime 30`).
    Seconds,
}

/// Parses a duration such as `"100ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"` (units: ns, us, ms, s,
/// m, h). A space between number and unit is allowed. The error text says how to write it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_with(text, BareNumber::Reject)
}

/// Parses a heartbeat ha.cf time: bare numbers are seconds (`30`, `0.5`), or a unit is given
/// (`500ms`).
pub fn parse_heartbeat_time(text: &str) -> Result<Duration, String> {
    parse_duration_with(text, BareNumber::Seconds)
}

/// Parses a duration, treating a number without unit as `bare` says.
pub fn parse_duration_with(text: &str, bare: BareNumber) -> Result<Duration, String> {
    let t = text.trim();
    let hint = "write a number followed by a unit (ns, us, ms, s, m, h), e.g. \"2s\" or \"100ms\"";
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start());
    if number.is_empty() {
        return Err(format!("invalid duration `{text}`: no number; {hint}"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(format!(
            "invalid duration `{text}`: malformed number; {hint}"
        ));
    }
    let unit_ns = if unit.is_empty() {
        match bare {
            BareNumber::Seconds => NS_PER_S,
            BareNumber::Reject if number.bytes().all(|b| b == b'0' || b == b'.') => NS_PER_S,
            BareNumber::Reject => {
                return Err(format!("invalid duration `{text}`: missing unit; {hint}"));
            }
        }
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, ns)) => *ns,
            None => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}`; {hint}"
                ));
            }
        }
    };
    let too_big = || format!("invalid duration `{text}`: too large");
    // Exact fixed-point: (int * 10^f + frac) * unit / 10^f, truncated to whole nanoseconds.
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>().map_err(|_| too_big())
    };
    if frac_part.len() > 30 {
        return Err(format!(
            "invalid duration `{text}`: too many decimals; {hint}"
        ));
    }
    let scale = 10u128.pow(frac_part.len() as u32);
    let scaled = digits(int_part)?
        .checked_mul(scale)
        .and_then(|v| v.checked_add(digits(frac_part).ok()?))
        .ok_or_else(too_big)?;
    let nanos = scaled.checked_mul(unit_ns).ok_or_else(too_big)? / scale;
    let secs = u64::try_from(nanos / NS_PER_S).map_err(|_| too_big())?;
    // The remainder is below 10^9 and therefore fits a u32.
    let sub = (nanos % NS_PER_S) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration in the largest unit that represents it exactly (`"2s"`, `"150ms"`,
/// `"90s"` stays `"90s"`; `"2m"`), so that [`parse_duration`] reads it back unchanged.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (name, ns) in FORMAT_UNITS {
        if nanos.is_multiple_of(*ns) {
            return format!("{}{name}", nanos / ns);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_fractions() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 3 m "), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_heartbeat_time("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_heartbeat_time("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_heartbeat_time("500ms"),
            Ok(Duration::from_millis(500))
        );
    }

    #[test]
    fn rejects_nonsense() {
        let e = parse_duration("10 parsecs").unwrap_err();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999999999999999999999999h").is_err());
    }

    #[test]
    fn formats_in_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::new(1, 1)), "1000000001ns");
    }
}
