//! Adopting and reaping orphans (DESIGN.md "Supervising": as PID 1 startgate reaps every
//! child; otherwise it registers as child subreaper, adopts the app's orphans, and reaps them).
//!
//! Rules:
//! - the children startgate spawned itself (the app, probes, helpers) are waited for by their
//!   own code through tokio; the reaper never reaps one of them
//!   ([`crate::supervise::process::with_managed`]), only zombies among the other children;
//! - the reaper wakes on every SIGCHLD, and once a second besides, so a coalesced signal never
//!   leaves a zombie for long;
//! - at the end, [`stop_orphans`] stops and reaps every adopted child still running: nothing the
//!   app started outlives startgate.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::supervise::{inspect, process};

/// startgate's own pid.
pub fn own_pid() -> i32 {
    // A pid always fits an i32 on Linux.
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

/// Makes startgate the reaper of its descendants' orphans: it already is as PID 1; otherwise
/// it registers as child subreaper. Returns whether orphans will come to startgate.
pub fn adopt_orphans() -> bool {
    if own_pid() == 1 {
        return true;
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    if !done {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot register as child subreaper: processes the app orphans are left to the system"
        );
    }
    done
}

/// Reaps every zombie child that startgate did not spawn itself. Returns how many it reaped.
pub fn reap_orphans() -> usize {
    process::with_managed(|managed| {
        let mut reaped = 0;
        for child in inspect::children_of(own_pid()) {
            let managed = u32::try_from(child.pid).is_ok_and(|pid| managed.contains(&pid));
            if child.state == 'Z' && !managed {
                let mut status = 0;
                // SAFETY: waitpid on one pid that is our zombie child; WNOHANG never blocks.
                if unsafe { libc::waitpid(child.pid, &mut status, libc::WNOHANG) } == child.pid {
                    reaped += 1;
                    tracing::debug!(
                        event = "reaped",
                        pid = child.pid,
                        "reaped orphan {} ({})",
                        child.pid,
                        child.comm
                    );
                }
            }
        }
        reaped
    })
}

/// Reaps orphans from now until the returned guard is dropped.
pub fn start() -> Reaper {
    Reaper(tokio::spawn(async move {
        let mut sigchld = signal(SignalKind::child()).ok();
        loop {
            match sigchld.as_mut() {
                Some(sigchld) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sigchld.recv()).await;
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            reap_orphans();
        }
    }))
}

/// The reaping task; it stops when this is dropped.
#[derive(Debug)]
pub struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The adopted children still running (not spawned by startgate itself).
fn adopted() -> Vec<i32> {
    process::with_managed(|managed| {
        inspect::children_of(own_pid())
            .into_iter()
            .filter(|c| !u32::try_from(c.pid).is_ok_and(|pid| managed.contains(&pid)))
            .map(|c| c.pid)
            .collect()
    })
}

/// Stops every adopted child: SIGTERM, SIGKILL after `grace`, and reaps them all.
pub async fn stop_orphans(grace: Duration) {
    stop_until_gone(
        "process(es) the app left behind",
        adopted,
        |pids, signal| {
            for pid in pids {
                // SAFETY: kill only sends a signal, to our own child.
                unsafe { libc::kill(*pid, signal) };
            }
        },
        grace,
    )
    .await;
}

/// Stops the processes `list` returns (`what` names them in the log): `send` gives them
/// SIGTERM, then SIGKILL to whatever `list` still returns after `grace`; orphans are reaped
/// throughout.
pub async fn stop_until_gone(
    what: &str,
    list: impl Fn() -> Vec<i32>,
    send: impl Fn(&[i32], i32),
    grace: Duration,
) {
    let pids = list();
    if pids.is_empty() {
        return;
    }
    tracing::info!(
        event = "leftovers",
        count = pids.len(),
        "stopping {} {what}",
        pids.len()
    );
    send(&pids, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        reap_orphans();
        let left = list();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            send(&left, libc::SIGKILL);
            tokio::time::sleep(Duration::from_millis(20)).await;
            reap_orphans();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
