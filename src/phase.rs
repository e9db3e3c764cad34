//! The startup phase machine: which phase startgate is in, when each phase started and ended,
//! how it ended, and why startup failed. Pure: events in, phases out; the caller supplies the
//! time with every event, so tests need no clock.
//!
//! Phases, in order (DESIGN.md "Startup phases"): `starting` → `waiting_for_database` →
//! `acquiring_lock` → `backing_up` → `migrating` → `verifying` → (`init`: `done`) →
//! `starting_app` → `probing_app` → `ready`. Any step can end in `failed`; SIGTERM/SIGINT leads
//! to `stopping`. An app that goes down after `ready` puts the phase back to `probing_app`.
//!
//! The machine only moves forward (a later phase may be entered directly: `watch` goes from
//! `starting` to `probing_app`), except for that one way back. `failed`, `stopping` and `done`
//! are final. An event that does not fit is refused with [`InvalidTransition`] and changes
//! nothing; it is a bug in the orchestration, never a user error.
//!
//! `crate::progress` publishes this machine through a `tokio::sync::watch` channel for the log and
//! the endpoint; the endpoint only reads it.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A startup phase, named as `/status` and the log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Starting,
    WaitingForDatabase,
    AcquiringLock,
    BackingUp,
    Migrating,
    Verifying,
    /// `init` finished every step.
    Done,
    StartingApp,
    ProbingApp,
    Ready,
    Failed,
    Stopping,
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::Starting,
        Phase::WaitingForDatabase,
        Phase::AcquiringLock,
        Phase::BackingUp,
        Phase::Migrating,
        Phase::Verifying,
        Phase::Done,
        Phase::StartingApp,
        Phase::ProbingApp,
        Phase::Ready,
        Phase::Failed,
        Phase::Stopping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForDatabase => "waiting_for_database",
            Phase::AcquiringLock => "acquiring_lock",
            Phase::BackingUp => "backing_up",
            Phase::Migrating => "migrating",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
            Phase::StartingApp => "starting_app",
            Phase::ProbingApp => "probing_app",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
            Phase::Stopping => "stopping",
        }
    }

    /// Position on the forward path; `None` for the phases outside it (`failed`, `stopping`).
    fn rank(self) -> Option<u8> {
        Some(match self {
            Phase::Starting => 0,
            Phase::WaitingForDatabase => 1,
            Phase::AcquiringLock => 2,
            Phase::BackingUp => 3,
            Phase::Migrating => 4,
            Phase::Verifying => 5,
            // `done` and `starting_app` are the two ways on after `verifying`.
            Phase::Done | Phase::StartingApp => 6,
            Phase::ProbingApp => 7,
            Phase::Ready => 8,
            Phase::Failed | Phase::Stopping => return None,
        })
    }

    /// Whether `self` comes before `later` on the forward path (`verifying` precedes `done`;
    /// `ready` does not).
    pub fn precedes(self, later: Phase) -> bool {
        matches!((self.rank(), later.rank()), (Some(a), Some(b)) if a < b)
    }

    /// Final phases accept no further transition.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Stopping)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did its work; an optional detail for the log and `/status`
    /// (`applied 3 migrations`).
    Ok(Option<String>),
    /// It had nothing to do, and says why (`nothing to apply`).
    Skipped(String),
    /// It failed; the reason is also the startup failure's reason.
    Failed(String),
    /// It was cut short: a signal arrived, or the app went down after `ready`.
    Interrupted(String),
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
            Outcome::Interrupted(_) => "interrupted",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Ok(detail) => detail.as_deref(),
            Outcome::Skipped(d) | Outcome::Failed(d) | Outcome::Interrupted(d) => Some(d),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(detail) => write!(f, "{}: {detail}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// One phase as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started: SystemTime,
    /// `None` while the phase is current.
    pub ended: Option<SystemTime>,
    /// Set when the phase ends, or earlier by [`Event::Outcome`].
    pub outcome: Option<Outcome>,
}

impl PhaseRecord {
    /// How long the phase lasted, or has lasted until `now` while it is current.
    pub fn duration(&self, now: SystemTime) -> Duration {
        self.ended
            .unwrap_or(now)
            .duration_since(self.started)
            .unwrap_or(Duration::ZERO)
    }
}

/// Why startup failed: the phase it failed in, the reason, and the exit status it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub phase: Phase,
    pub reason: String,
    pub exit_code: i32,
}

/// What happens to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Move on to a later phase. The current phase ends with the outcome it was given, or `ok`.
    Enter(Phase),
    /// Say how the current phase is ending (before the next [`Event::Enter`]), e.g.
    /// `Skipped("nothing to apply")`.
    Outcome(Outcome),
    /// The current phase failed; startup ends in `failed`.
    Fail { reason: String, exit_code: i32 },
    /// The app stopped answering after `ready`: back to `probing_app` with a fresh deadline.
    AppDown { reason: String },
    /// SIGTERM or SIGINT (`SIGTERM received`), or the app ended on its own after it was
    /// ready (`the app exited with status 0`): startup ends in `stopping`.
    Stop { reason: String },
}

/// A change the caller may want to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A phase ended, with its outcome and duration.
    Ended {
        phase: Phase,
        outcome: Outcome,
        duration: Duration,
    },
    /// A phase began.
    Entered(Phase),
}

/// An event that does not fit the current phase (a bug in the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("phase machine: {event} is not possible in phase {phase}")]
pub struct InvalidTransition {
    pub phase: Phase,
    pub event: String,
}

/// The phase machine. Build with [`Machine::new`], drive with [`Machine::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Every phase so far, in order; the last one is current.
    records: Vec<PhaseRecord>,
    failure: Option<Failure>,
}

impl Machine {
    /// A machine in `starting`, begun at `at`.
    pub fn new(at: SystemTime) -> Machine {
        Machine {
            records: vec![PhaseRecord {
                phase: Phase::Starting,
                started: at,
                ended: None,
                outcome: None,
            }],
            failure: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.current().phase
    }

    /// When the machine began (`starting`).
    pub fn started(&self) -> SystemTime {
        self.records[0].started
    }

    /// Every phase so far; the last one is current.
    pub fn records(&self) -> &[PhaseRecord] {
        &self.records
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether startup has reached `ready` (for `run` and `watch`) or `done` (for `init`).
    pub fn started_up(&self) -> bool {
        matches!(self.phase(), Phase::Ready | Phase::Done)
    }

    fn current(&self) -> &PhaseRecord {
        // `records` is never empty: `new` pushes `starting` and nothing removes records.
        &self.records[self.records.len() - 1]
    }

    fn current_mut(&mut self) -> &mut PhaseRecord {
        let last = self.records.len() - 1;
        &mut self.records[last]
    }

    /// Applies `event` at time `at`. Returns what changed, or refuses an event that does not
    /// fit and leaves the machine as it was.
    pub fn apply(
        &mut self,
        event: Event,
        at: SystemTime,
    ) -> Result<Vec<Transition>, InvalidTransition> {
        let phase = self.phase();
        let invalid = |event: &Event| InvalidTransition {
            phase,
            event: describe(event),
        };
        match event {
            Event::Enter(next) => {
                let forward =
                    matches!((phase.rank(), next.rank()), (Some(from), Some(to)) if to > from);
                if phase.is_final() || !forward || next == Phase::Starting {
                    return Err(invalid(&Event::Enter(next)));
                }
                Ok(self.move_to(next, Outcome::Ok(None), at))
            }
            Event::Outcome(outcome) => {
                if phase.is_final() {
                    return Err(invalid(&Event::Outcome(outcome)));
                }
                self.current_mut().outcome = Some(outcome);
                Ok(Vec::new())
            }
            Event::Fail { reason, exit_code } => {
                if phase.is_final() {
                    return Err(invalid(&Event::Fail { reason, exit_code }));
                }
                // A failure overrides an outcome set earlier: the phase did not end well.
                self.current_mut().outcome = None;
                let transitions = self.move_to(Phase::Failed, Outcome::Failed(reason.clone()), at);
                self.failure = Some(Failure {
                    phase,
                    reason,
                    exit_code,
                });
                Ok(transitions)
            }
            Event::AppDown { reason } => {
                if phase != Phase::Ready {
                    return Err(invalid(&Event::AppDown { reason }));
                }
                Ok(self.move_to(Phase::ProbingApp, Outcome::Interrupted(reason), at))
            }
            Event::Stop { reason } => {
                if phase.is_final() {
                    return Err(invalid(&Event::Stop { reason }));
                }
                self.current_mut().outcome = None;
                Ok(self.move_to(Phase::Stopping, Outcome::Interrupted(reason), at))
            }
        }
    }

    /// Ends the current phase (with its own outcome if one was set, else `default`) and enters
    /// `next`.
    fn move_to(&mut self, next: Phase, default: Outcome, at: SystemTime) -> Vec<Transition> {
        let current = self.current_mut();
        let outcome = current.outcome.take().unwrap_or(default);
        current.ended = Some(at);
        current.outcome = Some(outcome.clone());
        let ended = Transition::Ended {
            phase: current.phase,
            outcome,
            duration: current.duration(at),
        };
        self.records.push(PhaseRecord {
            phase: next,
            started: at,
            ended: None,
            outcome: None,
        });
        vec![ended, Transition::Entered(next)]
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Enter(p) => format!("entering {p}"),
        Event::Outcome(o) => format!("outcome {}", o.kind()),
        Event::Fail { .. } => "failing".to_string(),
        Event::AppDown { .. } => "app down".to_string(),
        Event::Stop { reason } => format!("stopping ({reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    /// Feeds `events` (each at its millisecond) and compares the phase records as
    /// `phase[start-end outcome]` and the failure.
    fn check(events: &[(u64, Event)], expected: &str, failure: Option<(Phase, &str, i32)>) {
        let mut m = Machine::new(t(0));
        for (at, event) in events {
            m.apply(event.clone(), t(*at))
                .unwrap_or_else(|e| panic!("{e} at {at}"));
        }
        let got: Vec<String> = m
            .records()
            .iter()
            .map(|r| {
                let start = r.started.duration_since(t(0)).unwrap().as_millis();
                match (&r.ended, &r.outcome) {
                    (Some(end), Some(o)) => format!(
                        "{}[{start}-{} {o}]",
                        r.phase,
                        end.duration_since(t(0)).unwrap().as_millis()
                    ),
                    (None, None) => format!("{}[{start}-]", r.phase),
                    (None, Some(o)) => format!("{}[{start}- {o}]", r.phase),
                    (Some(_), None) => panic!("ended without outcome"),
                }
            })
            .collect();
        assert_eq!(got.join(" "), expected);
        assert_eq!(
            m.failure()
                .map(|f| (f.phase, f.reason.as_str(), f.exit_code)),
            failure
        );
    }

    use Event::*;
    use Phase::*;

    #[test]
    fn init_walks_every_step_with_outcomes() {
        check(
            &[
                (5, Enter(WaitingForDatabase)),
                (30, Enter(AcquiringLock)),
                (31, Enter(BackingUp)),
                (
                    31,
                    Outcome(super::Outcome::Skipped("nothing to apply".into())),
                ),
                (32, Enter(Migrating)),
                (
                    32,
                    Outcome(super::Outcome::Skipped("nothing to apply".into())),
                ),
                (33, Enter(Verifying)),
                (40, Enter(Done)),
            ],
            "starting[0-5 ok] waiting_for_database[5-30 ok] acquiring_lock[30-31 ok] \
             backing_up[31-32 skipped: nothing to apply] migrating[32-33 skipped: nothing to apply] \
             verifying[33-40 ok] done[40-]",
            None,
        );
    }

    #[test]
    fn run_reaches_ready_and_goes_back_to_probing_when_the_app_goes_down() {
        check(
            &[
                (1, Enter(WaitingForDatabase)),
                (2, Enter(Verifying)),
                (3, Enter(StartingApp)),
                (4, Enter(ProbingApp)),
                (1004, Enter(Ready)),
                (
                    9000,
                    AppDown {
                        reason: "probe failed: connection refused".into(),
                    },
                ),
                (9500, Enter(Ready)),
            ],
            "starting[0-1 ok] waiting_for_database[1-2 ok] verifying[2-3 ok] starting_app[3-4 ok] \
             probing_app[4-1004 ok] ready[1004-9000 interrupted: probe failed: connection refused] \
             probing_app[9000-9500 ok] ready[9500-]",
            None,
        );
    }

    #[test]
    fn watch_goes_straight_to_probing() {
        check(
            &[(0, Enter(ProbingApp)), (700, Enter(Ready))],
            "starting[0-0 ok] probing_app[0-700 ok] ready[700-]",
            None,
        );
    }

    #[test]
    fn a_failure_records_phase_reason_and_exit_code() {
        check(
            &[
                (1, Enter(WaitingForDatabase)),
                (
                    60_001,
                    Fail {
                        reason: "database not reachable: connection refused".into(),
                        exit_code: 3,
                    },
                ),
            ],
            "starting[0-1 ok] waiting_for_database[1-60001 failed: database not reachable: connection refused] \
             failed[60001-]",
            Some((
                WaitingForDatabase,
                "database not reachable: connection refused",
                3,
            )),
        );
    }

    #[test]
    fn a_failure_overrides_an_earlier_outcome() {
        check(
            &[
                (1, Enter(Migrating)),
                (2, Outcome(super::Outcome::Ok(Some("applied 2".into())))),
                (
                    3,
                    Fail {
                        reason: "0003_x.sql:4: syntax error".into(),
                        exit_code: 6,
                    },
                ),
            ],
            "starting[0-1 ok] migrating[1-3 failed: 0003_x.sql:4: syntax error] failed[3-]",
            Some((Migrating, "0003_x.sql:4: syntax error", 6)),
        );
    }

    #[test]
    fn a_signal_leads_to_stopping() {
        check(
            &[
                (1, Enter(Migrating)),
                (
                    2,
                    Stop {
                        reason: "SIGTERM received".into(),
                    },
                ),
            ],
            "starting[0-1 ok] migrating[1-2 interrupted: SIGTERM received] stopping[2-]",
            None,
        );
    }

    #[test]
    fn refuses_what_does_not_fit_and_changes_nothing() {
        let cases: Vec<(Vec<Event>, Event)> = vec![
            (vec![Enter(Migrating)], Enter(WaitingForDatabase)),
            (vec![Enter(Migrating)], Enter(Migrating)),
            (vec![], Enter(Starting)),
            (vec![], Enter(Failed)),
            (vec![Enter(Done)], Enter(StartingApp)),
            (vec![Enter(ProbingApp)], AppDown { reason: "x".into() }),
            (
                vec![Fail {
                    reason: "x".into(),
                    exit_code: 1,
                }],
                Enter(Done),
            ),
            (
                vec![Fail {
                    reason: "x".into(),
                    exit_code: 1,
                }],
                Stop {
                    reason: "SIGTERM received".into(),
                },
            ),
            (
                vec![Stop {
                    reason: "SIGINT received".into(),
                }],
                Fail {
                    reason: "x".into(),
                    exit_code: 1,
                },
            ),
            (vec![Enter(Done)], Outcome(super::Outcome::Ok(None))),
        ];
        for (before, bad) in cases {
            let mut m = Machine::new(t(0));
            for e in before {
                m.apply(e, t(1)).unwrap();
            }
            let snapshot = m.clone();
            assert!(
                m.apply(bad.clone(), t(2)).is_err(),
                "{bad:?} should be refused"
            );
            assert_eq!(m, snapshot, "{bad:?} changed the machine");
        }
    }

    #[test]
    fn reports_transitions_for_the_log() {
        let mut m = Machine::new(t(0));
        let transitions = m.apply(Enter(WaitingForDatabase), t(25)).unwrap();
        assert_eq!(
            transitions,
            [
                Transition::Ended {
                    phase: Starting,
                    outcome: super::Outcome::Ok(None),
                    duration: Duration::from_millis(25)
                },
                Transition::Entered(WaitingForDatabase)
            ]
        );
        assert!(!m.started_up());
        m.apply(Enter(Done), t(30)).unwrap();
        assert!(m.started_up());
    }
}
