//! The termination log (`STARTGATE_TERMINATION_LOG`): the summary of a failure, at most 4 KB,
//! where Kubernetes shows it in `kubectl describe pod`.
//!
//! Rules:
//! - written once, at the end, for every failure that is startgate's to report: exit 1–8, a
//!   hang (124), an app that exited on its own with a failure; not for a stop a signal asked for;
//! - secrets masked, cut at a character boundary to [`SUMMARY_LIMIT`] bytes;
//! - unset: `/dev/termination-log` only when it already exists and is writable (outside
//!   Kubernetes there is nothing to write, and that is no error); set: that file, created if
//!   needed, and a failure to write it is a warning; empty: never written.

use std::io::Write;
use std::path::Path;

use crate::config::{DEFAULT_TERMINATION_LOG, TerminationLog};
use crate::supervise::diagnose::{SUMMARY_LIMIT, cut};

/// Writes `summary` (masked, cut) to the termination log `setting` names.
pub fn write(setting: &TerminationLog, summary: &str) {
    let text = cut(crate::redact::mask(summary).into_owned(), SUMMARY_LIMIT);
    match setting {
        TerminationLog::Disabled => {}
        TerminationLog::Auto => {
            // Only a file that is there already: the kubelet creates it.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(DEFAULT_TERMINATION_LOG);
            if let Ok(mut file) = file {
                let _ = file.write_all(text.as_bytes());
            }
        }
        TerminationLog::Path(path) => {
            if let Err(e) = write_file(path, &text) {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot write the termination log {}: {e}",
                    path.display()
                );
            }
        }
    }
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// For a failure that happens before settings could be read: the termination log the
/// environment names, read as leniently as possible (unset: the default when writable).
pub fn from_env() -> TerminationLog {
    match std::env::var_os(crate::config::ENV_TERMINATION_LOG) {
        None => TerminationLog::Auto,
        Some(value) if value.is_empty() => TerminationLog::Disabled,
        Some(value) => TerminationLog::Path(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_cut_summary_and_replaces_the_last_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("termination-log");
        let setting = TerminationLog::Path(path.clone());
        write(&setting, &"x".repeat(10_000));
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(text.len() <= SUMMARY_LIMIT);
        assert!(text.ends_with('…'));
        write(&setting, "migration 0003 failed");
        assert_eq!(
            std::fs::read_to_string(&path).expect("written"),
            "migration 0003 failed"
        );
    }

    #[test]
    fn a_directory_that_does_not_exist_is_only_a_warning() {
        write(
            &TerminationLog::Path("/nonexistent-startgate/termination-log".into()),
            "x",
        );
        write(&TerminationLog::Disabled, "x");
    }
}
