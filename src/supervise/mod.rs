//! Processes and signals: the only module that handles signals, spawns long-lived processes
//! and reaps them; the rest of startgate sees a [`signals::StopToken`] it can wait on.
//!
//! Rules for signals during the database steps: SIGTERM or SIGINT sets the stop token once; every
//! long wait (the database wait, the lock wait, a running statement) selects on it. A statement
//! in flight is cancelled on the server (not merely abandoned), its transaction rolled back, the
//! migration lock released, and startgate exits 128+N. A second signal changes nothing: the first
//! one is already being acted on, within a bounded time.
//!
//! Rules once the app runs (`run`; DESIGN.md "Supervising"): signals are forwarded to the app,
//! a second SIGTERM/SIGINT kills its group; the app's own exit status is startgate's; no process
//! of the app's group outlives startgate; adopted orphans are reaped ([`reaper`]). The pure
//! cores are [`readiness`] (deadlines and probe cadence), [`escalation`] (what each signal does),
//! [`tail`] (the stderr tail) and the
//! parsers of [`inspect`]; [`app`] and [`watch`] are the I/O loops around them.

pub mod app;
pub mod command;
pub mod diagnose;
pub mod escalation;
pub mod guard;
pub mod inspect;
pub mod probe;
pub mod process;
pub mod readiness;
pub mod reaper;
pub mod signals;
pub mod tail;
pub mod watch;
