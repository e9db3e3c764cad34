//! Secret masking for every text startgate repeats: error messages, driver errors, and later the
//! app's stderr tail, a hang command's output, a migrate command's output.
//!
//! The secrets (database passwords, in raw and percent-decoded form, and the status token) are
//! registered once, right after the settings are read and before anything is logged; from then
//! on [`mask`] replaces each of them with `***` wherever it appears. Database URLs are
//! additionally always displayed in their redacted form (`crate::dburl`), so masking is the
//! second line of defence, not the first.

use std::borrow::Cow;
use std::sync::OnceLock;

/// What [`mask`] puts in place of a secret.
pub const MASK: &str = "***";

static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

/// Registers the secrets to mask. Only the first call counts (settings are read once per
/// process). Empty strings and very short strings are ignored: masking every `a` in a log line
/// would hide more than it protects, and a one-character password is no secret anyway.
pub fn register(secrets: impl IntoIterator<Item = String>) {
    let mut list: Vec<String> = Vec::new();
    for secret in secrets.into_iter().filter(|s| s.len() >= 3) {
        // JSON log lines carry text escaped (`"` as `\"`, `\` as `\\`): mask that form too.
        if let Ok(quoted) = serde_json::to_string(&secret) {
            let escaped = quoted[1..quoted.len() - 1].to_string();
            if escaped != secret {
                list.push(escaped);
            }
        }
        list.push(secret);
    }
    // Longest first, so that a secret containing another is masked whole.
    list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    list.dedup();
    let _ = SECRETS.set(list);
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn mask(text: &str) -> Cow<'_, str> {
    mask_with(SECRETS.get().map(Vec::as_slice).unwrap_or_default(), text)
}

/// [`mask`] with an explicit list, for tests and for callers holding their own secrets.
pub fn mask_with<'a>(secrets: &[String], text: &'a str) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// `bytes` with every registered secret replaced by [`MASK`], whether or not they are UTF-8
/// (the app's stderr passes through as bytes).
pub fn mask_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    mask_bytes_with(SECRETS.get().map(Vec::as_slice).unwrap_or_default(), bytes)
}

/// [`mask_bytes`] with an explicit list.
pub fn mask_bytes_with<'a>(secrets: &[String], bytes: &'a [u8]) -> Cow<'a, [u8]> {
    let mut out = Cow::Borrowed(bytes);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let finder = memchr::memmem::Finder::new(secret.as_bytes());
        if finder.find(&out).is_none() {
            continue;
        }
        let mut masked = Vec::with_capacity(out.len());
        let mut rest: &[u8] = &out;
        while let Some(at) = finder.find(rest) {
            masked.extend_from_slice(&rest[..at]);
            masked.extend_from_slice(MASK.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        masked.extend_from_slice(rest);
        out = Cow::Owned(masked);
    }
    out
}

/// The length of the longest registered secret, in bytes (0 with none): a stream cut anywhere
/// must hold back one byte less than this to never split a secret between two writes.
pub fn longest_secret() -> usize {
    SECRETS
        .get()
        .and_then(|list| list.iter().map(String::len).max())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_bytes_that_are_not_utf8() {
        let secrets = vec!["hunter2".to_string()];
        assert_eq!(
            &*mask_bytes_with(&secrets, b"pw=hunter2 \xff and hunter2\n"),
            b"pw=*** \xff and ***\n"
        );
        assert!(matches!(
            mask_bytes_with(&secrets, b"nothing here"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let secrets = vec!["s3cr3t-longer".to_string(), "s3cr3t".to_string()];
        for (text, expected) in [
            ("no secret here", "no secret here"),
            ("password s3cr3t and s3cr3t", "password *** and ***"),
            ("s3cr3t-longer", "***"),
            ("", ""),
        ] {
            assert_eq!(mask_with(&secrets, text), expected);
        }
    }
}
