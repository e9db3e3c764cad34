//! The endpoint served by the real binary during `init`, over real HTTP: what a `curl` or the
//! kubelet sees while startup waits for the migration lock, that no password leaks, that the
//! token guards `/status` and `/metrics`, that stalled clients do not delay `/livez`, and that
//! an address in use is exit 2 naming it.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Blocker, Running, TestDb, get, startgate};
use startgate::backend::LockKey;
use startgate::config::HistoryTable;

const LIMIT: Duration = Duration::from_secs(60);

/// `startgate init` with the endpoint on a free port, its migrations in `dir`.
fn start_init(db_url: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Running {
    let dir = dir.display().to_string();
    let mut env = vec![
        ("DATABASE_URL", db_url),
        ("STARTGATE_MIGRATIONS", dir.as_str()),
        ("STARTGATE_BACKUP", "never"),
    ];
    env.extend_from_slice(extra);
    Running::start(&["init"], &env)
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
    let mut run = start_init(&url, dir.path(), &[]);
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
    let mut run = start_init(
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
    let mut run = start_init(&db.url, dir.path(), &[]);
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

#[test]
fn migrations_are_counted_as_each_one_commits() {
    let db = TestDb::new("endpoint_count");
    db.exec("CREATE TABLE held (id int)");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("0001_a.sql"), "CREATE TABLE a (id int);\n").expect("write");
    std::fs::write(
        dir.path().join("0002_b.sql"),
        "ALTER TABLE held ADD COLUMN b int;\n",
    )
    .expect("write");
    let mut blocker = Blocker::hold(
        &db,
        "long-report",
        "BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE",
    );
    let mut run = start_init(&db.url, dir.path(), &[("STARTGATE_LOCK_TIMEOUT", "60s")]);
    let addr = run.endpoint();
    run.wait_for_line("applying 0002_b.sql");
    let (_, body) = get(addr, "/status", None);
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["phase"], "migrating", "{body}");
    assert_eq!(status["migrations"]["applied"], 1, "{body}");
    assert_eq!(status["migrations"]["pending"], 1, "{body}");
    assert_eq!(status["migrations"]["current"], "0001", "{body}");
    let (_, metrics) = get(addr, "/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l == "startgate_migrations_applied_total 1"),
        "{metrics}"
    );
    blocker.release();
    let (code, log) = run.finish();
    assert_eq!(code, 0, "{log}");
}
