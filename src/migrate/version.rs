//! Migration versions: digits with optional dots (`0003`, `20250918153000`, `1.1`), compared
//! numerically part by part.
//!
//! `0003` and `3` are the same version, and so are `1.1` and `1.01`; trailing zero parts do
//! not count (`1` equals `1.0`, as in Flyway). Two files whose versions are equal under this
//! rule are a duplicate. A version keeps the text it was written with, for display and for
//! the history table, while comparisons use the normalised parts, so a history row `3` still
//! matches a file renamed to `0003_…`. Parts are compared as digit strings, so a version of
//! any length compares correctly; two one-part versions that fit in 64 bits (nearly all) are
//! compared as integers, which orders them the same.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A migration version as written; comparisons use its normalised numeric parts.
#[derive(Debug, Clone)]
pub struct Version {
    /// The text as written in the file name or the history row.
    text: Box<str>,
    /// Where the significant text ends: trailing zero parts (`.0`, `.00`) are not compared.
    significant: usize,
    /// The value of a one-part version that fits in 64 bits (nearly every version): two of
    /// them compare as integers, without looking at the text.
    number: Option<u64>,
}

impl Version {
    /// Parses digits with optional single dots between them. Returns `None` for anything else
    /// (empty, letters, leading, trailing or doubled dots).
    pub fn parse(text: &str) -> Option<Version> {
        if text.is_empty() {
            return None;
        }
        let mut significant = 0;
        let mut offset = 0;
        for (index, part) in text.split('.').enumerate() {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // The first part always counts: `0` is a version.
            if index == 0 || part.bytes().any(|b| b != b'0') {
                significant = offset + part.len();
            }
            offset += part.len() + 1;
        }
        let number = text[..significant]
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text[..significant].parse::<u64>().ok())
            .flatten();
        Some(Version {
            text: text.into(),
            significant,
            number,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Each dot-separated part without leading zeros (`"0"` for zero), trailing zero parts
    /// left out: what comparisons look at. Nothing is allocated, so that sorting and matching
    /// a thousand versions on every start stays cheap.
    fn parts(&self) -> impl Iterator<Item = &str> {
        self.text[..self.significant].split('.').map(|part| {
            let trimmed = part.trim_start_matches('0');
            if trimmed.is_empty() { "0" } else { trimmed }
        })
    }
}

/// Compares two parts without leading zeros as numbers: the longer one is larger, and equal
/// lengths compare digit by digit.
fn compare_part(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        if let (Some(a), Some(b)) = (self.number, other.number) {
            return a.cmp(&b);
        }
        let mut mine = self.parts();
        let mut theirs = other.parts();
        loop {
            match (mine.next(), theirs.next()) {
                (Some(a), Some(b)) => match compare_part(a, b) {
                    Ordering::Equal => {}
                    ord => return ord,
                },
                (Some(_), None) => return Ordering::Greater,
                (None, Some(_)) => return Ordering::Less,
                (None, None) => return Ordering::Equal,
            }
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `Eq`: the normalised parts (the same for equal versions, whether or
        // not they fit in a `u64`), each ended by a separator.
        for part in self.parts() {
            state.write(part.as_bytes());
            state.write_u8(b'.');
        }
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
        check("0", "0.0", Ordering::Equal);
        check("1.0.2", "1.2", Ordering::Less);
        check("1.00.0", "1", Ordering::Equal);
        check("0.0.1", "0", Ordering::Greater);
        // Beyond 64 bits, and one part against several.
        check(
            "18446744073709551616",
            "18446744073709551615",
            Ordering::Greater,
        );
        check(
            "018446744073709551615",
            "18446744073709551615",
            Ordering::Equal,
        );
        check("18446744073709551616", "1.5", Ordering::Greater);
        check("7", "7.0.1", Ordering::Less);
    }

    #[test]
    fn equal_versions_hash_alike() {
        use std::collections::HashSet;
        let set: HashSet<Version> = ["0003", "1.1", "2.0", "0"].iter().map(|t| v(t)).collect();
        for (text, expected) in [
            ("3", true),
            ("1.01", true),
            ("2", true),
            ("0.0", true),
            ("1.10", false),
            ("30", false),
        ] {
            assert_eq!(set.contains(&v(text)), expected, "{text}");
        }
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
