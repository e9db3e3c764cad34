//! The PostgreSQL backend: one `PgConnection` (no pool: startgate needs exactly the sessions it
//! names, and a pool would hide which backend holds the advisory lock).
//!
//! Queries use the simple query protocol (`raw_sql`): one round trip each, no prepared
//! statements left on the server, and the same protocol psql uses to run migration files.
//! The history table name comes from settings and is always quoted as an identifier
//! ([`quote_ident`]); it is never pasted into SQL raw. Values written into the history go
//! through [`quote_literal`].
//!
//! Submodules: [`command`] serves a migrate command (its `PGOPTIONS`, its sessions, its table
//! of runs), [`exec`] runs a statement watched by the monitor session, [`index`] resumes a
//! failed `CREATE INDEX CONCURRENTLY`, [`foreign`] reads other tools' histories.

mod catalog;
mod command;
#[doc(hidden)]
pub use catalog::{round_trips_for_tests, snapshot_for_tests};
pub mod dump;
mod exec;
mod foreign;
mod index;

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::time::Instant;

use super::{
    Applied, ApplyFailure, ApplyJob, Backend, BackendError, BriefHistory, CommandLimits,
    CommandRun, CommandSession, CommandSessions, ConnectFailure, ConnectFailureKind, ConnectTarget,
    DatabaseInfo, DumpError, DumpLimits, FailureKind, ForeignHistory, ForeignTool, HistoryWrite,
    LockHolder, LockKey, TableName, history,
};
use crate::config::HistoryTable;
use crate::migrate::plan::ResumeReason;
use crate::migrate::{HistoryRow, RowState, Statement};
use crate::redact;
use crate::supervise::signals::StopToken;
use exec::{Cancelled, StatementError};

/// SQLSTATEs we act on. <https://www.postgresql.org/docs/current/errcodes-appendix.html>
mod sqlstate {
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const QUERY_CANCELED: &str = "57014";
}

/// A PostgreSQL session of startgate's: the applying session (which holds the migration lock)
/// and, once migrating, a monitor session beside it.
pub struct Postgres {
    conn: PgConnection,
    info: DatabaseInfo,
    /// The applying session's server process id, for cancelling its statement and sampling
    /// what blocks it.
    pid: i32,
    /// `server_version_num`, to choose the session settings this server knows.
    version_num: i32,
    /// The session's `client_min_messages` when it connected, put back after the lock
    /// check's silenced release (`held_check`).
    client_min_messages: String,
    /// Kept to open the monitor session with the same URL.
    target: ConnectTarget,
    /// Opened by `prepare_for_migrating` in the background; cancels and samples for the
    /// applying session.
    monitor: Monitor,
    /// How to open a fresh monitor session; built once (parsing options reads `~/.pgpass`).
    monitor_options: Option<PgConnectOptions>,
    /// The `lock_timeout` of the migration being applied, to sample blockers in time.
    statement_lock_timeout: Duration,
}

/// The monitor session, from not asked for, through opening in the background, to open.
enum Monitor {
    Absent,
    Opening(tokio::task::JoinHandle<Result<PgConnection, String>>),
    Open(PgConnection),
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
        // The driver nests configuration errors and repeats their prefix once per level.
        sqlx::Error::Configuration(inner) => format!(
            "invalid setting: {}",
            inner
                .to_string()
                .trim_start_matches("error with configuration: ")
        ),
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
        let options = connect_options(target).map_err(|e| ConnectFailure {
            kind: ConnectFailureKind::BadUrl,
            detail: e,
        })?;
        let attempt = async {
            let mut conn = PgConnection::connect_with(&options).await?;
            // A real query, not just an open port: see `Backend::connect`.
            let row: PgRow = sqlx::raw_sql(
                "SELECT current_setting('server_version'), \
                 current_setting('server_version_num')::int, pg_backend_pid(), \
                 current_setting('client_min_messages')",
            )
            .fetch_one(&mut conn)
            .await?;
            let version: String = row.try_get(0)?;
            let version_num: i32 = row.try_get(1)?;
            let pid: i32 = row.try_get(2)?;
            let messages: String = row.try_get(3)?;
            Ok::<_, sqlx::Error>((conn, version, version_num, pid, messages))
        };
        let (conn, server_version, version_num, pid, client_min_messages) =
            match tokio::time::timeout(target.attempt_timeout, attempt).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(e)) => {
                    let kind = classify(&e);
                    let detail = match (&e, kind) {
                        // The kind says what happened; say where.
                        (
                            sqlx::Error::Io(_),
                            ConnectFailureKind::Refused | ConnectFailureKind::Dns,
                        ) => address(&target.url),
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
        Ok(Postgres {
            conn,
            info,
            pid,
            version_num,
            client_min_messages,
            target: target.clone(),
            monitor: Monitor::Absent,
            monitor_options: None,
            statement_lock_timeout: Duration::ZERO,
        })
    }

    fn info(&self) -> &DatabaseInfo {
        &self.info
    }

    async fn read_history(
        &mut self,
        table: &HistoryTable,
    ) -> Result<Option<Vec<HistoryRow>>, BackendError> {
        let columns = format!(
            "version, name, checksum, state, statements_done, {}, execution_ms, applied_by, \
             error_sqlstate, error, repaired",
            utc("applied_at")
        );
        let (rows, _) = self.history_rows(table, &columns, true, false).await?;
        Ok(rows)
    }

    async fn read_history_brief(
        &mut self,
        table: &HistoryTable,
    ) -> Result<BriefHistory, BackendError> {
        // Half the server's time of the full read on a fresh session (no timestamp formatting),
        // and this read is what every restart pays; so is the verifying phase's look for an
        // INVALID index, asked in the same round trip.
        let (rows, any_invalid_index) = self
            .history_rows(
                table,
                "version, name, checksum, state, statements_done",
                false,
                true,
            )
            .await?;
        Ok(BriefHistory {
            rows,
            any_invalid_index,
        })
    }

    async fn prepare_for_migrating(&mut self) -> Result<(), BackendError> {
        // Notice a vanished client within seconds, not hours: a killed pod's statement must
        // not run on (and hold the migration lock) for the kernel's default two hours of TCP
        // keepalive. Each setting exists from the version named.
        let mut sets = vec![
            "SET tcp_keepalives_idle = 10",
            "SET tcp_keepalives_interval = 5",
            "SET tcp_keepalives_count = 3",
        ];
        if self.version_num >= 120_000 {
            sets.push("SET tcp_user_timeout = 30000");
        }
        if self.version_num >= 140_000 {
            sets.push("SET client_connection_check_interval = '5s'");
        }
        let sql = sets.join("; ");
        sqlx::raw_sql(&sql)
            .execute(&mut self.conn)
            .await
            .map_err(|e| query_error("preparing the migration session", &e))?;
        if matches!(self.monitor, Monitor::Absent) {
            let options = connect_options(&self.target)
                .map_err(|message| BackendError::Query {
                    what: "opening the monitor session".to_string(),
                    message,
                })?
                .application_name(&role_name(&self.target.application_name, "monitor"));
            self.monitor_options = Some(options.clone());
            // Opened beside the lock, the history table and the history read rather than
            // before them (a connection is some milliseconds of the server's time on a core
            // the applying session is not using); `monitor_ready` waits for it.
            let limit = self.target.attempt_timeout;
            self.monitor = Monitor::Opening(tokio::spawn(async move {
                match tokio::time::timeout(limit, PgConnection::connect_with(&options)).await {
                    Ok(Ok(monitor)) => Ok(monitor),
                    Ok(Err(e)) => Err(describe(&e)),
                    Err(_) => Err("timed out".to_string()),
                }
            }));
        }
        Ok(())
    }

    async fn monitor_ready(&mut self) -> Result<(), BackendError> {
        // Awaited in place: if a signal drops this future, `close` still finds the task.
        let Monitor::Opening(opening) = &mut self.monitor else {
            return Ok(());
        };
        let opened = opening.await;
        self.monitor = Monitor::Absent;
        let failed = |message: String| BackendError::Query {
            what: "opening the monitor session".to_string(),
            message,
        };
        match opened {
            Ok(Ok(monitor)) => {
                self.monitor = Monitor::Open(monitor);
                Ok(())
            }
            Ok(Err(message)) => Err(failed(message)),
            Err(e) => Err(failed(format!("internal error: {e}"))),
        }
    }

    async fn try_lock(&mut self, key: LockKey) -> Result<bool, BackendError> {
        // Taken twice (the second time is instant: this session already holds it), so that
        // [`held_check`] can look in the backend's own lock table without a window in which
        // the lock is free.
        let sql = format!(
            "SELECT CASE WHEN pg_try_advisory_lock({k}) THEN pg_try_advisory_lock({k}) ELSE false END",
            k = key.0
        );
        let row = sqlx::raw_sql(&sql)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error("taking the migration lock", &e))?;
        row.try_get::<bool, _>(0)
            .map_err(|e| query_error("taking the migration lock", &e))
    }

    async fn lock_holder(&mut self, key: LockKey) -> Result<Option<LockHolder>, BackendError> {
        let (hi, lo) = key_parts(key);
        let sql = format!(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), \
             {}, a.state, {}, left(a.query, 200) \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {hi} AND l.objid = {lo} \
             AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            utc("a.backend_start"),
            utc("a.query_start"),
        );
        let what = "looking up the migration lock's holder";
        let rows = sqlx::raw_sql(&sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| query_error(what, &e);
        Ok(Some(LockHolder {
            pid: i64::from(row.try_get::<i32, _>(0).map_err(get)?),
            application_name: row.try_get(1).map_err(get)?,
            client: row.try_get(2).map_err(get)?,
            connected_at: row.try_get(3).map_err(get)?,
            state: row.try_get(4).map_err(get)?,
            query_start: row.try_get(5).map_err(get)?,
            query: row
                .try_get::<Option<String>, _>(6)
                .map_err(get)?
                .map(|q| redact::mask(&q).into_owned()),
        }))
    }

    async fn unlock(&mut self, key: LockKey) -> Result<(), BackendError> {
        // Both holds of [`Backend::try_lock`]. Without the server's warning when the lock is
        // not held (the log says so below); outside a transaction block, as here, the
        // silencing ends with the statement.
        let sql = format!(
            "SELECT CASE WHEN set_config('client_min_messages', 'error', true) IS NULL THEN NULL \
             ELSE pg_advisory_unlock({k}) AND pg_advisory_unlock({k}) END",
            k = key.0
        );
        // Bounded: after a lost or stalled session the release cannot happen here, and the
        // server releases the lock when the session ends.
        let row = tokio::time::timeout(UNLOCK_LIMIT, sqlx::raw_sql(&sql).fetch_one(&mut self.conn))
            .await
            .map_err(|_| BackendError::Query {
                what: "releasing the migration lock".to_string(),
                message: "the server did not answer".to_string(),
            })?
            .map_err(|e| query_error("releasing the migration lock", &e))?;
        if !row.try_get::<bool, _>(0).unwrap_or(false) {
            tracing::warn!("the migration lock was not held by this session when releasing it");
        }
        Ok(())
    }

    async fn terminate(&mut self, pid: i64) -> Result<bool, BackendError> {
        let sql = format!("SELECT pg_terminate_backend({pid})");
        let what = format!("terminating session {pid}");
        let row = sqlx::raw_sql(&sql)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        row.try_get::<bool, _>(0)
            .map_err(|e| query_error(&what, &e))
    }

    async fn ensure_history_table(&mut self, table: &HistoryTable) -> Result<(), BackendError> {
        let what = format!("creating the history table {}", TableName(table));
        let schema_missing = format!(
            "SELECT to_regnamespace({}) IS NULL, to_regclass({}) IS NOT NULL",
            quote_literal(&quote_ident(&table.schema)),
            quote_literal(&quoted_table(table))
        );
        let row = sqlx::raw_sql(&schema_missing)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        // Already there: nothing to create (and no "already exists" notice in the log).
        if row
            .try_get::<bool, _>(1)
            .map_err(|e| query_error(&what, &e))?
        {
            return Ok(());
        }
        let mut sql = format!("BEGIN; {}", self.local_lock_timeout());
        if row
            .try_get::<bool, _>(0)
            .map_err(|e| query_error(&what, &e))?
        {
            sql.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}; ",
                quote_ident(&table.schema)
            ));
        }
        sql.push_str(&history_table_ddl(table));
        sql.push_str("; COMMIT");
        self.execute_or_roll_back(&sql, &what).await
    }

    async fn holds_nothing(&mut self, table: &HistoryTable) -> Result<bool, BackendError> {
        let history = quote_literal(&quoted_table(table));
        let schema = quote_literal(&table.schema);
        // A namespace of the database's own: not a system one, not a temporary one.
        let own = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'";
        let sql = format!(
            "SELECT NOT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE {own} AND c.oid IS DISTINCT FROM to_regclass({history}) \
               AND c.oid NOT IN (SELECT indexrelid FROM pg_index WHERE indrelid = to_regclass({history}))) \
             AND NOT EXISTS (SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {own}) \
             AND NOT EXISTS (SELECT FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
               WHERE {own} AND t.typrelid = 0 AND t.typelem = 0) \
             AND NOT EXISTS (SELECT FROM pg_extension WHERE extname <> 'plpgsql') \
             AND NOT EXISTS (SELECT FROM pg_namespace n WHERE {own} \
               AND n.nspname NOT IN ('public', {schema}))"
        );
        let what = "looking for objects to back up";
        let row = sqlx::raw_sql(&sql)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        row.try_get::<bool, _>(0).map_err(|e| query_error(what, &e))
    }

    async fn apply(
        &mut self,
        job: &ApplyJob<'_>,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure> {
        self.statement_lock_timeout = job.lock_timeout;
        if job.migration.options.no_transaction {
            self.apply_statement_by_statement(job, stop).await
        } else {
            self.apply_in_transaction(job, stop).await
        }
    }

    async fn write_history(
        &mut self,
        table: &HistoryTable,
        rows: &[HistoryWrite],
    ) -> Result<(), BackendError> {
        let what = format!("writing the history table {}", TableName(table));
        let mut sql = format!("BEGIN; {}", self.local_lock_timeout());
        for w in rows {
            sql.push_str(&upsert_sql(
                table,
                &RowValues {
                    version: &w.version,
                    name: &w.name,
                    checksum: &w.checksum,
                    state: w.state,
                    statements_done: w.statements_done,
                    execution_ms: None,
                    applied_by: &w.applied_by,
                    recovery: (None, None),
                    error_sqlstate: w.error_sqlstate.as_deref(),
                    error: w.error.as_deref(),
                    repaired: w.repaired,
                },
            ));
            sql.push_str("; ");
        }
        sql.push_str("COMMIT");
        self.execute_or_roll_back(&sql, &what).await
    }

    async fn read_foreign_history(
        &mut self,
        tool: ForeignTool,
    ) -> Result<ForeignHistory, BackendError> {
        foreign::read(&mut self.conn, tool).await
    }

    async fn snapshot(
        &mut self,
        history: &HistoryTable,
    ) -> Result<crate::schema::Snapshot, BackendError> {
        let server_version = self.info.server_version.clone().unwrap_or_default();
        catalog::snapshot(
            &mut self.conn,
            history,
            &server_version,
            millis(self.target.lock_timeout),
        )
        .await
    }

    async fn invalid_indexes(&mut self) -> Result<Vec<String>, BackendError> {
        let what = "looking for INVALID indexes";
        // Every start asks, and nearly always there is none; the query that names them (and
        // leaves out builds in progress) runs only when there is something to name.
        let any = sqlx::raw_sql(ANY_INVALID_INDEX)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        if !any
            .try_get::<bool, _>(0)
            .map_err(|e| query_error(what, &e))?
        {
            return Ok(Vec::new());
        }
        let sql = "SELECT n.nspname, c.relname FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' \
             AND i.indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index) \
             ORDER BY 1, 2";
        let rows = sqlx::raw_sql(sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        rows.iter()
            .map(|row| {
                let schema: String = row.try_get(0).map_err(|e| query_error(what, &e))?;
                let name: String = row.try_get(1).map_err(|e| query_error(what, &e))?;
                Ok(crate::schema::display_name(&schema, &name))
            })
            .collect()
    }

    fn backup_extension(&self) -> &'static str {
        "sql"
    }

    async fn dump_schema(
        &mut self,
        path: &std::path::Path,
        limits: &DumpLimits,
        stop: &StopToken,
    ) -> Result<(), DumpError> {
        let server_version = self.info.server_version.clone().unwrap_or_default();
        let application_name = role_name(&self.target.application_name, "backup");
        dump::dump(
            &self.target.url,
            u32::try_from(self.version_num / 10_000).unwrap_or(0),
            &server_version,
            &application_name,
            path,
            limits,
            stop,
        )
        .await
    }

    async fn holds_lock(&mut self, key: LockKey) -> Result<bool, BackendError> {
        let what = "checking that this session holds the migration lock";
        let row = sqlx::raw_sql(&head_select(key, &self.client_min_messages, ""))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| query_error(what, &e))?;
        row.try_get::<bool, _>(0).map_err(|e| query_error(what, &e))
    }

    async fn read_alembic_versions(
        &mut self,
        table: &str,
    ) -> Result<Option<Vec<String>>, BackendError> {
        self.alembic_versions(table).await
    }

    fn command_environment(&self, limits: &CommandLimits) -> Vec<(String, String)> {
        vec![(
            "PGOPTIONS".to_string(),
            command::pgoptions(limits, self.version_num),
        )]
    }

    async fn command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        self.find_command_sessions(which).await
    }

    async fn terminate_command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        self.end_command_sessions(which).await
    }

    async fn terminate_leftover_sessions(
        &mut self,
        prefix: &str,
        ours: &str,
    ) -> Result<Vec<CommandSession>, BackendError> {
        self.end_leftover_sessions(prefix, ours).await
    }

    async fn last_fingerprint(
        &mut self,
        history: &HistoryTable,
    ) -> Result<Option<String>, BackendError> {
        self.read_last_fingerprint(history).await
    }

    async fn record_command_run(
        &mut self,
        history: &HistoryTable,
        run: &CommandRun<'_>,
    ) -> Result<(), BackendError> {
        self.write_command_run(history, run).await
    }

    async fn close(self) {
        // Closing is a courtesy to the server, bounded so that a stalled network cannot hold
        // startgate's exit; a dropped connection is closed by the server too.
        match self.monitor {
            Monitor::Open(monitor) => {
                let _ = tokio::time::timeout(CLOSE_LIMIT, monitor.close()).await;
            }
            // Never waited for (nothing was applied): closed as politely if it is open by now,
            // dropped with the task if not.
            Monitor::Opening(opening) if opening.is_finished() => {
                if let Ok(Ok(monitor)) = opening.await {
                    let _ = tokio::time::timeout(CLOSE_LIMIT, monitor.close()).await;
                }
            }
            Monitor::Opening(opening) => opening.abort(),
            Monitor::Absent => {}
        }
        let _ = tokio::time::timeout(CLOSE_LIMIT, self.conn.close()).await;
    }
}

/// The values of one history row, for [`upsert_sql`].
struct RowValues<'a> {
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    state: RowState,
    statements_done: u32,
    /// Set for an applied row: `applied_at` becomes the commit's `now()`.
    execution_ms: Option<ExecutionMs>,
    applied_by: &'a str,
    /// Server time and WAL position just before the migration.
    recovery: (Option<&'a str>, Option<&'a str>),
    error_sqlstate: Option<&'a str>,
    error: Option<&'a str>,
    repaired: bool,
}

/// How long a migration took, for its history row.
#[derive(Clone, Copy)]
enum ExecutionMs {
    /// Measured by startgate.
    Measured(i64),
    /// Since its transaction began, measured by the server when the row is written: the row
    /// rides in the same message as the migration's last statement, before that statement
    /// has run.
    InTransaction,
}

/// Whether any index is INVALID, builds in progress included: on nearly every start the
/// answer is no, which a bare scan of `pg_index` gives in a third of the time of the query that
/// names them (see [`Backend::invalid_indexes`]).
const ANY_INVALID_INDEX: &str =
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_index WHERE NOT indisvalid)";

/// The longest releasing the migration lock may take.
const UNLOCK_LIMIT: Duration = Duration::from_secs(5);
/// The longest closing a session may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// What stays the same in every write of one no-transaction migration's row.
struct RowBase<'a> {
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    applied_by: &'a str,
    recovery: (Option<&'a str>, Option<&'a str>),
    started: Instant,
}

impl<'a> RowBase<'a> {
    /// The row of `job`'s migration: keyed by the existing row's version text when resuming,
    /// so the row is updated in place even when the file writes the version differently.
    fn new(
        job: &'a ApplyJob<'a>,
        recovery: (Option<&'a str>, Option<&'a str>),
        started: Instant,
    ) -> RowBase<'a> {
        let m = job.migration;
        RowBase {
            version: job
                .existing_version
                .as_deref()
                .unwrap_or(m.version.as_str()),
            name: &m.name,
            checksum: &m.checksum,
            applied_by: job.applied_by,
            recovery,
            started,
        }
    }

    fn values<'b>(
        &self,
        state: RowState,
        done: u32,
        failure: Option<(&'b str, &'b str)>,
    ) -> RowValues<'b>
    where
        'a: 'b,
    {
        RowValues {
            version: self.version,
            name: self.name,
            checksum: self.checksum,
            state,
            statements_done: done,
            execution_ms: (state == RowState::Applied)
                .then(|| ExecutionMs::Measured(self.started.elapsed().as_millis() as i64)),
            applied_by: self.applied_by,
            recovery: self.recovery,
            error_sqlstate: failure.map(|f| f.0),
            error: failure.map(|f| f.1),
            repaired: false,
        }
    }
}

/// `INSERT … ON CONFLICT (version) DO UPDATE` for one history row, every value quoted.
fn upsert_sql(table: &HistoryTable, v: &RowValues<'_>) -> String {
    let opt = |value: Option<&str>| value.map_or_else(|| "NULL".to_string(), quote_literal);
    let applied = v.state == RowState::Applied;
    format!(
        "INSERT INTO {table} (version, name, checksum, state, statements_done, applied_at, execution_ms, \
         applied_by, startgate_version, recovery_time, recovery_lsn, error_sqlstate, error, repaired) \
         VALUES ({version}, {name}, {checksum}, {state}, {done}, {applied_at}, {ms}, {by}, {sg}, \
         {rt}::timestamptz, {lsn}::pg_lsn, {code}, {error}, {repaired}) \
         ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, \
         state = EXCLUDED.state, statements_done = EXCLUDED.statements_done, applied_at = EXCLUDED.applied_at, \
         execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by, \
         startgate_version = EXCLUDED.startgate_version, \
         recovery_time = coalesce(EXCLUDED.recovery_time, {table}.recovery_time), \
         recovery_lsn = coalesce(EXCLUDED.recovery_lsn, {table}.recovery_lsn), \
         error_sqlstate = EXCLUDED.error_sqlstate, error = EXCLUDED.error, repaired = EXCLUDED.repaired",
        table = quoted_table(table),
        version = quote_literal(v.version),
        name = quote_literal(v.name),
        checksum = quote_literal(v.checksum),
        state = quote_literal(v.state.as_str()),
        done = v.statements_done,
        applied_at = if applied { "now()" } else { "NULL" },
        ms = match v.execution_ms {
            None => "NULL".to_string(),
            Some(ExecutionMs::Measured(ms)) => ms.to_string(),
            Some(ExecutionMs::InTransaction) => {
                "(extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint".to_string()
            }
        },
        by = quote_literal(v.applied_by),
        sg = quote_literal(env!("CARGO_PKG_VERSION")),
        rt = opt(v.recovery.0),
        lsn = opt(v.recovery.1),
        code = opt(v.error_sqlstate),
        error = opt(v.error),
        repaired = v.repaired,
    )
}

/// The first statement of a migration: [`head_select`], which also sets the job's timeouts,
/// for the session (`local` false) or for the migration's transaction only (`local` true, as
/// `SET LOCAL` would): one statement rather than two `SET`s and a `SELECT`.
fn head_sql(job: &ApplyJob<'_>, messages: &str, local: bool) -> String {
    head_select(
        job.lock,
        messages,
        &format!(
            ", set_config('lock_timeout', '{}ms', {local}), \
             set_config('statement_timeout', '{}ms', {local})",
            millis(job.lock_timeout),
            millis(job.statement_timeout),
        ),
    )
}

/// `SELECT` that checks that this very session still holds the migration lock, and records
/// the recovery point (server time and WAL position, `NULL` on a standby); `more` adds to its
/// list. `messages` is the session's `client_min_messages` ([`held_check`]).
fn head_select(key: LockKey, messages: &str, more: &str) -> String {
    format!(
        "SELECT {}, {}, CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END{more}",
        held_check(key, messages),
        utc("now()")
    )
}

/// True when this session holds the migration lock, asked of the backend's own lock table:
/// [`Backend::try_lock`] took the lock twice, so releasing one hold succeeds only if this
/// session holds it, leaves it held, and taking it again restores the count at once. A
/// session a transaction-mode pooler handed over (another backend) holds nothing, and a
/// session whose lock a migration released (`pg_advisory_unlock_all()`) neither: both
/// answer false. `pg_locks` would say the same, but reads every backend's locks to say it
/// (0.2 ms of server time before every migration, measured here, about 5% of a small one).
///
/// Releasing a lock the session does not hold makes the server send a warning ("you don't
/// own a lock"); the false answer says it better, so messages are silenced for the release
/// and set back to `messages` (the session's `client_min_messages`, read when connecting)
/// right after, in the transaction only. `CASE` evaluates its branches in order
/// (<https://www.postgresql.org/docs/current/sql-expressions.html#SYNTAX-EXPRESS-EVAL>); a
/// session's advisory lock requests stack, each needing its own release
/// (<https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS>). Should a
/// no-transaction migration change `client_min_messages` for the session, later
/// transactional migrations see the value read when connecting again.
fn held_check(key: LockKey, messages: &str) -> String {
    format!(
        "CASE WHEN set_config('client_min_messages', 'error', true) IS NULL THEN NULL \
         WHEN pg_advisory_unlock({k}) \
         THEN set_config('client_min_messages', {was}, true) IS NOT NULL \
         AND pg_try_advisory_lock({k}) \
         ELSE set_config('client_min_messages', {was}, true) IS NULL END",
        k = key.0,
        was = quote_literal(messages)
    )
}

/// How `pg_locks` shows a one-`bigint` advisory lock: the high half in `classid`, the low half
/// in `objid`, `objsubid` 1.
fn key_parts(key: LockKey) -> (u32, u32) {
    let bits = key.0 as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// A duration as PostgreSQL's timeout settings take it: milliseconds, `0` for none, capped at
/// the largest value the server accepts.
fn millis(d: Duration) -> u128 {
    d.as_millis().min(i32::MAX as u128)
}

/// Where within the file a server error position (1-based characters within the statement)
/// points: (line, column).
fn locate(statement: &Statement, position: usize) -> (u32, u32) {
    let mut line = statement.line;
    // On its first line the statement starts at its own column, not the line's.
    let mut column = statement.column;
    for c in statement.sql.chars().take(position.saturating_sub(1)) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// What to do before resuming at a `CREATE INDEX CONCURRENTLY`.
enum IndexResume {
    /// Run the statement.
    Run,
    /// The index exists and is valid: the build finished before it could be recorded.
    AlreadyBuilt,
}

impl Postgres {
    /// Reads the history table's `columns` (all of them when `full`, else the first five):
    /// the rows (`None` when the table does not exist) and, with `probe`, whether any INVALID
    /// index existed, asked first in the same round trip ([`ANY_INVALID_INDEX`]).
    async fn history_rows(
        &mut self,
        table: &HistoryTable,
        columns: &str,
        full: bool,
        probe: bool,
    ) -> Result<(Option<Vec<HistoryRow>>, Option<bool>), BackendError> {
        // One round trip, bounded by lock_timeout: a missing table (or schema) is the error we
        // expect before the first `init`, and means that nothing is applied.
        let sql = format!(
            "BEGIN; {}{}{}SELECT {columns} FROM {}; COMMIT",
            self.local_lock_timeout(),
            if probe { ANY_INVALID_INDEX } else { "" },
            if probe { "; " } else { "" },
            quoted_table(table)
        );
        let what = || format!("reading the history table {}", TableName(table));
        // Rows are decoded as they arrive rather than collected first: a thousand-row history
        // then never sits in memory twice (the driver's rows and ours).
        let mut rows = Vec::new();
        let mut any_invalid = None;
        let mut stream = sqlx::raw_sql(&sql).fetch(&mut self.conn);
        let failed = loop {
            match stream.try_next().await {
                // The probe's one row comes first.
                Ok(Some(row)) if probe && any_invalid.is_none() => {
                    any_invalid = Some(
                        row.try_get::<bool, _>(0)
                            .map_err(|e| query_error(&what(), &e))?,
                    );
                }
                Ok(Some(row)) => rows.push(decode_row(&row, table, full)?),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        drop(stream);
        if let Some(e) = failed {
            self.rollback_quietly().await;
            if matches!(
                sqlstate_of(&e).as_deref(),
                Some(sqlstate::UNDEFINED_TABLE | sqlstate::INVALID_SCHEMA_NAME)
            ) {
                return Ok((None, any_invalid));
            }
            return Err(BackendError::Query {
                what: what(),
                message: describe(&e),
            });
        }
        Ok((Some(rows), any_invalid))
    }

    /// `SET LOCAL lock_timeout` for startgate's own statements on the history table, or
    /// nothing when the operator turned lock timeouts off.
    fn local_lock_timeout(&self) -> String {
        match millis(self.target.lock_timeout) {
            0 => String::new(),
            ms => format!("SET LOCAL lock_timeout = '{ms}ms'; "),
        }
    }

    /// Runs a `BEGIN; …; COMMIT` text; on failure rolls the transaction back and says what
    /// was being done.
    async fn execute_or_roll_back(&mut self, sql: &str, what: &str) -> Result<(), BackendError> {
        if let Err(e) = sqlx::raw_sql(sql).execute(&mut self.conn).await {
            self.rollback_quietly().await;
            return Err(query_error(what, &e));
        }
        Ok(())
    }

    async fn rollback_quietly(&mut self) {
        if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await {
            tracing::debug!(error = %describe(&e), "rollback failed (the session may be gone)");
        }
    }

    /// Runs one statement watched by the monitor session.
    async fn run(
        &mut self,
        sql: &str,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<(), StatementError> {
        self.run_counting(sql, deadline, stop)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// [`run`](Self::run) for a text of several statements: says how many of them completed,
    /// also with an error.
    async fn run_counting(
        &mut self,
        sql: &str,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<usize, (StatementError, usize)> {
        let Monitor::Open(monitor) = &mut self.monitor else {
            return Err((
                StatementError::internal(
                    "internal error: no monitor session (monitor_ready was not called)".to_string(),
                ),
                0,
            ));
        };
        // Sample blockers before lock_timeout can expire, so that a short one still names them.
        let sample_after = match self.statement_lock_timeout {
            t if t.is_zero() => exec::SAMPLE_AFTER,
            t => exec::SAMPLE_AFTER.min(t / 3),
        };
        let Some(reconnect) = self.monitor_options.as_ref() else {
            return Err((
                StatementError::internal(
                    "internal error: no monitor options (prepare_for_migrating was not called)"
                        .to_string(),
                ),
                0,
            ));
        };
        let watcher = exec::Watcher {
            monitor,
            reconnect,
            pid: self.pid,
            sample_after,
        };
        exec::run_watched(&mut self.conn, watcher, sql, deadline, stop).await
    }

    async fn apply_in_transaction(
        &mut self,
        job: &ApplyJob<'_>,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure> {
        let started = Instant::now();
        let deadline = started + job.timeout;
        let head = format!("BEGIN; {}", head_sql(job, &self.client_min_messages, true));
        let (held, recovery_time, recovery_lsn) = match self.head(&head).await {
            Ok(head) => head,
            Err(e) => {
                self.rollback_quietly().await;
                return Err(connection_failure(&e, 0));
            }
        };
        if !held {
            self.rollback_quietly().await;
            return Err(lock_lost(0));
        }
        let base = RowBase::new(
            job,
            (recovery_time.as_deref(), recovery_lsn.as_deref()),
            started,
        );
        let mut row = base.values(RowState::Applied, job.statements.len() as u32, None);
        row.execution_ms = Some(ExecutionMs::InTransaction);
        let tail = format!("{}; COMMIT", upsert_sql(job.history, &row));
        // A repaired migration resumes at its failed statement, even in a transaction.
        let from = job.from_statement as usize;
        let last = job.statements.len().saturating_sub(1);
        for (i, statement) in job.statements.iter().enumerate().skip(from) {
            if let Some(stop) = stop.stopped() {
                self.rollback_quietly().await;
                return Err(interrupted_between(stop, i as u32, statement, 0));
            }
            if i < last {
                if let Err(e) = self.run(&statement.sql, deadline, stop).await {
                    if !e.session_lost {
                        self.rollback_quietly().await;
                    }
                    return Err(statement_failure(e, i as u32, statement, job, 0));
                }
                continue;
            }
            // The last statement carries the history row and the commit in its message (one
            // round trip fewer per migration). It comes first in the text, so a position the
            // server gives is within it; a line break ends a trailing `--` comment.
            let sql = format!("{}\n;{tail}", statement.sql);
            // The statement, the row, the commit.
            const PARTS: usize = 3;
            let failure = match self.run_counting(&sql, deadline, stop).await {
                Ok(PARTS) => {
                    return Ok(Applied {
                        statements_run: job.statements.len().saturating_sub(from) as u32,
                        elapsed: started.elapsed(),
                        recovery_time,
                        recovery_lsn,
                    });
                }
                // Fewer parts than sent: the text did not split as it was written (a backslash
                // in a string with standard_conforming_strings off, say). Nothing is committed.
                Ok(completed) => {
                    self.rollback_quietly().await;
                    return Err(tail_failure(
                        StatementError::internal(format!(
                            "internal error: the server ran {completed} of the {PARTS} parts of \
                             the last statement's message (its history row and COMMIT did not run)"
                        )),
                        job,
                    ));
                }
                Err(failure) => failure,
            };
            return Err(match failure {
                // Whatever the server got to, the answer was lost with the session.
                (e, _) if e.session_lost => ApplyFailure {
                    kind: FailureKind::CommitUnknown,
                    ..tail_failure(e, job)
                },
                (e, 0) => {
                    self.rollback_quietly().await;
                    statement_failure(e, i as u32, statement, job, 0)
                }
                // The statement completed; writing its row or committing failed. A failed
                // COMMIT has ended the transaction already: nothing to roll back.
                (e, completed) => {
                    if completed < PARTS - 1 {
                        self.rollback_quietly().await;
                    }
                    tail_failure(e, job)
                }
            });
        }
        // No statement left to carry the row (a file without statements, or a resume after
        // the last one): the row and the commit on their own.
        if let Err(e) = sqlx::raw_sql(&tail).execute(&mut self.conn).await {
            self.rollback_quietly().await;
            return Err(connection_failure(&e, 0));
        }
        Ok(Applied {
            statements_run: 0,
            elapsed: started.elapsed(),
            recovery_time,
            recovery_lsn,
        })
    }

    /// Runs a head query and returns (lock still held, recovery time, recovery LSN).
    async fn head(
        &mut self,
        sql: &str,
    ) -> Result<(bool, Option<String>, Option<String>), sqlx::Error> {
        let rows = sqlx::raw_sql(sql).fetch_all(&mut self.conn).await?;
        let Some(row) = rows.last() else {
            return Err(sqlx::Error::RowNotFound);
        };
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    /// A `no-transaction` migration: session-level timeouts, a `running` history row updated
    /// after every statement, `applied` at the end, `failed` with the statement and the error
    /// when one fails (DESIGN.md "Migration files").
    async fn apply_statement_by_statement(
        &mut self,
        job: &ApplyJob<'_>,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure> {
        let started = Instant::now();
        let deadline = started + job.timeout;
        let total = job.statements.len() as u32;
        let mut done = job.from_statement.min(total);
        let head = head_sql(job, &self.client_min_messages, false);
        let (held, recovery_time, recovery_lsn) = match self.head(&head).await {
            Ok(head) => head,
            Err(e) => {
                self.reset_timeouts().await;
                return Err(connection_failure(&e, done));
            }
        };
        if !held {
            self.reset_timeouts().await;
            return Err(lock_lost(done));
        }
        let base = RowBase::new(
            job,
            (recovery_time.as_deref(), recovery_lsn.as_deref()),
            started,
        );
        let running = upsert_sql(job.history, &base.values(RowState::Running, done, None));
        if let Err(e) = sqlx::raw_sql(&running).execute(&mut self.conn).await {
            self.reset_timeouts().await;
            return Err(connection_failure(&e, done));
        }

        if job.resume == Some(ResumeReason::ConcurrentIndex)
            && let Some(statement) = job.statements.get(done as usize)
        {
            match self.prepare_index_resume(statement, deadline, stop).await {
                Ok(IndexResume::Run) => {}
                Ok(IndexResume::AlreadyBuilt) => {
                    done += 1;
                    self.progress(job.history, base.version, done).await;
                }
                Err(e) => {
                    return Err(self
                        .fail_statement(job, &base, e, done, done, statement)
                        .await);
                }
            }
        }

        // Which statements run inside the file's own transactions: a failure there aborts the
        // transaction, which must be rolled back, and undoes the statements since its BEGIN.
        let (spans, _) = crate::migrate::transaction_spans(job.statements);
        while let Some(statement) = job.statements.get(done as usize) {
            let undo_from = spans.get(done as usize).copied().flatten();
            if let Some(stop) = stop.stopped() {
                let failure = interrupted_between(stop, done, statement, done);
                let error = StatementError {
                    sqlstate: Some(sqlstate::QUERY_CANCELED.to_string()),
                    message: failure.message.clone(),
                    position: None,
                    cancelled: Some(Cancelled::Stop(stop)),
                    blockers: Vec::new(),
                    session_lost: false,
                };
                let kept = self.undo_open_transaction(undo_from, done, &error).await;
                return Err(self
                    .fail_statement(job, &base, error, done, kept, statement)
                    .await);
            }
            if let Err(e) = self.run(&statement.sql, deadline, stop).await {
                let kept = self.undo_open_transaction(undo_from, done, &e).await;
                return Err(self
                    .fail_statement(job, &base, e, done, kept, statement)
                    .await);
            }
            done += 1;
            if done < total {
                self.progress(job.history, base.version, done).await;
            }
        }

        let applied = format!(
            "{}; RESET lock_timeout; RESET statement_timeout",
            upsert_sql(job.history, &base.values(RowState::Applied, total, None))
        );
        if let Err(e) = sqlx::raw_sql(&applied).execute(&mut self.conn).await {
            self.reset_timeouts().await;
            return Err(connection_failure(&e, done));
        }
        Ok(Applied {
            statements_run: total - job.from_statement.min(total),
            elapsed: started.elapsed(),
            recovery_time,
            recovery_lsn,
        })
    }

    /// After a failure at statement `done` inside the file's own transaction (opened at
    /// `undo_from`): rolls that transaction back and returns how many statements stay applied.
    async fn undo_open_transaction(
        &mut self,
        undo_from: Option<usize>,
        done: u32,
        error: &StatementError,
    ) -> u32 {
        match undo_from {
            Some(from) if !error.session_lost => {
                self.rollback_quietly().await;
                u32::try_from(from).unwrap_or(done).min(done)
            }
            _ => done,
        }
    }

    /// Records a completed statement. A failure to record it is logged, not fatal: the
    /// statement did take effect, and a later run finds the row `running` and refuses to guess.
    async fn progress(&mut self, table: &HistoryTable, version: &str, done: u32) {
        let sql = format!(
            "UPDATE {} SET statements_done = {done} WHERE version = {}",
            quoted_table(table),
            quote_literal(version)
        );
        if let Err(e) = sqlx::raw_sql(&sql).execute(&mut self.conn).await {
            tracing::warn!(error = %describe(&e), version, done, "could not record migration progress");
        }
    }

    /// Marks the row `failed` with the statement and the error (when the session still works),
    /// resets the session's timeouts, and builds the failure.
    /// `index` is the failing statement's; `done` how many statements stay applied.
    #[allow(clippy::too_many_arguments)]
    async fn fail_statement(
        &mut self,
        job: &ApplyJob<'_>,
        base: &RowBase<'_>,
        error: StatementError,
        index: u32,
        done: u32,
        statement: &Statement,
    ) -> ApplyFailure {
        if !error.session_lost {
            let code = error.sqlstate.clone().unwrap_or_default();
            let sql = upsert_sql(
                job.history,
                &base.values(RowState::Failed, done, Some((&code, &error.message))),
            );
            if let Err(e) = sqlx::raw_sql(&sql).execute(&mut self.conn).await {
                tracing::warn!(error = %describe(&e), "could not record the failure in the history");
            }
            self.reset_timeouts().await;
        }
        statement_failure(error, index, statement, job, done)
    }

    async fn reset_timeouts(&mut self) {
        if let Err(e) = sqlx::raw_sql("RESET lock_timeout; RESET statement_timeout")
            .execute(&mut self.conn)
            .await
        {
            tracing::debug!(error = %describe(&e), "could not reset the session timeouts");
        }
    }

    /// Before re-running a `CREATE INDEX CONCURRENTLY`: drop the INVALID index its failed run
    /// left, or notice that the index was built after all.
    async fn prepare_index_resume(
        &mut self,
        statement: &Statement,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<IndexResume, StatementError> {
        let Some(index) = index::parse(&statement.sql) else {
            return Ok(IndexResume::Run);
        };
        let lookup_error = |e: sqlx::Error| StatementError {
            sqlstate: sqlstate_of(&e),
            message: describe(&e),
            position: None,
            cancelled: None,
            blockers: Vec::new(),
            session_lost: !matches!(e, sqlx::Error::Database(_)),
        };
        let table = quote_literal(&index.qualified_table());
        let invalid: Vec<String> = match index.qualified_index() {
            Some(name) => {
                let sql = format!(
                    "SELECT indisvalid, indrelid = to_regclass({table}) FROM pg_index \
                     WHERE indexrelid = to_regclass({})",
                    quote_literal(&name)
                );
                let rows = sqlx::raw_sql(&sql)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(lookup_error)?;
                let Some(row) = rows.first() else {
                    return Ok(IndexResume::Run);
                };
                let valid: bool = row.try_get(0).map_err(lookup_error)?;
                let ours: bool = row.try_get(1).map_err(lookup_error)?;
                match (ours, valid) {
                    // Another table's index of that name: not ours to drop or to count; the
                    // statement runs and PostgreSQL says the name is taken.
                    (false, _) => return Ok(IndexResume::Run),
                    (true, true) => {
                        tracing::info!(index = %name, "the index was built before the failure was recorded; counting the statement as done");
                        return Ok(IndexResume::AlreadyBuilt);
                    }
                    (true, false) => vec![name],
                }
            }
            None => {
                // An unnamed index cannot be looked up by name: the table's INVALID indexes,
                // except those another session is building right now.
                let sql = format!(
                    "SELECT indexrelid::regclass::text FROM pg_index \
                     WHERE indrelid = to_regclass({table}) AND NOT indisvalid \
                     AND indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index)"
                );
                let rows = sqlx::raw_sql(&sql)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(lookup_error)?;
                rows.iter()
                    .filter_map(|r| r.try_get::<String, _>(0).ok())
                    .collect()
            }
        };
        for name in invalid {
            tracing::warn!(index = %name, "dropping the INVALID index left by a failed CREATE INDEX CONCURRENTLY before building it again");
            self.run(
                &format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"),
                deadline,
                stop,
            )
            .await?;
        }
        Ok(IndexResume::Run)
    }
}

/// Connection parameters the driver understands. Any other query parameter is left out before
/// the driver sees the URL: the driver would log an unknown parameter together with its value,
/// and `sslpassword=…` (or a misspelt `Password=…`) is a secret.
const DRIVER_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The driver's options for `target`: the URL with only the parameters the driver knows (the
/// others are named, never their values, in one warning), startgate's `application_name`, and
/// the driver's own statement logging turned down (it would log migration SQL at info level).
fn connect_options(target: &ConnectTarget) -> Result<PgConnectOptions, String> {
    let mut url = url::Url::parse(target.url.expose())
        .map_err(|e| format!("bad connection URL {}: {e}", target.url))?;
    type Pairs = Vec<(String, String)>;
    let (kept, dropped): (Pairs, Pairs) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| DRIVER_PARAMETERS.contains(&k.as_str()) || k.starts_with("options["));
    if !dropped.is_empty() {
        let names: Vec<&str> = dropped.iter().map(|(k, _)| k.as_str()).collect();
        tracing::warn!(
            parameters = %names.join(","),
            "ignoring connection parameters startgate's PostgreSQL driver does not support: {}",
            names.join(", ")
        );
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    let options = PgConnectOptions::from_str(url.as_str())
        .map_err(|e| format!("bad connection URL {}: {}", target.url, describe(&e)))?
        .application_name(&target.application_name)
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(3600));
    Ok(options)
}

/// The `application_name` of one of startgate's other sessions (`startgate-monitor@HOST`,
/// `startgate-backup@HOST`), cut to the 63 bytes PostgreSQL keeps.
fn role_name(application_name: &str, role: &str) -> String {
    let mut name = application_name.replacen("startgate@", &format!("startgate-{role}@"), 1);
    while name.len() > 63 {
        name.pop();
    }
    name
}

fn query_error(what: &str, e: &sqlx::Error) -> BackendError {
    BackendError::Query {
        what: what.to_string(),
        message: describe(e),
    }
}

fn connection_failure(e: &sqlx::Error, done: u32) -> ApplyFailure {
    ApplyFailure {
        kind: FailureKind::Connection,
        statement: None,
        line: None,
        position: None,
        sqlstate: sqlstate_of(e),
        message: describe(e),
        blockers: Vec::new(),
        statements_done: done,
    }
}

/// Writing the history row or committing failed after the migration's statements ran (a
/// deferred constraint, say): no statement to name; cancelled by a signal or the wall-clock
/// limit as a statement would be.
fn tail_failure(e: StatementError, job: &ApplyJob<'_>) -> ApplyFailure {
    ApplyFailure {
        kind: match failure_kind(&e, job) {
            FailureKind::Statement => FailureKind::Connection,
            kind => kind,
        },
        statement: None,
        line: None,
        position: None,
        sqlstate: e.sqlstate,
        message: e.message,
        blockers: e.blockers,
        statements_done: 0,
    }
}

fn lock_lost(done: u32) -> ApplyFailure {
    ApplyFailure {
        kind: FailureKind::LockLost,
        statement: None,
        line: None,
        position: None,
        sqlstate: None,
        message: "this session no longer holds the migration lock".to_string(),
        blockers: Vec::new(),
        statements_done: done,
    }
}

fn interrupted_between(
    stop: crate::supervise::signals::Stop,
    index: u32,
    statement: &Statement,
    done: u32,
) -> ApplyFailure {
    ApplyFailure {
        kind: FailureKind::Interrupted(stop),
        statement: Some(index),
        line: Some(statement.line),
        position: None,
        sqlstate: None,
        message: format!("stopped by {} before this statement", stop.name()),
        blockers: Vec::new(),
        statements_done: done,
    }
}

/// What kind of failure a statement's error is: a cancel says why it was sent.
fn failure_kind(e: &StatementError, job: &ApplyJob<'_>) -> FailureKind {
    match (e.cancelled, e.sqlstate.as_deref()) {
        (Some(Cancelled::Stop(stop)), _) => FailureKind::Interrupted(stop),
        (Some(Cancelled::Deadline), _) => FailureKind::TimedOut(job.timeout),
        (None, Some(sqlstate::LOCK_NOT_AVAILABLE)) => FailureKind::LockTimeout,
        _ => FailureKind::Statement,
    }
}

fn statement_failure(
    e: StatementError,
    index: u32,
    statement: &Statement,
    job: &ApplyJob<'_>,
    done: u32,
) -> ApplyFailure {
    ApplyFailure {
        kind: failure_kind(&e, job),
        statement: Some(index),
        line: Some(statement.line),
        position: e.position.map(|p| locate(statement, p)),
        sqlstate: e.sqlstate,
        message: e.message,
        blockers: e.blockers,
        statements_done: done,
    }
}

/// Quotes a value as a PostgreSQL string literal, as `quote_literal` does: `'` doubled, and
/// the `E''` form when the value holds a backslash.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// A timestamp column as RFC 3339 UTC text with milliseconds.
pub(crate) fn utc(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// Decodes a history row; `full` when the query named every column of
/// [`history::COLUMNS`], not only the first five (`read_history_brief`).
fn decode_row(row: &PgRow, table: &HistoryTable, full: bool) -> Result<HistoryRow, BackendError> {
    let table = TableName(table);
    let bad = |problem: String| BackendError::BadHistory {
        table: table.to_string(),
        problem,
    };
    let version: String = row
        .try_get(0)
        .map_err(|e| bad(history::column_problem(None, 0, &e, describe)))?;
    macro_rules! get {
        ($i:expr) => {
            row.try_get($i)
                .map_err(|e| bad(history::column_problem(Some(&version), $i, &e, describe)))?
        };
    }
    let statements_done: i32 = get!(4);
    let raw = history::RawRow {
        name: get!(1),
        checksum: get!(2),
        state: get!(3),
        statements_done: i64::from(statements_done),
        applied_at: if full { get!(5) } else { None },
        execution_ms: if full { get!(6) } else { None },
        applied_by: if full { get!(7) } else { None },
        error_sqlstate: if full { get!(8) } else { None },
        error: if full { get!(9) } else { None },
        repaired: if full { get!(10) } else { false },
        version,
    };
    raw.check(&table)
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
