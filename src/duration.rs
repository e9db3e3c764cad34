//! Human durations for settings and migration directives: `500ms`, `10s`, `5m`, `1h`,
//! and sums of them such as `1h30m`.
//!
//! Pure parsing and formatting, shared by the settings and the migration-file directives so
//! that `STARTGATE_LOCK_TIMEOUT=2s` and `-- startgate:lock-timeout 2s` accept exactly the same
//! text. A bare number is refused (is `30` seconds or milliseconds?), except `0`.

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse; the caller names the variable or the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("missing unit after {0} (use ms, s, m or h, e.g. 500ms, 10s, 5m, 1h)")]
    MissingUnit(String),
    #[error("unknown unit {0:?} (use ms, s, m or h)")]
    UnknownUnit(String),
    #[error("expected a number before {0:?} (e.g. 500ms, 10s, 5m, 1h)")]
    MissingNumber(String),
    #[error("duration is too large")]
    Overflow,
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `1h30m`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::MissingNumber(rest.to_string()));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
        let unit_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(number.to_string()));
        }
        let (unit, after) = after.split_at(unit_len);
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or(DurationError::Overflow)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or(DurationError::Overflow)?;
        rest = after;
    }
    Ok(total)
}

/// Formats a duration the way an operator would write it: `1h30m`, `10s`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    HumanDuration(d).to_string()
}

/// Display adapter for [`format_duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if millis >= size {
                write!(f, "{}{}", millis / size, unit)?;
                millis %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, DurationError>) {
        assert_eq!(
            parse_duration(input).map(|d| d.as_millis() as u64),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn parses_the_documented_forms() {
        check("500ms", Ok(500));
        check("10s", Ok(10_000));
        check("5m", Ok(300_000));
        check("1h", Ok(3_600_000));
        check("1h30m", Ok(5_400_000));
        check(" 2s ", Ok(2_000));
        check("0", Ok(0));
        check("0s", Ok(0));
    }

    #[test]
    fn refuses_what_is_ambiguous_or_wrong() {
        check("", Err(DurationError::Empty));
        check("30", Err(DurationError::MissingUnit("30".into())));
        check("10x", Err(DurationError::UnknownUnit("x".into())));
        check("5M", Err(DurationError::UnknownUnit("M".into())));
        check("s", Err(DurationError::MissingNumber("s".into())));
        check("-1s", Err(DurationError::MissingNumber("-1s".into())));
        check("1.5s", Err(DurationError::MissingUnit("1".into())));
        check("99999999999999999999h", Err(DurationError::Overflow));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "10s", "5m", "1h", "1h30m", "35m", "1m500ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
