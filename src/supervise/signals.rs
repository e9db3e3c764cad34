//! SIGTERM and SIGINT as a [`StopToken`]: a cheap, cloneable handle that says whether a stop was
//! requested and lets any wait select on it.
//!
//! The handlers are installed by [`listen`] through tokio (which uses signal-hook-registry
//! underneath), so the default "die at once" disposition is replaced before any database work
//! starts: a migration is never abandoned half-way by a signal, it is cancelled and rolled back.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

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
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGKILL => "SIGKILL",
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
    let (stop, _) = install(&[])?;
    Ok(stop)
}

/// The signals `run` forwards to the app besides SIGTERM and SIGINT (DESIGN.md "Supervising").
pub const FORWARDED: [i32; 4] = [libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// For `run`: SIGTERM and SIGINT fire the token as [`listen`] does, and every one of them, as
/// well as each of [`FORWARDED`], is also sent down the channel, in order, for forwarding.
pub fn listen_forwarding() -> std::io::Result<(StopToken, mpsc::UnboundedReceiver<i32>)> {
    install(&FORWARDED)
}

fn install(others: &[i32]) -> std::io::Result<(StopToken, mpsc::UnboundedReceiver<i32>)> {
    // Every handler is installed before any is listened to, so a failure leaves none half-set.
    let mut streams = vec![
        (libc::SIGTERM, signal(SignalKind::terminate())?),
        (libc::SIGINT, signal(SignalKind::interrupt())?),
    ];
    for &number in others {
        streams.push((number, signal(SignalKind::from_raw(number))?));
    }
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    for (number, mut stream) in streams {
        let arrived = arrived.clone();
        // Each listener lives as long as the process: the handler stays installed, so further
        // signals are absorbed rather than killing startgate in the middle of its cleanup.
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if arrived.send(number).is_err() {
                    return;
                }
            }
        });
    }
    let (tx, rx) = watch::channel(None);
    let (forward, forwarded) = mpsc::unbounded_channel();
    let forwarding = !others.is_empty();
    tokio::spawn(async move {
        while let Some(signal) = arrivals.recv().await {
            let stop = Stop { signal };
            let first_stop =
                matches!(signal, libc::SIGTERM | libc::SIGINT) && tx.borrow().is_none();
            if first_stop {
                tracing::warn!(
                    event = "signal",
                    signal = stop.name(),
                    "{} received: stopping",
                    stop.name()
                );
                let _ = tx.send(Some(stop));
            }
            if forwarding {
                let _ = forward.send(signal);
            }
        }
    });
    Ok((StopToken { rx }, forwarded))
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
