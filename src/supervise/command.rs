//! Running a migrate command (`STARTGATE_MIGRATE_COMMAND`): `sh -c COMMAND` behind the guard
//! ([`crate::supervise::guard`]), in a process group of its own, with its output logged line by
//! line.
//!
//! Rules:
//! - the guard leads the group and the command runs inside it: stopping the group stops
//!   everything the command started there, and startgate's death (even by SIGKILL) kills the
//!   group through the guard;
//! - stdin is closed; every stdout and stderr line becomes one log event (`event =
//!   "migrate.output"`, with its stream), secrets masked and at most [`tail::MAX_LINE`] bytes
//!   long; the last [`process::STDERR_TAIL_LINES`] stderr lines are kept for the message;
//! - the child is spawned through [`process::spawn_managed`] and always reaped: by
//!   [`Running::wait`], or killed (group and all) when the [`Running`] is dropped;
//! - what the command does to the database (its sessions, the timeouts) is the caller's
//!   business: this module only tells which TCP connections the group holds.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::supervise::guard;
use crate::supervise::inspect;
use crate::supervise::process::{self, Managed, STDERR_TAIL_LINES};
use crate::supervise::tail::Tail;

/// A migrate command that is running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The guard's pid, which is the group's id.
    pgid: i32,
    _managed: Managed,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<Tail>>,
}

/// The command could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the migrate command: {0}")]
pub struct StartError(#[source] pub std::io::Error);

/// Starts `sh -c script` behind the guard, with the caller's environment plus `env`.
pub fn start(script: &str, env: &[(String, String)]) -> Result<Running, StartError> {
    let exe = std::env::current_exe().map_err(StartError)?;
    let parent = std::process::id();
    let mut command = Command::new(exe);
    command
        .arg(guard::SUBCOMMAND)
        .arg(parent.to_string())
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .envs(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let (mut child, managed) = process::spawn_managed(&mut command).map_err(StartError)?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| StartError(std::io::Error::other("it exited before its pid was read")))?;
    let tail = Arc::new(Mutex::new(Tail::new(STDERR_TAIL_LINES)));
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pump(out, "stdout", None)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(pump(err, "stderr", Some(Arc::clone(&tail)))));
    Ok(Running {
        child,
        pgid,
        _managed: managed,
        stdout,
        stderr,
        tail,
    })
}

/// Logs every line of `stream` as it completes; stderr lines also go to `tail`.
async fn pump(
    mut stream: impl AsyncRead + Unpin,
    name: &'static str,
    tail: Option<Arc<Mutex<Tail>>>,
) {
    // A tail of unbounded capacity is the line splitter: drained after every chunk.
    let mut lines = Tail::new(usize::MAX);
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lines.push(&buf[..n]);
        emit(&mut lines, name, tail.as_deref());
    }
    lines.finish();
    emit(&mut lines, name, tail.as_deref());
}

fn emit(lines: &mut Tail, name: &'static str, tail: Option<&Mutex<Tail>>) {
    for line in lines.drain() {
        tracing::info!(event = "migrate.output", stream = name, "{line}");
        if let Some(tail) = tail {
            let mut tail = tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tail.push(line.as_bytes());
            tail.push(b"\n");
        }
    }
}

impl Running {
    /// The process group's id (the guard's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the command to exit (cancel-safe: it may be raced against a timer).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The local addresses and ports of the TCP connections the group holds to `server_port`
    /// (every port when `None`): what the server sees as the sessions' `client_addr` and
    /// `client_port`.
    pub fn client_ports(&self, server_port: Option<u16>) -> Vec<(std::net::IpAddr, u16)> {
        let pids: Vec<i32> = inspect::group_members(self.pgid)
            .iter()
            .map(|stat| stat.pid)
            .collect();
        let mut ports: Vec<(std::net::IpAddr, u16)> = inspect::connections(&pids)
            .into_iter()
            .filter(|c| server_port.is_none_or(|p| c.remote_port == p))
            .map(|c| (c.local_address, c.local_port))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: killpg only sends a signal to the group startgate created.
        unsafe { libc::killpg(self.pgid, signal) };
    }

    /// SIGTERM to the group, SIGKILL after `grace`, and the guard reaped.
    pub async fn stop(&mut self, grace: Duration) {
        let pid = u32::try_from(self.pgid).ok();
        process::stop_group(&mut self.child, pid, grace).await;
    }

    /// After the command exited (or was stopped): whatever is left in the group is killed,
    /// the output read to its end, and the last stderr lines returned (masked).
    pub async fn finish(mut self) -> Vec<String> {
        self.signal(libc::SIGKILL);
        for pump in [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
        {
            // The pipes close when the last process holding them is gone; bounded anyway, in
            // case something escaped the group with the pipe open.
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        let mut tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.finish();
        tail.lines()
    }
}

impl Drop for Running {
    /// `kill_on_drop` reaches the guard alone; the group goes too, so a dropped run (a panic,
    /// a cancelled future) leaves nothing behind.
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal to the group startgate created; an empty group
        // makes it fail harmlessly with ESRCH.
        unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
    }
}

/// How a command's exit status reads in a message: `exited with status 3`, `was killed by
/// signal 9 (SIGKILL)`. The guard reports a signal as 128+N, as a shell does.
pub fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code @ 129..=192) => process::describe_signal(code - 128),
        _ => process::describe_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn describes_statuses() {
        for (raw, expected) in [
            (0, "exited with status 0"),
            (3 << 8, "exited with status 3"),
            (137 << 8, "was killed by signal 9 (SIGKILL)"),
            (9, "was killed by signal 9 (SIGKILL)"),
            (15, "was killed by signal 15 (SIGTERM)"),
        ] {
            assert_eq!(describe_status(ExitStatus::from_raw(raw)), expected);
        }
    }
}
