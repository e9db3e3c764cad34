//! SIGTERM and SIGINT as a [`StopToken`]: a cheap, cloneable handle that says whether a stop was
//! requested and lets any wait select on it.
//!
//! The handlers are installed by [`listen`] through tokio (which uses signal-hook-registry
//! underneath), so the default "die at once" disposition is replaced before any database work
//! starts: a migration is never abandoned half-way by a signal, it is cancelled and rolled back.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A stop request: the signal that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The signal number (15 for SIGTERM, 2 for SIGINT).
    pub signal: i32,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self.signal {
            libc::SIGTERM => "SIGTERM",
            libc::SIGINT => "SIGINT",
            libc::SIGHUP => "SIGHUP",
            libc::SIGQUIT => "SIGQUIT",
            _ => "signal",
        }
    }

    /// The exit status for being stopped by this signal: 128 + N.
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(255)
    }
}

/// Whether a stop was requested; clone it into every wait that must end on SIGTERM/SIGINT.
#[derive(Debug, Clone)]
pub struct StopToken {
    rx: watch::Receiver<Option<Stop>>,
}

impl StopToken {
    /// A token that never fires, for callers (and tests) with no signal handling.
    pub fn never() -> StopToken {
        let (tx, rx) = watch::channel(None);
        // Keep the sender alive for the life of the process, so `wait` pends for ever rather
        // than seeing a closed channel.
        std::mem::forget(tx);
        StopToken { rx }
    }

    /// A token and the sender that fires it (for tests and for in-process stop requests).
    pub fn manual() -> (watch::Sender<Option<Stop>>, StopToken) {
        let (tx, rx) = watch::channel(None);
        (tx, StopToken { rx })
    }

    /// The stop request, if one has arrived.
    pub fn stopped(&self) -> Option<Stop> {
        *self.rx.borrow()
    }

    /// Waits until a stop is requested.
    pub async fn wait(&self) -> Stop {
        let mut rx = self.rx.clone();
        loop {
            if let Some(stop) = *rx.borrow_and_update() {
                return stop;
            }
            if rx.changed().await.is_err() {
                // The sender is gone: no stop can come any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Installs SIGTERM and SIGINT handlers and returns the token they fire. Must be called inside
/// the tokio runtime.
pub fn listen() -> std::io::Result<StopToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        tracing::warn!(
            event = "signal",
            signal = Stop { signal }.name(),
            "{} received: cancelling and stopping",
            Stop { signal }.name()
        );
        let _ = tx.send(Some(Stop { signal }));
        // Keep the handlers installed (and the sender alive) so further signals are absorbed
        // rather than killing the process in the middle of its cleanup.
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    });
    Ok(StopToken { rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(
            Stop {
                signal: libc::SIGTERM
            }
            .exit_code(),
            143
        );
        assert_eq!(
            Stop {
                signal: libc::SIGINT
            }
            .exit_code(),
            130
        );
        assert_eq!(
            Stop {
                signal: libc::SIGTERM
            }
            .name(),
            "SIGTERM"
        );
    }

    #[tokio::test]
    async fn a_manual_token_wakes_its_waiters() {
        let (tx, token) = StopToken::manual();
        assert_eq!(token.stopped(), None);
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.wait().await }
        });
        tx.send(Some(Stop {
            signal: libc::SIGINT,
        }))
        .expect("send");
        let stop = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken in time")
            .expect("task");
        assert_eq!(stop.signal, libc::SIGINT);
        assert_eq!(
            token.stopped(),
            Some(Stop {
                signal: libc::SIGINT
            })
        );
    }
}
