//! A small web app whose behaviour is chosen by environment variables: the fixture app the
//! process-level integration tests run under `startgate run -- …`, and the demo app the README
//! uses. It can start slowly, hang in a futex, listen without answering, crash with a Python-like
//! traceback, ignore SIGTERM, or leave orphaned grandchildren for a subreaper to reap.
//!
//! Run it with `cargo run --example demo_app`, or under startgate with
//! `startgate run -- target/debug/examples/demo_app`.
//!
//! Variables (all optional; every one is validated before anything else happens, and bad values
//! are all reported at once on stderr with exit status 2):
//!
//! - `PORT` (default `8000`): the port to listen on, on `127.0.0.1` only. `0` picks a free port;
//!   the chosen one is printed.
//! - `DEMO_STARTUP_DELAY` (default `500ms`): how long "startup" takes before the app listens;
//!   `250ms`, `2s`, or a plain number of milliseconds.
//! - `DEMO_MODE` (default `serve`):
//!   - `serve`: answers `GET /health` with 200 `{"status":"ok"}`, `GET /` with 200 `demo app`,
//!     anything else with 404; one thread per connection, one response per connection.
//!   - `hang`: prints the "Waiting for application startup." line, then blocks the main thread
//!     forever in a futex wait (a channel receive whose sender is never used), never listening.
//!   - `listen-no-answer`: listens and accepts connections, holds them open and never reads or
//!     answers them.
//!   - `crash`: after the startup delay prints a `ModuleNotFoundError` traceback on stderr and
//!     exits with status 3.
//!   - `ignore-term`: like `serve`, but SIGTERM only makes it print `got SIGTERM, ignoring it`.
//!   - `orphans`: like `serve`, but before the startup delay it starts 3 grandchildren through
//!     double forks; they outlive their parents by 300 ms and are reparented to the nearest
//!     child subreaper, which has to reap them.
//! - `DEMO_ORPHAN_LIFETIME_MS` (default `300`): how long each orphan of `orphans` mode lives.
//! - `DEMO_IGNORE_TERM`: set, SIGTERM is ignored in any mode, as in `ignore-term` (not with
//!   `orphans`, which must fork before any thread starts).
//! - `DEMO_EXIT_CODE` (default `3`): the exit status of `crash` mode.
//! - `DEMO_EXIT_ON_TERM`: in `serve` mode, SIGTERM makes the app print `shutting down` and exit
//!   with this status (to check that startgate reports the app's own status after forwarding).
//!   Unset, and in every other mode except `ignore-term`, SIGTERM and SIGINT keep their default
//!   action and kill the app.
//! - `DEMO_SECRET_LINE`: printed as one line on stderr at startup (to check that startgate masks
//!   a database password the app prints).
//! - `DEMO_STDERR_LINES`: prints `stderr line 1` … `stderr line N` on stderr at startup (to check
//!   the tail of the app's output that startgate keeps).
//!
//! Output: `INFO: Waiting for application startup.` on stderr first (after the secret and
//! numbered lines), then, once listening, `demo app listening on 127.0.0.1:PORT` on stdout and
//! `INFO: Application startup complete.` on stderr.

use std::ffi::OsString;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How many grandchildren `orphans` mode leaves behind.
const ORPHANS: usize = 3;

/// How long each orphaned grandchild lives by default (`DEMO_ORPHAN_LIFETIME_MS` overrides
/// it): long enough that its parent is surely gone and it
/// has been reparented, short enough that a test waiting for it to be reaped stays quick.
const ORPHAN_LIFETIME_NS: libc::c_long = 300_000_000;

/// The largest request head (request line and headers) the server reads before answering 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long a connection thread waits for a client to send its request head, or to take the
/// response, before giving up; keeps a silent client (a TCP-only probe) from pinning a thread.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the SIGTERM watcher thread looks at [`SIGTERM_RECEIVED`]. A signal handler may only
/// do async-signal-safe work, so it sets the flag and this thread does the printing and exiting.
const SIGTERM_POLL: Duration = Duration::from_millis(50);

/// Set by the SIGTERM handler (installed only in `ignore-term` mode and in `serve` mode with
/// `DEMO_EXIT_ON_TERM`), cleared by the watcher thread when it acts on it.
static SIGTERM_RECEIVED: AtomicBool = AtomicBool::new(false);

/// What the app does after startup, from `DEMO_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Hang,
    ListenNoAnswer,
    Crash,
    IgnoreTerm,
    Orphans,
}

impl Mode {
    const NAMES: &[(&str, Mode)] = &[
        ("serve", Mode::Serve),
        ("hang", Mode::Hang),
        ("listen-no-answer", Mode::ListenNoAnswer),
        ("crash", Mode::Crash),
        ("ignore-term", Mode::IgnoreTerm),
        ("orphans", Mode::Orphans),
    ];

    fn parse(text: &str) -> Option<Mode> {
        Mode::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|&(_, mode)| mode)
    }

    fn accepted() -> String {
        Mode::NAMES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every setting, read and validated before the app does anything.
#[derive(Debug)]
struct Settings {
    /// `PORT`: where to listen on 127.0.0.1.
    port: u16,
    /// `DEMO_STARTUP_DELAY`: the pretend startup work before listening.
    startup_delay: Duration,
    /// `DEMO_MODE`.
    mode: Mode,
    /// `DEMO_EXIT_CODE`: the status `crash` mode exits with.
    crash_status: i32,
    /// `DEMO_EXIT_ON_TERM`: in `serve` mode, exit with this status on SIGTERM.
    exit_on_term: Option<i32>,
    /// `DEMO_SECRET_LINE`: printed verbatim (bytes, not necessarily UTF-8) on stderr.
    secret_line: Option<OsString>,
    /// `DEMO_STDERR_LINES`: how many numbered lines to print on stderr.
    stderr_lines: u64,
}

impl Settings {
    /// Reads every variable through `lookup`, collecting one message per bad value.
    fn read(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let mut text = |name: &str, default: &str| -> Option<String> {
            match lookup(name) {
                None => Some(default.to_string()),
                Some(value) => match value.into_string() {
                    Ok(value) => Some(value),
                    Err(value) => {
                        errors.push(format!("{name}={value:?} is not valid UTF-8"));
                        None
                    }
                },
            }
        };
        let port = text("PORT", "8000");
        let startup_delay = text("DEMO_STARTUP_DELAY", "500ms");
        let mode = text("DEMO_MODE", "serve");
        let crash_status = text("DEMO_EXIT_CODE", "3");
        let exit_on_term = text("DEMO_EXIT_ON_TERM", "");
        let stderr_lines = text("DEMO_STDERR_LINES", "0");

        let port = port.and_then(|value| match value.trim().parse::<u16>() {
            Ok(port) => Some(port),
            Err(_) => {
                errors.push(format!(
                    "PORT={value:?} is not a port; use a number from 0 to 65535"
                ));
                None
            }
        });
        let startup_delay = startup_delay.and_then(|value| match parse_delay(&value) {
            Some(delay) => Some(delay),
            None => {
                errors.push(format!(
                    "DEMO_STARTUP_DELAY={value:?} is not a delay; use e.g. 500ms, 2s, or 750 (milliseconds)"
                ));
                None
            }
        });
        let mode = mode.and_then(|value| match Mode::parse(value.trim()) {
            Some(mode) => Some(mode),
            None => {
                errors.push(format!(
                    "DEMO_MODE={value:?} is not a mode; use one of {}",
                    Mode::accepted()
                ));
                None
            }
        });
        let crash_status = crash_status.and_then(|value| match parse_status(&value) {
            Some(status) => Some(status),
            None => {
                errors.push(format!(
                    "DEMO_EXIT_CODE={value:?} is not an exit status; use a number from 0 to 255"
                ));
                None
            }
        });
        let exit_on_term = exit_on_term.and_then(|value| {
            if value.trim().is_empty() {
                return Some(None);
            }
            match parse_status(&value) {
                Some(status) => Some(Some(status)),
                None => {
                    errors.push(format!(
                        "DEMO_EXIT_ON_TERM={value:?} is not an exit status; use a number from 0 to 255"
                    ));
                    None
                }
            }
        });
        let stderr_lines = stderr_lines.and_then(|value| match value.trim().parse::<u64>() {
            Ok(count) => Some(count),
            Err(_) => {
                errors.push(format!(
                    "DEMO_STDERR_LINES={value:?} is not a line count; use a whole number"
                ));
                None
            }
        });

        match (
            port,
            startup_delay,
            mode,
            crash_status,
            exit_on_term,
            stderr_lines,
        ) {
            (
                Some(port),
                Some(startup_delay),
                Some(mode),
                Some(crash_status),
                Some(exit_on_term),
                Some(stderr_lines),
            ) if errors.is_empty() => Ok(Settings {
                port,
                startup_delay,
                mode,
                crash_status,
                exit_on_term,
                secret_line: lookup("DEMO_SECRET_LINE"),
                stderr_lines,
            }),
            _ => Err(errors),
        }
    }
}

/// Parses `500ms`, `2s`, or a plain number of milliseconds.
fn parse_delay(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(millis) = text.strip_suffix("ms") {
        millis.trim().parse().ok().map(Duration::from_millis)
    } else if let Some(secs) = text.strip_suffix('s') {
        secs.trim().parse().ok().map(Duration::from_secs)
    } else {
        text.parse().ok().map(Duration::from_millis)
    }
}

/// Parses an exit status, 0 to 255.
fn parse_status(text: &str) -> Option<i32> {
    text.trim().parse::<u8>().ok().map(i32::from)
}

fn main() {
    let settings = match Settings::read(|name| std::env::var_os(name)) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in errors {
                eprintln!("demo_app: {error}");
            }
            process::exit(2);
        }
    };
    if let Err(message) = run(&settings) {
        eprintln!("demo_app: {message}");
        process::exit(1);
    }
}

/// Runs the app in its mode; returns only on a setup failure (the serving modes never end on
/// their own).
fn run(settings: &Settings) -> Result<(), String> {
    if let Some(line) = &settings.secret_line {
        let mut stderr = io::stderr().lock();
        // Stderr write errors have nowhere to be reported; the app carries on like a real one.
        let _ = stderr.write_all(line.as_bytes());
        let _ = stderr.write_all(b"\n");
    }
    for number in 1..=settings.stderr_lines {
        eprintln!("stderr line {number}");
    }

    // In any other mode too (a hung app that also ignores SIGTERM must be SIGKILLed).
    if settings.mode != Mode::IgnoreTerm && std::env::var_os("DEMO_IGNORE_TERM").is_some() {
        install_sigterm_flag()?;
        watch_sigterm(|| eprintln!("got SIGTERM, ignoring it"))?;
    }
    match settings.mode {
        Mode::IgnoreTerm => {
            install_sigterm_flag()?;
            watch_sigterm(|| eprintln!("got SIGTERM, ignoring it"))?;
        }
        Mode::Serve => {
            if let Some(status) = settings.exit_on_term {
                install_sigterm_flag()?;
                watch_sigterm(move || {
                    eprintln!("shutting down");
                    process::exit(status);
                })?;
            }
        }
        Mode::Hang | Mode::ListenNoAnswer | Mode::Crash | Mode::Orphans => {}
    }

    eprintln!("INFO: Waiting for application startup.");
    if settings.mode == Mode::Hang {
        hang();
    }
    if settings.mode == Mode::Orphans {
        // No thread has been started in this mode, so forking here is as safe as it gets.
        start_orphans(ORPHANS)?;
        eprintln!("started {ORPHANS} orphans");
    }

    thread::sleep(settings.startup_delay);

    if settings.mode == Mode::Crash {
        eprintln!("Traceback (most recent call last):");
        eprintln!("ModuleNotFoundError: No module named 'app.api.api_v1'");
        process::exit(settings.crash_status);
    }

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, settings.port));
    let listener = TcpListener::bind(address)
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    println!("demo app listening on {bound}");
    eprintln!("INFO: Application startup complete.");

    if settings.mode == Mode::ListenNoAnswer {
        hold_connections(&listener);
    } else {
        serve(&listener);
    }
    Ok(())
}

/// Blocks the calling thread forever in a futex wait, the way an app does when its startup
/// waits for a result that a blocked event loop never delivers. The sender stays alive, so the
/// receive never fails.
fn hang() -> ! {
    // `_sender` is a named binding, not `_`, so it lives as long as this never-ending frame.
    let (_sender, receiver) = mpsc::channel::<()>();
    loop {
        // Only a message could end the wait, and none is ever sent.
        let _ = receiver.recv();
    }
}

/// Installs a SIGTERM handler that only sets [`SIGTERM_RECEIVED`].
fn install_sigterm_flag() -> Result<(), String> {
    extern "C" fn note_sigterm(_signal: libc::c_int) {
        SIGTERM_RECEIVED.store(true, Ordering::SeqCst);
    }

    let handler: extern "C" fn(libc::c_int) = note_sigterm;
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags) that is filled in
    // below; the handler only stores to an atomic, which is async-signal-safe. SA_RESTART keeps
    // accept() and reads in other threads from failing with EINTR.
    let installed = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(format!(
            "cannot install a SIGTERM handler: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Starts the thread that runs `on_term` each time SIGTERM has arrived.
fn watch_sigterm(on_term: impl Fn() + Send + 'static) -> Result<(), String> {
    thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            loop {
                thread::sleep(SIGTERM_POLL);
                if SIGTERM_RECEIVED.swap(false, Ordering::SeqCst) {
                    on_term();
                }
            }
        })
        .map(drop)
        .map_err(|error| format!("cannot start the SIGTERM watcher thread: {error}"))
}

/// Leaves `count` short-lived orphans: for each, forks a child that forks a grandchild and exits
/// at once; the child is reaped here, and the grandchild, now an orphan, is reparented to the
/// nearest child subreaper (startgate) or to init. Between fork and exit the children make only
/// async-signal-safe calls (fork, nanosleep, _exit).
fn start_orphans(count: usize) -> Result<(), String> {
    let lifetime = match std::env::var("DEMO_ORPHAN_LIFETIME_MS") {
        Err(_) => ORPHAN_LIFETIME_NS / 1_000_000,
        Ok(value) => value.parse::<libc::c_long>().map_err(|_| {
            format!("DEMO_ORPHAN_LIFETIME_MS={value:?} is not a whole number of milliseconds")
        })?,
    };
    for _ in 0..count {
        // SAFETY: the child only calls async-signal-safe functions and leaves through _exit,
        // so it never touches state (locks, allocator) another thread might have held.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(format!(
                "cannot fork an orphan's parent: {}",
                io::Error::last_os_error()
            ));
        }
        if child == 0 {
            // SAFETY: as above; this is the child, which forks the grandchild and exits.
            unsafe {
                let grandchild = libc::fork();
                if grandchild == 0 {
                    live_as_orphan(lifetime);
                }
                libc::_exit(if grandchild < 0 { 1 } else { 0 });
            }
        }
        let status = reap(child)?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!(
                "an orphan's parent (pid {child}) could not fork the orphan (wait status {status:#x})"
            ));
        }
    }
    Ok(())
}

/// The grandchild's whole life: sleep `ms` milliseconds, then exit.
fn live_as_orphan(ms: libc::c_long) -> ! {
    let mut remaining = libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    // SAFETY: nanosleep and _exit are async-signal-safe; `remaining` outlives both calls.
    unsafe {
        loop {
            let request = remaining;
            if libc::nanosleep(&request, &mut remaining) == 0 {
                break;
            }
            // Interrupted by a signal whose action is not to die: sleep the rest.
        }
        libc::_exit(0)
    }
}

/// Waits for `pid` to exit and returns its wait status.
fn reap(pid: libc::pid_t) -> Result<libc::c_int, String> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for waitpid to write to.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(format!("cannot reap pid {pid}: {error}"));
        }
    }
}

/// Accepts connections and holds them open without reading or answering, so that a probe's
/// TCP connect succeeds but its HTTP request never gets a response.
fn hold_connections(listener: &TcpListener) {
    let mut held = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, _)) => held.push(stream),
            Err(error) => accept_failed(&error),
        }
    }
}

/// Answers each connection on its own thread.
fn serve(listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let spawned = thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || handle_connection(stream));
                if let Err(error) = spawned {
                    eprintln!("demo_app: cannot start a connection thread: {error}");
                }
            }
            Err(error) => accept_failed(&error),
        }
    }
}

/// Reports a failed accept and pauses briefly, so that a persistent failure (out of file
/// descriptors) does not spin the CPU.
fn accept_failed(error: &io::Error) {
    eprintln!("demo_app: accept failed: {error}");
    thread::sleep(Duration::from_millis(100));
}

/// Reads one request head, writes one response, and closes the connection.
fn handle_connection(mut stream: TcpStream) {
    // Without timeouts a client that never sends would keep this thread forever; failing to set
    // them only risks that, so it is not worth dropping the connection over.
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let response = match read_head(&mut stream) {
        Ok(Head::Complete(head)) => respond(&head),
        Ok(Head::TooLarge) => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
            true,
        ),
        // The client closed early or timed out: there is no one to answer.
        Ok(Head::Closed) | Err(_) => return,
    };
    // A client that went away cannot be told anything more.
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// What reading a request head produced.
enum Head {
    /// The bytes up to and including the blank line.
    Complete(Vec<u8>),
    /// No blank line within [`MAX_HEAD_BYTES`].
    TooLarge,
    /// The client closed the connection before finishing the head.
    Closed,
}

/// Reads up to the blank line that ends the request head.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        // Only the newly read bytes and the three before them can complete the terminator.
        let search_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find_blank_line(&head[search_from..]) {
            let end = search_from + end;
            if end > MAX_HEAD_BYTES {
                return Ok(Head::TooLarge);
            }
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// The length up to and including the first `\r\n\r\n` (or bare `\n\n`) in `bytes`.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = bytes
        .windows(2)
        .position(|window| window == b"\n\n")
        .map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Routes a request head to its response.
fn respond(head: &[u8]) -> String {
    let request_line = head.split(|&byte| byte == b'\n').next().unwrap_or(b"");
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "text/plain", "bad request\n", true);
    };
    let path = target.split('?').next().unwrap_or(target);
    let with_body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/health") => response(
            "200 OK",
            "application/json",
            "{\"status\":\"ok\"}",
            with_body,
        ),
        ("GET" | "HEAD", "/") => response(
            "200 OK",
            "text/plain; charset=utf-8",
            "demo app\n",
            with_body,
        ),
        _ => response("404 Not Found", "text/plain", "not found\n", with_body),
    }
}

/// A complete HTTP/1.1 response that closes the connection.
fn response(status: &str, content_type: &str, body: &str, with_body: bool) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if with_body { body } else { "" },
    )
}
