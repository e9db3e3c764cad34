//! The PostgreSQL backend: one `PgConnection` (no pool: startgate needs exactly the sessions it
//! names, and a pool would hide which backend holds the advisory lock).
//!
//! Queries use the simple query protocol (`raw_sql`): one round trip each, no prepared
//! statements left on the server, and the same protocol psql uses to run migration files.
//! The history table name comes from settings and is always quoted as an identifier
//! ([`quote_ident`]); it is never pasted into SQL raw.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{Connection, Row};

use super::{
    Backend, BackendError, ConnectFailure, ConnectFailureKind, ConnectTarget, DatabaseInfo,
    TableName,
};
use crate::config::HistoryTable;
use crate::migrate::{HistoryRow, RowState, Version};
use crate::redact;

/// SQLSTATEs we act on. <https://www.postgresql.org/docs/current/errcodes-appendix.html>
mod sqlstate {
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
}

/// A PostgreSQL session of startgate's.
pub struct Postgres {
    conn: PgConnection,
    info: DatabaseInfo,
}

/// Quotes an identifier for PostgreSQL: `"` around it, inner `"` doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The history table as a quoted, schema-qualified name.
pub fn quoted_table(table: &HistoryTable) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    )
}

/// The history table's definition (DESIGN.md "Migration files"). `init` creates it, only
/// under the migration lock; tests use it to set up histories.
pub fn history_table_ddl(table: &HistoryTable) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
    version text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'failed', 'applied')),
    statements_done integer NOT NULL DEFAULT 0,
    applied_at timestamptz,
    execution_ms bigint,
    applied_by text,
    startgate_version text,
    recovery_time timestamptz,
    recovery_lsn pg_lsn,
    error_sqlstate text,
    error text,
    repaired boolean NOT NULL DEFAULT false
)",
        quoted_table(table)
    )
}

fn classify(error: &sqlx::Error) -> ConnectFailureKind {
    match error {
        sqlx::Error::Io(io) => {
            let text = io.to_string();
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                ConnectFailureKind::Refused
            } else if text.contains("lookup address") || text.contains("Name or service not known")
            {
                ConnectFailureKind::Dns
            } else if io.kind() == std::io::ErrorKind::TimedOut {
                ConnectFailureKind::Timeout
            } else {
                ConnectFailureKind::Other
            }
        }
        sqlx::Error::Tls(_) => ConnectFailureKind::Tls,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(sqlstate::INVALID_PASSWORD | sqlstate::INVALID_AUTHORIZATION) => {
                ConnectFailureKind::Authentication
            }
            Some(sqlstate::INVALID_CATALOG_NAME) => ConnectFailureKind::DatabaseMissing,
            Some(sqlstate::CANNOT_CONNECT_NOW | sqlstate::ADMIN_SHUTDOWN) => {
                ConnectFailureKind::NotReady
            }
            Some(sqlstate::TOO_MANY_CONNECTIONS) => ConnectFailureKind::TooManyConnections,
            _ => ConnectFailureKind::Other,
        },
        _ => ConnectFailureKind::Other,
    }
}

/// The driver's words for an error, with its SQLSTATE when the server sent one, and every
/// secret masked.
fn describe(error: &sqlx::Error) -> String {
    let text = match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    };
    redact::mask(&text).into_owned()
}

/// `host:port` (or the socket directory) as the URL names it, for messages.
fn address(url: &crate::dburl::DatabaseUrl) -> String {
    let host = url.host().unwrap_or_else(|| "localhost".to_string());
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => format!("{host}:5432"),
    }
}

fn sqlstate_of(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

impl Backend for Postgres {
    async fn connect(target: &ConnectTarget) -> Result<Self, ConnectFailure> {
        let options = PgConnectOptions::from_str(target.url.expose())
            .map_err(|e| ConnectFailure {
                kind: ConnectFailureKind::Other,
                detail: format!("bad connection URL {}: {}", target.url, describe(&e)),
            })?
            .application_name(&target.application_name);
        let attempt = async {
            let mut conn = PgConnection::connect_with(&options).await?;
            // A real query, not just an open port: see `Backend::connect`.
            let row: PgRow = sqlx::raw_sql("SELECT current_setting('server_version')")
                .fetch_one(&mut conn)
                .await?;
            let version: String = row.try_get(0)?;
            Ok::<_, sqlx::Error>((conn, version))
        };
        let (conn, server_version) = match tokio::time::timeout(target.attempt_timeout, attempt)
            .await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                let kind = classify(&e);
                let detail = match (&e, kind) {
                    // The kind says what happened; say where.
                    (sqlx::Error::Io(_), ConnectFailureKind::Refused | ConnectFailureKind::Dns) => {
                        address(&target.url)
                    }
                    (sqlx::Error::Io(io), _) => format!("{}: {io}", address(&target.url)),
                    _ => describe(&e),
                };
                return Err(ConnectFailure { kind, detail });
            }
            Err(_) => {
                return Err(ConnectFailure {
                    kind: ConnectFailureKind::Timeout,
                    detail: format!(
                        "no answer within {}",
                        crate::duration::HumanDuration(target.attempt_timeout)
                    ),
                });
            }
        };
        let info = DatabaseInfo {
            backend: "postgres",
            host: target.url.host(),
            port: target.url.port(),
            name: target.url.database(),
            url: target.url.redacted(),
            server_version: Some(
                server_version
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        };
        Ok(Postgres { conn, info })
    }

    fn info(&self) -> &DatabaseInfo {
        &self.info
    }

    async fn read_history(
        &mut self,
        table: &HistoryTable,
    ) -> Result<Option<Vec<HistoryRow>>, BackendError> {
        // One round trip: a missing table (or schema) is the error we expect before the first
        // `init`, and means that nothing is applied.
        let sql = format!(
            "SELECT version, name, checksum, state, statements_done, \
             to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             execution_ms, applied_by, error_sqlstate, error, repaired FROM {}",
            quoted_table(table)
        );
        let rows = match sqlx::raw_sql(&sql).fetch_all(&mut self.conn).await {
            Ok(rows) => rows,
            Err(e)
                if matches!(
                    sqlstate_of(&e).as_deref(),
                    Some(sqlstate::UNDEFINED_TABLE | sqlstate::INVALID_SCHEMA_NAME)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(BackendError::Query {
                    what: format!("reading the history table {}", TableName(table)),
                    message: describe(&e),
                });
            }
        };
        rows.iter()
            .map(|row| decode_row(row, table))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn close(self) {
        // Closing is a courtesy to the server; a failure here changes nothing for the caller.
        let _ = self.conn.close().await;
    }
}

fn decode_row(row: &PgRow, table: &HistoryTable) -> Result<HistoryRow, BackendError> {
    let bad = |problem: String| BackendError::BadHistory {
        table: TableName(table).to_string(),
        problem,
    };
    let get_err = |e: sqlx::Error| bad(describe(&e));
    let version_text: String = row.try_get(0).map_err(get_err)?;
    let version = Version::parse(&version_text).ok_or_else(|| {
        bad(format!(
            "version {version_text:?} is not digits with optional dots"
        ))
    })?;
    let state_text: String = row.try_get(3).map_err(get_err)?;
    let state = RowState::parse(&state_text).ok_or_else(|| {
        bad(format!(
            "version {version_text} has state {state_text:?} (expected running, failed or applied)"
        ))
    })?;
    let statements_done: i32 = row.try_get(4).map_err(get_err)?;
    Ok(HistoryRow {
        version,
        name: row.try_get(1).map_err(get_err)?,
        checksum: row.try_get(2).map_err(get_err)?,
        state,
        statements_done: u32::try_from(statements_done).map_err(|_| {
            bad(format!(
                "version {version_text} has statements_done {statements_done}"
            ))
        })?,
        applied_at: row.try_get(5).map_err(get_err)?,
        execution_ms: row.try_get(6).map_err(get_err)?,
        applied_by: row.try_get(7).map_err(get_err)?,
        error_sqlstate: row.try_get(8).map_err(get_err)?,
        error: row.try_get(9).map_err(get_err)?,
        repaired: row.try_get(10).map_err(get_err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        for (ident, quoted) in [
            ("startgate_migrations", "\"startgate_migrations\""),
            ("Mixed Case", "\"Mixed Case\""),
            ("a\"b", "\"a\"\"b\""),
            ("x; DROP TABLE users", "\"x; DROP TABLE users\""),
        ] {
            assert_eq!(quote_ident(ident), quoted);
        }
    }
}
