//! Executing the plan: waiting for the migration lock, then applying each step of the plan
//! through the [`Backend`] trait, retrying a migration that failed on `lock_timeout`.
//!
//! This is the I/O shell around the pure planner, generic over the backend: it decides what
//! to run, in what order, how often to retry, and what to tell the operator; the backend runs
//! statements, enforces the timeouts on the server, and writes the history rows.
//!
//! Bounds: the lock wait ends at `STARTGATE_LOCK_WAIT_TIMEOUT` (exit 4), a migration is retried
//! at most `STARTGATE_LOCK_RETRIES` times after a lock timeout, every pause is capped and ends
//! early on SIGTERM/SIGINT.

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::backend::{
    ApplyFailure, ApplyJob, Backend, BackendError, FailureKind, LockHolder, LockKey, one_line,
};
use crate::config::{HistoryTable, Settings};
use crate::duration::HumanDuration;
use crate::migrate::plan::{Plan, ResumeReason, Step};
use crate::migrate::source::{self, SourceError};
use crate::migrate::{Migration, Version};
use crate::supervise::signals::{Stop, StopToken};

/// The first pause between two attempts to take the lock.
const LOCK_POLL_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_secs(2);
/// How often the log repeats who holds the lock while we wait.
const HOLDER_LOG_EVERY: Duration = Duration::from_secs(10);
/// The first pause before retrying a migration that hit `lock_timeout`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause before such a retry.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The migration lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("migration lock not acquired within {}{}", HumanDuration(*.waited), holder_text(.holder))]
    Timeout {
        waited: Duration,
        /// Boxed: the holder's description is large and the error path is cold.
        holder: Option<Box<LockHolder>>,
    },
    #[error("interrupted by {} while waiting for the migration lock", .0.name())]
    Interrupted(Stop),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn holder_text(holder: &Option<Box<LockHolder>>) -> String {
    match holder {
        Some(h) => format!(
            "; it is held by {h} (see `startgate unlock`; raise STARTGATE_LOCK_WAIT_TIMEOUT if that migration needs longer)"
        ),
        None => String::new(),
    }
}

/// Polls for the migration lock with backoff until `timeout`, logging who holds it.
pub async fn acquire_lock<B: Backend>(
    db: &mut B,
    key: LockKey,
    timeout: Duration,
    stop: &StopToken,
) -> Result<(), LockError> {
    let started = Instant::now();
    let deadline = started + timeout;
    // Polling, never a blocking `pg_advisory_lock`: a replica blocked in it deadlocks with the
    // holder's `CREATE INDEX CONCURRENTLY` (flyway#1654, golang-migrate#960).
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(LOCK_POLL_FIRST)
        .with_max_delay(LOCK_POLL_MAX)
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_holder: Option<LockHolder> = None;
    let mut last_logged: Option<Instant> = None;
    loop {
        if db.try_lock(key).await? {
            if last_holder.is_some() {
                tracing::info!(
                    event = "lock.acquired",
                    waited_ms = started.elapsed().as_millis() as u64,
                    "migration lock acquired after waiting {}",
                    HumanDuration(Duration::from_millis(started.elapsed().as_millis() as u64))
                );
            }
            return Ok(());
        }
        let holder = db.lock_holder(key).await?;
        let changed = holder.as_ref().map(|h| h.pid) != last_holder.as_ref().map(|h| h.pid);
        if changed || last_logged.is_none_or(|at| at.elapsed() >= HOLDER_LOG_EVERY) {
            match &holder {
                Some(h) => tracing::info!(
                    event = "lock.waiting",
                    holder_pid = h.pid,
                    holder_application_name = %h.application_name,
                    "waiting for the migration lock, held by {h}"
                ),
                None => tracing::info!(event = "lock.waiting", "waiting for the migration lock"),
            }
            last_logged = Some(Instant::now());
        }
        if holder.is_some() {
            last_holder = holder;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LockError::Timeout {
                waited: timeout,
                holder: last_holder.map(Box::new),
            });
        }
        // backon adds its jitter on top of the maximum: clamp after it.
        let pause = delays
            .next()
            .unwrap_or(LOCK_POLL_MAX)
            .min(LOCK_POLL_MAX)
            .min(left);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            stop = stop.wait() => return Err(LockError::Interrupted(stop)),
        }
    }
}

/// The timeouts every migration gets unless its directives say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub migration_timeout: Duration,
    pub lock_retries: u32,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Limits {
        Limits {
            lock_timeout: settings.lock_timeout,
            statement_timeout: settings.statement_timeout,
            migration_timeout: settings.migration_timeout,
            lock_retries: settings.lock_retries,
        }
    }
}

/// Why [`apply_steps`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepsError {
    /// A migration failed (exit 6).
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// A file could not be read again just before it ran, or changed since the start (exit 2).
    #[error(transparent)]
    File(#[from] SourceError),
}

/// A migration that did not apply: which file, what happened, after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MigrationError {
    pub file_name: String,
    pub no_transaction: bool,
    pub statement_count: u32,
    pub failure: ApplyFailure,
    pub attempts: u32,
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = &self.failure;
        write!(f, "{}", self.file_name)?;
        if let Some(line) = failure.line {
            write!(f, ":{line}")?;
        }
        if let Some(index) = failure.statement {
            write!(f, ": statement {}", index + 1)?;
        }
        let code = failure
            .sqlstate
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        match &failure.kind {
            FailureKind::LockTimeout => write!(
                f,
                " hit lock_timeout{code} {} time{}: {}",
                self.attempts,
                if self.attempts == 1 { "" } else { "s" },
                failure.message
            )?,
            FailureKind::TimedOut(limit) => write!(
                f,
                " did not finish within {} (STARTGATE_MIGRATION_TIMEOUT or -- startgate:timeout); it was cancelled on the server",
                HumanDuration(*limit)
            )?,
            FailureKind::Interrupted(stop) => write!(
                f,
                " was interrupted by {}; it was cancelled on the server",
                stop.name()
            )?,
            FailureKind::LockLost => f.write_str(
                ": startgate's session no longer holds the migration lock, so DATABASE_URL goes \
                 through a transaction-mode pooler (PgBouncer, Supabase port 6543, Neon -pooler): \
                 set STARTGATE_DATABASE_URL to a direct connection",
            )?,
            FailureKind::Statement => write!(f, " failed{code}: {}", failure.message)?,
            FailureKind::Connection => write!(f, ": {}{code}", failure.message)?,
            FailureKind::CommitUnknown => write!(
                f,
                ": the session was lost while its last statement, history row and COMMIT were \
                 in flight ({}{code}); whether the migration committed is unknown: its row in \
                 the history table, written in the same transaction, says",
                failure.message
            )?,
        }
        if let Some((line, column)) = failure.position {
            write!(f, " (at line {line}, column {column})")?;
        }
        if !failure.blockers.is_empty() {
            let blockers: Vec<String> = failure.blockers.iter().map(ToString::to_string).collect();
            write!(f, "; blocked by {}", blockers.join(", "))?;
        }
        if !matches!(
            failure.kind,
            FailureKind::LockLost | FailureKind::CommitUnknown
        ) {
            if self.no_transaction {
                match failure.statements_done {
                    0 => f.write_str("; no statement of it took effect")?,
                    n => write!(
                        f,
                        "; its first {n} of {} statements stay applied and the next run resumes after them where it can",
                        self.statement_count
                    )?,
                }
            } else {
                f.write_str("; the migration was rolled back")?;
            }
        }
        Ok(())
    }
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct Done {
    pub version: Version,
    pub file_name: String,
    pub elapsed: Duration,
    /// The recovery point recorded in its history row (server time, WAL position).
    pub recovery: (Option<String>, Option<String>),
}

/// What [`apply_steps`] applied: a count and what the summary line needs, not a record per
/// migration (a thousand of them would only be counted).
#[derive(Debug, Default)]
pub struct AppliedSteps {
    pub count: usize,
    /// The newest version applied.
    pub newest: Option<Version>,
    /// The recovery point of the first migration applied (server time, WAL position).
    pub first_recovery: (Option<String>, Option<String>),
}

/// Applies the plan's steps in order, each with its lock-timeout retries. Stops at the first
/// failure: later migrations are not attempted. `on_applied` hears of each migration as soon
/// as it is committed (for `/status` and `/metrics`, which must count it even if a later one
/// fails).
#[allow(clippy::too_many_arguments)]
pub async fn apply_steps<B: Backend>(
    db: &mut B,
    plan: &Plan,
    local: &[Migration],
    history: &HistoryTable,
    key: LockKey,
    limits: Limits,
    applied_by: &str,
    stop: &StopToken,
    mut on_applied: impl FnMut(&Done),
) -> Result<AppliedSteps, StepsError> {
    let mut done = AppliedSteps::default();
    for step in &plan.steps {
        let Some(m) = local.get(step.index()) else {
            continue;
        };
        // One file's statements at a time: a thousand pending migrations cost no more memory
        // than the largest of them.
        let statements = source::read_statements(m).map_err(SourceError::Problems)?;
        let (mut from, mut resume) = match step {
            Step::Apply { .. } => (0, None),
            Step::Resume {
                from_statement,
                reason,
                ..
            } => (*from_statement, Some(*reason)),
        };
        // The entries are in version order, as the planner walks them.
        let mut existing = plan
            .entries
            .binary_search_by(|e| e.version.cmp(&m.version))
            .ok()
            .and_then(|i| plan.entries[i].row.as_ref())
            .map(|r| r.version.as_str().to_string());
        let mut retry_delays = ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 1u32;
        loop {
            let job = ApplyJob {
                migration: m,
                statements: &statements,
                from_statement: from,
                resume,
                existing_version: existing.clone(),
                history,
                lock: key,
                lock_timeout: m.options.lock_timeout.unwrap_or(limits.lock_timeout),
                statement_timeout: m
                    .options
                    .statement_timeout
                    .unwrap_or(limits.statement_timeout),
                timeout: m.options.timeout.unwrap_or(limits.migration_timeout),
                applied_by,
            };
            if resume.is_some() {
                tracing::info!(
                    event = "migration.start",
                    version = %m.version,
                    file = %m.file_name,
                    from_statement = from + 1,
                    "resuming {} at statement {}",
                    m.file_name,
                    from + 1
                );
            } else {
                tracing::info!(
                    event = "migration.start",
                    version = %m.version,
                    file = %m.file_name,
                    "applying {}",
                    m.file_name
                );
            }
            let failure = match db.apply(&job, stop).await {
                Ok(applied) => {
                    tracing::info!(
                        event = "migration.applied",
                        version = %m.version,
                        file = %m.file_name,
                        statements = applied.statements_run,
                        duration_ms = applied.elapsed.as_millis() as u64,
                        recovery_time = applied.recovery_time.as_deref().unwrap_or(""),
                        recovery_lsn = applied.recovery_lsn.as_deref().unwrap_or(""),
                        "applied {} ({} statement{}) in {} ms",
                        m.file_name,
                        applied.statements_run,
                        if applied.statements_run == 1 { "" } else { "s" },
                        applied.elapsed.as_millis()
                    );
                    let one = Done {
                        version: m.version.clone(),
                        file_name: m.file_name.clone(),
                        elapsed: applied.elapsed,
                        recovery: (applied.recovery_time, applied.recovery_lsn),
                    };
                    on_applied(&one);
                    done.count += 1;
                    if done.count == 1 {
                        done.first_recovery = one.recovery;
                    }
                    done.newest = done.newest.take().max(Some(one.version));
                    break;
                }
                Err(failure) => failure,
            };
            let error = MigrationError {
                file_name: m.file_name.clone(),
                no_transaction: m.options.no_transaction,
                statement_count: statements.len() as u32,
                failure,
                attempts: attempt,
            };
            if error.failure.kind != FailureKind::LockTimeout || attempt > limits.lock_retries {
                return Err(error.into());
            }
            let pause = retry_delays.next().unwrap_or(RETRY_MAX).min(RETRY_MAX);
            tracing::warn!(
                event = "migration.retry",
                version = %m.version,
                file = %m.file_name,
                attempt,
                retries = limits.lock_retries,
                retry_in_ms = pause.as_millis() as u64,
                blockers = %error.failure.blockers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "{}; retrying in {} ({} of {} retries)",
                one_line(&error.to_string()),
                HumanDuration(pause),
                attempt,
                limits.lock_retries
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                stop = stop.wait() => {
                    let mut failure = error.failure;
                    failure.kind = FailureKind::Interrupted(stop);
                    failure.message = format!("interrupted by {} while waiting to retry", stop.name());
                    return Err(MigrationError { failure, ..error }.into());
                }
            }
            if m.options.no_transaction {
                // The statements before the failed one stay applied; resume at the failed one.
                from = error.failure.statements_done;
                // A failed CREATE INDEX CONCURRENTLY left an INVALID index that must go first.
                let concurrent = statements
                    .get(from as usize)
                    .is_some_and(|s| crate::migrate::plan::is_create_index_concurrently(&s.sql));
                resume = Some(if concurrent {
                    ResumeReason::ConcurrentIndex
                } else {
                    ResumeReason::Timeout
                });
                existing = Some(existing.unwrap_or_else(|| m.version.as_str().to_string()));
            }
            attempt += 1;
        }
    }
    Ok(done)
}
