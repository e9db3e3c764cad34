//! Migrations: the files on disk ([`source`], with [`split`] for statements), the history in the
//! database ([`HistoryRow`]), and the pure planner between them ([`plan`]).
//!
//! Nothing in this module talks to a database or spawns a process: the backends read and write
//! history rows, the orchestration (`crate::run`) executes the plan. `status` prints the very plan
//! that `init` executes.

pub mod apply;
pub mod plan;
pub mod source;
pub mod split;
pub mod version;

use std::path::PathBuf;
use std::time::Duration;

pub use version::Version;

/// The first 12 hex digits of a checksum, enough to tell two apart in a message.
pub fn short_checksum(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// One up migration as every start reads it: what identifies it and how it runs. Its statements
/// are read only when it is to run ([`source::read_statements`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub version: Version,
    /// The description part of the file name (`create_users` for `0001_create_users.sql`).
    pub name: String,
    /// The file name as found in the directory, used in every message about this migration.
    pub file_name: String,
    /// The path as the operator configured it (`migrations/0001_create_users.sql`).
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the applied text: line endings normalised to `\n`, the
    /// leading `-- startgate:` directive lines left out (for a dbmate file, the up section only).
    pub checksum: String,
    /// The directives and dbmate markers that change how the migration runs.
    pub options: MigrationOptions,
}

/// How one migration runs, from `-- startgate:` directives and dbmate's `transaction:false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationOptions {
    /// `-- startgate:no-transaction` or `-- migrate:up transaction:false`.
    pub no_transaction: bool,
    /// `-- startgate:lock-timeout`; overrides `STARTGATE_LOCK_TIMEOUT` for this file.
    pub lock_timeout: Option<Duration>,
    /// `-- startgate:statement-timeout`; overrides `STARTGATE_STATEMENT_TIMEOUT`.
    pub statement_timeout: Option<Duration>,
    /// `-- startgate:timeout`; overrides the wall-clock `STARTGATE_MIGRATION_TIMEOUT`.
    pub timeout: Option<Duration>,
}

/// One SQL statement of a migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text from its first token up to (not including) its terminating
    /// semicolon, exactly as in the file.
    pub sql: String,
    /// 1-based line in the file where the statement's first token is.
    pub line: u32,
    /// 1-based column (in characters) of that token on its line.
    pub column: u32,
    /// Byte offset in the file of the statement's first token, so that a server error
    /// position (a character offset within the statement) can be mapped back to the file.
    pub offset: usize,
}

/// One row of startgate's history table, as any backend reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub version: Version,
    pub name: String,
    pub checksum: String,
    pub state: RowState,
    /// Statements completed; meaningful for `running` and `failed` rows of non-transactional
    /// migrations, where the next run resumes at this (0-based) statement index.
    pub statements_done: u32,
    /// When the row became `applied`, RFC 3339 UTC.
    pub applied_at: Option<String>,
    pub execution_ms: Option<i64>,
    pub applied_by: Option<String>,
    /// The last failure's SQLSTATE (`55P03` lock timeout, `57014` statement timeout or cancel).
    pub error_sqlstate: Option<String>,
    /// The last failure's message, for `status`.
    pub error: Option<String>,
    /// Set by `startgate repair VERSION`: an operator has dealt with what the failure left, so
    /// the next run resumes at `statements_done` whatever the failure was.
    pub repaired: bool,
}

/// The `state` column of a history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowState {
    /// A non-transactional migration is in progress, or its runner was killed.
    Running,
    /// A non-transactional migration stopped part-way.
    Failed,
    Applied,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Running => "running",
            RowState::Failed => "failed",
            RowState::Applied => "applied",
        }
    }

    pub fn parse(text: &str) -> Option<RowState> {
        match text {
            "running" => Some(RowState::Running),
            "failed" => Some(RowState::Failed),
            "applied" => Some(RowState::Applied),
            _ => None,
        }
    }
}

/// For each statement of a no-transaction migration, the index of the first statement a
/// `ROLLBACK` at that point would undo: `Some(i)` while the file's own transaction (opened by
/// its `BEGIN` at `i`) is open, `None` in autocommit. Also returns the opener of a transaction
/// still open after the last statement. Pure: read from the statements' leading keywords.
///
/// A failure inside the file's own transaction aborts that transaction on the server, so the
/// runner must roll it back and count only the statements before the opener as done.
pub fn transaction_spans(statements: &[Statement]) -> (Vec<Option<usize>>, Option<usize>) {
    let mut open: Option<usize> = None;
    let mut spans = Vec::with_capacity(statements.len());
    for (i, statement) in statements.iter().enumerate() {
        let words = split::leading_keywords(&statement.sql, 3);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let chained =
            words.ends_with(&["and", "chain"]) || words.get(1..3) == Some(&["and", "chain"]);
        match words.as_slice() {
            ["begin", ..] | ["start", "transaction", ..] => {
                spans.push(Some(open.unwrap_or(i)));
                open.get_or_insert(i);
            }
            ["rollback", "to", ..] => spans.push(open),
            ["commit" | "end" | "rollback" | "abort", ..] | ["prepare", "transaction", ..] => {
                spans.push(open);
                // `COMMIT AND CHAIN` starts the next transaction at once.
                open = if chained { Some(i + 1) } else { None };
            }
            _ => spans.push(open),
        }
    }
    (spans, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(sqls: &[&str]) -> Vec<Statement> {
        sqls.iter()
            .enumerate()
            .map(|(i, sql)| Statement {
                sql: sql.to_string(),
                line: i as u32 + 1,
                column: 1,
                offset: 0,
            })
            .collect()
    }

    #[test]
    fn tracks_the_files_own_transactions() {
        for (sqls, spans, open) in [
            (
                &["CREATE TABLE a (id int)", "VACUUM a"][..],
                vec![None, None],
                None,
            ),
            (
                &[
                    "CREATE TABLE a (id int)",
                    "BEGIN",
                    "INSERT INTO a VALUES (1)",
                    "COMMIT",
                    "VACUUM a",
                ][..],
                vec![None, Some(1), Some(1), Some(1), None],
                None,
            ),
            (
                &["START TRANSACTION", "SAVEPOINT s", "ROLLBACK TO s", "END"][..],
                vec![Some(0), Some(0), Some(0), Some(0)],
                None,
            ),
            (
                &[
                    "BEGIN",
                    "INSERT INTO a VALUES (1)",
                    "COMMIT AND CHAIN",
                    "INSERT INTO a VALUES (2)",
                    "COMMIT",
                ][..],
                vec![Some(0), Some(0), Some(0), Some(3), Some(3)],
                None,
            ),
            (
                &["BEGIN", "CREATE TABLE q (id int)"][..],
                vec![Some(0), Some(0)],
                Some(0),
            ),
        ] {
            assert_eq!(
                transaction_spans(&statements(sqls)),
                (spans, open),
                "{sqls:?}"
            );
        }
    }
}
