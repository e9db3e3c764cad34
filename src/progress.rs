//! Publishes the phase machine ([`crate::phase`]) through a `tokio::sync::watch` channel and logs
//! one event per phase as it ends, with its outcome and duration.
//!
//! This is the thin shell around the pure machine: it supplies the clock, applies events, and
//! logs the transitions. Beside the machine it keeps the [`Facts`] that `/status` shows (the
//! database, the migrations, the app). Readers (the endpoint) hold a `watch::Receiver<Status>`
//! and never write; only the orchestration holds a [`Progress`].

use std::time::SystemTime;

use tokio::sync::watch;

use crate::phase::{Event, Machine, Outcome, Phase, Transition};

/// What startup has learnt besides its phases, for `/status` and `/metrics`. Never a secret:
/// the database is named by backend, host and name only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub database: Option<DatabaseFacts>,
    pub migrations: MigrationFacts,
    pub app: Option<AppFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseFacts {
    pub backend: &'static str,
    pub host: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationFacts {
    /// Applied by this run.
    pub applied: u64,
    /// Known once the history has been read.
    pub pending: Option<u64>,
    /// The newest applied version.
    pub current: Option<String>,
}

/// The supervised or watched app (`run`, `watch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFacts {
    pub pid: Option<u32>,
    /// The probe, as configured (`http://localhost:8000/`).
    pub probe: String,
    pub attempts: u64,
    /// Whether the last probe passed; drives `/readyz`.
    pub last_passed: bool,
    /// The last probe's result in words (`200 OK in 3 ms`, `connection refused`).
    pub last_result: Option<String>,
    /// The hang diagnosis, once there is one.
    pub diagnosis: Option<String>,
    /// The last lines of the app's stderr (masked), as of the last probe (`run` only).
    pub stderr: Vec<String>,
}

/// The phase machine and the facts: everything the endpoint serves.
#[derive(Debug, Clone)]
pub struct Status {
    pub machine: Machine,
    pub facts: Facts,
}

/// The writer side of the phase machine.
#[derive(Debug)]
pub struct Progress {
    tx: watch::Sender<Status>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// A machine in `starting` as of now.
    pub fn new() -> Progress {
        let (tx, _rx) = watch::channel(Status {
            machine: Machine::new(SystemTime::now()),
            facts: Facts::default(),
        });
        Progress { tx }
    }

    /// A reader that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// Everything as it is now.
    pub fn snapshot(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        self.tx.borrow().machine.phase()
    }

    /// Records what startup learnt (the database, the migrations, the app).
    pub fn learn(&self, change: impl FnOnce(&mut Facts)) {
        self.tx.send_modify(|status| change(&mut status.facts));
    }

    /// Moves on to `phase`; the current phase ends with its outcome (`ok` unless said otherwise).
    pub fn enter(&self, phase: Phase) {
        self.apply(Event::Enter(phase));
    }

    /// The current phase had nothing to do.
    pub fn skipped(&self, why: impl Into<String>) {
        self.apply(Event::Outcome(Outcome::Skipped(why.into())));
    }

    /// The current phase did its work; `detail` says what (`applied 3 migrations`).
    pub fn done(&self, detail: impl Into<String>) {
        self.apply(Event::Outcome(Outcome::Ok(Some(detail.into()))));
    }

    /// The current phase failed: startup ends in `failed` with this reason and exit status.
    pub fn fail(&self, reason: impl Into<String>, exit_code: i32) {
        self.apply(Event::Fail {
            reason: reason.into(),
            exit_code,
        });
    }

    /// A signal arrived: startup ends in `stopping`.
    pub fn stop(&self, signal: &str) {
        self.stopping(format!("{signal} received"));
    }

    /// Startup ends in `stopping` for `reason` (`the app exited with status 0`).
    pub fn stopping(&self, reason: impl Into<String>) {
        self.apply(Event::Stop {
            reason: reason.into(),
        });
    }

    /// The app stopped answering after `ready`: back to `probing_app`.
    pub fn app_down(&self, reason: impl Into<String>) {
        self.apply(Event::AppDown {
            reason: reason.into(),
        });
    }

    /// Updates the app's facts (creating them on first use).
    pub fn learn_app(&self, change: impl FnOnce(&mut AppFacts)) {
        self.learn(|facts| change(facts.app.get_or_insert_with(AppFacts::default)));
    }

    fn apply(&self, event: Event) {
        let now = SystemTime::now();
        self.tx
            .send_modify(|status| match status.machine.apply(event, now) {
                Ok(transitions) => transitions.iter().for_each(log),
                // A refused event is a bug in the orchestration; it must not take the process down,
                // and the machine is unchanged, so say so and carry on.
                Err(e) => tracing::error!(error = %e, "internal error in phase tracking"),
            });
    }
}

fn log(transition: &Transition) {
    match transition {
        Transition::Ended {
            phase,
            outcome,
            duration,
        } => {
            let duration_ms = duration.as_millis() as u64;
            let (name, kind) = (phase.as_str(), outcome.kind());
            match (outcome, outcome.detail()) {
                (Outcome::Failed(_), detail) => tracing::error!(
                    event = "phase",
                    phase = name,
                    outcome = kind,
                    duration_ms,
                    "{phase} failed after {duration_ms} ms: {}",
                    detail.unwrap_or_default()
                ),
                (_, Some(detail)) => tracing::info!(
                    event = "phase",
                    phase = name,
                    outcome = kind,
                    duration_ms,
                    detail,
                    "{phase} {kind} in {duration_ms} ms: {detail}"
                ),
                (_, None) => tracing::info!(
                    event = "phase",
                    phase = name,
                    outcome = kind,
                    duration_ms,
                    "{phase} {kind} in {duration_ms} ms"
                ),
            }
        }
        Transition::Entered(phase) => {
            tracing::debug!(
                event = "phase.enter",
                phase = phase.as_str(),
                "entering {phase}"
            )
        }
    }
}
