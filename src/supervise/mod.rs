//! Processes and signals. Only this module handles signals (and, in later versions, spawns and
//! reaps processes); the rest of startgate sees a [`signals::StopToken`] it can wait on.
//!
//! Rules for signals during the database steps: SIGTERM or SIGINT sets the stop token once; every
//! long wait (the database wait, the lock wait, a running statement) selects on it. A statement
//! in flight is cancelled on the server (not merely abandoned), its transaction rolled back, the
//! migration lock released, and startgate exits 128+N. A second signal changes nothing: the first
//! one is already being acted on, within a bounded time.

pub mod process;
pub mod signals;
