//! Waiting for the database: connect with exponential backoff and jitter until a real query
//! succeeds, up to `STARTGATE_DB_WAIT_TIMEOUT`.
//!
//! Every attempt is bounded (never longer than what is left of the deadline, and never longer
//! than [`MAX_ATTEMPT`]), every failed attempt is logged with its reason, and the pause between
//! attempts grows from [`FIRST_DELAY`] to [`MAX_DELAY`] with jitter (backon), so that a fleet
//! of replicas restarting together does not hammer a database that is coming up. At the
//! deadline the last reason is returned; `main` turns it into exit 3.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::backend::{Backend, ConnectFailure, ConnectFailureKind, ConnectTarget};
use crate::duration::HumanDuration;

/// The first pause after a failed attempt.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between attempts: a database that comes up is noticed within this.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// The longest one attempt may take (TCP connect, TLS, authentication, `SELECT 1`).
pub const MAX_ATTEMPT: Duration = Duration::from_secs(10);

/// The database did not accept a real query within the wait (or its URL is wrong).
#[derive(Debug, thiserror::Error)]
pub struct WaitError {
    /// The URL without its password.
    pub url: String,
    /// `STARTGATE_DB_WAIT_TIMEOUT`.
    pub timeout: Duration,
    pub attempts: u32,
    /// The last attempt's failure; part of the message (not a separate cause) because an
    /// operator needs it on the same line.
    pub last: ConnectFailure,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.last.kind == ConnectFailureKind::BadUrl {
            // The detail names the URL (without its password) and what is wrong with it.
            return f.write_str(&self.last.detail);
        }
        write!(
            f,
            "database {} not reachable within {} ({} attempt{}); last error: {}",
            self.url,
            HumanDuration(self.timeout),
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.last
        )
    }
}

/// Connects to the database, retrying until `timeout` has passed. A `timeout` of zero makes one
/// attempt.
pub async fn wait_for_database<B: Backend>(
    url: &crate::dburl::DatabaseUrl,
    application_name: &str,
    timeout: Duration,
    lock_timeout: Duration,
) -> Result<B, WaitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let target = ConnectTarget {
            url: url.clone(),
            application_name: application_name.to_string(),
            // Even with no time left, one attempt gets a fair chance to finish.
            attempt_timeout: left.clamp(Duration::from_secs(1), MAX_ATTEMPT),
            lock_timeout,
        };
        let failure = match B::connect(&target).await {
            Ok(backend) => {
                if attempts > 1 {
                    tracing::info!(
                        url = %url,
                        attempts,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "database is up"
                    );
                }
                return Ok(backend);
            }
            Err(failure) => failure,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // A wrong URL stays wrong: say so at once instead of retrying for the whole wait.
        if left.is_zero() || failure.kind == ConnectFailureKind::BadUrl {
            return Err(WaitError {
                url: url.redacted(),
                timeout,
                attempts,
                last: failure,
            });
        }
        // backon adds its jitter on top of the maximum: clamp after it.
        let pause = delays.next().unwrap_or(MAX_DELAY).min(MAX_DELAY).min(left);
        tracing::warn!(
            url = %url,
            attempt = attempts,
            reason = failure.kind.as_str(),
            retry_in_ms = pause.as_millis() as u64,
            "database not ready (attempt {attempts}): {failure}; retrying in {}",
            HumanDuration(pause)
        );
        tokio::time::sleep(pause).await;
    }
}
