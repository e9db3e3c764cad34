//! What a signal to startgate does to the app it supervises (DESIGN.md "Supervising"). Pure:
//! events in, actions out; the supervisor loop ([`crate::supervise::app`]) carries them out.
//!
//! Rules:
//! - SIGTERM and SIGINT: the first is forwarded to the app itself and startgate is stopping;
//!   with `STARTGATE_SHUTDOWN_GRACE` set, the group is killed that long after it;
//! - a second SIGTERM or SIGINT kills the app's whole group at once;
//! - SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 are forwarded to the app, and change nothing else.

use std::time::Duration;

/// What the supervisor must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this signal to the app's own process.
    Forward(i32),
    /// The phase becomes `stopping`, for this signal.
    Stopping(i32),
    /// Kill the app's process group this long from now.
    KillAfter(Duration),
    /// Kill the app's process group (SIGKILL) now.
    KillGroup,
}

/// The supervisor's memory of the signals so far.
#[derive(Debug, Clone, Default)]
pub struct Escalation {
    /// `STARTGATE_SHUTDOWN_GRACE`.
    grace: Option<Duration>,
    /// The first SIGTERM or SIGINT, once it has come.
    stopping: Option<i32>,
}

impl Escalation {
    pub fn new(grace: Option<Duration>) -> Escalation {
        Escalation {
            grace,
            stopping: None,
        }
    }

    /// Whether a SIGTERM or SIGINT has come.
    pub fn stopping(&self) -> Option<i32> {
        self.stopping
    }

    /// Signal `signal` reached startgate.
    pub fn on_signal(&mut self, signal: i32) -> Vec<Action> {
        let terminating = matches!(signal, libc::SIGTERM | libc::SIGINT);
        match (terminating, self.stopping) {
            (true, Some(_)) => vec![Action::KillGroup],
            (true, None) => {
                self.stopping = Some(signal);
                let mut actions = vec![Action::Stopping(signal), Action::Forward(signal)];
                actions.extend(self.grace.map(Action::KillAfter));
                actions
            }
            (false, _) => vec![Action::Forward(signal)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

    #[test]
    fn signals_escalate() {
        let grace = Duration::from_secs(30);
        let table: &[(Option<Duration>, &[i32], &[Action])] = &[
            (None, &[SIGHUP], &[Action::Forward(SIGHUP)]),
            (
                None,
                &[SIGTERM],
                &[Action::Stopping(SIGTERM), Action::Forward(SIGTERM)],
            ),
            (
                Some(grace),
                &[SIGINT],
                &[
                    Action::Stopping(SIGINT),
                    Action::Forward(SIGINT),
                    Action::KillAfter(grace),
                ],
            ),
            (None, &[SIGTERM, SIGUSR1], &[Action::Forward(SIGUSR1)]),
            (None, &[SIGTERM, SIGINT], &[Action::KillGroup]),
            (
                Some(grace),
                &[SIGUSR1, SIGTERM, SIGTERM],
                &[Action::KillGroup],
            ),
        ];
        for (grace, signals, last) in table {
            let mut escalation = Escalation::new(*grace);
            let mut actions = Vec::new();
            for signal in *signals {
                actions = escalation.on_signal(*signal);
            }
            assert_eq!(actions, *last, "{signals:?} with grace {grace:?}");
        }
    }

    #[test]
    fn remembers_the_first_stop() {
        let mut escalation = Escalation::new(None);
        assert_eq!(escalation.stopping(), None);
        escalation.on_signal(SIGHUP);
        assert_eq!(escalation.stopping(), None);
        escalation.on_signal(SIGINT);
        escalation.on_signal(SIGTERM);
        assert_eq!(escalation.stopping(), Some(SIGINT));
    }
}
