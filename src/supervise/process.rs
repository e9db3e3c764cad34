//! Running a helper program to completion within a bound: `pg_dump`, the backup command, and
//! (later) hang and migrate commands.
//!
//! Rules, for every program startgate runs this way:
//! - it runs in a process group of its own, so that stopping it stops everything it started;
//! - its stderr is kept (the last [`STDERR_TAIL_LINES`] lines, secrets masked) for the error
//!   message; its stdout goes where the caller says (a file for `pg_dump`, nowhere otherwise);
//! - at the deadline, or when a stop is requested, the group gets SIGTERM, then SIGKILL after
//!   `kill_grace`;
//! - it is always reaped before this returns, and killed (group and all) if the future is
//!   dropped;
//! - it is spawned through [`spawn_managed`], so the orphan reaper
//!   ([`crate::supervise::reaper`]) leaves it to tokio, which waits for it here.

use std::collections::BTreeSet;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::duration::HumanDuration;
use crate::supervise::signals::{Stop, StopToken};
use crate::supervise::tail::Tail;

/// How many lines of a program's stderr are kept for its error message.
pub const STDERR_TAIL_LINES: usize = 20;

/// How a bounded program ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The last lines of its stderr, secrets masked.
    pub stderr_tail: Vec<String>,
}

impl Finished {
    /// The stderr tail as one string for a message (`; `-separated).
    pub fn stderr_summary(&self) -> String {
        self.stderr_tail.join("; ")
    }
}

/// Why a bounded program did not finish on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} not found on PATH")]
    NotFound { program: String },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}; it was stopped{}", HumanDuration(*.limit), tail_text(.stderr_tail))]
    TimedOut {
        program: String,
        limit: Duration,
        stderr_tail: Vec<String>,
    },
    #[error("{program} was stopped by {}", .stop.name())]
    Interrupted { program: String, stop: Stop },
    #[error("waiting for {program} failed: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (last output: {})", tail.join("; "))
    }
}

/// The pids of the children startgate spawned and waits for itself (through tokio). The
/// reaper reaps every other child (adopted orphans) and must never steal one of these: their
/// exit statuses matter.
static MANAGED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Keeps a spawned child's pid in the managed set until dropped (after the child is reaped).
#[derive(Debug)]
pub struct Managed(Option<u32>);

impl Drop for Managed {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            managed().remove(&pid);
        }
    }
}

fn managed() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    // A panic while holding the lock leaves a set that is still a valid set.
    MANAGED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `command` and records its pid as managed, under the lock the reaper takes, so the
/// reaper can never see it exit before it is recorded.
pub fn spawn_managed(command: &mut Command) -> std::io::Result<(Child, Managed)> {
    let mut set = managed();
    let child = command.spawn()?;
    let pid = child.id();
    if let Some(pid) = pid {
        set.insert(pid);
    }
    Ok((child, Managed(pid)))
}

/// Runs `f` with the managed pids locked (the reaper's view of what it must not touch).
pub fn with_managed<R>(f: impl FnOnce(&BTreeSet<u32>) -> R) -> R {
    f(&managed())
}

/// A child's status as an exit status: its own, or 128+N when signal N ended it (as a shell
/// reports it).
pub fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

/// How a child ended, for a message: `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => describe_signal(signal),
        (None, None) => "ended".to_string(),
    }
}

/// `was killed by signal 9 (SIGKILL)`.
pub fn describe_signal(signal: i32) -> String {
    format!("was killed by signal {signal} ({})", Stop { signal }.name())
}

/// The most of a program's stdout [`output_of`] keeps.
const MAX_CAPTURE: usize = 64 * 1024;

/// Runs `command` like [`run_bounded`] and returns its stdout too (at most 64 KiB, for programs
/// that print a version or a short answer).
pub async fn output_of(
    program: &str,
    command: Command,
    limit: Duration,
    kill_grace: Duration,
    stop: &StopToken,
) -> Result<(Finished, String), RunError> {
    let mut captured = String::new();
    let finished = run(
        program,
        command,
        Stdio::piped(),
        limit,
        kill_grace,
        stop,
        Some(&mut captured),
    )
    .await?;
    Ok((finished, captured))
}

/// Runs `command` (named `program` in messages) until it exits, at most `limit`. `stdout` is
/// where its standard output goes.
pub async fn run_bounded(
    program: &str,
    command: Command,
    stdout: Stdio,
    limit: Duration,
    kill_grace: Duration,
    stop: &StopToken,
) -> Result<Finished, RunError> {
    run(program, command, stdout, limit, kill_grace, stop, None).await
}

async fn run(
    program: &str,
    mut command: Command,
    stdout: Stdio,
    limit: Duration,
    kill_grace: Duration,
    stop: &StopToken,
    capture: Option<&mut String>,
) -> Result<Finished, RunError> {
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let (mut child, _managed) =
        spawn_managed(&mut command).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RunError::NotFound {
                program: program.to_string(),
            },
            _ => RunError::Spawn {
                program: program.to_string(),
                source,
            },
        })?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let captured = tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(stdout) = stdout {
            let _ = stdout
                .take(MAX_CAPTURE as u64)
                .read_to_end(&mut bytes)
                .await;
        }
        bytes
    });
    let stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        let mut tail = Tail::new(STDERR_TAIL_LINES);
        if let Some(mut stderr) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                tail.push(&buf[..n]);
            }
        }
        tail.finish();
        tail.lines()
    });

    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        _ = tokio::time::sleep(limit) => Err(None),
        stop = stop.wait() => Err(Some(stop)),
    };
    let status = match outcome {
        Ok(status) => status.map_err(|source| RunError::Wait {
            program: program.to_string(),
            source,
        })?,
        Err(stopped) => {
            stop_group(&mut child, pid, kill_grace).await;
            let stderr_tail = tail.await.unwrap_or_default();
            return Err(match stopped {
                Some(stop) => RunError::Interrupted {
                    program: program.to_string(),
                    stop,
                },
                None => RunError::TimedOut {
                    program: program.to_string(),
                    limit,
                    stderr_tail,
                },
            });
        }
    };
    let stderr_tail = tail.await.unwrap_or_default();
    if let Some(capture) = capture {
        let bytes = captured.await.unwrap_or_default();
        *capture = crate::redact::mask(&String::from_utf8_lossy(&bytes)).into_owned();
    }
    Ok(Finished {
        status,
        stderr_tail,
    })
}

/// SIGTERM to the process group, SIGKILL after `grace`, then reap the child.
pub async fn stop_group(child: &mut Child, pid: Option<u32>, grace: Duration) {
    let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        let _ = child.kill().await;
        return;
    };
    // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0)).
    unsafe { libc::killpg(pgid, libc::SIGTERM) };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = child.wait().await;
    }
    // Anything the child left behind in its group goes too.
    // SAFETY: as above; an empty group makes killpg fail harmlessly with ESRCH.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_as_a_shell_reports_them() {
        // Raw wait statuses: exit code in the high byte, signal in the low bits.
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(
            describe_status(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
    }

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[tokio::test]
    async fn keeps_the_stderr_tail_and_the_status() {
        let script = "for i in $(seq 1 30); do echo line $i >&2; done; exit 3";
        let finished = run_bounded(
            "sh",
            sh(script),
            Stdio::null(),
            Duration::from_secs(10),
            Duration::from_secs(1),
            &StopToken::never(),
        )
        .await
        .expect("runs");
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stderr_tail.len(), STDERR_TAIL_LINES);
        assert_eq!(
            finished.stderr_tail.last().map(String::as_str),
            Some("line 30")
        );
        assert_eq!(
            finished.stderr_tail.first().map(String::as_str),
            Some("line 11")
        );
    }

    #[tokio::test]
    async fn stops_the_whole_group_at_the_deadline() {
        // A child that ignores SIGTERM, with a grandchild: both must be gone.
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("grandchild.pid");
        let script = format!(
            "trap '' TERM; sleep 30 & echo $! > {}; echo started >&2; wait",
            marker.display()
        );
        let started = std::time::Instant::now();
        let error = run_bounded(
            "sh",
            sh(&script),
            Stdio::null(),
            Duration::from_millis(300),
            Duration::from_millis(200),
            &StopToken::never(),
        )
        .await
        .expect_err("times out");
        assert!(matches!(error, RunError::TimedOut { .. }), "{error}");
        assert!(
            error.to_string().contains("did not finish within 300ms"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild: i32 = std::fs::read_to_string(&marker)
            .expect("marker")
            .trim()
            .parse()
            .expect("pid");
        // Running means present and not a zombie (a killed orphan waits for init to reap it).
        let running = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|stat| {
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    !state.starts_with('Z') && !state.starts_with('X')
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while running() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!running(), "the grandchild {grandchild} outlived the group");
    }

    #[tokio::test]
    async fn captures_stdout() {
        let (finished, out) = output_of(
            "sh",
            sh("echo hello; echo oops >&2"),
            Duration::from_secs(10),
            Duration::from_secs(1),
            &StopToken::never(),
        )
        .await
        .expect("runs");
        assert!(finished.status.success());
        assert_eq!(out, "hello\n");
        assert_eq!(finished.stderr_tail, ["oops"]);
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let error = run_bounded(
            "no-such-program",
            Command::new("no-such-program-startgate-test"),
            Stdio::null(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            &StopToken::never(),
        )
        .await
        .expect_err("missing");
        assert_eq!(error.to_string(), "no-such-program not found on PATH");
    }
}
