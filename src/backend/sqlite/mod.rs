//! The SQLite backend: one `SqliteConnection` (no pool) to the database file of
//! `DATABASE_URL=sqlite://PATH`, created if missing (its directory must exist).
//!
//! How it maps what the PostgreSQL backend does:
//!
//! - **The lock** is an advisory `flock` on the sidecar file `PATH.startgate-lock` ([`lock`]):
//!   held for the whole locked section, released by the kernel if startgate dies, and never in
//!   the way of the applying connection. `lock_holder` reads the pid and name its holder wrote
//!   there; `terminate` refuses (SQLite has no server sessions to end: stop that process).
//! - **Waiting on other writers.** SQLite has one writer at a time. A connection that needs a
//!   lock another connection (the app) holds waits up to its `busy_timeout`, then fails with
//!   `SQLITE_BUSY`. startgate's own history reads and writes wait up to
//!   `STARTGATE_LOCK_TIMEOUT` (as `lock_timeout` bounds them on PostgreSQL); a migration waits
//!   up to its lock timeout (or, when that is `0`, until its wall-clock deadline), and a busy
//!   migration is a lock timeout: retried with backoff (`STARTGATE_LOCK_RETRIES`).
//! - **Each ordinary migration and its history row** run in one `BEGIN IMMEDIATE` … `COMMIT`
//!   transaction (IMMEDIATE takes the write lock at once, so the migration waits for other
//!   writers at its start, never half-way). `no-transaction` migrations run statement by
//!   statement with the same `running` → `applied`/`failed` row protocol as on PostgreSQL.
//! - **The wall-clock limit and SIGTERM/SIGINT** interrupt a running statement through SQLite's
//!   progress handler ([`Watch`]), which SQLite calls every few thousand virtual-machine steps:
//!   the statement fails with `SQLITE_INTERRUPT` and its transaction is rolled back. A
//!   connection sleeping in its busy handler (waiting for another writer) is not interrupted;
//!   that wait is bounded by `busy_timeout`. `STARTGATE_STATEMENT_TIMEOUT` does not apply to
//!   SQLite: there is no per-statement limit besides the wall-clock one.
//! - **The recovery point** is the time just before the migration; there is no WAL position.
//! - **Error codes.** SQLite has result codes, not SQLSTATEs: failures name them
//!   (`SQLITE_CONSTRAINT_UNIQUE`). In the history's `error_sqlstate` column, a busy database and
//!   an interrupted statement are recorded as PostgreSQL's `55P03` and `57014`, the codes the
//!   planner resumes a failed no-transaction migration on; other failures keep SQLite's name.
//! - **Journal mode.** startgate leaves it as the database file has it: WAL is a persistent
//!   property of the file, chosen by the app, and switching it needs an exclusive lock that
//!   `busy_timeout` cannot wait for (launchbadge/sqlx#1930).
//! - **Foreign keys** stay off on startgate's connection, as in SQLite itself and the `sqlite3`
//!   shell (sqlx would turn them on): SQLite's documented way to change a table (create the new
//!   one, copy, drop the old, rename) needs them off, and `PRAGMA foreign_keys` cannot change
//!   inside the migration's transaction.
//! - **The history table** has PostgreSQL's columns with SQLite types (timestamps as RFC 3339
//!   UTC text with milliseconds). SQLite has no schemas: `STARTGATE_HISTORY_TABLE` names the
//!   table alone, or `public.NAME`/`main.NAME`; another schema is refused.
//! - **Backups** are `VACUUM INTO` a new file: a consistent copy of the whole database, data
//!   included, that opens as it is.
//!
//! Identifiers are quoted with [`quote_ident`]; values go in as bind parameters.
//!
//! Submodules: [`lock`] (the sidecar lock), [`catalog`] (the schema snapshot), [`tools`] (other
//! tools' tables: Alembic's version table, `baseline --from`, the migrate command's runs).

mod catalog;
pub mod lock;
mod tools;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::time::Instant;

use super::{
    Applied, ApplyFailure, ApplyJob, Backend, BackendError, CommandLimits, CommandRun,
    CommandSession, CommandSessions, ConnectFailure, ConnectFailureKind, ConnectTarget,
    DatabaseInfo, DumpError, DumpLimits, FailureKind, ForeignHistory, ForeignTool, HistoryWrite,
    LockHolder, LockKey, history,
};
use crate::config::HistoryTable;
use crate::migrate::{HistoryRow, RowState, Statement};
use crate::redact;
use crate::supervise::signals::{Stop, StopToken};
use lock::FileLock;

/// SQLite result codes startgate acts on (<https://www.sqlite.org/rescode.html>), primary
/// codes (the low byte of an extended code).
mod code {
    pub const BUSY: i32 = 5;
    pub const LOCKED: i32 = 6;
    pub const INTERRUPT: i32 = 9;
}

/// What the history records for a busy database and an interrupted statement: the codes the
/// planner resumes on (`crate::migrate::plan`), PostgreSQL's `lock_not_available` and
/// `query_canceled`.
const RECORDED_BUSY: &str = crate::migrate::plan::SQLSTATE_LOCK_TIMEOUT;
const RECORDED_INTERRUPT: &str = crate::migrate::plan::SQLSTATE_QUERY_CANCELED;

/// How many virtual-machine steps SQLite runs between two calls of the progress handler: a
/// few microseconds of work, so a deadline or a signal is noticed at once, at a negligible cost.
const PROGRESS_STEPS: i32 = 1000;

/// The longest closing the connection may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// RFC 3339 UTC with milliseconds, as SQLite's `strftime` writes it.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// startgate's connection to one SQLite database file.
pub struct Sqlite {
    conn: SqliteConnection,
    info: DatabaseInfo,
    /// The database file, as the URL names it.
    path: PathBuf,
    /// The migration lock (a sidecar file beside the database).
    lock: FileLock,
    /// Written into the lock file, so a waiting replica can say who holds the lock.
    application_name: String,
    /// `STARTGATE_LOCK_TIMEOUT`: the connection's `busy_timeout` outside migrations.
    lock_timeout: Duration,
    /// What the progress handler checks while a migration statement runs.
    watch: Arc<Mutex<Watch>>,
}

/// What the progress handler looks at: armed around each migration statement (and the
/// backup), disarmed otherwise, so that startgate's own history writes are never interrupted.
#[derive(Debug, Default)]
struct Watch {
    /// Interrupt the statement at this time (the wall-clock limit).
    deadline: Option<std::time::Instant>,
    /// Interrupt the statement when this fires (SIGTERM, SIGINT).
    stop: Option<StopToken>,
    /// Why the handler interrupted the statement, once it did.
    fired: Option<Cancelled>,
}

/// Why a statement was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    Deadline,
    Stop(Stop),
}

impl Watch {
    /// Called by SQLite from the connection's worker thread: `false` interrupts the statement.
    fn keep_going(&mut self) -> bool {
        if self.fired.is_some() {
            return false;
        }
        if self
            .deadline
            .is_some_and(|deadline| std::time::Instant::now() >= deadline)
        {
            self.fired = Some(Cancelled::Deadline);
        } else if let Some(stop) = self.stop.as_ref().and_then(StopToken::stopped) {
            self.fired = Some(Cancelled::Stop(stop));
        }
        self.fired.is_none()
    }
}

/// A failed statement, as the apply paths need it.
#[derive(Debug, Clone)]
struct StatementError {
    /// SQLite's extended result code, when SQLite failed the statement.
    code: Option<i32>,
    /// SQLite's message (with the code's name), secrets masked.
    message: String,
    cancelled: Option<Cancelled>,
    /// The connection itself failed (its worker thread is gone): nothing more can be done on it.
    lost: bool,
}

impl StatementError {
    fn from_sqlx(e: &sqlx::Error, cancelled: Option<Cancelled>) -> StatementError {
        StatementError {
            code: code_of(e),
            message: message_of(e),
            cancelled: cancelled.filter(|_| primary(code_of(e)) == Some(code::INTERRUPT)),
            lost: !matches!(e, sqlx::Error::Database(_)),
        }
    }

    fn is_busy(&self) -> bool {
        matches!(primary(self.code), Some(code::BUSY | code::LOCKED))
    }

    /// The failure as the history's `error_sqlstate` records it (see the module doc).
    fn recorded_code(&self) -> String {
        if self.cancelled.is_some() {
            RECORDED_INTERRUPT.to_string()
        } else if self.is_busy() {
            RECORDED_BUSY.to_string()
        } else {
            self.code.map_or_else(String::new, code_name)
        }
    }
}

/// Quotes an identifier for SQLite: `"` around it, inner `"` doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The history table's name in SQLite, which has no schemas: `public` (startgate's default
/// schema) and `main` (SQLite's name for the database itself) are accepted and dropped.
pub fn table_name(table: &HistoryTable) -> Result<&str, BackendError> {
    match table.schema.as_str() {
        "public" | "main" => Ok(&table.table),
        other => Err(BackendError::Query {
            what: format!("using the history table {other}.{}", table.table),
            message: format!(
                "SQLite has no schema {other:?}: set STARTGATE_HISTORY_TABLE to the table name \
                 alone (e.g. {})",
                table.table
            ),
        }),
    }
}

/// The history table's definition in SQLite: PostgreSQL's columns (DESIGN.md "Migration
/// files"), with text timestamps and an integer for the boolean. `recovery_lsn` stays NULL.
pub fn history_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
    version text PRIMARY KEY NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'failed', 'applied')),
    statements_done integer NOT NULL DEFAULT 0,
    applied_at text,
    execution_ms integer,
    applied_by text,
    startgate_version text,
    recovery_time text,
    recovery_lsn text,
    error_sqlstate text,
    error text,
    repaired integer NOT NULL DEFAULT 0 CHECK (repaired IN (0, 1))
)",
        quote_ident(table)
    )
}

/// The extended result code of a SQLite error.
fn code_of(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse().ok()),
        _ => None,
    }
}

/// The primary result code (the low byte of an extended one).
fn primary(code: Option<i32>) -> Option<i32> {
    code.map(|c| c & 0xff)
}

/// The name of a result code as SQLite's documentation writes it: the extended name for the
/// codes an operator meets in migrations, else the primary name.
fn code_name(code: i32) -> String {
    let extended = match code {
        261 => Some("SQLITE_BUSY_RECOVERY"),
        517 => Some("SQLITE_BUSY_SNAPSHOT"),
        773 => Some("SQLITE_BUSY_TIMEOUT"),
        262 => Some("SQLITE_LOCKED_SHAREDCACHE"),
        275 => Some("SQLITE_CONSTRAINT_CHECK"),
        531 => Some("SQLITE_CONSTRAINT_COMMITHOOK"),
        787 => Some("SQLITE_CONSTRAINT_FOREIGNKEY"),
        1043 => Some("SQLITE_CONSTRAINT_FUNCTION"),
        1299 => Some("SQLITE_CONSTRAINT_NOTNULL"),
        1555 => Some("SQLITE_CONSTRAINT_PRIMARYKEY"),
        1811 => Some("SQLITE_CONSTRAINT_TRIGGER"),
        2067 => Some("SQLITE_CONSTRAINT_UNIQUE"),
        2323 => Some("SQLITE_CONSTRAINT_VTAB"),
        2579 => Some("SQLITE_CONSTRAINT_ROWID"),
        3091 => Some("SQLITE_CONSTRAINT_DATATYPE"),
        _ => None,
    };
    if let Some(name) = extended {
        return name.to_string();
    }
    let name = match code & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => return format!("SQLite code {code}"),
    };
    name.to_string()
}

/// SQLite's own words for an error, secrets masked.
fn message_of(e: &sqlx::Error) -> String {
    let text = match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    redact::mask(&text).into_owned()
}

/// SQLite's words for an error with the code's name: `no such table: t (SQLITE_ERROR)`.
fn describe(e: &sqlx::Error) -> String {
    match code_of(e) {
        Some(code) => format!("{} ({})", message_of(e), code_name(code)),
        None => message_of(e),
    }
}

fn query_error(what: &str, e: &sqlx::Error) -> BackendError {
    BackendError::Query {
        what: what.to_string(),
        message: describe(e),
    }
}

/// A busy timeout for SQLite: milliseconds, `0` (none) as the largest value it takes.
fn busy_ms(d: Duration) -> u128 {
    match d.as_millis() {
        0 => i32::MAX as u128,
        ms => ms.min(i32::MAX as u128),
    }
}

/// The current time as the history records it: RFC 3339 UTC with milliseconds.
fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Why the database file cannot be opened before SQLite is even asked: a missing directory
/// (SQLite creates the file, not its directory) or a directory where the file should be.
fn check_path(path: &Path) -> Result<(), String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "the directory {} of the SQLite database {} does not exist: create it (startgate \
             creates the database file, not its directory)",
            parent.display(),
            path.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "{} is a directory, not a SQLite database file",
            path.display()
        ));
    }
    Ok(())
}

/// The driver's options for the database at `path`: created if missing, SQLite's own
/// defaults (foreign keys off, the file's journal mode), `busy_timeout` from the lock timeout,
/// and the driver's statement logging turned down (it would log migration SQL at info level).
fn connect_options(path: &Path, lock_timeout: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(false)
        .busy_timeout(Duration::from_millis(busy_ms(lock_timeout) as u64))
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(3600))
}

impl Backend for Sqlite {
    async fn connect(target: &ConnectTarget) -> Result<Self, ConnectFailure> {
        let bad_url = |detail: String| ConnectFailure {
            kind: ConnectFailureKind::BadUrl,
            detail,
        };
        if target.url.is_sqlite_memory() {
            return Err(bad_url(
                "sqlite::memory: is a database private to one connection that disappears when \
                 startgate exits; the app would never see it: use sqlite://PATH"
                    .to_string(),
            ));
        }
        let Some(path) = target.url.sqlite_path() else {
            return Err(bad_url(format!("{} is not a sqlite URL", target.url)));
        };
        if target.url.expose().contains('?') {
            tracing::warn!(
                "ignoring the parameters of the sqlite URL: startgate opens the file with its own settings"
            );
        }
        check_path(&path).map_err(bad_url)?;
        let options = connect_options(&path, target.lock_timeout);
        let attempt = async {
            let mut conn = options.connect().await?;
            // A real query that reads the file: a file that is not a database fails here, not
            // at the first migration.
            let row: SqliteRow =
                sqlx::query("SELECT sqlite_version(), (SELECT count(*) FROM sqlite_master)")
                    .fetch_one(&mut conn)
                    .await?;
            let version: String = row.try_get(0)?;
            Ok::<_, sqlx::Error>((conn, version))
        };
        let (mut conn, version) = match tokio::time::timeout(target.attempt_timeout, attempt).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                return Err(ConnectFailure {
                    kind: if primary(code_of(&e)) == Some(code::BUSY) {
                        ConnectFailureKind::NotReady
                    } else {
                        ConnectFailureKind::Other
                    },
                    detail: format!("{}: {}", path.display(), describe(&e)),
                });
            }
            Err(_) => {
                return Err(ConnectFailure {
                    kind: ConnectFailureKind::Timeout,
                    detail: format!(
                        "{} did not open within {}",
                        path.display(),
                        crate::duration::HumanDuration(target.attempt_timeout)
                    ),
                });
            }
        };
        let watch = Arc::new(Mutex::new(Watch::default()));
        let handler = watch.clone();
        match conn.lock_handle().await {
            Ok(mut handle) => handle.set_progress_handler(PROGRESS_STEPS, move || {
                handler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .keep_going()
            }),
            Err(e) => {
                return Err(ConnectFailure {
                    kind: ConnectFailureKind::Other,
                    detail: format!("{}: {}", path.display(), describe(&e)),
                });
            }
        }
        let info = DatabaseInfo {
            backend: "sqlite",
            host: Some(path.display().to_string()),
            port: None,
            name: Some(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string()),
            ),
            url: target.url.redacted(),
            server_version: Some(version),
        };
        Ok(Sqlite {
            conn,
            info,
            lock: FileLock::new(&path),
            path,
            application_name: target.application_name.clone(),
            lock_timeout: target.lock_timeout,
            watch,
        })
    }

    fn info(&self) -> &DatabaseInfo {
        &self.info
    }

    async fn read_history(
        &mut self,
        table: &HistoryTable,
    ) -> Result<Option<Vec<HistoryRow>>, BackendError> {
        let name = table_name(table)?;
        if !self.table_exists(name).await? {
            return Ok(None);
        }
        let sql = format!(
            "SELECT version, name, checksum, state, statements_done, applied_at, execution_ms, \
             applied_by, error_sqlstate, error, repaired FROM {}",
            quote_ident(name)
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| query_error(&format!("reading the history table {name}"), &e))?;
        rows.iter()
            .map(|row| decode_row(row, name))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn prepare_for_migrating(&mut self) -> Result<(), BackendError> {
        // Nothing to prepare: there is no network session to keep alive, and statements are
        // interrupted through the progress handler installed at connect.
        Ok(())
    }

    async fn try_lock(&mut self, _key: LockKey) -> Result<bool, BackendError> {
        // One lock per database file: SQLite has one writer at a time anyway, so two
        // histories in one file would gain nothing from separate locks.
        self.lock
            .try_lock(&self.application_name)
            .map_err(|e| lock_error("taking the migration lock", self.lock.path(), &e))
    }

    async fn lock_holder(&mut self, _key: LockKey) -> Result<Option<LockHolder>, BackendError> {
        self.lock.holder().map_err(|e| {
            lock_error(
                "looking up the migration lock's holder",
                self.lock.path(),
                &e,
            )
        })
    }

    async fn unlock(&mut self, _key: LockKey) -> Result<(), BackendError> {
        if !self.lock.is_held() {
            tracing::warn!("the migration lock was not held by this process when releasing it");
        }
        self.lock
            .unlock()
            .map_err(|e| lock_error("releasing the migration lock", self.lock.path(), &e))
    }

    async fn terminate(&mut self, pid: i64) -> Result<bool, BackendError> {
        Err(BackendError::Query {
            what: format!("terminating pid {pid}"),
            message: format!(
                "SQLite has no server sessions to terminate: the migration lock on {} is held \
                 by process {pid} on the host that runs it; stop that process (the lock ends \
                 with it)",
                self.path.display()
            ),
        })
    }

    async fn ensure_history_table(&mut self, table: &HistoryTable) -> Result<(), BackendError> {
        let name = table_name(table)?;
        if self.table_exists(name).await? {
            return Ok(());
        }
        sqlx::raw_sql(&history_table_ddl(name))
            .execute(&mut self.conn)
            .await
            .map_err(|e| query_error(&format!("creating the history table {name}"), &e))?;
        Ok(())
    }

    async fn holds_nothing(&mut self, table: &HistoryTable) -> Result<bool, BackendError> {
        let name = table_name(table)?;
        let what = "looking for objects to back up";
        // Everything of the database's own, but SQLite's internal tables (and their
        // autoindexes) and the history table with what hangs off it.
        let row = sqlx::query(
            "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND tbl_name <> ?1 COLLATE NOCASE)",
        )
        .bind(name)
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
        let name = match table_name(job.history) {
            Ok(name) => name,
            Err(e) => return Err(connection_failure(e.to_string(), None, 0)),
        };
        let started = Instant::now();
        let deadline = started + job.timeout;
        // A migration waits for other writers up to its lock timeout; with none, up to its
        // deadline (SQLite's `0` would mean not at all).
        let wait = if job.lock_timeout.is_zero() {
            job.timeout
        } else {
            job.lock_timeout
        };
        if let Err(e) = self.set_busy_timeout(wait).await {
            return Err(connection_failure(describe(&e), code_of(&e), 0));
        }
        let result = if job.migration.options.no_transaction {
            self.apply_statement_by_statement(job, name, started, deadline, stop)
                .await
        } else {
            self.apply_in_transaction(job, name, started, deadline, stop)
                .await
        };
        self.restore_busy_timeout().await;
        result
    }

    async fn write_history(
        &mut self,
        table: &HistoryTable,
        rows: &[HistoryWrite],
    ) -> Result<(), BackendError> {
        let name = table_name(table)?;
        let what = format!("writing the history table {name}");
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
            .map_err(|e| query_error(&what, &e))?;
        for w in rows {
            let values = RowValues {
                version: &w.version,
                name: &w.name,
                checksum: &w.checksum,
                state: w.state,
                statements_done: w.statements_done,
                execution_ms: None,
                applied_by: &w.applied_by,
                recovery_time: None,
                error_sqlstate: w.error_sqlstate.as_deref(),
                error: w.error.as_deref(),
                repaired: w.repaired,
            };
            if let Err(e) = self.upsert(name, &values).await {
                self.rollback_quietly().await;
                return Err(query_error(&what, &e));
            }
        }
        if let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await {
            self.rollback_quietly().await;
            return Err(query_error(&what, &e));
        }
        Ok(())
    }

    async fn read_foreign_history(
        &mut self,
        tool: ForeignTool,
    ) -> Result<ForeignHistory, BackendError> {
        self.foreign_history(tool).await
    }

    async fn snapshot(
        &mut self,
        history: &HistoryTable,
    ) -> Result<crate::schema::Snapshot, BackendError> {
        let name = table_name(history)?;
        let server_version = self.info.server_version.clone().unwrap_or_default();
        catalog::snapshot(&mut self.conn, name, &server_version).await
    }

    async fn invalid_indexes(&mut self) -> Result<Vec<String>, BackendError> {
        // SQLite builds an index inside its statement's transaction: there is no INVALID
        // index left behind by a failed build.
        Ok(Vec::new())
    }

    fn backup_extension(&self) -> &'static str {
        "sqlite"
    }

    async fn dump_schema(
        &mut self,
        path: &Path,
        limits: &DumpLimits,
        stop: &StopToken,
    ) -> Result<(), DumpError> {
        self.vacuum_into(path, limits, stop).await
    }

    async fn holds_lock(&mut self, _key: LockKey) -> Result<bool, BackendError> {
        // The lock is this process's open lock file: no pooler can take it away.
        Ok(self.lock.is_held())
    }

    async fn read_alembic_versions(
        &mut self,
        table: &str,
    ) -> Result<Option<Vec<String>>, BackendError> {
        self.alembic_versions(table).await
    }

    fn command_environment(&self, _limits: &CommandLimits) -> Vec<(String, String)> {
        // SQLite drivers read no environment for timeouts.
        Vec::new()
    }

    async fn command_sessions(
        &mut self,
        _which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        // A SQLite database has no server sessions: the command's connections are inside its
        // own processes, which the guard kills with its process group.
        Ok(Vec::new())
    }

    async fn terminate_command_sessions(
        &mut self,
        _which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError> {
        Ok(Vec::new())
    }

    async fn terminate_leftover_sessions(
        &mut self,
        _prefix: &str,
        _ours: &str,
    ) -> Result<Vec<CommandSession>, BackendError> {
        Ok(Vec::new())
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

    async fn close(mut self) {
        if let Err(e) = self.lock.unlock() {
            tracing::debug!(error = %e, "could not release the migration lock; closing its file does");
        }
        // Bounded, as on PostgreSQL; a dropped connection is closed by its worker thread too.
        let _ = tokio::time::timeout(CLOSE_LIMIT, self.conn.close()).await;
    }
}

fn lock_error(what: &str, path: &Path, e: &std::io::Error) -> BackendError {
    BackendError::Query {
        what: what.to_string(),
        message: format!("lock file {}: {e}", path.display()),
    }
}

/// The values of one history row, for [`Sqlite::upsert`].
struct RowValues<'a> {
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    state: RowState,
    statements_done: u32,
    /// Set for an applied row: `applied_at` becomes the time of the write.
    execution_ms: Option<i64>,
    applied_by: &'a str,
    /// The time just before the migration.
    recovery_time: Option<&'a str>,
    error_sqlstate: Option<&'a str>,
    error: Option<&'a str>,
    repaired: bool,
}

/// `INSERT … ON CONFLICT (version) DO UPDATE` for one history row of `table`, values bound as
/// `?1`…`?11` in [`RowValues`]' order. `applied_at` is the time of the write for an applied
/// row; the recovery time of an earlier attempt is kept when this write has none.
fn upsert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {t} (version, name, checksum, state, statements_done, applied_at, \
         execution_ms, applied_by, startgate_version, recovery_time, recovery_lsn, \
         error_sqlstate, error, repaired) \
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?4 = 'applied' THEN {NOW} END, ?6, ?7, ?8, ?9, \
         NULL, ?10, ?11, ?12) \
         ON CONFLICT (version) DO UPDATE SET name = excluded.name, checksum = excluded.checksum, \
         state = excluded.state, statements_done = excluded.statements_done, \
         applied_at = excluded.applied_at, execution_ms = excluded.execution_ms, \
         applied_by = excluded.applied_by, startgate_version = excluded.startgate_version, \
         recovery_time = coalesce(excluded.recovery_time, recovery_time), \
         error_sqlstate = excluded.error_sqlstate, error = excluded.error, \
         repaired = excluded.repaired",
        t = quote_ident(table)
    )
}

/// Decodes one history row (the columns of `read_history`).
fn decode_row(row: &SqliteRow, table: &str) -> Result<HistoryRow, BackendError> {
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
    let repaired: i64 = get!(10);
    let raw = history::RawRow {
        name: get!(1),
        checksum: get!(2),
        state: get!(3),
        statements_done: get!(4),
        applied_at: get!(5),
        execution_ms: get!(6),
        applied_by: get!(7),
        error_sqlstate: get!(8),
        error: get!(9),
        repaired: repaired != 0,
        version,
    };
    raw.check(&table)
}

fn connection_failure(message: String, code: Option<i32>, done: u32) -> ApplyFailure {
    ApplyFailure {
        kind: FailureKind::Connection,
        statement: None,
        line: None,
        position: None,
        sqlstate: code.map(code_name),
        message,
        blockers: Vec::new(),
        statements_done: done,
    }
}

/// A busy database at the start or the commit of a migration: a lock timeout, retried.
fn busy_failure(e: &sqlx::Error, done: u32) -> ApplyFailure {
    let busy = matches!(primary(code_of(e)), Some(code::BUSY | code::LOCKED));
    ApplyFailure {
        kind: if busy {
            FailureKind::LockTimeout
        } else {
            FailureKind::Connection
        },
        statement: None,
        line: None,
        position: None,
        sqlstate: code_of(e).map(code_name),
        message: if busy {
            format!(
                "{} (another connection is writing to the database)",
                message_of(e)
            )
        } else {
            message_of(e)
        },
        blockers: Vec::new(),
        statements_done: done,
    }
}

fn interrupted_between(stop: Stop, index: u32, statement: &Statement, done: u32) -> ApplyFailure {
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

fn statement_failure(
    e: StatementError,
    index: u32,
    statement: &Statement,
    job: &ApplyJob<'_>,
    done: u32,
) -> ApplyFailure {
    let kind = match e.cancelled {
        Some(Cancelled::Stop(stop)) => FailureKind::Interrupted(stop),
        Some(Cancelled::Deadline) => FailureKind::TimedOut(job.timeout),
        None if e.is_busy() => FailureKind::LockTimeout,
        None if e.lost => FailureKind::Connection,
        None => FailureKind::Statement,
    };
    ApplyFailure {
        kind,
        statement: Some(index),
        line: Some(statement.line),
        position: None,
        sqlstate: e.code.map(code_name),
        message: e.message,
        blockers: Vec::new(),
        statements_done: done,
    }
}

/// What stays the same in every write of one migration's row.
struct RowBase<'a> {
    table: &'a str,
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    applied_by: &'a str,
    recovery_time: &'a str,
    started: Instant,
}

impl<'a> RowBase<'a> {
    /// The row of `job`'s migration: keyed by the existing row's version text when resuming,
    /// so the row is updated in place even when the file writes the version differently.
    fn new(
        job: &'a ApplyJob<'a>,
        table: &'a str,
        recovery_time: &'a str,
        started: Instant,
    ) -> RowBase<'a> {
        let m = job.migration;
        RowBase {
            table,
            version: job
                .existing_version
                .as_deref()
                .unwrap_or(m.version.as_str()),
            name: &m.name,
            checksum: &m.checksum,
            applied_by: job.applied_by,
            recovery_time,
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
                .then(|| self.started.elapsed().as_millis() as i64),
            applied_by: self.applied_by,
            recovery_time: Some(self.recovery_time),
            error_sqlstate: failure.map(|f| f.0).filter(|c| !c.is_empty()),
            error: failure.map(|f| f.1),
            repaired: false,
        }
    }
}

impl Sqlite {
    /// Whether a table of this name exists (SQLite compares names without case).
    async fn table_exists(&mut self, name: &str) -> Result<bool, BackendError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
             AND name = ?1 COLLATE NOCASE)",
        )
        .bind(name)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| query_error(&format!("looking for the table {name}"), &e))?;
        row.try_get::<bool, _>(0)
            .map_err(|e| query_error(&format!("looking for the table {name}"), &e))
    }

    async fn set_busy_timeout(&mut self, wait: Duration) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(&format!("PRAGMA busy_timeout = {}", busy_ms(wait)))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    /// Back to `STARTGATE_LOCK_TIMEOUT` for startgate's own reads and writes.
    async fn restore_busy_timeout(&mut self) {
        if let Err(e) = self.set_busy_timeout(self.lock_timeout).await {
            tracing::debug!(error = %describe(&e), "could not reset busy_timeout");
        }
    }

    async fn rollback_quietly(&mut self) {
        // SQLite rolls some failures back by itself (an interrupt, a full disk); then there is
        // no transaction left, and ROLLBACK says so.
        if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await {
            tracing::debug!(error = %describe(&e), "rollback failed (there may be no transaction left)");
        }
    }

    /// Arms the progress handler: statements from now on are interrupted at `deadline` or on
    /// a stop request, until [`Sqlite::disarm`].
    fn arm(&self, deadline: Instant, stop: &StopToken) {
        let mut watch = self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watch.deadline = Some(deadline.into_std());
        watch.stop = Some(stop.clone());
        watch.fired = None;
    }

    /// Disarms the progress handler; says whether (and why) it interrupted a statement.
    fn disarm(&self) -> Option<Cancelled> {
        let mut watch = self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watch.deadline = None;
        watch.stop = None;
        watch.fired.take()
    }

    /// Runs one migration statement, interrupted at `deadline` or on a stop request.
    async fn run(
        &mut self,
        sql: &str,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<(), StatementError> {
        self.arm(deadline, stop);
        let result = sqlx::raw_sql(sql).execute(&mut self.conn).await;
        let cancelled = self.disarm();
        result
            .map(|_| ())
            .map_err(|e| StatementError::from_sqlx(&e, cancelled))
    }

    /// Writes one history row.
    async fn upsert(&mut self, table: &str, v: &RowValues<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(&upsert_sql(table))
            .bind(v.version)
            .bind(v.name)
            .bind(v.checksum)
            .bind(v.state.as_str())
            .bind(i64::from(v.statements_done))
            .bind(v.execution_ms)
            .bind(v.applied_by)
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(v.recovery_time)
            .bind(v.error_sqlstate)
            .bind(v.error)
            .bind(v.repaired)
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    /// `PRAGMA foreign_key_check`, as `table row N references parent` lines (at most 5).
    async fn foreign_key_violations(&mut self) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::raw_sql("PRAGMA foreign_key_check")
            .fetch_all(&mut self.conn)
            .await?;
        let mut found = Vec::new();
        for row in rows.iter().take(5) {
            let table: String = row.try_get(0)?;
            let rowid: Option<i64> = row.try_get(1)?;
            let parent: String = row.try_get(2)?;
            found.push(match rowid {
                Some(rowid) => format!("{table} row {rowid} references a missing {parent} row"),
                None => format!("a {table} row references a missing {parent} row"),
            });
        }
        if rows.len() > 5 {
            found.push(format!("and {} more", rows.len() - 5));
        }
        Ok(found)
    }

    async fn apply_in_transaction(
        &mut self,
        job: &ApplyJob<'_>,
        table: &str,
        started: Instant,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure> {
        // IMMEDIATE: the write lock now, waiting up to busy_timeout for other writers, so that
        // the migration never fails half-way for want of it.
        if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await
        {
            return Err(busy_failure(&e, 0));
        }
        let recovery_time = now_text();
        // A repaired migration resumes at its failed statement, even in a transaction.
        let from = job.from_statement as usize;
        for (i, statement) in job.statements.iter().enumerate().skip(from) {
            if let Some(stop) = stop.stopped() {
                self.rollback_quietly().await;
                return Err(interrupted_between(stop, i as u32, statement, 0));
            }
            if let Err(e) = self.run(&statement.sql, deadline, stop).await {
                if !e.lost {
                    self.rollback_quietly().await;
                }
                return Err(statement_failure(e, i as u32, statement, job, 0));
            }
        }
        // Foreign keys are off while migrating (a table rebuild needs that), so what the
        // migration left dangling is checked before it commits, as SQLite's own procedure for
        // changing a table does: a violation rolls the whole migration back.
        match self.foreign_key_violations().await {
            Ok(violations) if violations.is_empty() => {}
            Ok(violations) => {
                self.rollback_quietly().await;
                return Err(ApplyFailure {
                    kind: FailureKind::Statement,
                    statement: None,
                    line: None,
                    position: None,
                    sqlstate: Some("SQLITE_CONSTRAINT_FOREIGNKEY".to_string()),
                    message: format!(
                        "the migration leaves rows whose foreign keys point nowhere \
                         (PRAGMA foreign_key_check): {}",
                        violations.join("; ")
                    ),
                    blockers: Vec::new(),
                    statements_done: 0,
                });
            }
            Err(e) => {
                self.rollback_quietly().await;
                return Err(connection_failure(
                    format!("checking foreign keys: {}", message_of(&e)),
                    code_of(&e),
                    0,
                ));
            }
        }
        let elapsed = started.elapsed();
        let base = RowBase::new(job, table, &recovery_time, started);
        let applied = base.values(RowState::Applied, job.statements.len() as u32, None);
        if let Err(e) = self.upsert(table, &applied).await {
            self.rollback_quietly().await;
            return Err(connection_failure(
                format!("writing the history row: {}", message_of(&e)),
                code_of(&e),
                0,
            ));
        }
        if let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await {
            // A busy COMMIT (readers still on the old state) leaves the transaction open.
            self.rollback_quietly().await;
            return Err(busy_failure(&e, 0));
        }
        Ok(Applied {
            statements_run: job.statements.len().saturating_sub(from) as u32,
            elapsed,
            recovery_time: Some(recovery_time),
            recovery_lsn: None,
        })
    }

    /// A `no-transaction` migration: a `running` history row updated after every statement,
    /// `applied` at the end, `failed` with the statement and the error when one fails
    /// (DESIGN.md "Migration files").
    async fn apply_statement_by_statement(
        &mut self,
        job: &ApplyJob<'_>,
        table: &str,
        started: Instant,
        deadline: Instant,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure> {
        let total = job.statements.len() as u32;
        let mut done = job.from_statement.min(total);
        let recovery_time = now_text();
        let base = RowBase::new(job, table, &recovery_time, started);
        if let Err(e) = self
            .upsert(table, &base.values(RowState::Running, done, None))
            .await
        {
            return Err(busy_failure(&e, done));
        }
        // Which statements run inside the file's own transactions: a failure there must roll
        // that transaction back, which undoes the statements since its BEGIN.
        let (spans, _) = crate::migrate::transaction_spans(job.statements);
        while let Some(statement) = job.statements.get(done as usize) {
            let undo_from = spans.get(done as usize).copied().flatten();
            if let Some(stop) = stop.stopped() {
                let error = StatementError {
                    code: None,
                    message: format!("stopped by {} before this statement", stop.name()),
                    cancelled: Some(Cancelled::Stop(stop)),
                    lost: false,
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
                self.progress(table, base.version, done).await;
            }
        }
        if let Err(e) = self
            .upsert(table, &base.values(RowState::Applied, total, None))
            .await
        {
            return Err(connection_failure(
                format!("writing the history row: {}", message_of(&e)),
                code_of(&e),
                done,
            ));
        }
        Ok(Applied {
            statements_run: total - job.from_statement.min(total),
            elapsed: started.elapsed(),
            recovery_time: Some(recovery_time),
            recovery_lsn: None,
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
            Some(from) if !error.lost => {
                self.rollback_quietly().await;
                u32::try_from(from).unwrap_or(done).min(done)
            }
            _ => done,
        }
    }

    /// Records a completed statement. A failure to record it is logged, not fatal: the
    /// statement did take effect, and a later run finds the row `running` and refuses to guess.
    async fn progress(&mut self, table: &str, version: &str, done: u32) {
        let sql = format!(
            "UPDATE {} SET statements_done = ?1 WHERE version = ?2",
            quote_ident(table)
        );
        if let Err(e) = sqlx::query(&sql)
            .bind(i64::from(done))
            .bind(version)
            .execute(&mut self.conn)
            .await
        {
            tracing::warn!(error = %describe(&e), version, done, "could not record migration progress");
        }
    }

    /// Marks the row `failed` with the statement and the error (when the connection still
    /// works) and builds the failure. `index` is the failing statement's; `done` how many
    /// statements stay applied.
    async fn fail_statement(
        &mut self,
        job: &ApplyJob<'_>,
        base: &RowBase<'_>,
        error: StatementError,
        index: u32,
        done: u32,
        statement: &Statement,
    ) -> ApplyFailure {
        if !error.lost {
            let code = error.recorded_code();
            let values = base.values(RowState::Failed, done, Some((&code, &error.message)));
            if let Err(e) = self.upsert(base.table, &values).await {
                tracing::warn!(error = %describe(&e), "could not record the failure in the history");
            }
        }
        statement_failure(error, index, statement, job, done)
    }

    /// `VACUUM INTO` the empty file at `path`: a consistent copy of the whole database.
    async fn vacuum_into(
        &mut self,
        path: &Path,
        limits: &DumpLimits,
        stop: &StopToken,
    ) -> Result<(), DumpError> {
        // The caller created the file empty with mode 0600; VACUUM INTO accepts an empty file
        // and keeps its mode, so the copy is never readable by others.
        let Some(target) = path.to_str() else {
            return Err(DumpError::Query(format!(
                "the backup path {} is not valid UTF-8, which VACUUM INTO needs",
                path.display()
            )));
        };
        // It reads the database as one transaction: it waits for a writer's commit up to the
        // backup's lock wait, and stops at the backup's time limit or on a signal.
        if let Err(e) = self.set_busy_timeout(limits.lock_wait).await {
            return Err(DumpError::Query(describe(&e)));
        }
        self.arm(Instant::now() + limits.timeout, stop);
        let result = sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&mut self.conn)
            .await;
        let cancelled = self.disarm();
        self.restore_busy_timeout().await;
        let program = "VACUUM INTO".to_string();
        match (result, cancelled) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(Cancelled::Stop(stop))) => Err(DumpError::Run(
                crate::supervise::process::RunError::Interrupted { program, stop },
            )),
            (Err(_), Some(Cancelled::Deadline)) => Err(DumpError::Run(
                crate::supervise::process::RunError::TimedOut {
                    program,
                    limit: limits.timeout,
                    stderr_tail: Vec::new(),
                },
            )),
            (Err(e), None) => Err(DumpError::Query(format!("VACUUM INTO: {}", describe(&e)))),
        }
    }
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

    #[test]
    fn the_history_table_has_no_schema() {
        let table = |schema: &str| HistoryTable {
            schema: schema.to_string(),
            table: "startgate_migrations".to_string(),
        };
        assert_eq!(
            table_name(&table("public")).unwrap(),
            "startgate_migrations"
        );
        assert_eq!(table_name(&table("main")).unwrap(), "startgate_migrations");
        let refused = table_name(&table("app")).unwrap_err().to_string();
        assert_eq!(
            refused,
            "using the history table app.startgate_migrations failed: SQLite has no schema \
             \"app\": set STARTGATE_HISTORY_TABLE to the table name alone (e.g. \
             startgate_migrations)"
        );
    }

    #[test]
    fn result_codes_have_their_names() {
        for (code, name) in [
            (1, "SQLITE_ERROR"),
            (5, "SQLITE_BUSY"),
            (517, "SQLITE_BUSY_SNAPSHOT"),
            (2067, "SQLITE_CONSTRAINT_UNIQUE"),
            (19, "SQLITE_CONSTRAINT"),
            (266, "SQLITE_IOERR"),
            (26, "SQLITE_NOTADB"),
            (99, "SQLite code 99"),
        ] {
            assert_eq!(code_name(code), name, "{code}");
        }
    }

    #[test]
    fn busy_timeouts_have_no_zero() {
        assert_eq!(busy_ms(Duration::ZERO), i32::MAX as u128);
        assert_eq!(busy_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(busy_ms(Duration::from_secs(10 << 32)), i32::MAX as u128);
    }

    #[test]
    fn the_watch_interrupts_at_the_deadline_or_on_a_stop() {
        let mut watch = Watch::default();
        assert!(watch.keep_going(), "disarmed");
        watch.deadline = Some(std::time::Instant::now() - Duration::from_millis(1));
        assert!(!watch.keep_going());
        assert_eq!(watch.fired, Some(Cancelled::Deadline));

        let (tx, stop) = StopToken::manual();
        let mut watch = Watch {
            deadline: Some(std::time::Instant::now() + Duration::from_secs(60)),
            stop: Some(stop),
            fired: None,
        };
        assert!(watch.keep_going());
        tx.send(Some(Stop {
            signal: libc::SIGTERM,
        }))
        .unwrap();
        assert!(!watch.keep_going());
        assert_eq!(
            watch.fired,
            Some(Cancelled::Stop(Stop {
                signal: libc::SIGTERM
            }))
        );
    }

    #[test]
    fn missing_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/app.db");
        let error = check_path(&missing).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "the directory {} of the SQLite database",
                dir.path().join("nope").display()
            )),
            "{error}"
        );
        assert!(check_path(&dir.path().join("app.db")).is_ok());
        assert!(check_path(Path::new("app.db")).is_ok(), "relative to .");
        let error = check_path(dir.path()).unwrap_err();
        assert!(error.ends_with("is a directory, not a SQLite database file"));
    }
}
