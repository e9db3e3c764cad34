//! A history row as every engine reads it: the columns in their order, the checks that turn
//! the values into a [`HistoryRow`] (a version that parses, a state startgate knows, a
//! statement count that fits), and the words for a column that cannot be read.
//!
//! The engines decode their typed columns (`int` and `boolean` on PostgreSQL, `INTEGER` on
//! SQLite) into a [`RawRow`]; what the values mean is decided here, once, so that a bad row
//! reads the same on every engine.

use super::BackendError;
use crate::migrate::{HistoryRow, RowState, Version};

/// The history table's columns, in the order `read_history` selects them.
pub const COLUMNS: [&str; 11] = [
    "version",
    "name",
    "checksum",
    "state",
    "statements_done",
    "applied_at",
    "execution_ms",
    "applied_by",
    "error_sqlstate",
    "error",
    "repaired",
];

/// One history row's values as decoded, before they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub version: String,
    pub name: String,
    pub checksum: String,
    pub state: String,
    pub statements_done: i64,
    pub applied_at: Option<String>,
    pub execution_ms: Option<i64>,
    pub applied_by: Option<String>,
    pub error_sqlstate: Option<String>,
    pub error: Option<String>,
    pub repaired: bool,
}

impl RawRow {
    /// The row, or what is wrong with it; `table` names the table in the error.
    pub fn check(self, table: &dyn std::fmt::Display) -> Result<HistoryRow, BackendError> {
        let bad = |problem: String| BackendError::BadHistory {
            table: table.to_string(),
            problem,
        };
        let text = &self.version;
        let version = Version::parse(text)
            .ok_or_else(|| bad(format!("version {text:?} is not digits with optional dots")))?;
        let state = RowState::parse(&self.state).ok_or_else(|| {
            bad(format!(
                "version {text} has state {:?} (expected running, failed or applied)",
                self.state
            ))
        })?;
        let statements_done = u32::try_from(self.statements_done).map_err(|_| {
            bad(format!(
                "version {text} has statements_done {}",
                self.statements_done
            ))
        })?;
        Ok(HistoryRow {
            version,
            name: self.name,
            checksum: self.checksum,
            state,
            statements_done,
            applied_at: self.applied_at,
            execution_ms: self.execution_ms,
            applied_by: self.applied_by,
            error_sqlstate: self.error_sqlstate,
            error: self.error,
            repaired: self.repaired,
        })
    }
}

/// What is wrong with column number `column` of a history row, in an operator's words;
/// `describe` is the engine's wording of a driver error.
pub fn column_problem(
    version: Option<&str>,
    column: usize,
    e: &sqlx::Error,
    describe: impl Fn(&sqlx::Error) -> String,
) -> String {
    let name = COLUMNS.get(column).copied().unwrap_or("?");
    let what = match e {
        sqlx::Error::ColumnDecode { source, .. }
            if source.to_string().contains("unexpected null") =>
        {
            "is NULL".to_string()
        }
        other => format!("cannot be read: {}", describe(other)),
    };
    match version {
        Some(v) => format!("version {v}: column {name} {what}"),
        None => format!("column {name} {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(version: &str, state: &str, statements_done: i64) -> RawRow {
        RawRow {
            version: version.to_string(),
            name: "x".to_string(),
            checksum: "c".to_string(),
            state: state.to_string(),
            statements_done,
            applied_at: None,
            execution_ms: None,
            applied_by: None,
            error_sqlstate: None,
            error: None,
            repaired: false,
        }
    }

    #[test]
    fn checks_version_state_and_count() {
        assert!(raw("0003", "applied", 0).check(&"t").is_ok());
        for (row, problem) in [
            (
                raw("v3", "applied", 0),
                "version \"v3\" is not digits with optional dots",
            ),
            (
                raw("3", "done", 0),
                "version 3 has state \"done\" (expected running, failed or applied)",
            ),
            (raw("3", "failed", -1), "version 3 has statements_done -1"),
        ] {
            let error = row.check(&"public.h").expect_err("bad row");
            assert_eq!(
                error.to_string(),
                format!("history table public.h has a bad row: {problem}")
            );
        }
    }
}
