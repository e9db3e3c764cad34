//! `run`'s second half (DESIGN.md "Supervising", "Probing", "Hang diagnosis"): start the app,
//! probe it until it is ready, keep probing to drive `/readyz`, forward signals, explain a hang,
//! and end with the app's own exit status.
//!
//! Rules:
//! - the app runs in a process group of its own (given the terminal's foreground when stdin is
//!   a terminal that startgate holds), with stdin and stdout passed through; its stderr passes
//!   through too, byte for byte, while its last [`APP_TAIL_LINES`] lines are kept, masked;
//! - it gets SIGKILL should startgate die without cleaning up (a parent-death signal), and at
//!   every end startgate stops what is left of its group and every adopted orphan: no process
//!   of the app outlives startgate;
//! - SIGTERM/SIGINT and [`signals::FORWARDED`] go to the app itself; a second SIGTERM/SIGINT
//!   kills its group; `STARTGATE_SHUTDOWN_GRACE`, when set, bounds the wait after the first;
//! - a missed startup deadline is diagnosed before anything is stopped, then the group gets
//!   SIGTERM and SIGKILL after `STARTGATE_KILL_GRACE`: exit 124;
//! - the decisions are the pure [`Readiness`]; this file is the loop around it.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::config::{Probe, Settings};
use crate::exit::{AppError, Error};
use crate::phase::Phase;
use crate::progress::Progress;
use crate::supervise::diagnose::{CpuHistory, Observation};
use crate::supervise::escalation::{Action, Escalation};
use crate::supervise::probe;
use crate::supervise::process::{describe_status, status_code};
use crate::supervise::readiness::{Change, Readiness};
use crate::supervise::signals::{self, Stop, StopToken};
use crate::supervise::tail::{APP_TAIL_LINES, Tail};
use crate::supervise::{inspect, process, reaper};

/// The hang command's own limit (DESIGN.md: under its own 10 s limit).
const HANG_COMMAND_LIMIT: Duration = Duration::from_secs(10);
/// How long to wait for the app's stderr to be read to its end once the app has exited.
const STDERR_DRAIN: Duration = Duration::from_secs(1);
/// How long an unfinished stderr line waits for its end before it is passed on.
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(50);
/// How many stderr lines a failure's message repeats (and `/status` shows).
const MESSAGE_LINES: usize = 5;

/// The app, started.
struct App {
    child: Child,
    pid: i32,
    tail: Arc<Mutex<Tail>>,
    /// The task passing stderr through, until it has seen the pipe's end.
    stderr: Option<tokio::task::JoinHandle<()>>,
    /// Whether the app was given the terminal's foreground.
    foreground: bool,
    _managed: process::Managed,
}

impl App {
    /// Waits (briefly: a process the app started may hold the pipe open) until its stderr has
    /// been read to the end, so that the tail holds its last words.
    async fn drain_stderr(&mut self) {
        if let Some(pump) = self.stderr.take() {
            let _ = tokio::time::timeout(STDERR_DRAIN, pump).await;
        }
    }

    fn tail_lines(&self, n: usize) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.last(n))
            .unwrap_or_else(|p| p.into_inner().last(n))
    }

    /// The pids of the app's process group, as `/proc` shows them now.
    fn group(&self) -> Vec<i32> {
        inspect::group_members(self.pid)
            .into_iter()
            .map(|s| s.pid)
            .collect()
    }

    fn signal_app(&self, signal: i32) {
        // SAFETY: kill only sends a signal, to our own child.
        unsafe { libc::kill(self.pid, signal) };
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: killpg only sends a signal, to the app's own group (pgid == its pid).
        unsafe { libc::killpg(self.pid, signal) };
    }
}

/// Makes process group `pgrp` the foreground of the terminal on stdin. A background group may
/// take the terminal only with SIGTTOU blocked, so it is blocked meanwhile. Async-signal-safe
/// (the app's child calls it between fork and exec).
fn give_terminal_to(pgrp: libc::pid_t) {
    // SAFETY: sigset operations on a local set, sigprocmask and tcsetpgrp only change this
    // process's signal mask and the terminal's foreground group.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::tcsetpgrp(0, pgrp);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether stdin is a terminal whose foreground is startgate's process group.
fn holds_terminal() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read process and terminal state.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

fn spawn(argv: &[OsString]) -> Result<App, AppError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(AppError::NoCommand);
    };
    let foreground = holds_terminal();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setpgid, prctl, getppid, sigprocmask, tcsetpgrp, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // startgate died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if foreground {
                give_terminal_to(libc::getpid());
            }
            Ok(())
        });
    }
    let name = program.to_string_lossy().into_owned();
    let (mut child, managed) =
        process::spawn_managed(&mut command).map_err(|source| AppError::Spawn {
            program: name.clone(),
            source,
        })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| AppError::Spawn {
            program: name,
            source: std::io::Error::other("the app exited before its pid could be read"),
        })?;
    let tail = Arc::new(Mutex::new(Tail::new(APP_TAIL_LINES)));
    let stderr = child.stderr.take();
    let stderr = tokio::spawn(pump_stderr(stderr, Arc::clone(&tail)));
    Ok(App {
        child,
        pid,
        tail,
        stderr: Some(stderr),
        foreground,
        _managed: managed,
    })
}

/// Passes the app's stderr through, line by line with secrets masked, keeping its tail. An
/// unfinished line (a prompt, a progress bar) is passed on after [`PARTIAL_LINE_WAIT`].
async fn pump_stderr(stderr: Option<tokio::process::ChildStderr>, tail: Arc<Mutex<Tail>>) {
    let Some(mut stderr) = stderr else { return };
    let mut out = tokio::io::stderr();
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = if pending.is_empty() {
            Ok(stderr.read(&mut buf).await)
        } else {
            tokio::time::timeout(PARTIAL_LINE_WAIT, stderr.read(&mut buf)).await
        };
        match read {
            Err(_) => {
                pass_on(&mut out, &pending).await;
                pending.clear();
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                if let Ok(mut tail) = tail.lock() {
                    tail.push(&buf[..n]);
                }
                pending.extend_from_slice(&buf[..n]);
                // Whole lines go out at once; a long unfinished line goes out too, less the
                // bytes that could be the start of a secret (so none is split between writes).
                let cut = match memchr::memrchr(b'\n', &pending) {
                    Some(at) => at + 1,
                    None if pending.len() >= buf.len() => pending
                        .len()
                        .saturating_sub(crate::redact::longest_secret().saturating_sub(1)),
                    None => 0,
                };
                if cut > 0 {
                    pass_on(&mut out, &pending[..cut]).await;
                    pending.drain(..cut);
                }
            }
        }
    }
    pass_on(&mut out, &pending).await;
    let _ = out.flush().await;
    if let Ok(mut tail) = tail.lock() {
        tail.finish();
    }
}

/// Writes `bytes` to startgate's stderr, secrets masked.
async fn pass_on(out: &mut tokio::io::Stderr, bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = out.write_all(&crate::redact::mask_bytes(bytes)).await;
    }
}

/// The exit status as a shell reports it: the code, or 128+N for signal N.
/// Starts `argv`, supervises it to its end, and returns its exit status; a failure the
/// operator must hear about (a hang, an app that failed on its own) is an error carrying it.
pub async fn supervise(
    settings: &Settings,
    argv: &[OsString],
    progress: &Progress,
    stop: &StopToken,
    forwarded: &mut mpsc::UnboundedReceiver<i32>,
) -> Result<u8, Error> {
    if progress.phase() != Phase::StartingApp {
        progress.enter(Phase::StartingApp);
    }
    // Signals from before the app existed are not the app's: a stop ends the run here, the
    // others are dropped rather than delivered late.
    while let Ok(signal) = forwarded.try_recv() {
        if !matches!(signal, libc::SIGTERM | libc::SIGINT) {
            tracing::info!(
                event = "signal",
                signal = Stop { signal }.name(),
                "{} received before the app started: ignored",
                Stop { signal }.name()
            );
        }
    }
    if let Some(stop) = stop.stopped() {
        return Err(Error::Interrupted(stop));
    }
    let _reaper = reaper::start();
    let mut app = spawn(argv)?;
    let probe = settings.effective_probe();
    progress.learn_app(|a| {
        a.pid = u32::try_from(app.pid).ok();
        // An `exec:` probe's command line may hold a secret.
        a.probe = probe.as_ref().map(probe::shown).unwrap_or_default();
    });
    tracing::info!(
        event = "app.started",
        pid = app.pid,
        "started the app: pid {} ({})",
        app.pid,
        argv.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let result = watch_over(&mut app, settings, probe.as_ref(), progress, forwarded).await;
    finish(&mut app, settings.kill_grace).await;
    result
}

/// After the app has exited: nothing of its group and none of its orphans stay behind; the
/// terminal goes back to startgate.
async fn finish(app: &mut App, grace: Duration) {
    let pgid = app.pid;
    reaper::stop_until_gone(
        "what is left of the app's process group",
        || app.group(),
        // The whole group at once, so that a process forking meanwhile cannot slip through.
        // SAFETY: killpg only sends a signal, to the app's own group.
        |_, signal| unsafe {
            libc::killpg(pgid, signal);
        },
        grace,
    )
    .await;
    reaper::stop_orphans(grace).await;
    app.drain_stderr().await;
    if app.foreground {
        // SAFETY: getpgrp has no preconditions.
        give_terminal_to(unsafe { libc::getpgrp() });
    }
}

async fn watch_over(
    app: &mut App,
    settings: &Settings,
    probe: Option<&Probe>,
    progress: &Progress,
    forwarded: &mut mpsc::UnboundedReceiver<i32>,
) -> Result<u8, Error> {
    let mut escalation = Escalation::new(settings.shutdown_grace);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut started = Instant::now();
    progress.enter(Phase::ProbingApp);
    let mut readiness = Readiness::new(started, settings.startup_timeout, settings.probe_interval);
    if probe.is_none() {
        tracing::warn!(
            event = "probe",
            "neither STARTGATE_PROBE nor PORT is set: the app counts as ready once started"
        );
        readiness.observe(true, started);
        app_ready(progress, started, "started (no probe configured)");
    }
    let mut cpu = CpuHistory::default();
    let mut next = tokio::time::Instant::now();
    let mut ever_ready = readiness.is_ready();
    loop {
        let stopping = escalation.stopping().map(|signal| Stop { signal });
        let probing = probe.filter(|_| stopping.is_none());
        tokio::select! {
            status = app.child.wait() => {
                let status = status.map_err(|e| Error::Internal(format!("waiting for the app failed: {e}")))?;
                app.drain_stderr().await;
                return ended(app, status, stopping, ever_ready, progress);
            }
            Some(signal) = forwarded.recv() => {
                on_signal(app, signal, &mut escalation, &mut kill_at, progress);
            }
            _ = sleep_until(kill_at) => {
                tracing::warn!(
                    event = "app.kill",
                    "the app did not exit within STARTGATE_SHUTDOWN_GRACE: killing its process group"
                );
                app.signal_group(libc::SIGKILL);
                kill_at = None;
            }
            attempt = async {
                tokio::time::sleep_until(next).await;
                match probing {
                    Some(p) => {
                        let limit = readiness.attempt_limit(Instant::now(), settings.probe_timeout);
                        probe::attempt(p, limit).await
                    }
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                if cpu.due(now) {
                    cpu.record(now, inspect::cpu_seconds(&app.group()));
                }
                let stderr = app.tail_lines(MESSAGE_LINES);
                record_attempt(progress, &attempt, Some(stderr));
                match readiness.observe(attempt.passed, now) {
                    Change::Ready => {
                        ever_ready = true;
                        app_ready(progress, started, &attempt.result);
                    }
                    Change::Down => {
                        went_down(progress, &attempt, settings.startup_timeout);
                        started = now;
                    }
                    Change::Missed => {
                        let summary = diagnose(app, settings, probe, &attempt.result, &cpu, progress, forwarded).await;
                        stop_hung(app, settings.kill_grace, forwarded).await;
                        return Err(AppError::Hang { summary }.into());
                    }
                    Change::None => {}
                }
                next = tokio::time::Instant::from_std(readiness.next_attempt(Instant::now()));
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Publishes one probe attempt (and, in `run`, the app's last stderr lines).
pub fn record_attempt(progress: &Progress, attempt: &probe::Attempt, stderr: Option<Vec<String>>) {
    progress.learn_app(|a| {
        a.attempts += 1;
        a.last_passed = attempt.passed;
        a.last_result = Some(attempt.result.clone());
        if let Some(stderr) = stderr {
            a.stderr = stderr;
        }
    });
}

/// The app stopped passing its probe after it was ready: back to `probing_app`.
pub fn went_down(progress: &Progress, attempt: &probe::Attempt, startup_timeout: Duration) {
    tracing::warn!(
        event = "app.down",
        result = attempt.result.as_str(),
        "the app stopped passing its probe ({}): probing again, it has {} to come back",
        attempt.result,
        crate::duration::HumanDuration(startup_timeout)
    );
    progress.app_down(format!("the probe failed: {}", attempt.result));
}

pub fn app_ready(progress: &Progress, started: Instant, result: &str) {
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        event = "app.ready",
        duration_ms = ms,
        "the app is ready after {ms} ms: {result}"
    );
    progress.learn_app(|a| a.last_passed = true);
    if progress.phase() == Phase::ProbingApp {
        progress.done(format!("ready: {result}"));
        progress.enter(Phase::Ready);
    }
}

/// Carries out what [`Escalation`] decides for `signal`.
fn on_signal(
    app: &App,
    signal: i32,
    escalation: &mut Escalation,
    kill_at: &mut Option<tokio::time::Instant>,
    progress: &Progress,
) {
    let name = Stop { signal }.name();
    for action in escalation.on_signal(signal) {
        match action {
            Action::Stopping(signal) => progress.stop(Stop { signal }.name()),
            Action::Forward(signal) => {
                app.signal_app(signal);
                // Only the first SIGTERM/SIGINT is forwarded; the stop it starts is worth saying.
                let wait = if escalation.stopping() == Some(signal) {
                    "; waiting for it to exit (a second signal kills it)"
                } else {
                    ""
                };
                tracing::info!(
                    event = "app.signal",
                    signal = name,
                    pid = app.pid,
                    "forwarded {name} to the app (pid {}){wait}",
                    app.pid
                );
            }
            Action::KillAfter(grace) => {
                *kill_at = Some(tokio::time::Instant::now() + grace);
                tracing::info!(
                    event = "app.signal",
                    "the app's group is killed if it has not exited within {} \
                     (STARTGATE_SHUTDOWN_GRACE)",
                    crate::duration::HumanDuration(grace)
                );
            }
            Action::KillGroup => {
                tracing::warn!(
                    event = "app.kill",
                    signal = name,
                    "second {name}: killing the app's process group"
                );
                app.signal_group(libc::SIGKILL);
            }
        }
    }
}

/// The app has exited: its status becomes startgate's, and a failure is reported.
fn ended(
    app: &App,
    status: ExitStatus,
    stopping: Option<Stop>,
    ever_ready: bool,
    progress: &Progress,
) -> Result<u8, Error> {
    let code = status_code(status);
    let how = describe_status(status);
    let pid = app.pid;
    progress.learn_app(|a| a.last_passed = false);
    if stopping.is_some() {
        tracing::info!(event = "app.exit", exit_code = code, pid, "the app {how}");
        return Ok(code);
    }
    let stderr = app.tail_lines(MESSAGE_LINES);
    progress.learn_app(|a| a.stderr = stderr.clone());
    if code == 0 && ever_ready {
        tracing::info!(event = "app.exit", exit_code = code, pid, "the app {how}");
        progress.stopping(format!("the app {how}"));
        return Ok(code);
    }
    // Exiting before it was ready is a failure even with status 0 (startgate still exits with
    // that status): the app never served, and its last words are what the operator needs.
    Err(AppError::Exited {
        code,
        how,
        before_ready: !ever_ready,
        stderr,
    }
    .into())
}

/// Gathers what can be seen of the hung app, logs it as one event, publishes it, and returns
/// the summary.
async fn diagnose(
    app: &App,
    settings: &Settings,
    probe: Option<&Probe>,
    last_result: &str,
    cpu: &CpuHistory,
    progress: &Progress,
    forwarded: &mut mpsc::UnboundedReceiver<i32>,
) -> String {
    let now = Instant::now();
    let group = app.group();
    let threads = inspect::threads(app.pid);
    let alive = threads.first().is_some_and(|t| t.state != 'Z');
    let (listeners, complete) = inspect::listening(&group);
    let mut ports: Vec<u16> = listeners.iter().map(|l| l.port).collect();
    ports.dedup();
    let mut unseen = Vec::new();
    if !complete {
        unseen.push("some of the app's sockets (permission denied)".to_string());
    }
    let observation = Observation {
        timeout: settings.startup_timeout,
        probe: probe.map(probe::shown),
        last_result: Some(last_result.to_string()),
        pid: Some(app.pid),
        alive: Some(alive),
        processes: group.len(),
        cpu: cpu.usage(now, inspect::cpu_seconds(&group)),
        listening: Some(ports),
        probe_port: probe.and_then(probe_port),
        threads: (!threads.is_empty()).then(|| inspect::describe_threads(app.pid, &threads)),
        stderr: Some(app.tail_lines(3)),
        unseen,
        port_only: false,
    };
    let summary = observation.summary();
    let hang_output = match &settings.hang_command {
        // A stop request does not wait for the hang command: it is cut short (and stopped).
        Some(command) => Some(tokio::select! {
            output = hang_command(command, app.pid, settings.kill_grace) => output,
            signal = stop_signal(app.pid, forwarded) => format!(
                "(not run to its end: {} received)",
                Stop { signal }.name()
            ),
        }),
        None => None,
    };
    report_hang(&summary, hang_output.as_deref(), progress);
    summary
}

/// The probe's port, for HTTP and TCP probes.
pub fn probe_port(probe: &Probe) -> Option<u16> {
    match probe {
        Probe::Http { port, .. } | Probe::Tcp { port, .. } => Some(*port),
        Probe::Exec { .. } => None,
    }
}

/// Logs the hang as one event and puts it in `/status`.
pub fn report_hang(summary: &str, hang_output: Option<&str>, progress: &Progress) {
    tracing::error!(
        event = "app.diagnosis",
        hang_command_output = hang_output.unwrap_or_default(),
        "{summary}"
    );
    let diagnosis = match hang_output {
        Some(output) => format!("{summary}\nhang command output:\n{output}"),
        None => summary.to_string(),
    };
    progress
        .learn_app(|a| a.diagnosis = Some(crate::supervise::diagnose::cut(diagnosis, 16 * 1024)));
}

/// Runs `STARTGATE_HANG_COMMAND` with `{pid}` replaced, under its own limit; its output
/// (stdout, then the stderr tail), masked.
pub async fn hang_command(command: &str, pid: i32, kill_grace: Duration) -> String {
    let command = command.replace("{pid}", &pid.to_string());
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&command);
    match process::output_of(
        "STARTGATE_HANG_COMMAND",
        sh,
        HANG_COMMAND_LIMIT,
        kill_grace.min(Duration::from_secs(2)),
        &StopToken::never(),
    )
    .await
    {
        Ok((finished, stdout)) => {
            let mut out = stdout.trim_end().to_string();
            for line in &finished.stderr_tail {
                out.push('\n');
                out.push_str(line);
            }
            if !finished.status.success() {
                out.push_str(&format!("\n({})", describe_status(finished.status)));
            }
            out.trim().to_string()
        }
        Err(e) => crate::redact::mask(&e.to_string()).into_owned(),
    }
}

/// The hang's end: SIGTERM to the whole group, SIGKILL after `grace`.
/// A SIGTERM or SIGINT to startgate during it kills the group at once.
async fn stop_hung(app: &mut App, grace: Duration, forwarded: &mut mpsc::UnboundedReceiver<i32>) {
    tracing::info!(
        event = "app.kill",
        pid = app.pid,
        "stopping the app's process group: SIGTERM, SIGKILL after {}",
        crate::duration::HumanDuration(grace)
    );
    app.signal_group(libc::SIGTERM);
    let pid = app.pid;
    let exited = tokio::select! {
        exited = tokio::time::timeout(grace, app.child.wait()) => exited.is_ok(),
        _ = stop_signal(pid, forwarded) => false,
    };
    if !exited {
        app.signal_group(libc::SIGKILL);
        let _ = app.child.wait().await;
    }
}

/// Waits for SIGTERM or SIGINT and returns it; the other forwarded signals still reach the app
/// (`pid`) meanwhile.
async fn stop_signal(pid: i32, forwarded: &mut mpsc::UnboundedReceiver<i32>) -> i32 {
    loop {
        match forwarded.recv().await {
            Some(signal @ (libc::SIGTERM | libc::SIGINT)) => return signal,
            Some(signal) => {
                // SAFETY: kill only sends a signal, to our own child.
                unsafe { libc::kill(pid, signal) };
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// Reads `signals` so that the module's one handler set is used by `run`.
pub fn listen() -> Result<(StopToken, mpsc::UnboundedReceiver<i32>), Error> {
    signals::listen_forwarding()
        .map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))
}
