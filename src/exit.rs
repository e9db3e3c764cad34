//! Exit statuses (DESIGN.md "Exit status") and the top-level error that maps every boundary's
//! error to one of them. Only `main` (through [`crate::cli`]) prints errors and exits.

use crate::backend::{BackendError, ConnectFailureKind, DumpError, FailureKind};
use crate::backup::BackupError;
use crate::config::ConfigErrors;
use crate::migrate::apply::{LockError, MigrationError, StepsError};
use crate::migrate::source::SourceError;
use crate::supervise::process::RunError;
use crate::supervise::signals::Stop;
use crate::wait::WaitError;

/// The documented exit statuses.
pub mod code {
    pub const SUCCESS: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATABASE_UNREACHABLE: u8 = 3;
    pub const LOCK_TIMEOUT: u8 = 4;
    pub const BACKUP_FAILED: u8 = 5;
    pub const MIGRATION_FAILED: u8 = 6;
    pub const INCONSISTENT: u8 = 7;
    pub const VERIFY_FAILED: u8 = 8;
    pub const PENDING: u8 = 9;
    pub const STARTUP_TIMEOUT: u8 = 124;
}

/// Everything that can end a command early, one variant per boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings, all of them listed.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A usage error that is not a single setting (e.g. a command that needs `DATABASE_URL`).
    #[error("{0}")]
    Usage(String),
    /// Unreadable or malformed migration files, all of them listed.
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Unreachable(#[from] WaitError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The history is inconsistent (`out-of-order`, `changed`, `missing`, a `failed` migration
    /// that cannot resume); every problem listed.
    #[error("the migration history is inconsistent, nothing was applied:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Inconsistent(Vec<String>),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Boxed: it carries the statement, the server's message and the blocking sessions.
    #[error(transparent)]
    Migration(Box<MigrationError>),
    /// The schema is not what the app expects: every failing difference listed.
    #[error("schema verification failed:\n{}", .0.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    Verify(Vec<String>),
    /// The backup failed; nothing was applied.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// SIGTERM or SIGINT outside a statement (while waiting for the database, say).
    #[error("interrupted by {}", .0.name())]
    Interrupted(Stop),
    /// The migrate command (`STARTGATE_MIGRATE_COMMAND`) failed, timed out or was stopped.
    #[error(transparent)]
    Command(#[from] crate::tool::CommandError),
    /// The app (`run`): it could not start, it hung, or it failed on its own.
    #[error(transparent)]
    App(#[from] AppError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What ended `run` on the app's side.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("run needs the app's command: startgate run -- CMD [ARG...]")]
    NoCommand,
    #[error("cannot start the app {program:?}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The app missed its startup deadline; the diagnosis.
    #[error("{summary}")]
    Hang { summary: String },
    /// The app exited on its own with a failure.
    #[error("the app {how}{}{}", if *.before_ready { " before it was ready" } else { "" }, stderr_text(.stderr))]
    Exited {
        /// Its status as startgate's exit status (128+N for signal N).
        code: u8,
        /// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
        how: String,
        before_ready: bool,
        /// Its last stderr lines, masked.
        stderr: Vec<String>,
    },
}

/// `; its last stderr lines:` and the lines, indented (or that it wrote nothing), for a
/// message about a program that failed.
pub fn stderr_text(lines: &[String]) -> String {
    match lines {
        [] => "; it wrote nothing to stderr".to_string(),
        lines => format!(
            "; its last stderr lines:\n{}",
            lines
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::NoCommand => code::USAGE,
            // As a shell says it: 127 not found, 126 not executable.
            AppError::Spawn { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => 127,
                std::io::ErrorKind::PermissionDenied => 126,
                _ if source.raw_os_error() == Some(libc::ENOEXEC) => 126,
                _ => code::INTERNAL,
            },
            AppError::Hang { .. } => code::STARTUP_TIMEOUT,
            AppError::Exited { code, .. } => *code,
        }
    }
}

impl From<StepsError> for Error {
    fn from(e: StepsError) -> Error {
        match e {
            StepsError::Migration(e) => e.into(),
            StepsError::File(e) => Error::Source(e),
        }
    }
}

impl From<MigrationError> for Error {
    fn from(e: MigrationError) -> Error {
        Error::Migration(Box::new(e))
    }
}

impl Error {
    /// The exit status this error leads to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_)
            | Error::Usage(_)
            | Error::Source(_)
            | Error::Backend(BackendError::MissingTable { .. }) => code::USAGE,
            Error::Unreachable(e) if e.last.kind == ConnectFailureKind::BadUrl => code::USAGE,
            Error::Unreachable(_) => code::DATABASE_UNREACHABLE,
            Error::Backend(BackendError::BadHistory { .. }) | Error::Inconsistent(_) => {
                code::INCONSISTENT
            }
            Error::Backend(BackendError::Query { .. }) | Error::Internal(_) => code::INTERNAL,
            Error::Lock(LockError::Timeout { .. }) => code::LOCK_TIMEOUT,
            Error::Lock(LockError::Interrupted(stop)) | Error::Interrupted(stop) => {
                stop.exit_code()
            }
            Error::Lock(LockError::Backend(_)) => code::INTERNAL,
            Error::Verify(_) => code::VERIFY_FAILED,
            Error::App(e) => e.exit_code(),
            Error::Command(e) => e.exit_code(),
            Error::Backup(_) => match self.stop() {
                Some(stop) => stop.exit_code(),
                None => code::BACKUP_FAILED,
            },
            Error::Migration(e) => match e.failure.kind {
                FailureKind::Interrupted(stop) => stop.exit_code(),
                // The URL is wrong for migrating: a configuration error.
                FailureKind::LockLost => code::USAGE,
                _ => code::MIGRATION_FAILED,
            },
        }
    }

    /// The signal that ended the run, if one did.
    pub fn stop(&self) -> Option<Stop> {
        match self {
            Error::Lock(LockError::Interrupted(stop)) | Error::Interrupted(stop) => Some(*stop),
            Error::Migration(e) => match e.failure.kind {
                FailureKind::Interrupted(stop) => Some(stop),
                _ => None,
            },
            Error::Backup(BackupError::Dump(DumpError::Run(RunError::Interrupted {
                stop,
                ..
            }))) => Some(*stop),
            Error::Command(e) => e.stop(),
            _ => None,
        }
    }
}
