//! The backend seam: everything engine-specific (connecting, the history table, the lock,
//! executing statements with timeouts, the catalog, backups) sits behind [`Backend`], with one
//! implementation per engine ([`postgres`] now; SQLite and others later).
//!
//! Architecture invariant: nothing outside this module writes engine-specific SQL or imports
//! sqlx. The planner, the phase machine and the orchestration (`crate::run`) only see the trait
//! and the engine-neutral types here and in `crate::migrate`.
//!
//! The orchestration is generic over `B: Backend` and runs on one task, so the trait uses plain
//! `async fn` (no `Send` bound is needed, and none is promised).

pub mod postgres;

use std::fmt;
use std::time::Duration;

use crate::config::HistoryTable;
use crate::dburl::DatabaseUrl;
use crate::migrate::HistoryRow;

/// Where and how to connect: the URL, and the `application_name` that names startgate and the
/// host in `pg_stat_activity`, so an operator can tell which replica holds what.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub url: DatabaseUrl,
    pub application_name: String,
    /// Upper bound for one connection attempt, authentication and `SELECT 1` included.
    pub attempt_timeout: Duration,
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
}

/// A database engine behind the seam.
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

    /// Closes the connection cleanly (a dropped connection is closed too, less politely).
    async fn close(self);
}

/// A history table name as operators read it: `public.startgate_migrations`.
pub struct TableName<'a>(pub &'a HistoryTable);

impl fmt::Display for TableName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0.schema, self.0.table)
    }
}
