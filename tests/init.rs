//! `startgate init` against a real PostgreSQL, driving the real binary: applying and re-running,
//! the refusals (gap, changed file), a failing statement, lock timeouts with retries, a bad file
//! read while the history read waits on a lock, eight replicas at once, SIGTERM in the middle of
//! a statement, the wall-clock limit, and a `CREATE INDEX CONCURRENTLY` that fails and resumes.
//! Each test asserts what an operator would look at: the exit status, the message, the history
//! rows and the catalog.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Blocker, TestDb, fixture, startgate};

const LIMIT: Duration = Duration::from_secs(120);

/// A migrations directory holding `files`.
fn migrations(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write migration");
    }
    dir
}

fn init(db: &TestDb, dir: &Path, extra: &[(&str, &str)]) -> common::Output {
    let path = dir.display().to_string();
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATIONS", path.as_str()),
        ("STARTGATE_DB_WAIT_TIMEOUT", "10s"),
    ];
    env.extend_from_slice(extra);
    startgate(&["init"], &env, LIMIT)
}

fn scalar(db: &TestDb, sql: &str) -> Option<String> {
    db.query(sql)
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
}

fn exists(db: &TestDb, relation: &str) -> bool {
    scalar(
        db,
        &format!("SELECT (to_regclass('{relation}') IS NOT NULL)::text"),
    )
    .as_deref()
        == Some("true")
}

/// `version:state` of every history row, in version order.
fn history(db: &TestDb) -> String {
    db.query("SELECT version || ':' || state FROM startgate_migrations ORDER BY version")
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn applies_everything_then_a_rerun_applies_nothing_and_takes_no_lock() {
    let db = TestDb::new("init_apply");
    let dir = fixture("status");
    let out = init(&db, Path::new(&dir), &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("applied 5 migrations in"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("now at version 5"), "{}", out.stderr);
    assert_eq!(
        history(&db),
        "0001:applied 0002:applied 0003:applied 0004:applied 5:applied"
    );
    for table in ["users", "feature_flags", "orders"] {
        assert!(exists(&db, table), "{table} was created");
    }
    assert_eq!(scalar(&db, "SELECT name FROM users LIMIT 0"), None);
    assert_eq!(
        scalar(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'orders_user_idx'::regclass"
        )
        .as_deref(),
        Some("true"),
        "the CREATE INDEX CONCURRENTLY built a valid index"
    );
    // The recovery point and the runner are recorded.
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*)::text FROM startgate_migrations WHERE recovery_time IS NOT NULL \
             AND recovery_lsn IS NOT NULL AND applied_by IS NOT NULL AND startgate_version IS NOT NULL"
        )
        .as_deref(),
        Some("5")
    );
    let before = db.query(
        "SELECT version, applied_at::text, execution_ms::text FROM startgate_migrations ORDER BY 1",
    );

    let again = init(&db, Path::new(&dir), &[]);
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    assert!(
        again.stderr.contains("nothing to apply"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("no lock needed"), "{}", again.stderr);
    let after = db.query(
        "SELECT version, applied_at::text, execution_ms::text FROM startgate_migrations ORDER BY 1",
    );
    assert_eq!(before, after, "a re-run leaves the history untouched");
}

fn numbered(versions: impl IntoIterator<Item = u32>) -> Vec<(String, String)> {
    versions
        .into_iter()
        .map(|v| {
            (
                format!("{v:04}_t{v}.sql"),
                format!("CREATE TABLE t{v} (id int);\n"),
            )
        })
        .collect()
}

#[test]
fn the_gap_is_refused_and_nothing_applied_unless_out_of_order_is_allowed() {
    let db = TestDb::new("init_gap");
    let files = numbered([1, 2, 4, 5, 6, 7, 8, 9, 10]);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let dir = migrations(&files);
    assert_eq!(init(&db, dir.path(), &[]).code, 0);

    std::fs::write(
        dir.path().join("0003_feature_flags.sql"),
        "CREATE TABLE feature_flags (key text PRIMARY KEY);\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("0011_t11.sql"),
        "CREATE TABLE t11 (id int);\n",
    )
    .expect("write");
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(
            "0003_feature_flags.sql is pending but 0004–0010 are applied: set STARTGATE_OUT_OF_ORDER=true to apply it, or renumber it"
        ),
        "{}",
        out.stderr
    );
    assert!(!exists(&db, "feature_flags"), "nothing was applied");
    assert!(
        !exists(&db, "t11"),
        "not even the pending migration after the gap"
    );

    let allowed = init(&db, dir.path(), &[("STARTGATE_OUT_OF_ORDER", "true")]);
    assert_eq!(allowed.code, 0, "stderr: {}", allowed.stderr);
    assert!(exists(&db, "feature_flags"));
    assert!(exists(&db, "t11"));
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM startgate_migrations").as_deref(),
        Some("11")
    );
}

#[test]
fn a_changed_file_is_refused_but_line_endings_and_directives_are_not_changes() {
    let db = TestDb::new("init_changed");
    let dir = migrations(&[
        (
            "0001_a.sql",
            "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
        ),
        ("0002_b.sql", "CREATE TABLE b (id int);\n"),
    ]);
    assert_eq!(init(&db, dir.path(), &[]).code, 0);

    // CRLF line endings and a tuned timeout: not a change.
    std::fs::write(
        dir.path().join("0001_a.sql"),
        "-- startgate:lock-timeout 2s\r\nCREATE TABLE a (id int);\r\nINSERT INTO a VALUES (1);\r\n",
    )
    .expect("write");
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);

    // A real edit of an applied file: refused, and the pending migration is not applied.
    std::fs::write(
        dir.path().join("0002_b.sql"),
        "CREATE TABLE b (id bigint);\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("0003_c.sql"), "CREATE TABLE c (id int);\n").expect("write");
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("0002_b.sql was changed after it was applied"),
        "{}",
        out.stderr
    );
    assert!(!exists(&db, "c"));
}

#[test]
fn each_migration_runs_with_its_own_timeouts_and_the_next_one_gets_the_settings_back() {
    let db = TestDb::new("init_timeouts_seen");
    // The lock check before each migration silences the server's messages for a moment:
    // the migration itself must see them as they were.
    let seen = "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), \
                current_setting('client_min_messages')";
    let dir = migrations(&[
        (
            "0001_directives.sql",
            &format!(
                "-- startgate:lock-timeout 1500ms\n-- startgate:statement-timeout 7s\n\
                 CREATE TABLE seen (v int, lock_timeout text, statement_timeout text, \
                 client_min_messages text);\n\
                 INSERT INTO seen SELECT 1, * FROM ({seen}) s;\n"
            ),
        ),
        (
            "0002_no_transaction.sql",
            &format!(
                "-- startgate:no-transaction\n-- startgate:statement-timeout 8s\n\
                 INSERT INTO seen SELECT 2, * FROM ({seen}) s;\n"
            ),
        ),
        (
            "0003_settings.sql",
            &format!("INSERT INTO seen SELECT 3, * FROM ({seen}) s;\n"),
        ),
    ]);
    // Not the server's default, so that putting back a fixed value would show.
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET client_min_messages = warning",
        db.name
    ));
    let out = init(
        &db,
        dir.path(),
        &[
            ("STARTGATE_LOCK_TIMEOUT", "2s"),
            ("STARTGATE_STATEMENT_TIMEOUT", "9s"),
        ],
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        scalar(
            &db,
            "SELECT string_agg(concat_ws('/', v, lock_timeout, statement_timeout, client_min_messages), ' ' \
             ORDER BY v) FROM seen"
        )
        .as_deref(),
        Some("1/1500ms/7s/warning 2/2s/8s/warning 3/2s/9s/warning")
    );
}

/// The last statement of a migration shares its message with the history row and the commit:
/// its failure, a failure at the commit, and a last line that is a comment must each read as
/// they would on their own.
#[test]
fn the_last_statement_fails_and_the_commit_fails_as_any_statement_would() {
    let db = TestDb::new("init_last_statement");
    let dir = migrations(&[(
        "0001_a.sql",
        "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nINSERT INTO a\n  VALUES ('x');\n",
    )]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(
            r#"0001_a.sql:3: statement 3 failed (22P02): invalid input syntax for type integer: \"x\" (at line 4, column 11); the migration was rolled back"#
        ),
        "{}",
        out.stderr
    );
    assert!(!exists(&db, "a"));
    assert_eq!(history(&db), "");

    // A deferred foreign key fails at the commit, after every statement ran.
    let db = TestDb::new("init_commit_fails");
    let dir = migrations(&[(
        "0001_deferred.sql",
        "CREATE TABLE p (id int PRIMARY KEY);\n\
         CREATE TABLE c (pid int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\n\
         INSERT INTO c VALUES (1);\n",
    )]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(
            r#"0001_deferred.sql: insert or update on table \"c\" violates foreign key constraint"#
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("(23503); the migration was rolled back"),
        "{}",
        out.stderr
    );
    assert!(!exists(&db, "p") && !exists(&db, "c"));
    assert_eq!(history(&db), "");

    // A file whose last line is a comment after a statement without a semicolon.
    let db = TestDb::new("init_last_comment");
    let dir = migrations(&[("0001_z.sql", "CREATE TABLE z (id int) -- no semicolon")]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(exists(&db, "z"));
    assert_eq!(history(&db), "0001:applied");
    assert_eq!(
        scalar(
            &db,
            "SELECT (execution_ms >= 0)::text FROM startgate_migrations"
        )
        .as_deref(),
        Some("true")
    );
}

/// startgate holds the migration lock twice, so that its check before each migration (release
/// one hold, take it back) never leaves the lock free: with one hold released by a migration,
/// the lock is still startgate's.
#[test]
fn the_lock_check_never_leaves_the_lock_free() {
    let db = TestDb::new("init_lock_held_twice");
    let key = startgate::backend::LockKey::for_table(&startgate::config::HistoryTable {
        schema: "public".into(),
        table: "startgate_migrations".into(),
    })
    .0;
    let dir = migrations(&[
        (
            "0001_count.sql",
            &format!(
                "SELECT pg_advisory_unlock({key});\n\
                 CREATE TABLE held AS SELECT count(*) AS n FROM pg_locks \
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted;\n\
                 SELECT pg_advisory_lock({key});\n"
            ),
        ),
        ("0002_next.sql", "CREATE TABLE next_one (id int);\n"),
    ]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        scalar(&db, "SELECT n::text FROM held").as_deref(),
        Some("1")
    );
    assert_eq!(history(&db), "0001:applied 0002:applied");
}

/// A COMMIT that runs past the wall-clock limit (a deferred trigger) is cancelled and reported
/// as the timeout it is, not as a failed statement.
#[test]
fn a_commit_past_the_wall_clock_limit_is_cancelled_as_a_timeout() {
    let db = TestDb::new("init_slow_commit");
    let dir = migrations(&[(
        "0001_slow_commit.sql",
        "CREATE TABLE t (id int);\n\
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;\n\
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION slow();\n\
         INSERT INTO t VALUES (1);\n",
    )]);
    let out = init(&db, dir.path(), &[("STARTGATE_MIGRATION_TIMEOUT", "1s")]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(
            "0001_slow_commit.sql did not finish within 1s (STARTGATE_MIGRATION_TIMEOUT or -- startgate:timeout); it was cancelled on the server"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the migration was rolled back"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("no transaction in progress"),
        "{}",
        out.stderr
    );
    assert!(!exists(&db, "t"));
    assert_eq!(history(&db), "");
}

#[test]
fn a_failing_statement_rolls_its_migration_back_and_stops_with_file_and_line() {
    let db = TestDb::new("init_failing");
    let dir = migrations(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        (
            "0002_b.sql",
            "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n\nINSERT INTO b\n  SELECT id FROM missing_table;\nCREATE TABLE c (id int);\n",
        ),
        ("0003_d.sql", "CREATE TABLE d (id int);\n"),
    ]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("0002_b.sql:4: statement 3 failed (42P01)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(r#"relation \"missing_table\" does not exist"#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("(at line 5, column 18)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the migration was rolled back"),
        "{}",
        out.stderr
    );
    assert!(exists(&db, "a"), "the earlier migration stays applied");
    assert!(
        !exists(&db, "b"),
        "the failing migration is rolled back whole"
    );
    assert!(!exists(&db, "d"), "later migrations are not attempted");
    assert_eq!(history(&db), "0001:applied");
    // The lock was released on the way out.
    assert_eq!(scalar(&db, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").as_deref(), Some("0"));
}

#[test]
fn a_lock_timeout_is_retried_until_the_blocking_session_lets_go() {
    let db = TestDb::new("init_lock_retry");
    let dir = migrations(&[("0001_t.sql", "CREATE TABLE t (id int);\n")]);
    assert_eq!(init(&db, dir.path(), &[]).code, 0);
    std::fs::write(
        dir.path().join("0002_add.sql"),
        "-- startgate:lock-timeout 300ms\nALTER TABLE t ADD COLUMN c int;\n",
    )
    .expect("write");

    let mut blocker = Blocker::hold(
        &db,
        "blocker-test",
        "BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;",
    );
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        blocker.release();
    });
    let out = init(&db, dir.path(), &[("STARTGATE_LOCK_RETRIES", "10")]);
    releaser.join().expect("releaser");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("hit lock_timeout (55P03)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("retrying in"), "{}", out.stderr);
    assert!(
        out.stderr.contains("blocker-test"),
        "the retry names the blocker: {}",
        out.stderr
    );
    assert_eq!(history(&db), "0001:applied 0002:applied");
    assert_eq!(
        scalar(&db, "SELECT count(c)::text FROM t").as_deref(),
        Some("0")
    );
}

#[test]
fn with_retries_exhausted_the_failure_names_the_blocking_session() {
    let db = TestDb::new("init_lock_exhausted");
    let dir = migrations(&[("0001_t.sql", "CREATE TABLE t (id int);\n")]);
    assert_eq!(init(&db, dir.path(), &[]).code, 0);
    std::fs::write(
        dir.path().join("0002_add.sql"),
        "-- startgate:lock-timeout 300ms\nALTER TABLE t ADD COLUMN c int;\n",
    )
    .expect("write");
    let _blocker = Blocker::hold(
        &db,
        "blocker-test",
        "BEGIN; LOCK TABLE t IN ACCESS SHARE MODE; SELECT 'holding t for the test';",
    );
    let out = init(&db, dir.path(), &[("STARTGATE_LOCK_RETRIES", "1")]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("0002_add.sql:2: statement 1 hit lock_timeout (55P03) 2 times"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("blocked by pid "), "{}", out.stderr);
    assert!(
        out.stderr.contains(r#"application_name \"blocker-test\""#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("holding t for the test"),
        "the blocker's query is shown: {}",
        out.stderr
    );
    assert_eq!(history(&db), "0001:applied");
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 't' AND column_name = 'c'").as_deref(),
        Some("0")
    );
}

#[test]
fn eight_replicas_at_once_apply_every_migration_exactly_once() {
    let db = TestDb::new("init_eight");
    let dir = migrations(&[
        ("0001_deploys.sql", "CREATE TABLE deploys (note text);\n"),
        (
            "0002_first.sql",
            "INSERT INTO deploys VALUES ('applied once');\n",
        ),
        (
            "0003_slow.sql",
            "SELECT pg_sleep(0.3);\nCREATE TABLE slow (id int);\n",
        ),
        (
            "0004_second.sql",
            "INSERT INTO deploys VALUES ('also once');\n",
        ),
    ]);
    let path = dir.path().display().to_string();
    let url = db.url.clone();
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let (path, url) = (path.clone(), url.clone());
            std::thread::spawn(move || {
                let host = format!("replica-{i}");
                startgate(
                    &["init"],
                    &[
                        ("DATABASE_URL", url.as_str()),
                        ("STARTGATE_MIGRATIONS", path.as_str()),
                        ("HOSTNAME", host.as_str()),
                    ],
                    LIMIT,
                )
            })
        })
        .collect();
    for run in runs {
        let out = run.join().expect("replica thread");
        assert_eq!(out.code, 0, "every replica exits 0: {}", out.stderr);
    }
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM deploys").as_deref(),
        Some("2")
    );
    assert_eq!(
        history(&db),
        "0001:applied 0002:applied 0003:applied 0004:applied"
    );
}

#[test]
fn sigterm_during_a_statement_cancels_it_rolls_back_releases_the_lock_and_exits_143() {
    let db = TestDb::new("init_sigterm");
    let dir = migrations(&[(
        "0001_long.sql",
        "CREATE TABLE long_one (id int);\nSELECT pg_sleep(60);\n",
    )]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_startgate"))
        .arg("init")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("STARTGATE_MIGRATIONS", dir.path())
        .env("STARTGATE_LOG_FORMAT", "json")
        .env("STARTGATE_LISTEN", "127.0.0.1:0")
        .env("STARTGATE_BACKUP", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn startgate");
    let running = "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' \
                   AND application_name LIKE 'startgate@%' AND state = 'active'";
    common::wait_for("the long statement to run", Duration::from_secs(30), || {
        scalar(&db, running).as_deref() == Some("1")
    });

    // SAFETY: kill() with a pid we spawned and still own (not yet reaped).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("startgate did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    assert_eq!(status.code(), Some(143), "stderr: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_eq!(
        scalar(&db, running).as_deref(),
        Some("0"),
        "no server session still runs the statement"
    );
    assert_eq!(scalar(&db, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").as_deref(), Some("0"));
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM startgate_migrations").as_deref(),
        Some("0")
    );
    assert!(!exists(&db, "long_one"), "the transaction was rolled back");
}

#[test]
fn the_wall_clock_limit_cancels_a_statement_on_the_server() {
    let db = TestDb::new("init_timeout");
    let dir = migrations(&[("0001_long.sql", "SELECT pg_sleep(60);\n")]);
    let out = init(&db, dir.path(), &[("STARTGATE_MIGRATION_TIMEOUT", "1s")]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    assert!(
        out.stderr
            .contains("0001_long.sql:1: statement 1 did not finish within 1s"),
        "{}",
        out.stderr
    );
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()").as_deref(),
        Some("0")
    );
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM startgate_migrations").as_deref(),
        Some("0")
    );
}

/// A table `t` applied by 0001, a pending no-transaction 0002 running `index` (lock timeout
/// 1 s), and a transaction holding an old snapshot: a concurrent index build creates its
/// (invalid) index, then waits for that snapshot to go, and runs into lock_timeout.
fn index_blocked_by_a_snapshot(db: &TestDb, index: &str) -> (tempfile::TempDir, Blocker) {
    let dir = migrations(&[(
        "0001_tables.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t SELECT generate_series(1, 1000);\nCREATE TABLE other (id int);\n",
    )]);
    assert_eq!(init(db, dir.path(), &[]).code, 0);
    std::fs::write(
        dir.path().join("0002_index.sql"),
        format!("-- startgate:no-transaction\n-- startgate:lock-timeout 1s\n{index}\n"),
    )
    .expect("write");
    let blocker = Blocker::hold(
        db,
        "snapshot-holder",
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other;",
    );
    (dir, blocker)
}

#[test]
fn a_failed_create_index_concurrently_drops_its_invalid_index_and_resumes() {
    let db = TestDb::new("init_cic");
    let (dir, mut blocker) =
        index_blocked_by_a_snapshot(&db, "CREATE INDEX CONCURRENTLY t_a_idx ON t (a);");
    let out = init(&db, dir.path(), &[("STARTGATE_LOCK_RETRIES", "0")]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("0002_index.sql:3: statement 1 hit lock_timeout (55P03)"),
        "{}",
        out.stderr
    );
    assert_eq!(history(&db), "0001:applied 0002:failed");
    assert_eq!(
        scalar(
            &db,
            "SELECT error_sqlstate FROM startgate_migrations WHERE version = '0002'"
        )
        .as_deref(),
        Some("55P03")
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_a_idx'::regclass"
        )
        .as_deref(),
        Some("false"),
        "the failed build left an INVALID index"
    );
    blocker.release();

    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("dropping the INVALID index"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("resuming 0002_index.sql at statement 1"),
        "{}",
        out.stderr
    );
    assert_eq!(history(&db), "0001:applied 0002:applied");
    assert_eq!(
        scalar(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_a_idx'::regclass"
        )
        .as_deref(),
        Some("true")
    );
}

#[test]
fn losing_the_lock_between_migrations_stops_with_the_pooler_advice() {
    // What a transaction-mode pooler does (the next migration runs on a server session that
    // never took the lock) is reproduced here by a migration that drops startgate's own lock.
    let db = TestDb::new("init_lock_lost");
    let dir = migrations(&[
        ("0001_drop_lock.sql", "SELECT pg_advisory_unlock_all();\n"),
        ("0002_next.sql", "CREATE TABLE next_one (id int);\n"),
    ]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    let messages = common::log_messages(&out.stderr);
    assert!(
        messages.contains("0002_next.sql: startgate's session no longer holds the migration lock"),
        "{messages}"
    );
    assert!(
        messages.contains("set STARTGATE_DATABASE_URL to a direct connection"),
        "{messages}"
    );
    // The check's release of a lock it does not hold is silenced: the message above says it.
    assert!(
        !out.stderr.contains("you don't own a lock"),
        "{}",
        out.stderr
    );
    assert!(
        !exists(&db, "next_one"),
        "nothing is applied without the lock"
    );
    assert_eq!(history(&db), "0001:applied");
}

#[test]
fn a_create_index_concurrently_retried_in_the_same_run_drops_its_invalid_index_first() {
    let db = TestDb::new("init_cic_retry");
    // A comment with non-ASCII characters inside the statement, as real files have.
    let (dir, mut blocker) = index_blocked_by_a_snapshot(
        &db,
        "CREATE INDEX CONCURRENTLY /* índice rápido */ t_a_idx ON t (a);",
    );
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1800));
        blocker.release();
    });
    // The default retries: the first attempt fails on lock_timeout and leaves an INVALID
    // index; a retry must drop it before building again.
    let out = init(&db, dir.path(), &[]);
    releaser.join().expect("releaser");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let messages = common::log_messages(&out.stderr);
    assert!(
        messages.contains("dropping the INVALID index"),
        "{messages}"
    );
    assert_eq!(history(&db), "0001:applied 0002:applied");
    assert_eq!(
        scalar(
            &db,
            "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_a_idx'::regclass"
        )
        .as_deref(),
        Some("true")
    );
}

#[test]
fn a_failure_inside_the_files_own_transaction_rolls_it_back_and_counts_only_what_stays() {
    let db = TestDb::new("init_own_tx");
    let dir = migrations(&[(
        "0001_own.sql",
        "-- startgate:no-transaction\nCREATE TABLE x (id int);\nBEGIN;\nINSERT INTO x VALUES (1);\nINSERT INTO x VALUES ('oops');\nCOMMIT;\n",
    )]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 6, "stderr: {}", out.stderr);
    let messages = common::log_messages(&out.stderr);
    assert!(
        messages.contains("0001_own.sql:5: statement 4 failed (22P02)"),
        "{messages}"
    );
    assert!(
        messages.contains("its first 1 of 5 statements stay applied"),
        "{messages}"
    );
    assert_eq!(history(&db), "0001:failed");
    assert_eq!(
        scalar(
            &db,
            "SELECT statements_done::text FROM startgate_migrations"
        )
        .as_deref(),
        Some("1"),
        "the BEGIN..COMMIT block was rolled back whole"
    );
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM x").as_deref(),
        Some("0")
    );
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").as_deref(),
        Some("0"),
        "the lock was released (the session was not stuck in an aborted transaction)"
    );
}

#[test]
fn a_pending_file_with_a_bad_statement_is_refused_before_anything_is_written() {
    // File-level problems are found before connecting; a statement-level problem of a pending
    // file is found once the history says which files are pending, still before the lock, the
    // backup or the history table.
    let db = TestDb::new("init_bad_pending");
    let dir = migrations(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        ("0002_b.sql", "CREATE TABLE b (id int);\nCOMMIT;\n"),
        ("0003_c.sql", "SELECT 1;\nSELECT 'never closed;\n"),
    ]);
    let out = init(&db, dir.path(), &[]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    for expected in [
        "0002_b.sql:2: COMMIT is transaction control",
        "0003_c.sql:2: unterminated",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in {}",
            out.stderr
        );
    }
    assert!(!exists(&db, "a"), "nothing applied");
    assert!(
        !exists(&db, "startgate_migrations"),
        "no history table created"
    );
}

/// Writes `text` into the FIFO at `path` once a reader has it open, waiting at most `limit` for
/// one (opening a FIFO for writing blocks until a reader comes, for ever if none does).
fn write_fifo(path: &Path, text: &str, limit: Duration) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + limit;
    loop {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match opened {
            Ok(mut fifo) => {
                fifo.write_all(text.as_bytes()).expect("write fifo");
                return;
            }
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no reader opened {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_bad_file_read_after_connecting_ends_the_run_while_a_lock_holds_up_the_history_read() {
    // With lock timeouts off, the unlocked history read waits as long as another session holds
    // the history table; a broken file must still end the run as soon as it is read. The file
    // is a FIFO, so that it is read only once the history read is seen waiting.
    let db = TestDb::new("init_bad_file_blocked_read");
    let dir = migrations(&[("0001_a.sql", "CREATE TABLE a (id int);\n")]);
    assert_eq!(init(&db, dir.path(), &[]).code, 0);
    let fifo = dir.path().join("0002_b.sql");
    let c_path = {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path")
    };
    // SAFETY: a NUL-terminated path, alive for the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let blocker = Blocker::hold(
        &db,
        "blocker-test",
        "BEGIN; LOCK TABLE startgate_migrations IN ACCESS EXCLUSIVE MODE;",
    );
    let path = dir.path().display().to_string();
    let running = common::Running::start(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATIONS", path.as_str()),
            ("STARTGATE_LOCK_TIMEOUT", "0"),
        ],
    );
    let waiting_sql = "SELECT count(*)::text FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
         AND application_name <> 'blocker-test'";
    common::wait_for("the history read to wait for the lock", LIMIT, || {
        scalar(&db, waiting_sql).as_deref() == Some("1")
    });
    write_fifo(
        &fifo,
        "-- startgate:bogus\nCREATE TABLE b (id int);\n",
        LIMIT,
    );
    let (code, stderr) = running.finish();
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.contains("0002_b.sql:1: unknown directive startgate:bogus"),
        "{stderr}"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT state FROM pg_stat_activity WHERE application_name = 'blocker-test'"
        )
        .as_deref(),
        Some("idle in transaction"),
        "init must end while the blocker still holds the history table"
    );
    drop(blocker);
    assert_eq!(history(&db), "0001:applied");
    assert!(!exists(&db, "b"), "nothing applied");
}

#[test]
fn a_file_replaced_while_init_runs_is_not_run() {
    // `init` reads each pending file again just before it runs it; a different text than the
    // one it planned with is refused (exit 2), and nothing of it runs.
    let db = TestDb::new("init_replaced");
    let dir = migrations(&[
        ("0001_a.sql", "CREATE TABLE a (id int);\n"),
        ("0002_slow.sql", "SELECT pg_sleep(2);\n"),
        ("0003_c.sql", "CREATE TABLE c (id int);\n"),
    ]);
    let path = dir.path().display().to_string();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATIONS", path.as_str()),
        ("STARTGATE_BACKUP", "never"),
    ];
    let out = std::thread::scope(|scope| {
        let run = scope.spawn(|| startgate(&["init"], &env, LIMIT));
        common::wait_for("0002 to run", LIMIT, || {
            scalar(
                &db,
                "SELECT count(*)::text FROM pg_stat_activity \
                 WHERE query LIKE 'SELECT pg_sleep(2)%' AND state = 'active'",
            )
            .as_deref()
                == Some("1")
        });
        std::fs::write(dir.path().join("0003_c.sql"), "CREATE TABLE d (id int);\n").expect("write");
        run.join().expect("the run")
    });
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("0003_c.sql: the file changed on disk while startgate was running"),
        "{}",
        out.stderr
    );
    assert!(
        !exists(&db, "c") && !exists(&db, "d"),
        "nothing of 0003 ran"
    );
    assert_eq!(history(&db), "0001:applied 0002:applied");
}
