//! Publishes the phase machine ([`crate::phase`]) through a `tokio::sync::watch` channel and logs
//! one event per phase as it ends, with its outcome and duration.
//!
//! This is the thin shell around the pure machine: it supplies the clock, applies events, and
//! logs the transitions. Readers (the log now, the HTTP endpoint later) hold a
//! `watch::Receiver<Machine>` and never write; only the orchestration holds a [`Progress`].

use std::time::SystemTime;

use tokio::sync::watch;

use crate::phase::{Event, Machine, Outcome, Phase, Transition};

/// The writer side of the phase machine.
#[derive(Debug)]
pub struct Progress {
    tx: watch::Sender<Machine>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// A machine in `starting` as of now.
    pub fn new() -> Progress {
        let (tx, _rx) = watch::channel(Machine::new(SystemTime::now()));
        Progress { tx }
    }

    /// A reader that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Machine> {
        self.tx.subscribe()
    }

    /// The machine as it is now.
    pub fn snapshot(&self) -> Machine {
        self.tx.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        self.tx.borrow().phase()
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
        self.apply(Event::Stop {
            signal: signal.to_string(),
        });
    }

    fn apply(&self, event: Event) {
        let now = SystemTime::now();
        self.tx
            .send_modify(|machine| match machine.apply(event, now) {
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
