//! `STARTGATE_MIGRATE_COMMAND` with a tool that is not Alembic (here `psql` and the shell, as a
//! Rails or Django command would be): the command under the lock, its output, its exit status,
//! the wall-clock limit with its process group and server sessions stopped, `PGOPTIONS`
//! reaching libpq, startgate's death taking the command with it, sessions left by an earlier
//! run, and `STARTGATE_MIGRATE_FINGERPRINT`. Real PostgreSQL, real processes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Blocker, Running, TestDb, log_messages};

const LIMIT: Duration = Duration::from_secs(60);

/// A `psql` invocation against `db` for a command line (libpq: it reads PGOPTIONS and
/// PGAPPNAME).
fn psql(db: &TestDb, sql: &str) -> String {
    format!("psql -X -q -v ON_ERROR_STOP=1 -d '{}' -c \"{sql}\"", db.url)
}

/// `init` in `dir` with the command, no migration files.
fn init_with(db: &TestDb, dir: &Path, command: &str, extra: &[(&str, &str)]) -> common::Output {
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATE_COMMAND", command),
    ];
    env.extend_from_slice(extra);
    common::startgate_in(dir, &["init"], &env, LIMIT)
}

#[test]
fn the_command_runs_under_the_lock_with_its_output_logged_and_its_run_recorded() {
    let db = TestDb::new("cmd_runs");
    let dir = tempfile::tempdir().expect("tempdir");
    // The command sees its application name, the timeouts through PGOPTIONS, and whether the
    // migration lock is held (by startgate's session) while it runs.
    let command = format!(
        "{} && echo done on stdout && echo a warning >&2",
        psql(
            &db,
            "CREATE TABLE seen AS SELECT current_setting('application_name') AS app, \
             current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st, \
             (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS locks"
        )
    );
    let out = init_with(
        &db,
        dir.path(),
        &command,
        &[
            ("STARTGATE_LOCK_TIMEOUT", "3s"),
            ("STARTGATE_STATEMENT_TIMEOUT", "5m"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = &db.query("SELECT app, lt, st, locks::text FROM seen")[0];
    let app = row[0].clone().unwrap_or_default();
    assert!(app.starts_with("startgate-migrate/"), "{app}");
    assert_eq!(row[1].as_deref(), Some("3s"));
    assert_eq!(row[2].as_deref(), Some("5min"));
    assert_eq!(row[3].as_deref(), Some("1"), "the migration lock is held");
    let log = log_messages(&out.stderr);
    assert!(log.contains("done on stdout"), "{log}");
    assert!(log.contains("a warning"), "{log}");
    assert!(log.contains("migrate command: ran in"), "{log}");
    // The run is recorded; the lock is free again.
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM startgate_migrations_commands"),
        Some("1".to_string())
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        Some("0".to_string())
    );
}

#[test]
fn a_failing_command_is_exit_6_with_its_last_stderr_lines_and_no_password() {
    let db = TestDb::new("cmd_fails");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db.url_with_password("s3cr3t-pw");
    let log = dir.path().join("termination-log");
    let out = common::startgate_in(
        dir.path(),
        &["init"],
        &[
            ("DATABASE_URL", url.as_str()),
            (
                "STARTGATE_MIGRATE_COMMAND",
                "echo starting; echo 'connecting with s3cr3t-pw' >&2; echo 'ERROR: relation \"feature_flags\" does not exist' >&2; exit 3",
            ),
            (
                "STARTGATE_TERMINATION_LOG",
                log.to_str().expect("utf-8 path"),
            ),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(!out.stderr.contains("s3cr3t-pw"), "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("exited with status 3"), "{messages}");
    assert!(
        messages.contains("relation \"feature_flags\" does not exist"),
        "{messages}"
    );
    let written = std::fs::read_to_string(&log).expect("termination log");
    assert!(written.contains("feature_flags"), "{written}");
    assert!(!written.contains("s3cr3t-pw"), "{written}");
    // Nothing recorded as a success.
    assert_eq!(
        db.scalar(
            "SELECT count(*)::text FROM pg_tables WHERE tablename = 'startgate_migrations_commands'"
        ),
        Some("0".to_string())
    );
}

#[test]
fn a_statement_waiting_on_a_lock_fails_within_the_lock_timeout_through_pgoptions() {
    let db = TestDb::new("cmd_lock");
    db.exec("CREATE TABLE busy (id int)");
    let _blocker = Blocker::hold(
        &db,
        "holder",
        "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = init_with(
        &db,
        dir.path(),
        &psql(&db, "ALTER TABLE busy ADD COLUMN x int"),
        &[
            ("STARTGATE_LOCK_TIMEOUT", "1s"),
            ("STARTGATE_MIGRATION_TIMEOUT", "30s"),
            // pg_dump would wait on the same lock.
            ("STARTGATE_BACKUP", "never"),
        ],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("lock timeout"), "{messages}");
    assert!(!messages.contains("did not finish within"), "{messages}");
    assert!(out.elapsed < Duration::from_secs(15), "{:?}", out.elapsed);
}

#[test]
fn the_wall_clock_limit_stops_the_command_and_terminates_its_session() {
    let db = TestDb::new("cmd_timeout");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = init_with(
        &db,
        dir.path(),
        &psql(&db, "SELECT pg_sleep(600)"),
        &[
            ("STARTGATE_MIGRATION_TIMEOUT", "2s"),
            ("STARTGATE_KILL_GRACE", "1s"),
        ],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(2 + 1 + 1 + 1),
        "took {:?}",
        out.elapsed
    );
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("did not finish within 2s"), "{messages}");
    assert_eq!(db.sessions_running("pg_sleep(600)"), 0);
}

#[test]
fn sigterm_stops_the_command_and_its_session_and_exits_143() {
    let db = TestDb::new("cmd_sigterm");
    let dir = tempfile::tempdir().expect("tempdir");
    let command = psql(&db, "SELECT pg_sleep(600)");
    let mut sg = Running::start(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATE_COMMAND", command.as_str()),
            ("STARTGATE_KILL_GRACE", "1s"),
            ("STARTGATE_MIGRATIONS", dir.path().to_str().expect("utf-8")),
        ],
    );
    sg.wait_for_line("running the migrate command");
    common::wait_for("the command's session", LIMIT, || {
        db.sessions_running("pg_sleep(600)") == 1
    });
    let asked = Instant::now();
    sg.signal(libc::SIGTERM);
    let (code, stderr) = sg.finish();
    assert_eq!(code, 143, "{stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(db.sessions_running("pg_sleep(600)"), 0);
    assert_eq!(
        db.scalar(
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        Some("0".to_string())
    );
}

#[test]
fn sigkill_of_startgate_takes_the_command_with_it() {
    let db = TestDb::new("cmd_sigkill");
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("command.pid");
    // The shell records its pid, then runs psql in the background and waits: both are the
    // command's; neither may outlive startgate.
    let command = format!(
        "echo $$ > {}; {} & wait",
        pidfile.display(),
        psql(&db, "SELECT pg_sleep(600)")
    );
    let mut sg = Running::start(
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATE_COMMAND", command.as_str()),
            ("STARTGATE_MIGRATIONS", dir.path().to_str().expect("utf-8")),
        ],
    );
    sg.wait_for_line("running the migrate command");
    common::wait_for("the command's session", LIMIT, || {
        db.sessions_running("pg_sleep(600)") == 1
    });
    let shell: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    sg.signal(libc::SIGKILL);
    let (code, _) = sg.finish();
    assert_eq!(code, -1, "killed by a signal");
    common::wait_for("the command's shell to die", Duration::from_secs(5), || {
        !common::alive(shell)
    });
    // psql is gone too, so the server sees its connection close.
    common::wait_for("the server session to end", Duration::from_secs(10), || {
        db.sessions_running("pg_sleep(600)") == 0
    });
}

#[test]
fn sessions_left_by_an_earlier_run_are_terminated_after_taking_the_lock() {
    let db = TestDb::new("cmd_leftover");
    let dir = tempfile::tempdir().expect("tempdir");
    // The name an earlier run's command had under this history table's lock; another app's
    // command (another history table, another lock) is left alone.
    let key = startgate::backend::LockKey::for_table(&startgate::config::HistoryTable {
        schema: "public".to_string(),
        table: "startgate_migrations".to_string(),
    });
    let ours = format!("{}0123456789ab", startgate::tool::leftover_prefix(key));
    let mut leftover = Blocker::hold(&db, &ours, "BEGIN; CREATE TABLE half_done (id int)");
    let mut other_app = Blocker::hold(
        &db,
        "startgate-migrate/00000000000000ff-0123456789ab",
        "BEGIN; CREATE TABLE other_app (id int)",
    );
    let out = init_with(&db, dir.path(), "true", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("terminated a session left by an earlier run's migrate command"),
        "{messages}"
    );
    // pg_terminate_backend signals; the session goes a moment later.
    let left = || {
        db.scalar(
            "SELECT string_agg(application_name, ',') FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'startgate-migrate/%'",
        )
    };
    common::wait_for(
        "the leftover session to end",
        Duration::from_secs(5),
        || left().as_deref() == Some("startgate-migrate/00000000000000ff-0123456789ab"),
    );
    leftover.release();
    other_app.release();
}

#[test]
fn a_session_that_ignores_pgappname_is_warned_about() {
    let db = TestDb::new("cmd_noappname");
    let dir = tempfile::tempdir().expect("tempdir");
    // As asyncpg or Prisma would: a connection that does not read PGAPPNAME or PGOPTIONS.
    let command = format!(
        "env -u PGAPPNAME -u PGOPTIONS {}",
        psql(&db, "SELECT pg_sleep(2.5)")
    );
    let out = init_with(&db, dir.path(), &command, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(
        messages.contains("runs without startgate's lock_timeout and statement_timeout"),
        "{messages}"
    );
    assert!(messages.contains("ignored PGAPPNAME"), "{messages}");
}

#[test]
fn a_fingerprinted_command_runs_once_then_only_when_a_file_changes() {
    let db = TestDb::new("cmd_fingerprint");
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("prisma/migrations");
    std::fs::create_dir_all(project.join("20250101_init")).expect("dir");
    std::fs::write(
        project.join("20250101_init/migration.sql"),
        "CREATE TABLE a ();",
    )
    .expect("write");
    let marker = dir.path().join("runs");
    let command = format!("echo run >> {}", marker.display());
    let env = [("STARTGATE_MIGRATE_FINGERPRINT", "prisma/migrations")];
    let runs = || {
        std::fs::read_to_string(&marker)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };

    let first = init_with(&db, dir.path(), &command, &env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(runs(), 1);
    let again = init_with(&db, dir.path(), &command, &env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(runs(), 1, "skipped: nothing changed");
    assert!(
        log_messages(&again.stderr).contains("unchanged since its last success"),
        "{}",
        again.stderr
    );
    // `status` says the same, exit 0.
    let status = common::startgate_in(
        dir.path(),
        &["status"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATE_COMMAND", command.as_str()),
            env[0],
        ],
        LIMIT,
    );
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains(": skip (unchanged"),
        "{}",
        status.stdout
    );

    std::fs::create_dir_all(project.join("20250102_more")).expect("dir");
    std::fs::write(
        project.join("20250102_more/migration.sql"),
        "CREATE TABLE b ();",
    )
    .expect("write");
    let changed = init_with(&db, dir.path(), &command, &env);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert_eq!(runs(), 2, "a new file: the command runs");
    assert_eq!(
        db.scalar("SELECT count(DISTINCT fingerprint)::text FROM startgate_migrations_commands"),
        Some("2".to_string())
    );
}

#[test]
fn a_missing_fingerprint_path_is_exit_2_before_the_database_is_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::startgate_in(
        dir.path(),
        &["init"],
        &[
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("STARTGATE_MIGRATE_COMMAND", "true"),
            ("STARTGATE_MIGRATE_FINGERPRINT", "prisma/migrations"),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("prisma/migrations"), "{messages}");
    assert!(!messages.contains("connection refused"), "{messages}");
}

#[test]
fn the_command_runs_after_the_sql_files_with_the_direct_url_as_database_url() {
    let db = TestDb::new("cmd_order");
    let dir = tempfile::tempdir().expect("tempdir");
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).expect("dir");
    std::fs::write(
        migrations.join("0001_flags.sql"),
        "CREATE TABLE feature_flags (name text PRIMARY KEY);",
    )
    .expect("write");
    // The app's URL goes through a pooler that is not there; the command must get the direct
    // one, and find the table the SQL file created.
    let out = common::startgate_in(
        dir.path(),
        &["init"],
        &[
            ("DATABASE_URL", "postgres://app@127.0.0.1:1/pooled"),
            ("STARTGATE_DATABASE_URL", db.url.as_str()),
            (
                "STARTGATE_MIGRATE_COMMAND",
                "psql -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" -c \"INSERT INTO feature_flags VALUES ('from_the_command')\"",
            ),
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        db.scalar("SELECT string_agg(name, ',') FROM feature_flags"),
        Some("from_the_command".to_string())
    );
}
