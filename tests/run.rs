//! `startgate run` and `startgate watch` over real processes: the fixture app
//! (`examples/demo_app.rs`) started after a delay, hung in a futex, listening without
//! answering, crashing, ignoring SIGTERM, leaving orphans; what the endpoint, the log, the exit
//! status and the termination log say; that no process is left behind and no password shown.

mod common;

use std::time::{Duration, Instant};

use common::{
    Running, TestDb, alive, demo_app, free_port, get, live_children, wait_for_code, zombie_children,
};
use serde_json::Value;

/// A migrations directory with one migration.
fn migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("0001_a.sql"), "CREATE TABLE a (id int);\n").expect("write");
    dir
}

/// `startgate run -- demo_app` against `db`, with `env` on top of the basics.
fn start_run(db_url: &str, dir: &tempfile::TempDir, port: u16, env: &[(&str, &str)]) -> Running {
    start_run_os(db_url, dir, port, env, &[])
}

/// [`start_run`] with variables whose values need not be UTF-8.
fn start_run_os(
    db_url: &str,
    dir: &tempfile::TempDir,
    port: u16,
    env: &[(&str, &str)],
    os_env: &[(&str, &std::ffi::OsStr)],
) -> Running {
    let dir = dir.path().display().to_string();
    let port = port.to_string();
    let app = demo_app();
    let mut all = vec![
        ("DATABASE_URL", db_url),
        ("STARTGATE_MIGRATIONS", dir.as_str()),
        ("STARTGATE_BACKUP", "never"),
        ("PORT", port.as_str()),
    ];
    all.extend_from_slice(env);
    Running::start_os(&["run", "--", app.as_str()], &all, os_env)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The app's pid, as `/status` says it.
fn app_pid(addr: std::net::SocketAddr) -> i32 {
    let (_, status) = get(addr, "/status", None);
    let pid = json(&status)["app"]["pid"]
        .as_i64()
        .expect("app.pid in /status");
    i32::try_from(pid).expect("a pid")
}

/// The `app.diagnosis` event's message from the log.
fn diagnosis(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("\"event\":\"app.diagnosis\""))
        .map(|l| json(l)["message"].as_str().unwrap_or_default().to_string())
        .next()
        .unwrap_or_else(|| panic!("no app.diagnosis event in:\n{log}"))
}

/// The pid in a diagnosis (`pid 812 alive`).
fn pid_in(text: &str) -> i32 {
    text.split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text}"))
}

#[test]
fn an_app_ready_after_a_second_turns_startupz_200_and_status_and_metrics_agree() {
    let db = TestDb::new("run_ready");
    let dir = migrations();
    let mut run = start_run(&db.url, &dir, free_port(), &[("DEMO_STARTUP_DELAY", "1s")]);
    let addr = run.endpoint();
    run.wait_for_line("\"event\":\"app.started\"");
    let (code, body) = get(addr, "/startupz", None);
    assert_eq!(code, 503, "{body}");
    let before = json(&body);
    assert_eq!(before["phase"], "probing_app", "{body}");
    assert_eq!(before["ready"], false);
    assert_eq!(get(addr, "/readyz", None).0, 503);

    wait_for_code(addr, "/startupz", 200, Duration::from_secs(10));
    assert_eq!(get(addr, "/readyz", None).0, 200);
    let (_, status) = get(addr, "/status", None);
    let status = json(&status);
    assert_eq!(status["phase"], "ready", "{status}");
    assert_eq!(status["ready"], true);
    assert_eq!(status["migrations"]["applied"], 1);
    let app = &status["app"];
    let pid = app["pid"].as_i64().expect("pid") as i32;
    assert!(alive(pid));
    assert!(
        app["last_result"]
            .as_str()
            .is_some_and(|r| r.starts_with("HTTP 200")),
        "{app}"
    );
    assert_eq!(
        app["stderr"][1], "INFO: Application startup complete.",
        "{app}"
    );
    let attempts = app["attempts"].as_u64().expect("attempts");
    // Probed every 200 ms for about a second before it answered.
    assert!((3..=20).contains(&attempts), "{attempts} attempts");
    let (_, metrics) = get(addr, "/metrics", None);
    for line in [
        "startgate_ready 1",
        "startgate_phase{phase=\"ready\"} 1",
        "startgate_phase{phase=\"probing_app\"} 0",
        "startgate_migrations_applied_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("startgate_probe_attempts_total ")),
        "{metrics}"
    );

    // SIGTERM goes to the app, which dies of it: startgate says so with 128+15.
    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 143, "{log}");
    assert!(log.contains("forwarded SIGTERM to the app"), "{log}");
    assert!(!alive(pid), "the app outlived startgate");
}

#[test]
fn a_hang_before_listening_is_diagnosed_stopped_and_exit_124() {
    let db = TestDb::new("run_hang");
    let dir = migrations();
    let logfile = tempfile::NamedTempFile::new().expect("tempfile");
    let log_path = logfile.path().display().to_string();
    let port = free_port();
    let mut run = start_run(
        &db.url,
        &dir,
        port,
        &[
            ("DEMO_MODE", "hang"),
            ("STARTGATE_STARTUP_TIMEOUT", "2s"),
            ("STARTGATE_KILL_GRACE", "1s"),
            ("STARTGATE_TERMINATION_LOG", log_path.as_str()),
            ("STARTGATE_HANG_COMMAND", "echo stack of {pid}"),
        ],
    );
    let addr = run.endpoint();
    run.wait_for_line("\"event\":\"app.started\"");
    let started = Instant::now();
    run.wait_for_line("Waiting for application startup");
    // While it hangs, /status shows what the app last said.
    std::thread::sleep(Duration::from_millis(500));
    let (_, status) = get(addr, "/status", None);
    let status = json(&status);
    assert_eq!(status["phase"], "probing_app");
    assert_eq!(
        status["app"]["stderr"][0], "INFO: Waiting for application startup.",
        "{status}"
    );
    assert_eq!(status["app"]["last_result"], "connection refused");

    let (code, log) = run.finish();
    let took = started.elapsed();
    assert_eq!(code, 124, "{log}");
    // Timeout + grace + 1 s from the app's start.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let diagnosis = diagnosis(&log);
    let pid = pid_in(&diagnosis);
    for part in [
        "app did not become ready within 2s: pid ".to_string(),
        " alive, 0% CPU for the last ".to_string(),
        format!("not listening on any port (probe http://localhost:{port}/: connection refused)"),
        "main thread sleeping in futex".to_string(),
        "last stderr: \"INFO: Waiting for application startup.\"".to_string(),
    ] {
        assert!(diagnosis.contains(&part), "{part:?} not in {diagnosis}");
    }
    assert!(log.contains(&format!("stack of {pid}")), "{log}");
    let termination = std::fs::read_to_string(logfile.path()).expect("termination log");
    assert_eq!(termination, diagnosis);
    assert!(termination.len() <= 4096);
    assert!(!alive(pid), "the hung app {pid} outlived startgate");
}

#[test]
fn a_hung_app_that_ignores_sigterm_is_killed_after_the_kill_grace() {
    let db = TestDb::new("run_hang_stubborn");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "hang"),
            ("DEMO_IGNORE_TERM", "1"),
            ("STARTGATE_STARTUP_TIMEOUT", "1s"),
            ("STARTGATE_KILL_GRACE", "1s"),
        ],
    );
    run.wait_for_line("\"event\":\"app.diagnosis\"");
    let diagnosed = Instant::now();
    run.wait_for_line("got SIGTERM, ignoring it");
    let (code, log) = run.finish();
    let took = diagnosed.elapsed();
    assert_eq!(code, 124, "{log}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "killed {took:?} after the diagnosis"
    );
    assert!(!alive(pid_in(&diagnosis(&log))));
}

#[test]
fn a_port_that_accepts_but_never_answers_is_named_in_the_diagnosis() {
    let db = TestDb::new("run_mute");
    let dir = migrations();
    let port = free_port();
    let started = Instant::now();
    let run = start_run(
        &db.url,
        &dir,
        port,
        &[
            ("DEMO_MODE", "listen-no-answer"),
            ("DEMO_STARTUP_DELAY", "100ms"),
            ("STARTGATE_STARTUP_TIMEOUT", "2s"),
            ("STARTGATE_PROBE_TIMEOUT", "300ms"),
            ("STARTGATE_KILL_GRACE", "1s"),
        ],
    );
    let (code, log) = run.finish();
    assert_eq!(code, 124, "{log}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let diagnosis = diagnosis(&log);
    assert!(
        diagnosis.contains(&format!(
            "listening on {port} (probe http://localhost:{port}/: accepted the connection but \
             sent no answer within 300ms)"
        )),
        "{diagnosis}"
    );
    assert!(!alive(pid_in(&diagnosis)));
}

#[test]
fn a_crash_before_ready_is_the_apps_status_with_its_last_words_everywhere() {
    let db = TestDb::new("run_crash");
    let dir = migrations();
    let logfile = tempfile::NamedTempFile::new().expect("tempfile");
    let log_path = logfile.path().display().to_string();
    let run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "crash"),
            ("DEMO_STARTUP_DELAY", "200ms"),
            ("STARTGATE_TERMINATION_LOG", log_path.as_str()),
        ],
    );
    let (code, log) = run.finish();
    assert_eq!(code, 3, "{log}");
    let exit = log
        .lines()
        .find(|l| l.contains("\"event\":\"exit\""))
        .map(json)
        .unwrap_or_else(|| panic!("no exit event in {log}"));
    let message = exit["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the app exited with status 3 before it was ready")
            && message.contains("ModuleNotFoundError: No module named 'app.api.api_v1'"),
        "{message}"
    );
    let termination = std::fs::read_to_string(logfile.path()).expect("termination log");
    assert_eq!(termination, message);
}

#[test]
fn an_app_that_exits_zero_before_it_is_ready_is_still_reported() {
    let db = TestDb::new("run_exit_zero");
    let dir = migrations();
    let logfile = tempfile::NamedTempFile::new().expect("tempfile");
    let log_path = logfile.path().display().to_string();
    let run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "crash"),
            ("DEMO_EXIT_CODE", "0"),
            ("DEMO_STARTUP_DELAY", "100ms"),
            ("STARTGATE_TERMINATION_LOG", log_path.as_str()),
        ],
    );
    let (code, log) = run.finish();
    assert_eq!(code, 0, "{log}");
    let termination = std::fs::read_to_string(logfile.path()).expect("termination log");
    assert!(
        termination.starts_with("the app exited with status 0 before it was ready")
            && termination.contains("ModuleNotFoundError"),
        "{termination}"
    );
}

#[test]
fn sigterm_is_forwarded_and_the_apps_own_status_returned() {
    let db = TestDb::new("run_term");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[("DEMO_STARTUP_DELAY", "100ms"), ("DEMO_EXIT_ON_TERM", "7")],
    );
    let addr = run.endpoint();
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 7, "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn an_app_ignoring_sigterm_is_killed_by_a_second_sigterm() {
    let db = TestDb::new("run_ignore");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "ignore-term"),
            ("DEMO_STARTUP_DELAY", "100ms"),
        ],
    );
    let addr = run.endpoint();
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    let pid = app_pid(addr);
    run.signal(libc::SIGTERM);
    run.wait_for_line("got SIGTERM, ignoring it");
    // Without STARTGATE_SHUTDOWN_GRACE startgate waits for the app.
    std::thread::sleep(Duration::from_millis(700));
    assert!(run.running(), "startgate gave up on its own");
    assert!(alive(pid));
    let (code, body) = get(addr, "/status", None);
    assert_eq!(
        (code, json(&body)["phase"].clone()),
        (200, "stopping".into())
    );
    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 137, "{log}");
    assert!(
        log.contains("second SIGTERM: killing the app's process group"),
        "{log}"
    );
    assert!(!alive(pid));
}

#[test]
fn shutdown_grace_bounds_the_wait_for_an_app_ignoring_sigterm() {
    let db = TestDb::new("run_grace");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "ignore-term"),
            ("DEMO_STARTUP_DELAY", "100ms"),
            ("STARTGATE_SHUTDOWN_GRACE", "500ms"),
        ],
    );
    let addr = run.endpoint();
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 137, "{log}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(log.contains("STARTGATE_SHUTDOWN_GRACE"), "{log}");
}

/// Polls `check` every 20 ms for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn orphans_of_the_app_are_adopted_and_reaped() {
    let db = TestDb::new("run_orphans");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "orphans"),
            ("DEMO_STARTUP_DELAY", "100ms"),
            ("DEMO_ORPHAN_LIFETIME_MS", "1500"),
        ],
    );
    let addr = run.endpoint();
    run.wait_for_line("started 3 orphans");
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    let app = app_pid(addr);
    let startgate = i32::try_from(run.child.id()).expect("pid");
    // Orphaned by their parents, the grandchildren become startgate's (child subreaper)...
    let orphans = live_children(startgate, app);
    assert_eq!(orphans.len(), 3, "adopted: {orphans:?}");
    // ...and when they exit, startgate reaps them: no zombie is left.
    assert!(
        eventually(Duration::from_secs(5), || {
            live_children(startgate, app).is_empty() && zombie_children(startgate).is_empty()
        }),
        "left: {:?}, zombies: {:?}",
        live_children(startgate, app),
        zombie_children(startgate)
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.finish().0, 143);
}

#[test]
fn orphans_still_running_when_startgate_ends_are_stopped() {
    let db = TestDb::new("run_orphans_left");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "orphans"),
            ("DEMO_STARTUP_DELAY", "100ms"),
            ("DEMO_ORPHAN_LIFETIME_MS", "60000"),
        ],
    );
    let addr = run.endpoint();
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    let app = app_pid(addr);
    let startgate = i32::try_from(run.child.id()).expect("pid");
    let orphans = live_children(startgate, app);
    assert_eq!(orphans.len(), 3, "adopted: {orphans:?}");
    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 143, "{log}");
    for pid in orphans {
        assert!(!alive(pid), "orphan {pid} outlived startgate");
    }
    assert!(!alive(app));
}

#[test]
fn the_database_password_never_appears_in_the_endpoint_the_log_or_the_termination_log() {
    let db = TestDb::new("run_secret");
    let dir = migrations();
    let url = db
        .url
        .replacen("://postgres@", "://postgres:hunter2-secret@", 1);
    assert_ne!(url, db.url);
    let logfile = tempfile::NamedTempFile::new().expect("tempfile");
    let log_path = logfile.path().display().to_string();
    // Not UTF-8 after the URL: the stream is masked as bytes.
    let line = {
        use std::os::unix::ffi::OsStringExt;
        let mut bytes = format!("connecting to {url} ").into_bytes();
        bytes.push(0xff);
        std::ffi::OsString::from_vec(bytes)
    };
    let mut run = start_run_os(
        &url,
        &dir,
        free_port(),
        &[
            ("DEMO_MODE", "hang"),
            ("STARTGATE_STARTUP_TIMEOUT", "1s"),
            ("STARTGATE_KILL_GRACE", "200ms"),
            ("STARTGATE_TERMINATION_LOG", log_path.as_str()),
        ],
        &[("DEMO_SECRET_LINE", line.as_os_str())],
    );
    let addr = run.endpoint();
    run.wait_for_line("Waiting for application startup");
    std::thread::sleep(Duration::from_millis(400));
    let bodies: Vec<String> = ["/status", "/metrics", "/startupz", "/readyz?verbose"]
        .iter()
        .map(|path| get(addr, path, None).1)
        .collect();
    let (code, log) = run.finish();
    assert_eq!(code, 124, "{log}");
    let termination = std::fs::read_to_string(logfile.path()).expect("termination log");
    assert!(log.contains("connecting to postgres://postgres:"), "{log}");
    for text in bodies.iter().chain([&log, &termination]) {
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
    }
}

#[test]
fn watch_follows_an_app_in_another_container_up_and_down() {
    let port = free_port();
    let port_text = port.to_string();
    let mut run = Running::start(
        &["watch"],
        &[
            ("PORT", port_text.as_str()),
            ("STARTGATE_STARTUP_TIMEOUT", "1s"),
        ],
    );
    let addr = run.endpoint();
    // No app yet: the hang is reported and watch keeps serving.
    let line = run.wait_for_line("\"event\":\"app.diagnosis\"");
    assert!(
        line.contains(&format!("nothing listens on port {port}")),
        "{line}"
    );
    assert_eq!(get(addr, "/livez", None).0, 200);
    let (code, body) = get(addr, "/startupz", None);
    assert_eq!(code, 503);
    assert_eq!(json(&body)["phase"], "probing_app");
    let (_, status) = get(addr, "/status", None);
    assert!(
        json(&status)["app"]["diagnosis"]
            .as_str()
            .is_some_and(|d| d.starts_with("app did not become ready within 1s")),
        "{status}"
    );

    // The app comes up: /readyz turns 200.
    let mut app = std::process::Command::new(demo_app())
        .env("PORT", &port_text)
        .env("DEMO_STARTUP_DELAY", "100ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the app");
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    assert_eq!(get(addr, "/startupz", None).0, 200);

    // It goes away: /readyz turns 503 at the next readiness probe (every 5 s).
    let _ = app.kill();
    let _ = app.wait();
    wait_for_code(addr, "/readyz", 503, Duration::from_secs(10));
    let (_, status) = get(addr, "/status", None);
    assert_eq!(json(&status)["phase"], "probing_app", "{status}");

    run.signal(libc::SIGTERM);
    let (code, log) = run.finish();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn watch_without_a_probe_is_a_usage_error() {
    let run = Running::start(&["watch"], &[]);
    let (code, log) = run.finish();
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("watch needs something to probe"), "{log}");
}

#[test]
fn on_a_terminal_the_app_gets_the_foreground_and_reads_stdin() {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let db = TestDb::new("run_tty");
    let dir = migrations();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned nowhere else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_startgate"));
    command
        .args(["run", "--", "sh", "-c", "read line; echo got:$line; exit 5"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("STARTGATE_MIGRATIONS", dir.path())
        .env("STARTGATE_BACKUP", "never")
        .env("STARTGATE_LISTEN", "")
        .env("STARTGATE_LOG_FORMAT", "json")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; the child becomes a session leader whose
    // controlling terminal is the pty, as a shell would make it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawn startgate");
    drop(command);
    let mut reader = std::fs::File::from(master.try_clone().expect("dup"));
    let mut writer = std::fs::File::from(master);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = false;
    let status = loop {
        if let Ok(text) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push_str(&text);
        }
        if !sent && seen.contains("app.started") {
            std::thread::sleep(Duration::from_millis(200));
            writer.write_all(b"hello\n").expect("type");
            sent = true;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("startgate did not finish; the terminal showed:\n{seen}");
        }
    };
    while let Ok(text) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push_str(&text);
    }
    // A background group reading the terminal would have been stopped (SIGTTIN) instead.
    assert_eq!(status.code(), Some(5), "{seen}");
    assert!(seen.contains("got:hello"), "{seen}");
}

#[test]
fn sighup_goes_to_the_app_and_its_death_is_startgates_status() {
    let db = TestDb::new("run_hup");
    let dir = migrations();
    let mut run = start_run(
        &db.url,
        &dir,
        free_port(),
        &[("DEMO_STARTUP_DELAY", "100ms")],
    );
    let addr = run.endpoint();
    wait_for_code(addr, "/readyz", 200, Duration::from_secs(10));
    run.signal(libc::SIGHUP);
    let (code, log) = run.finish();
    // The app died of SIGHUP (its default action); startgate did not, it reported it.
    assert_eq!(code, 129, "{log}");
    assert!(log.contains("forwarded SIGHUP to the app"), "{log}");
    assert!(log.contains("was killed by signal 1 (SIGHUP)"), "{log}");
}
