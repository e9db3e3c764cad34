//! What the PostgreSQL backend does for a migrate command (DESIGN.md "Existing migration
//! tools"): the `PGOPTIONS` that give its libpq sessions the migration timeouts, finding and
//! terminating its server sessions (by application name, or by client port for drivers that
//! ignore `PGAPPNAME`), the Alembic version table, and the table of the command's successful
//! runs (`<history table>_commands`) that `STARTGATE_MIGRATE_FINGERPRINT` compares with.
//!
//! Every query is limited to the current database and never touches startgate's own sessions.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{
    Postgres, describe, millis, query_error, quote_ident, quote_literal, sqlstate, sqlstate_of,
};
use crate::backend::{
    BackendError, CommandLimits, CommandRun, CommandSession, CommandSessions, TableName,
};
use crate::config::HistoryTable;
use crate::redact;

/// How much of a session's query is shown.
const QUERY_CHARS: usize = 100;

/// The columns of a [`CommandSession`], in its field order. The query is read longer than it
/// is shown, so that a password it holds is masked before the text is cut (a cut password
/// would no longer match the mask).
const SESSION_COLUMNS: &str = "pid, coalesce(application_name, ''), coalesce(state, ''), \
     CASE WHEN state = 'active' THEN (extract(epoch FROM clock_timestamp() - query_start) * 1000)::bigint END, \
     left(coalesce(query, ''), 1000)";

/// The command table beside the history table: `<schema>.<table>_commands`.
pub(super) fn commands_table(history: &HistoryTable) -> HistoryTable {
    HistoryTable {
        schema: history.schema.clone(),
        table: format!("{}_commands", history.table),
    }
}

fn quoted(table: &HistoryTable) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    )
}

/// `PGOPTIONS` for a migrate command on a server of `version_num`: the migration timeouts,
/// and the keepalives and dead-client check startgate's own applying session uses, so that a
/// statement of a command that died with its pod does not run on for hours.
pub(super) fn pgoptions(limits: &CommandLimits, version_num: i32) -> String {
    let mut options = vec![
        format!("-c lock_timeout={}", millis(limits.lock_timeout)),
        format!("-c statement_timeout={}", millis(limits.statement_timeout)),
        "-c tcp_keepalives_idle=10".to_string(),
        "-c tcp_keepalives_interval=5".to_string(),
        "-c tcp_keepalives_count=3".to_string(),
    ];
    if version_num >= 140_000 {
        options.push("-c client_connection_check_interval=5000".to_string());
    }
    options.join(" ")
}

/// The query of a command's sessions (their [`SESSION_COLUMNS`]).
fn sessions_sql(which: &CommandSessions<'_>) -> String {
    format!(
        "SELECT {SESSION_COLUMNS} FROM pg_stat_activity WHERE {} ORDER BY pid",
        sessions_filter(which)
    )
}

/// The `WHERE` clause for a command's sessions.
fn sessions_filter(which: &CommandSessions<'_>) -> String {
    let ports = if which.client_ports.is_empty() {
        "false".to_string()
    } else {
        let list: Vec<String> = which
            .client_ports
            .iter()
            .map(|(address, port)| {
                format!(
                    "(client_addr = {}::inet AND client_port = {port})",
                    quote_literal(&address.to_string())
                )
            })
            .collect();
        list.join(" OR ")
    };
    // A second of margin for the clocks of startgate's host and the server's.
    let within = millis(which.started_within.saturating_add(Duration::from_secs(1)));
    format!(
        "datname = current_database() AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend' \
         AND backend_start >= clock_timestamp() - interval '{within} milliseconds' \
         AND (application_name = {} OR {ports})",
        quote_literal(which.application_name)
    )
}

fn decode_session(row: &PgRow) -> Result<CommandSession, sqlx::Error> {
    let query: String = row.try_get(4)?;
    let query: String = redact::mask(&query).chars().take(QUERY_CHARS).collect();
    Ok(CommandSession {
        pid: i64::from(row.try_get::<i32, _>(0)?),
        application_name: row.try_get(1)?,
        state: row.try_get(2)?,
        running_ms: row.try_get(3)?,
        query: crate::backend::one_line(&query),
    })
}

impl Postgres {
    pub(super) async fn alembic_versions(
        &mut self,
        table: &str,
    ) -> Result<Option<Vec<String>>, BackendError> {
        let sql = format!(
            "BEGIN; {}SELECT version_num FROM {}; COMMIT",
            self.local_lock_timeout(),
            quote_ident(table)
        );
        match sqlx::raw_sql(&sql).fetch_all(&mut self.conn).await {
            Ok(rows) => rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|e| query_error(&format!("reading Alembic's {table} table"), &e)),
            Err(e) => {
                self.rollback_quietly().await;
                if sqlstate_of(&e).as_deref() == Some(sqlstate::UNDEFINED_TABLE) {
                    return Ok(None);
                }
                Err(BackendError::Query {
                    what: format!("reading Alembic's {table} table"),
                    message: describe(&e),
                })
            }
        }
    }

    async fn sessions(
        &mut self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<CommandSession>, BackendError> {
        let rows = sqlx::raw_sql(sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        rows.iter()
            .map(decode_session)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| query_error(what, &e))
    }

    /// Finds sessions with `sql` (a query of [`SESSION_COLUMNS`]), then terminates them one
    /// by one: a session startgate's role may not signal is named in the log and skipped, not
    /// allowed to stop the others from being ended. One call per pid also keeps the terminate
    /// out of any `WHERE` clause, whose conditions the server may evaluate in any order.
    async fn terminate_found(
        &mut self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<CommandSession>, BackendError> {
        let mut ended = Vec::new();
        for session in self.sessions(sql, what).await? {
            let call = format!("SELECT pg_terminate_backend({})", session.pid);
            match sqlx::raw_sql(&call).fetch_one(&mut self.conn).await {
                Ok(row) if row.try_get::<bool, _>(0).unwrap_or(false) => ended.push(session),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    pid = session.pid,
                    "could not terminate session {session}: {}",
                    describe(&e)
                ),
            }
        }
        Ok(ended)
    }

    pub(super) async fn find_command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        self.sessions(
            &sessions_sql(which),
            "looking up the migrate command's sessions",
        )
        .await
    }

    pub(super) async fn end_command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        self.terminate_found(
            &sessions_sql(which),
            "terminating the migrate command's sessions",
        )
        .await
    }

    pub(super) async fn end_leftover_sessions(
        &mut self,
        prefix: &str,
        ours: &str,
    ) -> Result<Vec<CommandSession>, BackendError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND left(application_name, {}) = {} AND application_name <> {} ORDER BY pid",
            prefix.chars().count(),
            quote_literal(prefix),
            quote_literal(ours)
        );
        self.terminate_found(
            &sql,
            "terminating sessions left by an earlier migrate command",
        )
        .await
    }

    pub(super) async fn read_last_fingerprint(
        &mut self,
        history: &HistoryTable,
    ) -> Result<Option<String>, BackendError> {
        let table = commands_table(history);
        let what = format!("reading the command table {}", TableName(&table));
        let sql = format!(
            "BEGIN; {}SELECT fingerprint FROM {} ORDER BY id DESC LIMIT 1; COMMIT",
            self.local_lock_timeout(),
            quoted(&table)
        );
        match sqlx::raw_sql(&sql).fetch_all(&mut self.conn).await {
            Ok(rows) => match rows.first() {
                Some(row) => row
                    .try_get::<Option<String>, _>(0)
                    .map_err(|e| query_error(&what, &e)),
                None => Ok(None),
            },
            Err(e) => {
                self.rollback_quietly().await;
                if matches!(
                    sqlstate_of(&e).as_deref(),
                    Some(sqlstate::UNDEFINED_TABLE | sqlstate::INVALID_SCHEMA_NAME)
                ) {
                    return Ok(None);
                }
                Err(query_error(&what, &e))
            }
        }
    }

    pub(super) async fn write_command_run(
        &mut self,
        history: &HistoryTable,
        run: &CommandRun<'_>,
    ) -> Result<(), BackendError> {
        let table = commands_table(history);
        let what = format!(
            "recording the migrate command's run in {}",
            TableName(&table)
        );
        let sql = format!(
            "BEGIN; {lock}\
             CREATE TABLE IF NOT EXISTS {t} (\
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
               command text NOT NULL, \
               fingerprint text, \
               succeeded_at timestamptz NOT NULL DEFAULT now(), \
               execution_ms bigint NOT NULL, \
               applied_by text NOT NULL, \
               startgate_version text NOT NULL); \
             INSERT INTO {t} (command, fingerprint, execution_ms, applied_by, startgate_version) \
             VALUES ({command}, {fingerprint}, {ms}, {by}, {version}); COMMIT",
            lock = self.local_lock_timeout(),
            t = quoted(&table),
            command = quote_literal(&redact::mask(run.command)),
            fingerprint = run.fingerprint.map_or("NULL".to_string(), quote_literal),
            ms = run.execution_ms,
            by = quote_literal(run.applied_by),
            version = quote_literal(env!("CARGO_PKG_VERSION")),
        );
        self.execute_or_roll_back(&sql, &what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgoptions_carry_the_timeouts_the_server_knows() {
        let limits = CommandLimits {
            lock_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(600),
        };
        assert_eq!(
            pgoptions(&limits, 130_000),
            "-c lock_timeout=10000 -c statement_timeout=600000 -c tcp_keepalives_idle=10 \
             -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
        );
        assert!(pgoptions(&limits, 150_004).ends_with("-c client_connection_check_interval=5000"));
    }

    #[test]
    fn the_session_filter_quotes_the_name_and_lists_ports() {
        let filter = sessions_filter(&CommandSessions {
            application_name: "startgate-migrate/ab'c",
            client_ports: &[
                ("127.0.0.1".parse().expect("ip"), 40123),
                ("::1".parse().expect("ip"), 40124),
            ],
            started_within: Duration::from_millis(1500),
        });
        assert!(
            filter.contains("application_name = 'startgate-migrate/ab''c'"),
            "{filter}"
        );
        assert!(
            filter.contains(
                "(client_addr = '127.0.0.1'::inet AND client_port = 40123) OR \
                 (client_addr = '::1'::inet AND client_port = 40124)"
            ),
            "{filter}"
        );
        assert!(filter.contains("interval '2500 milliseconds'"), "{filter}");
        let none = sessions_filter(&CommandSessions {
            application_name: "x",
            client_ports: &[],
            started_within: Duration::ZERO,
        });
        assert!(none.contains("OR false)"), "{none}");
    }
}
