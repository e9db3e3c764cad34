//! What a user sees when startup cannot proceed: a database that never comes up (exit 3 at the
//! deadline, with the reason), one that comes up during the wait (success), bad settings and bad
//! migration files (exit 2, every problem named at once), and `--help`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{TestDb, fixture, startgate};

const LIMIT: Duration = Duration::from_secs(60);

/// A port on which nothing listens (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn unreachable_database_exits_three_at_the_deadline_with_the_reason_and_no_password() {
    let url = format!(
        "postgres://app:hunter2-secret@127.0.0.1:{}/app?sslpassword=key-secret-4&PassWord=other-secret-5",
        closed_port()
    );
    let dir = fixture("status");
    let termination = tempfile::NamedTempFile::new().expect("tempfile");
    let termination_path = termination.path().display().to_string();
    let out = startgate(
        &["init"],
        &[
            ("DATABASE_URL", &url),
            ("STARTGATE_MIGRATIONS", &dir),
            ("STARTGATE_DB_WAIT_TIMEOUT", "2s"),
            ("STARTGATE_TERMINATION_LOG", &termination_path),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    // The reason is where `kubectl describe pod` shows it, without the password.
    let summary = std::fs::read_to_string(termination.path()).expect("termination log");
    assert!(
        summary.starts_with("database postgres://app@127.0.0.1:")
            && summary.contains("connection refused"),
        "{summary}"
    );
    assert!(
        out.elapsed >= Duration::from_secs(2),
        "gave up early: {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "overran the deadline: {:?}",
        out.elapsed
    );
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
    assert!(
        out.stderr.contains("database postgres://app@127.0.0.1:"),
        "the URL is shown without its password: {}",
        out.stderr
    );
    for secret in ["hunter2-secret", "key-secret-4", "other-secret-5"] {
        assert!(!summary.contains(secret), "{secret} leaked: {summary}");
        assert!(
            !out.stderr.contains(secret),
            "{secret} leaked: {}",
            out.stderr
        );
    }
    // Several attempts were logged, each with its reason.
    let attempts = out
        .stderr
        .matches("): connection refused (127.0.0.1:")
        .count();
    assert!(attempts >= 2, "{}", out.stderr);
}

#[test]
fn a_url_the_driver_refuses_exits_two_at_once() {
    let dir = fixture("status");
    let out = startgate(
        &["status"],
        &[
            (
                "DATABASE_URL",
                "postgres://app:pw-x-secret@127.0.0.1:5432/app?sslmode=bogus",
            ),
            ("STARTGATE_MIGRATIONS", &dir),
            ("STARTGATE_DB_WAIT_TIMEOUT", "60s"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "it retried a wrong URL: {:?}",
        out.elapsed
    );
    let messages = common::log_messages(&out.stderr);
    assert!(
        messages.contains("bad connection URL postgres://app@127.0.0.1:5432/app?sslmode=bogus: invalid setting: unknown value \"bogus\""),
        "{messages}"
    );
    assert!(!out.stderr.contains("pw-x-secret"), "{}", out.stderr);
}

#[test]
fn a_missing_database_is_named_as_such() {
    let db = TestDb::new("wait_missing");
    let url = db.url.replace(&db.name, "no_such_database_here");
    let dir = fixture("status");
    let out = startgate(
        &["status"],
        &[
            ("DATABASE_URL", &url),
            ("STARTGATE_MIGRATIONS", &dir),
            ("STARTGATE_DB_WAIT_TIMEOUT", "1s"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("database does not exist"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no_such_database_here"),
        "{}",
        out.stderr
    );
}

/// Forwards every connection on `listener` to `target`, both ways, until the test ends.
fn proxy(listener: TcpListener, target: String) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
}

#[test]
fn a_database_that_comes_up_during_the_wait_is_used() {
    let db = TestDb::new("wait_late");
    let real = url::Url::parse(&db.url).expect("url");
    let target = format!(
        "{}:{}",
        real.host_str().unwrap_or("127.0.0.1"),
        real.port().unwrap_or(5432)
    );
    let port = closed_port();
    let mut late = real.clone();
    late.set_host(Some("127.0.0.1")).expect("host");
    late.set_port(Some(port)).expect("port");

    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the late port");
        proxy(listener, target);
    });
    let dir = fixture("status");
    let out = startgate(
        &["status", "--json"],
        &[
            ("DATABASE_URL", late.as_str()),
            ("STARTGATE_MIGRATIONS", &dir),
            ("STARTGATE_DB_WAIT_TIMEOUT", "30s"),
        ],
        LIMIT,
    );
    opener.join().expect("opener");
    assert_eq!(out.code, 9, "stderr: {}", out.stderr);
    assert!(
        out.elapsed >= Duration::from_millis(1500),
        "{:?}",
        out.elapsed
    );
    assert!(
        out.stderr.contains("connection refused"),
        "the early attempts were logged: {}",
        out.stderr
    );
    assert!(out.stderr.contains("database is up"), "{}", out.stderr);
}

#[test]
fn every_bad_setting_is_reported_at_once_with_exit_two() {
    let termination = tempfile::NamedTempFile::new().expect("tempfile");
    let termination_path = termination.path().display().to_string();
    let out = startgate(
        &["status"],
        &[
            ("STARTGATE_TERMINATION_LOG", &termination_path),
            ("DATABASE_URL", "mysql://root:pw-not-shown@db/app"),
            ("STARTGATE_LOCK_TIMEOUT", "10x"),
            ("STARTGATE_BACKUP", "sometimes"),
            ("STARTGATE_BACKUP_KEEP", "0"),
            ("STARTGATE_PROBE", "ftp://localhost:21"),
            ("STARTGATE_OUT_OF_ORDER", "perhaps"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    let messages = common::log_messages(&out.stderr);
    assert!(messages.contains("6 invalid settings"), "{messages}");
    for name in [
        "DATABASE_URL",
        "STARTGATE_LOCK_TIMEOUT=\"10x\"",
        "STARTGATE_BACKUP=\"sometimes\"",
        "STARTGATE_BACKUP_KEEP=\"0\"",
        "STARTGATE_PROBE=\"ftp://localhost:21\"",
        "STARTGATE_OUT_OF_ORDER=\"perhaps\"",
    ] {
        assert!(messages.contains(name), "{name} not named in: {messages}");
    }
    assert!(
        !out.stderr.contains("pw-not-shown"),
        "password leaked: {}",
        out.stderr
    );
    let summary = std::fs::read_to_string(termination.path()).expect("termination log");
    assert!(
        summary.contains("6 invalid settings") && summary.contains("STARTGATE_BACKUP_KEEP"),
        "{summary}"
    );
    assert!(!summary.contains("pw-not-shown"), "{summary}");
}

#[test]
fn a_command_that_needs_the_database_says_so() {
    let dir = fixture("status");
    let out = startgate(&["status"], &[("STARTGATE_MIGRATIONS", &dir)], LIMIT);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("DATABASE_URL"), "{}", out.stderr);
}

#[test]
fn every_bad_migration_file_is_reported_at_once_with_exit_two_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).expect("write");
    w("0001_ok.sql", b"CREATE TABLE a (id int);\n");
    w("0002_dup.sql", b"SELECT 1;\n");
    w("2_dup_again.up.sql", b"SELECT 2;\n");
    w(
        "0003_bad_directive.sql",
        b"-- startgate:lock-timeout soon\nSELECT 1;\n",
    );
    w("0004_latin1.sql", b"SELECT 1;\nSELECT 'caf\xe9';\n");
    w("0005_open_quote.sql", b"SELECT 1;\nSELECT 'never closed;\n");
    w("0006_commit.sql", b"CREATE TABLE b (id int);\nCOMMIT;\n");
    let path = dir.path().display().to_string();
    // A database URL that would fail: the files must be refused before any connection attempt.
    let url = format!("postgres://app@127.0.0.1:{}/app", closed_port());
    let out = startgate(
        &["status"],
        &[
            ("DATABASE_URL", &url),
            ("STARTGATE_MIGRATIONS", &path),
            ("STARTGATE_DB_WAIT_TIMEOUT", "30s"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "it tried to connect first: {:?}",
        out.elapsed
    );
    for expected in [
        "0002_dup.sql",
        "2_dup_again.up.sql",
        "0003_bad_directive.sql:1",
        "0004_latin1.sql:2",
        "0005_open_quote.sql:2",
        "0006_commit.sql:2",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected} not named in: {}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("connection refused"), "{}", out.stderr);
}

#[test]
fn help_lists_every_setting_with_its_default() {
    for args in [&["--help"][..], &["status", "--help"][..]] {
        let out = startgate(args, &[], LIMIT);
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        // Each setting's line shows its name and, beside it, its default.
        for setting in startgate::config::SETTINGS {
            let line = out
                .stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(setting.name))
                .unwrap_or_else(|| panic!("{} missing from {args:?} help", setting.name));
            let default = setting.default.replace('`', "");
            let first_word = default.split_whitespace().next().unwrap_or("");
            assert!(
                line.contains(first_word),
                "the default of {} ({default}) is not beside it: {line:?}",
                setting.name
            );
        }
    }
    let version = startgate(&["--version"], &[], LIMIT);
    assert_eq!(version.code, 0);
    assert!(
        version.stdout.starts_with("startgate "),
        "{}",
        version.stdout
    );
}
