//! When the app counts as started, when it has missed its deadline, and when to probe next.
//! Pure: probe verdicts and times in, decisions out.
//!
//! Rules (DESIGN.md "Probing", "Startup phases", "`watch`"):
//! - while probing, an attempt every `interval` until one passes or the deadline
//!   (`STARTGATE_STARTUP_TIMEOUT` after the probing began); the last attempt is made at the
//!   deadline itself, so a late sleep never hides an app that came up just in time;
//! - once ready, an attempt every [`READY_INTERVAL`] to drive `/readyz`;
//! - a failed attempt after ready puts the app back to probing with a fresh deadline;
//! - a missed deadline is reported once per deadline; what follows (`run` stops the app,
//!   `watch` keeps serving and starts a fresh deadline) is the caller's choice.

use std::time::{Duration, Instant};

/// Between probes once the app is ready.
pub const READY_INTERVAL: Duration = Duration::from_secs(5);
/// The most an attempt may run past the startup deadline.
pub const LAST_ATTEMPT: Duration = Duration::from_millis(500);

/// What an observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth telling.
    None,
    /// The app passed its probe for the first time since probing began.
    Ready,
    /// The app stopped passing after it was ready: probing again, with a fresh deadline.
    Down,
    /// The deadline passed without the probe passing.
    Missed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Probing { deadline: Instant, reported: bool },
    Ready,
}

/// The readiness of one app.
#[derive(Debug, Clone)]
pub struct Readiness {
    timeout: Duration,
    interval: Duration,
    state: State,
}

impl Readiness {
    /// Probing begins at `now`.
    pub fn new(now: Instant, timeout: Duration, interval: Duration) -> Readiness {
        Readiness {
            timeout,
            interval,
            state: State::Probing {
                deadline: now + timeout,
                reported: false,
            },
        }
    }

    /// Records one probe's verdict at `now`.
    pub fn observe(&mut self, passed: bool, now: Instant) -> Change {
        match (self.state, passed) {
            (State::Probing { .. }, true) => {
                self.state = State::Ready;
                Change::Ready
            }
            (State::Probing { deadline, reported }, false) => {
                if now >= deadline && !reported {
                    self.state = State::Probing {
                        deadline,
                        reported: true,
                    };
                    Change::Missed
                } else {
                    Change::None
                }
            }
            (State::Ready, true) => Change::None,
            (State::Ready, false) => {
                self.restart(now);
                Change::Down
            }
        }
    }

    /// A fresh deadline from `now` (`watch`, after it has reported a hang).
    pub fn restart(&mut self, now: Instant) {
        self.state = State::Probing {
            deadline: now + self.timeout,
            reported: false,
        };
    }

    /// When to make the next attempt, the last one having ended at `now`.
    pub fn next_attempt(&self, now: Instant) -> Instant {
        match self.state {
            State::Ready => now + READY_INTERVAL,
            State::Probing {
                deadline,
                reported: false,
            } if deadline > now => (now + self.interval).min(deadline),
            State::Probing { .. } => now + self.interval,
        }
    }

    /// The limit for an attempt starting at `now`: the probe timeout, but while probing never
    /// much past the deadline (at most [`LAST_ATTEMPT`] after it), so that a hang is called
    /// on time even when each attempt may take long.
    pub fn attempt_limit(&self, now: Instant, probe_timeout: Duration) -> Duration {
        match self.state {
            State::Probing {
                deadline,
                reported: false,
            } => probe_timeout.min(deadline.saturating_duration_since(now) + LAST_ATTEMPT),
            _ => probe_timeout,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The current startup deadline, while probing.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Probing { deadline, .. } => Some(deadline),
            State::Ready => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_life_of_probes() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 10 * S, 200 * MS);
        // (time, passed, change, next attempt, deadline)
        let table: &[(Duration, bool, Change, Duration, Option<Duration>)] = &[
            (Duration::ZERO, false, Change::None, 200 * MS, Some(10 * S)),
            (9900 * MS, false, Change::None, 10 * S, Some(10 * S)),
            (
                10 * S,
                false,
                Change::Missed,
                10 * S + 200 * MS,
                Some(10 * S),
            ),
            // Reported once per deadline.
            (11 * S, false, Change::None, 11 * S + 200 * MS, Some(10 * S)),
            // `run` would have stopped it; `watch` carries on and it comes up late.
            (12 * S, true, Change::Ready, 17 * S, None),
            (17 * S, true, Change::None, 22 * S, None),
            (22 * S, false, Change::Down, 22 * S + 200 * MS, Some(32 * S)),
            (23 * S, true, Change::Ready, 28 * S, None),
        ];
        for (at, passed, change, next, deadline) in table {
            let now = t0 + *at;
            assert_eq!(r.observe(*passed, now), *change, "at {at:?}");
            assert_eq!(r.next_attempt(now), t0 + *next, "next after {at:?}");
            assert_eq!(r.deadline(), deadline.map(|d| t0 + d), "deadline at {at:?}");
        }
        assert!(r.is_ready());
    }

    #[test]
    fn attempts_near_the_deadline_are_cut_short() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 10 * S, 200 * MS);
        let limit = 2 * S;
        for (at, expected) in [
            (Duration::ZERO, 2 * S),
            (9 * S, 1500 * MS),
            (10 * S, 500 * MS),
            (11 * S, 500 * MS),
        ] {
            assert_eq!(r.attempt_limit(t0 + at, limit), expected, "at {at:?}");
        }
        assert_eq!(r.observe(true, t0), Change::Ready);
        assert_eq!(r.attempt_limit(t0 + 20 * S, limit), limit);
    }

    #[test]
    fn a_restart_gives_a_fresh_deadline() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 2 * S, S);
        assert_eq!(r.observe(false, t0 + 2 * S), Change::Missed);
        r.restart(t0 + 2 * S);
        assert_eq!(r.deadline(), Some(t0 + 4 * S));
        assert_eq!(r.observe(false, t0 + 3 * S), Change::None);
        assert_eq!(r.observe(false, t0 + 4 * S), Change::Missed);
    }
}
