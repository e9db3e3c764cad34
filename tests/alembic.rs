//! Alembic under the gate, against a real PostgreSQL and a real Alembic (pinned, in a virtual
//! environment the harness creates once). First the harness itself: projects made by
//! `common::alembic::Project` upgrade with Alembic alone, so the tests of startgate's Alembic
//! support start from projects known to work. Then startgate with
//! `STARTGATE_MIGRATE_COMMAND=alembic upgrade …`: applied once, the fast path (no Python),
//! concurrent replicas, failing revisions under both `transaction_per_migration` settings,
//! lock and wall-clock timeouts, startgate killed, several heads, future revisions, and the
//! check after the command.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::alembic::{Options, Project, alembic, run_alembic};
use common::{Blocker, Running, TestDb, log_messages};

const LIMIT: Duration = Duration::from_secs(90);

/// One cell of a one-row, one-column query.
fn scalar(db: &TestDb, sql: &str) -> Option<String> {
    let rows = db.query(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}

/// The rows of `alembic_version`, sorted.
fn versions(db: &TestDb) -> Vec<String> {
    db.query("SELECT version_num FROM alembic_version ORDER BY version_num")
        .into_iter()
        .map(|row| row[0].clone().expect("version_num"))
        .collect()
}

#[test]
fn five_revisions_with_a_merge_upgrade_to_heads() {
    let db = TestDb::new("alembic_five");
    let project = Project::new();
    project.five_with_merge();

    let out = run_alembic(&project, &db.url, &["heads"]);
    assert_eq!(out.code, 0, "alembic heads: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "e5 (head)");

    let out = run_alembic(&project, &db.url, &["upgrade", "heads"]);
    assert_eq!(out.code, 0, "alembic upgrade heads: {}", out.stderr);
    for step in [
        "Running upgrade  -> a1, create feature_flags",
        "-> d4, merge b2 and c3",
        "Running upgrade d4 -> e5, enable new_checkout",
    ] {
        assert!(out.stderr.contains(step), "no {step:?} in:\n{}", out.stderr);
    }

    assert_eq!(versions(&db), ["e5"]);
    assert_eq!(
        scalar(&db, "SELECT to_regclass('feature_flags')::text").as_deref(),
        Some("feature_flags")
    );
    assert_eq!(
        scalar(&db, "SELECT to_regclass('audit')::text").as_deref(),
        Some("audit")
    );
    assert_eq!(
        db.query("SELECT name, enabled::text, description FROM feature_flags"),
        [[
            Some("new_checkout".to_string()),
            Some("true".to_string()),
            Some("added by e5".to_string())
        ]]
    );
    assert_eq!(
        scalar(&db, "SELECT string_agg(what, ',') FROM audit").as_deref(),
        Some("e5")
    );

    let out = run_alembic(&project, &db.url, &["current"]);
    assert_eq!(out.code, 0, "alembic current: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "e5 (head)");
}

#[test]
fn pyproject_project_upgrades() {
    let db = TestDb::new("alembic_pyproject");
    let project = Project::with_pyproject();
    assert!(project.path().join("pyproject.toml").is_file());
    project.five_with_merge();

    let out = run_alembic(&project, &db.url, &["upgrade", "heads"]);
    assert_eq!(out.code, 0, "alembic upgrade heads: {}", out.stderr);
    assert!(
        out.stderr.contains("Running upgrade d4 -> e5"),
        "{}",
        out.stderr
    );
    assert_eq!(versions(&db), ["e5"]);
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM feature_flags").as_deref(),
        Some("1")
    );
}

#[test]
fn two_heads_with_upgrade_head_fails_in_alembic_itself() {
    let db = TestDb::new("alembic_two_heads");
    let project = Project::new();
    project
        .revision(
            "a1",
            &[],
            r#"op.execute("CREATE TABLE feature_flags (name text PRIMARY KEY)")"#,
        )
        .revision(
            "b2",
            &["a1"],
            r#"op.execute("ALTER TABLE feature_flags ADD COLUMN description text")"#,
        )
        .revision(
            "c3",
            &["a1"],
            r#"op.execute("CREATE TABLE audit (what text)")"#,
        );

    let out = run_alembic(&project, &db.url, &["upgrade", "head"]);
    assert_ne!(
        out.code, 0,
        "alembic upgrade head succeeded: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Multiple head revisions"),
        "alembic upgrade head said:\n{}",
        out.stderr
    );
    assert_eq!(
        scalar(&db, "SELECT to_regclass('feature_flags')::text"),
        None
    );

    let out = run_alembic(&project, &db.url, &["upgrade", "heads"]);
    assert_eq!(out.code, 0, "alembic upgrade heads: {}", out.stderr);
    assert_eq!(versions(&db), ["b2", "c3"]);
    assert_eq!(
        scalar(&db, "SELECT to_regclass('audit')::text").as_deref(),
        Some("audit")
    );
}

// ---- startgate with STARTGATE_MIGRATE_COMMAND=alembic … ----

/// The migrate command: Alembic, then a line in `marker` (which shows whether it ran).
fn command(args: &str, marker: &Path) -> String {
    format!(
        "{} {args} && echo ran >> {}",
        alembic().display(),
        marker.display()
    )
}

fn runs(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// `startgate ARGS` in the project's directory with the command.
fn startgate(
    project: &Project,
    db: &TestDb,
    args: &[&str],
    command: &str,
    extra: &[(&str, &str)],
) -> common::Output {
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATE_COMMAND", command),
    ];
    env.extend_from_slice(extra);
    common::startgate_in(project.path(), args, &env, LIMIT)
}

fn exists(db: &TestDb, relation: &str) -> bool {
    scalar(db, &format!("SELECT to_regclass('{relation}')::text")).is_some()
}

#[test]
fn startgate_applies_the_project_once_then_takes_the_fast_path_without_python() {
    let db = TestDb::new("sg_alembic_fast");
    let project = Project::new();
    project.five_with_merge();
    let marker = project.path().join("marker");
    let command = command("upgrade head", &marker);

    let before = startgate(&project, &db, &["status"], &command, &[]);
    assert_eq!(before.code, 9, "{}{}", before.stdout, before.stderr);
    assert!(
        before.stdout.contains("pending         5"),
        "{}",
        before.stdout
    );

    let first = startgate(&project, &db, &["init"], &command, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(runs(&marker), 1);
    assert_eq!(versions(&db), ["e5"]);
    let messages = log_messages(&first.stderr);
    // Alembic's own output, logged line by line.
    assert!(messages.contains("Running upgrade d4 -> e5"), "{messages}");
    assert!(
        messages.contains("5 Alembic revisions pending"),
        "{messages}"
    );

    let again = startgate(&project, &db, &["init"], &command, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(runs(&marker), 1, "the fast path must not run the command");
    let messages = log_messages(&again.stderr);
    assert!(messages.contains("no lock needed"), "{messages}");
    assert!(
        messages.contains("Alembic is at its head(s) e5"),
        "{messages}"
    );

    let after = startgate(&project, &db, &["status", "--json"], &command, &[]);
    assert_eq!(after.code, 0, "{}{}", after.stdout, after.stderr);
    let report: serde_json::Value = serde_json::from_str(&after.stdout).expect("json");
    let alembic = &report["command"]["alembic"];
    assert_eq!(alembic["current"], serde_json::json!(["e5"]));
    assert_eq!(alembic["heads"], serde_json::json!(["e5"]));
    assert_eq!(alembic["pending"], 0);
    assert_eq!(report["command"]["next"], "skip");
}

#[test]
fn a_pyproject_project_is_found_through_tool_alembic() {
    let db = TestDb::new("sg_alembic_pyproject");
    let project = Project::with_pyproject();
    project.five_with_merge();
    let marker = project.path().join("marker");
    let command = command("upgrade heads", &marker);
    for _ in 0..2 {
        let out = startgate(&project, &db, &["init"], &command, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(runs(&marker), 1);
    assert_eq!(versions(&db), ["e5"]);
}

#[test]
fn four_replicas_at_once_run_the_command_once() {
    let db = TestDb::new("sg_alembic_four");
    let project = Project::new();
    project.five_with_merge();
    let marker = project.path().join("marker");
    let command = command("upgrade head", &marker);
    let outputs: Vec<common::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| startgate(&project, &db, &["init"], &command, &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replica thread"))
            .collect()
    });
    for out in &outputs {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(runs(&marker), 1, "one replica ran Alembic");
    assert_eq!(versions(&db), ["e5"]);
    assert_eq!(
        scalar(&db, "SELECT count(*)::text FROM audit").as_deref(),
        Some("1")
    );
}

/// a1 and b2 create tables, c3 fails.
fn failing_project(transaction_per_migration: bool) -> Project {
    let project = Project::with_options(Options {
        transaction_per_migration,
        ..Options::default()
    });
    project
        .revision("a1", &[], r#"op.execute("CREATE TABLE t1 (id int)")"#)
        .revision("b2", &["a1"], r#"op.execute("CREATE TABLE t2 (id int)")"#)
        .revision(
            "c3",
            &["b2"],
            r#"op.execute("INSERT INTO no_such_table VALUES (1)")"#,
        );
    project
}

#[test]
fn a_failing_revision_is_exit_6_with_alembics_error_in_one_transaction() {
    let db = TestDb::new("sg_alembic_fail_one");
    let project = failing_project(false);
    let marker = project.path().join("marker");
    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("exited with status 1"), "{messages}");
    assert!(
        messages.contains("relation \"no_such_table\" does not exist"),
        "{messages}"
    );
    // One transaction for the whole upgrade: nothing stays.
    assert!(!exists(&db, "t1"));
    assert!(!exists(&db, "alembic_version"));
    assert_eq!(runs(&marker), 0);
}

#[test]
fn a_failing_revision_is_exit_6_with_the_earlier_revisions_kept_per_migration() {
    let db = TestDb::new("sg_alembic_fail_each");
    let project = failing_project(true);
    let marker = project.path().join("marker");
    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        log_messages(&out.stderr).contains("relation \"no_such_table\" does not exist"),
        "{}",
        out.stderr
    );
    // One transaction per revision: a1 and b2 stay.
    assert!(exists(&db, "t1") && exists(&db, "t2"));
    assert_eq!(versions(&db), ["b2"]);
    // status: one pending, the command would run.
    let status = startgate(
        &project,
        &db,
        &["status"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(status.code, 9, "{}", status.stdout);
    assert!(
        status.stdout.contains("pending         1"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_revision_waiting_on_a_locked_table_fails_within_the_lock_timeout() {
    let db = TestDb::new("sg_alembic_locked");
    db.exec("CREATE TABLE busy (id int)");
    let _blocker = Blocker::hold(
        &db,
        "holder",
        "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE",
    );
    let project = Project::new();
    project.revision(
        "a1",
        &[],
        r#"op.execute("ALTER TABLE busy ADD COLUMN x int")"#,
    );
    let marker = project.path().join("marker");
    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[
            ("STARTGATE_LOCK_TIMEOUT", "1s"),
            ("STARTGATE_MIGRATION_TIMEOUT", "60s"),
            ("STARTGATE_BACKUP", "never"),
        ],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("lock timeout"), "{messages}");
    assert!(!messages.contains("did not finish within"), "{messages}");
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
}

/// A project whose only revision records its pid, then sleeps on the server.
fn sleeping_project(pidfile: &Path) -> Project {
    let project = Project::new();
    project.revision(
        "a1",
        &[],
        &format!(
            "import os\nopen({:?}, 'w').write(str(os.getpid()))\nop.execute(\"SELECT pg_sleep(600)\")",
            pidfile.display().to_string()
        ),
    );
    project
}

#[test]
fn pg_sleep_past_the_migration_timeout_is_stopped_with_its_session() {
    let db = TestDb::new("sg_alembic_timeout");
    let pids = tempfile::tempdir().expect("tempdir");
    let project = sleeping_project(&pids.path().join("pid"));
    let marker = project.path().join("marker");
    let started = Instant::now();
    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[
            ("STARTGATE_MIGRATION_TIMEOUT", "2s"),
            ("STARTGATE_KILL_GRACE", "1s"),
        ],
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    // Within 2 s + grace + 1 s of the command's start (which comes after the connection).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("did not finish within 2s"), "{messages}");
    assert_eq!(db.sessions_running("pg_sleep(600)"), 0);
}

#[test]
fn startgate_killed_with_sigkill_takes_alembic_with_it() {
    let db = TestDb::new("sg_alembic_sigkill");
    let pids = tempfile::tempdir().expect("tempdir");
    let pidfile = pids.path().join("pid");
    let project = sleeping_project(&pidfile);
    let marker = project.path().join("marker");
    let command = command("upgrade head", &marker);
    let sg = Running::start_in(
        project.path(),
        &["init"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("STARTGATE_MIGRATE_COMMAND", command.as_str()),
        ],
    );
    common::wait_for("Alembic's session", LIMIT, || {
        db.sessions_running("pg_sleep(600)") == 1
    });
    let python: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(common::alive(python));
    sg.signal(libc::SIGKILL);
    let _ = sg.finish();
    common::wait_for("Alembic's Python to die", Duration::from_secs(5), || {
        !common::alive(python)
    });
    // Its connection closed with it: the server ends the statement.
    common::wait_for("the server session to end", Duration::from_secs(15), || {
        db.sessions_running("pg_sleep(600)") == 0
    });
}

fn two_heads(project: &Project) {
    project
        .revision(
            "a1",
            &[],
            r#"op.execute("CREATE TABLE feature_flags (name text)")"#,
        )
        .revision(
            "b2",
            &["a1"],
            r#"op.execute("CREATE TABLE b2_table (id int)")"#,
        )
        .revision(
            "c3",
            &["a1"],
            r#"op.execute("CREATE TABLE c3_table (id int)")"#,
        );
}

#[test]
fn two_heads_with_upgrade_head_are_exit_7_naming_both_and_heads_applies_them() {
    let db = TestDb::new("sg_alembic_heads");
    let project = Project::new();
    two_heads(&project);
    let marker = project.path().join("marker");

    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(out.code, 7, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("2 heads (b2, c3)"), "{messages}");
    assert!(messages.contains("upgrade to `heads`"), "{messages}");
    assert_eq!(runs(&marker), 0, "the command must not run");
    assert!(!exists(&db, "feature_flags"));
    let status = startgate(
        &project,
        &db,
        &["status"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(status.code, 7, "{}", status.stdout);
    assert!(
        status.stdout.contains("2 heads (b2, c3)"),
        "{}",
        status.stdout
    );

    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade heads", &marker),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(runs(&marker), 1);
    assert_eq!(versions(&db), ["b2", "c3"]);
    assert!(exists(&db, "b2_table") && exists(&db, "c3_table"));
}

#[test]
fn an_unknown_database_revision_is_future_a_warning_and_the_command_is_not_run() {
    let db = TestDb::new("sg_alembic_future");
    let project = Project::new();
    project.five_with_merge();
    db.exec(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); \
         INSERT INTO alembic_version VALUES ('f6')",
    );
    let marker = project.path().join("marker");
    let out = startgate(
        &project,
        &db,
        &["init"],
        &command("upgrade head", &marker),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(runs(&marker), 0);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("f6"), "{messages}");
    assert!(messages.contains("future"), "{messages}");
    assert!(
        out.stderr.contains("\"level\":\"WARN\"") && out.stderr.contains("migrations.future"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_command_that_leaves_alembic_short_of_its_heads_is_exit_8() {
    let db = TestDb::new("sg_alembic_short");
    let project = Project::new();
    project.five_with_merge();
    // A wrapper script startgate cannot read: it must end at the heads, and it stops at b2.
    let script = project.path().join("migrate.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} upgrade b2\n", alembic().display()),
    )
    .expect("write script");
    let out = startgate(&project, &db, &["init"], "sh ./migrate.sh", &[]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    let messages = log_messages(&out.stderr);
    assert!(messages.contains("holds b2"), "{messages}");
    assert!(messages.contains("head(s) are e5"), "{messages}");
}
