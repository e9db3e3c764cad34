//! Migration versions: digits with optional dots (`0003`, `20250918153000`, `1.1`), compared
//! numerically part by part.
//!
//! `0003` and `3` are the same version, and so are `1.1` and `1.01`; trailing zero parts do
//! not count (`1` equals `1.0`, as in Flyway). Two files whose versions are equal under this
//! rule are a duplicate. A version keeps the text it was written with, for display and for
//! the history table, while comparisons use the normalised parts, so a history row `3` still
//! matches a file renamed to `0003_…`. Parts are kept as digit strings, never as integers, so
//! a version of any length compares correctly.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A migration version as written, with its normalised numeric parts.
#[derive(Debug, Clone)]
pub struct Version {
    /// The text as written in the file name or the history row.
    text: String,
    /// Each dot-separated part without leading zeros (`"0"` for zero), trailing zero parts
    /// removed.
    parts: Vec<String>,
}

impl Version {
    /// Parses digits with optional single dots between them. Returns `None` for anything else
    /// (empty, letters, leading, trailing or doubled dots).
    pub fn parse(text: &str) -> Option<Version> {
        if text.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let trimmed = part.trim_start_matches('0');
            parts.push(if trimmed.is_empty() { "0" } else { trimmed }.to_string());
        }
        while parts.len() > 1 && parts.last().is_some_and(|p| p == "0") {
            parts.pop();
        }
        Some(Version {
            text: text.to_string(),
            parts,
        })
    }

    /// The version exactly as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    // Both are digit strings without leading zeros: the longer one is larger.
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.parts.iter().zip(&other.parts) {
            let ord = compare_part(a, b);
            if ord != Ordering::Equal {
                return ord;
            }
        }
        self.parts.len().cmp(&other.parts.len())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn check(a: &str, b: &str, expected: Ordering) {
        assert_eq!(v(a).cmp(&v(b)), expected, "{a} vs {b}");
    }

    #[test]
    fn compares_numerically_part_by_part() {
        check("0003", "3", Ordering::Equal);
        check("2", "10", Ordering::Less);
        check("0009", "0010", Ordering::Less);
        check("1.1", "1.01", Ordering::Equal);
        check("1.2", "1.10", Ordering::Less);
        check("1", "1.0", Ordering::Equal);
        check("1", "1.0.1", Ordering::Less);
        check("2", "1.9", Ordering::Greater);
        check("20250918153000", "20250918153001", Ordering::Less);
        check(
            "123456789012345678901234567890",
            "99999999999999999999",
            Ordering::Greater,
        );
        check("0", "0000", Ordering::Equal);
    }

    #[test]
    fn keeps_the_written_text() {
        assert_eq!(v("0003").to_string(), "0003");
        assert_eq!(v("1.10").as_str(), "1.10");
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for text in ["", ".", "1.", ".1", "1..2", "a1", "1a", "1_2", "-1", " 1"] {
            assert!(Version::parse(text).is_none(), "{text:?} should be refused");
        }
    }
}
