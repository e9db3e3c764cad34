//! The endpoint served by the real binary during `init`, over real HTTP: what a `curl` or the
//! kubelet sees while startup waits for the migration lock, that no password leaks, that the
//! token guards `/status` and `/metrics`, that stalled clients do not delay `/livez`, and that
//! an address in use is exit 2 naming it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Blocker, TestDb, startgate};
use startgate::backend::LockKey;
use startgate::config::HistoryTable;

const LIMIT: Duration = Duration::from_secs(60);

/// `GET path` with an optional bearer token: status code and body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A running `startgate init` whose stderr lines arrive on a channel.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(db_url: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_startgate"))
            .arg("init")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("STARTGATE_MIGRATIONS", dir)
            .env("STARTGATE_LOG_FORMAT", "json")
            .env("STARTGATE_LISTEN", "127.0.0.1:0")
            .env("STARTGATE_BACKUP", "never")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn startgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line with {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// The endpoint's address, from its log line.
    fn endpoint(&mut self) -> SocketAddr {
        let line = self.wait_for_line("\"event\":\"endpoint\"");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        value["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// Waits for the exit; the status code and every stderr line.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "startgate did not finish");
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

/// A migrations directory with one pending migration.
fn one_migration() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("0001_a.sql"), "CREATE TABLE a (id int);\n").expect("write");
    dir
}

/// Another replica's session holding the migration lock of the default history table, so
/// that `init` waits in `acquiring_lock` until it is released.
fn hold_the_lock(db: &TestDb) -> Blocker {
    let key = LockKey::for_table(&HistoryTable {
        schema: "public".into(),
        table: "startgate_migrations".into(),
    })
    .0;
    Blocker::hold(
        db,
        "other-replica",
        &format!("BEGIN; SELECT pg_advisory_xact_lock({key})"),
    )
}

#[test]
fn the_endpoint_says_what_init_waits_for_and_never_shows_the_password() {
    let db = TestDb::new("endpoint_wait");
    let dir = one_migration();
    // Trust authentication accepts any password: this one must appear nowhere.
    let url = db
        .url
        .replacen("://postgres@", "://postgres:hunter2-secret@", 1);
    assert_ne!(
        url, db.url,
        "the test URL has a user to add a password to: {}",
        db.url
    );
    let mut blocker = hold_the_lock(&db);
    let mut run = Running::start(&url, dir.path(), &[]);
    let addr = run.endpoint();
    run.wait_for_line("\"event\":\"lock.waiting\"");

    let (code, body) = get(addr, "/livez", None);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(addr, "/startupz", None);
    assert_eq!(code, 503, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(status["phase"], "acquiring_lock", "{body}");
    assert_eq!(status["database"]["backend"], "postgres");
    assert_eq!(status["migrations"]["pending"], 1, "{body}");
    let (code, verbose) = get(addr, "/startupz?verbose", None);
    assert_eq!(code, 503);
    assert!(verbose.contains("phase: acquiring_lock"), "{verbose}");
    let (code, metrics) = get(addr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("startgate_phase{phase=\"acquiring_lock\"} 1"),
        "{metrics}"
    );
    let (_, status_body) = get(addr, "/status", None);
    for text in [&body, &verbose, &metrics, &status_body] {
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
    }

    blocker.release();
    let (code, log) = run.finish();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("hunter2"), "the password leaked into the log");
}

#[test]
fn the_token_guards_status_and_metrics_but_not_the_probes() {
    let db = TestDb::new("endpoint_token");
    let dir = one_migration();
    let mut blocker = hold_the_lock(&db);
    let mut run = Running::start(
        &db.url,
        dir.path(),
        &[("STARTGATE_STATUS_TOKEN", "t0ken-xyz")],
    );
    let addr = run.endpoint();
    run.wait_for_line("\"event\":\"lock.waiting\"");
    assert_eq!(get(addr, "/status", None).0, 401);
    assert_eq!(get(addr, "/metrics", Some("wrong")).0, 401);
    assert_eq!(get(addr, "/status", Some("t0ken-xyz")).0, 200);
    assert_eq!(get(addr, "/metrics", Some("t0ken-xyz")).0, 200);
    assert_eq!(get(addr, "/livez", None).0, 200);
    let (code, body) = get(addr, "/startupz", None);
    assert_eq!(code, 503);
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        value,
        serde_json::json!({"phase": "acquiring_lock", "ready": false})
    );
    blocker.release();
    assert_eq!(run.finish().0, 0);
}

#[test]
fn stalled_clients_do_not_delay_livez() {
    let db = TestDb::new("endpoint_stalled");
    let dir = one_migration();
    let mut blocker = hold_the_lock(&db);
    let mut run = Running::start(&db.url, dir.path(), &[]);
    let addr = run.endpoint();
    // A hundred clients that connect and send half a request, then nothing.
    let stalled: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n");
            s
        })
        .collect();
    let started = Instant::now();
    let (code, _) = get(addr, "/livez", None);
    let took = started.elapsed();
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "/livez took {took:?}");
    drop(stalled);
    blocker.release();
    assert_eq!(run.finish().0, 0);
}

#[test]
fn an_address_in_use_is_exit_two_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let db = TestDb::new("endpoint_in_use");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().display().to_string();
    let out = startgate(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATIONS", path.as_str()),
            ("STARTGATE_LISTEN", addr.as_str()),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("STARTGATE_LISTEN={addr}: cannot listen there"))
            && out.stderr.contains("another process listens there"),
        "{}",
        out.stderr
    );
}
