//! The operator commands `startgate baseline`, `repair` and `unlock` against a real PostgreSQL,
//! through the real binary:
//!
//! - `baseline VERSION` records the migrations up to VERSION as applied without running their
//!   SQL, with the files' checksums, and `init` then applies only the rest; a second baseline
//!   changes nothing; usage errors exit 2 and record nothing.
//! - `baseline --from sqlx|dbmate|golang-migrate|flyway` reads each tool's history table as the
//!   tool itself creates it, records what it lists, and refuses (exit 7, nothing recorded) a
//!   failed or dirty migration, a version without a file, or a gap; a missing table is named.
//! - `repair VERSION [--skip]` clears a failed no-transaction migration so that `init` resumes at
//!   the failed statement (or after it), and refuses what it cannot repair with exit 2.
//! - `unlock [--force]` says whether the migration lock is free and who holds it (a `psql`
//!   session started by the test), and `--force` ends that session so that `init` can proceed.
//!
//! Each test has a database and a migrations directory of its own, and asserts what an operator
//! sees: the exit status, the message, the history rows and the catalog.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Output, TestDb, startgate};
use startgate::backend::LockKey;
use startgate::backend::postgres::history_table_ddl;
use startgate::config::HistoryTable;
use tempfile::TempDir;

/// Upper bound for one run of the binary (a run here takes a second or two at most).
const LIMIT: Duration = Duration::from_secs(60);

/// Upper bound for polling the server for a condition (a lock granted, a session gone).
const POLL_LIMIT: Duration = Duration::from_secs(20);

fn default_table() -> HistoryTable {
    HistoryTable {
        schema: "public".into(),
        table: "startgate_migrations".into(),
    }
}

/// A migrations directory of its own holding `files` as (file name, content).
fn migrations(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).expect("write migration file");
    }
    dir
}

/// A migrations directory where each file (name, table) creates one table.
fn migrations_creating(files: &[(&str, &str)]) -> TempDir {
    let dir = migrations(&[]);
    for (name, table) in files {
        let sql = format!("CREATE TABLE {table} (id int);\n");
        std::fs::write(dir.path().join(name), sql).expect("write migration file");
    }
    dir
}

/// Runs `startgate ARGS` against `db` with the migrations in `dir`, plus `extra` settings.
fn run_with(db: &TestDb, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let dir = dir.display().to_string();
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("STARTGATE_MIGRATIONS", dir.as_str()),
        ("STARTGATE_DB_WAIT_TIMEOUT", "5s"),
        // Tests run in parallel: no endpoint on the shared default port, no termination log.
        ("STARTGATE_LISTEN", ""),
        ("STARTGATE_TERMINATION_LOG", ""),
    ];
    env.extend_from_slice(extra);
    startgate(args, &env, LIMIT)
}

fn run(db: &TestDb, dir: &Path, args: &[&str]) -> Output {
    run_with(db, dir, args, &[])
}

#[track_caller]
fn expect_exit(out: &Output, code: i32) {
    assert_eq!(
        out.code, code,
        "exit status\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
}

/// The error startgate logged on its way out: the message of the `exit` event in its JSON log.
#[track_caller]
fn exit_error(out: &Output) -> String {
    out.stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "exit")
        .and_then(|event| event["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no exit event in stderr:\n{}", out.stderr))
}

/// Asserts that the run exited with `code` and that its error message contains `needle`.
#[track_caller]
fn expect_error(out: &Output, code: i32, needle: &str) {
    expect_exit(out, code);
    let message = exit_error(out);
    assert!(
        message.contains(needle),
        "expected {needle:?} in the error:\n{message}"
    );
}

/// `status --json`, parsed.
fn status_json(db: &TestDb, dir: &Path) -> (i32, serde_json::Value) {
    let out = run(db, dir, &["status", "--json"]);
    let doc = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    });
    (out.code, doc)
}

/// `version:state` for each migration `status --json` lists.
fn states(doc: &serde_json::Value) -> String {
    doc["migrations"]
        .as_array()
        .expect("migrations array")
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["version"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checksums and statement counts of the directory's migrations, by version text, as startgate
/// computes them.
fn local_migrations(dir: &Path) -> BTreeMap<String, (String, usize)> {
    startgate::migrate::source::load_dir(dir)
        .expect("migrations load")
        .migrations
        .into_iter()
        .map(|m| {
            let statements = startgate::migrate::source::read_statements(&m).expect("statements");
            (m.version.to_string(), (m.checksum, statements.len()))
        })
        .collect()
}

/// One row of startgate's history table, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    version: String,
    state: String,
    checksum: String,
    statements_done: String,
    applied_by: String,
    applied_at: String,
    repaired: String,
    error_sqlstate: String,
    error: String,
}

fn history_table_exists(db: &TestDb) -> bool {
    table_exists(db, "startgate_migrations")
}

/// The history, ordered by version text; empty when the table does not exist.
fn history(db: &TestDb) -> Vec<Entry> {
    if !history_table_exists(db) {
        return Vec::new();
    }
    db.query(
        "SELECT version, state, checksum, statements_done::text, coalesce(applied_by, ''), \
         coalesce(applied_at::text, ''), repaired::text, coalesce(error_sqlstate, ''), \
         coalesce(error, '') FROM startgate_migrations ORDER BY version",
    )
    .into_iter()
    .map(|row| {
        let col = |i: usize| row[i].clone().unwrap_or_default();
        Entry {
            version: col(0),
            state: col(1),
            checksum: col(2),
            statements_done: col(3),
            applied_by: col(4),
            applied_at: col(5),
            repaired: col(6),
            error_sqlstate: col(7),
            error: col(8),
        }
    })
    .collect()
}

/// Asserts that the history holds exactly `versions`, each `applied` with its file's checksum and
/// every statement counted, and an `applied_by` that starts with `by`.
#[track_caller]
fn expect_applied(db: &TestDb, dir: &Path, versions: &[&str], by: &str) {
    let local = local_migrations(dir);
    let rows = history(db);
    let recorded: Vec<&str> = rows.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(recorded, versions, "history: {rows:#?}");
    for row in &rows {
        let (checksum, statements) = &local[&row.version];
        assert_eq!(row.state, "applied", "{row:?}");
        assert_eq!(&row.checksum, checksum, "{row:?}");
        assert_eq!(row.statements_done, statements.to_string(), "{row:?}");
        assert!(row.applied_by.starts_with(by), "{row:?}");
        assert!(!row.applied_at.is_empty(), "{row:?}");
    }
}

/// Asserts that a refused baseline left no history row (the table may or may not exist).
#[track_caller]
fn expect_nothing_recorded(db: &TestDb) {
    assert_eq!(history(db), Vec::new());
}

fn table_exists(db: &TestDb, table: &str) -> bool {
    let rows = db.query(&format!(
        "SELECT (to_regclass('public.{table}') IS NOT NULL)::text"
    ));
    rows == vec![vec![Some("true".to_string())]]
}

#[track_caller]
fn expect_tables(db: &TestDb, present: &[&str], absent: &[&str]) {
    for table in present {
        assert!(table_exists(db, table), "table {table} should exist");
    }
    for table in absent {
        assert!(
            !table_exists(db, table),
            "table {table} should not exist: its migration must not have run"
        );
    }
}

/// Polls `check` until it returns `Some`, for at most [`POLL_LIMIT`].
#[track_caller]
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + POLL_LIMIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {POLL_LIMIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// baseline VERSION

fn five_tables() -> TempDir {
    migrations_creating(&[
        ("0001_one.sql", "t1"),
        ("0002_two.sql", "t2"),
        ("0003_three.sql", "t3"),
        ("0004_four.sql", "t4"),
        ("0005_five.sql", "t5"),
    ])
}

#[test]
fn baseline_up_to_a_version_records_without_running_and_init_applies_the_rest() {
    let db = TestDb::new("baseline_upto");
    let dir = five_tables();

    let out = run(&db, dir.path(), &["baseline", "0003"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "recorded 3 migrations as applied without running them (0001–0003), up to version 0003; 2 pending"
        ),
        "{}",
        out.stdout
    );
    expect_applied(&db, dir.path(), &["0001", "0002", "0003"], "baseline by ");
    expect_tables(&db, &[], &["t1", "t2", "t3", "t4", "t5"]);

    // A second baseline to the same version changes nothing.
    let before = history(&db);
    let again = run(&db, dir.path(), &["baseline", "0003"]);
    expect_exit(&again, 0);
    assert!(
        again.stdout.contains("recorded 0 migrations"),
        "{}",
        again.stdout
    );
    assert_eq!(history(&db), before);

    let (code, doc) = status_json(&db, dir.path());
    assert_eq!(code, 9, "{doc}");
    assert_eq!(
        states(&doc),
        "0001:applied 0002:applied 0003:applied 0004:pending 0005:pending"
    );

    // init applies only what the baseline left pending.
    let init = run(&db, dir.path(), &["init"]);
    expect_exit(&init, 0);
    expect_tables(&db, &["t4", "t5"], &["t1", "t2", "t3"]);
    let rows = history(&db);
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert!(rows.iter().all(|r| r.state == "applied"), "{rows:#?}");
    assert_eq!(rows[..3], before[..]);
    assert!(
        rows[3..]
            .iter()
            .all(|r| !r.applied_by.starts_with("baseline")),
        "{rows:#?}"
    );
    let (code, doc) = status_json(&db, dir.path());
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn baseline_usage_errors_exit_two_and_record_nothing() {
    let db = TestDb::new("baseline_usage");
    let dir = five_tables();

    let out = run(&db, dir.path(), &["baseline", "0000"]);
    expect_error(
        &out,
        2,
        "baseline: no migration file has a version up to 0000",
    );

    let out = run(&db, dir.path(), &["baseline", "--from", "sqlx", "0003"]);
    expect_error(&out, 2, "give either --from TOOL or VERSION, not both");

    let out = run(&db, dir.path(), &["baseline"]);
    expect_error(&out, 2, "baseline: give VERSION");

    let out = run(&db, dir.path(), &["baseline", "v3"]);
    expect_error(&out, 2, "\"v3\" is not a version");

    // An unknown tool is refused by the command line parser itself.
    let out = run(&db, dir.path(), &["baseline", "--from", "liquibase"]);
    expect_exit(&out, 2);
    assert!(out.stderr.contains("liquibase"), "{}", out.stderr);

    assert!(!history_table_exists(&db));
    expect_tables(&db, &[], &["t1", "t2", "t3", "t4", "t5"]);
}

// ---------------------------------------------------------------------------------------------
// baseline --from sqlx

/// `_sqlx_migrations` as sqlx creates it, with rows (version, success).
fn sqlx_history(db: &TestDb, rows: &[(i64, bool)]) {
    db.exec(
        "CREATE TABLE _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
            success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    );
    for (version, success) in rows {
        db.exec(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({version}, 'm{version}', {success}, sha384('m{version}'), 1000000)"
        ));
    }
}

fn four_tables() -> TempDir {
    migrations_creating(&[
        ("0001_one.sql", "t1"),
        ("0002_two.sql", "t2"),
        ("0003_three.sql", "t3"),
        ("0004_four.sql", "t4"),
    ])
}

#[test]
fn baseline_from_sqlx_records_what_sqlx_applied() {
    let db = TestDb::new("baseline_sqlx");
    let dir = four_tables();
    sqlx_history(&db, &[(1, true), (2, true), (3, true)]);

    let out = run(&db, dir.path(), &["baseline", "--from", "sqlx"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "recorded 3 migrations as applied without running them (0001–0003), from sqlx's _sqlx_migrations; 1 pending"
        ),
        "{}",
        out.stdout
    );
    // sqlx's `1` is the file `0001_…`: versions compare numerically.
    expect_applied(
        &db,
        dir.path(),
        &["0001", "0002", "0003"],
        "baseline from sqlx by ",
    );
    expect_tables(&db, &[], &["t1", "t2", "t3", "t4"]);

    let (code, doc) = status_json(&db, dir.path());
    assert_eq!(code, 9, "{doc}");
    assert_eq!(doc["summary"]["pending"], 1, "{doc}");
    assert_eq!(
        states(&doc),
        "0001:applied 0002:applied 0003:applied 0004:pending"
    );
}

#[test]
fn baseline_from_sqlx_refuses_a_failed_migration() {
    let db = TestDb::new("baseline_sqlx_failed");
    let dir = four_tables();
    sqlx_history(&db, &[(1, true), (2, false)]);

    let out = run(&db, dir.path(), &["baseline", "--from", "sqlx"]);
    expect_error(
        &out,
        7,
        "sqlx recorded version 2 as failed in _sqlx_migrations",
    );
    expect_nothing_recorded(&db);
}

#[test]
fn baseline_from_sqlx_refuses_a_version_without_a_file() {
    let db = TestDb::new("baseline_sqlx_nofile");
    let dir = migrations_creating(&[
        ("0001_one.sql", "t1"),
        ("0002_two.sql", "t2"),
        ("0004_four.sql", "t4"),
    ]);
    sqlx_history(&db, &[(1, true), (2, true), (3, true)]);

    let out = run(&db, dir.path(), &["baseline", "--from", "sqlx"]);
    expect_error(
        &out,
        7,
        "version 3 is in _sqlx_migrations but no migration file here has it",
    );
    expect_nothing_recorded(&db);
}

#[test]
fn baseline_from_a_tool_whose_table_is_missing_names_the_table() {
    let db = TestDb::new("baseline_sqlx_missing");
    let dir = four_tables();

    let out = run(&db, dir.path(), &["baseline", "--from", "sqlx"]);
    // A wrong --from, database or search_path is the operator's mistake: a usage error.
    expect_error(
        &out,
        2,
        "there is no _sqlx_migrations table in this database (is --from sqlx right?",
    );
    expect_nothing_recorded(&db);
}

// ---------------------------------------------------------------------------------------------
// baseline --from dbmate

/// `schema_migrations` as dbmate creates it, with `versions`.
fn dbmate_history(db: &TestDb, versions: &[&str]) {
    db.exec("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)");
    for version in versions {
        db.exec(&format!(
            "INSERT INTO schema_migrations (version) VALUES ('{version}')"
        ));
    }
}

/// dbmate's files, with their up and down sections.
fn dbmate_files() -> TempDir {
    let file = |table: &str| {
        format!(
            "-- migrate:up\nCREATE TABLE {table} (id int);\n\n-- migrate:down\nDROP TABLE {table};\n"
        )
    };
    let (a, b, c) = (file("ta"), file("tb"), file("tc"));
    migrations(&[
        ("20240101000000_a.sql", &a),
        ("20240102000000_b.sql", &b),
        ("20240103000000_c.sql", &c),
    ])
}

#[test]
fn baseline_from_dbmate_records_the_listed_versions() {
    let db = TestDb::new("baseline_dbmate");
    let dir = dbmate_files();
    dbmate_history(&db, &["20240101000000", "20240102000000"]);

    let out = run(&db, dir.path(), &["baseline", "--from", "dbmate"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "recorded 2 migrations as applied without running them (20240101000000–20240102000000), from dbmate's schema_migrations; 1 pending"
        ),
        "{}",
        out.stdout
    );
    expect_applied(
        &db,
        dir.path(),
        &["20240101000000", "20240102000000"],
        "baseline from dbmate by ",
    );

    let init = run(&db, dir.path(), &["init"]);
    expect_exit(&init, 0);
    expect_tables(&db, &["tc"], &["ta", "tb"]);
}

#[test]
fn baseline_from_dbmate_refuses_a_gap() {
    let db = TestDb::new("baseline_dbmate_gap");
    let dir = dbmate_files();
    dbmate_history(&db, &["20240101000000", "20240103000000"]);

    let out = run(&db, dir.path(), &["baseline", "--from", "dbmate"]);
    expect_error(
        &out,
        7,
        "20240102000000_b.sql is older than the newest version dbmate applied (20240103000000) but dbmate never applied it",
    );
    expect_nothing_recorded(&db);
}

// ---------------------------------------------------------------------------------------------
// baseline --from golang-migrate

/// `schema_migrations` as golang-migrate creates it, with its single row.
fn golang_migrate_history(db: &TestDb, version: i64, dirty: bool) {
    db.exec(
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    );
    db.exec(&format!(
        "INSERT INTO schema_migrations (version, dirty) VALUES ({version}, {dirty})"
    ));
}

fn golang_migrate_files() -> TempDir {
    migrations(&[
        ("1_a.up.sql", "CREATE TABLE ga (id int);\n"),
        ("1_a.down.sql", "DROP TABLE ga;\n"),
        ("2_b.up.sql", "CREATE TABLE gb (id int);\n"),
        ("3_c.up.sql", "CREATE TABLE gc (id int);\n"),
        ("4_d.up.sql", "CREATE TABLE gd (id int);\n"),
    ])
}

#[test]
fn baseline_from_golang_migrate_records_every_version_up_to_the_current_one() {
    let db = TestDb::new("baseline_gomigrate");
    let dir = golang_migrate_files();
    golang_migrate_history(&db, 3, false);

    let out = run(&db, dir.path(), &["baseline", "--from", "golang-migrate"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains("recorded 3 migrations") && out.stdout.contains("1 pending"),
        "{}",
        out.stdout
    );
    expect_applied(
        &db,
        dir.path(),
        &["1", "2", "3"],
        "baseline from golang-migrate by ",
    );
    expect_tables(&db, &[], &["ga", "gb", "gc", "gd"]);

    let (code, doc) = status_json(&db, dir.path());
    assert_eq!(code, 9, "{doc}");
    assert_eq!(states(&doc), "1:applied 2:applied 3:applied 4:pending");
}

#[test]
fn baseline_from_golang_migrate_refuses_a_dirty_version() {
    let db = TestDb::new("baseline_gomigrate_dirty");
    let dir = golang_migrate_files();
    golang_migrate_history(&db, 3, true);

    let out = run(&db, dir.path(), &["baseline", "--from", "golang-migrate"]);
    expect_error(&out, 7, "golang-migrate marked version 3 dirty");
    expect_nothing_recorded(&db);
}

// ---------------------------------------------------------------------------------------------
// baseline --from flyway

/// `flyway_schema_history` as Flyway creates it on PostgreSQL, with rows (version, type, script).
fn flyway_history(db: &TestDb, rows: &[(Option<&str>, &str, &str)]) {
    db.exec(
        "CREATE TABLE flyway_schema_history (
            installed_rank INT NOT NULL,
            version VARCHAR(50),
            description VARCHAR(200) NOT NULL,
            type VARCHAR(20) NOT NULL,
            script VARCHAR(1000) NOT NULL,
            checksum INT,
            installed_by VARCHAR(100) NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT now(),
            execution_time INT NOT NULL,
            success BOOLEAN NOT NULL,
            CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank)
        );
        CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success)",
    );
    for (rank, (version, kind, script)) in rows.iter().enumerate() {
        let version = version.map_or("NULL".to_string(), |v| format!("'{v}'"));
        db.exec(&format!(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, \
             checksum, installed_by, execution_time, success) \
             VALUES ({}, {version}, 'd', '{kind}', '{script}', 12345, 'flyway', 7, true)",
            rank + 1
        ));
    }
}

fn flyway_files() -> TempDir {
    migrations_creating(&[
        ("V1__a.sql", "fa"),
        ("V1_1__b.sql", "fb"),
        ("V2__c.sql", "fc"),
        ("V3__d.sql", "fd"),
    ])
}

#[test]
fn baseline_from_flyway_records_versioned_rows_and_ignores_the_rest() {
    let db = TestDb::new("baseline_flyway");
    let dir = flyway_files();
    flyway_history(
        &db,
        &[
            (None, "SCHEMA", "\"public\""),
            (Some("1"), "SQL", "V1__a.sql"),
            (Some("1.1"), "SQL", "V1_1__b.sql"),
            (Some("2"), "SQL", "V2__c.sql"),
            (None, "SQL", "R__views.sql"),
        ],
    );

    let out = run(&db, dir.path(), &["baseline", "--from", "flyway"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "recorded 3 migrations as applied without running them (1–2), from flyway's flyway_schema_history; 1 pending"
        ),
        "{}",
        out.stdout
    );
    expect_applied(
        &db,
        dir.path(),
        &["1", "1.1", "2"],
        "baseline from flyway by ",
    );

    let init = run(&db, dir.path(), &["init"]);
    expect_exit(&init, 0);
    expect_tables(&db, &["fd"], &["fa", "fb", "fc"]);
}

#[test]
fn baseline_from_flyway_counts_every_version_up_to_a_baseline_row() {
    let db = TestDb::new("baseline_flyway_baseline");
    let dir = flyway_files();
    flyway_history(&db, &[(Some("2"), "BASELINE", "<< Flyway Baseline >>")]);

    let out = run(&db, dir.path(), &["baseline", "--from", "flyway"]);
    expect_exit(&out, 0);
    expect_applied(
        &db,
        dir.path(),
        &["1", "1.1", "2"],
        "baseline from flyway by ",
    );
    expect_tables(&db, &[], &["fa", "fb", "fc", "fd"]);
}

#[test]
fn baseline_from_flyway_leaves_a_version_that_flyway_repair_deleted_pending() {
    let db = TestDb::new("baseline_flyway_delete");
    let dir = flyway_files();
    flyway_history(
        &db,
        &[
            (Some("1"), "SQL", "V1__a.sql"),
            (Some("1.1"), "SQL", "V1_1__b.sql"),
            (Some("1.1"), "DELETE", "V1_1__b.sql"),
        ],
    );
    let out = run(&db, dir.path(), &["baseline", "--from", "flyway"]);
    // Flyway no longer counts 1.1 as applied; neither may startgate, and 1.1 then sits in a
    // gap below nothing newer, so only version 1 is recorded.
    expect_exit(&out, 0);
    expect_applied(&db, dir.path(), &["1"], "baseline from flyway by ");
}

// ---------------------------------------------------------------------------------------------
// repair

/// A no-transaction migration of three statements: on lines 2, 3 and 4.
const NO_TX: &str = "-- startgate:no-transaction\n\
                     CREATE TABLE a (id int);\n\
                     INSERT INTO a VALUES (1);\n\
                     CREATE TABLE b (id int);\n";

/// The history table with one `failed` row for `0001_x.sql` after `done` statements, failed on
/// a unique violation (which does not resume by itself).
fn failed_row(db: &TestDb, dir: &Path, done: u32) {
    let (checksum, _) = local_migrations(dir)["0001"].clone();
    db.exec(&history_table_ddl(&default_table()));
    db.exec(&format!(
        "INSERT INTO startgate_migrations (version, name, checksum, state, statements_done, \
         applied_by, error_sqlstate, error) \
         VALUES ('0001', 'x', '{checksum}', 'failed', {done}, 'test-pod', '23505', 'duplicate key')"
    ));
}

fn ids_in_a(db: &TestDb) -> Vec<String> {
    db.query("SELECT id::text FROM a ORDER BY id")
        .into_iter()
        .map(|row| row[0].clone().unwrap_or_default())
        .collect()
}

#[test]
fn repair_clears_a_failure_and_init_resumes_at_the_failed_statement() {
    let db = TestDb::new("repair_resume");
    let dir = migrations(&[("0001_x.sql", NO_TX)]);
    failed_row(&db, dir.path(), 1);

    let status = run(&db, dir.path(), &["status"]);
    expect_exit(&status, 7);
    assert!(
        status.stdout.contains("`startgate repair 0001`"),
        "{}",
        status.stdout
    );

    let out = run(&db, dir.path(), &["repair", "0001"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "repaired 0001_x.sql: the next `startgate init` resumes at statement 2 (line 3)"
        ),
        "{}",
        out.stdout
    );
    let rows = history(&db);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (
            rows[0].state.as_str(),
            rows[0].statements_done.as_str(),
            rows[0].repaired.as_str()
        ),
        ("failed", "1", "true"),
        "{rows:#?}"
    );
    // What happened stays on record for `status`.
    assert_eq!(
        (rows[0].error_sqlstate.as_str(), rows[0].error.as_str()),
        ("23505", "duplicate key")
    );

    let (code, doc) = status_json(&db, dir.path());
    assert_eq!(code, 9, "{doc}");
    assert_eq!(
        doc["next"],
        serde_json::json!(["resume 0001_x.sql at statement 2"])
    );

    // Statement 1 is done: the table it created is there (the operator's world, made by hand).
    db.exec("CREATE TABLE a (id int)");
    let init = run(&db, dir.path(), &["init"]);
    expect_exit(&init, 0);
    expect_tables(&db, &["a", "b"], &[]);
    assert_eq!(ids_in_a(&db), ["1"]);
    let rows = history(&db);
    assert_eq!(
        (rows[0].state.as_str(), rows[0].statements_done.as_str()),
        ("applied", "3"),
        "{rows:#?}"
    );
    let status = run(&db, dir.path(), &["status"]);
    expect_exit(&status, 0);
}

#[test]
fn repair_skip_counts_the_failed_statement_as_done() {
    let db = TestDb::new("repair_skip");
    let dir = migrations(&[("0001_x.sql", NO_TX)]);
    failed_row(&db, dir.path(), 1);
    // The operator finished statement 2 by hand, differently.
    db.exec("CREATE TABLE a (id int); INSERT INTO a VALUES (42)");

    let out = run(&db, dir.path(), &["repair", "0001", "--skip"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(
            "repaired 0001_x.sql: statement 2 (line 3) counted as done; the next `startgate init` resumes at statement 3 (line 4)"
        ),
        "{}",
        out.stdout
    );
    let rows = history(&db);
    assert_eq!(
        (
            rows[0].state.as_str(),
            rows[0].statements_done.as_str(),
            rows[0].repaired.as_str()
        ),
        ("failed", "2", "true"),
        "{rows:#?}"
    );

    let init = run(&db, dir.path(), &["init"]);
    expect_exit(&init, 0);
    expect_tables(&db, &["a", "b"], &[]);
    // Statement 2 did not run: only the operator's row is there.
    assert_eq!(ids_in_a(&db), ["42"]);
    let rows = history(&db);
    assert_eq!(
        (rows[0].state.as_str(), rows[0].statements_done.as_str()),
        ("applied", "3"),
        "{rows:#?}"
    );
}

#[test]
fn repair_refuses_what_it_cannot_repair() {
    let db = TestDb::new("repair_refuse");
    let dir = migrations(&[
        ("0001_x.sql", NO_TX),
        ("0002_y.sql", "CREATE TABLE y (id int);\n"),
    ]);
    let (checksum, _) = local_migrations(dir.path())["0001"].clone();
    db.exec(&history_table_ddl(&default_table()));
    db.exec(&format!(
        "INSERT INTO startgate_migrations (version, name, checksum, state, statements_done, applied_at) \
         VALUES ('0001', 'x', '{checksum}', 'applied', 3, now())"
    ));
    let before = history(&db);

    let out = run(&db, dir.path(), &["repair", "0001"]);
    expect_error(&out, 2, "repair: 0001_x.sql is applied: nothing to repair");

    let out = run(&db, dir.path(), &["repair", "0009"]);
    expect_error(&out, 2, "repair: no migration file in");
    assert!(exit_error(&out).contains("has version 0009"));

    let out = run(&db, dir.path(), &["repair", "abc"]);
    expect_error(&out, 2, "repair: \"abc\" is not a version");

    let out = run(&db, dir.path(), &["repair", "0002"]);
    expect_error(
        &out,
        2,
        "repair: version 0002 has no row in public.startgate_migrations: nothing to repair",
    );

    assert_eq!(history(&db), before);
}

// ---------------------------------------------------------------------------------------------
// unlock

/// A `psql` session (application_name `holder-test`) that holds the migration lock of the
/// default history table while it sleeps. Dropping it kills and reaps the child; the server
/// notices the vanished client within a second (`client_connection_check_interval`).
struct LockHolderSession {
    child: Child,
    /// The holding session's backend pid.
    pid: String,
}

impl LockHolderSession {
    fn start(db: &TestDb) -> LockHolderSession {
        let key = LockKey::for_table(&default_table()).0;
        let child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-c"])
            .arg(format!(
                "SELECT pg_advisory_lock({key}); SELECT pg_sleep(300)"
            ))
            .env("PGAPPNAME", "holder-test")
            .env("PGOPTIONS", "-c client_connection_check_interval=1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql (it comes with the PostgreSQL client)");
        let mut session = LockHolderSession {
            child,
            pid: String::new(),
        };
        session.pid = poll("psql to take the migration lock", || {
            if let Ok(Some(status)) = session.child.try_wait() {
                panic!("psql exited before taking the lock: {status}");
            }
            db.query(
                "SELECT a.pid::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'holder-test' \
                 AND a.datname = current_database()",
            )
            .first()
            .and_then(|row| row[0].clone())
        });
        session
    }

    /// Waits (bounded) for psql to exit, and returns whether it failed.
    fn wait_for_exit(&mut self) -> bool {
        let status = poll("psql to exit", || self.child.try_wait().expect("try_wait"));
        !status.success()
    }
}

impl Drop for LockHolderSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the session `pid` is still there: in `pg_stat_activity`, or holding any lock.
fn session_alive(db: &TestDb, pid: &str) -> bool {
    !db.query(&format!(
        "SELECT 1::text FROM pg_stat_activity WHERE pid = {pid} \
         UNION ALL SELECT 1::text FROM pg_locks WHERE pid = {pid}"
    ))
    .is_empty()
}

#[test]
fn unlock_says_when_the_lock_is_free() {
    let db = TestDb::new("unlock_free");
    let dir = migrations(&[]);
    for args in [&["unlock"][..], &["unlock", "--force"][..]] {
        let out = run(&db, dir.path(), args);
        expect_exit(&out, 0);
        assert_eq!(
            out.stdout.trim(),
            "the migration lock for public.startgate_migrations is free"
        );
    }
}

#[test]
fn unlock_names_the_holder_and_force_terminates_it() {
    let db = TestDb::new("unlock_held");
    let dir = migrations_creating(&[("0001_one.sql", "t1")]);
    let mut holder = LockHolderSession::start(&db);
    let pid = holder.pid.clone();

    let out = run(&db, dir.path(), &["unlock"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(&format!(
            "the migration lock for public.startgate_migrations is held by pid {pid} (holder-test, client 127.0.0.1"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("`startgate unlock --force` terminates it"),
        "{}",
        out.stdout
    );
    assert!(session_alive(&db, &pid), "unlock without --force ended it");

    // init gives up after STARTGATE_LOCK_WAIT_TIMEOUT and says who holds the lock.
    let init = run_with(
        &db,
        dir.path(),
        &["init"],
        &[("STARTGATE_LOCK_WAIT_TIMEOUT", "1s")],
    );
    expect_error(&init, 4, "migration lock not acquired within");
    assert!(
        exit_error(&init).contains(&format!("held by pid {pid} (holder-test")),
        "{}",
        exit_error(&init)
    );
    expect_tables(&db, &[], &["t1"]);

    let out = run(&db, dir.path(), &["unlock", "--force"]);
    expect_exit(&out, 0);
    assert!(
        out.stdout.contains(&format!(
            "terminated pid {pid}: its transaction was rolled back and the migration lock released"
        )),
        "{}",
        out.stdout
    );
    poll("the holder's session to end", || {
        (!session_alive(&db, &pid)).then_some(())
    });
    assert!(
        holder.wait_for_exit(),
        "psql should fail when its session is terminated"
    );

    let free = run(&db, dir.path(), &["unlock"]);
    expect_exit(&free, 0);
    assert!(free.stdout.contains("is free"), "{}", free.stdout);

    let init = run_with(
        &db,
        dir.path(),
        &["init"],
        &[("STARTGATE_LOCK_WAIT_TIMEOUT", "5s")],
    );
    expect_exit(&init, 0);
    expect_tables(&db, &["t1"], &[]);
    expect_applied(&db, dir.path(), &["0001"], "");
}
