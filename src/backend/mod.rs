//! The backend seam: everything engine-specific (connecting, the history table, the lock,
//! executing statements with timeouts, the catalog, backups) sits behind [`Backend`], with one
//! implementation per engine ([`postgres`], [`sqlite`]). [`foreign`] reads other migration
//! tools' histories for every engine.
//!
//! Architecture invariant: nothing outside this module writes engine-specific SQL or imports
//! sqlx. The planner, the phase machine and the orchestration (`crate::run`) only see the trait
//! and the engine-neutral types here and in `crate::migrate`.
//!
//! The orchestration is generic over `B: Backend` and runs on one task, so the trait uses plain
//! `async fn` (no `Send` bound is needed, and none is promised).

pub mod foreign;
pub mod history;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::HistoryTable;
use crate::dburl::DatabaseUrl;
use crate::migrate::plan::ResumeReason;
use crate::migrate::{HistoryRow, Migration, Statement, Version};
use crate::supervise::signals::{Stop, StopToken};

/// What `init`'s first, unlocked read of the history found.
#[derive(Debug, Default)]
pub struct BriefHistory {
    /// The rows; `None` when the history table does not exist yet.
    pub rows: Option<Vec<HistoryRow>>,
    /// Whether the catalog held any INVALID index (in progress or not) when the rows were
    /// read, if the engine asked in the same round trip: `Some(false)` answers the verifying
    /// phase's question for a run that then changes nothing (see [`Backend::invalid_indexes`]).
    pub any_invalid_index: Option<bool>,
}

/// Where and how to connect: the URL, and the `application_name` that names startgate and the
/// host in `pg_stat_activity`, so an operator can tell which replica holds what.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub url: DatabaseUrl,
    pub application_name: String,
    /// Upper bound for one connection attempt, authentication and `SELECT 1` included.
    pub attempt_timeout: Duration,
    /// `lock_timeout` for startgate's own reads and writes of the history table, so that a
    /// session holding a lock on it cannot stall startup without bound (`0`: none).
    pub lock_timeout: Duration,
}

/// What `/status` and the log say about the database: never credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// Host name, socket directory, or the file path for SQLite.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Database name (or file name).
    pub name: Option<String>,
    /// The URL without its password.
    pub url: String,
    /// Server version, e.g. `15.20`.
    pub server_version: Option<String>,
}

/// Why one connection attempt failed, classified so that the log says what is wrong in words an
/// operator acts on (is the server down, the name wrong, the password wrong, the database
/// missing?). Every attempt is retried until the wait deadline: a database container may refuse
/// connections, then reject them while its init scripts run, before it is really up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailureKind {
    /// Nothing listens at the address (yet).
    Refused,
    /// The host name does not resolve.
    Dns,
    /// The attempt did not finish within its bound.
    Timeout,
    /// The server rejected the credentials.
    Authentication,
    /// The database named in the URL does not exist.
    DatabaseMissing,
    /// The server is starting up, shutting down, or in recovery.
    NotReady,
    /// The server refused more connections.
    TooManyConnections,
    /// TLS negotiation failed.
    Tls,
    /// The URL itself is wrong (a bad `sslmode`, port…): retrying cannot help.
    BadUrl,
    Other,
}

impl ConnectFailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailureKind::Refused => "connection refused",
            ConnectFailureKind::Dns => "host name not found",
            ConnectFailureKind::Timeout => "timed out",
            ConnectFailureKind::Authentication => "authentication failed",
            ConnectFailureKind::DatabaseMissing => "database does not exist",
            ConnectFailureKind::NotReady => "server not ready",
            ConnectFailureKind::TooManyConnections => "too many connections",
            ConnectFailureKind::Tls => "TLS failed",
            ConnectFailureKind::BadUrl => "bad connection URL",
            ConnectFailureKind::Other => "connection failed",
        }
    }
}

/// One failed connection attempt: what kind of failure, and in brackets the server's own words
/// or the address that failed (`connection refused (127.0.0.1:5432)`), secrets masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({detail})", kind.as_str())]
pub struct ConnectFailure {
    pub kind: ConnectFailureKind,
    pub detail: String,
}

/// A database operation that failed after the connection was made.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{what} failed: {message}")]
    Query {
        /// What startgate was doing, e.g. `reading the history table public.startgate_migrations`.
        what: String,
        /// The server's message (with SQLSTATE when known), secrets masked.
        message: String,
    },
    #[error("history table {table} has a bad row: {problem}")]
    BadHistory { table: String, problem: String },
    /// A table the operator pointed startgate at does not exist (`baseline --from`).
    #[error("there is no {table} table in this database ({hint})")]
    MissingTable { table: String, hint: String },
}

/// A database engine behind the seam.
///
/// The session that connects is the one that takes the migration lock and applies the
/// migrations (DESIGN.md "The migration lock"): if startgate dies while a statement runs, the
/// lock stays held until the server has ended that statement.
#[allow(async_fn_in_trait)] // Used on a single task through generics; no `Send` bound needed.
pub trait Backend: Sized {
    /// One connection attempt, ending with a real query (`SELECT 1` after authentication): a
    /// PostgreSQL container accepts connections before its init scripts have finished.
    async fn connect(target: &ConnectTarget) -> Result<Self, ConnectFailure>;

    /// The database as `/status` shows it.
    fn info(&self) -> &DatabaseInfo;

    /// Reads startgate's history table; `None` when it does not exist yet (nothing applied).
    /// Takes no lock: `init` reads first without one, so that an up-to-date replica never
    /// queues behind another replica's long migration.
    async fn read_history(
        &mut self,
        table: &HistoryTable,
    ) -> Result<Option<Vec<HistoryRow>>, BackendError>;

    /// [`read_history`](Backend::read_history) with only what tells whether anything is to be
    /// done: version, name, checksum, state and statements done; the other fields are empty.
    /// `init`'s first, unlocked read uses it, since every restart pays for it; anything but
    /// "up to date" is planned again from the full rows under the lock. An engine may answer
    /// the verifying phase's INVALID-index question in the same round trip.
    async fn read_history_brief(
        &mut self,
        table: &HistoryTable,
    ) -> Result<BriefHistory, BackendError> {
        Ok(BriefHistory {
            rows: self.read_history(table).await?,
            any_invalid_index: None,
        })
    }

    /// Readies this session for migrating (keepalives, dead-client detection) and starts
    /// opening what the engine needs beside it to cancel a statement and see what blocks it,
    /// which [`monitor_ready`](Backend::monitor_ready) waits for.
    async fn prepare_for_migrating(&mut self) -> Result<(), BackendError>;

    /// Waits until what [`prepare_for_migrating`](Backend::prepare_for_migrating) started
    /// opening is open; called before the first migration is applied, so that the lock, the
    /// history table and the history read overlap the opening.
    async fn monitor_ready(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// One attempt to take the migration lock, without waiting.
    async fn try_lock(&mut self, key: LockKey) -> Result<bool, BackendError>;

    /// Who holds the migration lock, if anyone.
    async fn lock_holder(&mut self, key: LockKey) -> Result<Option<LockHolder>, BackendError>;

    /// Releases the migration lock held by this session.
    async fn unlock(&mut self, key: LockKey) -> Result<(), BackendError>;

    /// Ends another session (`unlock --force`): its transaction is rolled back and its locks
    /// released. Returns whether the server did it.
    async fn terminate(&mut self, pid: i64) -> Result<bool, BackendError>;

    /// Creates the history table if it does not exist. Called only under the lock.
    async fn ensure_history_table(&mut self, table: &HistoryTable) -> Result<(), BackendError>;

    /// Whether the database holds nothing a backup would keep: no table, view, sequence,
    /// function, type, extension or schema of its own, apart from startgate's history table
    /// (and `public`). On a first deploy, `STARTGATE_BACKUP=auto` skips the backup then. A
    /// backend that cannot tell says `false`, and the backup is taken.
    async fn holds_nothing(&mut self, _table: &HistoryTable) -> Result<bool, BackendError> {
        Ok(false)
    }

    /// Applies one migration (or resumes one), with its history row, under the lock.
    async fn apply(
        &mut self,
        job: &ApplyJob<'_>,
        stop: &StopToken,
    ) -> Result<Applied, ApplyFailure>;

    /// Writes rows as they are given (`repair`, `baseline`), in one transaction. Called only
    /// under the lock.
    async fn write_history(
        &mut self,
        table: &HistoryTable,
        rows: &[HistoryWrite],
    ) -> Result<(), BackendError>;

    /// Reads another migration tool's history, for `baseline --from`.
    async fn read_foreign_history(
        &mut self,
        tool: ForeignTool,
    ) -> Result<ForeignHistory, BackendError>;

    /// The live schema, in a bounded number of catalog queries, with startgate's own history
    /// table left out.
    async fn snapshot(
        &mut self,
        history: &HistoryTable,
    ) -> Result<crate::schema::Snapshot, BackendError>;

    /// Indexes left INVALID (by a failed `CREATE INDEX CONCURRENTLY`), as operators name them;
    /// one cheap query, so the verifying phase can always check them. Indexes another session
    /// is building right now are not counted.
    async fn invalid_indexes(&mut self) -> Result<Vec<String>, BackendError>;

    /// The file extension of this engine's backups (`sql` for a PostgreSQL schema dump).
    fn backup_extension(&self) -> &'static str;

    /// Writes a backup of the schema into `path`, an empty file with mode 0600 that the
    /// caller created (`crate::backup`). Bounded by `limits`; a stop request ends it.
    async fn dump_schema(
        &mut self,
        path: &std::path::Path,
        limits: &DumpLimits,
        stop: &StopToken,
    ) -> Result<(), DumpError>;

    /// Whether this session still holds the migration lock (checked before the migrate
    /// command runs: through a transaction-mode pooler it would not).
    async fn holds_lock(&mut self, key: LockKey) -> Result<bool, BackendError>;

    /// The rows of Alembic's version table (`STARTGATE_ALEMBIC_VERSION_TABLE`, found through
    /// the search path as Alembic finds it); `None` when it does not exist. One query: the
    /// whole cost of an up-to-date Alembic project's start.
    async fn read_alembic_versions(
        &mut self,
        table: &str,
    ) -> Result<Option<Vec<String>>, BackendError>;

    /// What a migrate command's environment gets so that its own sessions carry the
    /// migration timeouts (`PGOPTIONS` for libpq-based drivers); empty when the engine has no
    /// such thing.
    fn command_environment(&self, limits: &CommandLimits) -> Vec<(String, String)>;

    /// The server sessions of a running migrate command, in this database.
    async fn command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError>;

    /// Terminates the server sessions of a migrate command (timed out, or startgate is
    /// stopping), in this database; returns those it ended.
    async fn terminate_command_sessions(
        &mut self,
        which: &CommandSessions<'_>,
    ) -> Result<Vec<CommandSession>, BackendError>;

    /// Terminates sessions left by an earlier run's migrate command (application name
    /// starting with `prefix`, other than `ours`), in this database. Called under the lock.
    async fn terminate_leftover_sessions(
        &mut self,
        prefix: &str,
        ours: &str,
    ) -> Result<Vec<CommandSession>, BackendError>;

    /// The fingerprint of the migrate command's last recorded success (`None`: none yet).
    async fn last_fingerprint(
        &mut self,
        history: &HistoryTable,
    ) -> Result<Option<String>, BackendError>;

    /// Records a successful run of the migrate command (creating its table on first use).
    /// Called only under the lock.
    async fn record_command_run(
        &mut self,
        history: &HistoryTable,
        run: &CommandRun<'_>,
    ) -> Result<(), BackendError>;

    /// Closes the connection cleanly (a dropped connection is closed too, less politely).
    async fn close(self);
}

/// The server-side limits a migrate command's sessions get.
#[derive(Debug, Clone, Copy)]
pub struct CommandLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

/// Which server sessions belong to a running migrate command: those with its application
/// name (drivers that read `PGAPPNAME`) and those whose client address and port are one of
/// the command's TCP connections (drivers that do not), started while it ran.
#[derive(Debug, Clone, Copy)]
pub struct CommandSessions<'a> {
    pub application_name: &'a str,
    pub client_ports: &'a [(std::net::IpAddr, u16)],
    /// Only sessions that started at most this long ago (the command's age, plus a margin).
    pub started_within: Duration,
}

/// A migrate command's server session, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSession {
    pub pid: i64,
    pub application_name: String,
    pub state: String,
    /// How long its current statement has run, when it is running one.
    pub running_ms: Option<i64>,
    /// The start of its query, secrets masked.
    pub query: String,
}

impl fmt::Display for CommandSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if !self.application_name.is_empty() {
            write!(f, " ({})", self.application_name)?;
        }
        write!(f, ", {}", self.state)?;
        if let Some(ms) = self.running_ms {
            write!(f, " for {ms} ms")?;
        }
        if !self.query.is_empty() {
            write!(f, ": {}", self.query)?;
        }
        Ok(())
    }
}

/// A successful run of the migrate command, as its table records it.
#[derive(Debug, Clone, Copy)]
pub struct CommandRun<'a> {
    pub command: &'a str,
    /// The `STARTGATE_MIGRATE_FINGERPRINT` hash, when the command is fingerprinted.
    pub fingerprint: Option<&'a str>,
    pub execution_ms: u64,
    pub applied_by: &'a str,
}

/// Bounds for one backup.
#[derive(Debug, Clone, Copy)]
pub struct DumpLimits {
    /// `STARTGATE_BACKUP_TIMEOUT`: the whole dump.
    pub timeout: Duration,
    /// How long the dump may wait for a table lock before giving up (`--lock-wait-timeout`).
    pub lock_wait: Duration,
    /// SIGTERM, then SIGKILL after this, when the dump must be stopped.
    pub kill_grace: Duration,
}

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{tool} not found on PATH: {hint}")]
    ToolMissing { tool: String, hint: String },
    #[error(
        "{tool} is too old for the server: `{tool} --version` says {tool_version:?}, the server is {server_version}: {hint}"
    )]
    ToolTooOld {
        tool: String,
        tool_version: String,
        server_version: String,
        hint: String,
    },
    #[error("{tool} failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Run(#[from] crate::supervise::process::RunError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Query(String),
}

/// The migration lock's identity. Derived from the history table's name, so two apps that
/// share a database but keep separate histories do not wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockKey(pub i64);

impl LockKey {
    pub fn for_table(table: &HistoryTable) -> LockKey {
        let digest = Sha256::digest(format!("startgate:{}.{}", table.schema, table.table));
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        LockKey(i64::from_be_bytes(bytes))
    }
}

/// The session that holds the migration lock, as the log and `unlock` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: i64,
    pub application_name: String,
    /// Client address, or `local` for a Unix socket.
    pub client: String,
    /// When that session connected, RFC 3339 UTC.
    pub connected_at: Option<String>,
    pub state: Option<String>,
    /// When its current (or last) query started.
    pub query_start: Option<String>,
    /// The start of that query.
    pub query: Option<String>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        let name = if self.application_name.is_empty() {
            "no application_name"
        } else {
            &self.application_name
        };
        write!(f, " ({name}, client {}", self.client)?;
        if let Some(at) = &self.connected_at {
            write!(f, ", connected {at}")?;
        }
        if let Some(state) = &self.state {
            write!(f, ", {state}")?;
        }
        if let (Some(start), Some(query)) = (&self.query_start, &self.query) {
            write!(f, ", query started {start}: {}", one_line(query))?;
        }
        f.write_str(")")
    }
}

/// A session that blocked a migration statement, as sampled while the statement waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub pid: i64,
    pub application_name: String,
    pub query_start: Option<String>,
    /// The first 100 characters of its query.
    pub query: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (application_name {:?}",
            self.pid, self.application_name
        )?;
        if let Some(start) = &self.query_start {
            write!(f, ", query started {start}")?;
        }
        write!(f, ": {})", one_line(&self.query))
    }
}

/// Newlines and runs of spaces folded, so a query fits on one log line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Everything the backend needs to apply one migration.
#[derive(Debug, Clone)]
pub struct ApplyJob<'a> {
    pub migration: &'a Migration,
    /// The migration's statements, read from its file just before it runs.
    pub statements: &'a [Statement],
    /// The first statement to run (0 unless resuming).
    pub from_statement: u32,
    /// Why a failed no-transaction migration is being resumed.
    pub resume: Option<ResumeReason>,
    /// The version text of the existing history row (a failed migration being resumed), so the
    /// row is updated in place even when the file writes the version differently (`3`, `0003`).
    pub existing_version: Option<String>,
    pub history: &'a HistoryTable,
    pub lock: LockKey,
    /// `lock_timeout` for each statement (`0`: none).
    pub lock_timeout: Duration,
    /// `statement_timeout` for each statement (`0`: none).
    pub statement_timeout: Duration,
    /// Wall-clock limit for the whole migration, enforced by cancelling on the server.
    pub timeout: Duration,
    /// Host or pod name, for the history row.
    pub applied_by: &'a str,
}

/// A migration that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Statements run now (fewer than the file has when resuming).
    pub statements_run: u32,
    pub elapsed: Duration,
    /// The recovery point recorded in the history row: server time and WAL position just
    /// before the migration.
    pub recovery_time: Option<String>,
    pub recovery_lsn: Option<String>,
}

/// Why a migration did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// `lock_timeout` expired (SQLSTATE 55P03); retried with backoff.
    LockTimeout,
    /// The statement failed (syntax, constraint, `statement_timeout`…).
    Statement,
    /// The wall-clock limit passed; the statement was cancelled on the server.
    TimedOut(Duration),
    /// SIGTERM or SIGINT; the statement was cancelled on the server.
    Interrupted(Stop),
    /// This session no longer holds the migration lock: a transaction-mode pooler hands
    /// statements to other server sessions.
    LockLost,
    /// The connection failed, or the history row could not be written.
    Connection,
    /// The session was lost while the migration's last statement, its history row and its
    /// `COMMIT` were in flight (they share one message): whether it committed is unknown,
    /// and its row in the history table, written in the same transaction, says.
    CommitUnknown,
}

/// A migration that failed, with everything an operator needs to find the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFailure {
    pub kind: FailureKind,
    /// 0-based index of the failing statement, when a statement failed.
    pub statement: Option<u32>,
    /// Line in the file where the failing statement starts.
    pub line: Option<u32>,
    /// Where within the file the server located the error (line, column), when it said.
    pub position: Option<(u32, u32)>,
    pub sqlstate: Option<String>,
    /// The server's or driver's message, secrets masked.
    pub message: String,
    /// Sessions that blocked the statement, as sampled while it waited.
    pub blockers: Vec<Blocker>,
    /// Statements completed before the failure (what a non-transactional migration keeps).
    pub statements_done: u32,
}

/// A row for [`Backend::write_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryWrite {
    /// The version text to store (or the existing row's text when updating).
    pub version: String,
    pub name: String,
    pub checksum: String,
    pub state: crate::migrate::RowState,
    pub statements_done: u32,
    pub applied_by: String,
    pub repaired: bool,
    /// Keep the recorded error (a repair keeps what happened for `status`).
    pub error: Option<String>,
    pub error_sqlstate: Option<String>,
}

/// Another migration tool whose history `baseline --from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignTool {
    Sqlx,
    Dbmate,
    Flyway,
    GolangMigrate,
}

impl ForeignTool {
    pub fn parse(text: &str) -> Option<ForeignTool> {
        match text {
            "sqlx" => Some(ForeignTool::Sqlx),
            "dbmate" => Some(ForeignTool::Dbmate),
            "flyway" => Some(ForeignTool::Flyway),
            "golang-migrate" => Some(ForeignTool::GolangMigrate),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForeignTool::Sqlx => "sqlx",
            ForeignTool::Dbmate => "dbmate",
            ForeignTool::Flyway => "flyway",
            ForeignTool::GolangMigrate => "golang-migrate",
        }
    }

    /// The table the tool keeps its history in.
    pub fn table(self) -> &'static str {
        match self {
            ForeignTool::Sqlx => "_sqlx_migrations",
            ForeignTool::Dbmate | ForeignTool::GolangMigrate => "schema_migrations",
            ForeignTool::Flyway => "flyway_schema_history",
        }
    }
}

/// What another tool's history says is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignHistory {
    /// One entry per applied version (sqlx, dbmate, Flyway). `failed` lists versions the tool
    /// recorded as failed. `baseline` is Flyway's baseline version: everything up to it counts
    /// as applied.
    Versions {
        applied: Vec<Version>,
        failed: Vec<String>,
        baseline: Option<Version>,
    },
    /// golang-migrate's single row: the current version and whether it is dirty.
    Current { version: Version, dirty: bool },
}
/// A history table name as operators read it: `public.startgate_migrations`.
pub struct TableName<'a>(pub &'a HistoryTable);

impl fmt::Display for TableName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0.schema, self.0.table)
    }
}
