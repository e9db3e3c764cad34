//! Running one migration statement on the applying session while a second, monitor session
//! watches it: it samples `pg_blocking_pids` while the statement waits, and cancels the
//! statement on the server (`pg_cancel_backend`) when the wall-clock limit passes or a signal
//! arrives.
//!
//! The statement's future is always driven to completion after a cancel, so the applying
//! session stays usable for the `ROLLBACK` and the unlock that follow. Should the server not
//! answer the cancel, the monitor escalates to `pg_terminate_backend` (which also ends the
//! session and releases its locks), and gives up waiting after a bound: no path waits for ever.

use std::time::Duration;

use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgErrorPosition};
use sqlx::{Connection, Row};
use tokio::time::{Instant, sleep_until};

use super::{describe, sqlstate_of, utc};
use crate::backend::Blocker;
use crate::redact;
use crate::supervise::signals::{Stop, StopToken};

/// How long a statement runs before the monitor starts sampling what blocks it (at most; the
/// caller starts sooner when `lock_timeout` is shorter): fast statements never cost a monitor
/// round trip.
pub const SAMPLE_AFTER: Duration = Duration::from_millis(100);
/// Pause between two samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// After a cancel, how long to wait for the statement to end before terminating the session.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// After a terminate, how long to wait before giving up on the session altogether.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);
/// The longest one monitor query (cancel, terminate, sample) may take: a stalled network must
/// not stop the escalation or the deadline.
const MONITOR_QUERY: Duration = Duration::from_secs(2);

/// Why the monitor cancelled a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Deadline,
    Stop(Stop),
}

/// A statement that did not succeed.
#[derive(Debug, Clone)]
pub struct StatementError {
    pub sqlstate: Option<String>,
    /// The server's message with its detail and hint, secrets masked.
    pub message: String,
    /// The server's 1-based character position within the statement, when it gave one.
    pub position: Option<usize>,
    /// Set when the monitor cancelled the statement.
    pub cancelled: Option<Cancelled>,
    /// Sessions that blocked the statement, from the last sample that found any.
    pub blockers: Vec<Blocker>,
    /// The session is no longer usable (the server did not answer, or it was terminated).
    pub session_lost: bool,
}

impl StatementError {
    /// A bug of startgate's, not the server's answer: nothing cancelled, the session intact.
    pub fn internal(message: String) -> StatementError {
        StatementError {
            sqlstate: None,
            message,
            position: None,
            cancelled: None,
            blockers: Vec::new(),
            session_lost: false,
        }
    }
}

/// What watches the applying session while it runs a statement.
pub struct Watcher<'a> {
    /// The monitor session.
    pub monitor: &'a mut PgConnection,
    /// How to open a fresh session when the monitor fails.
    pub reconnect: &'a PgConnectOptions,
    /// The applying session's server process id.
    pub pid: i32,
    /// When to start sampling what blocks the statement.
    pub sample_after: Duration,
}

/// Runs `sql` on `conn` until it ends, watched by `watcher`, and says how many of its
/// statements completed (also with an error: `Err((_, completed))`).
pub async fn run_watched(
    conn: &mut PgConnection,
    watcher: Watcher<'_>,
    sql: &str,
    deadline: Instant,
    stop: &StopToken,
) -> Result<usize, (StatementError, usize)> {
    let Watcher {
        monitor,
        reconnect,
        pid,
        sample_after,
    } = watcher;
    let exec = async {
        let mut results = sqlx::raw_sql(sql).execute_many(&mut *conn);
        let mut completed = 0;
        while let Some(result) = results.next().await {
            result.map_err(|e| (e, completed))?;
            completed += 1;
        }
        Ok::<_, (sqlx::Error, usize)>(completed)
    };
    tokio::pin!(exec);
    let started = Instant::now();
    let mut next_sample = started + sample_after;
    let mut blockers: Vec<Blocker> = Vec::new();
    let mut cancelled: Option<Cancelled> = None;
    let mut cancel_sent: Option<Instant> = None;
    let mut terminate_sent: Option<Instant> = None;
    let far = started + Duration::from_secs(365 * 24 * 3600);

    loop {
        tokio::select! {
            biased;
            result = &mut exec => {
                return result.map_err(|(e, completed)| {
                    (statement_error(&e, cancelled, blockers, terminate_sent.is_some()), completed)
                });
            }
            stop = stop.wait(), if cancelled.is_none() => {
                cancelled = Some(Cancelled::Stop(stop));
                cancel_sent = Some(Instant::now());
                signal_backend(monitor, reconnect, "pg_cancel_backend", pid).await;
            }
            _ = sleep_until(deadline), if cancelled.is_none() => {
                cancelled = Some(Cancelled::Deadline);
                cancel_sent = Some(Instant::now());
                signal_backend(monitor, reconnect, "pg_cancel_backend", pid).await;
            }
            _ = sleep_until(next_sample), if cancelled.is_none() => {
                let sample = sample_blockers(monitor, pid).await;
                if !sample.is_empty() {
                    blockers = sample;
                }
                next_sample = Instant::now() + SAMPLE_EVERY;
            }
            // The escalation's timers are polled (registered with the timer driver, which then
            // wakes itself) only once there is something to escalate: most statements end
            // without either.
            _ = sleep_until(cancel_sent.map_or(far, |at| at + CANCEL_GRACE)), if cancel_sent.is_some() && terminate_sent.is_none() => {
                tracing::warn!(pid, "the statement did not end after a cancel; terminating its session");
                terminate_sent = Some(Instant::now());
                signal_backend(monitor, reconnect, "pg_terminate_backend", pid).await;
            }
            _ = sleep_until(terminate_sent.map_or(far, |at| at + TERMINATE_GRACE)), if terminate_sent.is_some() => {
                // How far the server got is unknown; the session is given up either way.
                return Err((StatementError {
                    sqlstate: None,
                    message: "the server did not end the statement after a cancel and a terminate; giving up on the session".to_string(),
                    position: None,
                    cancelled,
                    blockers,
                    session_lost: true,
                }, 0));
            }
        }
    }
}

fn statement_error(
    e: &sqlx::Error,
    cancelled: Option<Cancelled>,
    blockers: Vec<Blocker>,
    terminated: bool,
) -> StatementError {
    let (message, position) = match e {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let mut message = db.message().to_string();
            if let Some(pg) = pg {
                if let Some(detail) = pg.detail() {
                    message.push_str(&format!(" (detail: {detail})"));
                }
                if let Some(hint) = pg.hint() {
                    message.push_str(&format!(" (hint: {hint})"));
                }
            }
            let position = pg.and_then(|pg| match pg.position() {
                Some(PgErrorPosition::Original(at)) => Some(at),
                _ => None,
            });
            (redact::mask(&message).into_owned(), position)
        }
        other => (describe(other), None),
    };
    StatementError {
        sqlstate: sqlstate_of(e),
        message,
        position,
        cancelled,
        blockers,
        session_lost: terminated || !matches!(e, sqlx::Error::Database(_)),
    }
}

/// Calls `function` (`pg_cancel_backend` or `pg_terminate_backend`) on `pid` through the
/// monitor session, bounded in time; if the monitor fails or stalls (an idle-session timeout
/// ended it, the network dropped it), through a fresh session. A failure is logged: the
/// escalation (terminate, then giving up) follows on its own.
async fn signal_backend(
    monitor: &mut PgConnection,
    reconnect: &PgConnectOptions,
    function: &str,
    pid: i32,
) {
    let sql = format!("SELECT {function}({pid})");
    let first =
        tokio::time::timeout(MONITOR_QUERY, sqlx::raw_sql(&sql).execute(&mut *monitor)).await;
    let error = match first {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => describe(&e),
        Err(_) => "the monitor session did not answer".to_string(),
    };
    tracing::warn!(pid, error = %error, "{function} through the monitor session failed; trying a new session");
    let fresh = async {
        let mut conn = PgConnection::connect_with(reconnect).await?;
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(MONITOR_QUERY * 2, fresh).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(pid, error = %describe(&e), "{function} failed"),
        Err(_) => tracing::warn!(pid, "{function} failed: the server did not answer"),
    }
}

/// The sessions that block `pid` right now. A failed sample is not worth failing a migration
/// for; it returns nothing and the next sample tries again.
async fn sample_blockers(monitor: &mut PgConnection, pid: i32) -> Vec<Blocker> {
    let sql = format!(
        "SELECT pid, coalesce(application_name, ''), {}, left(coalesce(query, ''), 100) \
         FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids({pid})) ORDER BY pid",
        utc("query_start")
    );
    let sample =
        tokio::time::timeout(MONITOR_QUERY, sqlx::raw_sql(&sql).fetch_all(&mut *monitor)).await;
    match sample.unwrap_or(Err(sqlx::Error::PoolTimedOut)) {
        Ok(rows) => rows
            .iter()
            .filter_map(|row| {
                Some(Blocker {
                    pid: i64::from(row.try_get::<i32, _>(0).ok()?),
                    application_name: row.try_get(1).ok()?,
                    query_start: row.try_get(2).ok()?,
                    query: redact::mask(&row.try_get::<String, _>(3).ok()?).into_owned(),
                })
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %describe(&e), "could not sample blocking sessions");
            Vec::new()
        }
    }
}
